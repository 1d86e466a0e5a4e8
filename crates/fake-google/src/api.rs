//! HTTP plumbing of the fake Calendar API v3 (`/calendar/v3/...`) and the OAuth token
//! endpoint (`/token`): routing, then for every call faults (+latency), authentication,
//! quota, the operation itself and the call log.

use std::convert::Infallible;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::Utc;
use serde_json::{Value, json};

use crate::FakeGoogle;
use crate::error::{ApiError, json_response};
use crate::handlers as h;
use crate::oauth::{self, Caller};
use crate::state::{Call, Principal, State as FakeState};

/// Routes of the Calendar API and the token endpoint.
pub(crate) fn routes() -> Router<FakeGoogle> {
    Router::new()
        .route("/calendar/v3/calendars", post(h::calendars_insert))
        .route(
            "/calendar/v3/calendars/{calendar_id}",
            get(h::calendars_get).delete(h::calendars_delete),
        )
        .route(
            "/calendar/v3/calendars/{calendar_id}/events",
            get(h::events_list).post(h::events_insert),
        )
        .route(
            "/calendar/v3/calendars/{calendar_id}/events/{event_id}",
            get(h::events_get)
                .put(h::events_update)
                .patch(h::events_patch)
                .delete(h::events_delete),
        )
        .route(
            "/calendar/v3/calendars/{calendar_id}/events/{event_id}/instances",
            get(h::events_instances),
        )
        .route(
            "/calendar/v3/calendars/{calendar_id}/acl",
            get(h::acl_list).post(h::acl_insert),
        )
        .route(
            "/calendar/v3/calendars/{calendar_id}/acl/{rule_id}",
            get(h::acl_get).delete(h::acl_delete),
        )
        .route(
            "/calendar/v3/users/me/calendarList",
            get(h::calendar_list_list),
        )
        .route(
            "/calendar/v3/users/me/calendarList/{calendar_id}",
            get(h::calendar_list_get),
        )
        .route("/calendar/v3/colors", get(h::colors_get))
        .route("/token", post(token))
}

/// The parts of a request every API call needs: headers and decoded query pairs.
pub(crate) struct Req {
    pub headers: HeaderMap,
    pub query: Vec<(String, String)>,
}

impl<S: Send + Sync> FromRequestParts<S> for Req {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        Ok(Req {
            headers: parts.headers.clone(),
            query: query_pairs(parts.uri.query()),
        })
    }
}

impl Req {
    /// A query parameter (the first occurrence).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn query_pairs(raw: Option<&str>) -> Vec<(String, String)> {
    raw.map(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    })
    .unwrap_or_default()
}

/// What a successful API operation answers.
pub(crate) enum Reply {
    Json(Value),
    NoContent,
}

/// The identity of a call, for fault matching and the call log.
pub(crate) struct Op {
    pub method: &'static str,
    pub calendar_id: Option<String>,
    pub event_id: Option<String>,
}

impl Op {
    pub fn new(method: &'static str, calendar_id: Option<&str>, event_id: Option<&str>) -> Self {
        Self {
            method,
            calendar_id: calendar_id.map(str::to_string),
            event_id: event_id.map(str::to_string),
        }
    }
}

/// How a call fared before the operation ran.
enum Admission {
    Fault(crate::faults::FaultError),
    Refused(ApiError, Option<String>),
    Admitted(Caller),
}

impl FakeGoogle {
    /// Runs one Calendar API call. On arrival (one short lock): fault rules, then
    /// authentication, then the quota. Then the injected latency is slept WITHOUT the lock
    /// (concurrent calls overlap), then `f` runs under the lock and the call is logged.
    pub(crate) async fn api_call<F>(&self, req: &Req, mut op: Op, f: F) -> Response
    where
        F: FnOnce(&mut FakeState, &Principal) -> Result<Reply, ApiError>,
    {
        let arrived = Utc::now();
        let now = tokio::time::Instant::now();
        let (latency, admission) = {
            let mut st = self.lock();
            let outcome = st.faults.check(op.method, op.calendar_id.as_deref());
            let admission = match outcome.error {
                Some(fault) => Admission::Fault(fault),
                None => match st.authenticate(&req.headers, op.method) {
                    Err(error) => Admission::Refused(error, None),
                    Ok(caller) => {
                        let user = req.param("quotaUser").unwrap_or(&caller.label).to_string();
                        match st.quota.admit(&user, now) {
                            Ok(()) => Admission::Admitted(caller),
                            Err(error) => Admission::Refused(error, Some(caller.label)),
                        }
                    }
                },
            };
            (outcome.latency, admission)
        };
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let mut st = self.lock();
        let (response, principal) = match admission {
            Admission::Fault(fault) => (fault.api_response(), None),
            Admission::Refused(error, label) => (error.into_response(), label),
            Admission::Admitted(caller) => {
                let response = match f(&mut st, &caller.principal) {
                    Ok(Reply::Json(body)) => {
                        match op.method {
                            "events.insert" => {
                                op.event_id =
                                    body.get("id").and_then(Value::as_str).map(Into::into);
                            }
                            "calendars.insert" => {
                                op.calendar_id =
                                    body.get("id").and_then(Value::as_str).map(Into::into);
                            }
                            _ => {}
                        }
                        json_response(StatusCode::OK, &body)
                    }
                    Ok(Reply::NoContent) => StatusCode::NO_CONTENT.into_response(),
                    Err(error) => error.into_response(),
                };
                (response, Some(caller.label))
            }
        };
        st.record(Call {
            method: op.method.to_string(),
            calendar_id: op.calendar_id,
            event_id: op.event_id,
            status: response.status().as_u16(),
            at: arrived,
            principal,
        });
        response
    }
}

/// Any route the fake does not know: Google-shaped 404.
pub(crate) async fn fallback(uri: Uri) -> Response {
    tracing::debug!(%uri, "calsync-fake-google: unhandled Calendar API route");
    ApiError::not_found().into_response()
}

/// `POST /token`: the refresh-token and JWT-bearer grants (see [`crate::oauth`]).
async fn token(State(fake): State<FakeGoogle>, headers: HeaderMap, body: Bytes) -> Response {
    let arrived = Utc::now();
    let outcome = fake.lock().faults.check("token", None);
    if !outcome.latency.is_zero() {
        tokio::time::sleep(outcome.latency).await;
    }
    // Assertions must name the token URL the client posted to (or the fake's own).
    let mut token_urls = Vec::new();
    if let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) {
        token_urls.push(format!("http://{host}/token"));
    }
    let own = fake.token_url();
    if !token_urls.contains(&own) {
        token_urls.push(own);
    }
    let mut st = fake.lock();
    let result = match outcome.error {
        Some(fault) => fault.token_response().into(),
        None => oauth::issue_token(&mut st, &headers, &body, &token_urls),
    };
    st.record(Call {
        method: "token".to_string(),
        calendar_id: None,
        event_id: None,
        status: result.response.status().as_u16(),
        at: arrived,
        principal: result.principal,
    });
    result.response
}

/// Parses a JSON request body (empty body = `{}`); bad JSON is Google's 400 `parseError`.
pub(crate) fn parse_json(body: &Bytes) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    serde_json::from_slice(body).map_err(|_| ApiError::parse_error())
}

/// The answer to an undecodable path parameter.
pub(crate) fn bad_path() -> Response {
    json_response(
        StatusCode::BAD_REQUEST,
        &ApiError::invalid("Invalid path parameter.").body(),
    )
}
