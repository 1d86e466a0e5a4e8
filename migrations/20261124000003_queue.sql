-- Queue rules on top of apalis-postgres (its schema is set up first by `calsync migrate`):
-- payload validation, one active job per user, retry backoff, crash-loop guard,
-- nightly run bookkeeping, and the plain-SQL enqueue API for other services.

-- Tunables, one row. Operators may UPDATE it; the worker never caches it.
CREATE TABLE calsync.queue_settings (
    singleton            boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    backoff_base_seconds double precision NOT NULL DEFAULT 30 CHECK (backoff_base_seconds >= 0),
    backoff_cap_seconds  double precision NOT NULL DEFAULT 3600 CHECK (backoff_cap_seconds >= 0),
    default_max_attempts integer NOT NULL DEFAULT 8 CHECK (default_max_attempts > 0)
);
INSERT INTO calsync.queue_settings DEFAULT VALUES;

-- One row per nightly (or manual) fan-out pass. scheduled_for is unique: the first
-- replica to insert a tick's row does the pass, every other replica sees the conflict.
CREATE TABLE calsync.nightly_runs (
    id                  bigserial PRIMARY KEY,
    scheduled_for       timestamptz NOT NULL UNIQUE,
    trigger             text NOT NULL CHECK (trigger IN ('cron', 'manual')),
    started_at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    enqueue_finished_at timestamptz,
    users_due           integer NOT NULL DEFAULT 0,
    enqueued            integer NOT NULL DEFAULT 0,
    already_queued      integer NOT NULL DEFAULT 0,
    succeeded           integer NOT NULL DEFAULT 0,
    failed              integer NOT NULL DEFAULT 0,
    finished_at         timestamptz,
    enqueued_by         text NOT NULL DEFAULT ''
);

-- Audit log of operator actions (dashboard, CLI).
CREATE TABLE calsync.audit_log (
    id     bigserial PRIMARY KEY,
    at     timestamptz NOT NULL DEFAULT now(),
    actor  text NOT NULL,
    action text NOT NULL,
    detail jsonb NOT NULL DEFAULT '{}'
);

-- Parse a sync job's payload. NULL when it is not a JSON object.
-- COST tells the planner this is expensive, so it prefers the expression indexes below
-- over evaluating it row by row.
CREATE FUNCTION calsync.job_payload(job bytea) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE COST 1000 AS $$
DECLARE
    parsed jsonb;
BEGIN
    parsed := convert_from(job, 'UTF8')::jsonb;
    IF jsonb_typeof(parsed) <> 'object' THEN
        RETURN NULL;
    END IF;
    RETURN parsed;
EXCEPTION WHEN others THEN
    RETURN NULL;
END $$;

-- (expression, id DESC): "this user's / this run's jobs, newest first" is an index range
-- scan that stops after one page, at any table size.
CREATE INDEX calsync_jobs_user_idx ON apalis.jobs (((calsync.job_payload(job) ->> 'user_id')), id DESC)
    WHERE job_type = 'sync-calendar';
CREATE INDEX calsync_jobs_run_idx ON apalis.jobs (((calsync.job_payload(job) ->> 'run_id')), id DESC)
    WHERE job_type = 'sync-calendar';
-- Dashboard listing: newest first per state and queue, keyset on id.
CREATE INDEX calsync_jobs_status_id_idx ON apalis.jobs (status, id DESC);
CREATE INDEX calsync_jobs_type_status_id_idx ON apalis.jobs (job_type, status, id DESC);

-- A job of ours is "active" while it is pending, queued, running or failed with
-- attempts left. Active jobs hold idempotency_key 'sync-user:<id>' (unique per queue
-- in apalis), which is what makes "one pending/running job per user" a constraint
-- rather than a hope. The key is released when the job reaches a final state.
CREATE FUNCTION calsync.jobs_before_write() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    settings calsync.queue_settings;
    payload  jsonb;
    backoff  double precision;
BEGIN
    IF NEW.job_type <> 'sync-calendar' THEN
        RETURN NEW;
    END IF;

    IF TG_OP = 'INSERT' THEN
        -- Bytes the worker cannot decode would stop it (apalis treats a decode
        -- failure as a backend error), so they never get in.
        payload := calsync.job_payload(NEW.job);
        IF payload IS NULL THEN
            RAISE EXCEPTION 'calsync: malformed sync-calendar job payload: expected a UTF-8 JSON object like {"user_id": 42}, got %',
                left(encode(NEW.job, 'escape'), 200)
                USING ERRCODE = '22P02';
        END IF;
        RETURN NEW;
    END IF;

    -- UPDATE
    IF NEW.status IN ('Done', 'Killed')
       OR (NEW.status = 'Failed' AND NEW.attempts >= NEW.max_attempts) THEN
        NEW.idempotency_key := NULL;
    END IF;

    -- Crash-loop guard: apalis re-enqueues abandoned jobs (worker died or missed its
    -- heartbeats) without looking at max_attempts. A job that kills its worker would
    -- loop forever; give up once it has used up its attempts.
    IF NEW.status = 'Pending' AND OLD.status IN ('Queued', 'Running')
       AND NEW.attempts >= NEW.max_attempts THEN
        NEW.status := 'Killed';
        NEW.idempotency_key := NULL;
        NEW.done_at := now();
        NEW.last_result := jsonb_build_object('Err', format(
            'calsync: gave up after %s attempts; the last one was abandoned (worker crashed, was killed or lost its database connection): %s',
            NEW.attempts, coalesce(NEW.last_result ->> 'Err', 'no detail')));
    END IF;

    -- Retry backoff: apalis-postgres refetches failed jobs as soon as run_at has
    -- passed, so push run_at out: exponential in the attempt number, capped, with
    -- full jitter on the upper half so a burst of failures does not retry in lockstep.
    IF NEW.status = 'Failed' AND OLD.status <> 'Failed' AND NEW.attempts < NEW.max_attempts THEN
        SELECT * INTO settings FROM calsync.queue_settings;
        backoff := least(settings.backoff_cap_seconds,
                         settings.backoff_base_seconds * power(2, greatest(NEW.attempts - 1, 0)));
        backoff := backoff * (0.5 + random() / 2);
        NEW.run_at := now() + make_interval(secs => backoff);
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER calsync_jobs_before_write BEFORE INSERT OR UPDATE ON apalis.jobs
    FOR EACH ROW EXECUTE FUNCTION calsync.jobs_before_write();

-- Nightly run counters: count each job of a run once, when it reaches a final state.
CREATE FUNCTION calsync.jobs_after_update() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    run_id   bigint;
    was_final boolean;
    is_final  boolean;
BEGIN
    IF NEW.job_type <> 'sync-calendar' THEN
        RETURN NULL;
    END IF;
    was_final := OLD.status IN ('Done', 'Killed') OR (OLD.status = 'Failed' AND OLD.attempts >= OLD.max_attempts);
    is_final := NEW.status IN ('Done', 'Killed') OR (NEW.status = 'Failed' AND NEW.attempts >= NEW.max_attempts);
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
EXCEPTION WHEN invalid_text_representation THEN
    RETURN NULL;
END $$;

CREATE TRIGGER calsync_jobs_after_update AFTER UPDATE OF status, attempts ON apalis.jobs
    FOR EACH ROW EXECUTE FUNCTION calsync.jobs_after_update();

-- Plain-SQL enqueue API for other services.
--
--   SELECT calsync.enqueue_sync(42);                 -- returns the job id
--   SELECT calsync.enqueue_sync(42, 'registrar');    -- with a reason for the dashboard
--
-- Safe to call twice: when the user already has an active job its id is returned and
-- nothing is inserted. Unknown users raise SQLSTATE 23503, users without a course
-- calendar raise SQLSTATE 22023; nothing is enqueued in either case.
CREATE FUNCTION calsync.enqueue_sync(p_user_id bigint, p_reason text DEFAULT 'api')
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    v_calendar text;
    v_exists   boolean;
    v_id       text;
    v_key      text := 'sync-user:' || p_user_id;
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

    INSERT INTO apalis.jobs (id, job_type, job, status, attempts, max_attempts, run_at, priority, idempotency_key)
    VALUES (apalis.generate_ulid(), 'sync-calendar',
            convert_to(jsonb_build_object('user_id', p_user_id, 'reason', coalesce(p_reason, 'api'))::text, 'UTF8'),
            'Pending', 0, (SELECT default_max_attempts FROM calsync.queue_settings), now(), 0, v_key)
    ON CONFLICT (job_type, idempotency_key) DO NOTHING
    RETURNING id INTO v_id;

    IF v_id IS NULL THEN
        SELECT id INTO v_id FROM apalis.jobs WHERE job_type = 'sync-calendar' AND idempotency_key = v_key;
    END IF;
    RETURN v_id;
END $$;

-- The earliest next attempt a job asked for (Google's daily quota says "not before an
-- hour"); the backoff trigger never schedules a retry earlier than this.
CREATE TABLE calsync.retry_hints (
    job_id     text PRIMARY KEY,
    not_before timestamptz NOT NULL
);

CREATE OR REPLACE FUNCTION calsync.apply_retry_hint() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    hint timestamptz;
BEGIN
    IF NEW.job_type = 'sync-calendar' AND NEW.status = 'Failed' AND OLD.status <> 'Failed' THEN
        DELETE FROM calsync.retry_hints WHERE job_id = NEW.id RETURNING not_before INTO hint;
        IF hint IS NOT NULL AND hint > NEW.run_at THEN
            NEW.run_at := hint;
        END IF;
    ELSIF NEW.status IN ('Done', 'Killed') THEN
        DELETE FROM calsync.retry_hints WHERE job_id = NEW.id;
    END IF;
    RETURN NEW;
END $$;

-- Runs after calsync_jobs_before_write (triggers fire in name order) so it sees the
-- backoff's run_at.
CREATE TRIGGER calsync_jobs_retry_hint BEFORE UPDATE ON apalis.jobs
    FOR EACH ROW EXECUTE FUNCTION calsync.apply_retry_hint();
