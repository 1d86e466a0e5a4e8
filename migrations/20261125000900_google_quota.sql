-- The cluster-wide Google Calendar API quota.
--
-- Google counts requests per project and per user over a sliding window (10,000 and 600
-- per minute by default) and answers 403/429 once either is exceeded. Every calsync
-- worker draws permits for its Google calls from the buckets below, in batches, so all
-- replicas together stay within the quota however many there are, without a database
-- round trip per call.
--
-- A grant is a batch of permits with a start time: the worker may send their requests
-- from then on, for a short lease. A bucket ('project', or 'user:<id>' for one student)
-- gives a grant the earliest start at which
--   * its token bucket (refilled at `rate` per second up to `burst`) has earned the
--     permits: grants are spread out evenly instead of spending a window's quota in a
--     burst, and a worker asking for more than is there gets a later start (at most
--     `ahead` seconds later) instead of having to ask again and again; and
--   * the grants starting within any `window` (Google's window plus the lease and the
--     time a request takes to reach Google) stay within the limit: this makes the bound
--     strict — the requests Google sees in any window of its length come from grants
--     starting within one such longer window.
-- Starts never go backwards, so the newest grant is always the latest. Permits a worker
-- never used (it died, or they expired) stay counted until they leave the window: a
-- dead replica can only leave quota unused, never let others exceed it.

CREATE TABLE calsync.google_quota_buckets (
    bucket      text PRIMARY KEY,
    -- Token bucket: tokens at refilled_at; negative while grants are booked ahead.
    tokens      double precision NOT NULL,
    refilled_at timestamptz NOT NULL,
    -- Start of the latest grant.
    last_start  timestamptz NOT NULL DEFAULT '-infinity',
    -- From then on the bucket is full and has no grant in its window: the same as no
    -- row at all, so it may be deleted.
    idle_after  timestamptz NOT NULL
) WITH (fillfactor = 70);

CREATE INDEX google_quota_buckets_idle_idx ON calsync.google_quota_buckets (idle_after);

CREATE TABLE calsync.google_quota_grants (
    bucket     text NOT NULL REFERENCES calsync.google_quota_buckets ON DELETE CASCADE,
    -- When its requests may start.
    starts_at  timestamptz NOT NULL,
    permits    integer NOT NULL CHECK (permits > 0)
);

CREATE INDEX google_quota_grants_bucket_start_idx
    ON calsync.google_quota_grants (bucket, starts_at) INCLUDE (permits);

-- Delete the buckets that are full and have no grant left in their window (the same as
-- no row; students not synced lately). Rows another caller holds are skipped, so this
-- never waits and never deadlocks. Returns how many were deleted.
CREATE FUNCTION calsync.forget_idle_google_quota_buckets() RETURNS integer
LANGUAGE sql AS $$
    WITH gone AS (
        DELETE FROM calsync.google_quota_buckets b
        WHERE b.bucket IN (SELECT i.bucket FROM calsync.google_quota_buckets i
                           WHERE i.idle_after < clock_timestamp()
                           FOR UPDATE SKIP LOCKED)
        RETURNING 1
    )
    SELECT count(*)::integer FROM gone
$$;

-- Grant between p_min and p_wanted permits of bucket p_bucket: at most p_limit starting
-- within any p_window_secs, paced by a token bucket of p_rate per second and p_burst,
-- starting at most p_ahead_secs from now. Returns the permits granted (0, or p_min to
-- p_wanted), in how many seconds they start, and, when none, in how many seconds to ask
-- again. One call is one transaction holding the bucket's row lock, so concurrent
-- callers are serialised per bucket; the clock is read after the lock is taken.
CREATE FUNCTION calsync.take_google_permits(
    p_bucket      text,
    p_wanted      integer,
    p_min         integer,
    p_limit       integer,
    p_window_secs double precision,
    p_rate        double precision,
    p_burst       double precision,
    p_ahead_secs  double precision
) RETURNS TABLE (granted integer, starts_in_secs double precision,
                 retry_after_secs double precision)
LANGUAGE plpgsql AS $$
DECLARE
    v_window   interval;
    v_tokens   double precision;
    v_refilled timestamptz;
    v_last     timestamptz;
    v_now      timestamptz;
    v_avail    double precision;
    v_n        integer;
    v_start    timestamptz;
    v_used     bigint;
    v_retry    double precision;
BEGIN
    IF p_bucket IS NULL OR p_wanted IS NULL OR p_min IS NULL OR p_limit IS NULL
       OR p_window_secs IS NULL OR p_rate IS NULL OR p_burst IS NULL OR p_ahead_secs IS NULL
       OR p_min < 1 OR p_wanted < p_min OR p_limit < p_min OR p_burst < p_min
       OR NOT p_window_secs > 0 OR NOT p_rate > 0 OR NOT p_ahead_secs >= 0
       OR p_window_secs IN ('Infinity', 'NaN') OR p_rate IN ('Infinity', 'NaN')
       OR p_burst IN ('Infinity', 'NaN') OR p_ahead_secs IN ('Infinity', 'NaN') THEN
        RAISE EXCEPTION 'calsync: take_google_permits(%, wanted %, min %, limit %, window %, rate %, burst %, ahead %): need 1 <= min <= wanted, min <= limit, min <= burst, a finite positive window and rate, a finite ahead >= 0',
            p_bucket, p_wanted, p_min, p_limit, p_window_secs, p_rate, p_burst, p_ahead_secs
            USING ERRCODE = '22023';
    END IF;
    v_window := make_interval(secs => p_window_secs);

    SELECT b.tokens, b.refilled_at, b.last_start INTO v_tokens, v_refilled, v_last
    FROM calsync.google_quota_buckets b WHERE b.bucket = p_bucket FOR UPDATE;
    IF NOT FOUND THEN
        -- A new (or forgotten idle) bucket starts full, with nothing in its window.
        INSERT INTO calsync.google_quota_buckets (bucket, tokens, refilled_at, idle_after)
        VALUES (p_bucket, p_burst, clock_timestamp(), clock_timestamp())
        ON CONFLICT (bucket) DO NOTHING;
        SELECT b.tokens, b.refilled_at, b.last_start INTO v_tokens, v_refilled, v_last
        FROM calsync.google_quota_buckets b WHERE b.bucket = p_bucket FOR UPDATE;
    END IF;

    -- Never backwards, whatever the clock does.
    v_now := greatest(clock_timestamp(), v_refilled);
    v_avail := least(p_burst,
                     v_tokens + p_rate * extract(epoch FROM v_now - v_refilled)::double precision);
    -- Grants that started a window ago can be in no window from now on.
    DELETE FROM calsync.google_quota_grants g
    WHERE g.bucket = p_bucket AND g.starts_at <= v_now - v_window;

    -- As many as wanted, of those the bucket will have earned within p_ahead_secs.
    v_n := least(p_wanted::double precision, p_limit::double precision,
                 floor(v_avail + p_rate * p_ahead_secs))::integer;
    IF v_n < p_min THEN
        v_retry := (p_min - v_avail) / p_rate - p_ahead_secs;
    ELSE
        -- When the bucket has earned them, and never before an earlier grant ...
        v_start := greatest(v_now + make_interval(secs => greatest(0, (v_n - v_avail) / p_rate)),
                            v_last);
        -- ... and once the grants starting within a window before it leave room (for
        -- fewer, if at least p_min fit then). No grant starts after v_start, so that
        -- window is the fullest one containing it.
        SELECT coalesce(sum(g.permits), 0) INTO v_used
        FROM calsync.google_quota_grants g
        WHERE g.bucket = p_bucket AND g.starts_at > v_start - v_window;
        IF v_used + v_n > p_limit AND p_limit - v_used >= p_min THEN
            -- What fits now.
            v_n := p_limit - v_used;
        ELSIF v_used + v_n > p_limit THEN
            SELECT c.starts_at + v_window INTO v_start
            FROM (SELECT g.starts_at, sum(g.permits) OVER (ORDER BY g.starts_at) AS freed
                  FROM calsync.google_quota_grants g
                  WHERE g.bucket = p_bucket AND g.starts_at > v_start - v_window) c
            WHERE c.freed >= v_used + v_n - p_limit
            ORDER BY c.starts_at
            LIMIT 1;
        END IF;
        IF v_start > v_now + make_interval(secs => p_ahead_secs) THEN
            -- Too far ahead: book nothing; ask again when it is within reach.
            v_retry := extract(epoch FROM v_start - v_now)::double precision - p_ahead_secs;
            v_n := 0;
        END IF;
    END IF;

    IF v_n >= p_min THEN
        INSERT INTO calsync.google_quota_grants (bucket, starts_at, permits)
        VALUES (p_bucket, v_start, v_n);
        UPDATE calsync.google_quota_buckets b
        SET tokens = v_avail - v_n,
            refilled_at = v_now,
            last_start = v_start,
            idle_after = greatest(
                v_start + v_window,
                v_now + make_interval(secs => (p_burst - (v_avail - v_n)) / p_rate))
        WHERE b.bucket = p_bucket;
    ELSE
        UPDATE calsync.google_quota_buckets b
        SET tokens = v_avail, refilled_at = v_now
        WHERE b.bucket = p_bucket;
    END IF;

    -- Now and then forget idle buckets (students not synced lately).
    IF random() < 0.01 THEN
        PERFORM calsync.forget_idle_google_quota_buckets();
    END IF;

    IF v_n >= p_min THEN
        RETURN QUERY SELECT v_n, extract(epoch FROM v_start - v_now)::double precision,
                            0::double precision;
    ELSE
        RETURN QUERY SELECT 0, 0::double precision, greatest(v_retry, 0.001);
    END IF;
END $$;
