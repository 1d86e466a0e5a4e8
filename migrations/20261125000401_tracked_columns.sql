-- Change tracking, declared once.
--
-- calsync.tracked_columns lists every column of every tracked table with its role:
--   key       identifies the row (the triggers join old and new rows on it)
--   tracked   changing it changes what a student's calendar shows: flag the students
--   untracked changing it flags nobody (descriptions, capacities, notes, bookkeeping)
--
-- The "did a tracked column change" conditions of the trigger functions, and the column
-- lists of the row-level UPDATE OF triggers, are generated from this table by
-- calsync.install_change_tracking(), which runs whenever the table changes. Tracking a
-- new column is one INSERT into calsync.tracked_columns; a column of a tracked table
-- that is not declared fails the domain test `every_column_of_a_tracked_table_is_declared`.
--
-- The set-based shape of every trigger is unchanged: statement-level triggers with
-- transition tables, one calsync.flag_users call per statement, however many rows.

CREATE TABLE calsync.tracked_columns (
    table_name  text NOT NULL,
    column_name text NOT NULL,
    role        text NOT NULL CHECK (role IN ('key', 'tracked', 'untracked')),
    note        text NOT NULL DEFAULT '',
    PRIMARY KEY (table_name, column_name)
);

-- The condition "a tracked column of `tbl` differs between the rows `new_alias` and
-- `old_alias`" (columns in name order; `false` when nothing is tracked).
CREATE FUNCTION calsync.tracked_change(tbl text, new_alias text, old_alias text,
                                       except_columns text[] DEFAULT '{}')
RETURNS text LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN count(*) = 0 THEN 'false' ELSE format('(%s) IS DISTINCT FROM (%s)',
        string_agg(format('%s.%I', new_alias, column_name), ', ' ORDER BY column_name),
        string_agg(format('%s.%I', old_alias, column_name), ', ' ORDER BY column_name)) END
    FROM calsync.tracked_columns
    WHERE table_name = tbl AND role = 'tracked' AND column_name <> ALL (except_columns)
$$;

-- The tracked columns of `tbl` as a column list (for UPDATE OF), NULL when none.
CREATE FUNCTION calsync.tracked_column_list(tbl text) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT string_agg(format('%I', column_name), ', ' ORDER BY column_name)
    FROM calsync.tracked_columns WHERE table_name = tbl AND role = 'tracked'
$$;

-- Academic calendar ranges → the courses whose calendars they change: courses with a
-- meeting time that has an occurrence inside a no-class range (weekday-exact, within
-- the meeting's own or its course's dates), and courses whose dates overlap a published
-- range. The Rust event model (calsync_domain::academic) applies the same rules.
CREATE TYPE calsync.day_span AS (first_day date, last_day date);

CREATE FUNCTION calsync.academic_affected_courses(no_class_days calsync.day_span[],
                                                  published_days calsync.day_span[])
RETURNS bigint[] LANGUAGE sql STABLE AS $$
    SELECT ARRAY(
        SELECT mt.course_id
        FROM unnest(no_class_days) AS r(first_day, last_day)
        CROSS JOIN meeting_times mt
        JOIN courses c ON c.id = mt.course_id
        CROSS JOIN LATERAL (
            SELECT greatest(least(r.first_day, r.last_day), coalesce(mt.start_date, c.start_date)) AS lo,
                   least(greatest(r.first_day, r.last_day), coalesce(mt.end_date, c.end_date)) AS hi
        ) w
        WHERE coalesce(mt.start_date, c.start_date) IS NOT NULL
          AND coalesce(mt.end_date, c.end_date) IS NOT NULL
          AND w.lo <= w.hi
          -- days from lo to the first meeting weekday on or after it
          AND (mt.day_of_week - extract(dow FROM w.lo)::int + 7) % 7 <= w.hi - w.lo
        UNION
        SELECT c.id
        FROM unnest(published_days) AS r(first_day, last_day)
        JOIN courses c ON c.start_date <= greatest(r.first_day, r.last_day)
                      AND c.end_date >= least(r.first_day, r.last_day)
    )
$$;

-- Academic calendar rows inserted or deleted: their ranges as they are.
CREATE FUNCTION calsync.academic_calendar_events_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM calsync.flag_course_users(calsync.academic_affected_courses(
        ARRAY(SELECT ROW(start_date, end_date)::calsync.day_span FROM new_rows WHERE no_classes),
        ARRAY(SELECT ROW(start_date, end_date)::calsync.day_span FROM new_rows WHERE publish)));
    RETURN NULL;
END $$;

CREATE FUNCTION calsync.academic_calendar_events_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM calsync.flag_course_users(calsync.academic_affected_courses(
        ARRAY(SELECT ROW(start_date, end_date)::calsync.day_span FROM old_rows WHERE no_classes),
        ARRAY(SELECT ROW(start_date, end_date)::calsync.day_span FROM old_rows WHERE publish)));
    RETURN NULL;
END $$;

-- Final exams inserted or deleted: the course's students.
CREATE FUNCTION calsync.final_exams_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM calsync.flag_course_users(ARRAY(SELECT DISTINCT course_id FROM new_rows));
    RETURN NULL;
END $$;

CREATE FUNCTION calsync.final_exams_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM calsync.flag_course_users(ARRAY(SELECT DISTINCT course_id FROM old_rows));
    RETURN NULL;
END $$;

-- (Re)generate every trigger function and trigger that depends on the declaration.
CREATE FUNCTION calsync.install_change_tracking() RETURNS void LANGUAGE plpgsql AS $install$
DECLARE
    missing text;
    cols text;
BEGIN
    SELECT string_agg(format('%s.%s', t.table_name, t.column_name), ', ' ORDER BY t.table_name, t.column_name)
    INTO missing
    FROM calsync.tracked_columns t
    WHERE NOT EXISTS (
        SELECT 1 FROM information_schema.columns c
        WHERE c.table_schema = 'public' AND c.table_name = t.table_name AND c.column_name = t.column_name);
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'calsync.tracked_columns declares columns that do not exist: %', missing
            USING ERRCODE = 'undefined_column';
    END IF;

    -- Courses: the enrolled students.
    EXECUTE format($f$
        CREATE OR REPLACE FUNCTION calsync.courses_updated() RETURNS trigger LANGUAGE plpgsql AS $body$
        BEGIN
            PERFORM calsync.flag_course_users(ARRAY(
                SELECT n.id FROM new_rows n JOIN old_rows o ON o.id = n.id WHERE %s));
            RETURN NULL;
        END $body$ $f$, calsync.tracked_change('courses', 'n', 'o'));

    -- Meeting times: the students of the old and the new course.
    EXECUTE format($f$
        CREATE OR REPLACE FUNCTION calsync.meeting_times_updated() RETURNS trigger LANGUAGE plpgsql AS $body$
        BEGIN
            PERFORM calsync.flag_course_users(ARRAY(
                WITH changed AS (
                    SELECT n.course_id AS new_course, o.course_id AS old_course
                    FROM new_rows n JOIN old_rows o ON o.id = n.id WHERE %s)
                SELECT new_course FROM changed UNION SELECT old_course FROM changed));
            RETURN NULL;
        END $body$ $f$, calsync.tracked_change('meeting_times', 'n', 'o'));

    -- Rooms: the students of every course meeting or examined there.
    EXECUTE format($f$
        CREATE OR REPLACE FUNCTION calsync.rooms_updated() RETURNS trigger LANGUAGE plpgsql AS $body$
        BEGIN
            PERFORM calsync.flag_course_users(ARRAY(
                WITH changed AS (
                    SELECT n.id FROM new_rows n JOIN old_rows o ON o.id = n.id WHERE %s)
                SELECT mt.course_id FROM meeting_times mt JOIN changed ON mt.room_id = changed.id
                UNION
                SELECT fe.course_id FROM final_exams fe JOIN changed ON fe.room_id = changed.id));
            RETURN NULL;
        END $body$ $f$, calsync.tracked_change('rooms', 'n', 'o'));

    -- Enrollments: the old and the new student.
    EXECUTE format($f$
        CREATE OR REPLACE FUNCTION calsync.enrollments_updated() RETURNS trigger LANGUAGE plpgsql AS $body$
        BEGIN
            PERFORM calsync.flag_users(ARRAY(
                WITH changed AS (
                    SELECT n.user_id AS new_user, o.user_id AS old_user
                    FROM new_rows n JOIN old_rows o ON o.id = n.id WHERE %s)
                SELECT new_user FROM changed UNION SELECT old_user FROM changed));
            RETURN NULL;
        END $body$ $f$, calsync.tracked_change('enrollments', 'n', 'o'));

    -- Final exams: the students of the old and the new course.
    EXECUTE format($f$
        CREATE OR REPLACE FUNCTION calsync.final_exams_updated() RETURNS trigger LANGUAGE plpgsql AS $body$
        BEGIN
            PERFORM calsync.flag_course_users(ARRAY(
                WITH changed AS (
                    SELECT n.course_id AS new_course, o.course_id AS old_course
                    FROM new_rows n JOIN old_rows o ON o.id = n.id WHERE %s)
                SELECT new_course FROM changed UNION SELECT old_course FROM changed));
            RETURN NULL;
        END $body$ $f$, calsync.tracked_change('final_exams', 'n', 'o'));

    -- Academic calendar rows: exclusions matter to the meetings in the old and new
    -- no-class range (only when the range or no_classes changed); a published row's
    -- every tracked column matters to the courses overlapping its old and new range.
    EXECUTE format($f$
        CREATE OR REPLACE FUNCTION calsync.academic_calendar_events_updated() RETURNS trigger
        LANGUAGE plpgsql AS $body$
        DECLARE
            no_class calsync.day_span[];
            published calsync.day_span[];
        BEGIN
            WITH changed AS (
                SELECT o.no_classes AS old_no_classes, o.publish AS old_publish,
                       ROW(o.start_date, o.end_date)::calsync.day_span AS old_days,
                       n.no_classes AS new_no_classes, n.publish AS new_publish,
                       ROW(n.start_date, n.end_date)::calsync.day_span AS new_days,
                       (o.no_classes, o.start_date, o.end_date)
                           IS DISTINCT FROM (n.no_classes, n.start_date, n.end_date) AS exclusion_changed
                FROM new_rows n JOIN old_rows o ON o.id = n.id
                WHERE %s)
            SELECT ARRAY(SELECT old_days FROM changed WHERE old_no_classes AND exclusion_changed
                         UNION ALL
                         SELECT new_days FROM changed WHERE new_no_classes AND exclusion_changed),
                   ARRAY(SELECT old_days FROM changed WHERE old_publish
                         UNION ALL
                         SELECT new_days FROM changed WHERE new_publish)
            INTO no_class, published;
            PERFORM calsync.flag_course_users(calsync.academic_affected_courses(no_class, published));
            RETURN NULL;
        END $body$ $f$, calsync.tracked_change('academic_calendar_events', 'n', 'o'));

    -- Users (row level): a new or removed course calendar needs a full sync, and a new
    -- calendar lifts "calendar_missing".
    EXECUTE format($f$
        CREATE OR REPLACE FUNCTION calsync.users_calendar_changed() RETURNS trigger LANGUAGE plpgsql AS $body$
        BEGIN
            IF %s THEN
                NEW.calendar_needs_sync := true;
                NEW.calendar_sync_generation := OLD.calendar_sync_generation + 1;
                IF NEW.calendar_sync_status = 'calendar_missing' THEN
                    NEW.calendar_sync_status := 'ok';
                END IF;
            END IF;
            RETURN NEW;
        END $body$ $f$, calsync.tracked_change('users', 'NEW', 'OLD'));
    DROP TRIGGER IF EXISTS users_track_calendar ON users;
    cols := calsync.tracked_column_list('users');
    IF cols IS NOT NULL THEN
        EXECUTE format('CREATE TRIGGER users_track_calendar BEFORE UPDATE OF %s ON users '
                       'FOR EACH ROW EXECUTE FUNCTION calsync.users_calendar_changed()', cols);
    END IF;

    -- Google credentials (row level): new credentials lift "needs_reauth" and ask for a
    -- sync. `revoked` is special: only lifting a revocation (true → false) flags; calsync
    -- itself sets it when Google refuses the token, which must not ask for a sync.
    EXECUTE format($f$
        CREATE OR REPLACE FUNCTION calsync.credentials_changed() RETURNS trigger LANGUAGE plpgsql AS $body$
        BEGIN
            IF TG_OP = 'INSERT' OR %s OR (OLD.revoked AND NOT NEW.revoked) THEN
                UPDATE users
                SET calendar_sync_status = CASE WHEN calendar_sync_status = 'needs_reauth' THEN 'ok'
                                                ELSE calendar_sync_status END,
                    calendar_needs_sync = true,
                    calendar_sync_generation = calendar_sync_generation + 1,
                    updated_at = now()
                WHERE id = NEW.user_id;
            END IF;
            RETURN NULL;
        END $body$ $f$, calsync.tracked_change('google_credentials', 'NEW', 'OLD', ARRAY['revoked']));
    DROP TRIGGER IF EXISTS credentials_track ON google_credentials;
    cols := calsync.tracked_column_list('google_credentials');
    EXECUTE format('CREATE TRIGGER credentials_track AFTER INSERT%s ON google_credentials '
                   'FOR EACH ROW EXECUTE FUNCTION calsync.credentials_changed()',
                   CASE WHEN cols IS NULL THEN '' ELSE ' OR UPDATE OF ' || cols END);
END $install$;

CREATE FUNCTION calsync.tracked_columns_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM calsync.install_change_tracking();
    RETURN NULL;
END $$;

CREATE TRIGGER tracked_columns_install AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON calsync.tracked_columns
    FOR EACH STATEMENT EXECUTE FUNCTION calsync.tracked_columns_changed();

-- The statement-level triggers of the new tables (the update functions are generated).
CREATE FUNCTION calsync.final_exams_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RETURN NULL; END $$;
CREATE FUNCTION calsync.academic_calendar_events_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RETURN NULL; END $$;

CREATE TRIGGER final_exams_track_insert AFTER INSERT ON final_exams
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION calsync.final_exams_inserted();
CREATE TRIGGER final_exams_track_delete AFTER DELETE ON final_exams
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION calsync.final_exams_deleted();
CREATE TRIGGER final_exams_track_update AFTER UPDATE ON final_exams
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION calsync.final_exams_updated();

CREATE TRIGGER academic_calendar_events_track_insert AFTER INSERT ON academic_calendar_events
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION calsync.academic_calendar_events_inserted();
CREATE TRIGGER academic_calendar_events_track_delete AFTER DELETE ON academic_calendar_events
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION calsync.academic_calendar_events_deleted();
CREATE TRIGGER academic_calendar_events_track_update AFTER UPDATE ON academic_calendar_events
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION calsync.academic_calendar_events_updated();

-- The declaration. Inserting it installs every generated function and trigger above.
INSERT INTO calsync.tracked_columns (table_name, column_name, role, note) VALUES
    ('users', 'id', 'key', ''),
    ('users', 'google_course_calendar_id', 'tracked', 'a new or removed calendar needs a full sync'),
    ('users', 'email', 'untracked', 'not shown in events'),
    ('users', 'name', 'untracked', 'not shown in events'),
    ('users', 'calendar_needs_sync', 'untracked', 'sync state'),
    ('users', 'last_calendar_sync_at', 'untracked', 'sync state'),
    ('users', 'calendar_sync_generation', 'untracked', 'sync state'),
    ('users', 'calendar_sync_status', 'untracked', 'sync state'),
    ('users', 'last_sync_error', 'untracked', 'sync state'),
    ('users', 'last_sync_error_at', 'untracked', 'sync state'),
    ('users', 'created_at', 'untracked', 'bookkeeping'),
    ('users', 'updated_at', 'untracked', 'bookkeeping'),

    ('google_credentials', 'user_id', 'key', ''),
    ('google_credentials', 'refresh_token', 'tracked', 'the student signed in again'),
    ('google_credentials', 'revoked', 'tracked', 'only lifting a revocation (true to false) flags'),
    ('google_credentials', 'access_token', 'untracked', 'token cache'),
    ('google_credentials', 'access_token_expires_at', 'untracked', 'token cache'),
    ('google_credentials', 'updated_at', 'untracked', 'bookkeeping'),

    ('courses', 'id', 'key', ''),
    ('courses', 'title', 'tracked', 'event summary'),
    ('courses', 'subject', 'tracked', 'event description'),
    ('courses', 'course_number', 'tracked', 'event description'),
    ('courses', 'section_number', 'tracked', 'event description'),
    ('courses', 'start_date', 'tracked', 'recurrence start; published academic events'),
    ('courses', 'end_date', 'tracked', 'recurrence end; published academic events'),
    ('courses', 'description', 'untracked', 'not shown in events'),
    ('courses', 'capacity', 'untracked', 'not shown in events'),
    ('courses', 'created_at', 'untracked', 'bookkeeping'),
    ('courses', 'updated_at', 'untracked', 'bookkeeping'),

    ('rooms', 'id', 'key', ''),
    ('rooms', 'building', 'tracked', 'event location'),
    ('rooms', 'number', 'tracked', 'event location'),
    ('rooms', 'is_placeholder', 'tracked', 'event location (TBD)'),
    ('rooms', 'capacity', 'untracked', 'not shown in events'),

    ('meeting_times', 'id', 'key', ''),
    ('meeting_times', 'course_id', 'tracked', 'whose calendar shows it'),
    ('meeting_times', 'day_of_week', 'tracked', 'recurrence'),
    ('meeting_times', 'begin_time', 'tracked', 'event start'),
    ('meeting_times', 'end_time', 'tracked', 'event end'),
    ('meeting_times', 'start_date', 'tracked', 'recurrence start'),
    ('meeting_times', 'end_date', 'tracked', 'recurrence end'),
    ('meeting_times', 'room_id', 'tracked', 'event location'),
    ('meeting_times', 'notes', 'untracked', 'not shown in events'),

    ('enrollments', 'id', 'key', ''),
    ('enrollments', 'user_id', 'tracked', 'whose calendar shows the course'),
    ('enrollments', 'course_id', 'tracked', 'which course'),
    ('enrollments', 'created_at', 'untracked', 'bookkeeping'),

    ('academic_calendar_events', 'id', 'key', ''),
    ('academic_calendar_events', 'title', 'tracked', 'published event summary'),
    ('academic_calendar_events', 'category', 'tracked', 'published event description'),
    ('academic_calendar_events', 'start_date', 'tracked', 'cancelled classes; published event dates'),
    ('academic_calendar_events', 'end_date', 'tracked', 'cancelled classes; published event dates'),
    ('academic_calendar_events', 'no_classes', 'tracked', 'cancelled classes; published event description'),
    ('academic_calendar_events', 'publish', 'tracked', 'whether students see it'),
    ('academic_calendar_events', 'created_at', 'untracked', 'bookkeeping'),
    ('academic_calendar_events', 'updated_at', 'untracked', 'bookkeeping'),

    ('final_exams', 'id', 'key', ''),
    ('final_exams', 'course_id', 'tracked', 'whose calendar shows it'),
    ('final_exams', 'starts_at', 'tracked', 'event start'),
    ('final_exams', 'ends_at', 'tracked', 'event end'),
    ('final_exams', 'room_id', 'tracked', 'event location'),
    ('final_exams', 'notes', 'untracked', 'not shown in events'),
    ('final_exams', 'created_at', 'untracked', 'bookkeeping'),
    ('final_exams', 'updated_at', 'untracked', 'bookkeeping');
