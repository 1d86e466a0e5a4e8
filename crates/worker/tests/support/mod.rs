//! What the worker's integration tests share: the Google backend and sync engines
//! pointed at a fake Google through the real google-calendar3 client — built like
//! `calsync worker` builds them (`calsync_worker::build_engine`) for the per-user and
//! service-account modes —, the credentials test keys, and one course with two weekly
//! meetings with students enrolled in it. The one place that builds engines (adapt
//! here when their constructors change).
#![allow(dead_code)]

use std::{sync::Arc, time::Duration};

use base64::Engine;
use calsync_domain::credentials::Secret;
use calsync_fake_google::FakeGoogle;
use calsync_worker::{
    backend::AccessRole,
    config::{GoogleAuth, GoogleSettings, SyncSettings},
    google::{GoogleBackend, GoogleConfig, QuotaLimits, ServiceAccountKey},
    provision::ProvisionSettings,
    sync::SyncEngine,
    vault::{Keyring, Vault},
};
use sqlx::PgPool;

pub const SEALING_PUBLIC_KEY: &str = include_str!("../data/test-sealing-key.pub.asc");
pub const SEALING_PRIVATE_KEY: &str = include_str!("../data/test-sealing-key.sec.asc");

/// The Google backend against `fake` in per-user OAuth mode without credentials keys
/// (legacy plain storage), with a quota high enough never to wait.
pub fn backend(fake: &FakeGoogle, pool: &PgPool) -> Arc<GoogleBackend> {
    let g = google(fake);
    Arc::new(
        GoogleBackend::new(
            GoogleConfig {
                api_base_url: g.api_base_url,
                api_root_url: g.api_root_url,
                token_url: g.token_url,
                client_id: g.client_id,
                client_secret: g.client_secret,
                quota: g.quota,
                request_timeout: g.request_timeout,
            },
            pool.clone(),
        )
        .unwrap(),
    )
}

/// The sync engine of [`backend`], writing events in America/New_York.
pub fn oauth_engine(fake: &FakeGoogle, pool: &PgPool) -> SyncEngine {
    SyncEngine::new(
        pool.clone(),
        backend(fake, pool),
        chrono_tz::America::New_York,
    )
}

/// The Google client settings against `fake`, with a quota high enough never to wait.
pub fn google(fake: &FakeGoogle) -> GoogleSettings {
    GoogleSettings {
        api_base_url: fake.base_url(),
        api_root_url: fake.root_url(),
        token_url: fake.token_url(),
        client_id: "test-client".into(),
        client_secret: Secret::new("test-secret"),
        quota: QuotaLimits {
            project: 6_000_000,
            per_user: 600_000,
            window: Duration::from_secs(60),
        },
        request_timeout: Duration::from_secs(10),
    }
}

/// Service-account settings with the fake's test key (`delegate`: domain-wide delegation).
pub fn service_account(fake: &FakeGoogle, delegate: bool) -> SyncSettings {
    fake.register_test_service_account();
    SyncSettings {
        google: google(fake),
        school_time_zone: chrono_tz::America::New_York,
        auth: GoogleAuth::ServiceAccount {
            key: ServiceAccountKey::from_json(&fake.test_service_account_json()).unwrap(),
            delegate,
            provisioning: ProvisionSettings {
                summary: "Courses".into(),
                time_zone: "America/New_York".into(),
                share_role: AccessRole::Reader,
                notify: false,
            },
        },
    }
}

/// A keyring spec `kid:base64` of a key made of `byte`.
pub fn key(kid: &str, byte: u8) -> String {
    format!(
        "{kid}:{}",
        base64::engine::general_purpose::STANDARD.encode([byte; 32])
    )
}

/// A vault with these keys (`"k2:…,k1:…"`) and the test sealing key.
pub fn vault(keys: &str) -> Vault {
    Vault::new(
        Keyring::parse(keys).unwrap(),
        Some(Secret::new(SEALING_PRIVATE_KEY)),
    )
}

pub fn oauth(fake: &FakeGoogle, vault: Vault) -> SyncSettings {
    SyncSettings {
        google: google(fake),
        school_time_zone: chrono_tz::America::New_York,
        auth: GoogleAuth::Oauth { vault },
    }
}

/// The engine `calsync worker` would run with these settings; the database learns the mode.
pub async fn engine(pool: &PgPool, settings: &SyncSettings) -> SyncEngine {
    calsync_worker::announce_calendar_mode(pool, settings, "test")
        .await
        .unwrap();
    calsync_worker::build_engine(pool, settings).unwrap()
}

/// A migrated database with one course (Mon and Wed 09:00-10:15); returns its id.
pub async fn course(pool: &PgPool) -> i64 {
    calsync_domain::migrate(pool).await.unwrap();
    let room: i64 = sqlx::query_scalar(
        "INSERT INTO rooms (building, number) VALUES ('Smith', '101') RETURNING id",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    let course: i64 = sqlx::query_scalar(
        "INSERT INTO courses (title, subject, course_number, section_number, start_date, end_date) \
         VALUES ('Databases', 'CS', '340', '002', '2026-01-12', '2026-05-01') RETURNING id",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    for day in [1i16, 3] {
        sqlx::query(
            "INSERT INTO meeting_times (course_id, day_of_week, begin_time, end_time, room_id) \
             VALUES ($1, $2, '09:00', '10:15', $3)",
        )
        .bind(course)
        .bind(day)
        .bind(room)
        .execute(pool)
        .await
        .unwrap();
    }
    course
}

/// A student enrolled in `course`, with an optional calendar id.
pub async fn student(pool: &PgPool, course: i64, email: &str, calendar: Option<&str>) -> i64 {
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO users (email, name, google_course_calendar_id) VALUES ($1, 'S', $2) RETURNING id",
    )
    .bind(email)
    .bind(calendar)
    .fetch_one(pool)
    .await
    .unwrap();
    sqlx::query("INSERT INTO enrollments (user_id, course_id) VALUES ($1, $2)")
        .bind(id)
        .bind(course)
        .execute(pool)
        .await
        .unwrap();
    id
}

pub async fn calendar_of(pool: &PgPool, user: i64) -> Option<String> {
    sqlx::query_scalar("SELECT google_course_calendar_id FROM users WHERE id = $1")
        .bind(user)
        .fetch_one(pool)
        .await
        .unwrap()
}

pub async fn audit_actions(pool: &PgPool, action: &str) -> Vec<serde_json::Value> {
    sqlx::query_scalar("SELECT detail FROM calsync.audit_log WHERE action = $1 ORDER BY id")
        .bind(action)
        .fetch_all(pool)
        .await
        .unwrap()
}
