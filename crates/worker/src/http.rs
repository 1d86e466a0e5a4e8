//! The worker's HTTP API: health (`/healthz`, `/readyz`), Prometheus `/metrics`, and the
//! enqueue API for other services (`POST /v1/users/{id}/sync`, `GET /v1/jobs/{id}`).

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use axum::{
    Json, Router,
    extract::{ConnectInfo, Path, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use calsync_domain::{
    DomainError,
    priority::{self, PriorityClass},
    queue::{self, JobState},
};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use crate::config::ApiToken;

/// Shared state of the HTTP API.
#[derive(Clone)]
pub struct ApiState {
    pub pool: PgPool,
    /// Bearer token the enqueue API requires; `None`: loopback callers only.
    pub api_token: Option<ApiToken>,
    /// Set once the workers are running; cleared on shutdown.
    pub ready: Arc<AtomicBool>,
}

/// The API's routes.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/users/{user_id}/sync", post(enqueue))
        .route("/v1/jobs/{job_id}", get(job_status))
        .merge(crate::preferences_api::routes())
        .with_state(state)
}

/// A JSON error body: `{"error": "...", "code": "..."}`.
#[derive(Debug, Serialize)]
struct ApiError {
    error: String,
    code: &'static str,
}

pub(crate) fn error(status: StatusCode, code: &'static str, msg: impl Into<String>) -> Response {
    (
        status,
        Json(ApiError {
            error: msg.into(),
            code,
        }),
    )
        .into_response()
}

async fn readyz(State(st): State<ApiState>) -> Response {
    if !st.ready.load(Ordering::Relaxed) {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "workers are not running",
        );
    }
    match calsync_domain::ping(&st.pool).await {
        Ok(_) => (StatusCode::OK, "ready").into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check: database unreachable");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "database_unreachable",
                "database unreachable",
            )
        }
    }
}

async fn metrics(State(st): State<ApiState>) -> Response {
    // Install the recorder before recording, or the first scrape's gauges are lost.
    let Some(handle) = crate::telemetry::prometheus() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_metrics",
            "metrics recorder not installed",
        );
    };
    // Queue gauges are read at scrape time, so they are exact and cost nothing between scrapes.
    match queue::job_counts(&st.pool).await {
        Ok(counts) => {
            for state in JobState::ALL {
                let total: i64 = counts.iter().filter(|c| c.1 == state).map(|c| c.2).sum();
                metrics::gauge!("calsync_jobs", "state" => state.as_str()).set(total as f64);
            }
        }
        Err(e) => tracing::warn!(error = %e, "metrics: could not count jobs"),
    }
    if let Ok(c) = calsync_domain::users::counts(&st.pool).await {
        metrics::gauge!("calsync_users", "state" => "flagged").set(c.flagged as f64);
        metrics::gauge!("calsync_users", "state" => "due").set(c.due as f64);
        metrics::gauge!("calsync_users", "state" => "needs_reauth").set(c.needs_reauth as f64);
        metrics::gauge!("calsync_users", "state" => "calendar_missing")
            .set(c.calendar_missing as f64);
        metrics::gauge!("calsync_users", "state" => "failing").set(c.failing as f64);
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle.render(),
    )
        .into_response()
}

#[expect(
    clippy::result_large_err,
    reason = "the error is the response the handler returns as is"
)]
pub(crate) fn authorize(
    st: &ApiState,
    headers: &HeaderMap,
    peer: Option<SocketAddr>,
) -> Result<(), Response> {
    match &st.api_token {
        Some(expected) => {
            // No header, or not a bearer token, never matches anything.
            let given = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            if given.is_some_and(|g| expected.matches(g)) {
                Ok(())
            } else {
                Err(error(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "missing or wrong bearer token",
                ))
            }
        }
        None => match peer {
            Some(addr) if addr.ip().is_loopback() => Ok(()),
            _ => Err(error(
                StatusCode::FORBIDDEN,
                "forbidden",
                "set CALSYNC_API_TOKEN to accept enqueue requests from other hosts",
            )),
        },
    }
}

/// Why a text field from a request cannot be stored, if it cannot: PostgreSQL text
/// holds no NUL character, and the limit keeps the dashboard readable.
fn text_problem(field: &str, value: &str, max_chars: usize) -> Option<String> {
    if value.contains('\0') {
        Some(format!("{field} must not contain NUL characters (\\u0000)"))
    } else if value.chars().count() > max_chars {
        Some(format!("{field} is longer than {max_chars} characters"))
    } else {
        None
    }
}

/// Whether a domain error means "the request's input is unacceptable" (400), whichever
/// layer noticed: the domain's own validation, or PostgreSQL refusing a character.
fn is_invalid_input(e: &DomainError) -> bool {
    matches!(e, DomainError::InvalidInput(_))
        || matches!(e.sqlstate().as_deref(), Some("22021" | "22P05"))
}

/// Optional body of the enqueue request.
#[derive(Debug, Default, Deserialize)]
struct EnqueueBody {
    reason: Option<String>,
    /// A priority class name (`interactive`, `api`, `nightly`, `maintenance`); default
    /// `api`. Parsed by the domain for a clear error.
    class: Option<String>,
    /// Make a job waiting on its retry backoff due now.
    #[serde(default)]
    due_now: bool,
}

/// Answer of the enqueue request.
#[derive(Debug, Serialize)]
struct Enqueued {
    user_id: i64,
    /// `job_id`, `outcome`, `class`, `made_due`, `demoted`, `run_at`.
    #[serde(flatten)]
    requested: priority::Requested,
}

async fn enqueue(
    State(st): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(user_id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    if let Err(resp) = authorize(&st, &headers, Some(peer)) {
        return resp;
    }
    let user_id = match user_id.parse::<i64>() {
        Ok(id) if id > 0 => id,
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_user_id",
                format!("user id must be a positive integer, got {user_id:?}"),
            );
        }
    };
    let body: EnqueueBody = if body.is_empty() {
        EnqueueBody::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(b) => b,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid_body",
                    format!("body must be empty or JSON like {{\"reason\": \"registrar\"}}: {e}"),
                );
            }
        }
    };
    let class = match body.class.as_deref().map(PriorityClass::parse) {
        None => PriorityClass::Api,
        Some(Ok(class)) => class,
        Some(Err(e)) => return error(StatusCode::BAD_REQUEST, "invalid_class", e.to_string()),
    };
    // The domain validates the reason (length, control characters): InvalidInput → 400.
    let reason = body.reason.unwrap_or_else(|| "http".into());
    let req = priority::SyncRequest {
        user_id,
        reason: &reason,
        class,
        due_now: body.due_now,
    };
    match priority::request_sync(&st.pool, &req, "http-api").await {
        Ok(requested) => {
            tracing::info!(
                user_id,
                job_id = requested.job_id,
                reason,
                class = %requested.class,
                outcome = requested.outcome.as_str(),
                demoted = requested.demoted,
                "sync requested over HTTP"
            );
            (StatusCode::ACCEPTED, Json(Enqueued { user_id, requested })).into_response()
        }
        Err(DomainError::UnknownUser(id)) => error(
            StatusCode::NOT_FOUND,
            "unknown_user",
            format!("unknown user {id}"),
        ),
        Err(DomainError::NoCalendar(id)) => error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "no_calendar",
            format!("user {id} has no google_course_calendar_id"),
        ),
        Err(e) if is_invalid_input(&e) => {
            error(StatusCode::BAD_REQUEST, "invalid_body", e.to_string())
        }
        Err(e) => {
            tracing::error!(user_id, error = %e, "enqueue failed");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "enqueue failed; see the worker log",
            )
        }
    }
}

async fn job_status(
    State(st): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(job_id): Path<String>,
) -> Response {
    if let Err(resp) = authorize(&st, &headers, Some(peer)) {
        return resp;
    }
    if let Some(problem) = text_problem("job id", &job_id, 64) {
        return error(StatusCode::BAD_REQUEST, "invalid_job_id", problem);
    }
    match queue::job_status(&st.pool, &job_id).await {
        Ok(Some(job)) => Json(job).into_response(),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            "unknown_job",
            format!("unknown job {job_id:?}"),
        ),
        Err(e) if is_invalid_input(&e) => {
            error(StatusCode::BAD_REQUEST, "invalid_job_id", e.to_string())
        }
        Err(e) => {
            tracing::error!(job_id, error = %e, "job lookup failed");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "job lookup failed",
            )
        }
    }
}

/// Serve the API on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}
