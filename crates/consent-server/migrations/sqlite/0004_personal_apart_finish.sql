-- The identity leaves the records for good, and they are append-only again.
ALTER TABLE consent_records DROP COLUMN profile_id;
CREATE TRIGGER consent_records_no_update BEFORE UPDATE ON consent_records
BEGIN
    SELECT RAISE(ABORT, 'consent records are append-only');
END;
