-- Queue rules, one home per fact.
--
-- * `calsync.active_job_key(user)` and `calsync.job_is_final(status, attempts,
--   max_attempts)` are the only definitions of "the key an active job holds" and "this
--   job will not run again" (inlinable SQL, so indexes and plans are unaffected); the
--   Rust twins in `calsync_domain::queue` are checked against them by a test.
-- * `calsync.retry_backoff(attempt)` is the only definition of the retry backoff.
-- * One row trigger on `apalis.jobs` enforces the rules for every writer, raw INSERTs
--   by other services included: it refuses rows a worker could not fetch, gives every
--   active sync job its user's key (so a second active job for a user is impossible),
--   guards against crash loops, and schedules retries (backoff and retry hints).

-- The idempotency key an active sync job of `user_id` holds ('sync-user:<id>').
CREATE FUNCTION calsync.active_job_key(user_id bigint) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT 'sync-user:' || $1::text  -- text || text: immutable, so it inlines
$$;

-- Whether a job with this apalis status and attempt count will never run again:
-- Done, Killed, or Failed with no attempts left.
CREATE FUNCTION calsync.job_is_final(status text, attempts integer, max_attempts integer)
RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT $1 IN ('Done', 'Killed') OR ($1 = 'Failed' AND $2 >= $3)
$$;

-- The user a sync job's payload names: a positive integer that fits a bigint, else NULL
-- (such a job holds no key; the worker kills it as malformed).
CREATE FUNCTION calsync.job_user_id(payload jsonb) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN jsonb_typeof($1 -> 'user_id') = 'number'
             AND ($1 ->> 'user_id') ~ '^[1-9][0-9]{0,18}$'
             AND ($1 ->> 'user_id')::numeric <= 9223372036854775807
        THEN ($1 ->> 'user_id')::bigint
    END
$$;

-- How long to wait before attempt `attempt` + 1 after attempt `attempt` failed:
-- min(cap, base · 2^(attempt-1)) scaled by 0.5 + jitter/2, so `jitter` in [0, 1] spreads
-- retries over the upper half of the window (a burst of failures does not retry in
-- lockstep). Reads `calsync.queue_settings` on every call: operators may change it live.
CREATE FUNCTION calsync.retry_backoff(attempt integer, jitter double precision)
RETURNS interval LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT make_interval(secs =>
        least(s.backoff_cap_seconds,
              s.backoff_base_seconds * power(2::double precision, least(greatest($1 - 1, 0), 60)))
        * (0.5 + least(greatest(coalesce($2, 1), 0), 1) / 2))
    FROM calsync.queue_settings s
$$;

-- The backoff with random jitter: what the queue trigger uses.
CREATE FUNCTION calsync.retry_backoff(attempt integer) RETURNS interval
LANGUAGE sql VOLATILE AS $$
    SELECT calsync.retry_backoff($1, random())
$$;

-- The queue trigger (replaces the first landing's two BEFORE triggers with one).
CREATE OR REPLACE FUNCTION calsync.jobs_before_write() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    payload  jsonb;
    uid      bigint;
    key      text;
    existing text;
    hint     timestamptz;
BEGIN
    IF NEW.job_type <> 'sync-calendar' THEN
        RETURN NEW;
    END IF;

    -- Rows apalis-postgres cannot turn into a task stop the worker that fetches them
    -- (and cost every job of the same batch an attempt), so no writer may create one:
    -- checked on INSERT and on every UPDATE (OLD is NULL on INSERT).
    IF NEW.id !~ '^[0-7][0-9A-HJKMNP-TV-Z]{25}$' THEN
        RAISE EXCEPTION 'calsync: sync-calendar job id % is not an upper-case ULID (use apalis.generate_ulid(), or better calsync.enqueue_sync)',
            left(NEW.id, 60)
            USING ERRCODE = '22P02';
    END IF;
    IF NEW.status NOT IN ('Pending', 'Queued', 'Running', 'Done', 'Failed', 'Killed') THEN
        RAISE EXCEPTION 'calsync: sync-calendar job status % is not an apalis status', left(NEW.status, 60)
            USING ERRCODE = '23514';
    END IF;
    IF NEW.attempts < 0 OR NEW.max_attempts < 1 THEN
        RAISE EXCEPTION 'calsync: sync-calendar job needs attempts >= 0 and max_attempts >= 1, got % and %',
            NEW.attempts, NEW.max_attempts
            USING ERRCODE = '23514';
    END IF;
    IF NEW.metadata IS NOT NULL AND NEW.metadata IS DISTINCT FROM OLD.metadata
       AND array_position(avals(NEW.metadata), NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'calsync: sync-calendar job metadata must not hold NULL values'
            USING ERRCODE = '23514';
    END IF;

    IF TG_OP = 'INSERT' THEN
        -- The payload itself is decoded by calsync's handler, which kills a job whose
        -- JSON it cannot use; bytes that are not a JSON object are refused here.
        payload := calsync.job_payload(NEW.job);
        IF payload IS NULL THEN
            RAISE EXCEPTION 'calsync: malformed sync-calendar job payload: expected a UTF-8 JSON object like {"user_id": 42}, got %',
                left(encode(NEW.job, 'escape'), 200)
                USING ERRCODE = '22P02';
        END IF;
        -- One active job per user, for every writer: an active job holds its user's key
        -- (unique per queue). calsync's own inserts pass the key and use ON CONFLICT; a
        -- raw INSERT that did not is refused with a clear error when the user already
        -- has an active job (two such INSERTs racing get the unique index's error).
        uid := calsync.job_user_id(payload);
        IF uid IS NULL OR calsync.job_is_final(NEW.status, NEW.attempts, NEW.max_attempts) THEN
            NEW.idempotency_key := NULL;
        ELSE
            key := calsync.active_job_key(uid);
            IF NEW.idempotency_key IS DISTINCT FROM key THEN
                SELECT id INTO existing FROM apalis.jobs
                WHERE job_type = NEW.job_type AND idempotency_key = key;
                IF existing IS NOT NULL THEN
                    RAISE EXCEPTION 'calsync: user % already has an active sync job %', uid, existing
                        USING ERRCODE = '23505',
                              HINT = format('SELECT calsync.enqueue_sync(%s) enqueues or returns the active job.', uid);
                END IF;
                NEW.idempotency_key := key;
            END IF;
        END IF;
        RETURN NEW;
    END IF;

    -- UPDATE

    -- Crash-loop guard: apalis re-enqueues abandoned jobs (worker died or missed its
    -- heartbeats) without looking at max_attempts. A job that kills its worker would
    -- loop forever; give up once it has used up its attempts.
    IF NEW.status = 'Pending' AND OLD.status IN ('Queued', 'Running')
       AND NEW.attempts >= NEW.max_attempts THEN
        NEW.status := 'Killed';
        NEW.done_at := now();
        NEW.last_result := jsonb_build_object('Err', format(
            'calsync: gave up after %s attempts; the last one was abandoned (worker crashed, was killed or lost its database connection): %s',
            NEW.attempts, coalesce(NEW.last_result ->> 'Err', 'no detail')));
    END IF;

    IF calsync.job_is_final(NEW.status, NEW.attempts, NEW.max_attempts) THEN
        -- A final job releases its user's key and forgets its retry hint.
        NEW.idempotency_key := NULL;
        IF NOT calsync.job_is_final(OLD.status, OLD.attempts, OLD.max_attempts) THEN
            DELETE FROM calsync.retry_hints WHERE job_id = NEW.id;
        END IF;
        RETURN NEW;
    END IF;

    -- An active job: re-derive its key when it was re-activated (an operator's retry,
    -- a raw UPDATE), its payload was rewritten, or someone changed the key. The unique
    -- index then refuses a second active job for the user.
    IF NEW.idempotency_key IS NULL
       OR NEW.idempotency_key IS DISTINCT FROM OLD.idempotency_key
       OR NEW.job IS DISTINCT FROM OLD.job THEN
        uid := calsync.job_user_id(calsync.job_payload(NEW.job));
        NEW.idempotency_key := CASE WHEN uid IS NOT NULL THEN calsync.active_job_key(uid) END;
    END IF;

    -- Retry scheduling: apalis-postgres refetches failed jobs as soon as run_at has
    -- passed, so push run_at out by the backoff, and never before a retry hint the
    -- handler recorded for this attempt (e.g. Google's daily quota: "not before an hour").
    IF NEW.status = 'Failed' AND OLD.status <> 'Failed' THEN
        NEW.run_at := now() + calsync.retry_backoff(NEW.attempts);
        DELETE FROM calsync.retry_hints WHERE job_id = NEW.id RETURNING not_before INTO hint;
        IF hint IS NOT NULL AND hint > NEW.run_at THEN
            NEW.run_at := hint;
        END IF;
    END IF;
    RETURN NEW;
END $$;

DROP TRIGGER calsync_jobs_retry_hint ON apalis.jobs;
DROP FUNCTION calsync.apply_retry_hint();

-- Nightly run counters: count each job of a run once, when it reaches a final state.
CREATE OR REPLACE FUNCTION calsync.jobs_after_update() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    run_id    bigint;
    was_final boolean;
    is_final  boolean;
BEGIN
    IF NEW.job_type <> 'sync-calendar' THEN
        RETURN NULL;
    END IF;
    was_final := calsync.job_is_final(OLD.status, OLD.attempts, OLD.max_attempts);
    is_final := calsync.job_is_final(NEW.status, NEW.attempts, NEW.max_attempts);
    IF was_final = is_final THEN
        RETURN NULL;
    END IF;
    run_id := (calsync.job_payload(NEW.job) ->> 'run_id')::bigint;
    IF run_id IS NULL THEN
        RETURN NULL;
    END IF;
    IF is_final THEN
        UPDATE calsync.nightly_runs r
        SET succeeded = r.succeeded + (NEW.status = 'Done')::int,
            failed = r.failed + (NEW.status <> 'Done')::int,
            finished_at = CASE WHEN r.enqueue_finished_at IS NOT NULL
                                AND r.succeeded + r.failed + 1 >= r.enqueued
                               THEN now() ELSE r.finished_at END
        WHERE r.id = run_id;
    ELSE
        -- An operator retried a finished job: it is no longer counted as finished.
        UPDATE calsync.nightly_runs r
        SET succeeded = r.succeeded - (OLD.status = 'Done')::int,
            failed = r.failed - (OLD.status <> 'Done')::int,
            finished_at = NULL
        WHERE r.id = run_id;
    END IF;
    RETURN NULL;
EXCEPTION WHEN invalid_text_representation OR numeric_value_out_of_range THEN
    RETURN NULL;
END $$;

-- Plain-SQL enqueue API for other services (same contract as before; the key comes
-- from calsync.active_job_key). Calls from other services are not audited; calsync's
-- own callers (CLI, HTTP API, dashboard) audit inside the same transaction.
CREATE OR REPLACE FUNCTION calsync.enqueue_sync(p_user_id bigint, p_reason text DEFAULT 'api')
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    v_calendar text;
    v_exists   boolean;
    v_id       text;
    v_key      text := calsync.active_job_key(p_user_id);
BEGIN
    IF p_user_id IS NULL THEN
        RAISE EXCEPTION 'calsync.enqueue_sync: user id must not be NULL' USING ERRCODE = '22004';
    END IF;
    SELECT true, google_course_calendar_id INTO v_exists, v_calendar FROM users WHERE id = p_user_id;
    IF v_exists IS NULL THEN
        RAISE EXCEPTION 'calsync.enqueue_sync: unknown user %', p_user_id USING ERRCODE = '23503';
    END IF;
    IF v_calendar IS NULL OR v_calendar = '' THEN
        RAISE EXCEPTION 'calsync.enqueue_sync: user % has no google_course_calendar_id', p_user_id
            USING ERRCODE = '22023';
    END IF;

    -- Insert, or return the active job. The active job may finish between a conflict
    -- and the look-up: then insert again.
    FOR attempt IN 1..5 LOOP
        INSERT INTO apalis.jobs (id, job_type, job, status, attempts, max_attempts, run_at, priority, idempotency_key)
        VALUES (apalis.generate_ulid(), 'sync-calendar',
                convert_to(jsonb_build_object('user_id', p_user_id, 'reason', coalesce(p_reason, 'api'))::text, 'UTF8'),
                'Pending', 0, (SELECT default_max_attempts FROM calsync.queue_settings), now(), 0, v_key)
        ON CONFLICT (job_type, idempotency_key) DO NOTHING
        RETURNING id INTO v_id;
        IF v_id IS NULL THEN
            SELECT id INTO v_id FROM apalis.jobs WHERE job_type = 'sync-calendar' AND idempotency_key = v_key;
        END IF;
        IF v_id IS NOT NULL THEN
            RETURN v_id;
        END IF;
    END LOOP;
    RAISE EXCEPTION 'calsync.enqueue_sync: user %''s active job kept changing; try again', p_user_id
        USING ERRCODE = '40001';
END $$;
