//! The change log under concurrency: registrar writes, folds by readers and syncs, and
//! nightly passes (which fold inside their transaction) all at once never deadlock,
//! never lose a change, and leave the log empty once everything is folded.

use std::collections::BTreeSet;

use calsync_domain::{
    queue::{self, RunTrigger},
    tracking,
};
use calsync_seed::{CourseSpec, Seed, StudentSpec, ymd};
use chrono::{Duration, Utc};
use sqlx::PgPool;

const COURSES: usize = 12;
const STUDENTS: usize = 240;
const WRITERS: usize = 3;
const WRITES_PER_WRITER: usize = 15;

/// Students enrolled in two courses each; returns (course ids, students per course).
async fn university(pool: &PgPool) -> (Vec<i64>, Vec<Vec<i64>>) {
    calsync_domain::migrate(pool).await.expect("migrate");
    let mut s = Seed::new();
    let courses: Vec<_> = (0..COURSES)
        .map(|i| {
            s.add_course(
                CourseSpec::new(format!("Course {i}"), "CS", format!("{}", 100 + i))
                    .dates(ymd(2026, 1, 12), ymd(2026, 5, 1)),
            )
        })
        .collect();
    let mut members = vec![Vec::new(); COURSES];
    let mut keys = Vec::new();
    for n in 0..STUDENTS {
        let st =
            s.add_student(StudentSpec::new(format!("s{n}@uni.edu")).calendar(format!("cal-{n}")));
        for c in [n % COURSES, (n * 7 + 3) % COURSES] {
            s.enroll(st, courses[c]);
            members[c].push(keys.len());
        }
        keys.push(st);
    }
    let ids = s.insert_with_pool(pool).await.expect("seed");
    let course_ids = courses.iter().map(|k| ids[*k]).collect();
    let members = members
        .into_iter()
        .map(|m| m.into_iter().map(|i| ids[keys[i]]).collect())
        .collect();
    (course_ids, members)
}

#[sqlx::test(migrations = false)]
async fn writes_folds_and_nightly_passes_at_once_lose_nothing(pool: PgPool) {
    let (courses, members) = university(&pool).await;
    // Everybody synced and unflagged; from here on only the writes below flag anyone.
    tracking::apply_pending_flags(&pool).await.unwrap();
    sqlx::query("UPDATE users SET calendar_needs_sync = false, last_calendar_sync_at = now()")
        .execute(&pool)
        .await
        .unwrap();

    // Writers rename courses (tracked), each statement its own transaction.
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (pool, courses) = (pool.clone(), courses.clone());
        writers.push(tokio::spawn(async move {
            let mut touched = Vec::new();
            for i in 0..WRITES_PER_WRITER {
                let c = (w * 5 + i * 3) % courses.len();
                sqlx::query("UPDATE courses SET title = title || '.' WHERE id = $1")
                    .bind(courses[c])
                    .execute(&pool)
                    .await
                    .expect("tracked write");
                touched.push(c);
                tokio::task::yield_now().await;
            }
            touched
        }));
    }
    // Readers and syncs fold the log while the writes go on.
    let mut folders = Vec::new();
    for _ in 0..2 {
        let pool = pool.clone();
        folders.push(tokio::spawn(async move {
            for _ in 0..WRITES_PER_WRITER {
                tracking::apply_pending_flags(&pool).await.expect("fold");
                tokio::task::yield_now().await;
            }
        }));
    }
    // Nightly passes (one per tick) fold inside their transaction and enqueue.
    let nightly = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let base = Utc::now();
            for k in 0..4 {
                queue::run_nightly_pass(
                    &pool,
                    base + Duration::minutes(k),
                    RunTrigger::Manual,
                    "t",
                )
                .await
                .expect("nightly pass");
                tokio::task::yield_now().await;
            }
        })
    };

    let mut touched = BTreeSet::new();
    for w in writers {
        touched.extend(w.await.unwrap());
    }
    for f in folders {
        f.await.unwrap();
    }
    nightly.await.unwrap();

    // Whatever order things ran in: once the log is folded, every student of every
    // renamed course is flagged, nobody else is, and the log is empty.
    tracking::apply_pending_flags(&pool).await.unwrap();
    let expected: BTreeSet<i64> = touched
        .iter()
        .flat_map(|c| members[*c].iter().copied())
        .collect();
    let flagged: BTreeSet<i64> =
        sqlx::query_scalar::<_, i64>("SELECT id FROM users WHERE calendar_needs_sync")
            .fetch_all(&pool)
            .await
            .unwrap()
            .into_iter()
            .collect();
    assert_eq!(flagged, expected);
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM calsync.pending_flags")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(left, 0);
    // Every flagged student is due, so it has exactly one active job after one more pass.
    queue::run_nightly_pass(
        &pool,
        Utc::now() + Duration::hours(1),
        RunTrigger::Manual,
        "t",
    )
    .await
    .unwrap();
    let with_job: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT calsync.job_user_id(calsync.job_payload(job))) FROM apalis.jobs \
         WHERE job_type = 'sync-calendar' AND status = 'Pending' \
           AND calsync.job_user_id(calsync.job_payload(job)) = ANY($1)",
    )
    .bind(expected.iter().copied().collect::<Vec<_>>())
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(with_job, expected.len() as i64);
}
