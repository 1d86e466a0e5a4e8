//! End-to-end harness: scratch databases, the `calsync` binary as child processes, a
//! private PostgreSQL cluster that tests may restart, and condition polling with deadlines.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use sqlx::{AssertSqlSafe, PgPool, postgres::PgPoolOptions};

pub use crate::commands::{CliRun, ServiceAccountKeyFile, run_calsync, sync_user_and_wait};

/// The base `DATABASE_URL` (set by `scripts/test.sh`).
pub fn base_url() -> String {
    std::env::var("DATABASE_URL").expect(
        "DATABASE_URL must be set: run the tests through scripts/test.sh, which starts PostgreSQL",
    )
}

/// Replace the database name of a postgres URL.
pub fn with_database(url: &str, db: &str) -> String {
    let (head, tail) = match url.find('?') {
        Some(q) => (&url[..q], &url[q..]),
        None => (url, ""),
    };
    let scheme_end = head.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match head[scheme_end..].find('/') {
        Some(slash) => &head[..scheme_end + slash],
        None => head,
    };
    format!("{base}/{db}{tail}")
}

/// A scratch database, dropped (connections and all) when the guard goes out of scope,
/// so test runs against a long-lived server leave nothing behind.
pub struct ScratchDb {
    server_url: String,
    name: String,
}

impl Drop for ScratchDb {
    fn drop(&mut self) {
        let server_url = self.server_url.clone();
        let name = self.name.clone();
        // Drop runs inside the test's runtime: do the async work on a thread of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let admin = PgPoolOptions::new()
                    .max_connections(1)
                    .connect(&server_url)
                    .await
                    .ok()?;
                sqlx::query(AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&admin)
                .await
                .ok()
            })
        })
        .join();
    }
}

/// A fresh, migrated database on the server of `server_url`: its URL, a pool, and the
/// guard that drops it.
pub async fn fresh_database(server_url: &str) -> (String, PgPool, ScratchDb) {
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(server_url)
        .await
        .expect("connect to server");
    let name = format!("calsync_e2e_{:016x}", random_u64());
    sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin)
        .await
        .expect("create database");
    admin.close().await;
    let guard = ScratchDb {
        server_url: server_url.to_string(),
        name: name.clone(),
    };
    let url = with_database(server_url, &name);
    let pool = PgPoolOptions::new()
        .max_connections(10)
        .connect(&url)
        .await
        .expect("connect to scratch database");
    calsync_domain::migrate(&pool).await.expect("migrate");
    (url, pool, guard)
}

/// A random number without pulling in an RNG crate.
pub fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.finish()
}

/// Poll `cond` until it holds or `timeout` passes (then panic with `what`).
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if cond().await {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `calsync` binary built next to this test executable.
pub fn calsync_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join(if cfg!(windows) {
        "calsync.exe"
    } else {
        "calsync"
    });
    assert!(
        bin.exists(),
        "{} is missing: build it first (`cargo build -p calsync-worker`; scripts/test.sh does)",
        bin.display()
    );
    bin
}

/// The credentials key every e2e worker runs with (`CALSYNC_CREDENTIALS_KEYS`: key id
/// `e2e`, 32 bytes of 0x01), as production workers in per-user mode must.
pub const E2E_CREDENTIALS_KEYS: &str = "e2e:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";

/// A `calsync worker` child process. Killed (SIGKILL) on drop.
pub struct WorkerProcess {
    child: Child,
    /// The worker's log file.
    pub log: PathBuf,
}

impl WorkerProcess {
    /// Start `calsync worker` against `db_url` and the fake Google at `fake`.
    pub fn spawn(
        db_url: &str,
        fake: &calsync_fake_google::FakeGoogle,
        name: &str,
        extra: &[&str],
    ) -> WorkerProcess {
        WorkerProcess::spawn_env(db_url, fake, name, extra, &[])
    }

    /// [`WorkerProcess::spawn`] with more environment (set last, so it wins).
    pub fn spawn_env(
        db_url: &str,
        fake: &calsync_fake_google::FakeGoogle,
        name: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> WorkerProcess {
        let log = std::env::temp_dir().join(format!(
            "calsync-e2e-{name}-{:08x}.log",
            random_u64() as u32
        ));
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(calsync_bin())
            .arg("worker")
            .args(extra)
            .env("DATABASE_URL", db_url)
            .env("CALSYNC_GOOGLE_API_BASE_URL", fake.base_url())
            .env("CALSYNC_GOOGLE_API_ROOT_URL", fake.root_url())
            .env("CALSYNC_GOOGLE_TOKEN_URL", fake.token_url())
            .env("CALSYNC_GOOGLE_CLIENT_ID", "e2e-client")
            .env("CALSYNC_GOOGLE_CLIENT_SECRET", "e2e-secret")
            .env("CALSYNC_CREDENTIALS_KEYS", E2E_CREDENTIALS_KEYS)
            // The fake answers in about a millisecond: a quota of 5,000 calls/s keeps it
            // out of the way (and sizes the default concurrency to 8).
            .env("CALSYNC_GOOGLE_PROJECT_QUOTA", "300000")
            .env("CALSYNC_GOOGLE_USER_QUOTA", "300000")
            .env("CALSYNC_GOOGLE_LATENCY_MS", "1")
            .env("CALSYNC_HTTP_LISTEN", "127.0.0.1:0")
            .env("CALSYNC_WORKER_NAME", name)
            .env("CALSYNC_LOG_FORMAT", "pretty")
            .env("RUST_LOG", "info,calsync_worker=debug")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .spawn()
            .expect("spawn calsync worker");
        WorkerProcess { child, log }
    }

    /// SIGKILL, no chance to clean up.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a graceful exit; returns the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            if std::time::Instant::now() > deadline {
                self.kill9();
                panic!(
                    "worker did not exit within {timeout:?} of SIGTERM; log: {}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// What the process is doing right now: every thread's stack (gdb, when installed)
    /// and the end of its log. For the failure message of a test whose worker seems stuck.
    pub fn diagnose(&self) -> String {
        let stacks = Command::new("gdb")
            .args([
                "-p",
                &self.child.id().to_string(),
                "-batch",
                "-ex",
                "thread apply all bt 30",
            ])
            .stdin(Stdio::null())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_else(|e| format!("(no stacks: gdb: {e})"));
        let log = self.log_text();
        let tail: Vec<&str> = log.lines().rev().take(60).collect();
        format!(
            "--- worker stacks ---\n{stacks}\n--- last log lines ({}) ---\n{}",
            self.log.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )
    }

    /// [`wait_until`], but a timeout panics with [`WorkerProcess::diagnose`] and what
    /// the database's sessions are doing.
    pub async fn wait_until<F, Fut>(
        &self,
        pool: &PgPool,
        what: &str,
        timeout: Duration,
        mut cond: F,
    ) where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if cond().await {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                let sessions: Vec<(String, String, String, String)> = sqlx::query_as(
                    "SELECT coalesce(application_name, ''), coalesce(state, ''), \
                            coalesce(wait_event_type || ':' || wait_event, ''), left(coalesce(query, ''), 200) \
                     FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
                )
                .fetch_all(pool)
                .await
                .unwrap_or_default();
                let jobs: Vec<(String, String, Option<String>)> = sqlx::query_as(
                    "SELECT id, status, lock_by FROM apalis.jobs WHERE status NOT IN ('Done') ORDER BY id",
                )
                .fetch_all(pool)
                .await
                .unwrap_or_default();
                panic!(
                    "timed out after {timeout:?} waiting for: {what}\n--- sessions ---\n{sessions:#?}\n--- unfinished jobs ---\n{jobs:#?}\n{}",
                    self.diagnose()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A `calsync dashboard` child process, configured with the fake Google (so its user
/// page offers "Check against Google"). Killed (SIGKILL) on drop.
pub struct DashboardProcess {
    child: Child,
    /// The process' log file.
    pub log: PathBuf,
    /// Where it listens.
    pub addr: std::net::SocketAddr,
}

impl DashboardProcess {
    /// Start `calsync dashboard` against `db_url` and the fake Google at `fake` with
    /// the two tokens, and wait until it accepts connections.
    pub async fn spawn(
        db_url: &str,
        fake: &calsync_fake_google::FakeGoogle,
        admin_token: &str,
        readonly_token: &str,
    ) -> DashboardProcess {
        let log = std::env::temp_dir().join(format!(
            "calsync-e2e-dashboard-{:08x}.log",
            random_u64() as u32
        ));
        let file = std::fs::File::create(&log).expect("log file");
        let addr: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let child = Command::new(calsync_bin())
            .arg("dashboard")
            .env("DATABASE_URL", db_url)
            .env("CALSYNC_DASHBOARD_LISTEN", addr.to_string())
            .env("CALSYNC_DASHBOARD_ADMIN_TOKEN", admin_token)
            .env("CALSYNC_CREDENTIALS_KEYS", E2E_CREDENTIALS_KEYS)
            .env("CALSYNC_DASHBOARD_READONLY_TOKEN", readonly_token)
            .env("CALSYNC_GOOGLE_API_BASE_URL", fake.base_url())
            .env("CALSYNC_GOOGLE_API_ROOT_URL", fake.root_url())
            .env("CALSYNC_GOOGLE_TOKEN_URL", fake.token_url())
            .env("CALSYNC_GOOGLE_CLIENT_ID", "e2e-client")
            .env("CALSYNC_GOOGLE_CLIENT_SECRET", "e2e-secret")
            .env("CALSYNC_GOOGLE_PROJECT_QUOTA", "300000")
            .env("CALSYNC_GOOGLE_USER_QUOTA", "300000")
            .env("CALSYNC_LOG_FORMAT", "pretty")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .spawn()
            .expect("spawn calsync dashboard");
        let mut dashboard = DashboardProcess { child, log, addr };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            if let Ok(Some(status)) = dashboard.child.try_wait() {
                panic!(
                    "calsync dashboard exited ({status}): {}",
                    dashboard.log_text()
                );
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "calsync dashboard did not listen on {addr}: {}",
                    dashboard.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        dashboard
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for DashboardProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Seed `n` students, each enrolled in 2 of 4 courses (2 meeting times each), with a
/// calendar (`e2e-cal-<g>`, g = 1..n) and refresh token (`e2e-rt-<user id>`) registered
/// in the fake. Returns the user ids.
pub async fn seed_university(
    pool: &PgPool,
    fake: &calsync_fake_google::FakeGoogle,
    n: i64,
) -> Vec<i64> {
    seed_university_with(pool, Some(fake), n).await
}

/// [`seed_university`]'s students (`e2e<g>@uni.edu`) without calendars or refresh
/// tokens: what the service-account modes provision for. Returns the user ids.
pub async fn seed_students_without_calendars(pool: &PgPool, n: i64) -> Vec<i64> {
    seed_university_with(pool, None, n).await
}

async fn seed_university_with(
    pool: &PgPool,
    fake: Option<&calsync_fake_google::FakeGoogle>,
    n: i64,
) -> Vec<i64> {
    use calsync_seed::{CourseSpec, MeetingSpec, RoomSpec, Seed, StudentSpec, hm, ymd};
    use chrono::Weekday;
    let mut seed = Seed::new();
    let rooms = [
        seed.add_room(RoomSpec::new("Smith", "101")),
        seed.add_room(RoomSpec::new("Jones", "202")),
    ];
    let courses: Vec<_> = (1..=4u32)
        .map(|g| {
            let course = seed.add_course(
                CourseSpec::new(format!("Course {g}"), "CS", (100 + g).to_string())
                    .dates(ymd(2026, 1, 12), ymd(2026, 5, 1)),
            );
            for day in [Weekday::Mon, Weekday::Wed] {
                seed.add_meeting(
                    MeetingSpec::new(course, day, hm(9 + g, 0), hm(10 + g, 0))
                        .room(rooms[(g % 2) as usize]),
                );
            }
            course
        })
        .collect();
    for g in 1..=n as usize {
        let spec = StudentSpec::new(format!("e2e{g}@uni.edu")).name(format!("Student {g}"));
        let student = seed.add_student(match fake {
            Some(_) => spec.calendar(format!("e2e-cal-{g}")),
            None => spec,
        });
        for k in 0..2 {
            seed.enroll(student, courses[(g + k) % 4]);
        }
    }
    if fake.is_some() {
        seed.refresh_tokens(|id| format!("e2e-rt-{id}"));
    }
    let seeded = seed.insert_with_pool(pool).await.expect("seed");
    let Some(fake) = fake else {
        return seeded.user_ids();
    };
    for student in &seeded.students {
        if let (Some(cal), Some(token)) = (&student.calendar_id, &student.refresh_token) {
            fake.create_calendar_with_id(cal, "Courses");
            fake.add_refresh_token(token);
        }
    }
    seeded.user_ids()
}

/// Count of users still flagged or never synced (changes logged so far folded first).
pub async fn unsynced_users(pool: &PgPool) -> i64 {
    calsync_domain::tracking::apply_pending_flags(pool)
        .await
        .expect("fold pending flags");
    sqlx::query_scalar(
        "SELECT count(*) FROM users WHERE calendar_needs_sync OR last_calendar_sync_at IS NULL",
    )
    .fetch_one(pool)
    .await
    .expect("count")
}

/// A private PostgreSQL cluster (initdb in a temp dir) that a test may stop and restart
/// without disturbing other tests.
pub struct PrivateCluster {
    dir: PathBuf,
    pg_ctl: PathBuf,
    run_as: Option<String>,
    /// Extra server settings (`-c name=value`).
    settings: String,
    /// Port it listens on.
    pub port: u16,
}

fn find_pg_bin(name: &str) -> Option<PathBuf> {
    if let Ok(out) = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
    {
        let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !p.is_empty() {
            return Some(PathBuf::from(p));
        }
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .collect();
    dirs.sort();
    dirs.into_iter()
        .rev()
        .map(|d| d.join(name))
        .find(|p| p.exists())
}

impl PrivateCluster {
    fn cmd(&self, program: &Path) -> Command {
        match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.arg("-u").arg(user).arg("--").arg(program);
                c
            }
            None => Command::new(program),
        }
    }

    /// Create and start a cluster. Panics with install instructions when PostgreSQL's
    /// server binaries are missing.
    pub fn start() -> PrivateCluster {
        PrivateCluster::start_with(&[])
    }

    /// [`PrivateCluster::start`] with server settings, e.g. `[("max_connections", "8")]`.
    pub fn start_with(settings: &[(&str, &str)]) -> PrivateCluster {
        let initdb = find_pg_bin("initdb")
            .expect("initdb not found: install PostgreSQL (apt-get install postgresql)");
        let pg_ctl = find_pg_bin("pg_ctl")
            .expect("pg_ctl not found: install PostgreSQL (apt-get install postgresql)");
        let is_root = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| o.stdout.starts_with(b"0"))
            .unwrap_or(false);
        let run_as = if is_root {
            let user = ["postgres", "calsync-pg"]
                .into_iter()
                .find(|u| Command::new("id").arg(u).output().map(|o| o.status.success()).unwrap_or(false))
                .expect("running as root needs an unprivileged OS user (postgres or calsync-pg) for initdb");
            Some(user.to_string())
        } else {
            None
        };
        let dir = std::env::temp_dir().join(format!("calsync-e2e-pg-{:016x}", random_u64()));
        std::fs::create_dir_all(&dir).expect("cluster dir");
        if let Some(user) = &run_as {
            let _ = Command::new("chown").arg(user).arg(&dir).status();
        }
        let mut cluster = PrivateCluster {
            dir,
            pg_ctl,
            run_as,
            settings: settings
                .iter()
                .map(|(k, v)| format!(" -c {k}={v}"))
                .collect(),
            port: free_port(),
        };
        let data = cluster.dir.join("data");
        let st = cluster
            .cmd(&initdb)
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-locale",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("initdb");
        assert!(st.success(), "initdb failed");
        // A port found free can be taken by someone else before the server binds it:
        // try a few.
        for attempt in 0..5 {
            if attempt > 0 {
                cluster.port = free_port();
            }
            if cluster.try_pg_ctl("start") {
                return cluster;
            }
        }
        panic!(
            "could not start a private PostgreSQL; see {}",
            cluster.dir.join("log").display()
        )
    }

    fn pg_ctl_cmd(&self, action: &str) {
        assert!(
            self.try_pg_ctl(action),
            "pg_ctl {action} failed; see {}",
            self.dir.join("log").display()
        );
    }

    fn try_pg_ctl(&self, action: &str) -> bool {
        self.cmd(&self.pg_ctl)
            .arg("-D")
            .arg(self.dir.join("data"))
            .arg("-l")
            .arg(self.dir.join("log"))
            .args(["-w", "-t", "60", "-m", "fast"])
            .arg("-o")
            .arg(format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100{}",
                self.port,
                self.dir.display(),
                self.settings
            ))
            .arg(action)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// URL of the `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stop the server (fast shutdown: connections are cut).
    pub fn stop(&self) {
        self.pg_ctl_cmd("stop");
    }

    /// Start it again on the same port.
    pub fn start_again(&self) {
        self.pg_ctl_cmd("start");
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let _ = self
            .cmd(&self.pg_ctl)
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A free loopback TCP port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}
