//! Calendar and event semantics, driven through the real `google-calendar3` client.

mod common;

use std::collections::BTreeSet;

use common::{google_error, setup, timed_event, with_private};
use google_calendar3::api::{Calendar, Event, EventDateTime};
use serde_json::json;

#[tokio::test]
async fn insert_and_page_through_2600_events() {
    let (fake, hub, cal) = setup().await;
    let mut inserted = BTreeSet::new();
    for i in 0..2600u32 {
        let id = format!("ev{i:05}");
        let (_, event) = hub
            .events()
            .insert(timed_event(Some(&id), 8 + i % 10), &cal)
            .doit()
            .await
            .expect("insert");
        assert_eq!(event.id.as_deref(), Some(id.as_str()));
        assert_eq!(event.status.as_deref(), Some("confirmed"));
        assert_eq!(event.kind.as_deref(), Some("calendar#event"));
        assert_eq!(event.i_cal_uid, Some(format!("{id}@google.com")));
        assert_eq!(event.sequence, Some(0));
        assert!(event.etag.is_some() && event.created.is_some() && event.updated.is_some());
        assert!(event.html_link.is_some());
        inserted.insert(id);
    }
    assert_eq!(fake.write_calls(), 2600);

    // maxResults above 2500 is clamped to 2500.
    let (_, page1) = hub
        .events()
        .list(&cal)
        .max_results(5000)
        .doit()
        .await
        .expect("page 1");
    assert_eq!(page1.kind.as_deref(), Some("calendar#events"));
    let items1 = page1.items.unwrap_or_default();
    assert_eq!(items1.len(), 2500);
    let token = page1.next_page_token.expect("next page token");
    let (_, page2) = hub
        .events()
        .list(&cal)
        .max_results(2500)
        .page_token(&token)
        .doit()
        .await
        .expect("page 2");
    let items2 = page2.items.unwrap_or_default();
    assert_eq!(items2.len(), 100);
    assert!(page2.next_page_token.is_none());
    let listed: Vec<String> = items1
        .iter()
        .chain(items2.iter())
        .filter_map(|e| e.id.clone())
        .collect();
    let listed_set: BTreeSet<String> = listed.iter().cloned().collect();
    assert_eq!(listed.len(), 2600, "no duplicates across pages");
    assert_eq!(listed_set, inserted);

    // Default page size is 250.
    let (_, default_page) = hub.events().list(&cal).doit().await.expect("list");
    assert_eq!(default_page.items.unwrap_or_default().len(), 250);
    assert!(default_page.next_page_token.is_some());
}

#[tokio::test]
async fn generated_ids_are_base32hex() {
    let (fake, hub, cal) = setup().await;
    let (_, event) = hub
        .events()
        .insert(timed_event(None, 9), &cal)
        .doit()
        .await
        .expect("insert");
    let id = event.id.expect("generated id");
    assert!(
        id.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'v').contains(&b))
    );
    assert_eq!(fake.calls()[0].event_id.as_deref(), Some(id.as_str()));
}

#[tokio::test]
async fn private_extended_property_filter() {
    let (_fake, hub, cal) = setup().await;
    let specs = [
        ("aaaaa1", "calsync", "CS 101"),
        ("aaaaa2", "calsync", "MATH=201"),
        ("aaaaa3", "other", "CS 101"),
        ("aaaaa4", "calsync", "CS 101"),
    ];
    for (id, app, course) in specs {
        let event = with_private(
            timed_event(Some(id), 10),
            &[("app", app), ("course", course)],
        );
        hub.events()
            .insert(event, &cal)
            .doit()
            .await
            .expect("insert");
    }
    hub.events()
        .insert(timed_event(Some("aaaaa5"), 11), &cal)
        .doit()
        .await
        .expect("insert");

    let ids = |events: google_calendar3::api::Events| -> Vec<String> {
        events
            .items
            .unwrap_or_default()
            .into_iter()
            .filter_map(|e| e.id)
            .collect()
    };
    let (_, only_app) = hub
        .events()
        .list(&cal)
        .add_private_extended_property("app=calsync")
        .doit()
        .await
        .expect("list");
    assert_eq!(ids(only_app), ["aaaaa1", "aaaaa2", "aaaaa4"]);

    // Several filters must all match; values with spaces and '=' survive encoding.
    let (_, both) = hub
        .events()
        .list(&cal)
        .add_private_extended_property("app=calsync")
        .add_private_extended_property("course=CS 101")
        .doit()
        .await
        .expect("list");
    assert_eq!(ids(both), ["aaaaa1", "aaaaa4"]);
    let (_, with_eq) = hub
        .events()
        .list(&cal)
        .add_private_extended_property("course=MATH=201")
        .doit()
        .await
        .expect("list");
    assert_eq!(ids(with_eq), ["aaaaa2"]);
}

#[tokio::test]
async fn show_deleted_and_get_of_cancelled_event() {
    let (fake, hub, cal) = setup().await;
    for id in ["bbbbb1", "bbbbb2"] {
        hub.events()
            .insert(timed_event(Some(id), 9), &cal)
            .doit()
            .await
            .expect("insert");
    }
    let response = hub
        .events()
        .delete(&cal, "bbbbb1")
        .doit()
        .await
        .expect("delete");
    assert_eq!(response.status().as_u16(), 204);

    let (_, visible) = hub.events().list(&cal).doit().await.expect("list");
    let visible = visible.items.unwrap_or_default();
    assert_eq!(visible.len(), 1);
    assert_eq!(visible[0].id.as_deref(), Some("bbbbb2"));

    let (_, all) = hub
        .events()
        .list(&cal)
        .show_deleted(true)
        .doit()
        .await
        .expect("list");
    let all = all.items.unwrap_or_default();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].status.as_deref(), Some("cancelled"));

    let (_, got) = hub.events().get(&cal, "bbbbb1").doit().await.expect("get");
    assert_eq!(got.status.as_deref(), Some("cancelled"));
    assert_eq!(fake.live_events(&cal).len(), 1);
    assert_eq!(fake.events(&cal).len(), 2);
}

#[tokio::test]
async fn duplicate_ids_including_cancelled_and_restore_by_update() {
    let (fake, hub, cal) = setup().await;
    hub.events()
        .insert(timed_event(Some("ccccc1"), 9), &cal)
        .doit()
        .await
        .expect("insert");

    let err = hub
        .events()
        .insert(timed_event(Some("ccccc1"), 9), &cal)
        .doit()
        .await
        .expect_err("duplicate");
    assert_eq!(
        google_error(err),
        (
            409,
            "duplicate".into(),
            "The requested identifier already exists.".into()
        )
    );

    // The user deletes it in Google's UI: the id stays taken.
    fake.user_delete_event(&cal, "ccccc1");
    let err = hub
        .events()
        .insert(timed_event(Some("ccccc1"), 9), &cal)
        .doit()
        .await
        .expect_err("duplicate of cancelled");
    assert_eq!(google_error(err).0, 409);

    // An update without status leaves it cancelled ...
    let (_, still) = hub
        .events()
        .update(timed_event(None, 10), &cal, "ccccc1")
        .doit()
        .await
        .expect("update");
    assert_eq!(still.status.as_deref(), Some("cancelled"));
    assert_eq!(still.sequence, Some(1));
    // ... and status "confirmed" restores it.
    let mut restore = timed_event(None, 10);
    restore.status = Some("confirmed".into());
    let (_, restored) = hub
        .events()
        .update(restore, &cal, "ccccc1")
        .doit()
        .await
        .expect("update");
    assert_eq!(restored.status.as_deref(), Some("confirmed"));
    assert_eq!(restored.id.as_deref(), Some("ccccc1"));
    assert_eq!(restored.sequence, Some(2));
    assert_eq!(restored.summary.as_deref(), Some("Class at 10"));
    let (_, listed) = hub.events().list(&cal).doit().await.expect("list");
    assert_eq!(listed.items.unwrap_or_default().len(), 1);

    // Update replaces the whole event: fields not sent are gone.
    let mut bare = timed_event(None, 11);
    bare.summary = None;
    bare.status = Some("confirmed".into());
    let (_, replaced) = hub
        .events()
        .update(bare, &cal, "ccccc1")
        .doit()
        .await
        .expect("update");
    assert!(replaced.summary.is_none());
    assert_eq!(replaced.created, restored.created);

    let err = hub
        .events()
        .update(timed_event(None, 9), &cal, "nosuchevent")
        .doit()
        .await
        .expect_err("update of unknown");
    assert_eq!(
        google_error(err),
        (404, "notFound".into(), "Not Found".into())
    );
}

#[tokio::test]
async fn delete_twice_is_410_and_unknown_is_404() {
    let (_fake, hub, cal) = setup().await;
    hub.events()
        .insert(timed_event(Some("ddddd1"), 9), &cal)
        .doit()
        .await
        .expect("insert");
    hub.events()
        .delete(&cal, "ddddd1")
        .doit()
        .await
        .expect("delete");
    let err = hub
        .events()
        .delete(&cal, "ddddd1")
        .doit()
        .await
        .expect_err("second delete");
    assert_eq!(
        google_error(err),
        (410, "deleted".into(), "Resource has been deleted".into())
    );
    let err = hub
        .events()
        .delete(&cal, "ddddd9")
        .doit()
        .await
        .expect_err("unknown");
    assert_eq!(
        google_error(err),
        (404, "notFound".into(), "Not Found".into())
    );
}

#[tokio::test]
async fn patch_merges_top_level_and_replaces_arrays() {
    let (fake, hub, cal) = setup().await;
    let mut event = with_private(timed_event(Some("eeeee1"), 9), &[("app", "calsync")]);
    event.location = Some("Room 1".into());
    event.recurrence = Some(vec![
        "RRULE:FREQ=WEEKLY;BYDAY=MO,WE".into(),
        "EXDATE:20250903T090000Z".into(),
    ]);
    if let Some(start) = event.start.as_mut() {
        start.time_zone = Some("America/New_York".into());
    }
    hub.events()
        .insert(event, &cal)
        .doit()
        .await
        .expect("insert");

    let patch = Event {
        summary: Some("Renamed".into()),
        recurrence: Some(vec!["RRULE:FREQ=WEEKLY;BYDAY=FR".into()]),
        ..Default::default()
    };
    let (_, patched) = hub
        .events()
        .patch(patch, &cal, "eeeee1")
        .doit()
        .await
        .expect("patch");
    assert_eq!(patched.summary.as_deref(), Some("Renamed"));
    assert_eq!(patched.location.as_deref(), Some("Room 1"));
    assert_eq!(
        patched.recurrence,
        Some(vec!["RRULE:FREQ=WEEKLY;BYDAY=FR".to_string()])
    );
    assert_eq!(patched.sequence, Some(1));
    assert_eq!(
        patched
            .extended_properties
            .and_then(|p| p.private)
            .and_then(|p| p.get("app").cloned())
            .as_deref(),
        Some("calsync")
    );

    // A manual edit in the UI is visible to the API but not logged as a call.
    let calls_before = fake.calls().len();
    fake.user_edit_event(&cal, "eeeee1", json!({ "location": "Room 2" }));
    assert_eq!(fake.calls().len(), calls_before);
    let (_, got) = hub.events().get(&cal, "eeeee1").doit().await.expect("get");
    assert_eq!(got.location.as_deref(), Some("Room 2"));
    assert_eq!(got.sequence, Some(2));

    let err = hub
        .events()
        .patch(Event::default(), &cal, "eeeee9")
        .doit()
        .await
        .expect_err("patch of unknown");
    assert_eq!(google_error(err).0, 404);
}

#[tokio::test]
async fn validation_errors() {
    let (fake, hub, cal) = setup().await;
    for bad in ["abcd", "ABCDEF", "abcdw1", "has-dash"] {
        let err = hub
            .events()
            .insert(timed_event(Some(bad), 9), &cal)
            .doit()
            .await
            .expect_err("invalid id");
        assert_eq!(
            google_error(err),
            (400, "invalid".into(), "Invalid resource id value.".into()),
            "id {bad}"
        );
    }

    let mut recurring = timed_event(Some("fffff1"), 9);
    recurring.recurrence = Some(vec!["RRULE:FREQ=WEEKLY;UNTIL=20251215T235959Z".into()]);
    let err = hub
        .events()
        .insert(recurring.clone(), &cal)
        .doit()
        .await
        .expect_err("missing time zone");
    assert_eq!(
        google_error(err),
        (
            400,
            "required".into(),
            "Missing time zone definition for start time.".into()
        )
    );
    if let Some(start) = recurring.start.as_mut() {
        start.time_zone = Some("America/New_York".into());
    }
    hub.events()
        .insert(recurring, &cal)
        .doit()
        .await
        .expect("recurring with tz");

    let mut backwards = timed_event(Some("fffff2"), 12);
    backwards.end = timed_event(None, 9).end;
    let err = hub
        .events()
        .insert(backwards, &cal)
        .doit()
        .await
        .expect_err("end before start");
    assert_eq!(google_error(err).1, "timeRangeEmpty");

    let mut no_end = timed_event(Some("fffff3"), 9);
    no_end.end = None;
    let err = hub
        .events()
        .insert(no_end, &cal)
        .doit()
        .await
        .expect_err("no end");
    assert_eq!(
        google_error(err),
        (400, "required".into(), "Missing end time.".into())
    );

    // All-day events use `date` with an exclusive end.
    let day = |d: u32| EventDateTime {
        date: chrono::NaiveDate::from_ymd_opt(2025, 9, d),
        ..Default::default()
    };
    let all_day = Event {
        id: Some("fffff4".into()),
        start: Some(day(1)),
        end: Some(day(2)),
        ..Default::default()
    };
    hub.events()
        .insert(all_day, &cal)
        .doit()
        .await
        .expect("all-day");
    let empty_day = Event {
        start: Some(day(1)),
        end: Some(day(1)),
        ..Default::default()
    };
    let err = hub
        .events()
        .insert(empty_day, &cal)
        .doit()
        .await
        .expect_err("empty");
    assert_eq!(google_error(err).1, "timeRangeEmpty");

    // Unknown calendar.
    let err = hub
        .events()
        .insert(
            timed_event(Some("fffff5"), 9),
            "c_nope@group.calendar.google.com",
        )
        .doit()
        .await
        .expect_err("unknown calendar");
    assert_eq!(
        google_error(err),
        (404, "notFound".into(), "Not Found".into())
    );

    // Failed writes are logged and counted too.
    assert_eq!(fake.write_calls(), 11);
    let statuses: Vec<u16> = fake.calls().iter().map(|c| c.status).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 2);
}

#[tokio::test]
async fn calendars_insert_get_delete() {
    let (fake, hub, _) = setup().await;
    let (_, created) = hub
        .calendars()
        .insert(Calendar {
            summary: Some("Fall 2025".into()),
            time_zone: Some("America/Chicago".into()),
            ..Default::default()
        })
        .doit()
        .await
        .expect("insert calendar");
    let id = created.id.expect("id");
    assert!(id.starts_with("c_") && id.ends_with("@group.calendar.google.com"));
    assert_eq!(created.time_zone.as_deref(), Some("America/Chicago"));
    assert_eq!(fake.calls()[0].calendar_id.as_deref(), Some(id.as_str()));

    // The raw id (with '@', not percent-encoded by the client) works in paths.
    let (_, got) = hub.calendars().get(&id).doit().await.expect("get calendar");
    assert_eq!(got.summary.as_deref(), Some("Fall 2025"));
    hub.events()
        .insert(timed_event(Some("ggggg1"), 9), &id)
        .doit()
        .await
        .expect("insert");

    let response = hub.calendars().delete(&id).doit().await.expect("delete");
    assert_eq!(response.status().as_u16(), 204);
    let err = hub.calendars().get(&id).doit().await.expect_err("gone");
    assert_eq!(google_error(err).0, 404);

    // The student deletes a calendar in the UI: every call on it is 404.
    let other = fake.create_calendar("Spring");
    fake.delete_calendar(&other);
    let err = hub.events().list(&other).doit().await.expect_err("gone");
    assert_eq!(google_error(err).0, 404);

    let err = hub
        .calendars()
        .insert(Calendar::default())
        .doit()
        .await
        .expect_err("no summary");
    assert_eq!(google_error(err).1, "required");
}
