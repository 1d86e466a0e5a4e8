-- Change tracking writes one narrow row per statement; the students are flagged later.
--
-- Until now every tracked statement flagged its students at once: a bulk UPDATE of
-- 10,000 course titles rewrote 50,000 user rows (every one a non-HOT update: the flag is
-- in the predicate of two partial indexes), ~14× the cost of the UPDATE itself
-- (`calsync bench`, case tracking). Now the statement triggers append the ids they found
-- — users, or courses whose students are affected — as ONE row of
-- calsync.pending_flags, and calsync.apply_pending_flags() folds the log into
-- users.calendar_needs_sync / calendar_sync_generation exactly as the old flagging did.
--
-- Who folds: the nightly pass (in its transaction, before it selects the due users), the
-- sync (before its snapshot and again before its compare-and-clear), and every calsync
-- reader of the flags (calsync status, /metrics, the dashboard's user pages). Other
-- readers of users.calendar_needs_sync run `SELECT calsync.apply_pending_flags();` first.
--
-- Why nothing is lost: a log row is deleted only by the transaction that applies it, and
-- applying bumps the generation. A change committed after a sync's snapshot is either
-- folded before the sync's compare-and-clear (the generation moved: the flag stays) or
-- after it (the fold flags the student again). A course's students are read when the
-- row is folded: students who left the course meanwhile were logged by their own
-- enrollment change, students who joined were flagged by it.

CREATE TABLE calsync.pending_flags (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_ids   bigint[] NOT NULL DEFAULT '{}',
    course_ids bigint[] NOT NULL DEFAULT '{}',
    logged_at  timestamptz NOT NULL DEFAULT now()
);

-- The immediate flag (what calsync.flag_users did until now): set the flag and bump the
-- generation of these users, locking their rows in id order so that concurrent callers
-- cannot deadlock. Returns how many users exist among the ids. Used by the fold and by
-- operators' "sync this user / everybody" (calsync mark-all).
CREATE FUNCTION calsync.flag_users_now(user_ids bigint[]) RETURNS bigint
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

-- The entry points every tracking trigger calls, unchanged in name and arguments: they
-- now log. Return the number of ids logged.
CREATE OR REPLACE FUNCTION calsync.flag_users(user_ids bigint[]) RETURNS bigint
LANGUAGE sql VOLATILE AS $$
    INSERT INTO calsync.pending_flags (user_ids)
    SELECT user_ids WHERE cardinality(user_ids) > 0;
    SELECT coalesce(cardinality(user_ids), 0)::bigint;
$$;

CREATE OR REPLACE FUNCTION calsync.flag_course_users(course_ids bigint[]) RETURNS bigint
LANGUAGE sql VOLATILE AS $$
    INSERT INTO calsync.pending_flags (course_ids)
    SELECT course_ids WHERE cardinality(course_ids) > 0;
    SELECT coalesce(cardinality(course_ids), 0)::bigint;
$$;

-- Fold the log into the flags: every logged user, and every student of a logged course,
-- flagged once (one generation bump however often they were logged). Concurrent callers
-- queue on the log rows (the second finds them gone), so when this returns every change
-- committed before it started is in the flags. Returns how many users were flagged.
CREATE FUNCTION calsync.apply_pending_flags() RETURNS bigint
LANGUAGE sql VOLATILE AS $$
    WITH taken AS (
        DELETE FROM calsync.pending_flags RETURNING user_ids, course_ids
    )
    SELECT calsync.flag_users_now(ARRAY(
        SELECT u FROM taken CROSS JOIN LATERAL unnest(taken.user_ids) AS u
        UNION
        SELECT e.user_id FROM enrollments e
        WHERE e.course_id IN (SELECT c FROM taken CROSS JOIN LATERAL unnest(taken.course_ids) AS c)
    ));
$$;
