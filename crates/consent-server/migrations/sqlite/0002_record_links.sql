-- A profile's consent records form a list: every record points to the same profile's record
-- before it (`profile_prev_seq`) and the profile points to its latest one (`last_record_seq`).
-- This replaces the index on consent_records by profile, whose inserts land at random places
-- and so cost a page write per consent change; the list costs nothing the change does not
-- already write (the profile row and the record itself).
ALTER TABLE profiles ADD COLUMN last_record_seq BIGINT;
ALTER TABLE consent_records ADD COLUMN profile_prev_seq BIGINT;

-- Link the records written before this migration (while the index still exists). The links
-- are not part of a record's hash, so no hash changes; the append-only trigger is lifted for
-- this one statement.
DROP TRIGGER consent_records_no_update;
UPDATE consent_records SET profile_prev_seq = (
    SELECT MAX(p.seq) FROM consent_records p
    WHERE p.org = consent_records.org AND p.sandbox = consent_records.sandbox
      AND p.namespace = consent_records.namespace AND p.profile_id = consent_records.profile_id
      AND p.seq < consent_records.seq
);
CREATE TRIGGER consent_records_no_update BEFORE UPDATE ON consent_records
BEGIN
    SELECT RAISE(ABORT, 'consent records are append-only');
END;
UPDATE profiles SET last_record_seq = (
    SELECT MAX(r.seq) FROM consent_records r
    WHERE r.org = profiles.org AND r.sandbox = profiles.sandbox
      AND r.namespace = profiles.namespace AND r.profile_id = profiles.id
);

DROP INDEX consent_records_profile;
