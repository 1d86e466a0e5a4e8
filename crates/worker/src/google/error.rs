//! Google's answers, classified: [`GoogleError`] (what Google said) and its mapping to
//! the provider-neutral [`BackendError`] the sync engine and the failure policy see.

use std::time::{Duration, Instant};

use crate::backend::{BackendError, ErrorClass, UserAction};

use super::method;

/// A failed Google call, classified.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GoogleError {
    /// Try again later: rate limits, 5xx, timeouts, network errors, non-JSON answers.
    #[error("Google {method} failed (retryable): {detail}")]
    Retryable {
        method: &'static str,
        detail: String,
        /// Longer waits Google asks for (daily quota).
        retry_after: Option<Duration>,
        rate_limited: bool,
    },
    /// The refresh token was refused (`invalid_grant`) or revoked: the student must sign in again.
    #[error("{detail}: the student must sign in to Google again")]
    NeedsReauth { detail: String },
    /// The course calendar does not exist (deleted by the student).
    #[error("calendar {calendar_id:?} not found in Google (deleted by the student?)")]
    CalendarMissing { calendar_id: String },
    /// Google rejected the request as invalid.
    #[error("Google {method} rejected the request: {detail}")]
    BadRequest {
        method: &'static str,
        detail: String,
    },
    /// Access denied for another reason than rate limits.
    #[error("Google {method} denied access: {detail}")]
    Forbidden {
        method: &'static str,
        detail: String,
    },
    /// The access token was not accepted (refreshed and retried once by the session).
    #[error("Google {method}: access token not accepted")]
    Unauthorized { method: &'static str },
    /// The OAuth client itself is misconfigured (invalid_client and the like).
    #[error("Google OAuth token endpoint: {detail}")]
    OAuthClient { detail: String },
    /// A database error while handling tokens.
    #[error("database error while handling Google tokens: {0}")]
    Database(String),
    /// No permit could be drawn from the cluster-wide quota (a database error).
    #[error("could not draw a permit from the cluster-wide Google quota: {0}")]
    Quota(String),
}

impl GoogleError {
    /// A stable short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            GoogleError::Retryable {
                rate_limited: true, ..
            } => "rate_limited",
            GoogleError::Retryable { .. } => "transient",
            GoogleError::NeedsReauth { .. } => "needs_reauth",
            GoogleError::CalendarMissing { .. } => "calendar_missing",
            GoogleError::BadRequest { .. } => "bad_request",
            GoogleError::Forbidden { .. } => "forbidden",
            GoogleError::Unauthorized { .. } => "unauthorized",
            GoogleError::OAuthClient { .. } => "oauth_client",
            GoogleError::Database(_) | GoogleError::Quota(_) => "database",
        }
    }

    /// What the failure means, in the provider-neutral vocabulary.
    pub fn class(&self) -> ErrorClass {
        match self {
            GoogleError::Retryable {
                retry_after,
                rate_limited,
                ..
            } => ErrorClass::Retryable {
                retry_after: *retry_after,
                quota: *rate_limited,
            },
            // A token refused twice in a row, or the database: worth another attempt.
            GoogleError::Unauthorized { .. } | GoogleError::Database(_) | GoogleError::Quota(_) => {
                ErrorClass::Retryable {
                    retry_after: None,
                    quota: false,
                }
            }
            GoogleError::NeedsReauth { .. } => ErrorClass::NeedsUser(UserAction::Reauthenticate),
            GoogleError::CalendarMissing { .. } => {
                ErrorClass::NeedsUser(UserAction::RecreateCalendar)
            }
            GoogleError::BadRequest { .. }
            | GoogleError::Forbidden { .. }
            | GoogleError::OAuthClient { .. } => ErrorClass::Permanent,
        }
    }

    /// The HTTP status of a JSON error answer (`BadRequest { detail: "HTTP 404 …" }`).
    pub(crate) fn is_http(&self, status: u16) -> bool {
        matches!(self, GoogleError::BadRequest { detail, .. }
            if detail.starts_with(&format!("HTTP {status} ")) || detail == &format!("HTTP {status}"))
    }
}

impl From<GoogleError> for BackendError {
    fn from(e: GoogleError) -> BackendError {
        BackendError {
            class: e.class(),
            kind: e.kind(),
            message: e.to_string(),
        }
    }
}

pub(crate) fn retryable(method: &'static str, detail: String, rate_limited: bool) -> GoogleError {
    GoogleError::Retryable {
        method,
        detail,
        retry_after: None,
        rate_limited,
    }
}

/// Count a call and its latency in the metrics.
pub(crate) fn record(method: &'static str, outcome: &'static str, started: Instant) {
    metrics::counter!("calsync_google_calls_total", "method" => method, "outcome" => outcome)
        .increment(1);
    metrics::histogram!("calsync_google_call_duration_seconds", "method" => method)
        .record(started.elapsed().as_secs_f64());
}

/// Classify a google-calendar3 error; also returns the metrics outcome label.
pub(crate) fn classify(
    method: &'static str,
    calendar_id: &str,
    err: google_calendar3::Error,
) -> (GoogleError, &'static str) {
    use google_calendar3::Error as E;
    match err {
        E::BadRequest(json) => {
            let code = json["error"]["code"].as_u64().unwrap_or(0) as u16;
            let reason = json["error"]["errors"][0]["reason"]
                .as_str()
                .unwrap_or("")
                .to_string();
            let message = json["error"]["message"].as_str().unwrap_or("").to_string();
            let detail = format!("HTTP {code} {reason}: {message}");
            match (code, reason.as_str()) {
                (401, _) => (GoogleError::Unauthorized { method }, "client_error"),
                (429, _) | (403, "rateLimitExceeded") | (403, "userRateLimitExceeded") => {
                    (retryable(method, detail, true), "rate_limited")
                }
                (403, "quotaExceeded") | (403, "dailyLimitExceeded") => (
                    GoogleError::Retryable {
                        method,
                        detail,
                        retry_after: Some(Duration::from_secs(3600)),
                        rate_limited: true,
                    },
                    "rate_limited",
                ),
                (404, _)
                    if method == method::CALENDARS_GET
                        || method == method::EVENTS_LIST
                        || method == method::ACL_INSERT =>
                {
                    (
                        GoogleError::CalendarMissing {
                            calendar_id: calendar_id.to_string(),
                        },
                        "client_error",
                    )
                }
                (403, _) => (GoogleError::Forbidden { method, detail }, "client_error"),
                (c, _) if c >= 500 => (retryable(method, detail, false), "server_error"),
                (408, _) => (retryable(method, detail, false), "server_error"),
                _ => (GoogleError::BadRequest { method, detail }, "client_error"),
            }
        }
        E::Failure(resp) => {
            let status = resp.status().as_u16();
            let outcome = if status == 429 {
                "rate_limited"
            } else if status >= 500 {
                "server_error"
            } else {
                "client_error"
            };
            if status == 401 {
                return (GoogleError::Unauthorized { method }, outcome);
            }
            (
                retryable(
                    method,
                    format!("HTTP {status} with a non-JSON body"),
                    status == 429,
                ),
                outcome,
            )
        }
        E::HttpError(e) => (
            retryable(method, format!("network error: {e}"), false),
            "network",
        ),
        E::Io(e) => (
            retryable(method, format!("I/O error: {e}"), false),
            "network",
        ),
        E::JsonDecodeError(body, e) => (
            retryable(
                method,
                format!(
                    "undecodable answer ({e}): {}",
                    body.chars().take(200).collect::<String>()
                ),
                false,
            ),
            "server_error",
        ),
        other => (
            GoogleError::BadRequest {
                method,
                detail: other.to_string(),
            },
            "client_error",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_google_error_maps_to_its_class() {
        let cases = [
            (retryable("events.list", "x".into(), true), "rate_limited"),
            (
                GoogleError::NeedsReauth { detail: "x".into() },
                "needs_reauth",
            ),
            (
                GoogleError::CalendarMissing {
                    calendar_id: "c".into(),
                },
                "calendar_missing",
            ),
            (
                GoogleError::BadRequest {
                    method: "events.insert",
                    detail: "HTTP 400 invalid: x".into(),
                },
                "bad_request",
            ),
        ];
        for (e, kind) in cases {
            let b = BackendError::from(e.clone());
            assert_eq!(b.kind, kind);
            assert_eq!(b.message, e.to_string());
        }
        assert_eq!(
            BackendError::from(GoogleError::NeedsReauth { detail: "x".into() }).class,
            ErrorClass::NeedsUser(UserAction::Reauthenticate)
        );
        assert_eq!(
            BackendError::from(GoogleError::Unauthorized {
                method: "events.list"
            })
            .class,
            ErrorClass::Retryable {
                retry_after: None,
                quota: false
            }
        );
        assert!(
            GoogleError::BadRequest {
                method: "events.update",
                detail: "HTTP 404 notFound: gone".into()
            }
            .is_http(404)
        );
    }
}
