//! Security hardening of the dashboard (issue 12: 5 revocable sessions, 6 login
//! throttling, 7 safe `back` targets, 8 control characters, 11 security headers), in
//! process against real Postgres.

mod common;

use std::time::Duration;

use axum::{
    Router,
    body::Body,
    http::{Request, StatusCode, header},
};
use calsync_dashboard::{DashboardConfig, LoginThrottleConfig, router};
use common::*;
use sqlx::PgPool;

async fn sessions(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM calsync.dashboard_sessions")
        .fetch_one(pool)
        .await
        .unwrap()
}

fn with_secret(admin: &str) -> DashboardConfig {
    DashboardConfig {
        admin_token: Some(admin.into()),
        session_secret: Some("a-stable-session-secret".into()),
        ..config()
    }
}

async fn is_logged_in(app: &Router, cookie: &str) -> bool {
    let r = get(app, "/", Some(cookie)).await;
    match r.status {
        StatusCode::OK => true,
        StatusCode::SEE_OTHER => {
            assert_eq!(r.location, "/login");
            false
        }
        s => panic!("unexpected {s}"),
    }
}

#[sqlx::test(migrations = false)]
async fn logout_ends_the_session_server_side(pool: PgPool) {
    let app = app(&pool, 50).await;
    let cookie = login(&app, ADMIN).await;
    let other = login(&app, ADMIN).await;
    assert_eq!(sessions(&pool).await, 2);
    let csrf = csrf_of(&get(&app, "/", Some(&cookie)).await.body);
    let out = post(&app, "/logout", Some(&cookie), &[("csrf", &csrf)]).await;
    assert_eq!(out.location, "/login");
    // The browser forgets the cookie; a copy of it must not work either.
    assert!(
        !is_logged_in(&app, &cookie).await,
        "cookie works after logout"
    );
    assert!(is_logged_in(&app, &other).await, "only that session ended");
    assert_eq!(sessions(&pool).await, 1);
    // A logout without the session's CSRF token is refused and ends nothing.
    let r = post(&app, "/logout", Some(&other), &[("csrf", "forged")]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(is_logged_in(&app, &other).await);
}

#[sqlx::test(migrations = false)]
async fn rotating_a_token_ends_its_sessions_and_a_restart_keeps_the_others(pool: PgPool) {
    calsync_domain::migrate(&pool).await.unwrap();
    let old = "the-old-admin-token-123";
    let new = "the-new-admin-token-456";
    let first = router(pool.clone(), with_secret(old)).unwrap();
    let admin = login(&first, old).await;
    let readonly = login(&first, READONLY).await;

    // A restart with the same tokens and secret keeps every session.
    let same = router(pool.clone(), with_secret(old)).unwrap();
    assert!(is_logged_in(&same, &admin).await);
    assert!(is_logged_in(&same, &readonly).await);

    // A restart with a new admin token ends the admin sessions of the old one, not the
    // read-only ones; the new token logs in.
    let rotated = router(pool.clone(), with_secret(new)).unwrap();
    assert!(
        !is_logged_in(&rotated, &admin).await,
        "old token's session survived"
    );
    assert!(is_logged_in(&rotated, &readonly).await);
    let fresh = login(&rotated, new).await;
    assert!(is_logged_in(&rotated, &fresh).await);
    assert_eq!(sessions(&pool).await, 2, "the revoked session is gone");
    // Rotating back does not revive it.
    let back = router(pool.clone(), with_secret(old)).unwrap();
    assert!(!is_logged_in(&back, &admin).await);

    // Unsetting the read-only token ends read-only sessions.
    let no_ro = router(
        pool.clone(),
        DashboardConfig {
            readonly_token: None,
            ..with_secret(new)
        },
    )
    .unwrap();
    assert!(!is_logged_in(&no_ro, &readonly).await);
    assert!(is_logged_in(&no_ro, &fresh).await);

    // Without a configured secret every process has its own: a restart ends sessions.
    let random = router(pool.clone(), config()).unwrap();
    assert!(!is_logged_in(&random, &fresh).await);
}

#[sqlx::test(migrations = false)]
async fn expired_sessions_end_and_are_cleaned_up(pool: PgPool) {
    let app = app(&pool, 50).await;
    let cookie = login(&app, ADMIN).await;
    sqlx::query("UPDATE calsync.dashboard_sessions SET expires_at = now() - interval '1 second'")
        .execute(&pool)
        .await
        .unwrap();
    assert!(!is_logged_in(&app, &cookie).await);
    let again = login(&app, ADMIN).await;
    assert!(is_logged_in(&app, &again).await);
    assert_eq!(sessions(&pool).await, 1, "the expired session was removed");
    let stored: Vec<u8> = sqlx::query_scalar("SELECT id_hash FROM calsync.dashboard_sessions")
        .fetch_one(&pool)
        .await
        .unwrap();
    let value = again.split_once('=').unwrap().1;
    assert!(
        !stored
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
            .contains(value),
        "the database holds a hash, not the cookie"
    );
}

fn throttled(per_client_burst: u32, global_burst: u32) -> DashboardConfig {
    DashboardConfig {
        login_throttle: LoginThrottleConfig {
            per_client_burst,
            per_client_period: Duration::from_secs(600),
            global_burst,
            global_period: Duration::from_secs(600),
        },
        ..config()
    }
}

async fn login_from(app: &Router, client: &str, token: &str) -> Resp {
    send_from(
        app,
        Request::post("/login")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(form_body(&[("token", token)]))
            .unwrap(),
        client,
    )
    .await
}

async fn bearer_from(app: &Router, client: &str, token: &str) -> Resp {
    send_from(
        app,
        Request::get("/jobs")
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap(),
        client,
    )
    .await
}

fn assert_429(r: &Resp) {
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.body);
    let retry: u64 = r.headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=600).contains(&retry), "Retry-After {retry}");
    assert!(r.body.contains("Too many failed logins"), "{}", r.body);
    assert!(r.cookie.is_none());
}

#[sqlx::test(migrations = false)]
async fn failed_logins_are_throttled_per_client(pool: PgPool) {
    calsync_domain::migrate(&pool).await.unwrap();
    let app = router(pool.clone(), throttled(3, 1000)).unwrap();
    let attacker = "203.0.113.7";
    for _ in 0..3 {
        let r = login_from(&app, attacker, "wrong-token-xxxxxxxx").await;
        assert_eq!(r.location, "/login?error=1");
    }
    assert_429(&login_from(&app, attacker, "wrong-token-xxxxxxxx").await);
    // While throttled even the right token is not looked at.
    assert_429(&login_from(&app, attacker, ADMIN).await);
    // Other clients are not affected.
    let r = login_from(&app, "198.51.100.20", ADMIN).await;
    assert_eq!(r.location, "/");
    assert!(r.cookie.is_some());

    // Bearer tokens count the same way; right ones never use up quota.
    let script = "192.0.2.50";
    for _ in 0..10 {
        assert_eq!(
            bearer_from(&app, script, READONLY).await.status,
            StatusCode::OK
        );
    }
    for _ in 0..3 {
        assert_eq!(
            bearer_from(&app, script, "wrong-token-xxxxxxxx")
                .await
                .status,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_429(&bearer_from(&app, script, "wrong-token-xxxxxxxx").await);
    assert_429(&bearer_from(&app, script, READONLY).await);
}

#[sqlx::test(migrations = false)]
async fn a_flood_never_locks_out_the_admin(pool: PgPool) {
    calsync_domain::migrate(&pool).await.unwrap();
    // One address flooding empties only its own bucket, never the global one.
    let app = router(pool.clone(), throttled(2, 4)).unwrap();
    for _ in 0..200 {
        login_from(&app, "203.0.113.1", "wrong-token-xxxxxxxx").await;
    }
    let r = login_from(&app, "198.51.100.1", ADMIN).await;
    assert_eq!(
        r.location, "/",
        "a single flooding client locked out the admin"
    );

    // Several addresses at their full rate empty the global bucket: new clients wait,
    // an admin who logged in from their address before does not.
    let app = router(pool.clone(), throttled(2, 4)).unwrap();
    let admin_addr = "2001:db8:aa::10";
    assert_eq!(login_from(&app, admin_addr, ADMIN).await.location, "/");
    for bot in ["203.0.113.1", "203.0.113.2", "203.0.113.3"] {
        for _ in 0..2 {
            login_from(&app, bot, "wrong-token-xxxxxxxx").await;
        }
    }
    assert_429(&login_from(&app, "198.51.100.2", ADMIN).await);
    let r = login_from(&app, "2001:db8:aa::11", ADMIN).await;
    assert_eq!(r.location, "/", "same /64 as a known client");
    assert!(r.cookie.is_some());
}

#[sqlx::test(migrations = false)]
async fn unsafe_back_targets_are_refused_before_the_action(pool: PgPool) {
    let app = app(&pool, 50).await;
    let u = user(&pool, "a@uni.edu", Some("cal-a")).await;
    let job = failed_job(&pool, u, "boom").await;
    let cookie = login(&app, ADMIN).await;
    let csrf = csrf_of(&get(&app, "/", Some(&cookie)).await.body);
    let bad = [
        "//evil.example/",
        "/\\evil.example",
        "\\\\evil.example",
        "\\/evil.example",
        "https://evil.example/",
        "javascript:alert(1)",
        "evil.example",
        "/jobs\r\nSet-Cookie: a=b",
        "/jobs\nx",
        "/jobs\0",
        "/jobs/../..//evil.example",
        "/jobs#x",
        "/jobs x",
    ];
    for back in bad {
        for action in [
            format!("/jobs/{job}/retry"),
            "/jobs/retry".into(),
            "/runs/now".into(),
            format!("/users/{u}/sync"),
        ] {
            let r = post(
                &app,
                &action,
                Some(&cookie),
                &[("csrf", &csrf), ("back", back)],
            )
            .await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{action} {back:?}");
            assert!(
                r.location.is_empty(),
                "{action} {back:?} redirected to {}",
                r.location
            );
        }
    }
    assert_eq!(
        status_of(&pool, &job).await,
        "Failed",
        "nothing was retried"
    );
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM calsync.nightly_runs")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(runs, 0, "no nightly run was started");
    // A clean local path is followed.
    let r = post(
        &app,
        &format!("/jobs/{job}/retry"),
        Some(&cookie),
        &[("csrf", &csrf), ("back", "/jobs?state=pending")],
    )
    .await;
    assert!(
        r.location.starts_with("/jobs?state=pending&flash=Retried"),
        "{}",
        r.location
    );
}

#[sqlx::test(migrations = false)]
async fn control_characters_in_any_input_are_a_clear_400(pool: PgPool) {
    let app = app(&pool, 50).await;
    let u = user(&pool, "a@uni.edu", Some("cal-a")).await;
    let job = failed_job(&pool, u, "boom").await;
    let cookie = login(&app, ADMIN).await;
    let csrf = csrf_of(&get(&app, "/", Some(&cookie)).await.body);
    for uri in [
        "/users?q=a%00b",
        "/users?q=%0d%0a",
        "/users?status=%00",
        "/users?after=%00",
        "/jobs?queue=%00",
        "/jobs?queue=sync%0A",
        "/jobs?state=%00",
        "/jobs?user_id=%00",
        "/jobs?before=01%00",
        "/jobs/01ABC%00",
        "/jobs/%0D%0A",
        "/users/%00",
        "/runs/%00",
        "/audit?before=%00",
        "/?flash=hi%00",
        "/login?error=%00",
    ] {
        let r = get(&app, uri, Some(&cookie)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{uri}: {}", r.body);
        assert!(
            r.body.contains("control character") || r.body.contains("not a valid id"),
            "{uri}: {}",
            r.body
        );
    }
    for (action, form) in [
        ("/jobs/retry", vec![("queue", "sync\0")]),
        ("/jobs/retry", vec![("user_id", "1\0")]),
        ("/jobs/discard", vec![("state", "pending\r\n")]),
        (&*format!("/jobs/{job}/retry"), vec![("note", "\0")]),
    ] {
        let mut form = form;
        form.push(("csrf", &csrf));
        let r = post(&app, action, Some(&cookie), &form).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{action}: {}", r.body);
    }
    assert_eq!(status_of(&pool, &job).await, "Failed");
    let r = post(&app, "/login", None, &[("token", "abc\0def")]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.cookie.is_none());
}

#[sqlx::test(migrations = false)]
async fn every_response_carries_the_security_headers(pool: PgPool) {
    let app = router(
        pool.clone(),
        DashboardConfig {
            login_throttle: LoginThrottleConfig {
                per_client_burst: 1,
                per_client_period: Duration::from_secs(600),
                ..Default::default()
            },
            ..config()
        },
    );
    calsync_domain::migrate(&pool).await.unwrap();
    let app = app.unwrap();
    let u = user(&pool, "a@uni.edu", Some("cal-a")).await;
    let job = failed_job(&pool, u, "boom").await;
    let cookie = login(&app, ADMIN).await;
    let csrf = csrf_of(&get(&app, "/", Some(&cookie)).await.body);
    let c = Some(cookie.as_str());
    let mut seen = Vec::new();
    for (uri, cookie) in [
        ("/".to_string(), c),
        ("/".into(), None),
        ("/login".into(), None),
        ("/login?error=1".into(), None),
        ("/jobs".into(), c),
        ("/jobs?state=bogus".into(), c),
        (format!("/jobs/{job}"), c),
        ("/jobs/01NOSUCHJOB".into(), c),
        ("/runs".into(), c),
        ("/runs/999".into(), c),
        ("/users".into(), c),
        (format!("/users/{u}"), c),
        ("/audit".into(), c),
        ("/static/dashboard.css".into(), None),
        ("/healthz".into(), None),
        ("/no-such-page".into(), c),
    ] {
        seen.push((format!("GET {uri}"), get(&app, &uri, cookie).await));
    }
    for (uri, form) in [
        (format!("/jobs/{job}/retry"), vec![("csrf", csrf.as_str())]),
        (format!("/jobs/{job}/discard"), vec![("csrf", &csrf)]),
        (
            "/jobs/retry".into(),
            vec![("csrf", &csrf), ("state", "failed")],
        ),
        (
            "/jobs/discard".into(),
            vec![("csrf", &csrf), ("state", "pending")],
        ),
        ("/runs/now".into(), vec![("csrf", &csrf)]),
        (format!("/users/{u}/sync"), vec![("csrf", &csrf)]),
        // No preview configured: 503, with the headers too.
        (format!("/users/{u}/check"), vec![("csrf", &csrf)]),
        ("/runs/now".into(), vec![]),
        ("/logout".into(), vec![("csrf", &csrf)]),
    ] {
        seen.push((format!("POST {uri}"), post(&app, &uri, c, &form).await));
    }
    seen.push((
        "POST /runs/now anonymous".into(),
        post(&app, "/runs/now", None, &[]).await,
    ));
    seen.push((
        "POST /login wrong".into(),
        post(&app, "/login", None, &[("token", "wrong-token-xxxxxxxx")]).await,
    ));
    seen.push((
        "POST /login throttled".into(),
        post(&app, "/login", None, &[("token", "wrong-token-xxxxxxxx")]).await,
    ));
    seen.push((
        "PUT /jobs".into(),
        send(&app, Request::put("/jobs").body(Body::empty()).unwrap()).await,
    ));
    let statuses: std::collections::BTreeSet<u16> =
        seen.iter().map(|(_, r)| r.status.as_u16()).collect();
    for s in [200, 303, 400, 401, 403, 404, 405, 429, 503] {
        assert!(
            statuses.contains(&s),
            "no {s} response was checked: {statuses:?}"
        );
    }
    for (what, r) in &seen {
        let h = |name: header::HeaderName| {
            r.headers
                .get(&name)
                .unwrap_or_else(|| panic!("{what} ({}) lacks {name}", r.status))
                .to_str()
                .unwrap()
                .to_string()
        };
        let csp = h(header::CONTENT_SECURITY_POLICY);
        assert!(
            csp.contains("frame-ancestors 'none'") && csp.contains("default-src 'none'"),
            "{what}: {csp}"
        );
        assert_eq!(h(header::X_FRAME_OPTIONS), "DENY", "{what}");
        assert_eq!(h(header::REFERRER_POLICY), "same-origin", "{what}");
        assert_eq!(h(header::X_CONTENT_TYPE_OPTIONS), "nosniff", "{what}");
        if what != "GET /static/dashboard.css" {
            assert_eq!(h(header::CACHE_CONTROL), "no-store", "{what}");
        }
    }
}
