-- Worker liveness judged by each worker's OWN heartbeat interval.
--
-- apalis-postgres re-enqueues the jobs of a worker it presumes dead (Queued/Running jobs
-- whose worker's apalis.workers.last_seen is older than the OBSERVER's heartbeat ×
-- missed heartbeats). Replicas with different CALSYNC_HEARTBEAT_SECS would then take
-- each other's live jobs: a replica beating every second presumes a replica beating
-- every 10 s dead after 3 s. Every calsync worker records its own interval here when it
-- registers, and the guard below refuses such a re-enqueue while the job's worker is
-- still alive by its own interval (silent for less than missed_heartbeats × heartbeat_secs).

CREATE TABLE calsync.worker_liveness (
    worker_id         text PRIMARY KEY,
    heartbeat_secs    double precision NOT NULL CHECK (heartbeat_secs > 0),
    missed_heartbeats integer NOT NULL DEFAULT 3 CHECK (missed_heartbeats > 0),
    registered_at     timestamptz NOT NULL DEFAULT now()
);

-- Whether `worker_id` is alive by its own heartbeat interval. NULL when the worker did
-- not record one (an older calsync, or a foreign apalis worker): apalis' judgement stands.
CREATE FUNCTION calsync.worker_alive(p_worker_id text) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT now() - w.last_seen < l.missed_heartbeats * make_interval(secs => l.heartbeat_secs)
    FROM apalis.workers w
    JOIN calsync.worker_liveness l ON l.worker_id = w.id
    WHERE w.id = p_worker_id
$$;

-- apalis' orphan rescue (queries/backend/reenqueue_orphaned.sql) is the only writer that
-- moves a Queued/Running job back to Pending with this result; a worker handing back
-- its own jobs at shutdown writes "Re-enqueued due to worker shutdown" and is let through.
CREATE FUNCTION calsync.jobs_orphan_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.lock_by IS NOT NULL
       AND NEW.lock_by IS NULL
       AND NEW.last_result ->> 'Err' LIKE 'Re-enqueued due to worker heartbeat timeout%'
       AND calsync.worker_alive(OLD.lock_by) THEN
        -- Skip this row: the job stays with its live worker.
        RETURN NULL;
    END IF;
    RETURN NEW;
END $$;

-- "00" sorts before every other calsync trigger on apalis.jobs (they fire in name
-- order), so a refused re-enqueue never reaches the crash-loop guard or the counters.
CREATE TRIGGER calsync_jobs_00_orphan_guard BEFORE UPDATE ON apalis.jobs
    FOR EACH ROW
    WHEN (OLD.status IN ('Queued', 'Running') AND NEW.status = 'Pending')
    EXECUTE FUNCTION calsync.jobs_orphan_guard();
