-- The cluster-wide Google Calendar API quota.
--
-- Google counts requests per project and per user over a sliding window (10,000 and 600
-- per minute by default) and answers 403/429 once either is exceeded. Every calsync
-- worker draws permits for its Google calls from the buckets below, in batches, so all
-- replicas together stay within the quota however many there are, without a database
-- round trip per call.
--
-- A bucket ('project', or 'user:<id>' for one student) admits a grant only when
--   * the grants of its last `window` (Google's window plus the time a worker may hold
--     a permit before the request reaches Google) leave room for it: this is what makes
--     the bound strict — the requests Google sees in any window of its length come from
--     grants within one such longer window; and
--   * its token bucket (refilled at `rate` per second up to `burst`) has the tokens:
--     this spreads the grants out evenly instead of spending a whole window's quota in
--     a burst.
-- Permits a worker never used (it died, or they expired) stay counted until they leave
-- the window: a dead replica can only leave quota unused, never let others exceed it.

CREATE TABLE calsync.google_quota_buckets (
    bucket      text PRIMARY KEY,
    -- Token bucket: tokens left at refilled_at.
    tokens      double precision NOT NULL CHECK (tokens >= 0),
    refilled_at timestamptz NOT NULL,
    -- Permits granted within the window (the sum of this bucket's grants rows).
    in_window   bigint NOT NULL DEFAULT 0 CHECK (in_window >= 0),
    -- From then on the bucket is full and has no grant in its window: the same as no
    -- row at all, so it may be deleted.
    idle_after  timestamptz NOT NULL
) WITH (fillfactor = 70);

CREATE INDEX google_quota_buckets_idle_idx ON calsync.google_quota_buckets (idle_after);

CREATE TABLE calsync.google_quota_grants (
    bucket     text NOT NULL REFERENCES calsync.google_quota_buckets ON DELETE CASCADE,
    granted_at timestamptz NOT NULL,
    permits    integer NOT NULL CHECK (permits > 0)
);

CREATE INDEX google_quota_grants_bucket_time_idx
    ON calsync.google_quota_grants (bucket, granted_at);

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

-- Take between p_min and p_wanted permits from bucket p_bucket: at most p_limit per
-- p_window_secs (sliding), drawn from a token bucket of p_rate per second and p_burst.
-- Returns the permits granted (0 or p_min..p_wanted) and, when none, how many seconds
-- until p_min could be granted. One call is one transaction holding the bucket's row
-- lock, so concurrent callers are serialised per bucket; the clock is read after the
-- lock is taken.
CREATE FUNCTION calsync.take_google_permits(
    p_bucket      text,
    p_wanted      integer,
    p_min         integer,
    p_limit       integer,
    p_window_secs double precision,
    p_rate        double precision,
    p_burst       double precision
) RETURNS TABLE (granted integer, retry_after_secs double precision)
LANGUAGE plpgsql AS $$
DECLARE
    v_window   interval;
    v_tokens   double precision;
    v_refilled timestamptz;
    v_used     bigint;
    v_now      timestamptz;
    v_avail    double precision;
    v_gone     bigint;
    v_grant    integer;
    v_wait     double precision := 0;
    v_free_at  double precision;
BEGIN
    IF p_bucket IS NULL OR p_wanted IS NULL OR p_min IS NULL OR p_limit IS NULL
       OR p_window_secs IS NULL OR p_rate IS NULL OR p_burst IS NULL
       OR p_min < 1 OR p_wanted < p_min OR p_limit < p_min OR p_burst < p_min
       OR NOT p_window_secs > 0 OR NOT p_rate > 0
       OR p_window_secs IN ('Infinity', 'NaN') OR p_rate IN ('Infinity', 'NaN')
       OR p_burst IN ('Infinity', 'NaN') THEN
        RAISE EXCEPTION 'calsync: take_google_permits(%, wanted %, min %, limit %, window %, rate %, burst %): need 1 <= min <= wanted, min <= limit, min <= burst, finite positive window and rate',
            p_bucket, p_wanted, p_min, p_limit, p_window_secs, p_rate, p_burst
            USING ERRCODE = '22023';
    END IF;
    v_window := make_interval(secs => p_window_secs);

    SELECT b.tokens, b.refilled_at, b.in_window INTO v_tokens, v_refilled, v_used
    FROM calsync.google_quota_buckets b WHERE b.bucket = p_bucket FOR UPDATE;
    IF NOT FOUND THEN
        -- A new (or forgotten idle) bucket starts full, with nothing in its window.
        INSERT INTO calsync.google_quota_buckets (bucket, tokens, refilled_at, idle_after)
        VALUES (p_bucket, p_burst, clock_timestamp(), clock_timestamp())
        ON CONFLICT (bucket) DO NOTHING;
        SELECT b.tokens, b.refilled_at, b.in_window INTO v_tokens, v_refilled, v_used
        FROM calsync.google_quota_buckets b WHERE b.bucket = p_bucket FOR UPDATE;
    END IF;

    -- Never backwards, whatever the clock does.
    v_now := greatest(clock_timestamp(), v_refilled);
    v_avail := least(p_burst,
                     v_tokens + p_rate * extract(epoch FROM v_now - v_refilled)::double precision);

    WITH gone AS (
        DELETE FROM calsync.google_quota_grants g
        WHERE g.bucket = p_bucket AND g.granted_at <= v_now - v_window
        RETURNING g.permits
    )
    SELECT coalesce(sum(gone.permits), 0) INTO v_gone FROM gone;
    v_used := greatest(v_used - v_gone, 0);

    v_grant := least(p_wanted::double precision, floor(v_avail),
                     (p_limit - v_used)::double precision)::integer;
    IF v_grant >= p_min THEN
        INSERT INTO calsync.google_quota_grants (bucket, granted_at, permits)
        VALUES (p_bucket, v_now, v_grant);
        v_used := v_used + v_grant;
    ELSE
        v_grant := 0;
        -- When the token bucket will hold p_min again ...
        v_wait := greatest(0, (p_min - v_avail) / p_rate);
        -- ... and when enough of the window's grants will have left it.
        IF p_limit - v_used < p_min THEN
            SELECT extract(epoch FROM c.granted_at + v_window - v_now)::double precision
            INTO v_free_at
            FROM (SELECT g.granted_at,
                         sum(g.permits) OVER (ORDER BY g.granted_at) AS freed
                  FROM calsync.google_quota_grants g
                  WHERE g.bucket = p_bucket) c
            WHERE c.freed >= p_min - (p_limit - v_used)
            ORDER BY c.granted_at
            LIMIT 1;
            v_wait := greatest(v_wait, coalesce(v_free_at, p_window_secs));
        END IF;
    END IF;

    UPDATE calsync.google_quota_buckets b
    SET tokens = v_avail - v_grant,
        refilled_at = v_now,
        in_window = v_used,
        idle_after = v_now + greatest(
            CASE WHEN v_used > 0 THEN v_window ELSE interval '0' END,
            make_interval(secs => (p_burst - (v_avail - v_grant)) / p_rate))
    WHERE b.bucket = p_bucket;

    -- Now and then forget idle buckets (students not synced lately).
    IF random() < 0.01 THEN
        PERFORM calsync.forget_idle_google_quota_buckets();
    END IF;

    RETURN QUERY SELECT v_grant, v_wait;
END $$;
