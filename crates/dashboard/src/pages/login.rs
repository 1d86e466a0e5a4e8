//! Login and logout.

use axum::{
    extract::{Request, State},
    http::{HeaderValue, StatusCode, header, request::Parts},
    response::{IntoResponse, Redirect},
};
use maud::html;

use super::{PageResult, authenticate, layout};
use crate::{
    SharedState,
    auth::{Keys, same_origin},
    client::client_ip,
    error::PageError,
    input::{FormParams, QueryParams},
};

fn set_cookie(resp: &mut axum::response::Response, cookie: &str) {
    if let Ok(v) = HeaderValue::from_str(cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
}

/// `GET /login`.
pub async fn form(QueryParams(p): QueryParams) -> PageResult {
    let body = html! {
        @if p.get("error").is_some() {
            div.error role="alert" { "Invalid token." }
        }
        form method="post" action="/login" {
            label {
                "Access token "
                input type="password" name="token" autocomplete="current-password" autofocus required;
            }
            " "
            button { "Log in" }
        }
        p.muted {
            "Tokens are configured with CALSYNC_DASHBOARD_ADMIN_TOKEN / CALSYNC_DASHBOARD_READONLY_TOKEN."
        }
    };
    Ok(layout::page("Log in", None, None, body).into_response())
}

fn split(req: Request) -> (Parts, axum::body::Body) {
    req.into_parts()
}

/// `POST /login`: throttled (see `throttle`), then a server-side session.
pub async fn submit(State(st): State<SharedState>, req: Request) -> PageResult {
    let (parts, body) = split(req);
    if !same_origin(&parts.headers) {
        return Err(PageError::Forbidden("Cross-origin login refused.".into()));
    }
    let client = client_ip(&parts, &st.trusted_proxies);
    let too_many = |retry_after| PageError::TooManyRequests { retry_after };
    // Refused before the token is looked at: a throttled guess reveals nothing.
    st.throttle.admit(client).map_err(too_many)?;
    let FormParams(form) = FormParams::from_request_parts_and_body(parts, body, &st).await?;
    let token = form.get("token").unwrap_or("");
    let Some(role) = st.keys.role_for_token(token) else {
        tracing::warn!(client = ?client, "dashboard: failed login");
        st.throttle.failed(client).map_err(too_many)?;
        let mut resp = Redirect::to("/login?error=1").into_response();
        *resp.status_mut() = StatusCode::SEE_OTHER;
        return Ok(resp);
    };
    st.throttle.succeeded(client);
    let addr = client.map(|c| c.to_string());
    let cookie = st
        .keys
        .login(&st.pool, role, addr.as_deref(), st.secure_cookies)
        .await?;
    tracing::info!(role = role.as_str(), client = ?client, "dashboard: login");
    let mut resp = Redirect::to("/").into_response();
    set_cookie(&mut resp, &cookie);
    Ok(resp)
}

/// `POST /logout`: ends the session server-side and clears the cookie.
pub async fn logout(State(st): State<SharedState>, req: Request) -> PageResult {
    let (parts, body) = split(req);
    let client = client_ip(&parts, &st.trusted_proxies);
    let headers = parts.headers.clone();
    let FormParams(form) = FormParams::from_request_parts_and_body(parts, body, &st).await?;
    if let Some(session) = authenticate(&st, &headers, client).await? {
        if !session.bearer() && !st.keys.csrf_ok(&session, form.get("csrf").unwrap_or("")) {
            return Err(PageError::Forbidden(
                "Missing or invalid CSRF token.".into(),
            ));
        }
        if st.keys.logout(&st.pool, &session).await? {
            tracing::info!(role = session.role.as_str(), "dashboard: logout");
        }
    }
    let mut resp = Redirect::to("/login").into_response();
    set_cookie(&mut resp, &Keys::clear_cookie(st.secure_cookies));
    Ok(resp)
}
