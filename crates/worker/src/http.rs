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
    queue::{self, JobState},
};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

/// Shared state of the HTTP API.
#[derive(Clone)]
pub struct ApiState {
    pub pool: PgPool,
    /// Bearer token the enqueue API requires; `None`: loopback callers only.
    pub api_token: Option<Arc<str>>,
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
    match sqlx::query_scalar::<_, i32>("SELECT 1")
        .fetch_one(&st.pool)
        .await
    {
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
            let given = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("");
            if constant_time_eq(given.as_bytes(), expected.as_bytes()) {
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

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Optional body of the enqueue request.
#[derive(Debug, Default, Deserialize)]
struct EnqueueBody {
    reason: Option<String>,
}

/// Answer of the enqueue request.
#[derive(Debug, Serialize)]
struct Enqueued {
    job_id: String,
    user_id: i64,
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
    let reason = body.reason.unwrap_or_else(|| "http".into());
    if reason.len() > 200 {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "reason is longer than 200 characters",
        );
    }
    match queue::enqueue_sync(&st.pool, user_id, &reason).await {
        Ok(job_id) => {
            tracing::info!(user_id, job_id, reason, "sync enqueued over HTTP");
            (StatusCode::ACCEPTED, Json(Enqueued { job_id, user_id })).into_response()
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

/// A job as the API reports it.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct JobStatus {
    pub id: String,
    pub queue: String,
    pub state: String,
    pub status: String,
    pub attempts: i32,
    pub max_attempts: i32,
    pub run_at: chrono::DateTime<chrono::Utc>,
    pub done_at: Option<chrono::DateTime<chrono::Utc>>,
    pub last_result: Option<serde_json::Value>,
    pub payload: Option<serde_json::Value>,
}

/// Load a job's status.
pub async fn load_job(pool: &PgPool, job_id: &str) -> Result<Option<JobStatus>, sqlx::Error> {
    sqlx::query_as::<_, JobStatus>(sqlx::AssertSqlSafe(format!(
        "SELECT j.id, j.job_type AS queue, {} AS state, j.status, j.attempts, j.max_attempts, j.run_at, \
                j.done_at, j.last_result, calsync.job_payload(j.job) AS payload \
         FROM apalis.jobs j WHERE j.id = $1",
        JobState::SQL_EXPR
    )))
    .bind(job_id)
    .fetch_optional(pool)
    .await
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
    match load_job(&st.pool, &job_id).await {
        Ok(Some(job)) => Json(job).into_response(),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            "unknown_job",
            format!("unknown job {job_id:?}"),
        ),
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
