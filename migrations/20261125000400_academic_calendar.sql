-- The academic calendar and final exams (public contract: other services and the
-- registrar's tools write these tables; names are documented in docs/ARCHITECTURE.md).
--
-- * academic_calendar_events: holidays, breaks, reading days, exam periods. A row with
--   no_classes cancels every class occurrence on its days (an EXDATE on each weekly
--   class event); a row with publish shows as an all-day event to every student
--   enrolled in a course whose dates overlap it.
-- * final_exams: one single event per exam for every student enrolled in the course.
--   Times are local wall-clock times in the school time zone, like meeting times.
--
-- Change tracking for both tables is installed by the next migration, from the
-- declaration in calsync.tracked_columns.

CREATE TABLE academic_calendar_events (
    id          bigserial PRIMARY KEY,
    title       text NOT NULL,
    category    text NOT NULL,
    -- Inclusive: a single day when equal.
    start_date  date NOT NULL,
    end_date    date NOT NULL,
    -- Whether class occurrences on these days are cancelled. Left out of an INSERT, it
    -- follows the category (see academic_calendar_events_defaults below).
    no_classes  boolean NOT NULL,
    -- Whether students see it as an all-day event.
    publish     boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT academic_calendar_events_category_is_known
        CHECK (category IN ('holiday', 'break', 'reading_day', 'exam_period', 'other')),
    CONSTRAINT academic_calendar_events_title_not_blank CHECK (btrim(title) <> ''),
    CONSTRAINT academic_calendar_events_end_date_on_or_after_start_date
        CHECK (end_date >= start_date),
    -- A typo in a year must not cancel classes for decades.
    CONSTRAINT academic_calendar_events_at_most_a_year_long
        CHECK (end_date - start_date <= 366)
);
CREATE INDEX academic_calendar_events_dates_idx ON academic_calendar_events (start_date, end_date);

-- no_classes defaults by category: holidays, breaks, reading days and exam periods
-- cancel classes; "other" (e.g. "last day to drop") does not.
CREATE FUNCTION calsync.academic_calendar_events_defaults() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.no_classes IS NULL THEN
        NEW.no_classes := NEW.category IN ('holiday', 'break', 'reading_day', 'exam_period');
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER academic_calendar_events_defaults BEFORE INSERT ON academic_calendar_events
    FOR EACH ROW EXECUTE FUNCTION calsync.academic_calendar_events_defaults();

CREATE TABLE final_exams (
    id         bigserial PRIMARY KEY,
    course_id  bigint NOT NULL REFERENCES courses (id) ON DELETE CASCADE,
    -- Local date and time in the school time zone (like meeting times).
    starts_at  timestamp NOT NULL,
    ends_at    timestamp NOT NULL,
    -- NULL or a placeholder room renders as location "TBD".
    room_id    bigint REFERENCES rooms (id) ON DELETE SET NULL,
    -- Untracked: changing it flags nobody.
    notes      text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT final_exams_ends_after_it_starts CHECK (ends_at > starts_at)
);
CREATE INDEX final_exams_course_id_idx ON final_exams (course_id);
CREATE INDEX final_exams_room_id_idx ON final_exams (room_id);
