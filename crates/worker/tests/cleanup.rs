//! Orphan cleanup: a dry run lists exactly what a real run deletes; foreign events are
//! never touched; calendars calsync owns for deleted users, and strays left by a crash,
//! are deleted.

mod support;

use calsync_domain::{credentials, owned_calendars, settings};
use calsync_fake_google::FakeGoogle;
use calsync_worker::{
    backend::{Account, NewCalendar},
    cleanup::Cleaner,
};
use serde_json::json;
use sqlx::PgPool;
use support::*;

fn lines(plan: &[calsync_worker::cleanup::Planned]) -> Vec<String> {
    let mut l: Vec<String> = plan.iter().flat_map(|p| p.describe()).collect();
    l.sort();
    l
}

#[sqlx::test(migrations = false)]
async fn a_replaced_calendar_loses_calsyncs_events_and_keeps_the_students(pool: PgPool) {
    let course = course(&pool).await;
    let fake = FakeGoogle::start().await.unwrap();
    let old = fake.create_calendar("Courses");
    let user = student(&pool, course, "ada@uni.edu", Some(&old)).await;
    fake.add_refresh_token("1//ada");
    credentials::upsert_refresh_token(&pool, user, "1//ada")
        .await
        .unwrap();
    let settings = oauth(&fake, calsync_worker::vault::Vault::default());
    let engine = engine(&pool, &settings).await;
    engine.sync_user(user).await.unwrap();
    let mine = fake.user_insert_event(
        &old,
        json!({"summary": "Dentist", "start": {"dateTime": "2026-02-02T10:00:00Z"}, "end": {"dateTime": "2026-02-02T11:00:00Z"}}),
    );
    let new = fake.create_calendar("Courses 2");
    sqlx::query("UPDATE users SET google_course_calendar_id = $2 WHERE id = $1")
        .bind(user)
        .bind(&new)
        .execute(&pool)
        .await
        .unwrap();
    let cleaner = Cleaner::new(pool.clone(), engine.backend(), None);
    let plan = cleaner.plan().await.unwrap();
    let dry = lines(&plan);
    assert_eq!(dry.len(), 2, "{dry:?}");
    let report = cleaner.run("test").await.unwrap();
    let mut done: Vec<String> = report
        .events_deleted
        .iter()
        .map(|(c, e)| format!("delete event {e} from calendar {c} (user {user})"))
        .collect();
    done.sort();
    assert_eq!(dry, done, "the dry run listed exactly what the run deleted");
    assert!(
        fake.live_events(&old)
            .iter()
            .all(|e| e["id"] == mine.as_str())
    );
    assert!(fake.event(&old, &mine).is_some());
    // Settled: a second pass has nothing to do.
    assert!(cleaner.plan().await.unwrap().is_empty());
    assert_eq!(audit_actions(&pool, "calendar_cleanup").await.len(), 1);
}

#[sqlx::test(migrations = false)]
async fn calendars_calsync_owns_for_deleted_users_and_crash_strays_are_deleted(pool: PgPool) {
    let course = course(&pool).await;
    let fake = FakeGoogle::start().await.unwrap();
    let settings = service_account(&fake, false);
    let engine = engine(&pool, &settings).await;
    let gone = student(&pool, course, "gone@uni.edu", None).await;
    let stays = student(&pool, course, "stays@uni.edu", None).await;
    engine.sync_user(gone).await.unwrap();
    engine.sync_user(stays).await.unwrap();
    let gone_cal = calendar_of(&pool, gone).await.unwrap();
    let stays_cal = calendar_of(&pool, stays).await.unwrap();
    // A calendar created for a user whose sync crashed before recording it, and who
    // was deleted since.
    let ghost = student(&pool, course, "ghost@uni.edu", None).await;
    let installation = settings::installation_id(&pool).await.unwrap();
    let stray = {
        let mut s = engine
            .backend()
            .session(&Account {
                user_id: ghost,
                email: "ghost@uni.edu".into(),
            })
            .await
            .unwrap();
        s.create_calendar(&NewCalendar {
            summary: "Courses".into(),
            description: Some(owned_calendars::marker(&installation, ghost)),
            time_zone: None,
        })
        .await
        .unwrap()
        .id
    };
    sqlx::query("DELETE FROM users WHERE id = ANY($1)")
        .bind(vec![gone, ghost])
        .execute(&pool)
        .await
        .unwrap();
    let cleaner = Cleaner::new(
        pool.clone(),
        engine.backend(),
        calsync_worker::sweep_as(&settings),
    );
    let dry = lines(&cleaner.plan().await.unwrap());
    let mut expected = vec![
        format!("delete calendar {gone_cal} (user {gone})"),
        format!("delete calendar {stray} (user {ghost})"),
    ];
    expected.sort();
    assert_eq!(dry, expected);
    assert!(fake.calendar_exists(&gone_cal), "a dry run deletes nothing");
    let report = cleaner.run("test").await.unwrap();
    let mut deleted: Vec<String> = report.calendars_deleted.clone();
    deleted.sort();
    let mut want = vec![gone_cal.clone(), stray.clone()];
    want.sort();
    assert_eq!(deleted, want);
    assert!(!fake.calendar_exists(&gone_cal));
    assert!(!fake.calendar_exists(&stray));
    assert!(fake.calendar_exists(&stays_cal));
    assert!(cleaner.plan().await.unwrap().is_empty());
}
