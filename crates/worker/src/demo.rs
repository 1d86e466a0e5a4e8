//! `calsync demo`: a seeded university against the fake Google Calendar API, a nightly
//! sync run end to end through the real worker, and the dashboard to look at it.

use std::{process::ExitCode, time::Duration};

use anyhow::{Context, bail};
use calsync_domain::queue::RunTrigger;
use calsync_fake_google::FakeGoogle;
use chrono::Utc;
use clap::Parser;
use sqlx::PgPool;

use crate::{
    cli::{Cli, Command, DemoArgs, DemoAuthMode},
    config::{DatabaseConfig, DatabaseUrl},
    database::connect,
    nightly::run_pass,
    runtime::{Runtime, Shutdown, termination_signal},
};

const DEMO_DOMAIN: &str = "@demo.calsync.edu";

/// Concurrent syncs of the demo's worker.
const DEMO_CONCURRENCY: u16 = 32;

/// Run the demo.
pub async fn run(url: DatabaseUrl, args: DemoArgs) -> anyhow::Result<ExitCode> {
    let started = std::time::Instant::now();
    step("connecting to PostgreSQL");
    // One pool for seeding and the in-process worker: the worker's budget.
    let pool = connect(&DatabaseConfig::worker(url.clone(), DEMO_CONCURRENCY, None)).await?;
    step("migrating");
    calsync_domain::migrate(&pool).await?;

    step("starting the fake Google Calendar API");
    let fake = FakeGoogle::start()
        .await
        .context("starting the fake Google API")?;
    println!("    {}", fake.base_url());

    step(&format!(
        "seeding a university: {} students, {} courses",
        args.students, args.courses
    ));
    let service_account = args.auth_mode == DemoAuthMode::ServiceAccount;
    seed(&pool, &fake, args.students, args.courses, service_account).await?;

    let admin_token = format!("demo-{:016x}", rand::random::<u64>());
    let mut argv = vec![
        "calsync".to_string(),
        "worker".into(),
        format!("--concurrency={DEMO_CONCURRENCY}"),
        "--no-cron".into(),
        "--http-listen=127.0.0.1:0".into(),
        format!("--google-api-base-url={}", fake.base_url()),
        format!("--google-api-root-url={}", fake.root_url()),
        format!("--google-token-url={}", fake.token_url()),
        "--google-client-id=demo-client".into(),
        "--google-client-secret=demo-secret".into(),
        "--google-user-quota=6000".into(),
        "--google-project-quota=300000".into(),
        format!("--dashboard-listen={}", args.dashboard_listen),
        format!("--dashboard-admin-token={admin_token}"),
    ];
    if !service_account {
        // Per-user mode stores the students' tokens encrypted, as in production.
        use base64::Engine;
        let key: [u8; 32] = rand::random();
        argv.push(format!(
            "--credentials-keys=demo:{}",
            base64::engine::general_purpose::STANDARD.encode(key)
        ));
    }
    if service_account {
        fake.register_test_service_account();
        argv.push("--google-auth-mode=service-account".into());
        argv.push(format!(
            "--google-service-account-key={}",
            fake.test_service_account_json()
        ));
    }
    let cli = Cli::try_parse_from(argv)?;
    let Command::Worker(worker_args) = cli.command else {
        bail!("internal: demo worker arguments did not parse as a worker command");
    };
    let config = worker_args.into_config(url)?;
    let engine = crate::build_engine(&pool, &config.sync)?;
    crate::announce_calendar_mode(&pool, &config.sync, "demo").await?;
    if service_account {
        println!(
            "    service-account mode: calsync's service account creates each student's calendar and shares it (reader, no e-mail)"
        );
    }
    let (trigger, shutdown) = Shutdown::new();
    step(&format!(
        "starting a worker ({DEMO_CONCURRENCY} concurrent jobs) and the dashboard"
    ));
    let runtime = Runtime {
        pool: pool.clone(),
        engine,
        config,
    }
    .start(shutdown)
    .await?;

    step("running the nightly sync now");
    let run = run_pass(&pool, Utc::now(), RunTrigger::Manual, "demo")
        .await?
        .context("a nightly run for this instant already exists")?;
    println!(
        "    nightly run {}: {} users to sync, {} jobs enqueued",
        run.id, run.users_due, run.enqueued
    );
    let sync_started = std::time::Instant::now();
    let mut last_line = String::new();
    loop {
        let r = calsync_domain::queue::nightly_run(&pool, run.id)
            .await?
            .context("run vanished")?;
        let done = r.succeeded + r.failed;
        let line = progress_line(done, r.enqueued, r.failed);
        if line != last_line {
            println!("    {line}");
            last_line = line;
        }
        if r.finished_at.is_some() || done >= r.enqueued {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = termination_signal() => { trigger.trigger(); let _ = runtime.done.await; return Ok(ExitCode::FAILURE); }
        }
    }
    let secs = sync_started.elapsed().as_secs_f64();
    let counts = calsync_domain::users::counts(&pool).await?;
    let calls = fake.calls();
    let writes = fake.write_calls();
    println!();
    println!(
        "nightly sync finished in {secs:.1} s: {} users synced ({:.0}/s), {} Google API calls ({} writes)",
        run.enqueued,
        run.enqueued as f64 / secs.max(0.001),
        calls.len(),
        writes
    );
    println!(
        "users still due: {}, needs re-auth: {}, calendar missing: {}",
        counts.due, counts.needs_reauth, counts.calendar_missing
    );
    if service_account {
        let count = |m: &str| {
            calls
                .iter()
                .filter(|c| c.method == m && c.status < 300)
                .count()
        };
        println!(
            "calendars provisioned: {} created (calendars.insert) and shared with their student (acl.insert: {}), by {}",
            count("calendars.insert"),
            count("acl.insert"),
            calsync_fake_google::test_keys::SERVICE_ACCOUNT_EMAIL
        );
    }
    let sample = calsync_domain::users::find_by_email(&pool, &format!("student1{DEMO_DOMAIN}"))
        .await?
        .and_then(|u| u.google_course_calendar_id);
    if let Some(cal) = sample {
        print_sample_calendar(&cal, &fake.live_events(&cal));
    }
    println!("total demo time {:.1} s", started.elapsed().as_secs_f64());

    if args.exit_after_sync {
        trigger.trigger();
        let _ = runtime.done.await;
        return Ok(ExitCode::SUCCESS);
    }
    println!();
    println!(
        "dashboard:  http://{}/   (admin token: {admin_token})",
        args.dashboard_listen
    );
    println!(
        "worker API: http://{}/metrics, /healthz, POST /v1/users/<id>/sync",
        runtime.http_addr
    );
    println!("fake Google control API: {}_fake/calls", fake.root_url());
    println!(
        "try: change a course title in psql, then press the dashboard's \"Run now\"; Ctrl-C to stop"
    );
    termination_signal().await;
    trigger.trigger();
    let _ = runtime.done.await;
    Ok(ExitCode::SUCCESS)
}

fn step(what: &str) {
    println!("==> {what}");
}

fn progress_line(done: i32, total: i32, failed: i32) -> String {
    let total = total.max(1);
    let width = 30usize;
    let filled = (done as usize * width) / total as usize;
    format!(
        "[{}{}] {done}/{total} synced{}",
        "#".repeat(filled.min(width)),
        ".".repeat(width - filled.min(width)),
        if failed > 0 {
            format!(", {failed} failed")
        } else {
            String::new()
        }
    )
}

/// Seed the demo university (a Fall 2026 term with its academic calendar and final
/// exams, built by `calsync_seed::presets::fall_term`) and the matching calendars and
/// refresh tokens in the fake. Refuses to touch a database that holds non-demo users.
async fn seed(
    pool: &PgPool,
    fake: &FakeGoogle,
    students: u32,
    courses: u32,
    service_account: bool,
) -> anyhow::Result<()> {
    use calsync_seed::presets::{self, Term, fall_2026};
    let foreign = calsync_seed::reset::users_outside_domain(pool, DEMO_DOMAIN).await?;
    if foreign > 0 {
        bail!(
            "this database holds {foreign} non-demo users; run the demo against an empty database (unset DATABASE_URL to get a throwaway one)"
        );
    }
    let mut seed = presets::fall_term(&Term {
        students,
        courses,
        email_suffix: DEMO_DOMAIN.into(),
        calendar_prefix: "demo-student-".into(),
    });
    seed.refresh_tokens(|id| format!("demo-refresh-{id}"));
    let mut tx = pool.begin().await?;
    calsync_seed::reset::clear_university(&mut tx).await?;
    let seeded = seed.insert(&mut tx).await?;
    if service_account {
        // Students have no calendar yet: the sync provisions one for each.
        calsync_seed::reset::forget_calendars(&mut tx).await?;
    }
    tx.commit().await?;
    for student in seeded.students.iter().filter(|_| !service_account) {
        if let (Some(cal), Some(token)) = (&student.calendar_id, &student.refresh_token) {
            fake.create_calendar_with_id(cal, &format!("Courses (student {})", student.id));
            fake.add_refresh_token(token);
        }
    }
    let (tg_first, tg_last) = fall_2026::thanksgiving();
    let (exam_first, exam_last) = fall_2026::exam_week();
    println!(
        "    {} students, {} courses, {} meeting times, {} enrollments, {} rooms",
        seeded.students.len(),
        seeded.courses.len(),
        seeded.meetings.len(),
        seed.enrollment_count(),
        seeded.rooms.len()
    );
    println!(
        "    Fall 2026 (classes {} to {}): {} academic calendar rows (Labor Day, fall break, Thanksgiving {tg_first} to {tg_last}, \
         reading day, exam week {exam_first} to {exam_last}), {} final exams",
        fall_2026::first_day(),
        fall_2026::last_day_of_classes(),
        seeded.academic.len(),
        seeded.exams.len()
    );
    Ok(())
}

/// Print one student's calendar: counts by kind and a class event with its exclusions.
fn print_sample_calendar(cal: &str, events: &[serde_json::Value]) {
    let property = |e: &serde_json::Value, key: &str| {
        e["extendedProperties"]["private"][key].as_str().is_some()
    };
    let classes = events
        .iter()
        .filter(|e| property(e, "calsyncMeetingTime"))
        .count();
    let exams = events.iter().filter(|e| property(e, "calsyncExam")).count();
    let academic = events
        .iter()
        .filter(|e| property(e, "calsyncAcademic"))
        .count();
    println!(
        "e.g. calendar {cal} now holds {} events: {classes} weekly classes, {exams} final exams, {academic} academic calendar days",
        events.len()
    );
    let lines = |e: &serde_json::Value| -> Vec<String> {
        e["recurrence"]
            .as_array()
            .map(|r| {
                r.iter()
                    .filter_map(|l| l.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let example = events
        .iter()
        .filter(|e| property(e, "calsyncMeetingTime"))
        .max_by_key(|e| lines(e).len());
    if let Some(e) = example {
        println!(
            "  class: {} ({}), first {} ",
            e["summary"].as_str().unwrap_or_default(),
            e["location"].as_str().unwrap_or_default(),
            e["start"]["dateTime"].as_str().unwrap_or_default()
        );
        for line in lines(e) {
            println!("    {line}");
        }
    }
    if let Some(e) = events.iter().find(|e| property(e, "calsyncExam")) {
        println!(
            "  exam:  {} ({}), {} to {}",
            e["summary"].as_str().unwrap_or_default(),
            e["location"].as_str().unwrap_or_default(),
            e["start"]["dateTime"].as_str().unwrap_or_default(),
            e["end"]["dateTime"].as_str().unwrap_or_default()
        );
    }
    for e in events.iter().filter(|e| property(e, "calsyncAcademic")) {
        println!(
            "  all day: {} ({}), {} to {} (exclusive)",
            e["summary"].as_str().unwrap_or_default(),
            e["description"].as_str().unwrap_or_default(),
            e["start"]["date"].as_str().unwrap_or_default(),
            e["end"]["date"].as_str().unwrap_or_default()
        );
    }
}
