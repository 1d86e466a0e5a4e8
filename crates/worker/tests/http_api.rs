//! The worker's HTTP API in process: health, readiness, metrics, and the enqueue API's
//! answers to good and bad requests.

use std::{
    net::SocketAddr,
    sync::{Arc, atomic::AtomicBool},
};

use axum::{
    body::Body,
    extract::connect_info::MockConnectInfo,
    http::{Request, StatusCode},
};
use calsync_worker::{
    config::ApiToken,
    http::{ApiState, router},
};
use http_body_util::BodyExt;
use sqlx::PgPool;
use tower::ServiceExt;

async fn app(pool: &PgPool, token: Option<&str>, peer: &str, ready: bool) -> axum::Router {
    calsync_domain::migrate(pool).await.unwrap();
    let state = ApiState {
        pool: pool.clone(),
        api_token: token.map(|t| ApiToken::new(t).expect("a 12+ character token")),
        ready: Arc::new(AtomicBool::new(ready)),
    };
    router(state).layer(MockConnectInfo(peer.parse::<SocketAddr>().unwrap()))
}

async fn call(
    app: &axum::Router,
    method: &str,
    uri: &str,
    auth: Option<&str>,
    body: &str,
) -> (StatusCode, String) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = auth {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::from(body.to_string())).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

async fn user(pool: &PgPool, calendar: Option<&str>) -> i64 {
    sqlx::query_scalar("INSERT INTO users (email, name, google_course_calendar_id) VALUES (gen_random_uuid()::text, 'U', $1) RETURNING id")
        .bind(calendar)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrations = false)]
async fn enqueue_over_http_validates_and_is_idempotent(pool: PgPool) {
    let app = app(&pool, None, "127.0.0.1:5000", true).await;
    let alice = user(&pool, Some("cal-a")).await;
    let nocal = user(&pool, None).await;

    let (s, body) = call(
        &app,
        "POST",
        &format!("/v1/users/{alice}/sync"),
        None,
        r#"{"reason":"registrar"}"#,
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let job_id = v["job_id"].as_str().unwrap().to_string();
    assert_eq!(v["user_id"], alice);
    let (s, body) = call(&app, "POST", &format!("/v1/users/{alice}/sync"), None, "").await;
    assert_eq!(s, StatusCode::ACCEPTED);
    assert!(
        body.contains(&job_id),
        "a second request returns the active job"
    );

    let (s, body) = call(&app, "GET", &format!("/v1/jobs/{job_id}"), None, "").await;
    assert_eq!(s, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["state"], "pending");
    assert_eq!(v["payload"]["reason"], "registrar");

    for (uri, body, status, code) in [
        (
            "/v1/users/abc/sync",
            "",
            StatusCode::BAD_REQUEST,
            "invalid_user_id",
        ),
        (
            "/v1/users/-4/sync",
            "",
            StatusCode::BAD_REQUEST,
            "invalid_user_id",
        ),
        (
            "/v1/users/999999/sync",
            "",
            StatusCode::NOT_FOUND,
            "unknown_user",
        ),
        (
            &format!("/v1/users/{nocal}/sync"),
            "",
            StatusCode::UNPROCESSABLE_ENTITY,
            "no_calendar",
        ),
        (
            &format!("/v1/users/{alice}/sync"),
            "{not json",
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
    ] {
        let (s, b) = call(&app, "POST", uri, None, body).await;
        assert_eq!(s, status, "{uri}: {b}");
        assert!(b.contains(code), "{uri}: {b}");
    }
    let (s, _) = call(&app, "GET", "/v1/jobs/nope", None, "").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let active: i64 = sqlx::query_scalar("SELECT count(*) FROM apalis.jobs")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(active, 1, "bad requests enqueue nothing");
}

#[sqlx::test(migrations = false)]
async fn enqueue_api_requires_the_token_or_loopback(pool: PgPool) {
    let remote = app(&pool, None, "10.1.2.3:5000", true).await;
    let alice = user(&pool, Some("cal-a")).await;
    let (s, b) = call(
        &remote,
        "POST",
        &format!("/v1/users/{alice}/sync"),
        None,
        "",
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");

    let with_token = app(&pool, Some("s3cret-s3cret"), "10.1.2.3:5000", true).await;
    // No header, an empty bearer token, and near misses never match.
    for wrong in [
        None,
        Some("wrong"),
        Some(""),
        Some("s3cret-s3cre"),
        Some("s3cret-s3cret "),
    ] {
        let (s, _) = call(
            &with_token,
            "POST",
            &format!("/v1/users/{alice}/sync"),
            wrong,
            "",
        )
        .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{wrong:?}");
        let (s, _) = call(&with_token, "GET", "/v1/jobs/x", wrong, "").await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{wrong:?}");
    }
    // A token closes the API to loopback callers without it too.
    let loopback = app(&pool, Some("s3cret-s3cret"), "127.0.0.1:5000", true).await;
    let (s, _) = call(
        &loopback,
        "POST",
        &format!("/v1/users/{alice}/sync"),
        None,
        "",
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = call(
        &with_token,
        "POST",
        &format!("/v1/users/{alice}/sync"),
        Some("s3cret-s3cret"),
        "",
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED);
}

#[sqlx::test(migrations = false)]
async fn empty_and_short_api_tokens_are_refused(_pool: PgPool) {
    for weak in ["", "s3cret", "elevenchars"] {
        let err = ApiToken::new(weak).unwrap_err().to_string();
        assert!(
            err.contains("CALSYNC_API_TOKEN must be at least 12 characters"),
            "{err}"
        );
    }
}

#[sqlx::test(migrations = false)]
async fn nul_bytes_in_text_fields_are_a_bad_request_not_a_server_error(pool: PgPool) {
    let app = app(&pool, None, "127.0.0.1:5000", true).await;
    let alice = user(&pool, Some("cal-a")).await;
    let (s, b) = call(
        &app,
        "POST",
        &format!("/v1/users/{alice}/sync"),
        None,
        r#"{"reason": "regis\u0000trar"}"#,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(b.contains("invalid_body") && b.contains("NUL"), "{b}");
    let (s, b) = call(&app, "GET", "/v1/jobs/01abc%00def", None, "").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(b.contains("invalid_job_id"), "{b}");
    let long = format!(r#"{{"reason": "{}"}}"#, "é".repeat(201));
    let (s, b) = call(
        &app,
        "POST",
        &format!("/v1/users/{alice}/sync"),
        None,
        &long,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM apalis.jobs")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(jobs, 0, "refused requests enqueue nothing");
    // The same reason without the NUL is fine.
    let (s, b) = call(
        &app,
        "POST",
        &format!("/v1/users/{alice}/sync"),
        None,
        r#"{"reason": "registrar"}"#,
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
}

#[sqlx::test(migrations = false)]
async fn health_readiness_and_metrics(pool: PgPool) {
    let app_ready = app(&pool, None, "127.0.0.1:1", true).await;
    assert_eq!(
        call(&app_ready, "GET", "/healthz", None, "").await.0,
        StatusCode::OK
    );
    assert_eq!(
        call(&app_ready, "GET", "/readyz", None, "").await.0,
        StatusCode::OK
    );
    let not_ready = app(&pool, None, "127.0.0.1:1", false).await;
    assert_eq!(
        call(&not_ready, "GET", "/readyz", None, "").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );

    let alice = user(&pool, Some("cal-a")).await;
    calsync_domain::queue::enqueue_sync(&pool, alice, "t", "test")
        .await
        .unwrap();
    let (s, body) = call(&app_ready, "GET", "/metrics", None, "").await;
    assert_eq!(s, StatusCode::OK);
    assert!(body.contains("calsync_jobs{state=\"pending\"} 1"), "{body}");
    assert!(body.contains("calsync_users{state=\"due\"} 1"), "{body}");
}

#[sqlx::test(migrations = false)]
async fn enqueue_over_http_takes_a_priority_class_and_raises_a_waiting_job(pool: PgPool) {
    let app = app(&pool, None, "127.0.0.1:5000", true).await;
    let alice = user(&pool, Some("cal-a")).await;
    let uri = format!("/v1/users/{alice}/sync");

    // Default: the api class.
    let (s, body) = call(&app, "POST", &uri, None, "").await;
    assert_eq!(s, StatusCode::ACCEPTED, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["outcome"].as_str(), v["class"].as_str(), &v["demoted"]),
        (Some("enqueued"), Some("api"), &serde_json::json!(false))
    );
    let job_id = v["job_id"].as_str().unwrap().to_string();

    // Interactive raises the same job; asking lower never lowers it.
    let (s, body) = call(
        &app,
        "POST",
        &uri,
        None,
        r#"{"class": "interactive", "due_now": true}"#,
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["job_id"], job_id.as_str());
    assert_eq!(v["outcome"], "raised");
    assert_eq!(v["class"], "interactive");
    assert_eq!(v["made_due"], false, "a pending job is not on a backoff");
    let (_, body) = call(&app, "POST", &uri, None, r#"{"class": "maintenance"}"#).await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["outcome"].as_str(), v["class"].as_str()),
        (Some("unchanged"), Some("interactive"))
    );

    // The job's status names its class.
    let (s, body) = call(&app, "GET", &format!("/v1/jobs/{job_id}"), None, "").await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["class"].as_str(), v["priority"].as_i64()),
        (Some("interactive"), Some(200))
    );

    // Unknown or malformed classes: 400 naming the known ones; nothing changes.
    for bad in [
        r#"{"class": "urgent"}"#,
        r#"{"class": "Interactive"}"#,
        r#"{"class": 1}"#,
    ] {
        let (s, body) = call(&app, "POST", &uri, None, bad).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert!(
            body.contains("invalid_class") || body.contains("invalid_body"),
            "{bad}: {body}"
        );
    }
    let (_, body) = call(&app, "POST", &uri, None, r#"{"class": "urgent"}"#).await;
    assert!(
        body.contains("interactive, api, nightly, maintenance"),
        "{body}"
    );
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM apalis.jobs")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(jobs, 1);
}
