-- Google credentials encrypted at rest.
--
-- google_credentials.refresh_token and .access_token hold envelopes, never a plain token
-- (once a sealing key is registered):
--   calsync:v1:<ref>:pgp:<base64>          sealed by the database with pgp_pub_encrypt
--                                          under calsync's registered public key (any
--                                          writer: raw INSERT/UPDATE or
--                                          calsync.store_credentials)
--   calsync:v1:<ref>:aead:<key id>:<base64> AES-256-GCM under calsync's key <key id>
--                                          (the worker re-encrypts sealed and plain
--                                          envelopes on first use and on rotate-key)
--   calsync:v1:<ref>:plain:<token>          legacy: stored before encryption was set up
--                                          (no sealing key registered); re-encrypted by
--                                          the worker on first use or by rotate-key
-- <ref> is a random id given to each new refresh token when it is written; it survives
-- re-encryption. The generated column refresh_token_ref is the tracked column: a new
-- token (new ref) flags the student and lifts needs_reauth; calsync re-encrypting a token
-- in place (same ref) flags nobody. Access tokens carry an empty ref.
--
-- The database holds only public keys: the private key that unseals, and the AEAD keys,
-- live with the workers (CALSYNC_CREDENTIALS_*).

CREATE EXTENSION IF NOT EXISTS pgcrypto;

-- Public keys (ASCII-armored OpenPGP, RSA) the database seals incoming tokens with; the
-- newest is used.
CREATE TABLE calsync.credential_sealing_keys (
    key_id     text PRIMARY KEY,
    public_key text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    created_by text NOT NULL
);

CREATE FUNCTION calsync.is_credential_envelope(value text) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT value LIKE 'calsync:v1:%'
$$;

-- The token reference of a refresh_token value ('' for values written before this
-- migration ran, which it turns into envelopes below).
CREATE FUNCTION calsync.credential_ref(value text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN value LIKE 'calsync:v1:%' THEN split_part(value, ':', 3) ELSE '' END
$$;

-- Seal a secret under the newest registered public key; NULL when none is registered.
CREATE FUNCTION calsync.seal_credential(secret text, ref text) RETURNS text
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    key text;
BEGIN
    SELECT public_key INTO key FROM calsync.credential_sealing_keys
    ORDER BY created_at DESC, key_id LIMIT 1;
    IF key IS NULL THEN
        RETURN NULL;
    END IF;
    RETURN 'calsync:v1:' || ref || ':pgp:'
        || translate(encode(pgp_pub_encrypt(secret, dearmor(key)), 'base64'), E'\n', '');
END $$;

-- Whatever a writer puts into refresh_token / access_token that is not an envelope is a
-- plain token: seal it before the row is stored. Without a registered sealing key a
-- refresh token is kept as a legacy `plain` envelope (calsync re-encrypts it on first
-- use; `calsync credentials status` counts them) and an access token is dropped (calsync
-- fetches its own).
CREATE FUNCTION calsync.credentials_seal() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    ref text;
BEGIN
    IF NEW.refresh_token IS NOT NULL AND NOT calsync.is_credential_envelope(NEW.refresh_token) THEN
        ref := replace(gen_random_uuid()::text, '-', '');
        NEW.refresh_token := coalesce(calsync.seal_credential(NEW.refresh_token, ref),
                                      'calsync:v1:' || ref || ':plain:' || NEW.refresh_token);
    END IF;
    IF NEW.access_token IS NOT NULL AND NOT calsync.is_credential_envelope(NEW.access_token) THEN
        NEW.access_token := calsync.seal_credential(NEW.access_token, '');
        IF NEW.access_token IS NULL THEN
            NEW.access_token_expires_at := NULL;
        END IF;
    END IF;
    -- A new refresh token: an access token cached for the old one is forgotten (unless
    -- the same statement wrote a new one).
    IF TG_OP = 'UPDATE'
       AND calsync.credential_ref(NEW.refresh_token) IS DISTINCT FROM calsync.credential_ref(OLD.refresh_token)
       AND NEW.access_token IS NOT DISTINCT FROM OLD.access_token THEN
        NEW.access_token := NULL;
        NEW.access_token_expires_at := NULL;
    END IF;
    RETURN NEW;
END $$;

-- Existing rows become envelopes: plain ones (no key can be registered yet), each with a
-- reference of its own. Flagging nobody: re-encoding is not a new token.
ALTER TABLE google_credentials DISABLE TRIGGER credentials_track;
UPDATE google_credentials SET
    refresh_token = 'calsync:v1:' || replace(gen_random_uuid()::text, '-', '') || ':plain:' || refresh_token,
    access_token = CASE WHEN access_token IS NULL THEN NULL ELSE 'calsync:v1::plain:' || access_token END
WHERE NOT calsync.is_credential_envelope(refresh_token);
ALTER TABLE google_credentials ENABLE TRIGGER credentials_track;

ALTER TABLE google_credentials
    ADD COLUMN refresh_token_ref text GENERATED ALWAYS AS (calsync.credential_ref(refresh_token)) STORED;

CREATE TRIGGER credentials_00_seal BEFORE INSERT OR UPDATE ON google_credentials
    FOR EACH ROW EXECUTE FUNCTION calsync.credentials_seal();

-- The tracked column is the token reference; the envelope itself changes when calsync
-- re-encrypts it, which must flag nobody. (The generated trigger fires on
-- `UPDATE OF refresh_token_ref`, which includes every UPDATE that sets refresh_token.)
UPDATE calsync.tracked_columns SET role = 'untracked',
       note = 'envelope (sealed or encrypted token); calsync re-encrypts it in place'
WHERE table_name = 'google_credentials' AND column_name = 'refresh_token';
UPDATE calsync.tracked_columns SET note = 'token cache (an envelope; plain values are sealed or dropped)'
WHERE table_name = 'google_credentials' AND column_name = 'access_token';
INSERT INTO calsync.tracked_columns (table_name, column_name, role, note) VALUES
    ('google_credentials', 'refresh_token_ref', 'tracked',
     'a new refresh token was written (the student signed in again)');

-- The documented way for other services to store a student's Google credentials. It
-- refuses to run until calsync has registered a sealing key, so it never keeps a plain
-- token. A new refresh token lifts needs_reauth and flags the student.
CREATE FUNCTION calsync.store_credentials(p_user_id bigint, p_refresh_token text,
                                          p_access_token text DEFAULT NULL,
                                          p_access_token_expires_at timestamptz DEFAULT NULL)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF p_user_id IS NULL OR p_refresh_token IS NULL OR p_refresh_token = '' THEN
        RAISE EXCEPTION 'calsync.store_credentials: user id and refresh token are required'
            USING ERRCODE = '22004';
    END IF;
    IF calsync.is_credential_envelope(p_refresh_token) THEN
        RAISE EXCEPTION 'calsync.store_credentials: pass the refresh token itself, not a calsync envelope'
            USING ERRCODE = '22023';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM calsync.credential_sealing_keys) THEN
        RAISE EXCEPTION 'calsync.store_credentials: no sealing key is registered, so the token cannot be stored encrypted'
            USING ERRCODE = '55000',
                  HINT = 'run `calsync credentials add-sealing-key PUBLIC_KEY_FILE` (see docs/operations.md)';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM users WHERE id = p_user_id) THEN
        RAISE EXCEPTION 'calsync.store_credentials: unknown user %', p_user_id USING ERRCODE = '23503';
    END IF;
    INSERT INTO google_credentials (user_id, refresh_token, access_token, access_token_expires_at, revoked)
    VALUES (p_user_id, p_refresh_token, p_access_token,
            CASE WHEN p_access_token IS NULL THEN NULL ELSE p_access_token_expires_at END, false)
    ON CONFLICT (user_id) DO UPDATE SET
        refresh_token = EXCLUDED.refresh_token,
        access_token = EXCLUDED.access_token,
        access_token_expires_at = EXCLUDED.access_token_expires_at,
        revoked = false,
        updated_at = now();
END $$;
