//! Control-API routes for sharing, service accounts, quotas, recurrence and call-rate
//! analysis (the table is in [`crate::control`]).

use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post, put};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::control::{control_error, no_content, parse};
use crate::error::json_response;
use crate::{FakeGoogle, QuotaConfig, Role};

pub(crate) fn routes() -> Router<FakeGoogle> {
    Router::new()
        .route("/_fake/calls/max-in-window", get(max_in_window))
        .route("/_fake/calendars/{id}/acl", get(acl_rules).post(share))
        .route(
            "/_fake/calendars/{id}/events/{event_id}/occurrences",
            get(occurrences),
        )
        .route("/_fake/groups/{group}/members", post(add_group_member))
        .route("/_fake/sharing-notifications", get(sharing_notifications))
        .route("/_fake/service-accounts", post(register_service_account))
        .route("/_fake/service-accounts/test-key-file", get(test_key_file))
        .route(
            "/_fake/service-accounts/{email}/domain-wide-delegation",
            put(set_delegation),
        )
        .route(
            "/_fake/service-accounts/{email}",
            axum::routing::delete(remove_service_account),
        )
        .route(
            "/_fake/quota",
            get(get_quota).put(set_quota).delete(clear_quota),
        )
}

#[derive(Deserialize)]
struct WindowQuery {
    window_ms: u64,
    method: Option<String>,
    principal: Option<String>,
    #[serde(default)]
    exclude_token: bool,
}

async fn max_in_window(
    State(fake): State<FakeGoogle>,
    query: Result<Query<WindowQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = query else {
        return control_error(
            StatusCode::BAD_REQUEST,
            "window_ms (milliseconds) is required",
        );
    };
    if q.window_ms == 0 {
        return control_error(StatusCode::BAD_REQUEST, "window_ms must be positive");
    }
    let max = fake.max_calls_in_window_where(Duration::from_millis(q.window_ms), |c| {
        q.method.as_deref().is_none_or(|m| c.method == m)
            && q.principal
                .as_deref()
                .is_none_or(|p| c.principal.as_deref() == Some(p))
            && !(q.exclude_token && c.method == "token")
    });
    json_response(StatusCode::OK, &json!({ "max": max }))
}

async fn acl_rules(State(fake): State<FakeGoogle>, Path(id): Path<String>) -> Response {
    if !fake.calendar_exists(&id) {
        return control_error(StatusCode::NOT_FOUND, "no such calendar");
    }
    json_response(StatusCode::OK, &Value::Array(fake.acl_rules(&id)))
}

#[derive(Deserialize)]
struct ShareBody {
    email: String,
    role: String,
}

async fn share(State(fake): State<FakeGoogle>, Path(id): Path<String>, body: Bytes) -> Response {
    let b: ShareBody = match parse(&body) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let Some(role) = Role::parse(&b.role) else {
        return control_error(StatusCode::BAD_REQUEST, &format!("unknown role {}", b.role));
    };
    match fake.try_share_calendar(&id, &b.email, role) {
        Ok(()) => no_content(),
        Err(e) if e.starts_with("404") => control_error(StatusCode::NOT_FOUND, &e),
        Err(e) => control_error(StatusCode::BAD_REQUEST, &e),
    }
}

async fn occurrences(
    State(fake): State<FakeGoogle>,
    Path((id, event_id)): Path<(String, String)>,
) -> Response {
    match fake.try_occurrences(&id, &event_id) {
        Ok(occurrences) => json_response(StatusCode::OK, &json!(occurrences)),
        Err(e) if e.starts_with("404") => control_error(StatusCode::NOT_FOUND, &e),
        Err(e) => control_error(StatusCode::BAD_REQUEST, &e),
    }
}

#[derive(Deserialize)]
struct MemberBody {
    email: String,
}

async fn add_group_member(
    State(fake): State<FakeGoogle>,
    Path(group): Path<String>,
    body: Bytes,
) -> Response {
    match parse::<MemberBody>(&body) {
        Ok(b) => {
            fake.add_group_member(&group, &b.email);
            no_content()
        }
        Err(r) => *r,
    }
}

async fn sharing_notifications(State(fake): State<FakeGoogle>) -> Response {
    json_response(StatusCode::OK, &json!(fake.sharing_notifications()))
}

#[derive(Deserialize)]
struct ServiceAccountBody {
    email: Option<String>,
    public_key_pem: Option<String>,
    #[serde(default)]
    test_key: bool,
    #[serde(default)]
    domain_wide_delegation: bool,
}

async fn register_service_account(State(fake): State<FakeGoogle>, body: Bytes) -> Response {
    let b: ServiceAccountBody = match parse(&body) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let email = match (b.test_key, b.email, b.public_key_pem) {
        (true, None, None) => fake.register_test_service_account(),
        (false, Some(email), Some(pem)) => match fake.register_service_account(&email, &pem) {
            Ok(()) => email,
            Err(e) => return control_error(StatusCode::BAD_REQUEST, &e),
        },
        _ => {
            return control_error(
                StatusCode::BAD_REQUEST,
                "give {email, public_key_pem} or {test_key: true}",
            );
        }
    };
    fake.set_domain_wide_delegation(&email, b.domain_wide_delegation);
    json_response(StatusCode::OK, &json!({ "email": email }))
}

async fn test_key_file(State(fake): State<FakeGoogle>) -> Response {
    let key: Value = serde_json::from_str(&fake.test_service_account_json()).unwrap_or_default();
    json_response(StatusCode::OK, &key)
}

#[derive(Deserialize)]
struct DelegationBody {
    enabled: bool,
}

async fn set_delegation(
    State(fake): State<FakeGoogle>,
    Path(email): Path<String>,
    body: Bytes,
) -> Response {
    let b: DelegationBody = match parse(&body) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    if fake.set_domain_wide_delegation(&email, b.enabled) {
        no_content()
    } else {
        control_error(StatusCode::NOT_FOUND, "no such service account")
    }
}

async fn remove_service_account(
    State(fake): State<FakeGoogle>,
    Path(email): Path<String>,
) -> Response {
    fake.remove_service_account(&email);
    no_content()
}

async fn get_quota(State(fake): State<FakeGoogle>) -> Response {
    json_response(StatusCode::OK, &json!(fake.quota()))
}

async fn set_quota(State(fake): State<FakeGoogle>, body: Bytes) -> Response {
    let config: QuotaConfig = match parse(&body) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    if let Err(e) = config.validate() {
        return control_error(StatusCode::BAD_REQUEST, &e);
    }
    fake.set_quota(config);
    no_content()
}

async fn clear_quota(State(fake): State<FakeGoogle>) -> Response {
    fake.set_quota(QuotaConfig::default());
    no_content()
}
