-- calsync domain schema: users, Google credentials, courses, rooms, meeting times, enrollments.
-- Table and column names are a public contract: other services and SQL tools rely on them.

CREATE SCHEMA IF NOT EXISTS calsync;

CREATE TABLE users (
    id                        bigserial PRIMARY KEY,
    email                     text NOT NULL UNIQUE,
    name                      text NOT NULL,
    google_course_calendar_id text,
    calendar_needs_sync       boolean NOT NULL DEFAULT false,
    last_calendar_sync_at     timestamptz,
    -- Bumped by every change that flags the user. A sync remembers the generation it
    -- read and clears the flag only if it is unchanged (compare-and-clear).
    calendar_sync_generation  bigint NOT NULL DEFAULT 0,
    -- ok | needs_reauth | calendar_missing | failing
    calendar_sync_status      text NOT NULL DEFAULT 'ok'
        CHECK (calendar_sync_status IN ('ok', 'needs_reauth', 'calendar_missing', 'failing')),
    last_sync_error           text,
    last_sync_error_at        timestamptz,
    created_at                timestamptz NOT NULL DEFAULT now(),
    updated_at                timestamptz NOT NULL DEFAULT now()
);

-- The nightly pass scans exactly these rows; keep it an index-only walk.
CREATE INDEX users_due_for_sync_idx ON users (id)
    WHERE google_course_calendar_id IS NOT NULL
      AND (calendar_needs_sync OR last_calendar_sync_at IS NULL);
CREATE INDEX users_sync_status_idx ON users (calendar_sync_status) WHERE calendar_sync_status <> 'ok';

CREATE TABLE google_credentials (
    user_id                 bigint PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    refresh_token           text NOT NULL,
    access_token            text,
    access_token_expires_at timestamptz,
    revoked                 boolean NOT NULL DEFAULT false,
    updated_at              timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE courses (
    id             bigserial PRIMARY KEY,
    title          text NOT NULL,
    subject        text NOT NULL,
    course_number  text NOT NULL,
    section_number text NOT NULL,
    start_date     date,
    end_date       date,
    -- Untracked columns: changing them must not flag anybody.
    description    text,
    capacity       integer,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE rooms (
    id             bigserial PRIMARY KEY,
    building       text NOT NULL,
    number         text NOT NULL,
    -- A placeholder ("to be determined") room renders as location "TBD".
    is_placeholder boolean NOT NULL DEFAULT false,
    capacity       integer
);

CREATE TABLE meeting_times (
    id          bigserial PRIMARY KEY,
    course_id   bigint NOT NULL REFERENCES courses (id) ON DELETE CASCADE,
    day_of_week smallint NOT NULL CHECK (day_of_week BETWEEN 0 AND 6), -- 0 = Sunday
    begin_time  time NOT NULL,
    end_time    time NOT NULL,
    start_date  date,
    end_date    date,
    room_id     bigint REFERENCES rooms (id) ON DELETE SET NULL,
    -- Untracked column.
    notes       text,
    CHECK (end_time > begin_time)
);
CREATE INDEX meeting_times_course_id_idx ON meeting_times (course_id);
CREATE INDEX meeting_times_room_id_idx ON meeting_times (room_id);

CREATE TABLE enrollments (
    id         bigserial PRIMARY KEY,
    user_id    bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    course_id  bigint NOT NULL REFERENCES courses (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_id, course_id)
);
CREATE INDEX enrollments_course_id_idx ON enrollments (course_id);
