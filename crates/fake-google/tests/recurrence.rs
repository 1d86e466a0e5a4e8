//! Recurrence lines validated like Google, and events.instances / occurrences expanding
//! recurring events in their own time zone minus EXDATEs — through the real client.

mod common;

use calsync_fake_google::Occurrence;
use chrono::{NaiveDate, NaiveDateTime, TimeZone, Utc};
use common::{google_error, recurring_event, setup, timed_event};
use google_calendar3::api::Event;
use serde_json::json;

const NY: &str = "America/New_York";
/// Fall 2026 term: MWF 09:00-09:50 from Mon 2026-08-31 to Fri 2026-12-11 (inclusive, local).
const MWF: &str = "RRULE:FREQ=WEEKLY;BYDAY=MO,WE,FR;UNTIL=20261212T045959Z";
const TR: &str = "RRULE:FREQ=WEEKLY;BYDAY=TU,TH;UNTIL=20261212T045959Z";

fn local(s: &str) -> NaiveDateTime {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S").expect("local time")
}

fn dates(occurrences: &[Occurrence]) -> Vec<NaiveDate> {
    occurrences.iter().map(Occurrence::local_date).collect()
}

fn day(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).expect("date")
}

#[tokio::test]
async fn malformed_recurrence_lines_are_400_invalid() {
    let (fake, hub, cal) = setup().await;
    let bad = [
        "RRULE:FREQ=WEEKLY;COUNT=3;UNTIL=20261212T045959Z",
        "RRULE:FREQ=BIWEEKLY",
        "RRULE:BYDAY=MO",
        "RRULE:FREQ=WEEKLY;BYDAY=MO,XX",
        "RRULE:FREQ=WEEKLY;UNTIL=2026-12-11",
        "RRULE:FREQ=WEEKLY;COLOR=BLUE",
        "EXDATE;TZID=America/Gotham:20261126T090000",
        "EXDATE;TZID=America/New_York:20261126T090000Z",
        "EXDATE:20261126",
        "EXDATE:2026112T090000",
        "EXDATE:20261126T090000,,20261127T090000",
        "DTSTART;TZID=America/New_York:20260831T090000",
        "RRULE FREQ=WEEKLY",
    ];
    for (i, line) in bad.iter().enumerate() {
        let event = recurring_event(
            &format!("bad{i:03}"),
            NY,
            "2026-08-31T09:00:00",
            50,
            &[MWF, line],
        );
        let err = hub
            .events()
            .insert(event, &cal)
            .doit()
            .await
            .expect_err(line);
        assert_eq!(
            google_error(err),
            (400, "invalid".into(), "Invalid recurrence rule.".into()),
            "{line}"
        );
    }
    assert!(fake.events(&cal).is_empty(), "nothing stored");

    let good = [
        "EXDATE;TZID=America/New_York:20261125T090000,20261127T090000",
        "EXDATE:20261130T140000Z",
        "EXDATE;VALUE=DATE:20261126",
        "RDATE;TZID=America/New_York:20261213T090000",
    ];
    let event = recurring_event(
        "good00001",
        NY,
        "2026-08-31T09:00:00",
        50,
        &[&[MWF][..], &good[..]].concat(),
    );
    hub.events()
        .insert(event, &cal)
        .doit()
        .await
        .expect("valid lines");

    // update and patch are validated the same way; a refused patch changes nothing.
    let mut changed = recurring_event(
        "good00001",
        NY,
        "2026-08-31T09:00:00",
        50,
        &[MWF, "EXRULE:FREQ=DAILY;COUNT=0"],
    );
    let err = hub
        .events()
        .update(changed.clone(), &cal, "good00001")
        .doit()
        .await
        .expect_err("update");
    assert_eq!(google_error(err).1, "invalid");
    changed.recurrence = Some(vec![
        MWF.to_string(),
        "EXDATE;TZID=Nowhere/Land:20261125T090000".to_string(),
    ]);
    let patch = Event {
        recurrence: changed.recurrence.clone(),
        ..Default::default()
    };
    let err = hub
        .events()
        .patch(patch, &cal, "good00001")
        .doit()
        .await
        .expect_err("patch");
    assert_eq!(google_error(err).1, "invalid");
    assert_eq!(
        fake.event(&cal, "good00001").expect("stored")["recurrence"]
            .as_array()
            .map(Vec::len),
        Some(5)
    );

    // A recurring timed event needs start.timeZone.
    let mut no_zone = recurring_event("noutc0001", NY, "2026-08-31T09:00:00", 50, &[MWF]);
    if let Some(start) = no_zone.start.as_mut() {
        start.time_zone = None;
    }
    let err = hub
        .events()
        .insert(no_zone, &cal)
        .doit()
        .await
        .expect_err("no zone");
    assert_eq!(
        google_error(err),
        (
            400,
            "required".into(),
            "Missing time zone definition for start time.".into()
        )
    );
}

#[tokio::test]
async fn thanksgiving_exdates_cancel_wednesday_and_friday_but_not_tuesday() {
    let (fake, hub, cal) = setup().await;
    let thanksgiving_break = "EXDATE;TZID=America/New_York:20261125T090000,20261127T090000";
    let mwf = recurring_event(
        "mofrcls01",
        NY,
        "2026-08-31T09:00:00",
        50,
        &[MWF, thanksgiving_break],
    );
    hub.events().insert(mwf, &cal).doit().await.expect("MWF");
    // The TR class has no exclusion on Tuesday 11/24; its Thanksgiving Thursday is
    // excluded by the UTC form of the EXDATE (11:00 EST = 16:00Z).
    let tr = recurring_event(
        "trclass01",
        NY,
        "2026-09-01T11:00:00",
        75,
        &[TR, "EXDATE:20261126T160000Z"],
    );
    hub.events().insert(tr, &cal).doit().await.expect("TR");

    let mwf = fake.occurrences(&cal, "mofrcls01");
    let mwf_dates = dates(&mwf);
    assert!(
        mwf_dates.contains(&day(2026, 11, 23)),
        "Monday before the break stays"
    );
    assert!(
        !mwf_dates.contains(&day(2026, 11, 25)),
        "Wednesday of the break is gone"
    );
    assert!(
        !mwf_dates.contains(&day(2026, 11, 27)),
        "Friday of the break is gone"
    );
    assert!(mwf_dates.contains(&day(2026, 11, 30)));
    assert_eq!(mwf_dates.first(), Some(&day(2026, 8, 31)));
    assert_eq!(
        mwf_dates.last(),
        Some(&day(2026, 12, 11)),
        "UNTIL is the local end of the last day"
    );
    assert_eq!(mwf.len(), 15 * 3 - 2);
    // Wall clock stays 09:00 across the DST change on 2026-11-01; the instant moves.
    assert!(
        mwf.iter()
            .all(|o| o.local_start.time() == local("2026-01-01T09:00:00").time())
    );
    let after_dst = mwf
        .iter()
        .find(|o| o.local_date() == day(2026, 11, 2))
        .expect("Nov 2");
    assert_eq!(
        after_dst.start_utc,
        Utc.with_ymd_and_hms(2026, 11, 2, 14, 0, 0).unwrap()
    );
    assert_eq!(after_dst.instance_id, "mofrcls01_20261102T140000Z");
    let before_dst = mwf
        .iter()
        .find(|o| o.local_date() == day(2026, 10, 30))
        .expect("Oct 30");
    assert_eq!(
        before_dst.start_utc,
        Utc.with_ymd_and_hms(2026, 10, 30, 13, 0, 0).unwrap()
    );

    let tr_dates = dates(&fake.occurrences(&cal, "trclass01"));
    assert!(tr_dates.contains(&day(2026, 11, 24)), "the Tuesday stays");
    assert!(
        !tr_dates.contains(&day(2026, 11, 26)),
        "Thanksgiving Thursday is gone"
    );

    // events.instances through the real client agrees with the helper, page by page.
    let mut listed = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut call = hub.events().instances(&cal, "mofrcls01").max_results(10);
        if let Some(t) = &token {
            call = call.page_token(t);
        }
        let (_, page) = call.doit().await.expect("instances");
        assert_eq!(page.kind.as_deref(), Some("calendar#events"));
        listed.extend(page.items.unwrap_or_default());
        token = page.next_page_token;
        if token.is_none() {
            break;
        }
    }
    let ids: Vec<String> = listed.iter().filter_map(|e| e.id.clone()).collect();
    let expected: Vec<String> = mwf.iter().map(|o| o.instance_id.clone()).collect();
    assert_eq!(ids, expected);
    let first = &listed[0];
    assert_eq!(first.recurring_event_id.as_deref(), Some("mofrcls01"));
    assert!(first.recurrence.is_none());
    assert_eq!(first.summary.as_deref(), Some("MATH 1750-01"));
    let start = first.start.as_ref().expect("start");
    assert_eq!(
        start.date_time,
        Some(Utc.with_ymd_and_hms(2026, 8, 31, 13, 0, 0).unwrap())
    );
    assert_eq!(start.time_zone.as_deref(), Some(NY));
    let end = first.end.as_ref().and_then(|e| e.date_time).expect("end");
    assert_eq!(end, Utc.with_ymd_and_hms(2026, 8, 31, 13, 50, 0).unwrap());
    assert_eq!(
        first.original_start_time.as_ref().and_then(|o| o.date_time),
        start.date_time
    );
}

#[tokio::test]
async fn instances_filters_and_edge_cases() {
    let (fake, hub, cal) = setup().await;
    // Evening class 19:00-21:15 on Thursdays: a holiday is excluded by its local date even
    // though the class starts on the next UTC day.
    let evening = recurring_event(
        "evening01",
        NY,
        "2026-11-05T19:00:00",
        135,
        &[
            "RRULE:FREQ=WEEKLY;COUNT=4",
            "EXDATE;TZID=America/New_York:20261126T190000",
        ],
    );
    hub.events()
        .insert(evening, &cal)
        .doit()
        .await
        .expect("insert");
    let occ = fake.occurrences(&cal, "evening01");
    assert_eq!(
        dates(&occ),
        [day(2026, 11, 5), day(2026, 11, 12), day(2026, 11, 19)]
    );
    assert_eq!(occ[2].instance_id, "evening01_20261120T000000Z");

    // timeMin (inclusive, on the end) / timeMax (exclusive, on the start).
    let (_, page) = hub
        .events()
        .instances(&cal, "evening01")
        .time_min(Utc.with_ymd_and_hms(2026, 11, 13, 2, 15, 0).unwrap())
        .time_max(Utc.with_ymd_and_hms(2026, 11, 20, 0, 0, 0).unwrap())
        .doit()
        .await
        .expect("window");
    let ids: Vec<String> = page
        .items
        .unwrap_or_default()
        .into_iter()
        .filter_map(|e| e.id)
        .collect();
    assert_eq!(ids, ["evening01_20261113T000000Z"]);
    let err = hub
        .events()
        .instances(&cal, "evening01")
        .time_min(Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap())
        .time_max(Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap())
        .doit()
        .await
        .expect_err("empty range");
    assert_eq!(google_error(err).1, "timeRangeEmpty");

    // originalStart picks one instance; events.get reads it by instance id.
    let (_, page) = hub
        .events()
        .instances(&cal, "evening01")
        .original_start("2026-11-13T00:00:00Z")
        .doit()
        .await
        .expect("originalStart");
    assert_eq!(page.items.map(|i| i.len()), Some(1));
    let (_, instance) = hub
        .events()
        .get(&cal, "evening01_20261120T000000Z")
        .doit()
        .await
        .expect("instance get");
    assert_eq!(instance.recurring_event_id.as_deref(), Some("evening01"));
    for missing in ["evening01_20261127T000000Z", "evening01_nonsense"] {
        let err = hub
            .events()
            .get(&cal, missing)
            .doit()
            .await
            .expect_err(missing);
        assert_eq!(google_error(err).0, 404, "{missing}");
    }
    let err = hub
        .events()
        .delete(&cal, "evening01_20261120T000000Z")
        .doit()
        .await
        .expect_err("single-instance change");
    assert_eq!(google_error(err).1, "unsupportedByFake");

    // A DATE-valued EXDATE on a timed series is accepted and cancels nothing.
    let date_exdate = recurring_event(
        "datecncl1",
        NY,
        "2026-11-05T19:00:00",
        60,
        &["RRULE:FREQ=WEEKLY;COUNT=4", "EXDATE;VALUE=DATE:20261126"],
    );
    hub.events()
        .insert(date_exdate, &cal)
        .doit()
        .await
        .expect("accepted");
    assert_eq!(fake.occurrences(&cal, "datecncl1").len(), 4);

    // A non-recurring event is its own only instance.
    hub.events()
        .insert(timed_event(Some("single001"), 9), &cal)
        .doit()
        .await
        .expect("single");
    let (_, page) = hub
        .events()
        .instances(&cal, "single001")
        .doit()
        .await
        .expect("single");
    let items = page.items.unwrap_or_default();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].id.as_deref(), Some("single001"));

    // A deleted series has only cancelled instances (shown with showDeleted).
    hub.events()
        .delete(&cal, "evening01")
        .doit()
        .await
        .expect("delete");
    let (_, page) = hub
        .events()
        .instances(&cal, "evening01")
        .doit()
        .await
        .expect("after delete");
    assert!(page.items.unwrap_or_default().is_empty());
    let (_, page) = hub
        .events()
        .instances(&cal, "evening01")
        .show_deleted(true)
        .doit()
        .await
        .expect("showDeleted");
    let items = page.items.unwrap_or_default();
    assert_eq!(items.len(), 3);
    assert!(
        items
            .iter()
            .all(|e| e.status.as_deref() == Some("cancelled"))
    );

    let err = hub
        .events()
        .instances(&cal, "nosuchevt")
        .doit()
        .await
        .expect_err("unknown");
    assert_eq!(google_error(err).0, 404);

    // Valid but beyond the fake's expansion: accepted on insert, instances says so.
    let hourly = recurring_event(
        "hours0001",
        NY,
        "2026-11-05T09:00:00",
        30,
        &["RRULE:FREQ=DAILY;BYHOUR=9,15"],
    );
    hub.events()
        .insert(hourly, &cal)
        .doit()
        .await
        .expect("valid rule");
    let err = hub
        .events()
        .instances(&cal, "hours0001")
        .doit()
        .await
        .expect_err("unsupported");
    assert_eq!(google_error(err).1, "unsupportedByFake");
}

#[tokio::test]
async fn all_day_series_and_list_time_window() {
    let (fake, hub, cal) = setup().await;
    let reading_days = json!({
        "id": "readdt001",
        "summary": "Reading day",
        "start": {"date": "2026-12-07"},
        "end": {"date": "2026-12-08"},
        "recurrence": ["RRULE:FREQ=DAILY;COUNT=3", "EXDATE;VALUE=DATE:20261208"],
    });
    fake.user_insert_event(&cal, reading_days);
    let occ = fake.occurrences(&cal, "readdt001");
    assert_eq!(dates(&occ), [day(2026, 12, 7), day(2026, 12, 9)]);
    assert!(occ.iter().all(|o| o.all_day));
    assert_eq!(occ[1].instance_id, "readdt001_20261209");
    let (_, page) = hub
        .events()
        .instances(&cal, "readdt001")
        .doit()
        .await
        .expect("all-day");
    let second = &page.items.unwrap_or_default()[1];
    assert_eq!(
        second.start.as_ref().and_then(|s| s.date),
        Some(day(2026, 12, 9))
    );
    assert_eq!(
        second.end.as_ref().and_then(|s| s.date),
        Some(day(2026, 12, 10))
    );

    // events.list keeps a series while any occurrence ends after timeMin.
    let weekly = recurring_event(
        "seven0001",
        NY,
        "2026-09-01T10:00:00",
        60,
        &["RRULE:FREQ=WEEKLY;COUNT=3"],
    );
    hub.events()
        .insert(weekly, &cal)
        .doit()
        .await
        .expect("insert");
    let listed = |min: chrono::DateTime<Utc>| {
        let hub = &hub;
        let cal = cal.clone();
        async move {
            let (_, list) = hub
                .events()
                .list(&cal)
                .time_min(min)
                .doit()
                .await
                .expect("list");
            list.items
                .unwrap_or_default()
                .into_iter()
                .filter_map(|e| e.id)
                .any(|id| id == "seven0001")
        }
    };
    assert!(listed(Utc.with_ymd_and_hms(2026, 9, 15, 14, 30, 0).unwrap()).await);
    assert!(!listed(Utc.with_ymd_and_hms(2026, 9, 15, 15, 0, 0).unwrap()).await);
}
