//! Calendar preferences end to end: real Postgres, the sync engine, and the fake Google
//! Calendar API through the real google-calendar3 client. Colors, reminders,
//! visibility and transparency reach Google; a preference change writes exactly the
//! events whose rendering changed (none when it renders the same); a template that
//! fails — even a hostile one stored with plain SQL — never fails the sync.

mod support;

use std::collections::BTreeMap;

use calsync_domain::preferences::{self, store};
use calsync_fake_google::FakeGoogle;
use calsync_seed::{
    AcademicSpec, CourseSpec, ExamSpec, MeetingSpec, RoomSpec, Seed, StudentSpec, hm, ymd,
};
use calsync_worker::sync::{SyncEngine, SyncReport};
use chrono::Weekday;
use serde_json::{Value, json};
use sqlx::PgPool;

/// Fall 2026: `ana` takes Databases (Mon/Wed 09:00, Smith 101, final exam Dec 14) and
/// Algorithms (Tue 10:00, no room); `ben` takes Databases too. Thanksgiving is a
/// published no-class break. Everything synced once with the built-in look.
struct World {
    fake: FakeGoogle,
    engine: SyncEngine,
    pool: PgPool,
    ana: i64,
    ben: i64,
    databases: i64,
    algorithms: i64,
}

/// The one place that builds the world and the engine (adapt here when the engine's
/// constructor changes).
async fn world(pool: PgPool) -> World {
    calsync_domain::migrate(&pool).await.unwrap();
    let fake = FakeGoogle::start().await.unwrap();
    let engine = support::oauth_engine(&fake, &pool);

    let mut s = Seed::new();
    let smith = s.add_room(RoomSpec::new("Smith", "101"));
    let fall = |s: &mut Seed, title: &str, number: &str| {
        s.add_course(
            CourseSpec::new(title, "CS", number).dates(ymd(2026, 8, 31), ymd(2026, 12, 11)),
        )
    };
    let databases = fall(&mut s, "Databases", "340");
    let algorithms = fall(&mut s, "Algorithms", "350");
    s.add_meeting(MeetingSpec::new(databases, Weekday::Mon, hm(9, 0), hm(9, 50)).room(smith));
    s.add_meeting(MeetingSpec::new(databases, Weekday::Wed, hm(9, 0), hm(9, 50)).room(smith));
    s.add_meeting(MeetingSpec::new(
        algorithms,
        Weekday::Tue,
        hm(10, 0),
        hm(11, 15),
    ));
    s.add_exam(ExamSpec::on(databases, ymd(2026, 12, 14), hm(9, 0), hm(12, 0)).room(smith));
    s.add_academic(
        AcademicSpec::break_days("Thanksgiving break", ymd(2026, 11, 25), ymd(2026, 11, 27))
            .publish(true),
    );
    let ana = s.add_student(StudentSpec::new("ana@uni.edu").calendar("cal-ana"));
    let ben = s.add_student(StudentSpec::new("ben@uni.edu").calendar("cal-ben"));
    s.enroll(ana, databases);
    s.enroll(ana, algorithms);
    s.enroll(ben, databases);
    s.refresh_tokens(|id| format!("rt-{id}"));
    let ids = s.insert_with_pool(&pool).await.unwrap();
    for st in &ids.students {
        fake.create_calendar_with_id(st.calendar_id.as_deref().unwrap(), "Courses");
        fake.add_refresh_token(st.refresh_token.as_deref().unwrap());
    }
    let w = World {
        fake,
        engine,
        pool,
        ana: ids[ana],
        ben: ids[ben],
        databases: ids[databases],
        algorithms: ids[algorithms],
    };
    w.sync(w.ana).await;
    w.sync(w.ben).await;
    w.fake.reset_calls();
    w
}

impl World {
    fn cal(&self, user: i64) -> &'static str {
        if user == self.ana {
            "cal-ana"
        } else {
            "cal-ben"
        }
    }

    async fn sync(&self, user: i64) -> SyncReport {
        let report = self.engine.sync_user(user).await.unwrap();
        assert!(report.cleared, "{report:?}");
        report
    }

    /// Save preferences the way the API and the CLI do.
    async fn put(&self, user: i64, body: Value) {
        let prefs = preferences::parse_preferences(&body).unwrap();
        store::replace(&self.pool, user, &prefs, "test")
            .await
            .unwrap();
    }

    async fn exec(&self, sql: &str) {
        sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
            .execute(&self.pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
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

    /// `user`'s live events by id.
    fn events(&self, user: i64) -> BTreeMap<String, Value> {
        self.fake
            .live_events(self.cal(user))
            .into_iter()
            .map(|e| (e["id"].as_str().unwrap().to_string(), e))
            .collect()
    }

    /// The single event of `user` whose id contains `ns` (`e` exam, `a` academic).
    fn one(&self, user: i64, ns: char) -> Value {
        let evs: Vec<Value> = self
            .events(user)
            .into_iter()
            .filter(|(id, _)| id[2..].contains(ns))
            .map(|(_, e)| e)
            .collect();
        assert_eq!(evs.len(), 1, "{evs:?}");
        evs.into_iter().next().unwrap()
    }

    /// Google writes since the last reset, as (method, event id), sorted.
    fn writes(&self) -> Vec<(String, String)> {
        let mut w: Vec<(String, String)> = self
            .fake
            .calls()
            .into_iter()
            .filter(|c| c.is_write())
            .map(|c| (c.method.clone(), c.event_id.clone().unwrap_or_default()))
            .collect();
        w.sort();
        w
    }

    /// Class event ids of `user` in `course`.
    async fn class_events(&self, user: i64, course: i64) -> Vec<String> {
        let ids: Vec<i64> =
            sqlx::query_scalar("SELECT id FROM meeting_times WHERE course_id = $1 ORDER BY id")
                .bind(course)
                .fetch_all(&self.pool)
                .await
                .unwrap();
        ids.into_iter().map(|id| format!("cs{user}m{id}")).collect()
    }
}

fn updates(ids: &[String]) -> Vec<(String, String)> {
    let mut w: Vec<(String, String)> = ids
        .iter()
        .map(|id| ("events.update".to_string(), id.clone()))
        .collect();
    w.sort();
    w
}

#[sqlx::test(migrations = false)]
async fn colors_reminders_visibility_and_transparency_reach_google(pool: PgPool) {
    let w = world(pool).await;
    w.put(
        w.ana,
        json!({"preferences": [
            {"scope": "class", "color_id": 5, "visibility": "private",
             "reminders": {"overrides": [{"method": "popup", "minutes": 10}]}},
            {"scope": "exam", "color_id": 11, "transparency": "opaque",
             "reminders": {"overrides": [{"method": "popup", "minutes": 1440}, {"method": "email", "minutes": 40320}]}},
            {"scope": "academic", "color_id": 8, "visibility": "public", "reminders": {"overrides": []}},
            {"course_id": w.algorithms, "transparency": "transparent", "reminders": {"use_default": true}}
        ]}),
    )
    .await;
    assert_eq!(w.flagged().await, vec![w.ana], "only ana is flagged");
    let report = w.sync(w.ana).await;
    assert_eq!(report.updated, 5, "{report:?}");

    for id in w.class_events(w.ana, w.databases).await {
        let ev = &w.events(w.ana)[&id];
        assert_eq!(ev["colorId"], "5");
        assert_eq!(ev["visibility"], "private");
        assert_eq!(
            ev["reminders"],
            json!({"useDefault": false, "overrides": [{"method": "popup", "minutes": 10}]})
        );
        assert!(ev.get("transparency").is_none_or(|t| t == "opaque"));
    }
    // The course override beats the kind per field: default reminders, transparent;
    // the kind's color and visibility still apply.
    let algo = &w.events(w.ana)[&w.class_events(w.ana, w.algorithms).await[0]];
    assert_eq!(algo["colorId"], "5");
    assert_eq!(algo["transparency"], "transparent");
    assert_eq!(algo["reminders"], json!({"useDefault": true}));

    let exam = w.one(w.ana, 'e');
    assert_eq!(exam["colorId"], "11");
    assert_eq!(
        exam["reminders"]["overrides"],
        json!([{"method": "popup", "minutes": 1440}, {"method": "email", "minutes": 40320}])
    );
    assert_eq!(exam["reminders"]["useDefault"], false);

    let academic = w.one(w.ana, 'a');
    assert_eq!(academic["colorId"], "8");
    assert_eq!(academic["visibility"], "public");
    assert_eq!(
        academic["transparency"], "transparent",
        "built in for academic days"
    );
    assert_eq!(
        academic["reminders"],
        json!({"useDefault": false, "overrides": []})
    );

    // Ben shares Databases but not the preferences.
    for ev in w.events(w.ben).values() {
        assert!(ev.get("colorId").is_none(), "{ev}");
        assert_eq!(ev["reminders"], json!({"useDefault": true}));
    }

    // Clearing restores the built-in look: colors and overrides are gone.
    store::clear(&w.pool, w.ana, "test").await.unwrap();
    w.sync(w.ana).await;
    for ev in w.events(w.ana).values() {
        assert!(ev.get("colorId").is_none(), "{ev}");
        assert_eq!(ev["reminders"], json!({"useDefault": true}));
        assert!(ev.get("visibility").is_none_or(|v| v == "default"), "{ev}");
    }
}

#[sqlx::test(migrations = false)]
async fn a_preference_that_renders_identically_costs_zero_google_writes(pool: PgPool) {
    let w = world(pool).await;
    let before: BTreeMap<String, Value> = w.events(w.ana);
    w.put(
        w.ana,
        json!([
            {"title_template": "{{ default_title }}", "description_template": "{{ default_description }}",
             "location_template": "{{ default_location }}", "reminders": {"use_default": true},
             "visibility": "default"},
            {"scope": "class", "transparency": "opaque"}
        ]),
    )
    .await;
    assert_eq!(w.flagged().await, vec![w.ana]);
    let report = w.sync(w.ana).await;
    assert_eq!(w.writes(), vec![], "{report:?}");
    assert_eq!(report.unchanged as usize, before.len());
    assert_eq!(w.events(w.ana), before);

    // Saving the same set again flags nobody.
    w.put(
        w.ana,
        json!([
            {"title_template": "{{ default_title }}", "description_template": "{{ default_description }}",
             "location_template": "{{ default_location }}", "reminders": {"use_default": true},
             "visibility": "default"},
            {"scope": "class", "transparency": "opaque"}
        ]),
    )
    .await;
    assert_eq!(w.flagged().await, Vec::<i64>::new());
}

#[sqlx::test(migrations = false)]
async fn a_template_that_renders_differently_per_course_updates_only_those_events(pool: PgPool) {
    let w = world(pool).await;
    // Only Algorithms (no room) renders differently: "TBD" → "online".
    w.put(
        w.ana,
        json!([{"scope": "class",
                "location_template": "{% if room %}{{ building }} {{ room }}{% else %}online{% endif %}",
                "title_template": "{{ course_code }} · {{ course_title }}"}]),
    )
    .await;
    let report = w.sync(w.ana).await;
    // Titles change for every class; exam and academic events are untouched.
    let mut classes = w.class_events(w.ana, w.databases).await;
    classes.extend(w.class_events(w.ana, w.algorithms).await);
    assert_eq!(w.writes(), updates(&classes), "{report:?}");
    let algo = &w.events(w.ana)[&w.class_events(w.ana, w.algorithms).await[0]];
    assert_eq!(algo["summary"], "CS 350-001 · Algorithms");
    assert_eq!(algo["location"], "online");
    let db = &w.events(w.ana)[&w.class_events(w.ana, w.databases).await[0]];
    assert_eq!(db["location"], "Smith 101");

    // Now a change that only renders differently for Algorithms.
    w.fake.reset_calls();
    w.put(
        w.ana,
        json!([{"scope": "class",
                "location_template": "{% if room %}{{ building }} {{ room }}{% else %}Zoom{% endif %}",
                "title_template": "{{ course_code }} · {{ course_title }}"}]),
    )
    .await;
    w.sync(w.ana).await;
    assert_eq!(
        w.writes(),
        updates(&w.class_events(w.ana, w.algorithms).await)
    );
    // A registrar change of the data the template reads re-renders just like before.
    w.fake.reset_calls();
    w.exec(&format!(
        "UPDATE courses SET section_number = '002' WHERE id = {}",
        w.algorithms
    ))
    .await;
    w.sync(w.ana).await;
    assert_eq!(
        w.writes(),
        updates(&w.class_events(w.ana, w.algorithms).await)
    );
    assert_eq!(
        w.events(w.ana)[&w.class_events(w.ana, w.algorithms).await[0]]["summary"],
        "CS 350-002 · Algorithms"
    );
}

/// Templates written with plain SQL skip the API's validation. A broken or hostile one
/// falls back to the built-in text for its field, the sync succeeds, the warning is
/// recorded on the user, and fixing the template clears it.
#[sqlx::test(migrations = false)]
async fn failing_and_hostile_templates_never_fail_a_sync(pool: PgPool) {
    let w = world(pool).await;
    let before = w.events(w.ana);
    let huge_loop = format!(
        "{}{}",
        "{% for a in course_title %}".repeat(6),
        "{% endfor %}".repeat(6)
    );
    let deep = format!(
        "{}x{}",
        "{% for a in \"x\" %}".repeat(40),
        "{% endfor %}".repeat(40)
    );
    w.exec(&format!(
        "INSERT INTO calendar_preferences (user_id, scope, title_template, description_template, location_template, color_id) VALUES \
         ({ana}, 'class', '{{{{ no_such_variable }}}}', '{huge_loop}', '{{{{ ''x'' * 1000000 }}}}', 3), \
         ({ana}, 'exam', '{{% include ''other'' %}}', '{deep}', '{{{{ room', 4)",
        ana = w.ana,
    ))
    .await;
    let started = std::time::Instant::now();
    let report = w.sync(w.ana).await;
    println!("sync with hostile templates: {:?}", started.elapsed());
    assert_eq!(report.updated, 4, "the colors still apply: {report:?}");
    for (id, ev) in w.events(w.ana) {
        if id.contains('a') {
            continue;
        }
        // Texts are the built-in ones; the appearance changed.
        assert_eq!(ev["summary"], before[&id]["summary"], "{id}");
        assert_eq!(ev["description"], before[&id]["description"], "{id}");
        assert_eq!(ev["location"], before[&id]["location"], "{id}");
        assert!(ev["colorId"] == "3" || ev["colorId"] == "4", "{ev}");
    }
    let warnings = store::render_warnings(&w.pool, w.ana).await.unwrap();
    let messages: Vec<String> = warnings
        .iter()
        .map(|w| format!("{} {}: {}", w.preference, w.field, w.message))
        .collect();
    assert_eq!(warnings.len(), 6, "{messages:#?}");
    for needle in [
        "class title: unknown variable `no_such_variable`",
        "class description: needs more work",
        "class location: renders more than 500 characters",
        "exam title: `{% include %}` is not allowed",
        "exam description: fails to render",
        "exam location: syntax error",
    ] {
        assert!(
            messages.iter().any(|m| m.contains(needle)),
            "{needle} not in {messages:#?}"
        );
    }
    // Nothing is flagged by recording warnings.
    assert_eq!(w.flagged().await, Vec::<i64>::new());

    // Fixed through the API: the next sync renders and clears the warnings.
    w.put(
        w.ana,
        json!([{"scope": "class", "title_template": "{{ course_title }}!"}]),
    )
    .await;
    w.sync(w.ana).await;
    assert!(
        store::render_warnings(&w.pool, w.ana)
            .await
            .unwrap()
            .is_empty()
    );
    let db = &w.events(w.ana)[&w.class_events(w.ana, w.databases).await[0]];
    assert_eq!(db["summary"], "Databases!");
}
