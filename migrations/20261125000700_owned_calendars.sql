-- Calendars calsync owns (service-account mode), the deployment's calendar mode, and the
-- queue of calendars to clean up.
--
-- calsync.settings: one row, written by every worker at startup. calendar_mode tells SQL
-- (the nightly's due condition, calsync.enqueue_sync, mark-all) whether users without a
-- course calendar can get one provisioned:
--   user_oauth       per-user OAuth; students' calendars are made by another app (default)
--   service_account  calsync's service account owns every course calendar, shared with
--                    the student
--   delegated        the service account acts as each student (domain-wide delegation);
--                    calendars are created in the student's own account
-- installation_id makes calsync's calendar marker unique per database, so two
-- deployments sharing one service account (staging, production) never adopt each other's
-- calendars.

CREATE TABLE calsync.settings (
    singleton       boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    calendar_mode   text NOT NULL DEFAULT 'user_oauth'
        CHECK (calendar_mode IN ('user_oauth', 'service_account', 'delegated')),
    installation_id text NOT NULL DEFAULT substr(replace(gen_random_uuid()::text, '-', ''), 1, 16),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    updated_by      text NOT NULL DEFAULT 'migration'
);
INSERT INTO calsync.settings DEFAULT VALUES;

-- Whether the deployment provisions calendars (service-account modes).
CREATE FUNCTION calsync.owns_calendars() RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT coalesce((SELECT calendar_mode <> 'user_oauth' FROM calsync.settings), false)
$$;

-- Every calendar calsync created (or adopted by its marker). user_id has no foreign key:
-- the row must outlive a deleted user so cleanup can delete the calendar.
--   active    the user's course calendar
--   orphaned  no longer anybody's calendar (user deleted, calendar id replaced): cleanup
--             deletes it
--   deleted   deleted in Google (by cleanup, or found gone)
CREATE TABLE calsync.owned_calendars (
    calendar_id text PRIMARY KEY,
    user_id     bigint NOT NULL,
    -- Who owns it in Google: the service account, or (delegated) the student.
    owner       text NOT NULL,
    -- Who the calendar is shared with (service-account mode), once the ACL rule exists.
    shared_with text,
    shared_at   timestamptz,
    state       text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'orphaned', 'deleted')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    orphaned_at timestamptz,
    deleted_at  timestamptz
);
CREATE INDEX owned_calendars_user_idx ON calsync.owned_calendars (user_id) WHERE state = 'active';
CREATE INDEX owned_calendars_orphaned_idx ON calsync.owned_calendars (orphaned_at) WHERE state = 'orphaned';

-- Calendars a user no longer uses: calsync's events in them are removed (a calendar of
-- the student's), or the whole calendar is deleted (one calsync owns). Written by the
-- triggers below, worked off by `calsync cleanup` and the pass after each nightly.
CREATE TABLE calsync.calendar_cleanup (
    id          bigserial PRIMARY KEY,
    user_id     bigint NOT NULL,
    calendar_id text NOT NULL,
    reason      text NOT NULL CHECK (reason IN ('calendar_changed', 'user_deleted')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    done_at     timestamptz,
    outcome     text,
    attempts    integer NOT NULL DEFAULT 0,
    last_error  text
);
CREATE INDEX calendar_cleanup_pending_idx ON calsync.calendar_cleanup (id) WHERE done_at IS NULL;

-- A user's calendar id changed: the old calendar is cleaned up (and, if calsync owns it,
-- no longer the user's).
CREATE FUNCTION calsync.users_calendar_replaced() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.google_course_calendar_id IS NOT NULL AND OLD.google_course_calendar_id <> ''
       AND NEW.google_course_calendar_id IS DISTINCT FROM OLD.google_course_calendar_id THEN
        UPDATE calsync.owned_calendars SET state = 'orphaned', orphaned_at = now()
        WHERE calendar_id = OLD.google_course_calendar_id AND state = 'active';
        INSERT INTO calsync.calendar_cleanup (user_id, calendar_id, reason)
        VALUES (OLD.id, OLD.google_course_calendar_id, 'calendar_changed');
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER users_calendar_replaced AFTER UPDATE OF google_course_calendar_id ON users
    FOR EACH ROW EXECUTE FUNCTION calsync.users_calendar_replaced();

-- A user was deleted: the calendars calsync owns for them are deleted by cleanup.
-- (A calendar of the student's own cannot be cleaned: their credentials are gone too.)
CREATE FUNCTION calsync.users_deleted_orphan_calendars() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    WITH orphaned AS (
        UPDATE calsync.owned_calendars o SET state = 'orphaned', orphaned_at = now()
        FROM old_rows d WHERE o.user_id = d.id AND o.state = 'active'
        RETURNING o.user_id, o.calendar_id
    )
    INSERT INTO calsync.calendar_cleanup (user_id, calendar_id, reason)
    SELECT user_id, calendar_id, 'user_deleted' FROM orphaned;
    RETURN NULL;
END $$;

CREATE TRIGGER users_deleted_orphan_calendars AFTER DELETE ON users
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT
    EXECUTE FUNCTION calsync.users_deleted_orphan_calendars();

-- Provisionable users (service-account modes) are due without a calendar.
CREATE INDEX users_provisionable_idx ON users (id)
    WHERE (google_course_calendar_id IS NULL OR google_course_calendar_id = '')
      AND (calendar_needs_sync OR last_calendar_sync_at IS NULL);

-- The SQL enqueue API: in a service-account mode a user without a calendar (but with an
-- e-mail to share it with) is accepted; the sync provisions the calendar.
CREATE OR REPLACE FUNCTION calsync.enqueue_sync(p_user_id bigint, p_reason text DEFAULT 'api')
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    v_calendar text;
    v_email    text;
    v_exists   boolean;
    v_id       text;
    v_key      text := calsync.active_job_key(p_user_id);
BEGIN
    IF p_user_id IS NULL THEN
        RAISE EXCEPTION 'calsync.enqueue_sync: user id must not be NULL' USING ERRCODE = '22004';
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
