//! The SQL of calendar preferences: the snapshot query, replacing and clearing a
//! user's set, and the render warnings recorded on the user.
//!
//! Writing goes through the database's change tracking like every other writer: the
//! statement triggers on `calendar_preferences` flag the user (and only them), so a
//! change reaches Google at the next pass. [`replace`] writes only what differs, so
//! saving the same set twice flags nobody.

use serde_json::Value;
use sqlx::{PgExecutor, PgPool, Row};

use super::input::{transparency_from_str, visibility_from_str};
use super::{
    FieldError, Preference, PreferenceFields, Scope, reminders_from_json, reminders_to_json,
};
use crate::DomainError;
use crate::events::{Transparency, Visibility};
use crate::render::RenderWarning;

/// The user's preference rows (the sync snapshot reads it; every column is key or
/// tracked), broadest scope first.
pub const PREFERENCES_SQL: &str = "SELECT p.user_id, p.scope, p.course_id, p.title_template, p.description_template, \
            p.location_template, p.color_id, p.reminders, p.visibility, p.transparency \
     FROM calendar_preferences p WHERE p.user_id = $1 \
     ORDER BY array_position(ARRAY['global', 'class', 'exam', 'academic'], p.scope), p.course_id NULLS FIRST";

/// Most render warnings kept on a user.
pub const MAX_STORED_WARNINGS: usize = 20;

/// Why a preference write was refused.
#[derive(Debug, thiserror::Error)]
pub enum PreferencesError {
    /// No user has this id.
    #[error("unknown user {0}")]
    UnknownUser(i64),
    /// Bad input, one error per field.
    #[error("invalid preferences: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<FieldError>),
    /// The database failed.
    #[error(transparent)]
    Domain(#[from] DomainError),
}

impl From<sqlx::Error> for PreferencesError {
    fn from(e: sqlx::Error) -> Self {
        PreferencesError::Domain(e.into())
    }
}

/// Load a user's preferences. The database CHECKs the structured fields; should a
/// value still not parse (a CHECK dropped by hand), that field is left out and logged
/// rather than failing the sync. Templates are not validated here (the render does).
pub async fn load(db: impl PgExecutor<'_>, user_id: i64) -> Result<Vec<Preference>, DomainError> {
    let rows = sqlx::query(PREFERENCES_SQL)
        .bind(user_id)
        .fetch_all(db)
        .await?;
    let mut prefs = Vec::with_capacity(rows.len());
    for row in rows {
        let scope_text: String = row.try_get("scope")?;
        let course_id: Option<i64> = row.try_get("course_id")?;
        let Some(scope) = Scope::parse(&scope_text) else {
            tracing::warn!(
                user_id,
                scope = scope_text,
                "preference row with an unknown scope ignored"
            );
            continue;
        };
        let bad = |column: &str, value: String| {
            tracing::warn!(
                user_id,
                scope = scope_text,
                course_id,
                column,
                value,
                "stored preference value ignored"
            );
        };
        let color: Option<i16> = row.try_get("color_id")?;
        let reminders: Option<Value> = row.try_get("reminders")?;
        let visibility: Option<String> = row.try_get("visibility")?;
        let transparency: Option<String> = row.try_get("transparency")?;
        let fields = PreferenceFields {
            title_template: row.try_get("title_template")?,
            description_template: row.try_get("description_template")?,
            location_template: row.try_get("location_template")?,
            color_id: color.and_then(|c| {
                let ok = u8::try_from(c).ok().filter(|c| (1..=11).contains(c));
                if ok.is_none() {
                    bad("color_id", c.to_string());
                }
                ok
            }),
            reminders: reminders.and_then(|r| match reminders_from_json(&r) {
                Ok(r) => Some(r),
                Err(_) => {
                    bad("reminders", r.to_string());
                    None
                }
            }),
            visibility: visibility.and_then(|v| {
                let ok = visibility_from_str(&v);
                if ok.is_none() {
                    bad("visibility", v);
                }
                ok
            }),
            transparency: transparency.and_then(|t| {
                let ok = transparency_from_str(&t);
                if ok.is_none() {
                    bad("transparency", t);
                }
                ok
            }),
        };
        prefs.push(Preference {
            scope,
            course_id,
            fields,
        });
    }
    Ok(prefs)
}

async fn ensure_user(db: impl PgExecutor<'_>, user_id: i64) -> Result<(), PreferencesError> {
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users WHERE id = $1)")
        .bind(user_id)
        .fetch_one(db)
        .await?;
    if exists {
        Ok(())
    } else {
        Err(PreferencesError::UnknownUser(user_id))
    }
}

/// Replace a user's whole preference set with `prefs` (already validated with
/// [`super::parse_preferences`]), in one transaction: rows not in `prefs` are deleted,
/// the others inserted or updated, and only rows that really change are written (so
/// only a real change flags the user). Unknown course ids are refused per row. The
/// audit row (`set_preferences` by `actor`) is written in the same transaction.
pub async fn replace(
    pool: &PgPool,
    user_id: i64,
    prefs: &[Preference],
    actor: &str,
) -> Result<(), PreferencesError> {
    let mut tx = pool.begin().await?;
    ensure_user(&mut *tx, user_id).await?;
    let course_ids: Vec<i64> = prefs.iter().filter_map(|p| p.course_id).collect();
    let known: Vec<i64> = sqlx::query_scalar("SELECT id FROM courses WHERE id = ANY ($1)")
        .bind(&course_ids)
        .fetch_all(&mut *tx)
        .await?;
    let unknown: Vec<FieldError> = prefs
        .iter()
        .enumerate()
        .filter_map(|(i, p)| {
            let c = p.course_id?;
            (!known.contains(&c)).then(|| FieldError {
                field: format!("preferences[{i}].course_id"),
                message: format!("there is no course {c}"),
            })
        })
        .collect();
    if !unknown.is_empty() {
        return Err(PreferencesError::Invalid(unknown));
    }

    let scopes: Vec<&str> = prefs.iter().map(|p| p.scope.as_str()).collect();
    let courses: Vec<Option<i64>> = prefs.iter().map(|p| p.course_id).collect();
    let col = |f: fn(&PreferenceFields) -> Option<String>| -> Vec<Option<String>> {
        prefs.iter().map(|p| f(&p.fields)).collect()
    };
    let titles = col(|f| f.title_template.clone());
    let descriptions = col(|f| f.description_template.clone());
    let locations = col(|f| f.location_template.clone());
    let reminders = col(|f| {
        f.reminders
            .as_ref()
            .map(|r| reminders_to_json(r).to_string())
    });
    let visibilities = col(|f| f.visibility.map(|v| Visibility::as_str(v).to_string()));
    let transparencies = col(|f| f.transparency.map(|t| Transparency::as_str(t).to_string()));
    let colors: Vec<Option<i16>> = prefs
        .iter()
        .map(|p| p.fields.color_id.map(i16::from))
        .collect();

    sqlx::query(
        "DELETE FROM calendar_preferences p WHERE p.user_id = $1 \
         AND NOT EXISTS (SELECT 1 FROM unnest($2::text[], $3::bigint[]) AS k(scope, course_id) \
                         WHERE k.scope = p.scope AND k.course_id IS NOT DISTINCT FROM p.course_id)",
    )
    .bind(user_id)
    .bind(&scopes)
    .bind(&courses)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO calendar_preferences AS p (user_id, scope, course_id, title_template, description_template, \
             location_template, color_id, reminders, visibility, transparency) \
         SELECT $1, s, c, t, d, l, col, r::jsonb, v, tr \
         FROM unnest($2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::smallint[], \
                     $8::text[], $9::text[], $10::text[]) AS x(s, c, t, d, l, col, r, v, tr) \
         ON CONFLICT ON CONSTRAINT calendar_preferences_one_row_per_scope DO UPDATE SET \
             title_template = excluded.title_template, description_template = excluded.description_template, \
             location_template = excluded.location_template, color_id = excluded.color_id, \
             reminders = excluded.reminders, visibility = excluded.visibility, \
             transparency = excluded.transparency, updated_at = now() \
         WHERE (p.title_template, p.description_template, p.location_template, p.color_id, p.reminders, \
                p.visibility, p.transparency) \
               IS DISTINCT FROM (excluded.title_template, excluded.description_template, \
                excluded.location_template, excluded.color_id, excluded.reminders, excluded.visibility, \
                excluded.transparency)",
    )
    .bind(user_id)
    .bind(&scopes)
    .bind(&courses)
    .bind(&titles)
    .bind(&descriptions)
    .bind(&locations)
    .bind(&colors)
    .bind(&reminders)
    .bind(&visibilities)
    .bind(&transparencies)
    .execute(&mut *tx)
    .await?;
    crate::queue::audit(
        &mut *tx,
        actor,
        "set_preferences",
        serde_json::json!({"user_id": user_id, "rows": prefs.len()}),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Delete all of a user's preferences (their events go back to the built-in look at
/// the next sync). Returns how many rows were deleted. The audit row
/// (`clear_preferences` by `actor`) is written in the same transaction.
pub async fn clear(pool: &PgPool, user_id: i64, actor: &str) -> Result<u64, PreferencesError> {
    let mut tx = pool.begin().await?;
    ensure_user(&mut *tx, user_id).await?;
    let n = sqlx::query("DELETE FROM calendar_preferences WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    crate::queue::audit(
        &mut *tx,
        actor,
        "clear_preferences",
        serde_json::json!({"user_id": user_id, "rows": n}),
    )
    .await?;
    tx.commit().await?;
    Ok(n)
}

/// Whether a user exists (for read paths that answer 404).
pub async fn user_exists(db: impl PgExecutor<'_>, user_id: i64) -> Result<bool, DomainError> {
    Ok(
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users WHERE id = $1)")
            .bind(user_id)
            .fetch_one(db)
            .await?,
    )
}

/// The warnings to keep: one per (field, preference, message), at most
/// [`MAX_STORED_WARNINGS`], in plan order.
pub fn summarize(warnings: &[RenderWarning]) -> Vec<RenderWarning> {
    let mut kept: Vec<RenderWarning> = Vec::new();
    for w in warnings {
        if kept.len() == MAX_STORED_WARNINGS {
            break;
        }
        if !kept
            .iter()
            .any(|k| k.field == w.field && k.preference == w.preference && k.message == w.message)
        {
            kept.push(w.clone());
        }
    }
    kept
}

/// Record the render warnings of a sync on the user (`users.calendar_render_warnings`,
/// untracked: flags nobody); an empty list clears them. Writes only when they change.
pub async fn record_render_warnings(
    db: impl PgExecutor<'_>,
    user_id: i64,
    warnings: &[RenderWarning],
) -> Result<(), DomainError> {
    let value = serde_json::to_value(summarize(warnings))
        .map_err(|e| DomainError::InvalidData(format!("render warnings: {e}")))?;
    sqlx::query(
        "UPDATE users SET calendar_render_warnings = $2 \
         WHERE id = $1 AND calendar_render_warnings IS DISTINCT FROM $2",
    )
    .bind(user_id)
    .bind(&value)
    .execute(db)
    .await?;
    Ok(())
}

/// [`record_render_warnings`] for the sync engine: logs the warnings, and a failure to
/// record them, instead of returning it (a warning never fails a sync).
pub async fn note_render_warnings(pool: &PgPool, user_id: i64, warnings: &[RenderWarning]) {
    // One line per distinct problem, not one per event.
    for w in summarize(warnings) {
        let events = warnings
            .iter()
            .filter(|x| {
                x.field == w.field && x.preference == w.preference && x.message == w.message
            })
            .count();
        tracing::warn!(user_id, event_id = %w.event_id, events, field = %w.field,
            preference = %w.preference, message = %w.message,
            "calendar preference template failed; the built-in text was used");
    }
    if let Err(e) = record_render_warnings(pool, user_id, warnings).await {
        tracing::error!(user_id, error = %e, "could not record the render warnings");
    }
}

/// The render warnings recorded by the user's last sync.
pub async fn render_warnings(
    db: impl PgExecutor<'_>,
    user_id: i64,
) -> Result<Vec<RenderWarning>, DomainError> {
    let value: Option<Value> =
        sqlx::query_scalar("SELECT calendar_render_warnings FROM users WHERE id = $1")
            .bind(user_id)
            .fetch_optional(db)
            .await?;
    let value = value.ok_or(DomainError::UnknownUser(user_id))?;
    serde_json::from_value(value)
        .map_err(|e| DomainError::InvalidData(format!("users.calendar_render_warnings: {e}")))
}
