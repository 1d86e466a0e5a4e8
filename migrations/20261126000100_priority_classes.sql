-- Priority classes: "Sync now" does not wait behind the nightly backlog.
--
-- apalis-postgres fetches `ORDER BY priority DESC, run_at ASC` (apalis.get_jobs), so a
-- job's class is its `apalis.jobs.priority`:
--
-- * `calsync.priority_classes` (a view over constants) is the one home of the class
--   names and numbers; `calsync.class_priority(name)` and `calsync.priority_class(n)`
--   read it, and the Rust twin `calsync_domain::priority::PriorityClass` is checked
--   against it by a test. A priority between two classes belongs to the lower one (so
--   any raw INSERT has a class: apalis' default 0 is `nightly`).
-- * `calsync.request_sync(user, reason, class, due_now, caller)` enqueues, or raises the
--   priority of the user's waiting job (never lowers it, never adds a second job), and
--   on request makes a job that waits on the queue's backoff due now (a job waiting on
--   Google's quota keeps its time: `calsync.quota_waits`). It says what it did.
-- * Fairness: each caller may place `queue_settings.priority_budget_per_minute` syncs
--   per minute above the nightly class (a burst of that many, refilled continuously,
--   `calsync.priority_budgets`); beyond that a request is accepted at the nightly class.
--   So the nightly keeps everything the fast lane does not use, whatever the flood.
-- * The fast lane: a worker named '…-fast-lane' is never handed a job at or below the
--   nightly class (trigger calsync_jobs_01_fast_lane).
-- * `calsync.enqueue_sync(user, reason, class, due_now)` replaces the two-argument
--   function (same defaults for old callers, EXECUTE grants carried over).

CREATE VIEW calsync.priority_classes (name, priority, description) AS
VALUES
    ('interactive', 200, 'a person is waiting: dashboard "Sync now", calsync sync-user'),
    ('api',         100, 'other services: the HTTP API and calsync.enqueue_sync (their default)'),
    ('nightly',       0, 'the nightly pass (apalis'' default priority: raw INSERTs land here)'),
    ('maintenance', -100, 'background work that may wait for everything else');

COMMENT ON VIEW calsync.priority_classes IS
    'Priority classes of sync jobs (apalis.jobs.priority): the one definition; calsync_domain::priority::PriorityClass is its Rust twin.';

-- The priority of a class name; NULL for an unknown name.
CREATE FUNCTION calsync.class_priority(p_class text) RETURNS integer
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT priority FROM calsync.priority_classes WHERE name = p_class
$$;

-- The class of a priority: the highest class at or below it (the lowest class below all).
CREATE FUNCTION calsync.priority_class(p_priority integer) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT coalesce(
        (SELECT name FROM calsync.priority_classes WHERE priority <= p_priority ORDER BY priority DESC LIMIT 1),
        (SELECT name FROM calsync.priority_classes ORDER BY priority LIMIT 1))
$$;

-- The fast lane: every worker process keeps one of its job slots for work above the
-- nightly class, so "Sync now" starts as soon as it is fetched even while the nightly
-- backlog fills every other slot. apalis' fetch (apalis.get_jobs) marks the job it picks
-- Queued with the worker's name; for a worker whose name ends in '-fast-lane'
-- (calsync_domain::priority::FAST_LANE_SUFFIX) this trigger skips a job at or below the
-- nightly class, which then stays Pending for the other workers (the fetch returns
-- nothing). It fires only on that transition, so other updates pay nothing.
CREATE FUNCTION calsync.jobs_fast_lane() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF coalesce(NEW.priority, 0) <= calsync.class_priority('nightly') THEN
        RETURN NULL;
    END IF;
    RETURN NEW;
END $$;

-- Fires after the orphan guard and before calsync_jobs_before_write (name order).
CREATE TRIGGER calsync_jobs_01_fast_lane BEFORE UPDATE ON apalis.jobs
    FOR EACH ROW
    WHEN (NEW.status = 'Queued' AND OLD.status IN ('Pending', 'Failed') AND NEW.lock_by LIKE '%-fast-lane')
    EXECUTE FUNCTION calsync.jobs_fast_lane();

-- Fairness budget: syncs above the nightly class per caller per minute (NULL: no limit).
ALTER TABLE calsync.queue_settings
    ADD COLUMN priority_budget_per_minute integer DEFAULT 60
        CHECK (priority_budget_per_minute IS NULL OR priority_budget_per_minute >= 0);

-- One token bucket per caller (capacity and refill: the budget per minute).
CREATE TABLE calsync.priority_budgets (
    caller       text PRIMARY KEY,
    tokens       double precision NOT NULL,
    refreshed_at timestamptz NOT NULL
);

-- Jobs whose current wait is Google's quota (a rate-limit or quota answer on their last
-- attempt), written by the worker with the failed attempt (`users::record_attempt_failure`:
-- set for such a failure, removed for any other). "Due now" leaves these jobs alone.
CREATE TABLE calsync.quota_waits (
    job_id      text PRIMARY KEY REFERENCES apalis.jobs (id) ON DELETE CASCADE,
    recorded_at timestamptz NOT NULL DEFAULT now()
);

-- Enqueue a sync of one user, or raise their waiting job. Returns what happened:
--   job_id     the user's active job (new or existing)
--   outcome    'enqueued' (a new job), 'raised' (the waiting job's priority went up),
--              'unchanged' (the waiting job was already at or above the class),
--              'running' (a worker has the job; nothing changed — see docs/operations.md)
--   class      the job's class now
--   made_due   the waiting job was moved from its backoff to now (p_due_now)
--   demoted    the class asked for was above the nightly but the caller's budget was
--              spent, so the request counted as 'nightly' (and the job is below the
--              class asked for)
--   run_at     when the job is due
-- Errors: 22004 NULL user, 23503 unknown user, 22023 no calendar (unless calsync
-- provisions calendars and the user has an e-mail) or unknown class, 40001 when the
-- user's active job kept changing.
CREATE FUNCTION calsync.request_sync(
    p_user_id bigint,
    p_reason  text    DEFAULT 'api',
    p_class   text    DEFAULT 'api',
    p_due_now boolean DEFAULT false,
    p_caller  text    DEFAULT NULL)
RETURNS TABLE (job_id text, outcome text, class text, made_due boolean, demoted boolean, run_at timestamptz)
LANGUAGE plpgsql AS $$
DECLARE
    v_calendar text;
    v_email    text;
    v_exists   boolean;
    v_id       text;
    v_key      text := calsync.active_job_key(p_user_id);
    v_asked    integer := calsync.class_priority(p_class);
    v_nightly  integer := calsync.class_priority('nightly');
    v_prio     integer;
    v_caller   text := coalesce(p_caller, 'sql:' || session_user);
    v_budget   integer;
    v_tokens   double precision;
    v_status   text;
    v_old_prio integer;
    v_run_at   timestamptz;
    v_due      boolean;
BEGIN
    IF p_user_id IS NULL THEN
        RAISE EXCEPTION 'calsync.enqueue_sync: user id must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF v_asked IS NULL THEN
        RAISE EXCEPTION 'calsync.enqueue_sync: unknown priority class %', coalesce(quote_literal(p_class), 'NULL')
            USING ERRCODE = '22023',
                  HINT = 'Known classes: ' || (SELECT string_agg(name, ', ' ORDER BY priority DESC) FROM calsync.priority_classes) || '.';
    END IF;
    SELECT true, google_course_calendar_id, email INTO v_exists, v_calendar, v_email
    FROM users WHERE id = p_user_id;
    IF v_exists IS NULL THEN
        RAISE EXCEPTION 'calsync.enqueue_sync: unknown user %', p_user_id USING ERRCODE = '23503';
    END IF;
    IF (v_calendar IS NULL OR v_calendar = '')
       AND NOT (calsync.owns_calendars() AND coalesce(v_email, '') <> '') THEN
        RAISE EXCEPTION 'calsync.enqueue_sync: user % has no google_course_calendar_id', p_user_id
            USING ERRCODE = '22023';
    END IF;

    -- Fairness: above the nightly class only within the caller's budget. The bucket row
    -- stays locked until the caller's transaction ends, so concurrent requests of one
    -- caller count one after the other.
    v_prio := v_asked;
    demoted := false;
    IF v_asked > v_nightly THEN
        SELECT s.priority_budget_per_minute INTO v_budget FROM calsync.queue_settings s;
        IF v_budget IS NOT NULL THEN
            INSERT INTO calsync.priority_budgets AS b (caller, tokens, refreshed_at)
            VALUES (v_caller, v_budget, now())
            ON CONFLICT (caller) DO UPDATE
                SET tokens = least(v_budget::double precision,
                                   b.tokens + v_budget * extract(epoch FROM now() - b.refreshed_at) / 60),
                    refreshed_at = now()
            RETURNING b.tokens INTO v_tokens;
            IF v_tokens < 1 THEN
                v_prio := v_nightly;
                demoted := true;
            END IF;
        END IF;
    END IF;

    -- Insert, or find the active job and raise it. The active job may finish between
    -- a conflict and the look-up: then insert again.
    FOR attempt IN 1..5 LOOP
        INSERT INTO apalis.jobs AS j (id, job_type, job, status, attempts, max_attempts, run_at, priority, idempotency_key)
        VALUES (apalis.generate_ulid(), 'sync-calendar',
                convert_to(jsonb_build_object('user_id', p_user_id, 'reason', coalesce(p_reason, 'api'))::text, 'UTF8'),
                'Pending', 0, (SELECT default_max_attempts FROM calsync.queue_settings), now(), v_prio, v_key)
        ON CONFLICT (job_type, idempotency_key) DO NOTHING
        RETURNING j.id, j.run_at INTO v_id, v_run_at;
        IF v_id IS NOT NULL THEN
            outcome := 'enqueued';
            v_old_prio := v_prio;
            made_due := false;
        ELSE
            -- FOR UPDATE re-checks the key on the newest row version: a job that became
            -- final meanwhile (key released) is not found, and we insert again.
            SELECT j.id, j.status, j.priority, j.run_at INTO v_id, v_status, v_old_prio, v_run_at
            FROM apalis.jobs j
            WHERE j.job_type = 'sync-calendar' AND j.idempotency_key = v_key
            FOR UPDATE;
            IF v_id IS NULL THEN
                CONTINUE;
            END IF;
            made_due := false;
            IF v_status IN ('Queued', 'Running') THEN
                -- A worker has it: nothing to raise, never a second job.
                outcome := 'running';
                v_prio := v_old_prio;
            ELSE
                -- Waiting (Pending, or Failed and waiting for its retry).
                v_prio := greatest(v_old_prio, v_prio);
                v_due := p_due_now AND v_status = 'Failed' AND v_run_at > now()
                         AND NOT EXISTS (SELECT 1 FROM calsync.quota_waits w WHERE w.job_id = v_id);
                IF v_prio > v_old_prio OR v_due THEN
                    UPDATE apalis.jobs j
                    SET priority = v_prio, run_at = CASE WHEN v_due THEN now() ELSE j.run_at END
                    WHERE j.id = v_id
                    RETURNING j.run_at INTO v_run_at;
                    made_due := v_due;
                    -- Wake idle workers now rather than at their next poll.
                    PERFORM pg_notify('apalis::job::insert',
                        json_build_object('job_type', 'sync-calendar', 'id', v_id)::text);
                END IF;
                outcome := CASE WHEN v_prio > v_old_prio THEN 'raised' ELSE 'unchanged' END;
            END IF;
        END IF;
        -- The budget pays only for a job this request put above the nightly class.
        IF v_asked > v_nightly AND NOT demoted AND v_budget IS NOT NULL
           AND v_prio > v_nightly AND (outcome = 'enqueued' OR outcome = 'raised') THEN
            UPDATE calsync.priority_budgets b SET tokens = b.tokens - 1 WHERE b.caller = v_caller;
        END IF;
        -- Report the budget only where it made a difference.
        demoted := demoted AND outcome <> 'running' AND v_prio < v_asked;
        job_id := v_id;
        class := calsync.priority_class(v_prio);
        run_at := v_run_at;
        RETURN NEXT;
        RETURN;
    END LOOP;
    RAISE EXCEPTION 'calsync.enqueue_sync: user %''s active job kept changing; try again', p_user_id
        USING ERRCODE = '40001';
END $$;

-- The plain-SQL enqueue API gains a class and "due now" (defaults keep every existing
-- call working: `calsync.enqueue_sync(42)` and `(42, 'registrar')` enqueue at 'api').
-- Two functions that both accept `(bigint)` would make such calls ambiguous, so the
-- two-argument function is replaced, not overloaded; EXECUTE grants operators gave on
-- it are carried over to the new signature.
CREATE TEMP TABLE calsync_enqueue_sync_acl ON COMMIT DROP AS
SELECT a.grantee, a.privilege_type
FROM pg_proc p, aclexplode(p.proacl) a
WHERE p.oid = 'calsync.enqueue_sync(bigint, text)'::regprocedure
  AND a.privilege_type = 'EXECUTE' AND a.grantee <> p.proowner;
CREATE TEMP TABLE calsync_enqueue_sync_public ON COMMIT DROP AS
SELECT (p.proacl IS NULL OR EXISTS (SELECT 1 FROM aclexplode(p.proacl) a WHERE a.grantee = 0)) AS public_execute
FROM pg_proc p
WHERE p.oid = 'calsync.enqueue_sync(bigint, text)'::regprocedure;

DROP FUNCTION calsync.enqueue_sync(bigint, text);

-- Enqueue (or raise) and return the job id; see calsync.request_sync. The caller, for
-- the fairness budget, is the session's role.
CREATE FUNCTION calsync.enqueue_sync(
    p_user_id bigint,
    p_reason  text    DEFAULT 'api',
    p_class   text    DEFAULT 'api',
    p_due_now boolean DEFAULT false)
RETURNS text LANGUAGE sql AS $$
    SELECT r.job_id FROM calsync.request_sync(p_user_id, p_reason, p_class, p_due_now) r
$$;

DO $$
DECLARE
    r record;
BEGIN
    IF NOT (SELECT public_execute FROM calsync_enqueue_sync_public) THEN
        REVOKE EXECUTE ON FUNCTION calsync.enqueue_sync(bigint, text, text, boolean) FROM PUBLIC;
        REVOKE EXECUTE ON FUNCTION calsync.request_sync(bigint, text, text, boolean, text) FROM PUBLIC;
    END IF;
    FOR r IN SELECT grantee FROM calsync_enqueue_sync_acl WHERE grantee <> 0 LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION calsync.enqueue_sync(bigint, text, text, boolean) TO %s',
                       r.grantee::regrole::text);
        EXECUTE format('GRANT EXECUTE ON FUNCTION calsync.request_sync(bigint, text, text, boolean, text) TO %s',
                       r.grantee::regrole::text);
    END LOOP;
END $$;
