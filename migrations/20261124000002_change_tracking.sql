-- Change tracking: every write that changes what a student's calendar shows flags the
-- enrolled users (calendar_needs_sync = true, calendar_sync_generation + 1).
--
-- Triggers, not application callbacks, so every writer is tracked: this service, the
-- original app, raw SQL from other services. All triggers are statement-level with
-- transition tables: one UPDATE of 10,000 courses flags the affected users in one pass.

-- Flag a set of users. Rows are locked in id order so that concurrent bulk writers
-- cannot deadlock on each other.
CREATE FUNCTION calsync.flag_users(user_ids bigint[]) RETURNS bigint
LANGUAGE sql VOLATILE AS $$
    WITH target AS (
        SELECT id FROM users WHERE id = ANY (user_ids) ORDER BY id FOR UPDATE
    ), flagged AS (
        UPDATE users u
        SET calendar_needs_sync = true,
            calendar_sync_generation = u.calendar_sync_generation + 1,
            updated_at = now()
        FROM target
        WHERE u.id = target.id
        RETURNING 1
    )
    SELECT count(*) FROM flagged;
$$;

-- Flag every user enrolled in any of the given courses.
CREATE FUNCTION calsync.flag_course_users(course_ids bigint[]) RETURNS bigint
LANGUAGE sql VOLATILE AS $$
    SELECT calsync.flag_users(ARRAY(
        SELECT DISTINCT e.user_id FROM enrollments e WHERE e.course_id = ANY (course_ids)
    ));
$$;

-- Enrollments: created, deleted, or moved to another user/course.
CREATE FUNCTION calsync.enrollments_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM calsync.flag_users(ARRAY(SELECT DISTINCT user_id FROM new_rows));
    RETURN NULL;
END $$;

CREATE FUNCTION calsync.enrollments_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM calsync.flag_users(ARRAY(SELECT DISTINCT user_id FROM old_rows));
    RETURN NULL;
END $$;

CREATE FUNCTION calsync.enrollments_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM calsync.flag_users(ARRAY(
        SELECT n.user_id FROM new_rows n JOIN old_rows o ON o.id = n.id
        WHERE (n.user_id, n.course_id) IS DISTINCT FROM (o.user_id, o.course_id)
        UNION
        SELECT o.user_id FROM new_rows n JOIN old_rows o ON o.id = n.id
        WHERE (n.user_id, n.course_id) IS DISTINCT FROM (o.user_id, o.course_id)
    ));
    RETURN NULL;
END $$;

CREATE TRIGGER enrollments_track_insert AFTER INSERT ON enrollments
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION calsync.enrollments_inserted();
CREATE TRIGGER enrollments_track_delete AFTER DELETE ON enrollments
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION calsync.enrollments_deleted();
CREATE TRIGGER enrollments_track_update AFTER UPDATE ON enrollments
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION calsync.enrollments_updated();

-- Courses: tracked columns only. A deleted course cascades to its enrollments, whose
-- delete trigger flags the students; the delete trigger here covers any enrollment
-- left behind by a deferred or disabled cascade.
CREATE FUNCTION calsync.courses_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM calsync.flag_course_users(ARRAY(
        SELECT n.id FROM new_rows n JOIN old_rows o ON o.id = n.id
        WHERE (n.title, n.subject, n.course_number, n.section_number, n.start_date, n.end_date)
              IS DISTINCT FROM
              (o.title, o.subject, o.course_number, o.section_number, o.start_date, o.end_date)
    ));
    RETURN NULL;
END $$;

CREATE FUNCTION calsync.courses_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM calsync.flag_course_users(ARRAY(SELECT id FROM old_rows));
    RETURN NULL;
END $$;

CREATE TRIGGER courses_track_update AFTER UPDATE ON courses
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION calsync.courses_updated();
CREATE TRIGGER courses_track_delete AFTER DELETE ON courses
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION calsync.courses_deleted();

-- Meeting times: inserted, deleted, or a tracked column changed (including moving to
-- another course: both courses' students are flagged).
CREATE FUNCTION calsync.meeting_times_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM calsync.flag_course_users(ARRAY(SELECT DISTINCT course_id FROM new_rows));
    RETURN NULL;
END $$;

CREATE FUNCTION calsync.meeting_times_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM calsync.flag_course_users(ARRAY(SELECT DISTINCT course_id FROM old_rows));
    RETURN NULL;
END $$;

CREATE FUNCTION calsync.meeting_times_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM calsync.flag_course_users(ARRAY(
        WITH changed AS (
            SELECT n.course_id AS new_course, o.course_id AS old_course
            FROM new_rows n JOIN old_rows o ON o.id = n.id
            WHERE (n.course_id, n.day_of_week, n.begin_time, n.end_time, n.start_date, n.end_date, n.room_id)
                  IS DISTINCT FROM
                  (o.course_id, o.day_of_week, o.begin_time, o.end_time, o.start_date, o.end_date, o.room_id)
        )
        SELECT new_course FROM changed UNION SELECT old_course FROM changed
    ));
    RETURN NULL;
END $$;

CREATE TRIGGER meeting_times_track_insert AFTER INSERT ON meeting_times
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION calsync.meeting_times_inserted();
CREATE TRIGGER meeting_times_track_delete AFTER DELETE ON meeting_times
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION calsync.meeting_times_deleted();
CREATE TRIGGER meeting_times_track_update AFTER UPDATE ON meeting_times
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION calsync.meeting_times_updated();

-- Rooms: the event location is "building number" (or TBD), so renaming a room changes
-- every event held in it. (Deleting a room sets meeting_times.room_id to NULL, which the
-- meeting time trigger tracks.)
CREATE FUNCTION calsync.rooms_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM calsync.flag_course_users(ARRAY(
        SELECT DISTINCT mt.course_id
        FROM new_rows n JOIN old_rows o ON o.id = n.id
        JOIN meeting_times mt ON mt.room_id = n.id
        WHERE (n.building, n.number, n.is_placeholder) IS DISTINCT FROM (o.building, o.number, o.is_placeholder)
    ));
    RETURN NULL;
END $$;

CREATE TRIGGER rooms_track_update AFTER UPDATE ON rooms
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION calsync.rooms_updated();

-- Users: a new (or removed) course calendar needs a full sync; a new calendar also lifts
-- a previous "calendar_missing" state.
CREATE FUNCTION calsync.users_calendar_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.google_course_calendar_id IS DISTINCT FROM OLD.google_course_calendar_id THEN
        NEW.calendar_needs_sync := true;
        NEW.calendar_sync_generation := OLD.calendar_sync_generation + 1;
        IF NEW.calendar_sync_status = 'calendar_missing' THEN
            NEW.calendar_sync_status := 'ok';
        END IF;
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER users_track_calendar BEFORE UPDATE OF google_course_calendar_id ON users
    FOR EACH ROW EXECUTE FUNCTION calsync.users_calendar_changed();

-- Google credentials: a new refresh token (the student re-authenticated) lifts
-- "needs_reauth" and asks for a sync.
CREATE FUNCTION calsync.credentials_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' OR NEW.refresh_token IS DISTINCT FROM OLD.refresh_token
       OR (OLD.revoked AND NOT NEW.revoked) THEN
        UPDATE users
        SET calendar_sync_status = CASE WHEN calendar_sync_status = 'needs_reauth' THEN 'ok'
                                        ELSE calendar_sync_status END,
            calendar_needs_sync = true,
            calendar_sync_generation = calendar_sync_generation + 1,
            updated_at = now()
        WHERE id = NEW.user_id;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER credentials_track AFTER INSERT OR UPDATE OF refresh_token, revoked ON google_credentials
    FOR EACH ROW EXECUTE FUNCTION calsync.credentials_changed();
