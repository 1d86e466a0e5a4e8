-- The queue at scale: a nightly fan-out near the cost of a bare INSERT … SELECT, and
-- acknowledgements whose cost does not grow with the finished-job history.
--
-- Measured by `calsync bench` (docs/benchmarks.md). Per inserted job the fan-out used to
-- pay, on top of apalis' own four indexes: two duplicate indexes apalis' migrations
-- left behind, four calsync indexes (two over the PL/pgSQL payload parser, which runs
-- a subtransaction per call), a PL/pgSQL row trigger that re-validated what calsync had
-- just built, and apalis' PL/pgSQL NOTIFY trigger, which does nothing for a job that is
-- not due yet. Each acknowledgement updated the nightly run's counter row (every worker
-- queued on one row lock) and kept `lock_by`, which apalis' acknowledgement filters on.

-- 1. Duplicate indexes left by apalis' migrations: unique_job_id is the primary key
--    again, lidx is idx_apalis_jobs_lock_by again. The foreign keys of the attempts and
--    of the quota waits were bound to unique_job_id; bind them to the primary key.
ALTER TABLE calsync.job_attempts DROP CONSTRAINT job_attempts_job_id_fkey;
ALTER TABLE calsync.quota_waits DROP CONSTRAINT quota_waits_job_id_fkey;
DROP INDEX IF EXISTS apalis.unique_job_id;
DROP INDEX IF EXISTS apalis.lidx;
ALTER TABLE calsync.job_attempts
    ADD CONSTRAINT job_attempts_job_id_fkey FOREIGN KEY (job_id) REFERENCES apalis.jobs (id)
    ON DELETE CASCADE NOT VALID;
ALTER TABLE calsync.job_attempts VALIDATE CONSTRAINT job_attempts_job_id_fkey;
ALTER TABLE calsync.quota_waits
    ADD CONSTRAINT quota_waits_job_id_fkey FOREIGN KEY (job_id) REFERENCES apalis.jobs (id)
    ON DELETE CASCADE;

-- 2. calsync's dashboard indexes leave out Pending jobs. The fan-out inserts only
--    Pending jobs, so it maintains none of them; a job enters them when a worker fetches
--    it (an update that writes a new entry in every index anyway). Pending jobs are
--    found through apalis' partial fetch index (active jobs only), a user's pending job
--    through its active-job key, a run's jobs through the run's id range (below).
DROP INDEX apalis.calsync_jobs_status_id_idx;
DROP INDEX apalis.calsync_jobs_type_status_id_idx;
DROP INDEX apalis.calsync_jobs_user_idx;
DROP INDEX apalis.calsync_jobs_run_idx;
CREATE INDEX calsync_jobs_status_id_idx ON apalis.jobs (status, id DESC)
    WHERE status <> 'Pending';
CREATE INDEX calsync_jobs_type_status_id_idx ON apalis.jobs (job_type, status, id DESC)
    WHERE status <> 'Pending';
CREATE INDEX calsync_jobs_user_idx ON apalis.jobs (((calsync.job_payload(job) ->> 'user_id')), id DESC)
    WHERE job_type = 'sync-calendar' AND status <> 'Pending';

-- The ULID bounds of the ids made at or after `ts` (ulid_floor) and at or before it
-- (ulid_ceiling): the 48-bit millisecond time in 10 Crockford base32 characters, then
-- the lowest or highest 80 random bits. A nightly run's jobs get ids made between its
-- started_at and enqueue_finished_at, so "this run's jobs" is an id range scan.
CREATE FUNCTION calsync.ulid_time_prefix(ts timestamptz) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT string_agg(substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ',
                             ((floor(extract(epoch FROM ts) * 1000)::bigint >> (5 * (9 - i))) & 31)::int + 1, 1),
                      '' ORDER BY i)
    FROM generate_series(0, 9) AS i
$$;
CREATE FUNCTION calsync.ulid_floor(ts timestamptz) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT calsync.ulid_time_prefix(ts) || '0000000000000000'
$$;
CREATE FUNCTION calsync.ulid_ceiling(ts timestamptz) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT calsync.ulid_time_prefix(ts) || 'ZZZZZZZZZZZZZZZZ'
$$;

-- 3. The queue trigger runs on INSERT only for rows it would change or refuse. A row
--    that already is what the trigger would make of it — a Pending sync job with an
--    upper-case ULID, sane attempts, no metadata, and the active-job key of the user its
--    payload names — is recognised by the WHEN condition (plain SQL, evaluated without
--    calling PL/pgSQL, the payload parsed once): that is what calsync.enqueue_sync and
--    the nightly fan-out insert. Anything else (raw INSERTs without a key or with
--    another key, other states, metadata) goes through the trigger as before.
--    The key is calsync.active_job_key's format ('sync-user:' and the user id; the
--    queue tests check both agree): a payload whose user_id is written as exactly the
--    key's digits (at most 18, no leading zero) names that user (calsync.job_user_id).
--    The checks are plain comparisons and unbounded regular expressions, the payload is
--    parsed as json (validated, not converted): ~1.5 µs a row instead of the trigger's
--    ~8 µs (a bounded quantifier like {25} alone costs ~2 µs). One consequence: a row
--    that carries a key but whose payload is not UTF-8 JSON is refused by Postgres' own
--    parser error (SQLSTATE 22021 / 22P02) instead of the trigger's message.
DROP TRIGGER calsync_jobs_before_write ON apalis.jobs;
CREATE TRIGGER calsync_jobs_before_write BEFORE UPDATE ON apalis.jobs
    FOR EACH ROW EXECUTE FUNCTION calsync.jobs_before_write();
CREATE TRIGGER calsync_jobs_before_insert BEFORE INSERT ON apalis.jobs
    FOR EACH ROW
    WHEN (NEW.job_type = 'sync-calendar' AND CASE
              WHEN NEW.idempotency_key IS NOT NULL
                   AND left(NEW.idempotency_key, 10) = 'sync-user:'
                   AND length(NEW.idempotency_key) BETWEEN 11 AND 28
                   AND ascii(substr(NEW.idempotency_key, 11)) BETWEEN 49 AND 57
                   AND substr(NEW.idempotency_key, 11) !~ '[^0-9]'
                   AND NEW.status = 'Pending' AND NEW.attempts >= 0 AND NEW.max_attempts >= 1
                   AND NEW.metadata IS NULL
                   AND length(NEW.id) = 26 AND NEW.id ~ '^[0-7][0-9A-HJKMNP-TV-Z]*$'
              THEN NEW.idempotency_key
                   IS DISTINCT FROM 'sync-user:' || (convert_from(NEW.job, 'UTF8')::json -> 'user_id')::text
              ELSE true END)
    EXECUTE FUNCTION calsync.jobs_before_write();

-- apalis' NOTIFY trigger, with its own condition as the trigger's WHEN: a job inserted
-- for later (the fan-out's run_at is clock_timestamp(), after now()) no longer calls
-- PL/pgSQL. Same notifications as before.
DROP TRIGGER notify_workers ON apalis.jobs;
CREATE TRIGGER notify_workers AFTER INSERT ON apalis.jobs
    FOR EACH ROW WHEN (NEW.run_at <= now()) EXECUTE FUNCTION apalis.notify_new_jobs();

-- 4. A final job lets go of its worker: apalis' acknowledgement finds a worker's jobs by
--    `lock_by`, and a finished job that kept it made every later acknowledgement of that
--    worker read its whole history (10× slower at 200,000 finished jobs). The attempt
--    recorded for the job keeps the worker's name (calsync.job_attempts.worker).
CREATE OR REPLACE FUNCTION calsync.jobs_release_worker() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.lock_by := NULL;
    RETURN NEW;
END $$;
-- "zz" sorts after the other BEFORE UPDATE triggers, so it sees their final status.
CREATE TRIGGER calsync_jobs_zz_release_worker BEFORE UPDATE ON apalis.jobs
    FOR EACH ROW
    WHEN (NEW.lock_by IS NOT NULL AND calsync.job_is_final(NEW.status, NEW.attempts, NEW.max_attempts))
    EXECUTE FUNCTION calsync.jobs_release_worker();
UPDATE apalis.jobs SET lock_by = NULL
WHERE lock_by IS NOT NULL AND calsync.job_is_final(status, attempts, max_attempts);

-- 5. Nightly run counters without a shared row per acknowledgement: each job of a run
--    that becomes final (or stops being final after an operator's retry) appends one
--    row here; readers add these rows to the run's stored counters, and
--    calsync.fold_nightly_run_progress() moves them into the run row now and then (the
--    nightly pass and the dashboard's roll-up do), one UPDATE per run.
CREATE TABLE calsync.nightly_run_progress (
    run_id    bigint NOT NULL,
    succeeded integer NOT NULL,
    failed    integer NOT NULL,
    at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX nightly_run_progress_run_idx ON calsync.nightly_run_progress (run_id);

CREATE OR REPLACE FUNCTION calsync.jobs_after_update() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    run_id bigint;
BEGIN
    run_id := (calsync.job_payload(NEW.job) ->> 'run_id')::bigint;
    IF run_id IS NULL THEN
        RETURN NULL;
    END IF;
    IF calsync.job_is_final(NEW.status, NEW.attempts, NEW.max_attempts) THEN
        INSERT INTO calsync.nightly_run_progress (run_id, succeeded, failed)
        VALUES (run_id, (NEW.status = 'Done')::int, (NEW.status <> 'Done')::int);
    ELSE
        -- An operator retried a finished job: it is no longer counted as finished.
        INSERT INTO calsync.nightly_run_progress (run_id, succeeded, failed)
        VALUES (run_id, -(OLD.status = 'Done')::int, -(OLD.status <> 'Done')::int);
    END IF;
    RETURN NULL;
EXCEPTION WHEN invalid_text_representation OR numeric_value_out_of_range THEN
    RETURN NULL;
END $$;

-- Called only when a sync job's finality changes (once per finished job), not on every
-- status update.
DROP TRIGGER calsync_jobs_after_update ON apalis.jobs;
CREATE TRIGGER calsync_jobs_after_update AFTER UPDATE OF status, attempts ON apalis.jobs
    FOR EACH ROW
    WHEN (NEW.job_type = 'sync-calendar'
          AND calsync.job_is_final(OLD.status, OLD.attempts, OLD.max_attempts)
              IS DISTINCT FROM calsync.job_is_final(NEW.status, NEW.attempts, NEW.max_attempts))
    EXECUTE FUNCTION calsync.jobs_after_update();

-- A run's counters as readers see them: the stored ones plus the progress not folded
-- yet. finished_at: the run is finished once every enqueued job is final; then it is the
-- time the last one ended.
CREATE FUNCTION calsync.nightly_run_now(r calsync.nightly_runs)
RETURNS TABLE (succeeded integer, failed integer, finished_at timestamptz)
LANGUAGE sql STABLE AS $$
    SELECT (r.succeeded + coalesce(p.s, 0))::integer,
           (r.failed + coalesce(p.f, 0))::integer,
           CASE WHEN p.n IS NULL OR p.n = 0 THEN r.finished_at
                WHEN r.enqueue_finished_at IS NOT NULL
                     AND r.succeeded + r.failed + p.s + p.f >= r.enqueued
                THEN coalesce(greatest(r.finished_at, p.last_at), r.enqueue_finished_at)
           END
    FROM (SELECT sum(g.succeeded) AS s, sum(g.failed) AS f, max(g.at) AS last_at, count(*) AS n
          FROM calsync.nightly_run_progress g WHERE g.run_id = r.id) p
$$;

-- Move the progress rows into their runs' counters. Concurrent callers never count a row
-- twice: each deletes the rows it adds, and a row another caller is deleting is skipped
-- once that caller commits. Returns how many rows were folded.
CREATE FUNCTION calsync.fold_nightly_run_progress() RETURNS bigint
LANGUAGE sql AS $$
    WITH gone AS (
        DELETE FROM calsync.nightly_run_progress RETURNING run_id, succeeded, failed, at
    ), sums AS (
        SELECT run_id, sum(succeeded) AS s, sum(failed) AS f, max(at) AS last_at, count(*) AS n
        FROM gone GROUP BY run_id
    ), folded AS (
        UPDATE calsync.nightly_runs r SET
            succeeded = r.succeeded + sums.s,
            failed = r.failed + sums.f,
            finished_at = CASE WHEN r.enqueue_finished_at IS NOT NULL
                                    AND r.succeeded + r.failed + sums.s + sums.f >= r.enqueued
                               THEN coalesce(greatest(r.finished_at, sums.last_at), r.enqueue_finished_at)
                          END
        FROM sums WHERE r.id = sums.run_id
        RETURNING sums.n
    )
    SELECT coalesce(sum(n), 0)::bigint FROM folded
$$;

-- 6. Tiny tables autovacuum never analyzes (fewer rows than its threshold ever change):
--    without statistics the planner guesses ~2,000 rows for a one-row settings table,
--    a join with it looks expensive enough to be JIT-compiled, and the fan-out spent
--    hundreds of milliseconds compiling. Give them statistics once.
ANALYZE calsync.queue_settings;
ANALYZE calsync.settings;
