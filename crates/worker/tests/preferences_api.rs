//! The preferences API in process: bearer auth like the enqueue API, the round trip of
//! a preference set, field-level 400s, 404 for unknown users, the preview, and that
//! saving flags the user (and only them) when something changed.

use std::{
    net::SocketAddr,
    sync::{Arc, atomic::AtomicBool},
};

use axum::{
    body::Body,
    extract::connect_info::MockConnectInfo,
    http::{Request, StatusCode},
};
use calsync_seed::{CourseSpec, MeetingSpec, Seed, StudentSpec, hm, ymd};
use calsync_worker::http::{ApiState, router};
use chrono::Weekday;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use sqlx::PgPool;
use tower::ServiceExt;

const TOKEN: &str = "test-token-123456";

struct Setup {
    app: axum::Router,
    pool: PgPool,
    ana: i64,
    course: i64,
}

async fn setup(pool: PgPool) -> Setup {
    calsync_domain::migrate(&pool).await.unwrap();
    let mut s = Seed::new();
    let course = s.add_course(
        CourseSpec::new("Calculus I", "MATH", "1750")
            .section("01")
            .dates(ymd(2026, 8, 31), ymd(2026, 12, 11)),
    );
    s.add_meeting(MeetingSpec::new(course, Weekday::Mon, hm(9, 0), hm(9, 50)));
    let ana = s.add_student(StudentSpec::new("ana@uni.edu").calendar("cal-ana"));
    let ben = s.add_student(StudentSpec::new("ben@uni.edu").calendar("cal-ben"));
    s.enroll(ana, course);
    s.enroll(ben, course);
    let ids = s.insert_with_pool(&pool).await.unwrap();
    calsync_domain::tracking::apply_pending_flags(&pool)
        .await
        .unwrap();
    sqlx::query("UPDATE users SET calendar_needs_sync = false")
        .execute(&pool)
        .await
        .unwrap();
    let state = ApiState {
        pool: pool.clone(),
        api_token: Some(calsync_worker::config::ApiToken::new(TOKEN).unwrap()),
        ready: Arc::new(AtomicBool::new(true)),
    };
    Setup {
        app: router(state).layer(MockConnectInfo(
            "10.0.0.7:4000".parse::<SocketAddr>().unwrap(),
        )),
        pool,
        ana: ids[ana],
        course: ids[course],
    }
}

impl Setup {
    async fn call(
        &self,
        method: &str,
        uri: &str,
        auth: Option<&str>,
        body: &str,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(t) = auth {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let resp = self
            .app
            .clone()
            .oneshot(req.body(Body::from(body.to_string())).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&bytes)))
        };
        (status, value)
    }

    async fn flagged(&self) -> Vec<i64> {
        calsync_domain::tracking::apply_pending_flags(&self.pool)
            .await
            .unwrap();
        sqlx::query_scalar("SELECT id FROM users WHERE calendar_needs_sync ORDER BY id")
            .fetch_all(&self.pool)
            .await
            .unwrap()
    }
}

#[sqlx::test(migrations = false)]
async fn put_get_preview_delete_round_trip(pool: PgPool) {
    let s = setup(pool).await;
    let uri = format!("/v1/users/{}/preferences", s.ana);
    let (status, body) = s.call("GET", &uri, Some(TOKEN), "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["preferences"], json!([]));
    assert_eq!(body["render_warnings"], json!([]));

    let set = json!({"preferences": [
        {"scope": "global", "title_template": "{{ course_code }} · {{ course_title }}"},
        {"scope": "class", "course_id": s.course, "color_id": 9,
         "reminders": {"overrides": [{"method": "popup", "minutes": 10}]}}
    ]});
    let (status, body) = s.call("PUT", &uri, Some(TOKEN), &set.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user_id"], s.ana);
    assert_eq!(body["preferences"].as_array().unwrap().len(), 2);
    assert_eq!(body["preferences"][1]["color_id"], 9);
    assert_eq!(body["preferences"][1]["visibility"], Value::Null);
    assert_eq!(s.flagged().await, vec![s.ana], "only ana");

    let (status, again) = s.call("GET", &uri, Some(TOKEN), "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["preferences"], body["preferences"]);

    // Preview: the events a sync would write, rendered.
    let (status, preview) = s
        .call("GET", &format!("{uri}/preview"), Some(TOKEN), "")
        .await;
    assert_eq!(status, StatusCode::OK, "{preview}");
    assert_eq!(preview["events"][0]["summary"], "MATH 1750-01 · Calculus I");
    assert_eq!(preview["events"][0]["color_id"], 9);
    assert_eq!(preview["events"][0]["reminders"], "popup 10 min");
    // An unsaved set previews without being saved.
    let (status, preview) = s
        .call(
            "POST",
            &format!("{uri}/preview"),
            Some(TOKEN),
            r#"[{"title_template": "{{ subject }} {{ day }} {{ start_time }}"}]"#,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{preview}");
    assert_eq!(preview["events"][0]["summary"], "MATH Monday 09:00");
    let (_, stored) = s.call("GET", &uri, Some(TOKEN), "").await;
    assert_eq!(stored["preferences"], body["preferences"]);

    let (status, _) = s.call("DELETE", &uri, Some(TOKEN), "").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, body) = s.call("GET", &uri, Some(TOKEN), "").await;
    assert_eq!(body["preferences"], json!([]));
}

#[sqlx::test(migrations = false)]
async fn bad_requests_get_clear_errors_and_change_nothing(pool: PgPool) {
    let s = setup(pool).await;
    let uri = format!("/v1/users/{}/preferences", s.ana);
    let good = json!([{"color_id": 3}]).to_string();
    let (status, _) = s.call("PUT", &uri, Some(TOKEN), &good).await;
    assert_eq!(status, StatusCode::OK);
    calsync_domain::tracking::apply_pending_flags(&s.pool)
        .await
        .unwrap();
    sqlx::query("UPDATE users SET calendar_needs_sync = false")
        .execute(&s.pool)
        .await
        .unwrap();

    // Auth: same bearer token as the enqueue API.
    for (method, auth) in [("GET", None), ("PUT", Some("wrong")), ("DELETE", None)] {
        let (status, body) = s.call(method, &uri, auth, &good).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {body}");
    }

    // Field-level 400s.
    let bad = json!({"preferences": [
        {"scope": "exam", "color_id": 12, "title_template": "{{ exam_dat }}"},
        {"reminders": {"overrides": [{"method": "sms", "minutes": 10}]}, "visibility": "secret"}
    ]});
    let (status, body) = s.call("PUT", &uri, Some(TOKEN), &bad.to_string()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["code"], "invalid_preferences");
    let fields: Vec<&str> = body["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        vec![
            "preferences[0].title_template",
            "preferences[0].color_id",
            "preferences[1].reminders",
            "preferences[1].visibility"
        ]
    );
    assert!(
        body["fields"][0]["message"]
            .as_str()
            .unwrap()
            .contains("unknown variable `exam_dat`"),
        "{body}"
    );
    for (body, code) in [
        ("{not json", "invalid_body"),
        (r#"{"preferences": {}}"#, "invalid_preferences"),
        (
            r#"[{"course_id": 999999, "color_id": 1}]"#,
            "invalid_preferences",
        ),
        (
            r#"[{"title_template": "{% include 'secrets' %}"}]"#,
            "invalid_preferences",
        ),
    ] {
        let (status, resp) = s.call("PUT", &uri, Some(TOKEN), body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {resp}");
        assert_eq!(resp["code"], code, "{body}: {resp}");
    }
    // Nothing was lost or flagged.
    let (_, body) = s.call("GET", &uri, Some(TOKEN), "").await;
    assert_eq!(body["preferences"][0]["color_id"], 3);
    assert_eq!(s.flagged().await, Vec::<i64>::new());

    // Unknown and malformed users.
    for method in ["GET", "PUT", "DELETE"] {
        let (status, body) = s
            .call(method, "/v1/users/999999/preferences", Some(TOKEN), &good)
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {body}");
        assert_eq!(body["code"], "unknown_user");
        let (status, body) = s
            .call(method, "/v1/users/abc/preferences", Some(TOKEN), &good)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{method} {body}");
    }
    let (status, _) = s
        .call(
            "GET",
            "/v1/users/999999/preferences/preview",
            Some(TOKEN),
            "",
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
