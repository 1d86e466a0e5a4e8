//! Calendar preferences against the migrated schema: the CHECKs refuse what Google
//! would refuse (and agree with the Rust validation), every write flags exactly its
//! user, the store replaces sets without needless writes, and the planned events carry
//! the rendered preferences — changed exactly where the rendering changes.

mod common;

use std::collections::BTreeMap;

use calsync_domain::{
    events::{self, DesiredEvent, Reminder, ReminderMethod, Reminders, Transparency, Visibility},
    preferences::{
        self, Preference, PreferenceFields, Scope,
        store::{self, PreferencesError},
        view,
    },
    schedule,
};
use common::{Uni, exec, flagged, seed, settle};
use serde_json::json;
use sqlx::PgPool;

const TZ: chrono_tz::Tz = chrono_tz::America::New_York;

async fn try_exec(pool: &PgPool, sql: &str) -> Result<(), sqlx::Error> {
    sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
        .execute(pool)
        .await
        .map(|_| ())
}

/// Planned events of `user`, by id.
async fn events_of(pool: &PgPool, user: i64) -> BTreeMap<String, DesiredEvent> {
    let snap = schedule::load_snapshot(pool, user).await.unwrap();
    events::plan_events(&snap, TZ)
        .events
        .into_iter()
        .map(|e| (e.id.clone(), e))
        .collect()
}

async fn put(pool: &PgPool, user: i64, body: serde_json::Value) {
    let prefs = preferences::parse_preferences(&body).unwrap();
    store::replace(pool, user, &prefs, "test").await.unwrap();
}

fn fingerprints(evs: &BTreeMap<String, DesiredEvent>) -> BTreeMap<String, String> {
    evs.iter()
        .map(|(id, e)| (id.clone(), e.fingerprint.clone()))
        .collect()
}

/// Ids whose fingerprint differs between two plans.
fn changed(a: &BTreeMap<String, DesiredEvent>, b: &BTreeMap<String, DesiredEvent>) -> Vec<String> {
    let (fa, fb) = (fingerprints(a), fingerprints(b));
    assert_eq!(fa.keys().collect::<Vec<_>>(), fb.keys().collect::<Vec<_>>());
    fa.iter()
        .filter(|(id, f)| fb[*id] != **f)
        .map(|(id, _)| id.clone())
        .collect()
}

fn ev(u: &Uni, user: i64, mt: i64) -> String {
    let _ = u;
    format!("cs{user}m{mt}")
}

#[sqlx::test(migrations = false)]
async fn database_checks_refuse_what_google_would_refuse(pool: PgPool) {
    let u = seed(&pool).await;
    let insert = |cols: &str, vals: &str| {
        format!(
            "INSERT INTO calendar_preferences (user_id, {cols}) VALUES ({}, {vals})",
            u.alice
        )
    };
    let refused = [
        (insert("color_id", "0"), "color_id_is_a_google_event_color"),
        (insert("color_id", "12"), "color_id_is_a_google_event_color"),
        (insert("scope, color_id", "'weekly', 1"), "scope_is_known"),
        (
            insert("visibility", "'confidential'"),
            "visibility_is_known",
        ),
        (insert("transparency", "'busy'"), "transparency_is_known"),
        (
            insert("title_template", &format!("'{}'", "x".repeat(301))),
            "title_template_max_300",
        ),
        (
            insert("location_template", &format!("'{}'", "x".repeat(301))),
            "location_template_max_300",
        ),
        (
            insert("description_template", &format!("'{}'", "x".repeat(2001))),
            "description_template_max_2000",
        ),
        (
            insert(
                "scope, course_id, color_id",
                &format!("'academic', {}, 1", u.cs101),
            ),
            "academic_events_have_no_course",
        ),
        (
            insert("reminders", "'{\"use_default\": true, \"overrides\": []}'"),
            "reminders_are_valid",
        ),
    ];
    for (sql, constraint) in refused {
        let shown: String = sql.chars().take(160).collect();
        let err = try_exec(&pool, &sql).await.expect_err(&shown);
        assert!(
            err.to_string()
                .contains(&format!("calendar_preferences_{constraint}")),
            "{shown}: {err}"
        );
    }
    // One row per scope and course, also for the NULL course.
    exec(&pool, &insert("color_id", "1")).await;
    let err = try_exec(&pool, &insert("color_id", "2")).await.unwrap_err();
    assert!(err.to_string().contains("one_row_per_scope"), "{err}");
    exec(
        &pool,
        &insert("course_id, color_id", &format!("{}, 2", u.cs101)),
    )
    .await;
}

/// The SQL CHECK on `reminders` and the Rust validation accept exactly the same values.
#[sqlx::test(migrations = false)]
async fn reminders_check_and_rust_validation_agree(pool: PgPool) {
    let _ = seed(&pool).await;
    let popup = |m: serde_json::Value| json!({"method": "popup", "minutes": m});
    let cases = vec![
        json!({"use_default": true}),
        json!({"use_default": false}),
        json!({"use_default": true, "overrides": []}),
        json!({"use_default": true, "overrides": [popup(json!(10))]}),
        json!({"use_default": false, "overrides": []}),
        json!({"overrides": []}),
        json!({"overrides": [popup(json!(0)), popup(json!(40320))]}),
        json!({"overrides": [popup(json!(40321))]}),
        json!({"overrides": [popup(json!(-1))]}),
        json!({"overrides": [popup(json!(1.5))]}),
        json!({"overrides": [popup(json!(10.0))]}),
        json!({"overrides": [popup(json!("10"))]}),
        json!({"overrides": [{"method": "sms", "minutes": 1}]}),
        json!({"overrides": [{"method": "email", "minutes": 1, "extra": 1}]}),
        json!({"overrides": [{"minutes": 1}]}),
        json!({"overrides": [1]}),
        json!({"overrides": {"method": "popup", "minutes": 1}}),
        json!({"overrides": (1..=5).map(|m| popup(json!(m))).collect::<Vec<_>>()}),
        json!({"overrides": (1..=6).map(|m| popup(json!(m))).collect::<Vec<_>>()}),
        json!({"use_default": "yes"}),
        json!({"other": true}),
        json!({}),
        json!([]),
        json!("use_default"),
        json!(null),
    ];
    for case in cases {
        let sql: bool = sqlx::query_scalar("SELECT calsync.reminders_are_valid($1)")
            .bind(&case)
            .fetch_one(&pool)
            .await
            .unwrap();
        // (A JSON null here is the jsonb value 'null', not SQL NULL: refused by both.)
        let rust = preferences::reminders_from_json(&case).is_ok();
        assert_eq!(sql, rust, "{case}");
    }
}

#[sqlx::test(migrations = false)]
async fn every_write_flags_exactly_its_user_set_based(pool: PgPool) {
    let u = seed(&pool).await;
    let steps: Vec<(String, Vec<i64>)> = vec![
        (
            format!(
                "INSERT INTO calendar_preferences (user_id, color_id) VALUES ({}, 3), ({}, 4)",
                u.alice, u.bob
            ),
            vec![u.alice, u.bob],
        ),
        (
            format!(
                "UPDATE calendar_preferences SET color_id = 5 WHERE user_id = {}",
                u.alice
            ),
            vec![u.alice],
        ),
        // Bookkeeping columns are declared untracked: nobody.
        (
            "UPDATE calendar_preferences SET updated_at = now() + interval '1 day'".into(),
            vec![],
        ),
        // Setting a value to what it is: nobody.
        (
            "UPDATE calendar_preferences SET color_id = color_id".into(),
            vec![],
        ),
        // Moving a row to another user flags both.
        (
            format!(
                "UPDATE calendar_preferences SET user_id = {} WHERE user_id = {}",
                u.carol, u.alice
            ),
            vec![u.alice, u.carol],
        ),
        (
            format!("DELETE FROM calendar_preferences WHERE user_id = {}", u.bob),
            vec![u.bob],
        ),
        // A course deleted: its overrides go (cascade), their users are flagged (and
        // the course's students by the course trigger).
        (
            format!(
                "INSERT INTO calendar_preferences (user_id, course_id, color_id) VALUES ({}, {}, 1)",
                u.carol, u.cs101
            ),
            vec![u.carol],
        ),
        (
            format!("DELETE FROM courses WHERE id = {}", u.cs101),
            vec![u.alice, u.bob, u.carol],
        ),
    ];
    for (sql, expected) in steps {
        settle(&pool).await;
        exec(&pool, &sql).await;
        assert_eq!(flagged(&pool).await, expected, "{sql}");
    }
}

#[sqlx::test(migrations = false)]
async fn replace_writes_only_what_changes_and_refuses_unknowns(pool: PgPool) {
    let u = seed(&pool).await;
    let body = json!({"preferences": [
        {"title_template": "{{ course_code }} · {{ course_title }}"},
        {"scope": "exam", "color_id": 11},
        {"course_id": u.cs101, "color_id": 5}
    ]});
    put(&pool, u.alice, body.clone()).await;
    assert_eq!(flagged(&pool).await, vec![u.alice]);
    let stored = store::load(&pool, u.alice).await.unwrap();
    let given = preferences::parse_preferences(&body).unwrap();
    assert_eq!(stored.len(), given.len());
    assert!(given.iter().all(|p| stored.contains(p)));
    assert_eq!(
        stored.iter().map(Preference::label).collect::<Vec<_>>(),
        vec!["global", &format!("course {}", u.cs101), "exam"]
    );

    // The same set again: no row written, nobody flagged.
    settle(&pool).await;
    put(&pool, u.alice, body).await;
    assert_eq!(flagged(&pool).await, Vec::<i64>::new());

    // A smaller set deletes the rest.
    put(&pool, u.alice, json!([{"scope": "exam", "color_id": 10}])).await;
    assert_eq!(flagged(&pool).await, vec![u.alice]);
    let stored = store::load(&pool, u.alice).await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].fields.color_id, Some(10));

    // Unknown user, unknown course: refused, nothing lost.
    let prefs =
        preferences::parse_preferences(&json!([{"course_id": 999999, "color_id": 1}])).unwrap();
    match store::replace(&pool, u.alice, &prefs, "test").await {
        Err(PreferencesError::Invalid(errs)) => {
            assert_eq!(errs[0].field, "preferences[0].course_id");
            assert!(errs[0].message.contains("no course 999999"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(store::load(&pool, u.alice).await.unwrap().len(), 1);
    assert!(matches!(
        store::replace(&pool, 999_999, &[], "test").await,
        Err(PreferencesError::UnknownUser(999_999))
    ));
    assert!(matches!(
        store::clear(&pool, 999_999, "test").await,
        Err(PreferencesError::UnknownUser(999_999))
    ));
    settle(&pool).await;
    assert_eq!(store::clear(&pool, u.alice, "test").await.unwrap(), 1);
    assert_eq!(flagged(&pool).await, vec![u.alice]);
}

/// No preferences: the planned events are the built-in ones, fingerprints included.
#[sqlx::test(migrations = false)]
async fn without_preferences_events_are_the_built_in_ones(pool: PgPool) {
    let u = seed(&pool).await;
    let snap = schedule::load_snapshot(&pool, u.bob).await.unwrap();
    assert!(snap.preferences.is_empty());
    let with = events::plan_events(&snap, TZ);
    let without = events::plan_course_events(u.bob, &snap.courses, TZ);
    assert_eq!(with.events, without.events);
    // Preferences that set every field to its built-in value render identically too.
    put(
        &pool,
        u.bob,
        json!([{"title_template": "{{ default_title }}", "description_template": "{{ default_description }}",
                "location_template": "{{ location }}", "reminders": {"use_default": true},
                "visibility": "default", "transparency": "opaque"}]),
    )
    .await;
    let snap = schedule::load_snapshot(&pool, u.bob).await.unwrap();
    assert_eq!(snap.preferences.len(), 1);
    assert_eq!(events::plan_events(&snap, TZ).events, without.events);
}

/// A template that renders differently per course changes only those events; an
/// exam-level color changes only exams; a course override beats both.
#[sqlx::test(migrations = false)]
async fn a_preference_change_changes_exactly_the_events_whose_rendering_changes(pool: PgPool) {
    let u = seed(&pool).await;
    exec(
        &pool,
        &format!(
            "INSERT INTO final_exams (course_id, starts_at, ends_at, room_id) VALUES \
             ({}, '2026-05-04 09:00', '2026-05-04 12:00', {}), ({}, '2026-05-05 14:00', '2026-05-05 16:00', NULL)",
            u.cs101, u.room_a, u.ma201
        ),
    )
    .await;
    let (cs_mon, cs_wed, ma_tue) = (
        ev(&u, u.bob, u.mt_cs_mon),
        ev(&u, u.bob, u.mt_cs_wed),
        ev(&u, u.bob, u.mt_ma_tue),
    );
    let base = events_of(&pool, u.bob).await;
    let exams: Vec<String> = base.keys().filter(|id| id.contains('e')).cloned().collect();
    assert_eq!(exams.len(), 2);

    // A class template that only differs for MA courses.
    put(
        &pool,
        u.bob,
        json!([{"scope": "class", "title_template":
            "{% if subject == 'MA' %}{{ course_code }} · {% endif %}{{ course_title }}"}]),
    )
    .await;
    let step1 = events_of(&pool, u.bob).await;
    assert_eq!(changed(&base, &step1), vec![ma_tue.clone()]);
    assert_eq!(step1[&ma_tue].summary, "MA 201-001 · Linear Algebra");
    assert_eq!(step1[&cs_mon].summary, "Intro to CS");

    // Red exams with a reminder a day before: exams only.
    put(
        &pool,
        u.bob,
        json!([
            {"scope": "class", "title_template":
                "{% if subject == 'MA' %}{{ course_code }} · {% endif %}{{ course_title }}"},
            {"scope": "exam", "color_id": 11, "reminders": {"overrides": [{"method": "popup", "minutes": 1440}]}}
        ]),
    )
    .await;
    let step2 = events_of(&pool, u.bob).await;
    assert_eq!(changed(&step1, &step2), exams);
    for id in &exams {
        let a = &step2[id].appearance;
        assert_eq!(a.color_id, Some(11));
        assert_eq!(
            a.reminders,
            Reminders::Overrides(vec![Reminder {
                method: ReminderMethod::Popup,
                minutes: 1440
            }])
        );
    }

    // A course override for CS 101: its classes and its exam, nothing else.
    let cs_exam = exams
        .iter()
        .find(|id| step2[*id].course_id == Some(u.cs101))
        .unwrap()
        .clone();
    put(
        &pool,
        u.bob,
        json!([
            {"scope": "class", "title_template":
                "{% if subject == 'MA' %}{{ course_code }} · {% endif %}{{ course_title }}"},
            {"scope": "exam", "color_id": 11, "reminders": {"overrides": [{"method": "popup", "minutes": 1440}]}},
            {"course_id": u.cs101, "color_id": 2, "visibility": "private", "transparency": "transparent"}
        ]),
    )
    .await;
    let step3 = events_of(&pool, u.bob).await;
    let mut expected = vec![cs_mon.clone(), cs_wed.clone(), cs_exam.clone()];
    expected.sort();
    assert_eq!(changed(&step2, &step3), expected);
    assert_eq!(
        step3[&cs_exam].appearance.color_id,
        Some(2),
        "course beats kind"
    );
    assert!(
        matches!(
            step3[&cs_exam].appearance.reminders,
            Reminders::Overrides(_)
        ),
        "kind still applies per field"
    );
    assert_eq!(step3[&cs_mon].appearance.visibility, Visibility::Private);
    assert_eq!(
        step3[&cs_mon].appearance.transparency,
        Transparency::Transparent
    );

    // A template change that renders the same: no event changes.
    put(
        &pool,
        u.bob,
        json!([
            {"scope": "class", "title_template":
                "{% if subject != 'MA' %}{{ course_title }}{% else %}{{ course_code }} · {{ course_title }}{% endif %}"},
            {"scope": "exam", "color_id": 11, "reminders": {"overrides": [{"method": "popup", "minutes": 1440}]}},
            {"course_id": u.cs101, "color_id": 2, "visibility": "private", "transparency": "transparent"}
        ]),
    )
    .await;
    assert_eq!(
        changed(&step3, &events_of(&pool, u.bob).await),
        Vec::<String>::new()
    );

    // Alice (CS 101 too) never changed.
    let alice = events_of(&pool, u.alice).await;
    let built_in = events::plan_course_events(
        u.alice,
        &schedule::load_snapshot(&pool, u.alice)
            .await
            .unwrap()
            .courses,
        TZ,
    );
    for e in built_in.events {
        assert_eq!(alice[&e.id].fingerprint, e.fingerprint);
    }
}

/// Variables per kind: exams know their date and time; academic days their title and
/// category; a global template of course variables falls back on academic days.
#[sqlx::test(migrations = false)]
async fn exam_and_academic_variables_render(pool: PgPool) {
    let u = seed(&pool).await;
    exec(
        &pool,
        &format!(
            "INSERT INTO final_exams (course_id, starts_at, ends_at, room_id) VALUES \
             ({}, '2026-05-04 09:00', '2026-05-04 12:00', {})",
            u.cs101, u.room_a
        ),
    )
    .await;
    exec(
        &pool,
        "INSERT INTO academic_calendar_events (title, category, start_date, end_date, no_classes, publish) \
         VALUES ('Spring break', 'break', '2026-03-09', '2026-03-13', true, true)",
    )
    .await;
    put(
        &pool,
        u.alice,
        json!([
            {"title_template": "{{ course_code }}"},
            {"scope": "exam", "title_template": "EXAM {{ course_code }} {{ exam_date }} {{ exam_time }} ({{ day }})",
             "location_template": "{{ building }} / {{ room }}"},
            {"scope": "academic", "description_template": "{{ category }}: {{ event_title }}{% if no_classes %}, no classes{% endif %} ({{ start_date }} to {{ end_date }})"}
        ]),
    )
    .await;
    let evs = events_of(&pool, u.alice).await;
    let exam = evs.values().find(|e| e.id.contains('e')).unwrap();
    assert_eq!(
        exam.summary,
        "EXAM CS 101-001 2026-05-04 09:00–12:00 (Monday)"
    );
    assert_eq!(exam.location, "Smith / 101");
    let class = &evs[&format!("cs{}m{}", u.alice, u.mt_cs_mon)];
    assert_eq!(class.summary, "CS 101-001");
    let academic = evs.values().find(|e| e.id.contains('a')).unwrap();
    // The global title renders empty for an academic day: the built-in title stays.
    assert_eq!(academic.summary, "Spring break");
    assert_eq!(
        academic.description,
        "Break: Spring break, no classes (2026-03-09 to 2026-03-13)"
    );
    // Academic days stay transparent (built in) unless a preference says otherwise.
    assert_eq!(academic.appearance.transparency, Transparency::Transparent);
}

/// A template stored with plain SQL that fails (unknown variable, data-dependent fuel
/// exhaustion) falls back to the built-in text for that field only, with a warning;
/// the rest of the event still renders.
#[sqlx::test(migrations = false)]
async fn render_failures_fall_back_per_field_with_a_warning(pool: PgPool) {
    let u = seed(&pool).await;
    // Passes validation on the sample title ("Calculus I", 10 characters) but not on a
    // long real title: 3 nested loops over it.
    let heavy = "{% for a in course_title %}{% for b in course_title %}{% for c in course_title %}{% endfor %}{% endfor %}{% endfor %}ok";
    assert!(preferences::parse_preferences(&json!([{"description_template": heavy}])).is_ok());
    exec(
        &pool,
        &format!(
            "UPDATE courses SET title = 'Introduction to Computer Science and Programming' WHERE id = {}",
            u.cs101
        ),
    )
    .await;
    exec(
        &pool,
        &format!(
            "INSERT INTO calendar_preferences (user_id, title_template, description_template, location_template, color_id) \
             VALUES ({}, '{{{{ course_titel }}}}', '{heavy}', 'Room {{{{ room }}}}', 6)",
            u.bob
        ),
    )
    .await;
    let snap = schedule::load_snapshot(&pool, u.bob).await.unwrap();
    let plan = events::plan_events(&snap, TZ);
    let cs = plan
        .events
        .iter()
        .find(|e| e.id == ev(&u, u.bob, u.mt_cs_mon))
        .unwrap();
    let ma = plan
        .events
        .iter()
        .find(|e| e.id == ev(&u, u.bob, u.mt_ma_tue))
        .unwrap();
    assert_eq!(
        cs.summary,
        "Introduction to Computer Science and Programming"
    );
    assert_eq!(
        cs.description, "CS-101-001",
        "data-dependent failure: built-in"
    );
    assert_eq!(ma.description, "ok", "short title renders");
    assert_eq!(cs.location, "Room 101");
    assert_eq!(cs.appearance.color_id, Some(6));
    let fields: Vec<(&str, &str)> = plan
        .warnings
        .iter()
        .map(|w| (w.event_id.as_str(), w.field.as_str()))
        .collect();
    assert!(fields.contains(&(cs.id.as_str(), "title")), "{fields:?}");
    assert!(
        fields.contains(&(cs.id.as_str(), "description")),
        "{fields:?}"
    );
    assert!(
        !fields.contains(&(ma.id.as_str(), "description")),
        "{fields:?}"
    );
    assert!(
        plan.warnings[0].message.contains("course_titel"),
        "{:?}",
        plan.warnings
    );

    // Recorded on the user (deduplicated), cleared by a clean plan; untracked.
    settle(&pool).await;
    store::record_render_warnings(&pool, u.bob, &plan.warnings)
        .await
        .unwrap();
    let recorded = store::render_warnings(&pool, u.bob).await.unwrap();
    assert_eq!(
        recorded.len(),
        2,
        "one per template and message: {recorded:?}"
    );
    assert_eq!(flagged(&pool).await, Vec::<i64>::new());
    store::record_render_warnings(&pool, u.bob, &[])
        .await
        .unwrap();
    assert!(
        store::render_warnings(&pool, u.bob)
            .await
            .unwrap()
            .is_empty()
    );
}

#[sqlx::test(migrations = false)]
async fn the_view_shows_effective_values_and_a_preview(pool: PgPool) {
    let u = seed(&pool).await;
    put(
        &pool,
        u.bob,
        json!([
            {"title_template": "{{ course_code }} · {{ course_title }}", "color_id": 1},
            {"scope": "exam", "color_id": 11},
            {"course_id": u.ma201, "color_id": 7}
        ]),
    )
    .await;
    let v = view::user_preferences(&pool, u.bob).await.unwrap();
    assert_eq!(v.rows.len(), 3);
    let field = |kind: usize, name: &str| {
        v.effective[kind]
            .fields
            .iter()
            .find(|f| f.field == name)
            .unwrap()
            .clone()
    };
    assert_eq!(field(0, "color_id").value.as_deref(), Some("1"));
    assert_eq!(field(1, "color_id").value.as_deref(), Some("11"));
    assert_eq!(field(1, "color_id").from.as_deref(), Some("exam"));
    assert_eq!(field(2, "reminders").value, None);
    let ma = v
        .preview
        .events
        .iter()
        .find(|e| e.course_id == Some(u.ma201))
        .unwrap();
    assert_eq!(ma.summary, "MA 201-001 · Linear Algebra");
    assert_eq!(ma.color_id, Some(7));
    assert_eq!(ma.when, "Tuesday 2026-01-13 09:00–10:15, weekly");
    // Preview with an unsaved set.
    let unsaved = vec![Preference {
        scope: Scope::Class,
        course_id: None,
        fields: PreferenceFields {
            title_template: Some("{{ subject }}!".into()),
            ..Default::default()
        },
    }];
    let p = view::preview(&pool, u.bob, Some(unsaved)).await.unwrap();
    assert!(p.events.iter().all(|e| e.summary.ends_with('!')));
    assert!(matches!(
        view::user_preferences(&pool, 999_999).await,
        Err(calsync_domain::DomainError::UnknownUser(999_999))
    ));
}
