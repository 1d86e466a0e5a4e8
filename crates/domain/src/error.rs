//! Errors of the domain layer.

/// Everything that can go wrong in the domain layer.
#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    /// The database failed or refused a statement.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A migration could not be applied.
    #[error("migration error: {0}")]
    Migrate(String),
    /// No user has this id.
    #[error("unknown user {0}")]
    UnknownUser(i64),
    /// The user has no `google_course_calendar_id`, so there is nothing to sync to.
    #[error("user {0} has no google_course_calendar_id")]
    NoCalendar(i64),
    /// The user has no Google credentials on file.
    #[error("user {0} has no Google credentials")]
    NoCredentials(i64),
    /// A value read from the database is not what the schema promises.
    #[error("invalid data: {0}")]
    InvalidData(String),
    /// Input that the contract refuses (e.g. a NUL character in a text field).
    #[error("invalid input: {0}")]
    InvalidInput(String),
}

impl DomainError {
    /// The SQLSTATE of a database error, if any.
    pub fn sqlstate(&self) -> Option<String> {
        match self {
            DomainError::Database(sqlx::Error::Database(db)) => db.code().map(|c| c.into_owned()),
            _ => None,
        }
    }
}
