-- Calendar preferences: how a student's course events look (title/description/location
-- templates, color, reminders, visibility, transparency).
--
-- One row per (user, scope, course_id):
--   scope 'global'                      every event of the user
--   scope 'class' | 'exam' | 'academic'  every event of that kind
--   course_id set                       a course override: the events of that course
--                                       (scope 'global': all its events; 'class' or
--                                       'exam': only those); academic events belong to
--                                       no course, so ('academic', course) is refused
-- Every field is NULL ("not set here: inherit") or a value. Resolution is per field:
-- (scope = kind, course) → ('global', course) → (kind, no course) → ('global', no
-- course) → the built-in default, the first row that sets the field wins. Templates are
-- validated by the worker API and CLI when saved and again when rendered; the
-- structured fields are checked here so plain SQL writers cannot store what Google
-- would refuse.

-- The jsonb shape of `reminders`: {"use_default": true} (the calendar's default
-- reminders), or {"overrides": [{"method": "popup"|"email", "minutes": 0..40320}, …]}
-- with at most 5 overrides (an empty list: no reminders; "use_default": false may be
-- given with it). Google's own limits.
CREATE FUNCTION calsync.reminders_are_valid(r jsonb) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    o jsonb;
    m numeric;
BEGIN
    IF r IS NULL THEN
        RETURN true;
    END IF;
    IF jsonb_typeof(r) <> 'object' THEN
        RETURN false;
    END IF;
    IF EXISTS (SELECT 1 FROM jsonb_object_keys(r) k WHERE k NOT IN ('use_default', 'overrides')) THEN
        RETURN false;
    END IF;
    IF r ? 'use_default' AND jsonb_typeof(r -> 'use_default') <> 'boolean' THEN
        RETURN false;
    END IF;
    IF coalesce((r ->> 'use_default')::boolean, false) THEN
        -- The calendar's defaults and overrides at once: Google refuses it.
        RETURN NOT r ? 'overrides';
    END IF;
    IF NOT r ? 'overrides' OR jsonb_typeof(r -> 'overrides') <> 'array'
       OR jsonb_array_length(r -> 'overrides') > 5 THEN
        RETURN false;
    END IF;
    FOR o IN SELECT value FROM jsonb_array_elements(r -> 'overrides') LOOP
        IF jsonb_typeof(o) <> 'object'
           OR EXISTS (SELECT 1 FROM jsonb_object_keys(o) k WHERE k NOT IN ('method', 'minutes'))
           OR jsonb_typeof(o -> 'method') IS DISTINCT FROM 'string'
           OR (o ->> 'method') NOT IN ('popup', 'email')
           OR jsonb_typeof(o -> 'minutes') IS DISTINCT FROM 'number' THEN
            RETURN false;
        END IF;
        m := (o ->> 'minutes')::numeric;
        IF m < 0 OR m > 40320 OR m <> trunc(m) THEN
            RETURN false;
        END IF;
    END LOOP;
    RETURN true;
END $$;

CREATE TABLE calendar_preferences (
    id                   bigserial PRIMARY KEY,
    user_id              bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    scope                text NOT NULL DEFAULT 'global'
        CONSTRAINT calendar_preferences_scope_is_known
        CHECK (scope IN ('global', 'class', 'exam', 'academic')),
    course_id            bigint REFERENCES courses (id) ON DELETE CASCADE,
    title_template       text
        CONSTRAINT calendar_preferences_title_template_max_300
        CHECK (char_length(title_template) <= 300),
    description_template text
        CONSTRAINT calendar_preferences_description_template_max_2000
        CHECK (char_length(description_template) <= 2000),
    location_template    text
        CONSTRAINT calendar_preferences_location_template_max_300
        CHECK (char_length(location_template) <= 300),
    color_id             smallint
        CONSTRAINT calendar_preferences_color_id_is_a_google_event_color
        CHECK (color_id BETWEEN 1 AND 11),
    reminders            jsonb
        CONSTRAINT calendar_preferences_reminders_are_valid
        CHECK (calsync.reminders_are_valid(reminders)),
    visibility           text
        CONSTRAINT calendar_preferences_visibility_is_known
        CHECK (visibility IN ('default', 'public', 'private')),
    transparency         text
        CONSTRAINT calendar_preferences_transparency_is_known
        CHECK (transparency IN ('opaque', 'transparent')),
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT calendar_preferences_academic_events_have_no_course
        CHECK (course_id IS NULL OR scope <> 'academic'),
    CONSTRAINT calendar_preferences_one_row_per_scope
        UNIQUE NULLS NOT DISTINCT (user_id, scope, course_id)
);
CREATE INDEX calendar_preferences_course_id_idx ON calendar_preferences (course_id)
    WHERE course_id IS NOT NULL;

-- Template render failures of the user's last sync (the field fell back to the built-in
-- default): [{"event_id", "field", "scope", "course_id", "message"}, …], at most 20.
ALTER TABLE users ADD COLUMN calendar_render_warnings jsonb NOT NULL DEFAULT '[]'::jsonb;

-- Change tracking: a preference row inserted, deleted or changed flags its user only
-- (and, when a row moves to another user, both). Set-based like every tracker: one
-- calsync.flag_users call per statement. The update trigger compares the rows without
-- the columns declared 'untracked' in calsync.tracked_columns, read when it runs, so
-- the declaration stays the one home of "which columns flag" for this table too.
CREATE FUNCTION calsync.calendar_preferences_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM calsync.flag_users(ARRAY(SELECT DISTINCT user_id FROM new_rows));
    RETURN NULL;
END $$;

CREATE FUNCTION calsync.calendar_preferences_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM calsync.flag_users(ARRAY(SELECT DISTINCT user_id FROM old_rows));
    RETURN NULL;
END $$;

CREATE FUNCTION calsync.calendar_preferences_updated() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    untracked text[] := ARRAY(SELECT column_name FROM calsync.tracked_columns
                              WHERE table_name = 'calendar_preferences' AND role = 'untracked');
BEGIN
    PERFORM calsync.flag_users(ARRAY(
        WITH changed AS (
            SELECT n.user_id AS new_user, o.user_id AS old_user
            FROM new_rows n JOIN old_rows o ON o.id = n.id
            WHERE to_jsonb(n) - untracked IS DISTINCT FROM to_jsonb(o) - untracked)
        SELECT new_user FROM changed UNION SELECT old_user FROM changed));
    RETURN NULL;
END $$;

CREATE TRIGGER calendar_preferences_track_insert AFTER INSERT ON calendar_preferences
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION calsync.calendar_preferences_inserted();
CREATE TRIGGER calendar_preferences_track_delete AFTER DELETE ON calendar_preferences
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION calsync.calendar_preferences_deleted();
CREATE TRIGGER calendar_preferences_track_update AFTER UPDATE ON calendar_preferences
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION calsync.calendar_preferences_updated();

INSERT INTO calsync.tracked_columns (table_name, column_name, role, note) VALUES
    ('users', 'calendar_render_warnings', 'untracked', 'sync state'),

    ('calendar_preferences', 'id', 'key', ''),
    ('calendar_preferences', 'user_id', 'tracked', 'whose events it shapes'),
    ('calendar_preferences', 'scope', 'tracked', 'which events it shapes'),
    ('calendar_preferences', 'course_id', 'tracked', 'which course it overrides'),
    ('calendar_preferences', 'title_template', 'tracked', 'event summary'),
    ('calendar_preferences', 'description_template', 'tracked', 'event description'),
    ('calendar_preferences', 'location_template', 'tracked', 'event location'),
    ('calendar_preferences', 'color_id', 'tracked', 'event color'),
    ('calendar_preferences', 'reminders', 'tracked', 'event reminders'),
    ('calendar_preferences', 'visibility', 'tracked', 'event visibility'),
    ('calendar_preferences', 'transparency', 'tracked', 'event transparency'),
    ('calendar_preferences', 'created_at', 'untracked', 'bookkeeping'),
    ('calendar_preferences', 'updated_at', 'untracked', 'bookkeeping');
