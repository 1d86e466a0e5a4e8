//! Event appearance validated like Google (colorId, reminders, visibility, transparency),
//! colors.get, quotas like Google's, call timestamps, and latency that does not serialise
//! concurrent calls — through the real client.

mod common;

use std::time::{Duration, Instant};

use calsync_fake_google::{FakeGoogle, FaultRule, QuotaConfig};
use common::{google_error, hub, refresh_grant, setup, timed_event};
use google_calendar3::api::{Event, EventReminder, EventReminders};

fn reminder(method: &str, minutes: i32) -> EventReminder {
    EventReminder {
        method: Some(method.to_string()),
        minutes: Some(minutes),
    }
}

fn with_reminders(
    mut event: Event,
    use_default: Option<bool>,
    overrides: Vec<EventReminder>,
) -> Event {
    event.reminders = Some(EventReminders {
        use_default,
        overrides: Some(overrides),
    });
    event
}

#[tokio::test]
async fn colors_reminders_visibility_transparency_reach_google() {
    let (fake, hub, cal) = setup().await;
    let mut event = with_reminders(
        timed_event(Some("final0001"), 9),
        Some(false),
        vec![reminder("popup", 10), reminder("email", 1440)],
    );
    event.color_id = Some("11".into());
    event.visibility = Some("private".into());
    event.transparency = Some("transparent".into());
    let (_, stored) = hub
        .events()
        .insert(event, &cal)
        .doit()
        .await
        .expect("valid appearance");
    assert_eq!(stored.color_id.as_deref(), Some("11"));
    let reminders = stored.reminders.expect("reminders");
    assert_eq!(reminders.use_default, Some(false));
    assert_eq!(reminders.overrides.map(|o| o.len()), Some(2));
    assert_eq!(stored.visibility.as_deref(), Some("private"));
    assert_eq!(stored.transparency.as_deref(), Some("transparent"));
    let five = (0..5).map(|i| reminder("popup", i * 60)).collect();
    let max = with_reminders(timed_event(Some("five00001"), 10), None, five);
    hub.events()
        .insert(max, &cal)
        .doit()
        .await
        .expect("five overrides, 0..=40320 minutes");
    let edge = with_reminders(
        timed_event(Some("edge00001"), 11),
        Some(false),
        vec![reminder("email", 40_320)],
    );
    hub.events()
        .insert(edge, &cal)
        .doit()
        .await
        .expect("4 weeks is allowed");

    let invalid = |mutate: &dyn Fn(&mut Event)| {
        let mut event = timed_event(Some("bad000001"), 12);
        mutate(&mut event);
        event
    };
    let cases: Vec<(Event, &str)> = vec![
        (invalid(&|e| e.color_id = Some("12".into())), "invalid"),
        (invalid(&|e| e.color_id = Some("0".into())), "invalid"),
        (invalid(&|e| e.color_id = Some("tomato".into())), "invalid"),
        (
            invalid(&|e| e.visibility = Some("secret".into())),
            "invalid",
        ),
        (
            invalid(&|e| e.transparency = Some("see-through".into())),
            "invalid",
        ),
        (
            with_reminders(
                timed_event(Some("bad000001"), 12),
                Some(false),
                (0..6).map(|i| reminder("popup", i)).collect(),
            ),
            "invalid",
        ),
        (
            with_reminders(
                timed_event(Some("bad000001"), 12),
                Some(false),
                vec![reminder("sms", 10)],
            ),
            "invalid",
        ),
        (
            with_reminders(
                timed_event(Some("bad000001"), 12),
                Some(false),
                vec![reminder("popup", -1)],
            ),
            "invalid",
        ),
        (
            with_reminders(
                timed_event(Some("bad000001"), 12),
                Some(false),
                vec![reminder("popup", 40_321)],
            ),
            "invalid",
        ),
        (
            with_reminders(
                timed_event(Some("bad000001"), 12),
                Some(false),
                vec![EventReminder {
                    method: Some("popup".into()),
                    minutes: None,
                }],
            ),
            "required",
        ),
    ];
    for (event, reason) in cases {
        let err = hub
            .events()
            .insert(event.clone(), &cal)
            .doit()
            .await
            .expect_err("invalid");
        assert_eq!(google_error(err).1, reason, "{event:?}");
    }
    // Google's own error for default reminders together with overrides.
    let both = with_reminders(
        timed_event(Some("bad000001"), 12),
        Some(true),
        vec![reminder("popup", 10)],
    );
    match hub.events().insert(both, &cal).doit().await {
        Err(google_calendar3::Error::BadRequest(json)) => {
            assert_eq!(json["error"]["code"], 400);
            assert_eq!(
                json["error"]["errors"][0]["reason"],
                "cannotUseDefaultRemindersAndSpecifyOverride"
            );
            assert_eq!(json["error"]["errors"][0]["domain"], "calendar");
            assert_eq!(
                json["error"]["message"],
                "Cannot specify both default reminders and overrides at the same time."
            );
        }
        other => panic!("expected 400, got {other:?}"),
    }
    assert!(
        fake.event(&cal, "bad000001").is_none(),
        "nothing invalid was stored"
    );

    // Patches are validated on the merged result; a refused one changes nothing.
    let patch = Event {
        color_id: Some("99".into()),
        ..Default::default()
    };
    let err = hub
        .events()
        .patch(patch, &cal, "final0001")
        .doit()
        .await
        .expect_err("bad color");
    assert_eq!(google_error(err).1, "invalid");
    assert_eq!(
        fake.event(&cal, "final0001").expect("stored")["colorId"],
        "11"
    );

    // colors.get serves Google's palettes.
    let (_, colors) = hub.colors().get().doit().await.expect("colors.get");
    assert_eq!(colors.kind.as_deref(), Some("calendar#colors"));
    let event_palette = colors.event.expect("event palette");
    assert_eq!(event_palette.len(), 11);
    assert_eq!(event_palette["1"].background.as_deref(), Some("#a4bdfc"));
    assert_eq!(event_palette["11"].background.as_deref(), Some("#dc2127"));
    assert_eq!(colors.calendar.map(|c| c.len()), Some(24));
}

#[tokio::test]
async fn per_user_and_per_project_quotas_answer_like_google() {
    let fake = FakeGoogle::start().await.expect("start");
    let cal = fake.create_calendar("Shared");
    fake.add_refresh_token_for("rt-a", "a@example.edu");
    fake.add_refresh_token_for("rt-b", "b@example.edu");
    let a = hub(&fake, &refresh_grant(&fake, "rt-a").await);
    let b = hub(&fake, &refresh_grant(&fake, "rt-b").await);

    // Off by default: far beyond Google's 600/min per user.
    assert_eq!(fake.quota(), QuotaConfig::default());
    for _ in 0..650 {
        a.calendars()
            .get(&cal)
            .doit()
            .await
            .expect("no quota by default");
    }

    fake.set_quota(QuotaConfig::per_project(5, Duration::from_secs(60)).with_per_user(3));
    for _ in 0..3 {
        a.events()
            .list(&cal)
            .doit()
            .await
            .expect("within the user quota");
    }
    let err = a.events().list(&cal).doit().await.expect_err("user quota");
    match err {
        google_calendar3::Error::BadRequest(json) => {
            assert_eq!(json["error"]["code"], 403);
            assert_eq!(
                json["error"]["errors"][0]["reason"],
                "userRateLimitExceeded"
            );
            assert_eq!(json["error"]["errors"][0]["domain"], "usageLimits");
            assert_eq!(json["error"]["message"], "User Rate Limit Exceeded");
        }
        other => panic!("expected 403, got {other:?}"),
    }
    // quotaUser attributes a request to another user.
    a.events()
        .list(&cal)
        .param("quotaUser", "student-17")
        .doit()
        .await
        .expect("other quota user");
    b.events()
        .list(&cal)
        .doit()
        .await
        .expect("another user, 5th admitted call");
    let err = b
        .events()
        .list(&cal)
        .doit()
        .await
        .expect_err("project quota");
    assert_eq!(
        google_error(err),
        (
            403,
            "rateLimitExceeded".into(),
            "Rate Limit Exceeded".into()
        )
    );
    // The token endpoint is not a Calendar API call: never rate limited.
    refresh_grant(&fake, "rt-b").await;

    let refused: Vec<_> = fake
        .calls()
        .into_iter()
        .filter(|c| c.status == 403)
        .collect();
    assert_eq!(refused.len(), 2);
    assert_eq!(refused[0].principal.as_deref(), Some("a@example.edu"));
    assert_eq!(refused[1].principal.as_deref(), Some("b@example.edu"));

    // 429 is the other answer Google documents.
    fake.set_quota(QuotaConfig::per_project(1, Duration::from_secs(60)).with_status(429));
    a.calendars().get(&cal).doit().await.expect("first");
    let err = a.calendars().get(&cal).doit().await.expect_err("429");
    assert_eq!(google_error(err).0, 429);
}

#[tokio::test]
async fn the_window_slides_and_admitted_calls_never_exceed_it() {
    let (fake, hub, cal) = setup().await;
    let window = Duration::from_millis(400);
    fake.set_quota(QuotaConfig::per_project(4, window));
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut admitted = 0;
    let mut refused = 0;
    while admitted < 12 {
        assert!(
            Instant::now() < deadline,
            "quota never let calls through again"
        );
        match hub.calendars().get(&cal).doit().await {
            Ok(_) => admitted += 1,
            Err(err) => {
                assert_eq!(google_error(err).1, "rateLimitExceeded");
                refused += 1;
            }
        }
    }
    assert!(refused > 0, "a tight loop must hit the limit");
    let ok_in_window = fake.max_calls_in_window_where(window, |c| c.status == 200);
    assert_eq!(
        ok_in_window, 4,
        "admitted calls fill but never exceed the window"
    );
    assert!(
        fake.max_calls_in_window(window) > 4,
        "refused calls are logged too"
    );
}

#[tokio::test]
async fn latency_does_not_serialise_concurrent_calls() {
    let (fake, hub, cal) = setup().await;
    fake.add_fault(
        FaultRule::latency(Duration::from_secs(3))
            .method("calendars.get")
            .times(1),
    );
    let slow_hub = hub.clone();
    let slow_cal = cal.clone();
    let slow =
        tokio::spawn(async move { slow_hub.calendars().get(&slow_cal).doit().await.is_ok() });
    // Wait (polling, with a deadline) until the slow call is being served.
    let deadline = Instant::now() + Duration::from_secs(10);
    while fake.faults().len() == 1 {
        assert!(Instant::now() < deadline, "slow call never arrived");
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // While it sleeps, other calls go through.
    for _ in 0..5 {
        hub.events()
            .list(&cal)
            .doit()
            .await
            .expect("not blocked by the slow call");
    }
    assert!(
        !slow.is_finished(),
        "the fast calls finished while the slow one still sleeps"
    );
    assert!(
        slow.await.expect("join"),
        "the slow call succeeds in the end"
    );
    let calls = fake.calls();
    let slow_call = calls
        .iter()
        .find(|c| c.method == "calendars.get")
        .expect("logged");
    // Logged last (it answered last) but stamped with its arrival, before the fast ones.
    assert_eq!(
        calls.last().map(|c| c.method.as_str()),
        Some("calendars.get")
    );
    assert!(
        calls
            .iter()
            .filter(|c| c.method == "events.list")
            .all(|c| c.at >= slow_call.at)
    );
}
