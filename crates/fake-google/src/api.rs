//! HTTP handlers of the fake Calendar API v3 (`/calendar/v3/...`) and OAuth token endpoint (`/token`).

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::FakeGoogle;
use crate::error::{ApiError, json_response, oauth_error};
use crate::events;
use crate::state::{Call, Principal, State as FakeState};

/// Routes of the Calendar API and the token endpoint.
pub(crate) fn routes() -> Router<FakeGoogle> {
    Router::new()
        .route("/calendar/v3/calendars", post(calendars_insert))
        .route(
            "/calendar/v3/calendars/{calendar_id}",
            get(calendars_get).delete(calendars_delete),
        )
        .route(
            "/calendar/v3/calendars/{calendar_id}/events",
            get(events_list).post(events_insert),
        )
        .route(
            "/calendar/v3/calendars/{calendar_id}/events/{event_id}",
            get(events_get)
                .put(events_update)
                .patch(events_patch)
                .delete(events_delete),
        )
        .route("/token", post(token))
}

/// What a successful API operation answers.
enum Reply {
    Json(Value),
    NoContent,
}

/// The identity of a call, for fault matching and the call log.
struct Op {
    method: &'static str,
    calendar_id: Option<String>,
    event_id: Option<String>,
}

impl Op {
    fn new(method: &'static str, calendar_id: Option<&str>, event_id: Option<&str>) -> Self {
        Self {
            method,
            calendar_id: calendar_id.map(str::to_string),
            event_id: event_id.map(str::to_string),
        }
    }
}

impl FakeGoogle {
    /// Runs one Calendar API call: faults (+latency), then auth, then `f`; logs the call.
    async fn api_call<F>(&self, headers: &HeaderMap, mut op: Op, f: F) -> Response
    where
        F: FnOnce(&mut FakeState, &Principal) -> Result<Reply, ApiError>,
    {
        let outcome = self
            .lock()
            .faults
            .check(op.method, op.calendar_id.as_deref());
        if !outcome.latency.is_zero() {
            tokio::time::sleep(outcome.latency).await;
        }
        let mut st = self.lock();
        let response = match outcome.error {
            Some(fault) => fault.api_response(),
            None => match st.authenticate(headers).and_then(|who| f(&mut st, &who)) {
                Ok(Reply::Json(body)) => {
                    match op.method {
                        "events.insert" => {
                            op.event_id = body.get("id").and_then(Value::as_str).map(Into::into);
                        }
                        "calendars.insert" => {
                            op.calendar_id = body.get("id").and_then(Value::as_str).map(Into::into);
                        }
                        _ => {}
                    }
                    json_response(StatusCode::OK, &body)
                }
                Ok(Reply::NoContent) => StatusCode::NO_CONTENT.into_response(),
                Err(error) => error.into_response(),
            },
        };
        st.record(Call {
            method: op.method.to_string(),
            calendar_id: op.calendar_id,
            event_id: op.event_id,
            status: response.status().as_u16(),
        });
        response
    }
}

/// Parses a JSON request body (empty body = `{}`); bad JSON is Google's 400 `parseError`.
fn parse_json(body: &Bytes) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    serde_json::from_slice(body).map_err(|_| ApiError::parse_error())
}

fn bad_path(_: PathRejection) -> Response {
    ApiError::invalid("Invalid path parameter.").into_response()
}

fn query_pairs(raw: Option<&str>) -> Vec<(String, String)> {
    raw.map(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    })
    .unwrap_or_default()
}

async fn calendars_insert(
    State(fake): State<FakeGoogle>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body = parse_json(&body);
    fake.api_call(
        &headers,
        Op::new("calendars.insert", None, None),
        |st, who| events::insert_calendar(st, who, body?).map(Reply::Json),
    )
    .await
}

async fn calendars_get(
    State(fake): State<FakeGoogle>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Response {
    let Path(calendar_id) = match path {
        Ok(p) => p,
        Err(e) => return bad_path(e),
    };
    let op = Op::new("calendars.get", Some(&calendar_id), None);
    fake.api_call(&headers, op, |st, who| {
        Ok(Reply::Json(
            st.calendar(&calendar_id, who)?.resource.clone(),
        ))
    })
    .await
}

async fn calendars_delete(
    State(fake): State<FakeGoogle>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Response {
    let Path(calendar_id) = match path {
        Ok(p) => p,
        Err(e) => return bad_path(e),
    };
    let op = Op::new("calendars.delete", Some(&calendar_id), None);
    fake.api_call(&headers, op, |st, who| {
        st.calendar(&calendar_id, who)?;
        st.calendars.remove(&calendar_id);
        Ok(Reply::NoContent)
    })
    .await
}

async fn events_list(
    State(fake): State<FakeGoogle>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let Path(calendar_id) = match path {
        Ok(p) => p,
        Err(e) => return bad_path(e),
    };
    let query = query_pairs(query.as_deref());
    let op = Op::new("events.list", Some(&calendar_id), None);
    fake.api_call(&headers, op, |st, who| {
        events::list(st, &calendar_id, who, &query).map(Reply::Json)
    })
    .await
}

async fn events_insert(
    State(fake): State<FakeGoogle>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Path(calendar_id) = match path {
        Ok(p) => p,
        Err(e) => return bad_path(e),
    };
    let body = parse_json(&body);
    let sent_id = body
        .as_ref()
        .ok()
        .and_then(|b| b.get("id"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let op = Op::new("events.insert", Some(&calendar_id), sent_id.as_deref());
    fake.api_call(&headers, op, |st, who| {
        events::insert(st, &calendar_id, who, body?).map(Reply::Json)
    })
    .await
}

type EventPath = Result<Path<(String, String)>, PathRejection>;

async fn events_get(
    State(fake): State<FakeGoogle>,
    path: EventPath,
    headers: HeaderMap,
) -> Response {
    let Path((calendar_id, event_id)) = match path {
        Ok(p) => p,
        Err(e) => return bad_path(e),
    };
    let op = Op::new("events.get", Some(&calendar_id), Some(&event_id));
    fake.api_call(&headers, op, |st, who| {
        events::get(st, &calendar_id, &event_id, who).map(Reply::Json)
    })
    .await
}

async fn events_update(
    State(fake): State<FakeGoogle>,
    path: EventPath,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Path((calendar_id, event_id)) = match path {
        Ok(p) => p,
        Err(e) => return bad_path(e),
    };
    let body = parse_json(&body);
    let op = Op::new("events.update", Some(&calendar_id), Some(&event_id));
    fake.api_call(&headers, op, |st, who| {
        events::update(st, &calendar_id, &event_id, who, body?).map(Reply::Json)
    })
    .await
}

async fn events_patch(
    State(fake): State<FakeGoogle>,
    path: EventPath,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Path((calendar_id, event_id)) = match path {
        Ok(p) => p,
        Err(e) => return bad_path(e),
    };
    let body = parse_json(&body);
    let op = Op::new("events.patch", Some(&calendar_id), Some(&event_id));
    fake.api_call(&headers, op, |st, who| {
        events::patch(st, &calendar_id, &event_id, who, body?).map(Reply::Json)
    })
    .await
}

async fn events_delete(
    State(fake): State<FakeGoogle>,
    path: EventPath,
    headers: HeaderMap,
) -> Response {
    let Path((calendar_id, event_id)) = match path {
        Ok(p) => p,
        Err(e) => return bad_path(e),
    };
    let op = Op::new("events.delete", Some(&calendar_id), Some(&event_id));
    fake.api_call(&headers, op, |st, who| {
        events::delete(st, &calendar_id, &event_id, who).map(|()| Reply::NoContent)
    })
    .await
}

/// Any route the fake does not know: Google-shaped 404.
pub(crate) async fn fallback(uri: Uri) -> Response {
    tracing::debug!(%uri, "calsync-fake-google: unhandled Calendar API route");
    ApiError::not_found().into_response()
}

/// `POST /token` (form-encoded `grant_type=refresh_token&refresh_token=..&client_id=..&client_secret=..`).
async fn token(State(fake): State<FakeGoogle>, headers: HeaderMap, body: Bytes) -> Response {
    let outcome = fake.lock().faults.check("token", None);
    if !outcome.latency.is_zero() {
        tokio::time::sleep(outcome.latency).await;
    }
    let mut st = fake.lock();
    let response = match outcome.error {
        Some(fault) => fault.token_response(),
        None => issue_token(&mut st, &headers, &body),
    };
    st.record(Call {
        method: "token".to_string(),
        calendar_id: None,
        event_id: None,
        status: response.status().as_u16(),
    });
    response
}

fn issue_token(st: &mut FakeState, headers: &HeaderMap, body: &Bytes) -> Response {
    let form: Vec<(String, String)> = url::form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let param = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    };
    let Some(grant_type) = param("grant_type") else {
        return oauth_error(
            400,
            "invalid_request",
            "Required parameter is missing: grant_type",
        );
    };
    if grant_type != "refresh_token" {
        return oauth_error(
            400,
            "unsupported_grant_type",
            &format!("Invalid grant_type: {grant_type}"),
        );
    }
    // Client credentials may come in the form or as HTTP Basic auth.
    let basic_auth = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.len() > 6 && v[..6].eq_ignore_ascii_case("basic "));
    if param("client_id").is_none() && !basic_auth {
        return oauth_error(
            400,
            "invalid_request",
            "Could not determine client ID from request.",
        );
    }
    let Some(refresh_token) = param("refresh_token") else {
        return oauth_error(
            400,
            "invalid_request",
            "Missing required parameter: refresh_token",
        );
    };
    if st.refresh_tokens.get(refresh_token) != Some(&false) {
        return oauth_error(400, "invalid_grant", "Token has been expired or revoked.");
    }
    st.token_counter += 1;
    let access_token = format!("ya29.fake-{}", st.token_counter);
    let lifetime = st.token_lifetime;
    st.add_access_token(&access_token, lifetime, Some(refresh_token.to_string()));
    let mut response = json_response(
        StatusCode::OK,
        &json!({
            "access_token": access_token,
            "expires_in": lifetime.as_secs(),
            "token_type": "Bearer",
            "scope": "https://www.googleapis.com/auth/calendar",
        }),
    );
    response.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-cache, no-store, max-age=0, must-revalidate"),
    );
    response
}
