//! Pages and actions, by area. Every handler returns `Result<_, PageError>`; the
//! extractors here authenticate (no handler can forget to) and validate input before a
//! handler runs.

pub mod audit;
pub mod charts;
pub mod check;
pub mod jobs;
pub mod layout;
pub mod login;
pub mod overview;
pub mod preferences;
pub mod runs;
pub mod users;
pub mod week;

use std::net::IpAddr;

use axum::{
    extract::{FromRequest, FromRequestParts, Query, Request},
    http::{HeaderMap, request::Parts},
    response::{IntoResponse, Redirect, Response},
};
use maud::Markup;

use crate::{
    SharedState,
    auth::{Caller, Role, Session, bearer_token, same_origin},
    client::client_ip,
    error::PageError,
    input::{FormParams, Params, check_text},
};

use layout::{Who, enc};

/// Result of a page or action handler.
pub type PageResult = Result<Response, PageError>;

/// Authenticate a request: a bearer token (throttled like a login) or a session cookie.
/// `Ok(None)`: no credentials.
async fn authenticate(
    st: &SharedState,
    headers: &HeaderMap,
    client: Option<IpAddr>,
) -> Result<Option<Session>, PageError> {
    let too_many = |retry_after| PageError::TooManyRequests { retry_after };
    if bearer_token(headers).is_some() {
        st.throttle.admit(client).map_err(too_many)?;
    }
    match st.keys.caller(&st.pool, headers).await? {
        Caller::Known(s) => Ok(Some(s)),
        Caller::Anonymous => Ok(None),
        Caller::BadBearer => {
            tracing::warn!(client = ?client, "dashboard: rejected a wrong bearer token");
            st.throttle.failed(client).map_err(too_many)?;
            Err(PageError::Unauthorized)
        }
    }
}

/// Rendering context of an authenticated page view. Extracting it sends browsers
/// without a session to the login page.
pub struct Ctx {
    session: Session,
    csrf: String,
    flash: Option<String>,
}

impl Ctx {
    fn role_label(&self) -> &'static str {
        match self.session.role {
            Role::Admin => "admin",
            Role::ReadOnly => "read-only",
        }
    }

    /// Whether the caller may act.
    pub fn admin(&self) -> bool {
        self.session.role == Role::Admin
    }

    /// The session's CSRF token for forms.
    pub fn csrf(&self) -> &str {
        &self.csrf
    }

    /// The page around `body`.
    pub fn render(&self, title: &str, body: Markup) -> PageResult {
        self.render_refreshing(title, None, body)
    }

    /// The page around `body`, reloaded every `refresh` seconds when set.
    pub fn render_refreshing(&self, title: &str, refresh: Option<u32>, body: Markup) -> PageResult {
        Ok(layout::page_refreshing(
            title,
            Some(Who {
                role: self.role_label(),
                csrf: &self.csrf,
            }),
            self.flash.as_deref(),
            refresh,
            body,
        )
        .into_response())
    }
}

impl FromRequestParts<SharedState> for Ctx {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, st: &SharedState) -> Result<Ctx, PageError> {
        let client = client_ip(parts, &st.trusted_proxies);
        let session = authenticate(st, &parts.headers, client)
            .await?
            .ok_or(PageError::LoginRequired)?;
        let flash = Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
            .ok()
            .and_then(|Query(pairs)| pairs.into_iter().rev().find(|(k, _)| k == "flash"))
            .map(|(_, v)| v);
        if let Some(f) = &flash {
            check_text(f, "flash")?;
        }
        Ok(Ctx {
            csrf: st.keys.csrf_token(&session),
            session,
            flash,
        })
    }
}

/// An operator action: a form POST by an admin, same-origin and CSRF-checked (bearer
/// callers are not CSRF-able), with its `back` target validated — all before the
/// handler runs, so a refused request changes nothing.
pub struct Action {
    session: Session,
    pub form: Params,
    back: Option<String>,
}

impl Action {
    /// Who acted, for the audit log.
    pub fn actor(&self) -> &'static str {
        if self.session.bearer() {
            "dashboard:admin-token"
        } else {
            "dashboard:admin"
        }
    }

    /// Redirect to the validated `back` target (or `default`) with a flash message.
    pub fn back_to(&self, default: &str, flash: &str) -> Response {
        let target = self.back.as_deref().unwrap_or(default);
        let sep = if target.contains('?') { '&' } else { '?' };
        Redirect::to(&format!("{target}{sep}flash={}", enc(flash))).into_response()
    }
}

/// A cookie-authenticated or bearer form POST: the form parsed, the caller
/// authenticated, same-origin and CSRF checked (bearer callers are not CSRF-able).
async fn checked_post(req: Request, st: &SharedState) -> Result<(Session, Params), PageError> {
    let (parts, body) = req.into_parts();
    let client = client_ip(&parts, &st.trusted_proxies);
    let headers = parts.headers.clone();
    let FormParams(form) = FormParams::from_request(Request::from_parts(parts, body), st).await?;
    let session = authenticate(st, &headers, client)
        .await?
        .ok_or(PageError::Unauthorized)?;
    if !session.bearer()
        && (!same_origin(&headers) || !st.keys.csrf_ok(&session, form.get("csrf").unwrap_or("")))
    {
        tracing::warn!("dashboard: rejected a POST with a missing or wrong CSRF token");
        return Err(PageError::Forbidden(
            "Missing or invalid CSRF token; reload the page and try again.".into(),
        ));
    }
    Ok((session, form))
}

impl FromRequest<SharedState> for Action {
    type Rejection = PageError;

    async fn from_request(req: Request, st: &SharedState) -> Result<Action, PageError> {
        let (session, form) = checked_post(req, st).await?;
        if session.role != Role::Admin {
            return Err(PageError::Forbidden(
                "The read-only role cannot change anything.".into(),
            ));
        }
        let back = form.back()?;
        Ok(Action {
            session,
            form,
            back,
        })
    }
}

/// A POST that changes nothing calsync keeps (the check against Google), open to both
/// roles: same-origin and CSRF-checked like [`Action`], because it spends Google quota.
/// It renders its answer as a page.
pub struct ReadPost {
    ctx: Ctx,
}

impl ReadPost {
    /// The page context of the caller.
    pub fn ctx(&self) -> &Ctx {
        &self.ctx
    }
}

impl FromRequest<SharedState> for ReadPost {
    type Rejection = PageError;

    async fn from_request(req: Request, st: &SharedState) -> Result<ReadPost, PageError> {
        let (session, _form) = checked_post(req, st).await?;
        Ok(ReadPost {
            ctx: Ctx {
                csrf: st.keys.csrf_token(&session),
                session,
                flash: None,
            },
        })
    }
}

/// Fallback for unknown paths.
pub async fn not_found() -> PageError {
    PageError::NotFound("There is no such page.".into())
}

/// Fallback for known paths with the wrong method.
pub async fn method_not_allowed() -> PageError {
    PageError::MethodNotAllowed
}
