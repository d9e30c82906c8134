-- Events are deduplicated per profile: the key is the profile's identity and the event id, so
-- that an event id one visitor chooses (`xdm._id` is client-chosen) can never make another
-- visitor's event with the same id a silent duplicate. The event id comes before the profile
-- in the key, so that the key also finds an id in the whole organisation and sandbox: a request
-- that names no identity (a new one is minted for it each time, a retry included) is
-- deduplicated by id alone, see `Db::insert_anonymous_events`.
-- SQLite cannot change a primary key in place, so the table is rebuilt; every stored event is
-- kept.
CREATE TABLE events_per_profile (
    org         TEXT   NOT NULL,
    sandbox     TEXT   NOT NULL,
    event_id    TEXT   NOT NULL,
    namespace   TEXT   NOT NULL,
    profile_id  TEXT   NOT NULL,
    body        TEXT   NOT NULL,
    received_at BIGINT NOT NULL,
    PRIMARY KEY (org, sandbox, event_id, namespace, profile_id)
);
INSERT INTO events_per_profile (org, sandbox, event_id, namespace, profile_id, body, received_at)
    SELECT org, sandbox, event_id, namespace, profile_id, body, received_at FROM events;
DROP TABLE events;
ALTER TABLE events_per_profile RENAME TO events;
