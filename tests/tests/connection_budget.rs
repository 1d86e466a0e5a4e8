//! End-to-end: a CLI call on a PostgreSQL server with no free connection waits for one
//! (within its bound) instead of failing without having enqueued anything.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use calsync_e2e::harness::*;
use sqlx::{Connection, PgConnection};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cli_call_waits_for_a_free_connection_instead_of_failing() {
    let cluster = PrivateCluster::start_with(&[("max_connections", "8")]);
    let (url, pool, _db) = fresh_database(&cluster.url()).await;
    let user: i64 = sqlx::query_scalar(
        "INSERT INTO users (email, name, google_course_calendar_id) VALUES ('a@x', 'A', 'cal-a') RETURNING id",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;

    // Take every connection slot the server has.
    let mut held = Vec::new();
    loop {
        match PgConnection::connect(&url).await {
            Ok(conn) => held.push(conn),
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("53300") => break,
            Err(e) => panic!("unexpected error while filling the server: {e}"),
        }
        assert!(held.len() < 20, "max_connections was not applied");
    }

    let out = std::env::temp_dir().join(format!("calsync-budget-{:016x}.out", random_u64()));
    let file = std::fs::File::create(&out).unwrap();
    let mut cli = Command::new(calsync_bin())
        .args(["sync-user", &user.to_string()])
        .env("DATABASE_URL", &url)
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap();
    let output = || std::fs::read_to_string(&out).unwrap_or_default();
    let started = Instant::now();
    wait_until(
        "the CLI says it waits for a connection",
        Duration::from_secs(20),
        || async { output().contains("no free connection") },
    )
    .await;
    // Keep the server full for longer than a pool's acquire timeout (10 s): a call that
    // gives up then has lost its work.
    while started.elapsed() < Duration::from_secs(12) {
        if let Some(status) = cli.try_wait().unwrap() {
            panic!(
                "the CLI gave up ({status}) while the server was full: {}",
                output()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for conn in held {
        conn.close().await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = cli.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "CLI still waiting: {}", output());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let text = output();
    let _ = std::fs::remove_file(&out);
    assert!(status.success(), "{text}");
    assert!(
        text.contains(&format!("enqueued for user {user}")),
        "{text}"
    );
    let mut conn = PgConnection::connect(&url).await.unwrap();
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM apalis.jobs")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(jobs, 1);
}
