-- A profile's consent records form a list: every record points to the same profile's record
-- before it (`profile_prev_seq`) and the profile points to its latest one (`last_record_seq`).
-- This replaces the index on consent_records by profile, whose inserts land at random places
-- and so cost a page write per consent change; the list costs nothing the change does not
-- already write (the profile row and the record itself).
ALTER TABLE profiles ADD COLUMN last_record_seq BIGINT;
ALTER TABLE consent_records ADD COLUMN profile_prev_seq BIGINT;

-- Link the records written before this migration. The links are not part of a record's hash,
-- so no hash changes; the append-only trigger is lifted for this one statement.
ALTER TABLE consent_records DISABLE TRIGGER consent_records_no_change;
UPDATE consent_records r SET profile_prev_seq = l.prev
FROM (
    SELECT org, sandbox, seq,
           LAG(seq) OVER (PARTITION BY org, sandbox, namespace, profile_id ORDER BY seq) AS prev
    FROM consent_records
) l
WHERE r.org = l.org AND r.sandbox = l.sandbox AND r.seq = l.seq AND l.prev IS NOT NULL;
ALTER TABLE consent_records ENABLE TRIGGER consent_records_no_change;
UPDATE profiles SET last_record_seq = (
    SELECT MAX(r.seq) FROM consent_records r
    WHERE r.org = profiles.org AND r.sandbox = profiles.sandbox
      AND r.namespace = profiles.namespace AND r.profile_id = profiles.id
);

DROP INDEX consent_records_profile;
