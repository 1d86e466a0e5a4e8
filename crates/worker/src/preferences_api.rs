//! Calendar preferences over HTTP (worker API, same bearer auth as the enqueue API):
//!
//! * `GET /v1/users/{id}/preferences`: the stored rows and the render warnings of the
//!   last sync;
//! * `PUT /v1/users/{id}/preferences`: replace the whole set (`{"preferences": [...]}`,
//!   format in `calsync_domain::preferences::input`); `400` with one error per bad
//!   field, `404` for an unknown user; the user is flagged only if something changed;
//! * `DELETE /v1/users/{id}/preferences`: back to the built-in look (`204`);
//! * `GET /v1/users/{id}/preferences/preview`: the events a sync would write now;
//!   `POST` with a preference set previews it without saving.
//!
//! Validation and storage are `calsync_domain::preferences`; this file only maps them
//! to HTTP.

use std::net::SocketAddr;

use axum::{
    Json, Router,
    extract::{ConnectInfo, Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
};
use calsync_domain::{
    DomainError,
    preferences::{
        self, FieldError, Preference, input,
        store::{self, PreferencesError},
        view,
    },
};
use serde_json::json;

use crate::http::{ApiState, authorize, error};

/// The preference routes (merged into [`crate::http::router`]).
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route(
            "/v1/users/{user_id}/preferences",
            get(show).put(replace).delete(clear),
        )
        .route(
            "/v1/users/{user_id}/preferences/preview",
            get(preview_stored).post(preview_unsaved),
        )
}

/// The request's caller checked and its user id parsed.
#[expect(
    clippy::result_large_err,
    reason = "the error is the response the handler returns as is"
)]
fn start(
    st: &ApiState,
    headers: &HeaderMap,
    peer: SocketAddr,
    user_id: &str,
) -> Result<i64, Response> {
    authorize(st, headers, Some(peer))?;
    match user_id.parse::<i64>() {
        Ok(id) if id > 0 => Ok(id),
        _ => Err(error(
            StatusCode::BAD_REQUEST,
            "invalid_user_id",
            format!("user id must be a positive integer, got {user_id:?}"),
        )),
    }
}

fn unknown_user(id: i64) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "unknown_user",
        format!("unknown user {id}"),
    )
}

fn internal(user_id: i64, what: &str, e: &dyn std::fmt::Display) -> Response {
    tracing::error!(user_id, error = %e, "{what} failed");
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        format!("{what} failed; see the worker log"),
    )
}

/// `400` with one entry per bad field.
fn invalid(fields: &[FieldError]) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({
            "error": format!("invalid preferences: {}",
                fields.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")),
            "code": "invalid_preferences",
            "fields": fields,
        })),
    )
        .into_response()
}

/// Parse and validate a request body as a preference set. Validation trial-renders
/// every template (each bounded by the sandbox's fuel), so it runs on the blocking pool,
/// not on the threads serving requests.
async fn parse_body(body: axum::body::Bytes) -> Result<Vec<Preference>, Response> {
    let value: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            format!("body must be JSON like {{\"preferences\": [...]}}: {e}"),
        )
    })?;
    match tokio::task::spawn_blocking(move || preferences::parse_preferences(&value)).await {
        Ok(parsed) => parsed.map_err(|fields| invalid(&fields)),
        Err(e) => Err(internal(0, "validating preferences", &e)),
    }
}

/// The stored set and the last sync's render warnings.
async fn current(st: &ApiState, user_id: i64) -> Response {
    let rows = match store::load(&st.pool, user_id).await {
        Ok(rows) => rows,
        Err(e) => return internal(user_id, "loading preferences", &e),
    };
    let warnings = match store::render_warnings(&st.pool, user_id).await {
        Ok(w) => w,
        Err(DomainError::UnknownUser(id)) => return unknown_user(id),
        Err(e) => return internal(user_id, "loading render warnings", &e),
    };
    let mut body = input::to_json(&rows);
    body["user_id"] = json!(user_id);
    body["render_warnings"] = json!(warnings);
    Json(body).into_response()
}

async fn show(
    State(st): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(user_id): Path<String>,
) -> Response {
    match start(&st, &headers, peer, &user_id) {
        Ok(id) => current(&st, id).await,
        Err(resp) => resp,
    }
}

async fn replace(
    State(st): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(user_id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let user_id = match start(&st, &headers, peer, &user_id) {
        Ok(id) => id,
        Err(resp) => return resp,
    };
    match store::user_exists(&st.pool, user_id).await {
        Ok(true) => {}
        Ok(false) => return unknown_user(user_id),
        Err(e) => return internal(user_id, "looking up the user", &e),
    }
    let prefs = match parse_body(body).await {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    match store::replace(&st.pool, user_id, &prefs, "http-api").await {
        Ok(()) => {
            tracing::info!(
                user_id,
                rows = prefs.len(),
                "calendar preferences saved over HTTP"
            );
            current(&st, user_id).await
        }
        Err(PreferencesError::UnknownUser(id)) => unknown_user(id),
        Err(PreferencesError::Invalid(fields)) => invalid(&fields),
        Err(e) => internal(user_id, "saving preferences", &e),
    }
}

async fn clear(
    State(st): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(user_id): Path<String>,
) -> Response {
    let user_id = match start(&st, &headers, peer, &user_id) {
        Ok(id) => id,
        Err(resp) => return resp,
    };
    match store::clear(&st.pool, user_id, "http-api").await {
        Ok(n) => {
            tracing::info!(user_id, rows = n, "calendar preferences cleared over HTTP");
            StatusCode::NO_CONTENT.into_response()
        }
        Err(PreferencesError::UnknownUser(id)) => unknown_user(id),
        Err(e) => internal(user_id, "clearing preferences", &e),
    }
}

async fn preview(st: &ApiState, user_id: i64, prefs: Option<Vec<Preference>>) -> Response {
    match view::preview(&st.pool, user_id, prefs).await {
        Ok(p) => Json(p).into_response(),
        Err(DomainError::UnknownUser(id)) => unknown_user(id),
        Err(e) => internal(user_id, "preview", &e),
    }
}

async fn preview_stored(
    State(st): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(user_id): Path<String>,
) -> Response {
    match start(&st, &headers, peer, &user_id) {
        Ok(id) => preview(&st, id, None).await,
        Err(resp) => resp,
    }
}

async fn preview_unsaved(
    State(st): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(user_id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let user_id = match start(&st, &headers, peer, &user_id) {
        Ok(id) => id,
        Err(resp) => return resp,
    };
    match parse_body(body).await {
        Ok(prefs) => preview(&st, user_id, Some(prefs)).await,
        Err(resp) => resp,
    }
}
