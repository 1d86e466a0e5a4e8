//! Page handlers: overview, jobs (list, detail, retry, discard), nightly runs, users,
//! audit log, login/logout.

use std::{collections::HashMap, fmt::Write, sync::Arc};

use axum::{
    Form,
    extract::{FromRequestParts, Path, Query, State},
    http::request::Parts,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{Html, IntoResponse, Redirect, Response},
};
use calsync_domain::{
    DomainError,
    queue::{self, JobFilter, JobState, RunTrigger},
    users,
};
use chrono::{DateTime, Utc};
use sqlx::{AssertSqlSafe, Postgres, QueryBuilder, Row};

use crate::{
    AppState,
    auth::{COOKIE, Role, SESSION_SECS, Session, same_origin},
    html::{badge, button, esc, page, q, short, ts},
};

type St = State<Arc<AppState>>;
type Params = HashMap<String, String>;

/// An error page.
fn error_page(status: StatusCode, title: &str, msg: &str) -> Response {
    (
        status,
        Html(page(
            title,
            None,
            "",
            None,
            &format!("<div class=\"error\">{}</div>", esc(msg)),
        )),
    )
        .into_response()
}

fn db_error(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "dashboard database error");
    error_page(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Error",
        "A database error occurred; see the server log.",
    )
}

/// Rendering context of an authenticated page.
pub(crate) struct Ctx {
    session: Session,
    csrf: String,
}

impl Ctx {
    fn role(&self) -> &'static str {
        match self.session.role {
            Role::Admin => "admin",
            Role::ReadOnly => "read-only",
        }
    }
    fn admin(&self) -> bool {
        self.session.role == Role::Admin
    }
    fn render(&self, title: &str, flash: Option<&String>, body: &str) -> Response {
        let mut resp = Html(page(
            title,
            Some(self.role()),
            &self.csrf,
            flash.map(|s| s.as_str()),
            body,
        ))
        .into_response();
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        resp.headers_mut()
            .insert("x-frame-options", HeaderValue::from_static("DENY"));
        resp.headers_mut().insert(
            "content-security-policy",
            HeaderValue::from_static("default-src 'self'; style-src 'unsafe-inline'"),
        );
        resp
    }
}

/// An authenticated page view: extracting it sends unauthenticated browsers to the
/// login page, so no page handler can forget the check.
impl FromRequestParts<Arc<AppState>> for Ctx {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, st: &Arc<AppState>) -> Result<Ctx, Response> {
        match st.keys.session_from(&parts.headers) {
            Some(session) => Ok(Ctx {
                csrf: st.keys.csrf_token(&session),
                session,
            }),
            None => Err(Redirect::to("/login").into_response()),
        }
    }
}

/// Authenticate an action: admin role, same origin, and a valid CSRF token.
#[expect(
    clippy::result_large_err,
    reason = "the error is the response handlers return as is"
)]
fn act(st: &AppState, headers: &HeaderMap, form: &Params) -> Result<Session, Response> {
    let Some(session) = st.keys.session_from(headers) else {
        return Err(error_page(
            StatusCode::UNAUTHORIZED,
            "Not logged in",
            "Log in first.",
        ));
    };
    if !session.bearer {
        let token = form.get("csrf").map(String::as_str).unwrap_or("");
        if !same_origin(headers) || !st.keys.csrf_ok(&session, token) {
            tracing::warn!("dashboard: rejected a POST with a missing or wrong CSRF token");
            return Err(error_page(
                StatusCode::FORBIDDEN,
                "Forbidden",
                "Missing or invalid CSRF token; reload the page and try again.",
            ));
        }
    }
    if session.role != Role::Admin {
        return Err(error_page(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "The read-only role cannot change anything.",
        ));
    }
    Ok(session)
}

fn actor(s: &Session) -> String {
    if s.bearer {
        "dashboard:admin-token".into()
    } else {
        "dashboard:admin".into()
    }
}

/// Redirect to a local path with a flash message.
fn back(form: &Params, default: &str, flash: &str) -> Response {
    let target = form
        .get("back")
        .filter(|b| b.starts_with('/') && !b.starts_with("//"))
        .map(String::as_str)
        .unwrap_or(default);
    let sep = if target.contains('?') { '&' } else { '?' };
    Redirect::to(&format!("{target}{sep}flash={}", q(flash))).into_response()
}

pub(crate) async fn not_found() -> Response {
    error_page(StatusCode::NOT_FOUND, "Not found", "There is no such page.")
}

// ---------------------------------------------------------------- login

pub(crate) async fn login_form(Query(p): Query<Params>) -> Response {
    let err = p
        .get("error")
        .map(|_| "<div class=\"error\">Invalid token.</div>")
        .unwrap_or("");
    Html(page(
        "Log in",
        None,
        "",
        None,
        &format!(
            "{err}<form method=\"post\" action=\"/login\"><label>Access token <input type=\"password\" name=\"token\" \
             autocomplete=\"current-password\" autofocus required></label> <button>Log in</button></form>\
             <p class=\"muted\">Tokens are configured with CALSYNC_DASHBOARD_ADMIN_TOKEN / CALSYNC_DASHBOARD_READONLY_TOKEN.</p>"
        ),
    ))
    .into_response()
}

pub(crate) async fn login(State(st): St, headers: HeaderMap, Form(form): Form<Params>) -> Response {
    if !same_origin(&headers) {
        return error_page(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "Cross-origin login refused.",
        );
    }
    let token = form.get("token").map(String::as_str).unwrap_or("");
    let Some(role) = st.keys.role_for_token(token) else {
        tracing::warn!("dashboard: failed login");
        let mut resp = Redirect::to("/login?error=1").into_response();
        *resp.status_mut() = StatusCode::SEE_OTHER;
        return resp;
    };
    tracing::info!(?role, "dashboard: login");
    let cookie = format!(
        "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={SESSION_SECS}{}",
        st.keys.issue(role),
        if st.secure_cookies { "; Secure" } else { "" }
    );
    let mut resp = Redirect::to("/").into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

pub(crate) async fn logout(
    State(st): St,
    headers: HeaderMap,
    Form(form): Form<Params>,
) -> Response {
    if let Some(session) = st.keys.session_from(&headers)
        && !session.bearer
        && !st
            .keys
            .csrf_ok(&session, form.get("csrf").map(String::as_str).unwrap_or(""))
    {
        return error_page(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "Missing or invalid CSRF token.",
        );
    }
    let mut resp = Redirect::to("/login").into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("calsync_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    resp
}

// ---------------------------------------------------------------- overview

pub(crate) async fn overview(State(st): St, ctx: Ctx, Query(p): Query<Params>) -> Response {
    let (counts, users, runs) = match tokio::try_join!(
        queue::job_counts(&st.pool),
        users::counts(&st.pool),
        queue::recent_nightly_runs(&st.pool, 5)
    ) {
        Ok(v) => v,
        Err(e) => return db_error(e),
    };
    let mut body = String::from("<h2>Users</h2><div class=\"cards\">");
    for (label, n, link) in [
        ("users", users.users, "/users"),
        ("with calendar", users.with_calendar, "/users"),
        ("flagged", users.flagged, "/users?status=flagged"),
        (
            "never synced",
            users.never_synced,
            "/users?status=never_synced",
        ),
        ("due", users.due, "/users?status=due"),
        (
            "needs re-auth",
            users.needs_reauth,
            "/users?status=needs_reauth",
        ),
        (
            "calendar missing",
            users.calendar_missing,
            "/users?status=calendar_missing",
        ),
        ("failing", users.failing, "/users?status=failing"),
    ] {
        let _ = write!(
            body,
            "<a class=\"card\" href=\"{link}\"><b>{n}</b>{}</a>",
            esc(label)
        );
    }
    body.push_str("</div><h2>Jobs</h2><table><tr><th>queue</th>");
    for s in JobState::ALL {
        let _ = write!(body, "<th class=\"num\">{}</th>", s.as_str());
    }
    body.push_str("</tr>");
    let mut queues: Vec<&str> = counts.iter().map(|c| c.0.as_str()).collect();
    queues.dedup();
    if queues.is_empty() {
        body.push_str("<tr><td colspan=\"7\" class=\"muted\">No jobs yet.</td></tr>");
    }
    for qn in queues {
        let _ = write!(body, "<tr><td>{}</td>", esc(qn));
        for s in JobState::ALL {
            let n = counts
                .iter()
                .find(|c| c.0 == qn && c.1 == s)
                .map(|c| c.2)
                .unwrap_or(0);
            let _ = write!(
                body,
                "<td class=\"num\"><a href=\"/jobs?queue={}&state={}\">{n}</a></td>",
                q(qn),
                s.as_str()
            );
        }
        body.push_str("</tr>");
    }
    body.push_str("</table><h2>Latest nightly runs</h2>");
    body.push_str(&runs_table(&runs));
    if ctx.admin() {
        body.push_str(&format!(
            "<p>{}</p>",
            button(
                "/runs/now",
                "Run the nightly sync now",
                &ctx.csrf,
                &[("back", "/runs".into())],
                false
            )
        ));
    }
    ctx.render("Overview", p.get("flash"), &body)
}

// ---------------------------------------------------------------- jobs

fn filter_from(p: &Params) -> Result<JobFilter, String> {
    let mut f = JobFilter::default();
    if let Some(s) = p.get("state").filter(|s| !s.is_empty()) {
        f.state = Some(JobState::parse(s).ok_or_else(|| format!("unknown state {s:?}"))?);
    }
    if let Some(qn) = p.get("queue").filter(|s| !s.is_empty()) {
        f.queue = Some(qn.clone());
    }
    if let Some(u) = p.get("user_id").filter(|s| !s.is_empty()) {
        f.user_id = Some(
            u.trim()
                .parse()
                .map_err(|_| format!("user id must be a number, got {u:?}"))?,
        );
    }
    if let Some(r) = p.get("run_id").filter(|s| !s.is_empty()) {
        f.run_id = Some(
            r.trim()
                .parse()
                .map_err(|_| format!("run id must be a number, got {r:?}"))?,
        );
    }
    Ok(f)
}

fn filter_fields(f: &JobFilter) -> Vec<(&'static str, String)> {
    let mut v = Vec::new();
    if let Some(s) = f.state {
        v.push(("state", s.as_str().to_string()));
    }
    if let Some(qn) = &f.queue {
        v.push(("queue", qn.clone()));
    }
    if let Some(u) = f.user_id {
        v.push(("user_id", u.to_string()));
    }
    if let Some(r) = f.run_id {
        v.push(("run_id", r.to_string()));
    }
    v
}

fn filter_query(f: &JobFilter) -> String {
    filter_fields(f)
        .iter()
        .map(|(k, v)| format!("{k}={}", q(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// A row of the jobs list.
struct JobRow {
    id: String,
    queue: String,
    state: String,
    user_id: Option<String>,
    attempts: i32,
    max_attempts: i32,
    run_at: DateTime<Utc>,
    err: Option<String>,
}

async fn list_jobs(
    st: &AppState,
    f: &JobFilter,
    before: Option<&str>,
    limit: i64,
) -> Result<Vec<JobRow>, sqlx::Error> {
    let mut qb = QueryBuilder::<Postgres>::new(format!(
        "SELECT j.id, j.job_type, {} AS state, calsync.job_payload(j.job) ->> 'user_id' AS user_id, \
         j.attempts, j.max_attempts, j.run_at, j.last_result ->> 'Err' AS err FROM apalis.jobs j WHERE true",
        JobState::SQL_EXPR
    ));
    f.push_conditions(&mut qb);
    if let Some(b) = before {
        qb.push(" AND j.id < ").push_bind(b.to_string());
    }
    qb.push(" ORDER BY j.id DESC LIMIT ").push_bind(limit);
    let rows = qb.build().fetch_all(&st.pool).await?;
    rows.into_iter()
        .map(|r| {
            Ok(JobRow {
                id: r.try_get("id")?,
                queue: r.try_get("job_type")?,
                state: r.try_get("state")?,
                user_id: r.try_get("user_id")?,
                attempts: r.try_get("attempts")?,
                max_attempts: r.try_get("max_attempts")?,
                run_at: r.try_get("run_at")?,
                err: r.try_get("err")?,
            })
        })
        .collect()
}

fn jobs_table(rows: &[JobRow]) -> String {
    let mut t = String::from(
        "<table><tr><th>job</th><th>queue</th><th>state</th><th>user</th><th class=\"num\">attempts</th>\
         <th>run at</th><th>last error</th></tr>",
    );
    if rows.is_empty() {
        t.push_str("<tr><td colspan=\"7\" class=\"muted\">No jobs match.</td></tr>");
    }
    for j in rows {
        let user = j
            .user_id
            .as_deref()
            .map(|u| format!("<a href=\"/users/{0}\">{0}</a>", esc(u)))
            .unwrap_or_else(|| "—".into());
        let _ = write!(
            t,
            "<tr><td><a href=\"/jobs/{0}\"><code>{0}</code></a></td><td>{1}</td><td>{2}</td><td>{user}</td>\
             <td class=\"num\">{3}/{4}</td><td>{5}</td><td>{6}</td></tr>",
            esc(&j.id),
            esc(&j.queue),
            badge(&j.state),
            j.attempts,
            j.max_attempts,
            ts(Some(j.run_at)),
            esc(&short(j.err.as_deref().unwrap_or(""), 120))
        );
    }
    t.push_str("</table>");
    t
}

pub(crate) async fn jobs(State(st): St, ctx: Ctx, Query(p): Query<Params>) -> Response {
    let f = match filter_from(&p) {
        Ok(f) => f,
        Err(msg) => return error_page(StatusCode::BAD_REQUEST, "Bad filter", &msg),
    };
    let before = p
        .get("before")
        .filter(|b| !b.is_empty())
        .map(String::as_str);
    let mut rows = match list_jobs(&st, &f, before, st.page_size + 1).await {
        Ok(r) => r,
        Err(e) => return db_error(e),
    };
    let more = rows.len() as i64 > st.page_size;
    rows.truncate(st.page_size as usize);
    let mut body = String::from(
        "<form class=\"filters\" method=\"get\" action=\"/jobs\"><label>state <select name=\"state\"><option value=\"\">any</option>",
    );
    for s in JobState::ALL {
        let sel = if f.state == Some(s) { " selected" } else { "" };
        let _ = write!(body, "<option{sel}>{}</option>", s.as_str());
    }
    let _ = write!(
        body,
        "</select></label><label>queue <input name=\"queue\" value=\"{}\" size=\"14\"></label>\
         <label>user id <input name=\"user_id\" value=\"{}\" size=\"8\"></label>\
         <label>run id <input name=\"run_id\" value=\"{}\" size=\"6\"></label><button>Filter</button></form>",
        esc(f.queue.as_deref().unwrap_or("")),
        f.user_id.map(|u| u.to_string()).unwrap_or_default(),
        f.run_id.map(|u| u.to_string()).unwrap_or_default()
    );
    let here = format!("/jobs?{}", filter_query(&f));
    if ctx.admin() {
        let mut hidden = filter_fields(&f);
        hidden.push(("back", here.clone()));
        body.push_str("<p>");
        body.push_str(&button(
            "/jobs/retry",
            "Retry all failed/killed matching this filter",
            &ctx.csrf,
            &hidden,
            false,
        ));
        body.push(' ');
        body.push_str(&button(
            "/jobs/discard",
            "Discard all pending matching this filter",
            &ctx.csrf,
            &hidden,
            true,
        ));
        body.push_str("</p>");
    }
    body.push_str(&jobs_table(&rows));
    if more && let Some(last) = rows.last() {
        let _ = write!(
            body,
            "<p><a rel=\"next\" href=\"/jobs?{}{}before={}\">Older jobs →</a></p>",
            filter_query(&f),
            if filter_fields(&f).is_empty() {
                ""
            } else {
                "&"
            },
            q(&last.id)
        );
    }
    ctx.render("Jobs", p.get("flash"), &body)
}

pub(crate) async fn job(
    State(st): St,
    ctx: Ctx,
    Path(id): Path<String>,
    Query(p): Query<Params>,
) -> Response {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT j.id, j.job_type, {} AS state, j.status, j.attempts, j.max_attempts, j.run_at, j.lock_by, j.lock_at, \
                j.done_at, j.last_result, j.idempotency_key, j.priority, calsync.job_payload(j.job) AS payload, \
                left(encode(j.job, 'escape'), 2000) AS raw \
         FROM apalis.jobs j WHERE j.id = $1",
        JobState::SQL_EXPR
    )))
    .bind(&id)
    .fetch_optional(&st.pool)
    .await;
    let r = match row {
        Ok(Some(r)) => r,
        Ok(None) => {
            return error_page(
                StatusCode::NOT_FOUND,
                "Job not found",
                &format!("There is no job {id}."),
            );
        }
        Err(e) => return db_error(e),
    };
    let get_s = |c: &str| {
        r.try_get::<Option<String>, _>(c)
            .ok()
            .flatten()
            .unwrap_or_default()
    };
    let state = get_s("state");
    let payload: Option<serde_json::Value> = r.try_get("payload").ok().flatten();
    let last: Option<serde_json::Value> = r.try_get("last_result").ok().flatten();
    let at = |c: &str| ts(r.try_get::<Option<DateTime<Utc>>, _>(c).ok().flatten());
    let mut body = String::from("<table>");
    for (k, v) in [
        ("id", format!("<code>{}</code>", esc(&id))),
        ("queue", esc(&get_s("job_type"))),
        (
            "state",
            format!(
                "{} <span class=\"muted\">(apalis status {})</span>",
                badge(&state),
                esc(&get_s("status"))
            ),
        ),
        (
            "attempts",
            format!(
                "{} of {}",
                r.try_get::<i32, _>("attempts").unwrap_or(0),
                r.try_get::<i32, _>("max_attempts").unwrap_or(0)
            ),
        ),
        ("run at", at("run_at")),
        ("locked by", esc(&get_s("lock_by"))),
        ("locked at", at("lock_at")),
        ("done at", at("done_at")),
        ("active-job key", esc(&get_s("idempotency_key"))),
        (
            "priority",
            r.try_get::<i32, _>("priority").unwrap_or(0).to_string(),
        ),
    ] {
        let _ = write!(body, "<tr><th>{k}</th><td>{v}</td></tr>");
    }
    body.push_str("</table><h2>Payload</h2>");
    let payload_text = match &payload {
        Some(v) => serde_json::to_string_pretty(v).unwrap_or_default(),
        None => get_s("raw"),
    };
    let _ = write!(body, "<pre>{}</pre>", esc(&payload_text));
    if let Some(uid) = payload
        .as_ref()
        .and_then(|p| p.get("user_id"))
        .and_then(|u| u.as_i64())
    {
        let _ = write!(
            body,
            "<p><a href=\"/users/{uid}\">User {uid}</a> · <a href=\"/jobs?user_id={uid}\">all jobs of this user</a></p>"
        );
    }
    body.push_str("<h2>Last result</h2>");
    let last_text = match &last {
        Some(serde_json::Value::Object(m)) if m.contains_key("Err") => m["Err"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| m["Err"].to_string()),
        Some(v) => serde_json::to_string_pretty(v).unwrap_or_default(),
        None => "—".into(),
    };
    let _ = write!(body, "<pre>{}</pre>", esc(&last_text));
    if ctx.admin() {
        let here = format!("/jobs/{}", q(&id));
        body.push_str("<p>");
        if matches!(state.as_str(), "failed" | "killed" | "retrying") {
            body.push_str(&button(
                &format!("/jobs/{}/retry", q(&id)),
                "Retry now",
                &ctx.csrf,
                &[("back", here.clone())],
                false,
            ));
            body.push(' ');
        }
        if matches!(state.as_str(), "pending" | "retrying") {
            body.push_str(&button(
                &format!("/jobs/{}/discard", q(&id)),
                "Discard",
                &ctx.csrf,
                &[("back", here)],
                true,
            ));
        }
        body.push_str("</p>");
    }
    ctx.render(&format!("Job {id}"), p.get("flash"), &body)
}

fn outcome_text(verb: &str, out: &queue::ActionOutcome) -> String {
    let mut s = format!(
        "{verb} {} job{}",
        out.changed.len(),
        if out.changed.len() == 1 { "" } else { "s" }
    );
    if out.skipped > 0 {
        let _ = write!(
            s,
            ", {} skipped: the user already has an active job",
            out.skipped
        );
    }
    s
}

/// The two operator actions on jobs.
#[derive(Debug, Clone, Copy)]
enum JobAction {
    Retry,
    Discard,
}

impl JobAction {
    fn verb(self) -> &'static str {
        match self {
            JobAction::Retry => "Retried",
            JobAction::Discard => "Discarded",
        }
    }
}

/// Run `action` on the jobs `filter` selects, as the admin who posted `form`, and go
/// back with the outcome.
async fn job_action(
    st: &AppState,
    headers: &HeaderMap,
    form: &Params,
    filter: Result<JobFilter, String>,
    default_back: &str,
    action: JobAction,
) -> Response {
    let s = match act(st, headers, form) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let f = match filter {
        Ok(f) => f,
        Err(msg) => return error_page(StatusCode::BAD_REQUEST, "Bad filter", &msg),
    };
    let res = match action {
        JobAction::Retry => queue::retry_jobs(&st.pool, &f, &actor(&s)).await,
        JobAction::Discard => queue::discard_jobs(&st.pool, &f, &actor(&s)).await,
    };
    match res {
        Ok(out) => back(form, default_back, &outcome_text(action.verb(), &out)),
        Err(e) => db_error(e),
    }
}

fn one_job(id: &str) -> Result<JobFilter, String> {
    Ok(JobFilter {
        ids: Some(vec![id.to_string()]),
        ..Default::default()
    })
}

pub(crate) async fn retry_one(
    State(st): St,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<Params>,
) -> Response {
    let here = format!("/jobs/{}", q(&id));
    job_action(&st, &headers, &form, one_job(&id), &here, JobAction::Retry).await
}

pub(crate) async fn discard_one(
    State(st): St,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<Params>,
) -> Response {
    let here = format!("/jobs/{}", q(&id));
    job_action(
        &st,
        &headers,
        &form,
        one_job(&id),
        &here,
        JobAction::Discard,
    )
    .await
}

pub(crate) async fn retry_many(
    State(st): St,
    headers: HeaderMap,
    Form(form): Form<Params>,
) -> Response {
    let filter = filter_from(&form);
    job_action(&st, &headers, &form, filter, "/jobs", JobAction::Retry).await
}

pub(crate) async fn discard_many(
    State(st): St,
    headers: HeaderMap,
    Form(form): Form<Params>,
) -> Response {
    let filter = filter_from(&form);
    job_action(&st, &headers, &form, filter, "/jobs", JobAction::Discard).await
}

// ---------------------------------------------------------------- runs

fn runs_table(runs: &[queue::NightlyRun]) -> String {
    let mut t = String::from(
        "<table><tr><th>run</th><th>scheduled for</th><th>trigger</th><th class=\"num\">due</th><th class=\"num\">enqueued</th>\
         <th class=\"num\">already queued</th><th class=\"num\">succeeded</th><th class=\"num\">failed</th><th>duration</th><th>status</th></tr>",
    );
    if runs.is_empty() {
        t.push_str("<tr><td colspan=\"10\" class=\"muted\">No runs yet.</td></tr>");
    }
    for r in runs {
        let duration = r
            .finished_at
            .map(|f| {
                format!(
                    "{:.1} s",
                    (f - r.started_at).num_milliseconds() as f64 / 1000.0
                )
            })
            .unwrap_or_else(|| "—".into());
        let status = if r.finished_at.is_some() {
            "finished"
        } else {
            "in progress"
        };
        let failed = if r.failed > 0 {
            format!(
                "<a href=\"/jobs?run_id={}&state=killed\">{}</a>",
                r.id, r.failed
            )
        } else {
            "0".into()
        };
        let _ = write!(
            t,
            "<tr><td><a href=\"/runs/{0}\">#{0}</a></td><td>{1}</td><td>{2}</td><td class=\"num\">{3}</td><td class=\"num\">{4}</td>\
             <td class=\"num\">{5}</td><td class=\"num\">{6}</td><td class=\"num\">{failed}</td><td>{duration}</td><td>{status}</td></tr>",
            r.id,
            ts(Some(r.scheduled_for)),
            esc(&r.trigger),
            r.users_due,
            r.enqueued,
            r.already_queued,
            r.succeeded
        );
    }
    t.push_str("</table>");
    t
}

pub(crate) async fn runs(State(st): St, ctx: Ctx, Query(p): Query<Params>) -> Response {
    let runs = match queue::recent_nightly_runs(&st.pool, 100).await {
        Ok(r) => r,
        Err(e) => return db_error(e),
    };
    let mut body = String::new();
    if ctx.admin() {
        let _ = write!(
            body,
            "<p>{}</p>",
            button(
                "/runs/now",
                "Run the nightly sync now",
                &ctx.csrf,
                &[("back", "/runs".into())],
                false
            )
        );
    }
    body.push_str(&runs_table(&runs));
    ctx.render("Nightly runs", p.get("flash"), &body)
}

pub(crate) async fn run(
    State(st): St,
    ctx: Ctx,
    Path(id): Path<i64>,
    Query(p): Query<Params>,
) -> Response {
    let run = match queue::nightly_run(&st.pool, id).await {
        Ok(Some(r)) => r,
        Ok(None) => {
            return error_page(
                StatusCode::NOT_FOUND,
                "Run not found",
                &format!("There is no nightly run {id}."),
            );
        }
        Err(e) => return db_error(e),
    };
    let f = JobFilter {
        run_id: Some(id),
        ..Default::default()
    };
    let failed_f = JobFilter {
        state: Some(JobState::Killed),
        ..f.clone()
    };
    let mut failed = match list_jobs(&st, &failed_f, None, st.page_size).await {
        Ok(r) => r,
        Err(e) => return db_error(e),
    };
    let exhausted_f = JobFilter {
        state: Some(JobState::Failed),
        ..f.clone()
    };
    match list_jobs(&st, &exhausted_f, None, st.page_size).await {
        Ok(r) => failed.extend(r),
        Err(e) => return db_error(e),
    }
    let mut body = runs_table(std::slice::from_ref(&run));
    let _ = write!(
        body,
        "<p>enqueued by <code>{}</code>, enqueue took {}. <a href=\"/jobs?run_id={id}\">All jobs of this run</a></p>\
         <h2>Failed jobs</h2>",
        esc(&run.enqueued_by),
        run.enqueue_finished_at
            .map(|f| format!("{} ms", (f - run.started_at).num_milliseconds()))
            .unwrap_or_else(|| "—".into())
    );
    body.push_str(&jobs_table(&failed));
    if ctx.admin() && !failed.is_empty() {
        let here = format!("/runs/{id}");
        body.push_str("<p>");
        body.push_str(&button(
            "/jobs/retry",
            "Retry this run's failed jobs",
            &ctx.csrf,
            &[("run_id", id.to_string()), ("back", here)],
            false,
        ));
        body.push_str("</p>");
    }
    ctx.render(&format!("Nightly run #{id}"), p.get("flash"), &body)
}

pub(crate) async fn run_now(
    State(st): St,
    headers: HeaderMap,
    Form(form): Form<Params>,
) -> Response {
    let s = match act(&st, &headers, &form) {
        Ok(s) => s,
        Err(r) => return r,
    };
    match queue::run_nightly_pass(&st.pool, Utc::now(), RunTrigger::Manual, &actor(&s)).await {
        Ok(Some(run)) => {
            tracing::info!(
                run_id = run.id,
                enqueued = run.enqueued,
                "dashboard: nightly run started by hand"
            );
            back(
                &form,
                "/runs",
                &format!(
                    "Nightly run #{} started: {} users due, {} jobs enqueued, {} already queued",
                    run.id, run.users_due, run.enqueued, run.already_queued
                ),
            )
        }
        Ok(None) => back(&form, "/runs", "A run for this instant already exists"),
        Err(e) => db_error(e),
    }
}

// ---------------------------------------------------------------- users

const USER_FILTERS: [(&str, &str); 6] = [
    ("flagged", "calendar_needs_sync"),
    ("never_synced", "last_calendar_sync_at IS NULL"),
    ("due", users::DUE_CONDITION),
    ("needs_reauth", "calendar_sync_status = 'needs_reauth'"),
    (
        "calendar_missing",
        "calendar_sync_status = 'calendar_missing'",
    ),
    ("failing", "calendar_sync_status = 'failing'"),
];

pub(crate) async fn users(State(st): St, ctx: Ctx, Query(p): Query<Params>) -> Response {
    let search = p.get("q").map(|s| s.trim().to_string()).unwrap_or_default();
    let status = p.get("status").cloned().unwrap_or_default();
    let cond = match USER_FILTERS.iter().find(|(k, _)| *k == status) {
        Some((_, c)) => Some(*c),
        None if status.is_empty() => None,
        None => {
            return error_page(
                StatusCode::BAD_REQUEST,
                "Bad filter",
                &format!("unknown status {status:?}"),
            );
        }
    };
    let after: i64 = p.get("after").and_then(|a| a.parse().ok()).unwrap_or(0);
    let mut qb = QueryBuilder::<Postgres>::new(
        "SELECT id, email, name, google_course_calendar_id IS NOT NULL AS has_cal, calendar_needs_sync, last_calendar_sync_at, \
         calendar_sync_status, last_sync_error, last_sync_error_at FROM users WHERE id > ",
    );
    qb.push_bind(after);
    if let Some(c) = cond {
        qb.push(" AND (").push(c).push(")");
    }
    if !search.is_empty() {
        match search.parse::<i64>() {
            Ok(id) => {
                qb.push(" AND id = ").push_bind(id);
            }
            Err(_) => {
                let pattern = format!(
                    "%{}%",
                    search
                        .replace('\\', "\\\\")
                        .replace('%', "\\%")
                        .replace('_', "\\_")
                );
                qb.push(" AND email ILIKE ").push_bind(pattern);
            }
        }
    }
    qb.push(" ORDER BY id LIMIT ").push_bind(st.page_size + 1);
    let rows = match qb.build().fetch_all(&st.pool).await {
        Ok(r) => r,
        Err(e) => return db_error(e),
    };
    let more = rows.len() as i64 > st.page_size;
    let mut body = format!(
        "<form class=\"filters\" method=\"get\" action=\"/users\"><label>id or e-mail <input name=\"q\" value=\"{}\"></label>\
         <label>status <select name=\"status\"><option value=\"\">any</option>",
        esc(&search)
    );
    for (k, _) in USER_FILTERS {
        let sel = if k == status { " selected" } else { "" };
        let _ = write!(body, "<option{sel}>{k}</option>");
    }
    body.push_str("</select></label><button>Search</button></form><table><tr><th>id</th><th>e-mail</th><th>name</th><th>calendar</th>\
        <th>flagged</th><th>last sync</th><th>status</th><th>last error</th></tr>");
    if rows.is_empty() {
        body.push_str("<tr><td colspan=\"8\" class=\"muted\">No users match.</td></tr>");
    }
    let mut last_id = 0;
    for r in rows.iter().take(st.page_size as usize) {
        let id: i64 = r.try_get("id").unwrap_or(0);
        last_id = id;
        let s = |c: &str| {
            r.try_get::<Option<String>, _>(c)
                .ok()
                .flatten()
                .unwrap_or_default()
        };
        let _ = write!(
            body,
            "<tr><td><a href=\"/users/{id}\">{id}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&s("email")),
            esc(&s("name")),
            if r.try_get::<bool, _>("has_cal").unwrap_or(false) {
                "yes"
            } else {
                "none"
            },
            if r.try_get::<bool, _>("calendar_needs_sync").unwrap_or(false) {
                "yes"
            } else {
                "no"
            },
            ts(r.try_get("last_calendar_sync_at").ok().flatten()),
            badge(&s("calendar_sync_status")),
            esc(&short(&s("last_sync_error"), 100))
        );
    }
    body.push_str("</table>");
    if more {
        let _ = write!(
            body,
            "<p><a rel=\"next\" href=\"/users?q={}&status={}&after={last_id}\">Next →</a></p>",
            q(&search),
            q(&status)
        );
    }
    ctx.render("Users", p.get("flash"), &body)
}

pub(crate) async fn user(
    State(st): St,
    ctx: Ctx,
    Path(id): Path<i64>,
    Query(p): Query<Params>,
) -> Response {
    let u = match users::get(&st.pool, id).await {
        Ok(u) => u,
        Err(DomainError::UnknownUser(_)) => {
            return error_page(
                StatusCode::NOT_FOUND,
                "User not found",
                &format!("There is no user {id}."),
            );
        }
        Err(e) => return db_error(e),
    };
    let f = JobFilter {
        user_id: Some(id),
        ..Default::default()
    };
    let jobs = match list_jobs(&st, &f, None, 20).await {
        Ok(j) => j,
        Err(e) => return db_error(e),
    };
    let mut body = String::from("<table>");
    for (k, v) in [
        ("id", id.to_string()),
        ("e-mail", esc(&u.email)),
        ("name", esc(&u.name)),
        (
            "course calendar",
            esc(u.google_course_calendar_id.as_deref().unwrap_or("none")),
        ),
        (
            "needs sync",
            if u.calendar_needs_sync {
                "yes".into()
            } else {
                "no".into()
            },
        ),
        ("last sync", ts(u.last_calendar_sync_at)),
        ("status", badge(u.calendar_sync_status.as_str())),
        (
            "last error",
            esc(u.last_sync_error.as_deref().unwrap_or("—")),
        ),
        ("last error at", ts(u.last_sync_error_at)),
        ("change generation", u.calendar_sync_generation.to_string()),
    ] {
        let _ = write!(body, "<tr><th>{k}</th><td>{v}</td></tr>");
    }
    body.push_str("</table>");
    if ctx.admin() {
        let _ = write!(
            body,
            "<p>{}</p>",
            button(
                &format!("/users/{id}/sync"),
                "Sync now",
                &ctx.csrf,
                &[("back", format!("/users/{id}"))],
                false
            )
        );
    }
    let _ = write!(
        body,
        "<h2>Recent jobs</h2>{}<p><a href=\"/jobs?user_id={id}\">All jobs of this user</a></p>",
        jobs_table(&jobs)
    );
    ctx.render(&format!("User {id}"), p.get("flash"), &body)
}

pub(crate) async fn sync_user(
    State(st): St,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Form(form): Form<Params>,
) -> Response {
    let s = match act(&st, &headers, &form) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let default = format!("/users/{id}");
    match queue::enqueue_sync(&st.pool, id, "dashboard", &actor(&s)).await {
        Ok(job) => {
            tracing::info!(user_id = id, job_id = %job, "dashboard: sync enqueued");
            back(
                &form,
                &default,
                &format!("Sync of user {id} queued as job {job}"),
            )
        }
        Err(DomainError::UnknownUser(_)) => back(&form, "/users", &format!("Unknown user {id}")),
        Err(DomainError::NoCalendar(_)) => back(
            &form,
            &default,
            &format!("User {id} has no course calendar; nothing to sync"),
        ),
        Err(e) => db_error(e),
    }
}

// ---------------------------------------------------------------- audit

pub(crate) async fn audit(State(st): St, ctx: Ctx, Query(p): Query<Params>) -> Response {
    let rows: Vec<(i64, DateTime<Utc>, String, String, serde_json::Value)> = match sqlx::query_as(
        "SELECT id, at, actor, action, detail FROM calsync.audit_log ORDER BY id DESC LIMIT 200",
    )
    .fetch_all(&st.pool)
    .await
    {
        Ok(r) => r,
        Err(e) => return db_error(e),
    };
    let mut body =
        String::from("<table><tr><th>when</th><th>who</th><th>action</th><th>detail</th></tr>");
    if rows.is_empty() {
        body.push_str("<tr><td colspan=\"4\" class=\"muted\">Nothing yet.</td></tr>");
    }
    for (_, at, who, action, detail) in rows {
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
            ts(Some(at)),
            esc(&who),
            esc(&action),
            esc(&short(&detail.to_string(), 300))
        );
    }
    body.push_str("</table>");
    ctx.render("Audit log", p.get("flash"), &body)
}
