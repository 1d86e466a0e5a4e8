//! The operators' read side (job list and detail, user list, audit log) and the
//! dashboard session store, each query run against the migrated schema.

mod common;

use calsync_domain::{
    audit, dashboard_sessions as sessions,
    dashboard_sessions::{NewSession, Role},
    jobs,
    queue::{self, JobFilter, JobState},
    user_list::{self, UserFilter, UserQuery},
    users::SyncStatus,
};
use chrono::{Duration, Utc};
use common::{exec, seed};
use sqlx::PgPool;

#[sqlx::test(migrations = false)]
async fn job_list_filters_pages_and_detail(pool: PgPool) {
    let u = seed(&pool).await;
    let a = queue::enqueue_sync(&pool, u.alice, "t", "test")
        .await
        .unwrap();
    let b = queue::enqueue_sync(&pool, u.bob, "t", "test")
        .await
        .unwrap();
    let c = queue::enqueue_sync(&pool, u.carol, "t", "test")
        .await
        .unwrap();
    exec(
        &pool,
        &format!(
            "UPDATE apalis.jobs SET status = 'Failed', attempts = max_attempts, \
             last_result = '{{\"Err\": \"boom\"}}' WHERE id = '{b}'"
        ),
    )
    .await;

    let all = jobs::list(&pool, &JobFilter::default(), None, 10)
        .await
        .unwrap();
    let ids: Vec<&str> = all.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(ids, [c.as_str(), b.as_str(), a.as_str()], "newest first");
    let page2 = jobs::list(&pool, &JobFilter::default(), Some(&c), 1)
        .await
        .unwrap();
    assert_eq!(page2.len(), 1);
    assert_eq!(page2[0].id, b, "keyset page continues below the bound");
    assert_eq!(page2[0].state, JobState::Failed);
    assert_eq!(page2[0].user_id, Some(u.bob));
    assert_eq!(page2[0].last_error.as_deref(), Some("boom"));

    let by_user = JobFilter {
        user_id: Some(u.alice),
        ..Default::default()
    };
    let mine = jobs::list(&pool, &by_user, None, 10).await.unwrap();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].id, a);
    assert_eq!(mine[0].state, JobState::Pending);

    let d = jobs::get(&pool, &b).await.unwrap().expect("job");
    assert_eq!(d.state, JobState::Failed);
    assert_eq!(d.status, "Failed");
    assert_eq!(d.user_id(), Some(u.bob));
    assert_eq!(d.last_error().as_deref(), Some("boom"));
    assert!(d.raw_payload.is_none());
    let active = jobs::get(&pool, &a).await.unwrap().unwrap();
    assert_eq!(
        active.idempotency_key.as_deref(),
        Some(queue::active_job_key(u.alice).as_str())
    );
    assert!(jobs::get(&pool, "01NOSUCHJOB").await.unwrap().is_none());
}

#[sqlx::test(migrations = false)]
async fn user_list_searches_filters_and_pages(pool: PgPool) {
    let u = seed(&pool).await;
    exec(
        &pool,
        &format!(
            "UPDATE users SET calendar_sync_status = 'needs_reauth', last_sync_error = 'invalid_grant' WHERE id = {}",
            u.bob
        ),
    )
    .await;
    let list = |q: UserQuery| {
        let pool = pool.clone();
        async move {
            user_list::list(&pool, &q)
                .await
                .unwrap()
                .into_iter()
                .map(|r| r.id)
                .collect::<Vec<_>>()
        }
    };
    let all = UserQuery {
        limit: 10,
        ..Default::default()
    };
    assert_eq!(list(all.clone()).await, [u.alice, u.bob, u.carol]);
    assert_eq!(
        list(UserQuery {
            after: Some(u.alice),
            limit: 1,
            ..all.clone()
        })
        .await,
        [u.bob]
    );
    assert_eq!(
        list(UserQuery {
            search: Some("CAROL".into()),
            ..all.clone()
        })
        .await,
        [u.carol]
    );
    assert_eq!(
        list(UserQuery {
            search: Some(u.alice.to_string()),
            ..all.clone()
        })
        .await,
        [u.alice]
    );
    // LIKE metacharacters are literal.
    assert!(
        list(UserQuery {
            search: Some("%".into()),
            ..all.clone()
        })
        .await
        .is_empty()
    );
    let reauth = user_list::list(
        &pool,
        &UserQuery {
            filter: Some(UserFilter::NeedsReauth),
            ..all.clone()
        },
    )
    .await
    .unwrap();
    assert_eq!(reauth.len(), 1);
    assert_eq!(reauth[0].id, u.bob);
    assert_eq!(reauth[0].calendar_sync_status, SyncStatus::NeedsReauth);
    assert!(reauth[0].has_calendar);
    for f in UserFilter::ALL {
        assert_eq!(UserFilter::parse(f.as_str()), Some(f));
        user_list::list(
            &pool,
            &UserQuery {
                filter: Some(f),
                ..all.clone()
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{f:?}: {e}"));
    }
}

#[sqlx::test(migrations = false)]
async fn audit_log_reads_newest_first_with_paging(pool: PgPool) {
    calsync_domain::migrate(&pool).await.unwrap();
    for i in 0..3 {
        queue::audit(&pool, "test", "act", serde_json::json!({ "i": i }))
            .await
            .unwrap();
    }
    let all = audit::recent(&pool, None, 10).await.unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(all[0].detail["i"], 2);
    let rest = audit::recent(&pool, Some(all[0].id), 10).await.unwrap();
    assert_eq!(rest.len(), 2);
    assert_eq!(rest[0].detail["i"], 1);
    assert_eq!(rest[0].actor, "test");
}

#[sqlx::test(migrations = false)]
async fn sessions_are_found_deleted_and_purged(pool: PgPool) {
    calsync_domain::migrate(&pool).await.unwrap();
    let key = b"key-1".as_slice();
    let other_key = b"key-2".as_slice();
    let s =
        |id: &'static [u8; 32], role, key: &'static [u8], fp: &'static [u8], ttl: i64| NewSession {
            id_hash: id,
            role,
            key_id: key,
            token_fingerprint: fp,
            client_addr: Some("192.0.2.1"),
            expires_at: Utc::now() + Duration::seconds(ttl),
        };
    const LIVE: [u8; 32] = [1u8; 32];
    const ROTATED: [u8; 32] = [2u8; 32];
    const EXPIRED: [u8; 32] = [3u8; 32];
    const FOREIGN: [u8; 32] = [4u8; 32];
    const RO: [u8; 32] = [5u8; 32];
    sessions::create(&pool, &s(&LIVE, Role::Admin, key, b"fp-admin", 3600))
        .await
        .unwrap();
    sessions::create(&pool, &s(&ROTATED, Role::Admin, key, b"fp-old", 3600))
        .await
        .unwrap();
    sessions::create(&pool, &s(&EXPIRED, Role::Admin, key, b"fp-admin", -1))
        .await
        .unwrap();
    sessions::create(&pool, &s(&FOREIGN, Role::Admin, other_key, b"fp-x", 3600))
        .await
        .unwrap();
    sessions::create(&pool, &s(&RO, Role::ReadOnly, key, b"fp-ro", 3600))
        .await
        .unwrap();

    let found = sessions::find(&pool, &LIVE)
        .await
        .unwrap()
        .expect("live session");
    assert_eq!(found.role, Role::Admin);
    assert_eq!(found.token_fingerprint, b"fp-admin");
    assert!(
        sessions::find(&pool, &EXPIRED).await.unwrap().is_none(),
        "expired"
    );

    // The read-only role has no token any more; the admin token is unchanged.
    let purged = sessions::purge(&pool, key, Some(b"fp-admin"), None)
        .await
        .unwrap();
    assert_eq!(purged, 3, "rotated, expired and read-only sessions go");
    assert!(sessions::find(&pool, &LIVE).await.unwrap().is_some());
    assert!(
        sessions::find(&pool, &FOREIGN).await.unwrap().is_some(),
        "other keys stay"
    );
    assert!(sessions::find(&pool, &ROTATED).await.unwrap().is_none());
    assert!(sessions::find(&pool, &RO).await.unwrap().is_none());

    assert!(sessions::delete(&pool, &LIVE).await.unwrap());
    assert!(!sessions::delete(&pool, &LIVE).await.unwrap());
    assert!(sessions::find(&pool, &LIVE).await.unwrap().is_none());
}
