-- Profiles, keyed by organisation, sandbox, identity namespace and identity value.
CREATE TABLE profiles (
    org           TEXT   NOT NULL,
    sandbox       TEXT   NOT NULL,
    namespace     TEXT   NOT NULL,
    id            TEXT   NOT NULL,
    general       TEXT   NOT NULL DEFAULT 'pending',
    consents      TEXT   NOT NULL DEFAULT '{}',
    subscriptions TEXT   NOT NULL DEFAULT '{}',
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    PRIMARY KEY (org, sandbox, namespace, id)
);

-- Experience events, deduplicated by event id within an organisation and sandbox.
CREATE TABLE events (
    org         TEXT   NOT NULL,
    sandbox     TEXT   NOT NULL,
    event_id    TEXT   NOT NULL,
    namespace   TEXT   NOT NULL,
    profile_id  TEXT   NOT NULL,
    body        TEXT   NOT NULL,
    received_at BIGINT NOT NULL,
    PRIMARY KEY (org, sandbox, event_id)
);

-- The head of each organisation's and sandbox's consent record chain.
CREATE TABLE chain_heads (
    org     TEXT   NOT NULL,
    sandbox TEXT   NOT NULL,
    seq     BIGINT NOT NULL,
    hash    TEXT   NOT NULL,
    PRIMARY KEY (org, sandbox)
);

-- Consent records: append-only, each one carrying the hash of the one before it.
CREATE TABLE consent_records (
    org        TEXT   NOT NULL,
    sandbox    TEXT   NOT NULL,
    seq        BIGINT NOT NULL,
    namespace  TEXT   NOT NULL,
    profile_id TEXT   NOT NULL,
    source     TEXT   NOT NULL,
    payload    TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    prev_hash  TEXT   NOT NULL,
    hash       TEXT   NOT NULL,
    PRIMARY KEY (org, sandbox, seq)
);
CREATE INDEX consent_records_profile ON consent_records (org, sandbox, namespace, profile_id);

CREATE FUNCTION consent_records_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'consent records are append-only';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER consent_records_no_change BEFORE UPDATE OR DELETE ON consent_records
    FOR EACH ROW EXECUTE FUNCTION consent_records_append_only();
