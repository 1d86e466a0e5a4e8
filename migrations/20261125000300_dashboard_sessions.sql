-- Dashboard sessions, server-side so they can be revoked.
--
-- The cookie carries a random 256-bit session id; only its SHA-256 is stored here, so
-- a leaked table holds no usable cookie. `token_fingerprint` is an HMAC (keyed with the
-- dashboard's session secret) of the role's token at login time: a session is valid
-- only while the process that checks it computes the same fingerprint for the role's
-- current token, so a restart with a rotated token ends every session created with the
-- old one. `key_id` names the session secret (an HMAC of a constant), so a process only
-- purges rotated-token sessions signed with its own secret and never those of a replica
-- with another (e.g. random) secret. Logout deletes the row.
CREATE TABLE calsync.dashboard_sessions (
    id_hash           bytea PRIMARY KEY CHECK (octet_length(id_hash) = 32),
    role              text NOT NULL CHECK (role IN ('admin', 'readonly')),
    key_id            bytea NOT NULL,
    token_fingerprint bytea NOT NULL,
    client_addr       text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    expires_at        timestamptz NOT NULL
);

CREATE INDEX dashboard_sessions_expires_idx ON calsync.dashboard_sessions (expires_at);
