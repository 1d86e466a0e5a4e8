//! `calsync bench` case `tracking`: what change tracking costs registrar writes — a bulk
//! import, and a bulk UPDATE of every course title — with calsync's triggers vs. the
//! same statements with them disabled.

use sqlx::PgPool;

use super::{Goal, Pair, ROUNDS, Row, Samples, checkpoint, timed};

const TABLES: [&str; 3] = ["courses", "meeting_times", "enrollments"];

/// Tracking on or off: every calsync trigger of the registrar tables written here
/// (foreign keys stay enforced: they are internal triggers).
async fn tracking(pool: &PgPool, on: bool) -> anyhow::Result<()> {
    for table in TABLES {
        let verb = if on { "ENABLE" } else { "DISABLE" };
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "ALTER TABLE {table} {verb} TRIGGER USER"
        )))
        .execute(pool)
        .await?;
    }
    Ok(())
}

/// Nobody flagged, nothing pending, tables vacuumed: the same start for every round.
async fn settle(pool: &PgPool) -> anyhow::Result<()> {
    calsync_domain::tracking::apply_pending_flags(pool).await?;
    for sql in [
        "UPDATE users SET calendar_needs_sync = false WHERE calendar_needs_sync",
        "VACUUM ANALYZE users",
        "VACUUM ANALYZE courses",
        "VACUUM ANALYZE meeting_times",
        "VACUUM ANALYZE enrollments",
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql)).execute(pool).await?;
    }
    checkpoint(pool).await;
    Ok(())
}

/// One transaction: `courses` courses, two meeting times each, four enrollments per
/// student.
async fn import(pool: &PgPool, courses: i64) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO courses (title, subject, course_number, section_number, start_date, end_date) \
         SELECT 'Course ' || g, 'BN', g::text, '001', DATE '2026-01-12', DATE '2026-05-01' FROM generate_series(1, $1) g",
    )
    .bind(courses)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO meeting_times (course_id, day_of_week, begin_time, end_time) \
         SELECT c.id, d, TIME '09:00', TIME '10:15' FROM courses c CROSS JOIN (VALUES (1), (3)) v(d)",
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO enrollments (user_id, course_id) \
         SELECT u.id, 1 + ((u.id * 7 + k * 53) % $1) FROM users u CROSS JOIN generate_series(0, 3) k \
         WHERE u.email LIKE 'trk%' ON CONFLICT DO NOTHING",
    )
    .bind(courses)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

async fn clear(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::query("TRUNCATE courses, meeting_times, enrollments RESTART IDENTITY CASCADE")
        .execute(pool)
        .await?;
    Ok(())
}

pub(super) async fn run(pool: &PgPool, courses: i64, students: i64) -> anyhow::Result<Vec<Row>> {
    sqlx::query(
        "INSERT INTO users (email, name, google_course_calendar_id, last_calendar_sync_at) \
         SELECT 'trk' || g || '@bench.edu', 'T' || g, 'cal-' || g, now() FROM generate_series(1, $1) g",
    )
    .bind(students)
    .execute(pool)
    .await?;

    // Bulk import.
    let mut imports = Pair::default();
    for round in 0..=ROUNDS {
        for on in Pair::order(round) {
            tracking(pool, on).await?;
            clear(pool).await?;
            settle(pool).await?;
            let secs = timed(import(pool, courses)).await?;
            if round > 0 {
                imports.push(on, secs); // round 0 warms up
            }
        }
    }
    let enrollments: i64 = sqlx::query_scalar("SELECT count(*) FROM enrollments")
        .fetch_one(pool)
        .await?;

    // Bulk UPDATE of every course title (the data stays imported, tracking toggles).
    let mut updates = Pair::default();
    let mut folds = Samples::default();
    let mut flagged = 0i64;
    for round in 0..=ROUNDS {
        for on in Pair::order(round) {
            tracking(pool, on).await?;
            settle(pool).await?;
            let secs = timed(async {
                sqlx::query("UPDATE courses SET title = 'Course ' || id || ' rev ' || $1")
                    .bind(format!("{round}{on}"))
                    .execute(pool)
                    .await?;
                Ok(())
            })
            .await?;
            if on {
                // What the deferred part costs: folding the logged change into the
                // students' flags (the nightly pass and the sync do it).
                let fold = timed(async {
                    calsync_domain::tracking::apply_pending_flags(pool).await?;
                    Ok(())
                })
                .await?;
                flagged =
                    sqlx::query_scalar("SELECT count(*) FROM users WHERE calendar_needs_sync")
                        .fetch_one(pool)
                        .await?;
                anyhow::ensure!(
                    flagged == students,
                    "the update flagged {flagged} of {students} students"
                );
                if round > 0 {
                    folds.push(fold);
                }
            }
            if round > 0 {
                updates.push(on, secs);
            }
        }
    }
    tracking(pool, true).await?;
    clear(pool).await?;
    settle(pool).await?;
    sqlx::query("DELETE FROM users").execute(pool).await?;
    Ok(vec![
        Row::new(
            "tracking",
            &format!(
                "bulk import: {courses} courses + {} meeting times + {enrollments} enrollments",
                courses * 2
            ),
            imports,
            "s",
            Some(Goal::AtMost(1.3)),
            "one transaction, with calsync's change tracking vs. the same import with its triggers \
             disabled"
                .into(),
        ),
        Row::new(
            "tracking",
            &format!("bulk UPDATE of {courses} course titles, {flagged} students' calendars changed"),
            updates,
            "s",
            Some(Goal::AtMost(2.0)),
            format!(
                "with change tracking vs. triggers disabled; folding the logged change into the \
                 students' flags later (nightly pass, sync) takes {:.3} s (median, {})",
                folds.median(),
                folds.spread()
            ),
        ),
    ])
}
