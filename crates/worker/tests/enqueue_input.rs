//! The HTTP enqueue API on hostile input and its audit trail: the domain validates the
//! reason, so a NUL or control character is a 400 with a message (it used to reach
//! Postgres and come back as a 500), and an accepted enqueue is audited.

use std::{
    net::SocketAddr,
    sync::{Arc, atomic::AtomicBool},
};

use axum::{
    body::Body,
    extract::connect_info::MockConnectInfo,
    http::{Request, StatusCode},
};
use calsync_worker::http::{ApiState, router};
use http_body_util::BodyExt;
use sqlx::PgPool;
use tower::ServiceExt;

async fn post(app: &axum::Router, uri: &str, body: &str) -> (StatusCode, String) {
    let resp = app
        .clone()
        .oneshot(
            Request::builder()
                .method("POST")
                .uri(uri)
                .body(Body::from(body.to_string()))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

#[sqlx::test(migrations = false)]
async fn control_characters_in_the_reason_are_a_400_and_enqueues_are_audited(pool: PgPool) {
    calsync_domain::migrate(&pool).await.unwrap();
    let app = router(ApiState {
        pool: pool.clone(),
        api_token: None,
        ready: Arc::new(AtomicBool::new(true)),
    })
    .layer(MockConnectInfo(
        "127.0.0.1:5000".parse::<SocketAddr>().unwrap(),
    ));
    let user: i64 = sqlx::query_scalar(
        "INSERT INTO users (email, name, google_course_calendar_id) VALUES ('a@uni.edu', 'A', 'cal-a') RETURNING id",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let uri = format!("/v1/users/{user}/sync");
    for body in [
        r#"{"reason": "nul \u0000 byte"}"#,
        r#"{"reason": "line\nbreak"}"#,
        r#"{"reason": "escape \u001b[31m"}"#,
    ] {
        let (status, answer) = post(&app, &uri, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert!(answer.contains("control characters"), "{answer}");
    }
    let (status, answer) = post(
        &app,
        &uri,
        &serde_json::json!({ "reason": "x".repeat(201) }).to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(answer.contains("at most 200"), "{answer}");
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM apalis.jobs")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(jobs, 0, "nothing was enqueued");

    // 200 characters are fine, however many bytes they take.
    let (status, answer) = post(
        &app,
        &uri,
        &serde_json::json!({ "reason": "é".repeat(200) }).to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    sqlx::query("UPDATE apalis.jobs SET status = 'Done'")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM calsync.audit_log")
        .execute(&pool)
        .await
        .unwrap();
    let (status, answer) = post(&app, &uri, r#"{"reason": "registrar"}"#).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let job_id = serde_json::from_str::<serde_json::Value>(&answer).unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (actor, action, detail): (String, String, serde_json::Value) =
        sqlx::query_as("SELECT actor, action, detail FROM calsync.audit_log")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((actor.as_str(), action.as_str()), ("http-api", "sync_user"));
    assert_eq!(detail["job_id"], job_id.as_str());
    assert_eq!(detail["reason"], "registrar");
}
