//! The cluster-wide Google quota's books: sliding-window limit, token-bucket pace,
//! grants booked ahead, minimum grants, independence of buckets, concurrent draws,
//! forgetting idle buckets.
//! Time passes by ageing the rows (every timestamp moved back), never by sleeping.

use std::time::Duration;

use calsync_domain::{
    DomainError,
    quota::{self, BucketLimits, PROJECT_BUCKET},
};
use sqlx::PgPool;

/// Limits that grant only what is there now (nothing booked ahead).
fn limits(limit: u32, window_secs: u64, rate: f64, burst: u32) -> BucketLimits {
    BucketLimits {
        limit,
        window: Duration::from_secs(window_secs),
        rate,
        burst,
        ahead: Duration::ZERO,
    }
}

/// Pretend `secs` seconds passed for `bucket`.
async fn age(pool: &PgPool, bucket: &str, secs: f64) {
    sqlx::query(
        "UPDATE calsync.google_quota_grants SET starts_at = starts_at - make_interval(secs => $2) \
         WHERE bucket = $1",
    )
    .bind(bucket)
    .bind(secs)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "UPDATE calsync.google_quota_buckets SET refilled_at = refilled_at - make_interval(secs => $2), \
             last_start = last_start - make_interval(secs => $2), \
             idle_after = idle_after - make_interval(secs => $2) WHERE bucket = $1",
    )
    .bind(bucket)
    .bind(secs)
    .execute(pool)
    .await
    .unwrap();
}

async fn take(pool: &PgPool, bucket: &str, wanted: u32, min: u32, l: &BucketLimits) -> u32 {
    quota::take_permits(pool, bucket, wanted, min, l)
        .await
        .unwrap()
        .granted
}

#[sqlx::test(migrations = false)]
async fn the_window_never_admits_more_than_its_limit(pool: PgPool) {
    calsync_domain::migrate(&pool).await.unwrap();
    // Tokens are plentiful: only the window limits.
    let l = limits(10, 60, 1000.0, 1000);
    assert_eq!(take(&pool, PROJECT_BUCKET, 4, 1, &l).await, 4);
    assert_eq!(take(&pool, PROJECT_BUCKET, 4, 1, &l).await, 4);
    // Partial: what is left, since it is at least the minimum.
    assert_eq!(take(&pool, PROJECT_BUCKET, 4, 1, &l).await, 2);
    let g = quota::take_permits(&pool, PROJECT_BUCKET, 4, 1, &l)
        .await
        .unwrap();
    assert_eq!(g.granted, 0);
    // The first grant leaves the window in about 60 s.
    assert!(
        g.retry_after > Duration::from_secs(55) && g.retry_after <= Duration::from_secs(60),
        "{g:?}"
    );
    assert_eq!(
        quota::granted_in_window(&pool, PROJECT_BUCKET, l.window)
            .await
            .unwrap(),
        10
    );

    // 30 s later: still full.
    age(&pool, PROJECT_BUCKET, 30.0).await;
    assert_eq!(take(&pool, PROJECT_BUCKET, 1, 1, &l).await, 0);
    // Just past the window of the first two grants: they free 8, no more.
    age(&pool, PROJECT_BUCKET, 30.5).await;
    assert_eq!(take(&pool, PROJECT_BUCKET, 100, 1, &l).await, 10);
    assert_eq!(take(&pool, PROJECT_BUCKET, 1, 1, &l).await, 0);
}

#[sqlx::test(migrations = false)]
async fn the_token_bucket_paces_grants(pool: PgPool) {
    calsync_domain::migrate(&pool).await.unwrap();
    // 5 per second, at most 3 at once; the window is generous.
    let l = limits(1000, 60, 5.0, 3);
    assert_eq!(
        take(&pool, "user:1", 10, 1, &l).await,
        3,
        "a new bucket starts full"
    );
    let g = quota::take_permits(&pool, "user:1", 10, 1, &l)
        .await
        .unwrap();
    assert_eq!(g.granted, 0);
    assert!(g.retry_after <= Duration::from_millis(200), "{g:?}");
    // After 0.5 s, 2.5 tokens: 2 granted.
    age(&pool, "user:1", 0.5).await;
    assert_eq!(take(&pool, "user:1", 10, 1, &l).await, 2);
    // After a long pause the bucket holds its burst, not more.
    age(&pool, "user:1", 100.0).await;
    assert_eq!(take(&pool, "user:1", 10, 1, &l).await, 3);
}

#[sqlx::test(migrations = false)]
async fn short_buckets_book_grants_ahead_in_order(pool: PgPool) {
    calsync_domain::migrate(&pool).await.unwrap();
    // 10 per second, 10 at once, grants up to a second ahead.
    let l = BucketLimits {
        ahead: Duration::from_secs(1),
        ..limits(1000, 60, 10.0, 10)
    };
    let take = |wanted, min| quota::take_permits(&pool, "b", wanted, min, &l);
    let g = take(10, 1).await.unwrap();
    assert_eq!((g.granted, g.starts_in), (10, Duration::ZERO));
    // Empty now: the next 5 start when earned, in 0.5 s; 5 more after those, in 1 s.
    let g = take(5, 5).await.unwrap();
    assert_eq!(g.granted, 5);
    assert!(
        g.starts_in > Duration::from_millis(450) && g.starts_in <= Duration::from_millis(500),
        "{g:?}"
    );
    let g = take(5, 5).await.unwrap();
    assert_eq!(g.granted, 5);
    assert!(
        g.starts_in > Duration::from_millis(950) && g.starts_in <= Duration::from_secs(1),
        "{g:?}"
    );
    // Beyond a second ahead: nothing booked, ask again in ~0.1 s.
    let g = take(1, 1).await.unwrap();
    assert_eq!(g.granted, 0);
    assert!(g.retry_after <= Duration::from_millis(100), "{g:?}");
    // A grant never starts before an earlier one.
    let starts: Vec<f64> = sqlx::query_scalar(
        "SELECT extract(epoch FROM starts_at)::float8 FROM calsync.google_quota_grants ORDER BY ctid",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(starts.windows(2).all(|w| w[0] <= w[1]), "{starts:?}");
}

#[sqlx::test(migrations = false)]
async fn a_full_window_books_the_start_when_it_frees(pool: PgPool) {
    calsync_domain::migrate(&pool).await.unwrap();
    let l = BucketLimits {
        ahead: Duration::from_secs(5),
        ..limits(10, 60, 1000.0, 1000)
    };
    assert_eq!(take(&pool, PROJECT_BUCKET, 10, 1, &l).await, 10);
    // 57 s later the window is still full; it frees in 3 s, within the 5 s ahead.
    age(&pool, PROJECT_BUCKET, 57.0).await;
    let g = quota::take_permits(&pool, PROJECT_BUCKET, 3, 1, &l)
        .await
        .unwrap();
    assert_eq!(g.granted, 3);
    assert!(
        g.starts_in > Duration::from_millis(2900) && g.starts_in <= Duration::from_secs(3),
        "{g:?}"
    );
    // Within the 60 s ending at that start: the 3, not the 10 (they started 60 s before).
    assert_eq!(
        quota::granted_in_window(&pool, PROJECT_BUCKET, l.window)
            .await
            .unwrap(),
        3
    );
}

#[sqlx::test(migrations = false)]
async fn a_minimum_is_granted_whole_or_not_at_all(pool: PgPool) {
    calsync_domain::migrate(&pool).await.unwrap();
    let l = limits(1000, 60, 10.0, 10);
    assert_eq!(take(&pool, "b", 8, 8, &l).await, 8);
    // 2 tokens left, 5 needed: nothing, and the answer says when 5 will be there.
    let g = quota::take_permits(&pool, "b", 5, 5, &l).await.unwrap();
    assert_eq!(g.granted, 0);
    assert!(
        g.retry_after > Duration::from_millis(250) && g.retry_after <= Duration::from_millis(300),
        "{g:?}"
    );
    // A refused draw takes nothing: the 2 tokens are still there.
    assert_eq!(take(&pool, "b", 2, 2, &l).await, 2);
}

#[sqlx::test(migrations = false)]
async fn buckets_are_independent(pool: PgPool) {
    calsync_domain::migrate(&pool).await.unwrap();
    let l = limits(3, 60, 100.0, 3);
    assert_eq!(take(&pool, PROJECT_BUCKET, 5, 1, &l).await, 3);
    assert_eq!(take(&pool, &quota::user_bucket(1), 5, 1, &l).await, 3);
    assert_eq!(take(&pool, &quota::user_bucket(2), 5, 1, &l).await, 3);
    assert_eq!(take(&pool, &quota::user_bucket(1), 5, 1, &l).await, 0);
    assert_eq!(quota::user_bucket(42), "user:42");
}

#[sqlx::test(migrations = false)]
async fn concurrent_draws_never_grant_more_than_the_limit(pool: PgPool) {
    calsync_domain::migrate(&pool).await.unwrap();
    let l = limits(200, 60, 1_000_000.0, 1_000_000);
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..8u32 {
        let pool = pool.clone();
        tasks.spawn(async move {
            let mut got = 0u32;
            for i in 0..40u32 {
                got += take(&pool, PROJECT_BUCKET, 1 + (t + i) % 5, 1, &l).await;
            }
            got
        });
    }
    let mut total = 0;
    while let Some(got) = tasks.join_next().await {
        total += got.unwrap();
    }
    assert_eq!(
        total, 200,
        "8 × 40 draws of 1-5 want more than 200: exactly 200 granted"
    );
    let logged: i64 = sqlx::query_scalar(
        "SELECT sum(permits) FROM calsync.google_quota_grants WHERE bucket = 'project'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(logged, 200);
}

#[sqlx::test(migrations = false)]
async fn idle_buckets_are_forgotten_busy_ones_kept(pool: PgPool) {
    calsync_domain::migrate(&pool).await.unwrap();
    let l = limits(10, 60, 10.0, 10);
    assert_eq!(take(&pool, "user:1", 4, 1, &l).await, 4);
    assert_eq!(take(&pool, "user:2", 4, 1, &l).await, 4);
    // user:1's grant left the window and its bucket refilled long ago.
    age(&pool, "user:1", 120.0).await;
    let forget = || async {
        sqlx::query_scalar::<_, i32>("SELECT calsync.forget_idle_google_quota_buckets()")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    assert_eq!(forget().await, 1);
    assert_eq!(
        quota::granted_in_window(&pool, "user:1", l.window)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        quota::granted_in_window(&pool, "user:2", l.window)
            .await
            .unwrap(),
        4
    );
    let grants: i64 = sqlx::query_scalar("SELECT count(*) FROM calsync.google_quota_grants")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(grants, 1, "the forgotten bucket's grants went with it");
    // Forgotten is the same as new: full.
    assert_eq!(take(&pool, "user:1", 20, 1, &l).await, 10);
}

#[sqlx::test(migrations = false)]
async fn nonsense_draws_are_refused_before_and_in_sql(pool: PgPool) {
    calsync_domain::migrate(&pool).await.unwrap();
    let l = limits(10, 60, 1.0, 5);
    for (wanted, min, l) in [
        (0, 0, l),
        (1, 2, l),
        (6, 6, l), // min above the burst
        (
            1,
            1,
            BucketLimits {
                rate: f64::NAN,
                ..l
            },
        ),
        (
            1,
            1,
            BucketLimits {
                window: Duration::ZERO,
                ..l
            },
        ),
    ] {
        let err = quota::take_permits(&pool, PROJECT_BUCKET, wanted, min, &l)
            .await
            .unwrap_err();
        assert!(matches!(err, DomainError::InvalidInput(_)), "{err}");
    }
    // Other callers of the SQL function get the same rule.
    for args in [
        "1, 1, 10, 60, 'NaN', 5, 0",
        "1, 1, 10, 0, 1, 5, 0",
        "2, 3, 10, 60, 1, 5, 0",
        "1, 1, 10, 60, 1, 0.5, 0",
        "1, 1, 10, 60, 1, 5, -1",
        "1, 1, 10, 60, 1, 5, 'Infinity'",
    ] {
        let err = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT * FROM calsync.take_google_permits('project', {args})"
        )))
        .execute(&pool)
        .await
        .unwrap_err();
        let code = err
            .as_database_error()
            .and_then(|e| e.code())
            .map(|c| c.into_owned());
        assert_eq!(code.as_deref(), Some("22023"), "{args}: {err}");
    }
}
