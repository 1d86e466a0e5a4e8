//! What the sync-level tests share: the Google backend and the sync engine, pointed at
//! a fake Google through the real google-calendar3 client. The one place that builds
//! them (adapt here when their constructors change).

#![allow(dead_code)]

use std::{sync::Arc, time::Duration};

use calsync_domain::credentials::Secret;
use calsync_fake_google::FakeGoogle;
use calsync_worker::{
    google::{GoogleBackend, GoogleConfig, QuotaLimits},
    sync::SyncEngine,
};
use sqlx::PgPool;

/// The Google backend against `fake`, with rate limits high enough never to wait.
pub fn backend(fake: &FakeGoogle, pool: &PgPool) -> Arc<GoogleBackend> {
    Arc::new(
        GoogleBackend::new(
            GoogleConfig {
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
            },
            pool.clone(),
        )
        .unwrap(),
    )
}

/// The sync engine against `fake`, writing events in America/New_York.
pub fn engine(fake: &FakeGoogle, pool: &PgPool) -> SyncEngine {
    SyncEngine::new(
        pool.clone(),
        backend(fake, pool),
        chrono_tz::America::New_York,
    )
}
