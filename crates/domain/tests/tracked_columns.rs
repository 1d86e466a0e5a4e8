//! The change-tracking declaration (`calsync.tracked_columns`) is the one home of
//! "which columns flag students": every column of a tracked table is declared, the
//! triggers are generated from it, the Rust side (tracked tables, snapshot queries)
//! agrees with it, and every tracked column really flags while every untracked one
//! does not.

mod common;

use std::collections::BTreeSet;

use calsync_domain::tracking::{self, Role, TRACKED_TABLES};
use common::{exec, flagged, seed, settle};
use sqlx::{AssertSqlSafe, PgPool, Row};

#[sqlx::test(migrations = false)]
async fn every_column_of_a_tracked_table_is_declared(pool: PgPool) {
    let _ = seed(&pool).await;
    let missing = tracking::undeclared_columns(&pool).await.unwrap();
    assert!(
        missing.is_empty(),
        "columns of tracked tables must be declared in calsync.tracked_columns \
         (role 'tracked' if changing them changes a student's calendar, else 'untracked'), \
         in a new migration: {missing:?}"
    );
    // A column added without a declaration is caught…
    exec(&pool, "ALTER TABLE courses ADD COLUMN syllabus_url text").await;
    assert_eq!(
        tracking::undeclared_columns(&pool).await.unwrap(),
        vec![("courses".to_string(), "syllabus_url".to_string())]
    );
    // …and one declaration row settles it.
    exec(
        &pool,
        "INSERT INTO calsync.tracked_columns VALUES ('courses', 'syllabus_url', 'untracked', 'not shown')",
    )
    .await;
    assert!(
        tracking::undeclared_columns(&pool)
            .await
            .unwrap()
            .is_empty()
    );
}

#[sqlx::test(migrations = false)]
async fn the_declaration_the_triggers_and_the_rust_table_list_agree(pool: PgPool) {
    let _ = seed(&pool).await;
    let declared: BTreeSet<String> = tracking::declared_columns(&pool)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.table_name)
        .collect();
    let rust: BTreeSet<String> = TRACKED_TABLES.iter().map(|t| t.to_string()).collect();
    let triggered: BTreeSet<String> = tracking::tables_with_tracking_triggers(&pool)
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(
        declared, rust,
        "calsync.tracked_columns vs tracking::TRACKED_TABLES"
    );
    assert_eq!(
        triggered, rust,
        "tables with calsync triggers vs tracking::TRACKED_TABLES"
    );
}

#[sqlx::test(migrations = false)]
async fn the_snapshot_reads_only_tracked_columns_and_every_tracked_column_it_can(pool: PgPool) {
    let _ = seed(&pool).await;
    let declared = tracking::declared_columns(&pool).await.unwrap();
    let role = |t: &str, c: &str| {
        declared
            .iter()
            .find(|d| d.table_name == t && d.column_name == c)
            .map(|d| d.role)
    };
    let read = tracking::snapshot_columns(&pool).await.unwrap();
    assert!(read.len() > 20, "{read:?}");
    for (t, c) in &read {
        assert!(
            matches!(role(t, c), Some(Role::Key | Role::Tracked)),
            "the sync snapshot reads {t}.{c}, which is {:?} in calsync.tracked_columns: \
             a change to it would never reach the calendar",
            role(t, c)
        );
    }
    let read_tables: BTreeSet<&str> = read.iter().map(|(t, _)| t.as_str()).collect();
    for d in &declared {
        if d.role == Role::Tracked && read_tables.contains(d.table_name.as_str()) {
            assert!(
                read.contains(&(d.table_name.clone(), d.column_name.clone())),
                "{}.{} is tracked but the sync snapshot never reads it",
                d.table_name,
                d.column_name
            );
        }
    }
}

#[sqlx::test(migrations = false)]
async fn a_new_tracked_column_needs_one_declaration_row(pool: PgPool) {
    let u = seed(&pool).await;
    exec(&pool, "ALTER TABLE courses ADD COLUMN campus text").await;
    exec(
        &pool,
        "INSERT INTO calsync.tracked_columns VALUES ('courses', 'campus', 'tracked', 'event location')",
    )
    .await;
    settle(&pool).await;
    exec(
        &pool,
        &format!("UPDATE courses SET campus = 'North' WHERE id = {}", u.cs101),
    )
    .await;
    assert_eq!(flagged(&pool).await, vec![u.alice, u.bob]);
    // Declared untracked instead: the regenerated trigger ignores it.
    exec(
        &pool,
        "UPDATE calsync.tracked_columns SET role = 'untracked' WHERE table_name = 'courses' AND column_name = 'campus'",
    )
    .await;
    settle(&pool).await;
    exec(
        &pool,
        &format!("UPDATE courses SET campus = 'South' WHERE id = {}", u.cs101),
    )
    .await;
    assert_eq!(flagged(&pool).await, Vec::<i64>::new());
}

#[sqlx::test(migrations = false)]
async fn declaring_a_column_that_does_not_exist_is_refused(pool: PgPool) {
    let _ = seed(&pool).await;
    let err = sqlx::query(
        "INSERT INTO calsync.tracked_columns VALUES ('courses', 'no_such_column', 'tracked', '')",
    )
    .execute(&pool)
    .await
    .unwrap_err();
    assert!(err.to_string().contains("courses.no_such_column"), "{err}");
}

/// A different value of the same type for `column` of the row `key` of `table`.
async fn changed_value(pool: &PgPool, table: &str, column: &str) -> String {
    let row = sqlx::query(
        "SELECT c.data_type::text AS data_type, \
                (SELECT f.relname::text FROM pg_constraint k JOIN pg_class f ON f.oid = k.confrelid \
                 JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = k.conkey[1] \
                 WHERE k.conrelid = to_regclass(c.table_name) AND k.contype = 'f' AND a.attname = c.column_name) AS refs \
         FROM information_schema.columns c \
         WHERE c.table_schema = 'public' AND c.table_name = $1 AND c.column_name = $2",
    )
    .bind(table)
    .bind(column)
    .fetch_one(pool)
    .await
    .unwrap();
    let data_type: String = row.get("data_type");
    let refs: Option<String> = row.get("refs");
    let c = column;
    match (data_type.as_str(), refs) {
        // Another row of the referenced table (the highest other id).
        (_, Some(refs)) => format!("(SELECT max(id) FROM {refs} WHERE id IS DISTINCT FROM t.{c})"),
        ("text", _) if c == "category" => {
            format!("CASE WHEN {c} = 'holiday' THEN 'break' ELSE 'holiday' END")
        }
        ("text", _) if c == "scope" => {
            format!("CASE WHEN {c} = 'class' THEN 'exam' ELSE 'class' END")
        }
        ("text", _) if c == "visibility" => {
            format!("CASE WHEN {c} = 'private' THEN 'public' ELSE 'private' END")
        }
        ("text", _) if c == "transparency" => {
            format!("CASE WHEN {c} = 'transparent' THEN 'opaque' ELSE 'transparent' END")
        }
        ("jsonb", _) => format!(
            "CASE WHEN {c} = '{{\"use_default\": true}}' THEN '{{\"overrides\": []}}'::jsonb \
             ELSE '{{\"use_default\": true}}'::jsonb END"
        ),
        ("text", _) => format!("coalesce({c}, '') || 'x'"),
        // Ends move later and starts earlier, so ranges stay valid.
        ("date", _) if c.starts_with("end") => format!("coalesce({c}, DATE '2026-02-01') + 1"),
        ("date", _) => format!("coalesce({c}, DATE '2026-02-01') - 1"),
        ("time without time zone", _) => format!("{c} + interval '1 minute'"),
        ("timestamp without time zone" | "timestamp with time zone", _) => {
            format!("coalesce({c}, now()) + interval '1 minute'")
        }
        ("boolean", _) => format!("NOT coalesce({c}, false)"),
        ("smallint", _) if c == "day_of_week" => format!("({c} + 1) % 7"),
        ("integer" | "smallint" | "bigint", _) => format!("coalesce({c}, 0) + 1"),
        (other, _) => panic!(
            "{table}.{c} has type {other}: teach changed_value in tests/tracked_columns.rs a new value for it"
        ),
    }
}

/// Driven by the declaration: every tracked column of every registrar table flags
/// somebody when it changes, every untracked one flags nobody. A newly declared column
/// is covered without touching this test. Each change runs in a transaction that is
/// rolled back, so every column starts from the same rows.
#[sqlx::test(migrations = false)]
async fn every_declared_column_behaves_as_declared(pool: PgPool) {
    let u = seed(&pool).await;
    let id = |sql: String| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(AssertSqlSafe(sql))
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    let exam = id(format!(
        "INSERT INTO final_exams (course_id, starts_at, ends_at, room_id, notes) \
         VALUES ({}, '2026-05-04 09:00', '2026-05-04 12:00', {}, 'bring a pencil') RETURNING id",
        u.cs101, u.room_a
    ))
    .await;
    let holiday = id("INSERT INTO academic_calendar_events (title, category, start_date, end_date, no_classes, publish) \
         VALUES ('MLK Day', 'holiday', '2026-01-19', '2026-01-19', true, true) RETURNING id"
        .to_string())
    .await;
    let preference = id(format!(
        "INSERT INTO calendar_preferences (user_id, scope, course_id, title_template, description_template, \
             location_template, color_id, reminders, visibility, transparency) \
         VALUES ({}, 'class', {}, 't', 'd', 'l', 3, '{{\"use_default\": true}}', 'default', 'opaque') RETURNING id",
        u.alice, u.cs101
    ))
    .await;
    let enrollment = id(format!(
        "SELECT id FROM enrollments WHERE user_id = {} AND course_id = {}",
        u.alice, u.cs101
    ))
    .await;
    exec(
        &pool,
        &format!(
            "INSERT INTO google_credentials (user_id, refresh_token, revoked) VALUES ({}, 'rt', true)",
            u.alice
        ),
    )
    .await;
    // The row each table's columns are changed on: one that students see.
    let rows = [
        ("courses", format!("id = {}", u.cs101)),
        ("meeting_times", format!("id = {}", u.mt_cs_mon)),
        ("rooms", format!("id = {}", u.room_a)),
        ("enrollments", format!("id = {enrollment}")),
        ("final_exams", format!("id = {exam}")),
        ("academic_calendar_events", format!("id = {holiday}")),
        ("google_credentials", format!("user_id = {}", u.alice)),
        ("calendar_preferences", format!("id = {preference}")),
    ];
    let declared = tracking::declared_columns(&pool).await.unwrap();
    // Nothing logged before the loop: each change below is judged on its own.
    tracking::apply_pending_flags(&pool).await.unwrap();
    let mut checked = 0;
    for d in &declared {
        // Users' other columns are the sync state itself; they have tests of their own.
        if d.role == Role::Key || d.table_name == "users" {
            continue;
        }
        let Some((_, key)) = rows.iter().find(|(t, _)| *t == d.table_name) else {
            panic!(
                "{} is tracked but this test has no row to change in it: add one",
                d.table_name
            );
        };
        // A generated column changes through its source: the token reference changes
        // when a new refresh token is written.
        let sql = if (d.table_name.as_str(), d.column_name.as_str())
            == ("google_credentials", "refresh_token_ref")
        {
            format!("UPDATE google_credentials AS t SET refresh_token = 'a-new-token' WHERE {key}")
        } else {
            let value = changed_value(&pool, &d.table_name, &d.column_name).await;
            format!(
                "UPDATE {t} AS t SET {c} = {value} WHERE {key}",
                t = d.table_name,
                c = d.column_name
            )
        };
        let mut tx = pool.begin().await.unwrap();
        sqlx::query("UPDATE users SET calendar_needs_sync = false")
            .execute(&mut *tx)
            .await
            .unwrap();
        let changed = sqlx::query(AssertSqlSafe(sql.clone()))
            .execute(&mut *tx)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .rows_affected();
        assert_eq!(changed, 1, "{sql}");
        tracking::apply_pending_flags(&mut *tx).await.unwrap();
        let who: Vec<i64> =
            sqlx::query_scalar("SELECT id FROM users WHERE calendar_needs_sync ORDER BY id")
                .fetch_all(&mut *tx)
                .await
                .unwrap();
        tx.rollback().await.unwrap();
        match d.role {
            Role::Tracked => assert!(
                !who.is_empty(),
                "{}.{} is declared tracked, but changing it flagged nobody ({sql})",
                d.table_name,
                d.column_name
            ),
            Role::Untracked => assert!(
                who.is_empty(),
                "{}.{} is declared untracked, but changing it flagged {who:?} ({sql})",
                d.table_name,
                d.column_name
            ),
            Role::Key => unreachable!(),
        }
        checked += 1;
    }
    assert!(checked >= 50, "only {checked} columns checked");
}
