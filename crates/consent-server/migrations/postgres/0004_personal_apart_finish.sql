-- The identity leaves the records for good, and they are append-only again.
ALTER TABLE consent_records DROP COLUMN profile_id;
ALTER TABLE consent_records ENABLE TRIGGER consent_records_no_change;
