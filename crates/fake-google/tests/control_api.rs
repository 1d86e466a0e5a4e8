//! The `/_fake/` HTTP control API, as used by out-of-process callers.

mod common;

use calsync_fake_google::FakeGoogle;
use common::{http, hub, timed_event, token_request};
use serde_json::json;

const JSON: (&str, &str) = ("content-type", "application/json");

#[tokio::test]
async fn drive_everything_over_http() {
    let fake = FakeGoogle::start().await.expect("start");
    let root = fake.root_url();

    assert_eq!(
        http("GET", &format!("{root}_fake/health"), &[], "")
            .await
            .body,
        "ok"
    );

    let created = http(
        "POST",
        &format!("{root}_fake/calendars"),
        &[JSON],
        json!({ "summary": "Classes" }).to_string(),
    )
    .await;
    assert_eq!(created.status, 200);
    let cal = created.json()["id"].as_str().expect("id").to_string();
    let fixed = http(
        "POST",
        &format!("{root}_fake/calendars"),
        &[JSON],
        json!({ "summary": "Fixed", "id": "fixed@group.calendar.google.com" }).to_string(),
    )
    .await;
    assert_eq!(fixed.json()["id"], "fixed@group.calendar.google.com");

    let rt = http(
        "POST",
        &format!("{root}_fake/refresh-tokens"),
        &[JSON],
        json!({ "refresh_token": "rt-1" }).to_string(),
    )
    .await;
    assert_eq!(rt.status, 204);
    let form = "grant_type=refresh_token&refresh_token=rt-1&client_id=c&client_secret=s";
    let token = token_request(&fake, form).await.json()["access_token"]
        .as_str()
        .expect("token")
        .to_string();

    let fault = http(
        "POST",
        &format!("{root}_fake/faults"),
        &[JSON],
        json!({ "method": "events.insert", "error": { "status": 429, "reason": "rateLimitExceeded" }, "times": 1 })
            .to_string(),
    )
    .await;
    assert_eq!(fault.status, 204);
    let listed = http("GET", &format!("{root}_fake/faults"), &[], "").await;
    assert_eq!(listed.json()[0]["times"], 1);
    let bad_fault = http(
        "POST",
        &format!("{root}_fake/faults"),
        &[JSON],
        json!({ "error": { "status": 200 } }).to_string(),
    )
    .await;
    assert_eq!(bad_fault.status, 400);

    let hub = hub(&fake, &token);
    assert!(
        hub.events()
            .insert(timed_event(Some("iiiii1"), 9), &cal)
            .doit()
            .await
            .is_err()
    );
    hub.events()
        .insert(timed_event(Some("iiiii1"), 9), &cal)
        .doit()
        .await
        .expect("insert");

    let calls = http("GET", &format!("{root}_fake/calls"), &[], "")
        .await
        .json();
    assert_eq!(calls["total"], 3);
    assert_eq!(calls["write_calls"], 2);
    assert_eq!(calls["calls"][1]["status"], 429);
    assert_eq!(calls["calls"][1]["event_id"], "iiiii1");
    assert_eq!(
        http("DELETE", &format!("{root}_fake/calls"), &[], "")
            .await
            .status,
        204
    );
    assert!(fake.calls().is_empty());

    // The user edits and deletes the event; the events endpoint shows it.
    let events_url = format!("{root}_fake/calendars/{cal}/events");
    let edited = http(
        "PATCH",
        &format!("{events_url}/iiiii1"),
        &[JSON],
        json!({ "summary": "Edited by student" }).to_string(),
    )
    .await;
    assert_eq!(edited.json()["summary"], "Edited by student");
    let deleted = http("DELETE", &format!("{events_url}/iiiii1"), &[], "").await;
    assert_eq!(deleted.status, 204);
    let all = http("GET", &events_url, &[], "").await.json();
    assert_eq!(all[0]["status"], "cancelled");
    let live = http("GET", &format!("{events_url}?live=true"), &[], "")
        .await
        .json();
    assert_eq!(live.as_array().map(Vec::len), Some(0));
    let missing = http("PATCH", &format!("{events_url}/zzzzz9"), &[JSON], "{}").await;
    assert_eq!(missing.status, 404);

    // Revoke over HTTP.
    let revoke = http(
        "POST",
        &format!("{root}_fake/refresh-tokens/rt-1/revoke"),
        &[],
        "",
    )
    .await;
    assert_eq!(revoke.status, 204);
    assert_eq!(
        token_request(&fake, form).await.json()["error"],
        "invalid_grant"
    );

    // Calendars listing and deletion.
    let calendars = http("GET", &format!("{root}_fake/calendars"), &[], "")
        .await
        .json();
    assert_eq!(calendars.as_array().map(Vec::len), Some(2));
    let gone = http("DELETE", &format!("{root}_fake/calendars/{cal}"), &[], "").await;
    assert_eq!(gone.status, 204);
    assert!(!fake.calendar_exists(&cal));
    assert_eq!(http("GET", &events_url, &[], "").await.status, 404);

    // Unknown routes get a Google-shaped 404 (users.settings is not served by the fake).
    let unknown = http(
        "GET",
        &format!("{}users/me/settings", fake.base_url()),
        &[],
        "",
    )
    .await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.json()["error"]["errors"][0]["reason"], "notFound");
}
