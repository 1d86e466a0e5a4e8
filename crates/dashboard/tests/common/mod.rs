//! Helpers shared by the dashboard tests: requests through the router in process.

#![allow(dead_code)]

use std::net::SocketAddr;

use axum::{
    Router,
    body::Body,
    extract::ConnectInfo,
    http::{HeaderMap, Request, StatusCode, header},
};
use calsync_dashboard::{DashboardConfig, router};
use http_body_util::BodyExt;
use sqlx::PgPool;
use tower::ServiceExt;

pub const ADMIN: &str = "admin-token-0123456789";
pub const READONLY: &str = "readonly-token-0123456789";

pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub location: String,
    pub cookie: Option<String>,
    pub body: String,
}

pub async fn send(app: &Router, req: Request<Body>) -> Resp {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let location = resp
        .headers()
        .get(header::LOCATION)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let cookie = resp
        .headers()
        .get(header::SET_COOKIE)
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_string());
    let body =
        String::from_utf8_lossy(&resp.into_body().collect().await.unwrap().to_bytes()).into_owned();
    Resp {
        status,
        headers,
        location,
        cookie,
        body,
    }
}

pub async fn get(app: &Router, uri: &str, cookie: Option<&str>) -> Resp {
    let mut req = Request::get(uri);
    if let Some(c) = cookie {
        req = req.header(header::COOKIE, c);
    }
    send(app, req.body(Body::empty()).unwrap()).await
}

pub async fn post(app: &Router, uri: &str, cookie: Option<&str>, form: &[(&str, &str)]) -> Resp {
    let body = form
        .iter()
        .map(|(k, v)| format!("{k}={}", urlencode(v)))
        .collect::<Vec<_>>()
        .join("&");
    let mut req =
        Request::post(uri).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(c) = cookie {
        req = req.header(header::COOKIE, c);
    }
    send(app, req.body(Body::from(body)).unwrap()).await
}

pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

pub async fn app(pool: &PgPool, page_size: i64) -> Router {
    calsync_domain::migrate(pool).await.unwrap();
    router(
        pool.clone(),
        DashboardConfig {
            page_size,
            ..config()
        },
    )
    .unwrap()
}

/// The tests' configuration: both roles, a random session secret.
pub fn config() -> DashboardConfig {
    DashboardConfig {
        admin_token: Some(ADMIN.into()),
        readonly_token: Some(READONLY.into()),
        session_secret: None,
        page_size: 50,
        secure_cookies: false,
        ..Default::default()
    }
}

/// Send `req` as if from `client` (the peer address `serve_router` provides).
pub async fn send_from(app: &Router, mut req: Request<Body>, client: &str) -> Resp {
    let addr = SocketAddr::new(client.parse().unwrap(), 40000);
    req.extensions_mut().insert(ConnectInfo(addr));
    send(app, req).await
}

/// A form POST body.
pub fn form_body(form: &[(&str, &str)]) -> Body {
    Body::from(
        form.iter()
            .map(|(k, v)| format!("{k}={}", urlencode(v)))
            .collect::<Vec<_>>()
            .join("&"),
    )
}

pub async fn login(app: &Router, token: &str) -> String {
    let r = post(app, "/login", None, &[("token", token)]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.location, "/");
    r.cookie.expect("session cookie")
}

pub fn csrf_of(body: &str) -> String {
    let i =
        body.find("name=\"csrf\" value=\"").expect("csrf field") + "name=\"csrf\" value=\"".len();
    body[i..].split('"').next().unwrap().to_string()
}

pub async fn user(pool: &PgPool, email: &str, cal: Option<&str>) -> i64 {
    sqlx::query_scalar("INSERT INTO users (email, name, google_course_calendar_id) VALUES ($1, 'Name', $2) RETURNING id")
        .bind(email)
        .bind(cal)
        .fetch_one(pool)
        .await
        .unwrap()
}

pub async fn failed_job(pool: &PgPool, user_id: i64, err: &str) -> String {
    let id = calsync_domain::queue::enqueue_sync(pool, user_id, "test", "test")
        .await
        .unwrap();
    sqlx::query("UPDATE apalis.jobs SET status = 'Failed', attempts = max_attempts, last_result = jsonb_build_object('Err', $2::text) WHERE id = $1")
        .bind(&id)
        .bind(err)
        .execute(pool)
        .await
        .unwrap();
    id
}

pub async fn status_of(pool: &PgPool, id: &str) -> String {
    sqlx::query_scalar("SELECT status FROM apalis.jobs WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// One attempt of `job` as apalis runs it: the worker locks it (Running, `lock_at`
/// `took_secs` ago), then acknowledges it with apalis' own statement
/// (`handle_result.sql`). calsync's trigger records the attempt.
pub async fn run_attempt(
    pool: &PgPool,
    job: &str,
    attempt: i32,
    status: &str,
    result: serde_json::Value,
    took_secs: f64,
) {
    const WORKER: &str = "page-test-worker";
    sqlx::query(
        "INSERT INTO apalis.workers (id, worker_type, storage_name) VALUES ($1, 'sync-calendar', 'test') \
         ON CONFLICT DO NOTHING",
    )
    .bind(WORKER)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "UPDATE apalis.jobs SET status = 'Running', lock_by = $2, \
         lock_at = now() - $3 * interval '1 second' WHERE id = $1",
    )
    .bind(job)
    .bind(WORKER)
    .bind(took_secs)
    .execute(pool)
    .await
    .unwrap();
    let payload = serde_json::json!([{
        "task_id": job, "attempt": attempt, "status": status, "result": result
    }]);
    let n = sqlx::query(
        "WITH j AS ( \
             SELECT (value ->> 'task_id')::text AS task_id, (value ->> 'attempt')::integer AS attempt, \
                    value -> 'result' AS result, value ->> 'status' AS status \
             FROM jsonb_array_elements($1::jsonb) AS value \
         ), locked AS ( \
             SELECT jobs.id FROM apalis.jobs AS jobs INNER JOIN j ON j.task_id = jobs.id \
             WHERE jobs.lock_by = $2 ORDER BY jobs.id FOR UPDATE \
         ) \
         UPDATE apalis.jobs AS jobs SET status = j.status, attempts = j.attempt, last_result = j.result, done_at = NOW() \
         FROM j INNER JOIN locked ON locked.id = j.task_id WHERE jobs.id = locked.id",
    )
    .bind(payload)
    .bind(WORKER)
    .execute(pool)
    .await
    .unwrap()
    .rows_affected();
    assert_eq!(n, 1, "acknowledged");
}
