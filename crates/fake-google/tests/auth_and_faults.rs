//! Auth (access tokens, token endpoint), fault injection and the call log.

mod common;

use std::time::{Duration, Instant};

use calsync_fake_google::{FakeGoogle, FaultRule};
use common::{google_error, http, hub, setup, timed_event, token_request};
use google_calendar3::Error;

#[tokio::test]
async fn bad_or_expired_access_token_is_401() {
    let (fake, good, cal) = setup().await;
    let bad = hub(&fake, "not-a-token");
    let err = bad.events().list(&cal).doit().await.expect_err("bad token");
    assert_eq!(
        google_error(err),
        (401, "authError".into(), "Invalid Credentials".into())
    );

    good.events().list(&cal).doit().await.expect("valid token");
    fake.expire_access_tokens();
    let err = good.events().list(&cal).doit().await.expect_err("expired");
    assert_eq!(google_error(err).1, "authError");

    fake.add_access_token("short", Duration::ZERO);
    let err = hub(&fake, "short")
        .calendars()
        .get(&cal)
        .doit()
        .await
        .expect_err("ttl 0");
    assert_eq!(google_error(err).0, 401);

    // No Authorization header at all (the real client always sends one).
    let raw = http(
        "GET",
        &format!("{}calendars/{cal}", fake.base_url()),
        &[],
        "",
    )
    .await;
    assert_eq!(raw.status, 401);
    assert_eq!(raw.json()["error"]["errors"][0]["reason"], "required");
    assert_eq!(
        raw.content_type.as_deref(),
        Some("application/json; charset=UTF-8")
    );
}

#[tokio::test]
async fn token_endpoint_refresh_and_revoke() {
    let fake = FakeGoogle::start().await.expect("start");
    let cal = fake.create_calendar("Classes");
    fake.add_refresh_token("1//rt-alice");
    fake.set_token_lifetime(Duration::from_secs(1800));

    let form =
        "grant_type=refresh_token&refresh_token=1%2F%2Frt-alice&client_id=cid&client_secret=secret";
    let raw = token_request(&fake, form).await;
    assert_eq!(raw.status, 200);
    let body = raw.json();
    let access = body["access_token"]
        .as_str()
        .expect("access_token")
        .to_string();
    assert!(access.starts_with("ya29.fake-"));
    assert_eq!(body["expires_in"], 1800);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["scope"], "https://www.googleapis.com/auth/calendar");

    let alice = hub(&fake, &access);
    alice
        .events()
        .list(&cal)
        .doit()
        .await
        .expect("issued token works");

    fake.revoke_refresh_token("1//rt-alice");
    let raw = token_request(&fake, form).await;
    assert_eq!(raw.status, 400);
    assert_eq!(raw.json()["error"], "invalid_grant");
    assert_eq!(
        raw.json()["error_description"],
        "Token has been expired or revoked."
    );
    // Revocation also kills access tokens issued for the grant.
    let err = alice.events().list(&cal).doit().await.expect_err("revoked");
    assert_eq!(google_error(err).0, 401);

    let unknown = token_request(
        &fake,
        "grant_type=refresh_token&refresh_token=nope&client_id=c&client_secret=s",
    )
    .await;
    assert_eq!(unknown.json()["error"], "invalid_grant");
    let missing = token_request(&fake, "grant_type=refresh_token&client_id=c").await;
    assert_eq!(missing.status, 400);
    assert_eq!(missing.json()["error"], "invalid_request");
    let no_grant = token_request(&fake, "refresh_token=x&client_id=c").await;
    assert_eq!(no_grant.json()["error"], "invalid_request");

    assert_eq!(fake.count_calls("token"), 5);
    assert_eq!(fake.write_calls(), 0);
}

#[tokio::test]
async fn calendars_owned_by_a_user_are_invisible_to_others() {
    let fake = FakeGoogle::start().await.expect("start");
    fake.add_refresh_token("rt-a");
    fake.add_refresh_token("rt-b");
    let cal_a = fake.create_calendar_for("rt-a", "A");
    let mut tokens = Vec::new();
    for rt in ["rt-a", "rt-b"] {
        let raw = token_request(
            &fake,
            &format!("grant_type=refresh_token&refresh_token={rt}&client_id=c&client_secret=s"),
        )
        .await;
        tokens.push(
            raw.json()["access_token"]
                .as_str()
                .expect("token")
                .to_string(),
        );
    }
    hub(&fake, &tokens[0])
        .events()
        .list(&cal_a)
        .doit()
        .await
        .expect("owner");
    let err = hub(&fake, &tokens[1])
        .events()
        .list(&cal_a)
        .doit()
        .await
        .expect_err("other user");
    assert_eq!(google_error(err).0, 404);
}

#[tokio::test]
async fn error_fault_with_times_is_spent() {
    let (fake, hub, cal) = setup().await;
    let other = fake.create_calendar("Other");
    fake.add_fault(
        FaultRule::error(429, "rateLimitExceeded")
            .times(2)
            .calendar(cal.clone())
            .method("events.insert"),
    );
    // Other calendars and methods are unaffected.
    hub.events()
        .insert(timed_event(Some("hhhhh0"), 9), &other)
        .doit()
        .await
        .expect("other cal");
    hub.events().list(&cal).doit().await.expect("other method");

    for _ in 0..2 {
        let err = hub
            .events()
            .insert(timed_event(Some("hhhhh1"), 9), &cal)
            .doit()
            .await
            .expect_err("fault");
        assert_eq!(
            google_error(err),
            (
                429,
                "rateLimitExceeded".into(),
                "Rate Limit Exceeded".into()
            )
        );
    }
    assert!(fake.faults().is_empty(), "rule spent");
    hub.events()
        .insert(timed_event(Some("hhhhh1"), 9), &cal)
        .doit()
        .await
        .expect("after the fault");

    let calls = fake.calls();
    let statuses: Vec<(String, u16)> = calls.iter().map(|c| (c.method.clone(), c.status)).collect();
    assert_eq!(
        statuses,
        [
            ("events.insert".to_string(), 200),
            ("events.list".to_string(), 200),
            ("events.insert".to_string(), 429),
            ("events.insert".to_string(), 429),
            ("events.insert".to_string(), 200),
        ]
    );
    let faulted = &calls[2];
    assert_eq!(
        (
            faulted.method.as_str(),
            faulted.calendar_id.as_deref(),
            faulted.event_id.as_deref(),
            faulted.status,
        ),
        ("events.insert", Some(cal.as_str()), Some("hhhhh1"), 429)
    );
    // Faults fire before authentication: no principal; answered calls have one.
    assert_eq!(faulted.principal, None);
    assert!(calls[4].principal.is_some());
    assert!(calls.windows(2).all(|w| w[0].at <= w[1].at));
    assert_eq!(fake.write_calls(), 4);
    fake.reset_calls();
    assert!(fake.calls().is_empty());
    assert_eq!(fake.write_calls(), 0);
}

#[tokio::test]
async fn each_error_kind_maps_to_the_expected_client_error() {
    let (fake, hub, cal) = setup().await;
    let cases = [
        (403, "rateLimitExceeded", "usageLimits"),
        (403, "userRateLimitExceeded", "usageLimits"),
        (403, "quotaExceeded", "usageLimits"),
        (500, "backendError", "global"),
        (503, "backendError", "global"),
    ];
    for (status, reason, domain) in cases {
        fake.add_fault(FaultRule::error(status, reason).times(1));
        match hub.calendars().get(&cal).doit().await {
            Err(Error::BadRequest(json)) => {
                assert_eq!(json["error"]["code"], status);
                assert_eq!(json["error"]["errors"][0]["reason"], reason);
                assert_eq!(json["error"]["errors"][0]["domain"], domain);
            }
            other => panic!("expected BadRequest for {status} {reason}, got {other:?}"),
        }
    }

    // Non-JSON 502: the client cannot decode it and returns the raw response.
    fake.add_fault(FaultRule::non_json(502).times(1).method("events.*"));
    match hub.events().list(&cal).doit().await {
        Err(Error::Failure(response)) => {
            assert_eq!(response.status().as_u16(), 502);
            let content_type = response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            assert!(content_type.starts_with("text/html"));
        }
        other => panic!("expected Failure, got {other:?}"),
    }
    hub.events().list(&cal).doit().await.expect("spent");

    // Faults come before auth: even a bad token sees the fault.
    fake.add_fault(FaultRule::error(503, "backendError").times(1));
    let err = common::hub(&fake, "bogus")
        .events()
        .list(&cal)
        .doit()
        .await
        .expect_err("fault");
    assert_eq!(google_error(err).0, 503);

    // Unscoped rules leave the token endpoint alone; "token" targets it.
    fake.add_refresh_token("rt");
    fake.add_fault(FaultRule::error(500, "backendError"));
    let form = "grant_type=refresh_token&refresh_token=rt&client_id=c&client_secret=s";
    assert_eq!(token_request(&fake, form).await.status, 200);
    fake.clear_faults();
    fake.add_fault(
        FaultRule::error(503, "temporarily_unavailable")
            .method("token")
            .times(1),
    );
    let raw = token_request(&fake, form).await;
    assert_eq!(raw.status, 503);
    assert_eq!(raw.json()["error"], "temporarily_unavailable");
    assert_eq!(token_request(&fake, form).await.status, 200);
}

#[tokio::test]
async fn latency_fault_delays_then_answers() {
    let (fake, hub, cal) = setup().await;
    fake.add_fault(FaultRule::latency(Duration::from_millis(150)).times(1));
    let started = Instant::now();
    hub.events().list(&cal).doit().await.expect("slow but fine");
    assert!(started.elapsed() >= Duration::from_millis(150));

    // Latency and an error together.
    fake.add_fault(
        FaultRule::error(500, "backendError")
            .with_latency(Duration::from_millis(100))
            .times(1),
    );
    let started = Instant::now();
    let err = hub
        .events()
        .list(&cal)
        .doit()
        .await
        .expect_err("slow error");
    assert!(started.elapsed() >= Duration::from_millis(100));
    assert_eq!(google_error(err).0, 500);
}

#[tokio::test]
async fn rate_faults_are_reproducible() {
    async fn pattern() -> Vec<bool> {
        let (fake, hub, cal) = setup().await;
        fake.add_fault(FaultRule::error(503, "backendError").rate(0.3).seed(7));
        let mut out = Vec::new();
        for _ in 0..40 {
            out.push(hub.calendars().get(&cal).doit().await.is_err());
        }
        out
    }
    let first = pattern().await;
    assert_eq!(first, pattern().await);
    let failures = first.iter().filter(|f| **f).count();
    assert!((3..=25).contains(&failures), "failures = {failures}");
}
