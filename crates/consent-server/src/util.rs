//! Small helpers the handlers and the storage share: the clock, ids, timestamps and JSON
//! merging. Imports nothing of the crate.

use serde_json::Value;

/// Milliseconds since the epoch.
pub(crate) fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A random (version 4) UUID in the hyphenated lower-case form Edge gives its request ids
/// (`xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx`): for request ids and for event ids without one of
/// their own.
///
/// Its 122 random bits come from a per-thread pool of OS randomness ([`random_id_bytes`]), so an
/// id costs no system call, and no id can be guessed from another: a server-made event id that
/// could be predicted could be sent first by someone else, and the event then dropped as its
/// duplicate.
pub(crate) fn unique_id() -> String {
    let id = uuid::Builder::from_random_bytes(random_id_bytes()).into_uuid();
    id.hyphenated()
        .encode_lower(&mut uuid::Uuid::encode_buffer())
        .to_owned()
}

/// How many ids one refill of a thread's pool serves (16 bytes each, 4 KiB in all).
const POOL_IDS: usize = 256;

/// A thread's random bytes not yet handed out: `bytes[next..]`.
struct IdPool {
    bytes: [[u8; 16]; POOL_IDS],
    next: usize,
}

thread_local! {
    static ID_POOL: std::cell::RefCell<IdPool> = const {
        std::cell::RefCell::new(IdPool { bytes: [[0; 16]; POOL_IDS], next: POOL_IDS })
    };
}

/// 16 random bytes from this thread's pool, refilled with one `getrandom` call every
/// [`POOL_IDS`] ids. Each pool's bytes are handed out once.
fn random_id_bytes() -> [u8; 16] {
    ID_POOL.with_borrow_mut(|pool| {
        if pool.next >= POOL_IDS {
            if getrandom::fill(pool.bytes.as_flattened_mut()).is_err() {
                fallback_id_bytes(&mut pool.bytes);
            }
            pool.next = 0;
        }
        let bytes = pool.bytes[pool.next];
        pool.next += 1;
        bytes
    })
}

/// Should the OS refuse randomness, ids must still be unique: each gets a process-wide counter
/// in its last eight bytes (big-endian, so the UUID variant bits only meet it past 2^62 ids)
/// and, in its first eight, the clock and the counter mixed (SplitMix64), which tells processes
/// apart. Unique, but guessable: acceptable only as a fallback.
fn fallback_id_bytes(bytes: &mut [[u8; 16]; POOL_IDS]) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let clock = u64::try_from(nanos & u128::from(u64::MAX)).unwrap_or(0);
    for slot in bytes.iter_mut() {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut z = clock ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        slot[..8].copy_from_slice(&z.to_le_bytes());
        slot[8..].copy_from_slice(&n.to_be_bytes());
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for milliseconds since the epoch.
pub(crate) fn iso8601(millis: i64) -> String {
    let secs = millis.div_euclid(1000);
    let ms = millis.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Deep-merges `update` into `target`: objects merge key by key, anything else replaces.
pub(crate) fn merge(target: &mut Value, update: &Value) {
    match (target, update) {
        (Value::Object(t), Value::Object(u)) => {
            for (k, v) in u {
                merge(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (t, u) => *t = u.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks the form of a hyphenated version 4 UUID.
    fn assert_v4(id: &str) {
        assert_eq!(id.len(), 36, "{id}");
        for (i, c) in id.char_indices() {
            if [8, 13, 18, 23].contains(&i) {
                assert_eq!(c, '-', "{id}");
            } else {
                assert!(c.is_ascii_digit() || ('a'..='f').contains(&c), "{id}");
            }
        }
        let parsed = uuid::Uuid::try_parse(id).unwrap();
        assert_eq!(parsed.get_version_num(), 4, "{id}");
        assert_eq!(parsed.get_variant(), uuid::Variant::RFC4122, "{id}");
    }

    #[test]
    fn ids_are_hyphenated_v4_uuids_unique_across_threads_and_refills() {
        let threads: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(|| {
                    (0..3 * POOL_IDS + 7)
                        .map(|_| unique_id())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut seen = std::collections::HashSet::new();
        for thread in threads {
            for id in thread.join().unwrap() {
                assert_v4(&id);
                assert!(seen.insert(id), "a repeated id");
            }
        }
        assert_eq!(seen.len(), 4 * (3 * POOL_IDS + 7));
    }

    #[test]
    fn fallback_ids_are_unique_v4_uuids() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..3 {
            let mut bytes = [[0; 16]; POOL_IDS];
            fallback_id_bytes(&mut bytes);
            for slot in bytes {
                let id = uuid::Builder::from_random_bytes(slot)
                    .into_uuid()
                    .hyphenated()
                    .to_string();
                assert_v4(&id);
                assert!(seen.insert(id), "a repeated id");
            }
        }
    }

    #[test]
    fn iso8601_formats_utc() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(1_732_631_109_316), "2024-11-26T14:25:09.316Z");
        assert_eq!(iso8601(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
