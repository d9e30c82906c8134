-- Events are deduplicated per profile: the key is the profile's identity and the event id, so
-- that an event id one visitor chooses (`xdm._id` is client-chosen) can never make another
-- visitor's event with the same id a silent duplicate. The event id comes before the profile
-- in the key, so that the key also finds an id in the whole organisation and sandbox: a request
-- that names no identity (a new one is minted for it each time, a retry included) is
-- deduplicated by id alone, see `Db::insert_anonymous_events`.
-- Every stored event is kept.
ALTER TABLE events DROP CONSTRAINT events_pkey;
ALTER TABLE events ADD CONSTRAINT events_pkey
    PRIMARY KEY (org, sandbox, event_id, namespace, profile_id);
