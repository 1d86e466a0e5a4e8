-- Provisioning without listing every calendar: a calendar calsync creates for a student
-- is found again after a crash (between create and record) by the marker in its
-- description — but looking for it means listing every calendar the owner has, one
-- calendarList page per 250 calendars. Doing that for every new student made
-- provisioning quadratic (a service account owning 40,000 calendars would list 160 pages
-- for each new one). Now a row here says "a creation for this user began and was not
-- recorded": only then does provisioning look for the marker. The row is written before
-- calendars.insert and removed when the calendar is recorded (owned_calendars::record).
CREATE TABLE calsync.provisioning_attempts (
    user_id    bigint PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    started_at timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE calsync.provisioning_attempts IS
    'Calendar creations begun and not yet recorded in calsync.owned_calendars; provisioning lists the owner''s calendars (to adopt one by its marker) only for these users.';
