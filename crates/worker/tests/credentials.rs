//! Credentials at rest: no plain token survives any way of writing it, rotation runs
//! online next to syncs, and a row no key opens marks only its user `needs_reauth`.

mod support;

use calsync_domain::{credentials, users};
use calsync_fake_google::FakeGoogle;
use calsync_worker::{
    failure::Decision,
    job::{self, AttemptCtx, JobDeps, Outcome},
    rotation,
};
use sqlx::PgPool;
use support::*;

/// Every column of every credentials row, as text.
async fn stored_text(pool: &PgPool) -> String {
    sqlx::query_scalar::<_, String>(
        "SELECT coalesce(string_agg(row_to_json(g)::text, ' '), '') FROM google_credentials g",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn assert_no_plaintext(pool: &PgPool, tokens: &[String]) {
    let all = stored_text(pool).await;
    for t in tokens {
        assert!(
            !all.contains(t.as_str()),
            "{t} is stored in plain text: {all}"
        );
    }
}

#[sqlx::test(migrations = false)]
async fn tokens_written_with_plain_sql_are_never_kept_in_plain_text(pool: PgPool) {
    let course = course(&pool).await;
    let fake = FakeGoogle::start().await.unwrap();
    // Before a sealing key exists the documented function refuses.
    let u0 = student(&pool, course, "s0@uni.edu", Some("c0")).await;
    let err = credentials::store(&pool, u0, &credentials::Secret::new("1//refused"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no sealing key"), "{err}");
    credentials::add_sealing_key(&pool, SEALING_PUBLIC_KEY, "test")
        .await
        .unwrap();
    assert!(
        credentials::add_sealing_key(&pool, SEALING_PRIVATE_KEY, "test")
            .await
            .is_err(),
        "a private key is refused"
    );

    let mut tokens = Vec::new();
    let mut ids = Vec::new();
    for (i, how) in ["function", "insert", "upsert", "update"]
        .iter()
        .enumerate()
    {
        let cal = fake.create_calendar("Courses");
        let user = student(&pool, course, &format!("s{}@uni.edu", i + 1), Some(&cal)).await;
        let token = format!("1//refresh-{how}-{}", rand_suffix());
        let access = format!("ya29.access-{how}-{}", rand_suffix());
        fake.add_refresh_token(&token);
        match *how {
            "function" => {
                sqlx::query(
                    "SELECT calsync.store_credentials($1, $2, $3, now() + interval '1 hour')",
                )
                .bind(user)
                .bind(&token)
                .bind(&access)
                .execute(&pool)
                .await
                .unwrap();
            }
            "insert" => {
                sqlx::query("INSERT INTO google_credentials (user_id, refresh_token, access_token) VALUES ($1, $2, $3)")
                    .bind(user).bind(&token).bind(&access).execute(&pool).await.unwrap();
            }
            "upsert" => {
                credentials::upsert_refresh_token(&pool, user, "1//first")
                    .await
                    .unwrap();
                credentials::upsert_refresh_token(&pool, user, &token)
                    .await
                    .unwrap();
            }
            _ => {
                credentials::upsert_refresh_token(&pool, user, "1//first")
                    .await
                    .unwrap();
                sqlx::query("UPDATE google_credentials SET refresh_token = $2, access_token = $3 WHERE user_id = $1")
                    .bind(user).bind(&token).bind(&access).execute(&pool).await.unwrap();
            }
        }
        tokens.push(token);
        tokens.push(access);
        ids.push(user);
    }
    tokens.push("1//first".into());
    assert_no_plaintext(&pool, &tokens).await;
    assert_eq!(credentials::envelope_counts(&pool).await.unwrap().sealed, 4);

    // The worker opens the sealed tokens, syncs, and re-encrypts them with its key.
    let engine = engine(&pool, &oauth(&fake, vault(&key("k1", 1)))).await;
    for id in &ids {
        engine.sync_user(*id).await.unwrap();
    }
    let counts = credentials::envelope_counts(&pool).await.unwrap();
    assert_eq!((counts.encrypted, counts.sealed, counts.plain), (4, 0, 0));
    assert_no_plaintext(&pool, &tokens).await;
    // Re-encryption is not a new token: nobody was flagged by it.
    let flagged: i64 =
        sqlx::query_scalar("SELECT count(*) FROM users WHERE calendar_needs_sync AND id = ANY($1)")
            .bind(&ids)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(flagged, 0);
    // A new token written by the sign-in flow flags the student and lifts needs_reauth.
    sqlx::query("UPDATE users SET calendar_sync_status = 'needs_reauth' WHERE id = $1")
        .bind(ids[0])
        .execute(&pool)
        .await
        .unwrap();
    credentials::store(&pool, ids[0], &credentials::Secret::new("1//newer"))
        .await
        .unwrap();
    let u = users::get(&pool, ids[0]).await.unwrap();
    assert!(u.calendar_needs_sync);
    assert_eq!(u.calendar_sync_status, users::SyncStatus::Ok);
}

fn rand_suffix() -> String {
    format!("{:016x}", rand::random::<u64>())
}

#[sqlx::test(migrations = false)]
async fn key_rotation_runs_online_next_to_syncs_and_leaves_no_plaintext(pool: PgPool) {
    let course = course(&pool).await;
    let fake = FakeGoogle::start().await.unwrap();
    credentials::add_sealing_key(&pool, SEALING_PUBLIC_KEY, "test")
        .await
        .unwrap();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(30)
        .connect_with(pool.connect_options().as_ref().clone())
        .await
        .unwrap();
    let mut ids = Vec::new();
    let mut tokens = Vec::new();
    for i in 0..10 {
        let cal = fake.create_calendar("Courses");
        let user = student(&pool, course, &format!("s{i}@uni.edu"), Some(&cal)).await;
        let token = format!("1//rotate-{i}-{}", rand_suffix());
        fake.add_refresh_token(&token);
        credentials::store(&pool, user, &credentials::Secret::new(&token))
            .await
            .unwrap();
        tokens.push(token);
        ids.push(user);
    }
    let old = engine(&pool, &oauth(&fake, vault(&key("k1", 1)))).await;
    for id in &ids {
        old.sync_user(*id).await.unwrap();
    }
    // Deploy the new key first, then rotate while every user syncs again.
    let both = vault(&format!("{},{}", key("k2", 2), key("k1", 1)));
    let deps = std::sync::Arc::new(JobDeps {
        pool: pool.clone(),
        engine: calsync_worker::build_engine(&pool, &oauth(&fake, both.clone())).unwrap(),
    });
    fake.expire_access_tokens();
    let syncs = ids.iter().enumerate().map(|(n, id)| {
        let deps = deps.clone();
        let payload = format!(r#"{{"user_id": {id}}}"#);
        let job_id = format!("01JROTATE{n:019}");
        async move {
            job::run_attempt(
                &deps,
                AttemptCtx {
                    job_id: &job_id,
                    attempt: 1,
                    max_attempts: 8,
                    worker: "test",
                },
                payload.as_bytes(),
            )
            .await
        }
    });
    let (outcomes, rotated) = tokio::join!(
        futures::future::join_all(syncs),
        rotation::rotate(&pool, &both, 3)
    );
    for o in outcomes {
        assert!(
            matches!(o, Outcome::Done(_)),
            "a job failed during rotation: {o:?}"
        );
    }
    let rotated = rotated.unwrap();
    assert!(rotated.unreadable.is_empty(), "{rotated:?}");
    assert!(
        credentials::needing_reencryption(&pool, "k2", 0, 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert_no_plaintext(&pool, &tokens).await;
    // The old key alone no longer opens anything: k1 can be retired.
    let only_old = engine(&pool, &oauth(&fake, vault(&key("k1", 1)))).await;
    assert!(only_old.sync_user(ids[0]).await.is_err());
    // A second rotation has nothing to do.
    assert_eq!(
        rotation::rotate(&pool, &both, 3).await.unwrap().reencrypted,
        0
    );
}

#[sqlx::test(migrations = false)]
async fn a_row_no_key_opens_marks_only_that_user_needs_reauth(pool: PgPool) {
    let course = course(&pool).await;
    let fake = FakeGoogle::start().await.unwrap();
    credentials::add_sealing_key(&pool, SEALING_PUBLIC_KEY, "test")
        .await
        .unwrap();
    let mut ids = Vec::new();
    for i in 0..2 {
        let cal = fake.create_calendar("Courses");
        let user = student(&pool, course, &format!("s{i}@uni.edu"), Some(&cal)).await;
        let token = format!("1//t{i}");
        fake.add_refresh_token(&token);
        credentials::store(&pool, user, &credentials::Secret::new(&token))
            .await
            .unwrap();
        ids.push(user);
    }
    // User 0's token was encrypted with a key this deployment lost.
    let lost = engine(&pool, &oauth(&fake, vault(&key("lost", 9)))).await;
    lost.sync_user(ids[0]).await.unwrap();
    let deps = JobDeps {
        pool: pool.clone(),
        engine: engine(&pool, &oauth(&fake, vault(&key("k1", 1)))).await,
    };
    let run = |user: i64, n: u8| {
        let payload = format!(r#"{{"user_id": {user}}}"#);
        let deps = &deps;
        async move {
            let job_id = format!("01JWRONGKEY{n:017}");
            job::run_attempt(
                deps,
                AttemptCtx {
                    job_id: &job_id,
                    attempt: 1,
                    max_attempts: 8,
                    worker: "test",
                },
                payload.as_bytes(),
            )
            .await
        }
    };
    match run(ids[0], 0).await {
        Outcome::Failed { decision, error } => {
            assert_eq!(
                decision,
                Decision::NeedsUser(users::SyncStatus::NeedsReauth)
            );
            assert!(error.to_string().contains("cannot be decrypted"), "{error}");
            assert!(error.to_string().contains("\"lost\""), "{error}");
        }
        other => panic!("expected needs_reauth, got {other:?}"),
    }
    let u = users::get(&pool, ids[0]).await.unwrap();
    assert_eq!(u.calendar_sync_status, users::SyncStatus::NeedsReauth);
    assert!(u.last_sync_error.unwrap().contains("cannot be decrypted"));
    assert!(matches!(run(ids[1], 1).await, Outcome::Done(_)));
}

#[sqlx::test(migrations = false)]
async fn the_credentials_state_names_missing_wrong_and_old_keys(pool: PgPool) {
    use calsync_worker::auth_status::{self, Level};
    let course = course(&pool).await;
    let warnings = |s: &auth_status::OauthStatus| -> Vec<String> {
        s.findings
            .iter()
            .filter(|f| f.level == Level::Warning)
            .map(|f| f.message.clone())
            .collect()
    };
    // Nothing registered, a legacy plain token: both are warnings.
    let user = student(&pool, course, "s0@uni.edu", Some("c0")).await;
    credentials::upsert_refresh_token(&pool, user, "1//legacy")
        .await
        .unwrap();
    let s = auth_status::oauth(&pool, Some(&vault(&key("k1", 1))))
        .await
        .unwrap();
    let w = warnings(&s).join("\n");
    assert!(w.contains("no sealing key is registered"), "{w}");
    assert!(
        w.contains("1 refresh tokens are stored in plain text"),
        "{w}"
    );
    assert_eq!(s.refresh_tokens.plain, 1);

    // A registered sealing key: the right private key opens it, a wrong one does not,
    // no private key at all is said too.
    credentials::add_sealing_key(&pool, SEALING_PUBLIC_KEY, "test")
        .await
        .unwrap();
    let s = auth_status::oauth(&pool, Some(&vault(&key("k1", 1))))
        .await
        .unwrap();
    let w = warnings(&s).join("\n");
    assert!(
        !w.contains("sealing key is registered") && !w.contains("sealing private key"),
        "{w}"
    );
    let wrong = calsync_worker::vault::Vault::new(
        calsync_worker::vault::Keyring::parse(&key("k1", 1)).unwrap(),
        Some(credentials::Secret::new(
            "-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nnot a key\n-----END PGP PRIVATE KEY BLOCK-----\n",
        )),
    );
    let w = warnings(&auth_status::oauth(&pool, Some(&wrong)).await.unwrap()).join("\n");
    assert!(
        w.contains("does not open the newest registered sealing key"),
        "{w}"
    );
    let unsealed = calsync_worker::vault::Vault::new(
        calsync_worker::vault::Keyring::parse(&key("k1", 1)).unwrap(),
        None,
    );
    let w = warnings(&auth_status::oauth(&pool, Some(&unsealed)).await.unwrap()).join("\n");
    assert!(w.contains("has no sealing private key"), "{w}");

    // Tokens under an old key: a note while it is configured, a warning once it is not.
    let r = rotation::rotate(&pool, &vault(&key("k1", 1)), 10)
        .await
        .unwrap();
    assert_eq!(r.reencrypted, 1);
    let both = vault(&format!("{},{}", key("k2", 2), key("k1", 1)));
    let s = auth_status::oauth(&pool, Some(&both)).await.unwrap();
    assert!(
        s.findings.iter().any(|f| f.level == Level::Note
            && f.message
                .contains("still encrypted with the old key \"k1\"")),
        "{:?}",
        s.findings
    );
    let w = warnings(
        &auth_status::oauth(&pool, Some(&vault(&key("k2", 2))))
            .await
            .unwrap(),
    )
    .join("\n");
    assert!(
        w.contains("1 refresh tokens are encrypted with key \"k1\", which is not configured here"),
        "{w}"
    );
}
