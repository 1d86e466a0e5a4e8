//! The JSON control API under `/_fake/`, mirroring [`FakeGoogle`]'s methods for
//! out-of-process users (the demo, e2e tests spawning binaries, curl).
//!
//! | Method & path | Body | Answer |
//! |---|---|---|
//! | `GET /_fake/health` | | `ok` |
//! | `GET /_fake/calendars` | | `[{id, summary, owner_refresh_token, owner_email, events, live_events, acl}]` |
//! | `POST /_fake/calendars` | `{summary, id?, owner_refresh_token?, owner_email?}` | `{id}` |
//! | `DELETE /_fake/calendars/{id}` | | 204 |
//! | `GET /_fake/calendars/{id}/events[?live=true]` | | `[event]` (404 if unknown) |
//! | `POST /_fake/calendars/{id}/events` (user creates) | event | event |
//! | `PATCH /_fake/calendars/{id}/events/{eid}` (user edits) | partial event | event |
//! | `DELETE /_fake/calendars/{id}/events/{eid}` (user deletes) | | 204 |
//! | `POST /_fake/refresh-tokens` | `{refresh_token, email?}` | 204 |
//! | `POST /_fake/refresh-tokens/{rt}/revoke` | | 204 |
//! | `POST /_fake/access-tokens` | `{token, ttl_secs?}` (default 3600) | 204 |
//! | `POST /_fake/access-tokens/expire` | | 204 |
//! | `PUT /_fake/token-lifetime` | `{secs}` | 204 |
//! | `GET /_fake/faults` | | `[FaultRule]` |
//! | `POST /_fake/faults` | `FaultRule` | 204 |
//! | `DELETE /_fake/faults` | | 204 |
//! | `GET /_fake/calls` | | `{calls: [Call], total, write_calls}` |
//! | `DELETE /_fake/calls` | | 204 |
//! | `GET /_fake/calls/max-in-window?window_ms=N[&method=M][&principal=P][&exclude_token=true]` | | `{max}` |
//! | `GET /_fake/calendars/{id}/acl` | | `[aclRule]` |
//! | `POST /_fake/calendars/{id}/acl` (owner shares) | `{email, role}` | 204 |
//! | `GET /_fake/calendars/{id}/events/{eid}/occurrences` | | `[Occurrence]` |
//! | `POST /_fake/groups/{group}/members` | `{email}` | 204 |
//! | `GET /_fake/sharing-notifications` | | `[SharingNotification]` |
//! | `POST /_fake/service-accounts` | `{email, public_key_pem, domain_wide_delegation?}` or `{test_key: true, domain_wide_delegation?}` | `{email}` |
//! | `GET /_fake/service-accounts/test-key-file` | | the test key JSON, `token_uri` = this fake |
//! | `PUT /_fake/service-accounts/{email}/domain-wide-delegation` | `{enabled}` | 204 |
//! | `DELETE /_fake/service-accounts/{email}` | | 204 |
//! | `GET /_fake/quota` | | `QuotaConfig` |
//! | `PUT /_fake/quota` | `QuotaConfig` (`{per_project?, per_user?, window_ms?, status?}`) | 204 |
//! | `DELETE /_fake/quota` (quotas off) | | 204 |
//!
//! Errors are `{"error": "<text>"}` with a 400 or 404 status.

use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::FakeGoogle;
use crate::error::json_response;
use crate::faults::FaultRule;
use crate::state::{Account, normalize_email};

/// Routes under `/_fake/`.
pub(crate) fn routes() -> Router<FakeGoogle> {
    Router::new()
        .route("/_fake/health", get(|| async { "ok" }))
        .route(
            "/_fake/calendars",
            get(list_calendars).post(create_calendar),
        )
        .route(
            "/_fake/calendars/{id}",
            axum::routing::delete(delete_calendar),
        )
        .route(
            "/_fake/calendars/{id}/events",
            get(calendar_events).post(user_insert_event),
        )
        .route(
            "/_fake/calendars/{id}/events/{event_id}",
            axum::routing::patch(user_edit_event).delete(user_delete_event),
        )
        .route("/_fake/refresh-tokens", post(add_refresh_token))
        .route(
            "/_fake/refresh-tokens/{refresh_token}/revoke",
            post(revoke_refresh_token),
        )
        .route("/_fake/access-tokens", post(add_access_token))
        .route("/_fake/access-tokens/expire", post(expire_access_tokens))
        .route("/_fake/token-lifetime", put(set_token_lifetime))
        .route(
            "/_fake/faults",
            get(list_faults).post(add_fault).delete(clear_faults),
        )
        .route("/_fake/calls", get(list_calls).delete(reset_calls))
        .merge(crate::control_accounts::routes())
}

pub(crate) fn control_error(status: StatusCode, message: &str) -> Response {
    json_response(status, &json!({ "error": message }))
}

/// Parses a JSON body without axum's plain-text rejections.
pub(crate) fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, Box<Response>> {
    serde_json::from_slice(body).map_err(|e| {
        Box::new(control_error(
            StatusCode::BAD_REQUEST,
            &format!("invalid JSON body: {e}"),
        ))
    })
}

pub(crate) fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

async fn list_calendars(State(fake): State<FakeGoogle>) -> Response {
    let st = fake.lock();
    let mut calendars: Vec<Value> = st
        .calendars
        .iter()
        .map(|(id, c)| {
            let live = c
                .events
                .values()
                .filter(|e| e.get("status").and_then(Value::as_str) != Some("cancelled"))
                .count();
            let (owner_refresh_token, owner_email) = match &c.owner {
                Some(Account::RefreshToken(rt)) => (Some(rt.clone()), None),
                Some(Account::Email(email)) => (None, Some(email.clone())),
                None => (None, None),
            };
            json!({
                "id": id,
                "summary": c.resource.get("summary").cloned().unwrap_or(Value::Null),
                "owner_refresh_token": owner_refresh_token,
                "owner_email": owner_email,
                "events": c.events.len(),
                "live_events": live,
                "acl": c.acl.len(),
            })
        })
        .collect();
    drop(st);
    calendars.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    json_response(StatusCode::OK, &Value::Array(calendars))
}

#[derive(Deserialize)]
struct NewCalendar {
    summary: String,
    id: Option<String>,
    owner_refresh_token: Option<String>,
    owner_email: Option<String>,
}

async fn create_calendar(State(fake): State<FakeGoogle>, body: Bytes) -> Response {
    let new: NewCalendar = match parse(&body) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let owner = match (new.owner_refresh_token, new.owner_email) {
        (Some(_), Some(_)) => {
            return control_error(
                StatusCode::BAD_REQUEST,
                "give owner_refresh_token or owner_email, not both",
            );
        }
        (Some(rt), None) => Some(Account::RefreshToken(rt)),
        (None, Some(email)) => Some(Account::Email(normalize_email(&email))),
        (None, None) => None,
    };
    let id = match new.id {
        Some(id) => {
            fake.lock()
                .create_calendar(&id, &new.summary, None, None, owner);
            id
        }
        None => fake.create_calendar_owned(owner, &new.summary),
    };
    json_response(StatusCode::OK, &json!({ "id": id }))
}

async fn delete_calendar(State(fake): State<FakeGoogle>, Path(id): Path<String>) -> Response {
    if fake.lock().calendars.remove(&id).is_none() {
        return control_error(StatusCode::NOT_FOUND, "no such calendar");
    }
    no_content()
}

#[derive(Deserialize)]
struct EventsQuery {
    #[serde(default)]
    live: bool,
}

async fn calendar_events(
    State(fake): State<FakeGoogle>,
    Path(id): Path<String>,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Response {
    if !fake.calendar_exists(&id) {
        return control_error(StatusCode::NOT_FOUND, "no such calendar");
    }
    let live = query.is_ok_and(|Query(q)| q.live);
    let events = if live {
        fake.live_events(&id)
    } else {
        fake.events(&id)
    };
    json_response(StatusCode::OK, &Value::Array(events))
}

fn user_error(error: String) -> Response {
    let status = if error.starts_with("404") {
        StatusCode::NOT_FOUND
    } else {
        StatusCode::BAD_REQUEST
    };
    control_error(status, &error)
}

async fn user_insert_event(
    State(fake): State<FakeGoogle>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let event: Value = match parse(&body) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    match fake.try_user_insert_event(&id, event) {
        Ok(event) => json_response(StatusCode::OK, &event),
        Err(error) => user_error(error),
    }
}

async fn user_edit_event(
    State(fake): State<FakeGoogle>,
    Path((id, event_id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let patch: Value = match parse(&body) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    match fake.try_user_edit_event(&id, &event_id, patch) {
        Ok(event) => json_response(StatusCode::OK, &event),
        Err(error) => user_error(error),
    }
}

async fn user_delete_event(
    State(fake): State<FakeGoogle>,
    Path((id, event_id)): Path<(String, String)>,
) -> Response {
    match fake.try_user_delete_event(&id, &event_id) {
        Ok(()) => no_content(),
        Err(error) => user_error(error),
    }
}

#[derive(Deserialize)]
struct RefreshTokenBody {
    refresh_token: String,
    email: Option<String>,
}

async fn add_refresh_token(State(fake): State<FakeGoogle>, body: Bytes) -> Response {
    match parse::<RefreshTokenBody>(&body) {
        Ok(RefreshTokenBody {
            refresh_token,
            email: Some(email),
        }) => {
            fake.add_refresh_token_for(&refresh_token, &email);
            no_content()
        }
        Ok(b) => {
            fake.add_refresh_token(&b.refresh_token);
            no_content()
        }
        Err(r) => *r,
    }
}

async fn revoke_refresh_token(
    State(fake): State<FakeGoogle>,
    Path(refresh_token): Path<String>,
) -> Response {
    fake.revoke_refresh_token(&refresh_token);
    no_content()
}

#[derive(Deserialize)]
struct AccessTokenBody {
    token: String,
    ttl_secs: Option<u64>,
}

async fn add_access_token(State(fake): State<FakeGoogle>, body: Bytes) -> Response {
    match parse::<AccessTokenBody>(&body) {
        Ok(b) => {
            fake.add_access_token(&b.token, Duration::from_secs(b.ttl_secs.unwrap_or(3600)));
            no_content()
        }
        Err(r) => *r,
    }
}

async fn expire_access_tokens(State(fake): State<FakeGoogle>) -> Response {
    fake.expire_access_tokens();
    no_content()
}

#[derive(Deserialize)]
struct LifetimeBody {
    secs: u64,
}

async fn set_token_lifetime(State(fake): State<FakeGoogle>, body: Bytes) -> Response {
    match parse::<LifetimeBody>(&body) {
        Ok(b) => {
            fake.set_token_lifetime(Duration::from_secs(b.secs));
            no_content()
        }
        Err(r) => *r,
    }
}

async fn list_faults(State(fake): State<FakeGoogle>) -> Response {
    json_response(StatusCode::OK, &json!(fake.faults()))
}

async fn add_fault(State(fake): State<FakeGoogle>, body: Bytes) -> Response {
    let rule: FaultRule = match parse(&body) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    if let Err(error) = rule.validate() {
        return control_error(StatusCode::BAD_REQUEST, &error);
    }
    fake.add_fault(rule);
    no_content()
}

async fn clear_faults(State(fake): State<FakeGoogle>) -> Response {
    fake.clear_faults();
    no_content()
}

async fn list_calls(State(fake): State<FakeGoogle>) -> Response {
    let calls = fake.calls();
    let writes = calls.iter().filter(|c| c.is_write()).count();
    json_response(
        StatusCode::OK,
        &json!({ "calls": calls, "total": calls.len(), "write_calls": writes }),
    )
}

async fn reset_calls(State(fake): State<FakeGoogle>) -> Response {
    fake.reset_calls();
    no_content()
}
