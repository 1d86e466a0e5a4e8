//! Every dashboard page and action, in process, against real Postgres.

mod common;

use axum::{
    body::Body,
    http::{Request, StatusCode, header},
};
use calsync_dashboard::{DashboardConfig, router};
use common::*;
use sqlx::PgPool;

#[sqlx::test(migrations = false)]
async fn closed_by_default(pool: PgPool) {
    let err = router(pool.clone(), DashboardConfig::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("CALSYNC_DASHBOARD_ADMIN_TOKEN"), "{err}");
    let weak = DashboardConfig {
        admin_token: Some("short".into()),
        ..Default::default()
    };
    assert!(router(pool.clone(), weak).is_err());
    let same = DashboardConfig {
        admin_token: Some(ADMIN.into()),
        readonly_token: Some(ADMIN.into()),
        ..Default::default()
    };
    let err = router(pool.clone(), same).unwrap_err().to_string();
    assert!(err.contains("must differ"), "{err}");
    let dbg = format!(
        "{:?}",
        DashboardConfig {
            admin_token: Some(ADMIN.into()),
            ..Default::default()
        }
    );
    assert!(!dbg.contains(ADMIN), "{dbg}");
}

#[sqlx::test(migrations = false)]
async fn login_logout_and_unauthenticated_access(pool: PgPool) {
    let app = app(&pool, 50).await;
    for page in [
        "/", "/jobs", "/runs", "/users", "/audit", "/jobs/x", "/users/1", "/runs/1",
    ] {
        let r = get(&app, page, None).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{page}");
        assert_eq!(r.location, "/login");
    }
    let r = post(&app, "/runs/now", None, &[]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(get(&app, "/login", None).await.status, StatusCode::OK);
    let r = post(&app, "/login", None, &[("token", "wrong-token-xxxxxxxx")]).await;
    assert_eq!(r.location, "/login?error=1");
    assert!(r.cookie.is_none());
    assert!(
        get(&app, "/login?error=1", None)
            .await
            .body
            .contains("Invalid token")
    );
    // A forged cookie is ignored.
    assert_eq!(
        get(
            &app,
            "/",
            Some("calsync_session=admin|9999999999|x|deadbeef")
        )
        .await
        .status,
        StatusCode::SEE_OTHER
    );

    let cookie = login(&app, ADMIN).await;
    let home = get(&app, "/", Some(&cookie)).await;
    assert_eq!(home.status, StatusCode::OK);
    assert!(home.body.contains("Overview") && home.body.contains("admin"));
    let csrf = csrf_of(&home.body);
    let out = post(&app, "/logout", Some(&cookie), &[("csrf", &csrf)]).await;
    assert_eq!(out.location, "/login");
    assert_eq!(out.cookie.as_deref(), Some("calsync_session="));

    // Scripts may use a bearer token instead of a session.
    let r = send(
        &app,
        Request::get("/jobs")
            .header(header::AUTHORIZATION, format!("Bearer {READONLY}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(get(&app, "/healthz", None).await.status, StatusCode::OK);
    assert_eq!(
        get(&app, "/nope", Some(&cookie)).await.status,
        StatusCode::NOT_FOUND
    );
}

#[sqlx::test(migrations = false)]
async fn retry_one_failed_job_with_csrf_and_audit(pool: PgPool) {
    let app = app(&pool, 50).await;
    let u = user(&pool, "a@uni.edu", Some("cal-a")).await;
    let job = failed_job(
        &pool,
        u,
        "Google events.insert failed: HTTP 500 backendError",
    )
    .await;
    let cookie = login(&app, ADMIN).await;

    let page = get(&app, "/jobs?state=failed", Some(&cookie)).await;
    assert!(page.body.contains(&job) && page.body.contains("backendError"));
    let detail = get(&app, &format!("/jobs/{job}"), Some(&cookie)).await;
    assert_eq!(detail.status, StatusCode::OK);
    assert!(
        detail.body.contains("&quot;user_id&quot;")
            && detail.body.contains("HTTP 500 backendError"),
        "{}",
        detail.body
    );
    assert!(detail.body.contains("Retry now"));
    let csrf = csrf_of(&detail.body);

    // Without or with a wrong CSRF token nothing happens.
    assert_eq!(
        post(&app, &format!("/jobs/{job}/retry"), Some(&cookie), &[])
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        post(
            &app,
            &format!("/jobs/{job}/retry"),
            Some(&cookie),
            &[("csrf", "forged")]
        )
        .await
        .status,
        StatusCode::FORBIDDEN
    );
    let cross = send(
        &app,
        Request::post(format!("/jobs/{job}/retry"))
            .header(header::COOKIE, &cookie)
            .header(header::HOST, "127.0.0.1:8081")
            .header(header::ORIGIN, "http://evil.example")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(format!("csrf={csrf}")))
            .unwrap(),
    )
    .await;
    assert_eq!(cross.status, StatusCode::FORBIDDEN);
    assert_eq!(status_of(&pool, &job).await, "Failed");

    let r = post(
        &app,
        &format!("/jobs/{job}/retry"),
        Some(&cookie),
        &[("csrf", &csrf), ("back", &format!("/jobs/{job}"))],
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(
        r.location
            .starts_with(&format!("/jobs/{job}?flash=Retried%201%20job")),
        "{}",
        r.location
    );
    assert_eq!(status_of(&pool, &job).await, "Pending");
    let flash = get(&app, &r.location, Some(&cookie)).await;
    assert!(flash.body.contains("Retried 1 job"));
    let audit: i64 =
        sqlx::query_scalar("SELECT count(*) FROM calsync.audit_log WHERE action = 'retry_jobs'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(audit, 1);
    assert!(
        get(&app, "/audit", Some(&cookie))
            .await
            .body
            .contains("retry_jobs")
    );
    // Open redirects are refused before the action runs.
    let r = post(
        &app,
        &format!("/jobs/{job}/discard"),
        Some(&cookie),
        &[("csrf", &csrf), ("back", "//evil.example/")],
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.location.is_empty(), "{}", r.location);
    assert_eq!(status_of(&pool, &job).await, "Pending");
    let r = post(
        &app,
        &format!("/jobs/{job}/discard"),
        Some(&cookie),
        &[("csrf", &csrf), ("back", &format!("/jobs/{job}"))],
    )
    .await;
    assert!(
        r.location
            .starts_with(&format!("/jobs/{job}?flash=Discarded%201%20job")),
        "{}",
        r.location
    );
    assert_eq!(status_of(&pool, &job).await, "Killed");
}

#[sqlx::test(migrations = false)]
async fn readonly_sees_everything_and_changes_nothing(pool: PgPool) {
    let app = app(&pool, 50).await;
    let u = user(&pool, "a@uni.edu", Some("cal-a")).await;
    let job = failed_job(&pool, u, "boom").await;
    let cookie = login(&app, READONLY).await;
    for page in [
        "/",
        "/jobs",
        &format!("/jobs/{job}"),
        "/runs",
        "/users",
        &format!("/users/{u}"),
        "/audit",
    ] {
        let r = get(&app, page, Some(&cookie)).await;
        assert_eq!(r.status, StatusCode::OK, "{page}");
        assert!(
            !r.body.contains("Retry now") && !r.body.contains("Sync now"),
            "{page} shows admin buttons"
        );
    }
    let csrf = csrf_of(&get(&app, "/", Some(&cookie)).await.body);
    for action in [
        format!("/jobs/{job}/retry"),
        "/jobs/retry".to_string(),
        "/runs/now".into(),
        format!("/users/{u}/sync"),
    ] {
        assert_eq!(
            post(&app, &action, Some(&cookie), &[("csrf", &csrf)])
                .await
                .status,
            StatusCode::FORBIDDEN,
            "{action}"
        );
    }
    assert_eq!(status_of(&pool, &job).await, "Failed");
}

#[sqlx::test(migrations = false)]
async fn bulk_actions_follow_the_filter(pool: PgPool) {
    let app = app(&pool, 50).await;
    let a = user(&pool, "a@uni.edu", Some("cal-a")).await;
    let b = user(&pool, "b@uni.edu", Some("cal-b")).await;
    let c = user(&pool, "c@uni.edu", Some("cal-c")).await;
    let ja = failed_job(&pool, a, "x").await;
    let jb = failed_job(&pool, b, "y").await;
    let jc = calsync_domain::queue::enqueue_sync(&pool, c, "t", "test")
        .await
        .unwrap();
    let cookie = login(&app, ADMIN).await;
    let csrf = csrf_of(&get(&app, "/jobs", Some(&cookie)).await.body);
    let a_s = a.to_string();
    let r = post(
        &app,
        "/jobs/retry",
        Some(&cookie),
        &[("csrf", &csrf), ("state", "failed"), ("user_id", &a_s)],
    )
    .await;
    assert!(r.location.contains("Retried%201%20job"), "{}", r.location);
    assert_eq!(status_of(&pool, &ja).await, "Pending");
    assert_eq!(status_of(&pool, &jb).await, "Failed");
    let r = post(
        &app,
        "/jobs/discard",
        Some(&cookie),
        &[("csrf", &csrf), ("state", "pending")],
    )
    .await;
    assert!(
        r.location.contains("Discarded%202%20jobs"),
        "{}",
        r.location
    );
    assert_eq!(status_of(&pool, &jc).await, "Killed");
    let bad = post(
        &app,
        "/jobs/retry",
        Some(&cookie),
        &[("csrf", &csrf), ("state", "bogus")],
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

#[sqlx::test(migrations = false)]
async fn job_list_filters_and_keyset_pagination(pool: PgPool) {
    let app = app(&pool, 3).await;
    let mut ids = Vec::new();
    for i in 0..7 {
        let u = user(&pool, &format!("u{i}@uni.edu"), Some("cal")).await;
        ids.push(
            calsync_domain::queue::enqueue_sync(&pool, u, "t", "test")
                .await
                .unwrap(),
        );
    }
    ids.sort();
    ids.reverse(); // newest first
    let cookie = login(&app, ADMIN).await;
    let mut seen = Vec::new();
    let mut url = "/jobs?state=pending".to_string();
    for _ in 0..5 {
        let page = get(&app, &url, Some(&cookie)).await;
        assert_eq!(page.status, StatusCode::OK);
        let mut on_page: Vec<String> = ids
            .iter()
            .filter(|id| page.body.contains(&format!("/jobs/{id}\"")))
            .cloned()
            .collect();
        on_page.sort();
        on_page.reverse();
        assert!(on_page.len() <= 3);
        seen.extend(on_page);
        match page.body.find("rel=\"next\" href=\"") {
            Some(i) => {
                let rest = &page.body[i + "rel=\"next\" href=\"".len()..];
                url = rest.split('"').next().unwrap().replace("&amp;", "&");
                assert!(url.contains("before="), "{url}");
            }
            None => break,
        }
    }
    assert_eq!(seen, ids, "pages continue exactly where the previous ended");
    let one = get(&app, &format!("/jobs?user_id={}", 1), Some(&cookie)).await;
    assert!(one.body.matches("<code>").count() == 1, "{}", one.body);
    assert_eq!(
        get(&app, "/jobs?user_id=abc", Some(&cookie)).await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        get(&app, "/jobs/01NOTAJOB", Some(&cookie)).await.status,
        StatusCode::NOT_FOUND
    );
}

#[sqlx::test(migrations = false)]
async fn run_now_and_run_pages(pool: PgPool) {
    let app = app(&pool, 50).await;
    user(&pool, "a@uni.edu", Some("cal-a")).await;
    user(&pool, "b@uni.edu", Some("cal-b")).await;
    user(&pool, "nocal@uni.edu", None).await;
    let cookie = login(&app, ADMIN).await;
    let csrf = csrf_of(&get(&app, "/runs", Some(&cookie)).await.body);
    let r = post(
        &app,
        "/runs/now",
        Some(&cookie),
        &[("csrf", &csrf), ("back", "/runs")],
    )
    .await;
    assert!(r.location.contains("2%20users%20due"), "{}", r.location);
    let runs = get(&app, "/runs", Some(&cookie)).await;
    assert!(runs.body.contains("#1") && runs.body.contains("manual"));
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM apalis.jobs")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(jobs, 2);
    // One fails for good: the run page lists it.
    sqlx::query("UPDATE apalis.jobs SET status = 'Killed', last_result = '{\"Err\":\"calendar gone\"}' WHERE id = (SELECT min(id) FROM apalis.jobs)")
        .execute(&pool)
        .await
        .unwrap();
    let run = get(&app, "/runs/1", Some(&cookie)).await;
    assert_eq!(run.status, StatusCode::OK);
    assert!(run.body.contains("calendar gone"), "{}", run.body);
    assert_eq!(
        get(&app, "/runs/999", Some(&cookie)).await.status,
        StatusCode::NOT_FOUND
    );
    assert!(
        get(&app, "/", Some(&cookie))
            .await
            .body
            .contains("sync-calendar")
    );
}

#[sqlx::test(migrations = false)]
async fn users_search_detail_and_sync_now(pool: PgPool) {
    let app = app(&pool, 50).await;
    let a = user(&pool, "alice@uni.edu", Some("cal-a")).await;
    let nocal = user(&pool, "bob@uni.edu", None).await;
    sqlx::query("UPDATE users SET calendar_sync_status = 'needs_reauth', last_sync_error = 'invalid_grant' WHERE id = $1")
        .bind(a)
        .execute(&pool)
        .await
        .unwrap();
    let cookie = login(&app, ADMIN).await;
    let r = get(&app, "/users?q=alice", Some(&cookie)).await;
    assert!(r.body.contains("alice@uni.edu") && !r.body.contains("bob@uni.edu"));
    let r = get(&app, &format!("/users?q={nocal}"), Some(&cookie)).await;
    assert!(r.body.contains("bob@uni.edu") && !r.body.contains("alice@uni.edu"));
    let r = get(&app, "/users?status=needs_reauth", Some(&cookie)).await;
    assert!(r.body.contains("alice@uni.edu") && r.body.contains("invalid_grant"));
    assert_eq!(
        get(&app, "/users?status=weird", Some(&cookie)).await.status,
        StatusCode::BAD_REQUEST
    );
    let detail = get(&app, &format!("/users/{a}"), Some(&cookie)).await;
    assert!(detail.body.contains("needs_reauth") && detail.body.contains("Sync now"));
    let csrf = csrf_of(&detail.body);
    let r1 = post(
        &app,
        &format!("/users/{a}/sync"),
        Some(&cookie),
        &[("csrf", &csrf)],
    )
    .await;
    assert!(r1.location.contains("queued%20as%20job"), "{}", r1.location);
    let r2 = post(
        &app,
        &format!("/users/{a}/sync"),
        Some(&cookie),
        &[("csrf", &csrf)],
    )
    .await;
    // The same active job both times; the second request says it was already waiting.
    let job = r1
        .location
        .split("job%20")
        .nth(1)
        .and_then(|rest| rest.get(..26))
        .expect("a job id in the flash")
        .to_string();
    assert!(
        r2.location.contains(&format!(
            "already%20has%20job%20{job}%20waiting%20at%20interactive"
        )),
        "{}",
        r2.location
    );
    let r = post(
        &app,
        &format!("/users/{nocal}/sync"),
        Some(&cookie),
        &[("csrf", &csrf)],
    )
    .await;
    assert!(
        r.location.contains("no%20course%20calendar"),
        "{}",
        r.location
    );
    let r = post(
        &app,
        "/users/424242/sync",
        Some(&cookie),
        &[("csrf", &csrf)],
    )
    .await;
    assert!(r.location.contains("Unknown%20user"), "{}", r.location);
    assert_eq!(
        get(&app, "/users/424242", Some(&cookie)).await.status,
        StatusCode::NOT_FOUND
    );
}

#[sqlx::test(migrations = false)]
async fn no_secret_is_ever_rendered_and_output_is_escaped(pool: PgPool) {
    let app = app(&pool, 50).await;
    let u = user(&pool, "<script>alert(1)</script>@uni.edu", Some("cal-a")).await;
    sqlx::query("INSERT INTO google_credentials (user_id, refresh_token, access_token) VALUES ($1, 'SECRET-REFRESH-123', 'SECRET-ACCESS-456')")
        .bind(u)
        .execute(&pool)
        .await
        .unwrap();
    let job = failed_job(&pool, u, "<img src=x onerror=alert(2)>").await;
    let cookie = login(&app, ADMIN).await;
    for page in [
        "/".to_string(),
        "/jobs".into(),
        format!("/jobs/{job}"),
        "/runs".into(),
        "/users".into(),
        format!("/users/{u}"),
        "/audit".into(),
    ] {
        let r = get(&app, &page, Some(&cookie)).await;
        assert_eq!(r.status, StatusCode::OK, "{page}");
        for secret in ["SECRET-REFRESH-123", "SECRET-ACCESS-456", ADMIN, READONLY] {
            assert!(!r.body.contains(secret), "{page} renders a secret");
        }
        assert!(
            !r.body.contains("<script>alert") && !r.body.contains("<img src=x"),
            "{page} is not escaped"
        );
    }
}

#[sqlx::test(migrations = false)]
async fn jobs_show_and_filter_priority_classes_and_sync_now_can_skip_the_retry_wait(pool: PgPool) {
    use calsync_domain::priority::{self, PriorityClass, SyncRequest};
    let app = app(&pool, 50).await;
    let a = user(&pool, "alice@uni.edu", Some("cal-a")).await;
    let b = user(&pool, "bob@uni.edu", Some("cal-b")).await;
    let req = |user_id, class| SyncRequest {
        user_id,
        reason: "t",
        class,
        due_now: false,
    };
    let ja = priority::request_sync(&pool, &req(a, PriorityClass::Interactive), "test")
        .await
        .unwrap()
        .job_id;
    let jb = priority::request_sync(&pool, &req(b, PriorityClass::Maintenance), "test")
        .await
        .unwrap()
        .job_id;
    let cookie = login(&app, ADMIN).await;
    let r = get(&app, "/jobs?class=interactive", Some(&cookie)).await;
    assert!(r.body.contains(&ja) && !r.body.contains(&jb), "{}", r.body);
    assert!(r.body.contains("cls-interactive"));
    let r = get(&app, "/jobs?class=maintenance", Some(&cookie)).await;
    assert!(r.body.contains(&jb) && !r.body.contains(&ja));
    assert!(
        r.body.contains(r#"<option selected>maintenance</option>"#),
        "the filter keeps its value"
    );
    let r = get(&app, "/jobs?class=urgent", Some(&cookie)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = get(&app, &format!("/jobs/{ja}"), Some(&cookie)).await;
    assert!(r.body.contains("(priority 200)"), "{}", r.body);

    // Alice's job fails once and waits on its backoff: the user page offers to skip it.
    sqlx::query("UPDATE apalis.jobs SET status = 'Running', lock_at = now() WHERE id = $1")
        .bind(&ja)
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("UPDATE apalis.jobs SET status = 'Failed', attempts = 1 WHERE id = $1")
        .bind(&ja)
        .execute(&pool)
        .await
        .unwrap();
    let detail = get(&app, &format!("/users/{a}"), Some(&cookie)).await;
    assert!(detail.body.contains("Sync now, skip the retry wait"));
    let plain = get(&app, &format!("/users/{b}"), Some(&cookie)).await;
    assert!(!plain.body.contains("skip the retry wait"));
    let csrf = csrf_of(&detail.body);
    let r = post(
        &app,
        &format!("/users/{a}/sync"),
        Some(&cookie),
        &[("csrf", &csrf), ("due_now", "true")],
    )
    .await;
    assert!(r.location.contains("no%20longer%20waits"), "{}", r.location);
    let due: bool = sqlx::query_scalar("SELECT run_at <= now() FROM apalis.jobs WHERE id = $1")
        .bind(&ja)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(due);
    // "Sync now" raises Bob's maintenance job ahead of the nightly.
    let r = post(
        &app,
        &format!("/users/{b}/sync"),
        Some(&cookie),
        &[("csrf", &csrf)],
    )
    .await;
    assert!(
        r.location.contains("runs%20ahead%20of%20the%20nightly"),
        "{}",
        r.location
    );
}
