-- Personal data apart from the proof (GDPR Art. 17 erasure without breaking the chain):
-- - a consent record names its profile by a keyed hash of the identity (`subject`) instead of
--   the identity, and its payload keeps no personal field;
-- - the personal fields of a change (addresses, identity-specific consents) move to
--   `record_personal`, which an erasure deletes; the record keeps a salted digest of them;
-- - the key of the keyed hash is drawn once per database (`server_secrets`).
-- Between this file and `0004_personal_apart_finish.sql` the server rewrites every existing
-- record into that form and re-hashes each chain once, after checking it (src/migrate.rs).
CREATE TABLE server_secrets (
    name  TEXT NOT NULL PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE record_personal (
    org        TEXT   NOT NULL,
    sandbox    TEXT   NOT NULL,
    seq        BIGINT NOT NULL,
    namespace  TEXT   NOT NULL,
    profile_id TEXT   NOT NULL,
    detail     TEXT   NOT NULL,
    PRIMARY KEY (org, sandbox, seq)
);
CREATE INDEX record_personal_profile ON record_personal (org, sandbox, namespace, profile_id);
ALTER TABLE consent_records ADD COLUMN subject TEXT NOT NULL DEFAULT '';
ALTER TABLE consent_records DISABLE TRIGGER consent_records_no_change;
