//! One-shot `calsync` commands run as processes ([`run_calsync`]) and the files they
//! read ([`ServiceAccountKeyFile`]). Re-exported by [`crate::harness`].

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
};

use crate::harness::{E2E_CREDENTIALS_KEYS, calsync_bin, random_u64};

/// What a finished `calsync` command printed.
#[derive(Debug)]
pub struct CliRun {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// `calsync sync-user USER --wait --timeout-secs 60` against `db_url` (no Google
/// settings: the workers sync), waited for up to a minute.
pub fn sync_user_and_wait(db_url: &str, user: i64) -> CliRun {
    run_calsync(
        db_url,
        None,
        &[
            "sync-user",
            &user.to_string(),
            "--wait",
            "--timeout-secs",
            "60",
        ],
        &[],
        Duration::from_secs(60),
    )
}

/// Run `calsync args…` to completion against `db_url` (and the fake's URLs when given),
/// output piped, with [`E2E_CREDENTIALS_KEYS`] unless `env` says otherwise; panics after
/// `timeout`.
pub fn run_calsync(
    db_url: &str,
    fake: Option<&calsync_fake_google::FakeGoogle>,
    args: &[&str],
    env: &[(&str, &str)],
    timeout: Duration,
) -> CliRun {
    let tag = random_u64();
    let out_path = std::env::temp_dir().join(format!("calsync-run-{tag:016x}.out"));
    let err_path = std::env::temp_dir().join(format!("calsync-run-{tag:016x}.err"));
    let mut cmd = Command::new(calsync_bin());
    cmd.args(args)
        .env("DATABASE_URL", db_url)
        .env("CALSYNC_LOG_FORMAT", "pretty")
        .env("CALSYNC_CREDENTIALS_KEYS", E2E_CREDENTIALS_KEYS)
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).expect("stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("stderr file"));
    if let Some(fake) = fake {
        cmd.env("CALSYNC_GOOGLE_API_BASE_URL", fake.base_url())
            .env("CALSYNC_GOOGLE_API_ROOT_URL", fake.root_url())
            .env("CALSYNC_GOOGLE_TOKEN_URL", fake.token_url())
            .env("CALSYNC_GOOGLE_CLIENT_ID", "e2e-client")
            .env("CALSYNC_GOOGLE_CLIENT_SECRET", "e2e-secret")
            .env("CALSYNC_GOOGLE_PROJECT_QUOTA", "300000")
            .env("CALSYNC_GOOGLE_USER_QUOTA", "300000");
    }
    cmd.envs(env.iter().copied());
    let mut child = cmd.spawn().expect("run calsync");
    let deadline = std::time::Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for calsync") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "calsync {args:?} still running after {timeout:?}: {}{}",
                std::fs::read_to_string(&out_path).unwrap_or_default(),
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let run = CliRun {
        success: status.success(),
        stdout: std::fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
    };
    let _ = std::fs::remove_file(&out_path);
    let _ = std::fs::remove_file(&err_path);
    run
}

/// The fake's test service-account key in a file of its own (what
/// `CALSYNC_GOOGLE_SERVICE_ACCOUNT_KEY_FILE` points at), with the account registered in
/// the fake. Removed on drop.
pub struct ServiceAccountKeyFile {
    pub path: PathBuf,
}

impl ServiceAccountKeyFile {
    pub fn new(fake: &calsync_fake_google::FakeGoogle) -> ServiceAccountKeyFile {
        fake.register_test_service_account();
        let path = std::env::temp_dir().join(format!("calsync-e2e-sa-{:016x}.json", random_u64()));
        std::fs::write(&path, fake.test_service_account_json()).expect("write key file");
        ServiceAccountKeyFile { path }
    }

    /// The path as a string, for an environment variable.
    pub fn as_str(&self) -> &str {
        self.path.to_str().expect("UTF-8 temp path")
    }
}

impl Drop for ServiceAccountKeyFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
