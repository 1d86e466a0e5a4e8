//! `calsync bench` case `holiday`: one academic-calendar row that flags a whole campus
//! vs. the bare UPDATE of the same users.

use sqlx::PgPool;

use super::{Pair, ROUNDS, Row, timed};

/// A campus-wide holiday (one INSERT into `academic_calendar_events`, published, no
/// classes) flags every student of a Fall 2026 university of `students` (seeded with
/// `calsync_seed::presets::fall_term`) through the statement trigger, vs. the bare
/// UPDATE of exactly those users that any tracking has to do.
pub(super) async fn run(pool: &PgPool, students: i64) -> anyhow::Result<Row> {
    use calsync_seed::presets::{Term, fall_term};
    let seed = fall_term(&Term {
        students: students as u32,
        courses: (students / 20).max(10) as u32,
        email_suffix: "@holiday.bench.edu".into(),
        calendar_prefix: "holiday-bench-".into(),
    });
    seed.insert_with_pool(pool).await?;
    // The preset's own calendar is not what is measured.
    sqlx::query("DELETE FROM academic_calendar_events")
        .execute(pool)
        .await?;
    sqlx::query("VACUUM ANALYZE").execute(pool).await?;
    // Between rounds: no holiday, nobody flagged, nothing pending.
    let reset = || async {
        sqlx::query("DELETE FROM academic_calendar_events")
            .execute(pool)
            .await?;
        calsync_domain::tracking::apply_pending_flags(pool).await?;
        for sql in [
            "UPDATE users SET calendar_needs_sync = false WHERE calendar_needs_sync",
            "VACUUM ANALYZE users",
        ] {
            sqlx::query(sqlx::AssertSqlSafe(sql)).execute(pool).await?;
        }
        super::checkpoint(pool).await;
        Ok::<(), anyhow::Error>(())
    };
    // Mondays in the term, one per round and side.
    let days = [
        "2026-09-14",
        "2026-09-21",
        "2026-09-28",
        "2026-10-05",
        "2026-10-12",
        "2026-10-19",
        "2026-10-26",
        "2026-11-02",
    ];
    let mut days = days.iter();
    let mut pair = Pair::default();
    let mut flagged = 0i64;
    for round in 0..=ROUNDS {
        for calsync in Pair::order(round) {
            reset().await?;
            let day = days.next().expect("enough Mondays");
            let secs = if calsync {
                // The holiday row, then its change folded into the students' flags:
                // everything tracking does to flag them.
                let secs = timed(async {
                    sqlx::query(
                        "INSERT INTO academic_calendar_events (title, category, start_date, end_date, no_classes, publish) \
                         VALUES ('Campus closed', 'holiday', $1::date, $1::date, true, true)",
                    )
                    .bind(day)
                    .execute(pool)
                    .await?;
                    calsync_domain::tracking::apply_pending_flags(pool).await?;
                    Ok(())
                })
                .await?;
                flagged =
                    sqlx::query_scalar("SELECT count(*) FROM users WHERE calendar_needs_sync")
                        .fetch_one(pool)
                        .await?;
                secs
            } else {
                timed(async {
                    sqlx::query(
                        "UPDATE users u SET calendar_needs_sync = true, \
                                calendar_sync_generation = u.calendar_sync_generation + 1, updated_at = now() \
                         FROM (SELECT DISTINCT e.user_id FROM enrollments e JOIN courses c ON c.id = e.course_id \
                               WHERE c.start_date <= $1::date AND c.end_date >= $1::date) t \
                         WHERE u.id = t.user_id",
                    )
                    .bind(day)
                    .execute(pool)
                    .await?;
                    Ok(())
                })
                .await?
            };
            if round > 0 {
                pair.push(calsync, secs); // round 0 warms up
            }
        }
    }
    reset().await?;
    anyhow::ensure!(
        flagged >= students,
        "the holiday flagged {flagged} of {students} students"
    );
    Ok(Row::new(
        "holiday",
        &format!("campus-wide holiday flags {flagged} students"),
        pair,
        "s",
        None,
        "one INSERT into academic_calendar_events through its statement trigger plus folding the \
         logged change into the students' flags vs. a bare UPDATE of exactly the same users"
            .into(),
    ))
}
