-- Job attempts and the throughput roll-up behind the dashboard's health charts.
--
-- apalis keeps only the last attempt's result (`last_result`), so every attempt is
-- recorded as it ends, by a trigger on apalis.jobs status transitions: every worker,
-- whatever its version, is covered. Rows are append-only (one INSERT per attempt, no
-- UPDATE of any shared row) and go away with their job (ON DELETE CASCADE), so
-- `queue::prune_finished_jobs` prunes them too.
--
-- The charts read minute and hour buckets that an incremental roll-up maintains: it
-- adds the attempts newer than a watermark. The watermark is a transaction id, not a
-- row id: attempts are committed out of id order, but every transaction older than a
-- snapshot's xmin has finished, so "tx < xmin" rows are final and visible. A roll-up
-- adds the rows with watermark <= tx < xmin of its own statement's snapshot and moves
-- the watermark to that xmin, in one statement under an advisory lock: each attempt is
-- counted exactly once. Readers add the not yet rolled-up rows (tx >= watermark) in the
-- same statement that reads the buckets, so the charts are exact and current.

-- The ONE place that classifies how an attempt ended, from an apalis.jobs status
-- transition. NULL: the transition does not end an attempt (an attempt runs while the
-- job is Queued or Running; apalis sets lock_at when it fetches and again when it
-- starts the task).
--   done      the attempt succeeded (Done);
--   retried   it failed and the job will run again (Failed with attempts left);
--   abandoned the worker died, shut down or missed its heartbeats: apalis put the job
--             back to Pending (it runs again);
--   failed    it failed and the job is over (Killed, or Failed with no attempts left;
--             a crash-looping job the queue trigger kills counts here too).
-- "Is the job over" is the same rule as the release of the active-job key in
-- calsync.jobs_before_write; when calsync.job_is_final(...) lands, the 'failed' branch
-- becomes `WHEN calsync.job_is_final(new_status, attempts, max_attempts) THEN 'failed'`.
CREATE FUNCTION calsync.attempt_outcome(old_status text, new_status text, attempts integer, max_attempts integer)
RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN old_status NOT IN ('Queued', 'Running') OR new_status IN ('Queued', 'Running') THEN NULL
        WHEN new_status = 'Done' THEN 'done'
        -- Final but not done: killed, or failed with no attempts left (the one home of
        -- "is this job final" is calsync.job_is_final).
        WHEN calsync.job_is_final(new_status, attempts, max_attempts) THEN 'failed'
        WHEN new_status = 'Failed' THEN 'retried'
        WHEN new_status = 'Pending' THEN 'abandoned'
    END
$$;

-- The primary key (job_id, id) also serves the timeline ("this job's attempts in
-- order") and the cascade from apalis.jobs: one index fewer to maintain on the
-- acknowledgement path.
CREATE TABLE calsync.job_attempts (
    id          bigint GENERATED ALWAYS AS IDENTITY,
    job_id      text NOT NULL REFERENCES apalis.jobs (id) ON DELETE CASCADE,
    queue       text NOT NULL,
    -- apalis' attempt counter after the attempt (restarts at 1 after an operator retry).
    attempt     integer NOT NULL,
    -- lock_at when the attempt ended: when the worker started it (or fetched it).
    started_at  timestamptz,
    finished_at timestamptz NOT NULL,
    outcome     text NOT NULL CHECK (outcome IN ('done', 'retried', 'abandoned', 'failed')),
    error       text,
    worker      text,
    -- The inserting transaction: the roll-up's watermark (see above).
    tx          xid8 NOT NULL DEFAULT pg_current_xact_id(),
    PRIMARY KEY (job_id, id)
);
CREATE INDEX job_attempts_tx_idx ON calsync.job_attempts (tx);

CREATE FUNCTION calsync.record_job_attempt() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    v_outcome text := calsync.attempt_outcome(OLD.status, NEW.status, NEW.attempts, NEW.max_attempts);
BEGIN
    INSERT INTO calsync.job_attempts (job_id, queue, attempt, started_at, finished_at, outcome, error, worker)
    VALUES (NEW.id, NEW.job_type, NEW.attempts, OLD.lock_at, now(), v_outcome,
            CASE WHEN v_outcome <> 'done' THEN left(NEW.last_result ->> 'Err', 10000) END,
            OLD.lock_by);
    RETURN NULL;
END $$;

CREATE TRIGGER calsync_jobs_record_attempt AFTER UPDATE OF status ON apalis.jobs
    FOR EACH ROW
    WHEN (calsync.attempt_outcome(OLD.status, NEW.status, NEW.attempts, NEW.max_attempts) IS NOT NULL)
    EXECUTE FUNCTION calsync.record_job_attempt();

-- Jobs that ended before this migration: their last attempt is all apalis kept.
INSERT INTO calsync.job_attempts (job_id, queue, attempt, started_at, finished_at, outcome, error, worker)
SELECT j.id, j.job_type, j.attempts, j.lock_at, coalesce(j.done_at, j.lock_at),
       calsync.attempt_outcome('Running', j.status, j.attempts, j.max_attempts),
       CASE WHEN j.status <> 'Done' THEN left(j.last_result ->> 'Err', 10000) END,
       j.lock_by
FROM apalis.jobs j
WHERE j.lock_at IS NOT NULL
  AND j.status IN ('Done', 'Killed', 'Failed');

-- Search by error text: a trigram index when the pg_trgm extension (PostgreSQL's
-- contrib) is available. Without it the search still works, scanning every recorded
-- error; the dashboard says so. Install contrib, then run
--   CREATE EXTENSION pg_trgm;
--   CREATE INDEX job_attempts_error_trgm_idx ON calsync.job_attempts
--       USING gin (error gin_trgm_ops) WHERE error IS NOT NULL;
DO $$
BEGIN
    CREATE EXTENSION IF NOT EXISTS pg_trgm;
EXCEPTION WHEN others THEN
    RAISE WARNING 'calsync: the pg_trgm extension is not available (%): searching jobs by error text will scan every recorded error instead of using an index', SQLERRM;
END $$;

DO $$
DECLARE
    v_schema name;
BEGIN
    SELECT n.nspname INTO v_schema
    FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
    WHERE e.extname = 'pg_trgm';
    IF v_schema IS NOT NULL THEN
        EXECUTE format('CREATE INDEX job_attempts_error_trgm_idx ON calsync.job_attempts '
                       'USING gin (error %I.gin_trgm_ops) WHERE error IS NOT NULL', v_schema);
    END IF;
END $$;

-- Attempts per minute (kept 48 hours) and per hour (kept 90 days), by queue and
-- outcome, with the summed duration of the attempts whose start is known.
CREATE TABLE calsync.job_stats_minute (
    bucket      timestamptz NOT NULL,
    queue       text NOT NULL,
    done        integer NOT NULL DEFAULT 0,
    retried     integer NOT NULL DEFAULT 0,
    abandoned   integer NOT NULL DEFAULT 0,
    failed      integer NOT NULL DEFAULT 0,
    timed       integer NOT NULL DEFAULT 0,
    duration_ms bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (bucket, queue)
);
CREATE TABLE calsync.job_stats_hour (LIKE calsync.job_stats_minute INCLUDING ALL);

-- The roll-up's watermark: every attempt with tx < watermark is in the buckets, none
-- with tx >= watermark is. Written once per roll-up, never per job.
CREATE TABLE calsync.job_stats_rollup (
    singleton    boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    watermark    xid8 NOT NULL,
    rolled_up_at timestamptz
);
INSERT INTO calsync.job_stats_rollup (watermark) VALUES ('0');
