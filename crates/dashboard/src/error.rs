//! One error type for every failure a page or action can have, and the one place that
//! decides its status and what the operator sees.

use std::time::Duration;

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Redirect, Response},
};
use calsync_domain::DomainError;

use crate::pages::layout;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    /// Malformed input: a bad filter, a control character, an unsafe `back` path.
    #[error("{0}")]
    BadRequest(String),
    /// A page view without a session: the browser is sent to the login page.
    #[error("log in first")]
    LoginRequired,
    /// An action (POST) or bearer request without valid credentials.
    #[error("not logged in")]
    Unauthorized,
    /// Authenticated but not allowed (read-only role, CSRF, cross-origin).
    #[error("{0}")]
    Forbidden(String),
    /// No such page, job, run or user.
    #[error("{0}")]
    NotFound(String),
    /// The route exists, the method does not.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// A check against Google was refused for now (too many checks, or one of this
    /// student is running); `retry_after` when known.
    #[error("{message}")]
    Throttled {
        message: String,
        retry_after: Option<Duration>,
    },
    /// The feature is not configured in this process.
    #[error("{0}")]
    Unavailable(String),
    /// Too many failed logins from this client or overall.
    #[error("too many failed logins; retry in {} s", retry_secs(*.retry_after))]
    TooManyRequests { retry_after: Duration },
    /// The database failed: logged in full, shown without details.
    #[error("database error: {0}")]
    Database(#[from] DomainError),
}

fn retry_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

impl PageError {
    /// The HTTP status of this failure.
    pub fn status(&self) -> StatusCode {
        match self {
            PageError::BadRequest(_) => StatusCode::BAD_REQUEST,
            PageError::LoginRequired => StatusCode::SEE_OTHER,
            PageError::Unauthorized => StatusCode::UNAUTHORIZED,
            PageError::Forbidden(_) => StatusCode::FORBIDDEN,
            PageError::NotFound(_) => StatusCode::NOT_FOUND,
            PageError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            PageError::TooManyRequests { .. } | PageError::Throttled { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            PageError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            PageError::Database(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn title(&self) -> &'static str {
        match self {
            PageError::BadRequest(_) => "Bad request",
            PageError::LoginRequired | PageError::Unauthorized => "Not logged in",
            PageError::Forbidden(_) => "Forbidden",
            PageError::NotFound(_) => "Not found",
            PageError::MethodNotAllowed => "Method not allowed",
            PageError::TooManyRequests { .. } => "Too many failed logins",
            PageError::Throttled { .. } => "Try again later",
            PageError::Unavailable(_) => "Not available",
            PageError::Database(_) => "Error",
        }
    }

    fn message(&self) -> String {
        match self {
            PageError::Unauthorized | PageError::LoginRequired => "Log in first.".into(),
            PageError::MethodNotAllowed => "This page does not accept that method.".into(),
            PageError::TooManyRequests { retry_after } => format!(
                "Too many failed logins from your address or overall. Wait {} seconds, then try again.",
                retry_secs(*retry_after)
            ),
            PageError::Database(_) => "A database error occurred; see the server log.".into(),
            other => other.to_string(),
        }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        match &self {
            PageError::LoginRequired => return Redirect::to("/login").into_response(),
            PageError::Database(e) => tracing::error!(error = %e, "dashboard database error"),
            _ => {}
        }
        let mut resp = (
            self.status(),
            layout::error_page(self.title(), &self.message()),
        )
            .into_response();
        let retry_after = match self {
            PageError::TooManyRequests { retry_after } => Some(retry_after),
            PageError::Throttled { retry_after, .. } => retry_after,
            _ => None,
        };
        if let Some(retry_after) = retry_after
            && let Ok(v) = HeaderValue::from_str(&retry_secs(retry_after).max(1).to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }
}
