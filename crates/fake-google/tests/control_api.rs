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

#[tokio::test]
async fn new_knobs_over_http() {
    let fake = FakeGoogle::start().await.expect("start");
    let root = fake.root_url();
    let post = |path: &str, body: serde_json::Value| {
        let url = format!("{root}_fake/{path}");
        async move { http("POST", &url, &[JSON], body.to_string()).await }
    };

    // Service accounts: the committed test key, delegation, removal.
    let sa = post(
        "service-accounts",
        json!({ "test_key": true, "domain_wide_delegation": true }),
    )
    .await;
    assert_eq!(sa.status, 200, "{}", sa.body);
    let email = sa.json()["email"].as_str().expect("email").to_string();
    assert_eq!(email, calsync_fake_google::test_keys::SERVICE_ACCOUNT_EMAIL);
    let mut claims = common::sa_claims(&fake, &email);
    claims["sub"] = json!("eve@example.edu");
    let key = calsync_fake_google::test_keys::service_account_private_key_pem();
    let assertion = common::sign_assertion(&claims, &key, None);
    assert_eq!(common::jwt_grant(&fake, &assertion).await.status, 200);
    let off = http(
        "PUT",
        &format!("{root}_fake/service-accounts/{email}/domain-wide-delegation"),
        &[JSON],
        json!({ "enabled": false }).to_string(),
    )
    .await;
    assert_eq!(off.status, 204);
    assert_eq!(common::jwt_grant(&fake, &assertion).await.status, 401);
    let bad = post(
        "service-accounts",
        json!({ "email": "x@p.iam.gserviceaccount.com", "public_key_pem": "nope" }),
    )
    .await;
    assert_eq!(bad.status, 400);
    let other = post(
        "service-accounts",
        json!({ "email": "other@p.iam.gserviceaccount.com",
                "public_key_pem": calsync_fake_google::test_keys::OTHER_PUBLIC_KEY_PEM }),
    )
    .await;
    assert_eq!(other.status, 200);
    let key_file = http(
        "GET",
        &format!("{root}_fake/service-accounts/test-key-file"),
        &[],
        "",
    )
    .await
    .json();
    assert_eq!(key_file["token_uri"], fake.token_url());
    assert_eq!(key_file["client_email"], email);
    assert_eq!(key_file["type"], "service_account");
    let removed = http(
        "DELETE",
        &format!("{root}_fake/service-accounts/{email}"),
        &[],
        "",
    )
    .await;
    assert_eq!(removed.status, 204);
    assert_eq!(
        common::jwt_grant(&fake, &assertion).await.json()["error"],
        "invalid_grant"
    );

    // Calendars owned by an e-mail, shared over HTTP, seen by a refresh token with e-mail.
    let cal = post(
        "calendars",
        json!({ "summary": "Owned", "owner_email": "Prof@Example.edu" }),
    )
    .await
    .json()["id"]
        .as_str()
        .expect("id")
        .to_string();
    assert_eq!(
        fake.calendar_owner_email(&cal).as_deref(),
        Some("prof@example.edu")
    );
    let shared = post(
        &format!("calendars/{cal}/acl"),
        json!({ "email": "fay@example.edu", "role": "reader" }),
    )
    .await;
    assert_eq!(shared.status, 204);
    let bad_role = post(
        &format!("calendars/{cal}/acl"),
        json!({ "email": "fay@example.edu", "role": "boss" }),
    )
    .await;
    assert_eq!(bad_role.status, 400);
    let rules = http("GET", &format!("{root}_fake/calendars/{cal}/acl"), &[], "")
        .await
        .json();
    assert_eq!(rules.as_array().map(Vec::len), Some(2));
    assert_eq!(
        post(
            "refresh-tokens",
            json!({ "refresh_token": "rt-fay", "email": "fay@example.edu" })
        )
        .await
        .status,
        204
    );
    let fay = hub(&fake, &common::refresh_grant(&fake, "rt-fay").await);
    fay.events()
        .list(&cal)
        .doit()
        .await
        .expect("shared over HTTP");
    let group = post(
        "groups/staff@example.edu/members",
        json!({ "email": "gil@example.edu" }),
    )
    .await;
    assert_eq!(group.status, 204);
    let notes = http(
        "GET",
        &format!("{root}_fake/sharing-notifications"),
        &[],
        "",
    )
    .await
    .json();
    assert_eq!(notes, json!([]));

    // Occurrences of a recurring event.
    let event = json!({
        "id": "recur0001",
        "start": { "dateTime": "2026-11-23T09:00:00", "timeZone": "America/New_York" },
        "end": { "dateTime": "2026-11-23T09:50:00", "timeZone": "America/New_York" },
        "recurrence": ["RRULE:FREQ=DAILY;COUNT=3", "EXDATE;TZID=America/New_York:20261124T090000"],
    });
    assert_eq!(
        post(&format!("calendars/{cal}/events"), event).await.status,
        200
    );
    let occ = http(
        "GET",
        &format!("{root}_fake/calendars/{cal}/events/recur0001/occurrences"),
        &[],
        "",
    )
    .await
    .json();
    let starts: Vec<&str> = occ
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|o| o["local_start"].as_str())
        .collect();
    assert_eq!(starts, ["2026-11-23T09:00:00", "2026-11-25T09:00:00"]);
    assert_eq!(occ[0]["instance_id"], "recur0001_20261123T140000Z");
    let missing = http(
        "GET",
        &format!("{root}_fake/calendars/{cal}/events/zzzzz/occurrences"),
        &[],
        "",
    )
    .await;
    assert_eq!(missing.status, 404);

    // Quota over HTTP, then the sliding-window analysis of the call log.
    let quota = http(
        "PUT",
        &format!("{root}_fake/quota"),
        &[JSON],
        json!({ "per_user": 2, "window_ms": 60000 }).to_string(),
    )
    .await;
    assert_eq!(quota.status, 204);
    let got = http("GET", &format!("{root}_fake/quota"), &[], "")
        .await
        .json();
    assert_eq!(
        got,
        json!({ "per_project": null, "per_user": 2, "window_ms": 60000, "status": 403 })
    );
    let invalid = http(
        "PUT",
        &format!("{root}_fake/quota"),
        &[JSON],
        json!({ "status": 500 }).to_string(),
    )
    .await;
    assert_eq!(invalid.status, 400);
    fay.events().list(&cal).doit().await.expect("1st in window");
    fay.events().list(&cal).doit().await.expect("2nd in window");
    let err = fay
        .events()
        .list(&cal)
        .doit()
        .await
        .expect_err("3rd in window");
    assert_eq!(common::google_error(err).1, "userRateLimitExceeded");
    let max = http(
        "GET",
        &format!("{root}_fake/calls/max-in-window?window_ms=60000&principal=fay@example.edu&exclude_token=true"),
        &[],
        "",
    )
    .await
    .json();
    // Fay's calls within a minute: one before the quota, two admitted, one refused.
    assert_eq!(max["max"], 4);
    assert_eq!(
        http("GET", &format!("{root}_fake/calls/max-in-window"), &[], "")
            .await
            .status,
        400
    );
    assert_eq!(
        http("DELETE", &format!("{root}_fake/quota"), &[], "")
            .await
            .status,
        204
    );
    fay.events()
        .list(&cal)
        .doit()
        .await
        .expect("quota off again");
}
