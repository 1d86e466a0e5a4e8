//! The academic calendar end to end: real Postgres, the sync engine, and the fake
//! Google Calendar API through the real google-calendar3 client. Cancelled class
//! occurrences (EXDATE lines), final exams and published academic events are
//! inserted, updated, restored and deleted like class events, with zero writes for
//! students a change does not touch.

mod support;

use calsync_fake_google::FakeGoogle;
use calsync_seed::{CourseSpec, MeetingSpec, RoomSpec, Seed, StudentSpec, hm, ymd};
use calsync_worker::sync::{SyncEngine, SyncReport};
use chrono::Weekday;
use serde_json::Value;
use sqlx::PgPool;

/// The sync engine against `fake`, in America/New_York.
fn engine(pool: &PgPool, fake: &FakeGoogle) -> SyncEngine {
    support::oauth_engine(fake, pool)
}

/// Fall 2026 (Mon 2026-08-31 .. Fri 2026-12-11):
/// * `ana` takes Databases (MWF 09:00–09:50, Smith 101) and Algorithms (TR 10:00–11:15);
/// * `ben` takes Night Seminar (Thu 19:00–21:15);
/// * `cy` takes only Summer Statistics (Tue, 2026-06-01 .. 2026-07-31).
struct World {
    fake: FakeGoogle,
    engine: SyncEngine,
    pool: PgPool,
    ana: i64,
    ben: i64,
    cy: i64,
    databases: i64,
    /// Databases' Monday, Wednesday and Friday meeting times.
    db_mon: i64,
    db_wed: i64,
    db_fri: i64,
    algo_tue: i64,
    algo_thu: i64,
    night_thu: i64,
}

async fn world(pool: PgPool) -> World {
    calsync_domain::migrate(&pool).await.unwrap();
    let fake = FakeGoogle::start().await.unwrap();
    let mut s = Seed::new();
    let smith = s.add_room(RoomSpec::new("Smith", "101"));
    let fall = |s: &mut Seed, title: &str, number: &str| {
        s.add_course(
            CourseSpec::new(title, "CS", number).dates(ymd(2026, 8, 31), ymd(2026, 12, 11)),
        )
    };
    let databases = fall(&mut s, "Databases", "340");
    let algorithms = fall(&mut s, "Algorithms", "350");
    let night = fall(&mut s, "Night Seminar", "390");
    let summer = s.add_course(
        CourseSpec::new("Summer Statistics", "ST", "100").dates(ymd(2026, 6, 1), ymd(2026, 7, 31)),
    );
    let mut meet = |course, day, (bh, bm), (eh, em)| {
        s.add_meeting(MeetingSpec::new(course, day, hm(bh, bm), hm(eh, em)).room(smith))
    };
    let db_mon = meet(databases, Weekday::Mon, (9, 0), (9, 50));
    let db_wed = meet(databases, Weekday::Wed, (9, 0), (9, 50));
    let db_fri = meet(databases, Weekday::Fri, (9, 0), (9, 50));
    let algo_tue = meet(algorithms, Weekday::Tue, (10, 0), (11, 15));
    let algo_thu = meet(algorithms, Weekday::Thu, (10, 0), (11, 15));
    let night_thu = meet(night, Weekday::Thu, (19, 0), (21, 15));
    meet(summer, Weekday::Tue, (9, 0), (10, 0));
    let ana = s.add_student(StudentSpec::new("ana@uni.edu").calendar("cal-ana"));
    let ben = s.add_student(StudentSpec::new("ben@uni.edu").calendar("cal-ben"));
    let cy = s.add_student(StudentSpec::new("cy@uni.edu").calendar("cal-cy"));
    s.enroll(ana, databases);
    s.enroll(ana, algorithms);
    s.enroll(ben, night);
    s.enroll(cy, summer);
    s.refresh_tokens(|id| format!("rt-{id}"));
    let ids = s.insert_with_pool(&pool).await.unwrap();
    for st in &ids.students {
        fake.create_calendar_with_id(st.calendar_id.as_deref().unwrap(), "Courses");
        fake.add_refresh_token(st.refresh_token.as_deref().unwrap());
    }
    World {
        engine: engine(&pool, &fake),
        fake,
        pool,
        ana: ids[ana],
        ben: ids[ben],
        cy: ids[cy],
        databases: ids[databases],
        db_mon: ids[db_mon],
        db_wed: ids[db_wed],
        db_fri: ids[db_fri],
        algo_tue: ids[algo_tue],
        algo_thu: ids[algo_thu],
        night_thu: ids[night_thu],
    }
}

impl World {
    fn cal(&self, user: i64) -> String {
        let name = [(self.ana, "ana"), (self.ben, "ben"), (self.cy, "cy")]
            .into_iter()
            .find(|(id, _)| *id == user)
            .unwrap()
            .1;
        format!("cal-{name}")
    }

    async fn sync(&self, user: i64) -> SyncReport {
        let report = self.engine.sync_user(user).await.unwrap();
        assert!(report.cleared, "{report:?}");
        report
    }

    async fn sync_all(&self) {
        for u in [self.ana, self.ben, self.cy] {
            self.sync(u).await;
        }
    }

    async fn exec(&self, sql: &str) {
        sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
            .execute(&self.pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// The event `id` of `user`'s calendar.
    fn event(&self, user: i64, id: &str) -> Value {
        self.fake
            .event(&self.cal(user), id)
            .unwrap_or_else(|| panic!("no event {id} for user {user}"))
    }

    /// The EXDATE lines of `user`'s event for meeting time `mt`.
    fn exdates(&self, user: i64, mt: i64) -> Vec<String> {
        let ev = self.event(user, &format!("cs{user}m{mt}"));
        let lines: Vec<String> = ev["recurrence"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap().to_string())
            .collect();
        assert!(lines[0].starts_with("RRULE:"), "{lines:?}");
        lines[1..].to_vec()
    }

    /// The local start times (`YYYY-MM-DD HH:MM`) of the occurrences Google expands for
    /// `user`'s event of meeting time `mt` on `day` — what the student sees that day.
    fn occurrences_on(&self, user: i64, mt: i64, day: &str) -> Vec<String> {
        self.fake
            .occurrences(&self.cal(user), &format!("cs{user}m{mt}"))
            .into_iter()
            .map(|o| o.local_start.format("%Y-%m-%d %H:%M").to_string())
            .filter(|t| t.starts_with(day))
            .collect()
    }

    /// Google writes made since the last reset, as (method, event id).
    fn writes(&self) -> Vec<(String, String)> {
        self.fake
            .calls()
            .into_iter()
            .filter(|c| c.is_write())
            .map(|c| (c.method.clone(), c.event_id.clone().unwrap_or_default()))
            .collect()
    }
}

fn holiday(title: &str, category: &str, first: &str, last: &str, publish: bool) -> String {
    format!(
        "INSERT INTO academic_calendar_events (title, category, start_date, end_date, no_classes, publish) \
         VALUES ('{title}', '{category}', '{first}', '{last}', true, {publish})"
    )
}

fn exdate(local: &str) -> String {
    format!("EXDATE;TZID=America/New_York:{local}")
}

#[sqlx::test(migrations = false)]
async fn thanksgiving_cancels_wednesday_and_friday_of_mwf_and_thursday_not_tuesday_of_tr(
    pool: PgPool,
) {
    let w = world(pool).await;
    w.exec(&holiday(
        "Thanksgiving break",
        "break",
        "2026-11-25",
        "2026-11-27",
        false,
    ))
    .await;
    w.sync(w.ana).await;
    assert_eq!(w.exdates(w.ana, w.db_mon), Vec::<String>::new());
    assert_eq!(w.exdates(w.ana, w.db_wed), vec![exdate("20261125T090000")]);
    assert_eq!(w.exdates(w.ana, w.db_fri), vec![exdate("20261127T090000")]);
    assert_eq!(
        w.exdates(w.ana, w.algo_tue),
        Vec::<String>::new(),
        "Tuesday stays"
    );
    assert_eq!(
        w.exdates(w.ana, w.algo_thu),
        vec![exdate("20261126T100000")]
    );
    // What Google shows that week (its own expansion of the series).
    assert!(w.occurrences_on(w.ana, w.db_wed, "2026-11-25").is_empty());
    assert!(w.occurrences_on(w.ana, w.db_fri, "2026-11-27").is_empty());
    assert!(w.occurrences_on(w.ana, w.algo_thu, "2026-11-26").is_empty());
    assert_eq!(
        w.occurrences_on(w.ana, w.db_mon, "2026-11-23"),
        vec!["2026-11-23 09:00"]
    );
    assert_eq!(
        w.occurrences_on(w.ana, w.algo_tue, "2026-11-24"),
        vec!["2026-11-24 10:00"],
        "the Tuesday class still happens"
    );
    assert_eq!(
        w.occurrences_on(w.ana, w.db_wed, "2026-12-02"),
        vec!["2026-12-02 09:00"]
    );
    // The series itself is unchanged: first occurrence, zone, RRULE.
    let ev = w.event(w.ana, &format!("cs{}m{}", w.ana, w.db_wed));
    assert_eq!(ev["start"]["dateTime"], "2026-09-02T13:00:00Z");
    assert_eq!(ev["start"]["timeZone"], "America/New_York");
    assert_eq!(
        ev["recurrence"][0],
        "RRULE:FREQ=WEEKLY;BYDAY=WE;UNTIL=20261212T045959Z"
    );
}

#[sqlx::test(migrations = false)]
async fn a_holiday_after_the_november_dst_change_keeps_the_local_time(pool: PgPool) {
    let w = world(pool).await;
    // Clocks fall back on Sunday 2026-11-01. The series starts in EDT (13:00Z); the
    // cancelled Monday is 09:00 EST (14:00Z): the local time is what is written.
    w.exec(&holiday(
        "Election recess",
        "holiday",
        "2026-11-02",
        "2026-11-02",
        false,
    ))
    .await;
    w.sync(w.ana).await;
    let ev = w.event(w.ana, &format!("cs{}m{}", w.ana, w.db_mon));
    assert_eq!(ev["start"]["dateTime"], "2026-08-31T13:00:00Z");
    assert_eq!(w.exdates(w.ana, w.db_mon), vec![exdate("20261102T090000")]);
    assert!(w.occurrences_on(w.ana, w.db_mon, "2026-11-02").is_empty());
    // The Mondays around it keep 09:00 local, before and after the change.
    assert_eq!(
        w.occurrences_on(w.ana, w.db_mon, "2026-10-26"),
        vec!["2026-10-26 09:00"]
    );
    assert_eq!(
        w.occurrences_on(w.ana, w.db_mon, "2026-11-09"),
        vec!["2026-11-09 09:00"]
    );
}

#[sqlx::test(migrations = false)]
async fn an_evening_class_on_a_holiday_is_excluded_by_its_local_date(pool: PgPool) {
    let w = world(pool).await;
    // 19:00 EST on Thursday 2026-11-26 is 00:00Z on Friday 11-27.
    w.exec(&holiday(
        "Thanksgiving",
        "holiday",
        "2026-11-26",
        "2026-11-26",
        false,
    ))
    .await;
    w.sync(w.ben).await;
    assert_eq!(
        w.exdates(w.ben, w.night_thu),
        vec![exdate("20261126T190000")]
    );
    assert!(
        w.occurrences_on(w.ben, w.night_thu, "2026-11-26")
            .is_empty()
    );
    assert_eq!(
        w.occurrences_on(w.ben, w.night_thu, "2026-11-19"),
        vec!["2026-11-19 19:00"]
    );
}

#[sqlx::test(migrations = false)]
async fn a_break_before_the_course_starts_adds_nothing_and_changes_no_event(pool: PgPool) {
    let w = world(pool).await;
    w.sync(w.ana).await;
    w.fake.reset_calls();
    w.exec(&holiday(
        "Orientation week",
        "break",
        "2026-08-24",
        "2026-08-28",
        false,
    ))
    .await;
    let report = w.sync(w.ana).await;
    assert_eq!(w.writes(), Vec::<(String, String)>::new());
    assert_eq!(
        (report.unchanged, report.updated, report.inserted),
        (5, 0, 0)
    );
    assert_eq!(w.exdates(w.ana, w.db_mon), Vec::<String>::new());
}

#[sqlx::test(migrations = false)]
async fn removing_a_holiday_restores_the_occurrence_on_the_next_sync(pool: PgPool) {
    let w = world(pool).await;
    w.exec(&holiday(
        "Labor Day",
        "holiday",
        "2026-09-07",
        "2026-09-07",
        false,
    ))
    .await;
    w.sync(w.ana).await;
    assert_eq!(w.exdates(w.ana, w.db_mon), vec![exdate("20260907T090000")]);
    assert!(w.occurrences_on(w.ana, w.db_mon, "2026-09-07").is_empty());
    w.fake.reset_calls();
    w.exec("DELETE FROM academic_calendar_events").await;
    let report = w.sync(w.ana).await;
    assert_eq!(w.exdates(w.ana, w.db_mon), Vec::<String>::new());
    assert_eq!(
        w.occurrences_on(w.ana, w.db_mon, "2026-09-07"),
        vec!["2026-09-07 09:00"],
        "the Labor Day class is back"
    );
    // Only the Monday event changed: one update, no delete, no re-create.
    assert_eq!(
        w.writes(),
        vec![(
            "events.update".to_string(),
            format!("cs{}m{}", w.ana, w.db_mon)
        )]
    );
    assert_eq!((report.updated, report.unchanged), (1, 4));
}

#[sqlx::test(migrations = false)]
async fn exams_are_inserted_moved_with_one_update_and_deleted(pool: PgPool) {
    let w = world(pool).await;
    // On the course's last day.
    let exam: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "INSERT INTO final_exams (course_id, starts_at, ends_at, room_id, notes) \
         SELECT {}, '2026-12-11 09:00', '2026-12-11 12:00', id, 'closed book' FROM rooms LIMIT 1 RETURNING id",
        w.databases
    )))
    .fetch_one(&w.pool)
    .await
    .unwrap();
    let id = format!("cs{}e{exam}", w.ana);
    let report = w.sync(w.ana).await;
    assert_eq!(report.inserted, 6);
    let ev = w.event(w.ana, &id);
    assert_eq!(ev["summary"], "Final exam: Databases");
    assert_eq!(ev["location"], "Smith 101");
    assert_eq!(ev["start"]["dateTime"], "2026-12-11T14:00:00Z");
    assert_eq!(ev["end"]["dateTime"], "2026-12-11T17:00:00Z");
    assert!(ev.get("recurrence").is_none_or(Value::is_null), "{ev}");
    assert_eq!(
        ev["extendedProperties"]["private"]["calsyncExam"],
        exam.to_string()
    );
    // The class on that day is still there (an exam is not a holiday).
    assert_eq!(w.exdates(w.ana, w.db_fri), Vec::<String>::new());

    // Untracked notes: nothing to do.
    w.exec("UPDATE final_exams SET notes = 'open book'").await;
    w.fake.reset_calls();
    w.sync(w.ana).await;
    assert_eq!(w.writes(), Vec::<(String, String)>::new());

    // Moved: exactly one update of the exam event.
    w.exec("UPDATE final_exams SET starts_at = '2026-12-14 13:00', ends_at = '2026-12-14 16:00', room_id = NULL").await;
    w.fake.reset_calls();
    w.sync(w.ana).await;
    assert_eq!(w.writes(), vec![("events.update".to_string(), id.clone())]);
    let ev = w.event(w.ana, &id);
    assert_eq!(ev["start"]["dateTime"], "2026-12-14T18:00:00Z");
    assert_eq!(ev["location"], "TBD");

    // Deleted: the event goes, nothing else is touched.
    w.exec("DELETE FROM final_exams").await;
    w.fake.reset_calls();
    w.sync(w.ana).await;
    assert_eq!(w.writes(), vec![("events.delete".to_string(), id.clone())]);
    assert!(
        w.fake
            .live_events(&w.cal(w.ana))
            .iter()
            .all(|e| e["id"] != id.as_str())
    );
}

#[sqlx::test(migrations = false)]
async fn a_published_holiday_appears_once_per_student_and_goes_when_unpublished(pool: PgPool) {
    let w = world(pool).await;
    w.sync_all().await;
    w.exec(&holiday(
        "Thanksgiving break",
        "break",
        "2026-11-25",
        "2026-11-27",
        true,
    ))
    .await;
    let row: i64 = sqlx::query_scalar("SELECT id FROM academic_calendar_events")
        .fetch_one(&w.pool)
        .await
        .unwrap();
    w.sync_all().await;
    w.sync_all().await; // a second pass adds nothing
    for user in [w.ana, w.ben] {
        let all_day: Vec<Value> = w
            .fake
            .live_events(&w.cal(user))
            .into_iter()
            .filter(|e| e["start"]["date"].is_string())
            .collect();
        assert_eq!(all_day.len(), 1, "user {user}: {all_day:#?}");
        let ev = &all_day[0];
        assert_eq!(ev["id"], format!("cs{user}a{row}"));
        assert_eq!(ev["summary"], "Thanksgiving break");
        assert_eq!(ev["start"]["date"], "2026-11-25");
        assert_eq!(ev["end"]["date"], "2026-11-28", "exclusive end");
        assert_eq!(ev["transparency"], "transparent");
    }
    // The summer student's course does not overlap it.
    assert!(
        w.fake
            .live_events(&w.cal(w.cy))
            .iter()
            .all(|e| !e["start"]["date"].is_string())
    );

    w.exec("UPDATE academic_calendar_events SET publish = false")
        .await;
    w.fake.reset_calls();
    w.sync(w.ana).await;
    assert_eq!(
        w.writes(),
        vec![("events.delete".to_string(), format!("cs{}a{row}", w.ana))]
    );
    // Classes stay cancelled: no_classes did not change.
    assert_eq!(w.exdates(w.ana, w.db_wed), vec![exdate("20261125T090000")]);
}

#[sqlx::test(migrations = false)]
async fn unchanged_students_get_zero_writes_when_a_holiday_only_affects_other_courses(
    pool: PgPool,
) {
    let w = world(pool).await;
    w.sync_all().await;
    // Tuesday 2026-06-09: only the summer course meets then.
    w.exec(&holiday(
        "Summer recess",
        "holiday",
        "2026-06-09",
        "2026-06-09",
        false,
    ))
    .await;
    calsync_domain::tracking::apply_pending_flags(&w.pool)
        .await
        .unwrap();
    let flagged: Vec<i64> =
        sqlx::query_scalar("SELECT id FROM users WHERE calendar_needs_sync ORDER BY id")
            .fetch_all(&w.pool)
            .await
            .unwrap();
    assert_eq!(flagged, vec![w.cy], "only the summer student is flagged");
    w.fake.reset_calls();
    for user in [w.ana, w.ben] {
        let report = w.sync(user).await;
        assert_eq!(
            report.updated + report.inserted + report.deleted,
            0,
            "{report:?}"
        );
    }
    assert_eq!(w.writes(), Vec::<(String, String)>::new());
    let report = w.sync(w.cy).await;
    assert_eq!(report.updated, 1);
}

#[sqlx::test(migrations = false)]
async fn a_malformed_exclusion_is_skipped_and_never_fails_the_sync(pool: PgPool) {
    let w = world(pool).await;
    // Legacy data written before the constraint existed.
    w.exec("ALTER TABLE academic_calendar_events DROP CONSTRAINT academic_calendar_events_end_date_on_or_after_start_date").await;
    w.exec(&holiday(
        "Backwards",
        "break",
        "2026-11-27",
        "2026-11-25",
        true,
    ))
    .await;
    w.exec(&holiday(
        "Labor Day",
        "holiday",
        "2026-09-07",
        "2026-09-07",
        false,
    ))
    .await;
    let report = w.sync(w.ana).await;
    assert_eq!(report.skipped_meetings, 1, "{report:?}");
    assert_eq!(report.inserted, 5);
    assert_eq!(w.exdates(w.ana, w.db_mon), vec![exdate("20260907T090000")]);
    assert_eq!(w.exdates(w.ana, w.db_wed), Vec::<String>::new());
}
