//! Random ids: request ids and event ids.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Random bytes taken from the system 4 KiB at a time: one `getrandom` call serves 256 ids.
struct Pool {
    bytes: [u8; 4096],
    used: usize,
}

thread_local! {
    static POOL: std::cell::RefCell<Pool> = const {
        std::cell::RefCell::new(Pool { bytes: [0; 4096], used: 4096 })
    };
}

/// Fills `out` from the thread's pool; `false` when the system's randomness failed.
fn fill_random(out: &mut [u8; 16]) -> bool {
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.used + out.len() > pool.bytes.len() {
            if getrandom::fill(&mut pool.bytes).is_err() {
                return false;
            }
            pool.used = 0;
        }
        let start = pool.used;
        out.copy_from_slice(&pool.bytes[start..start + 16]);
        // Bytes handed out are never handed out again.
        pool.bytes[start..start + 16].fill(0);
        pool.used += 16;
        true
    })
}

/// A time-ordered (version 7, RFC 9562) UUID, lower-case and hyphenated: 48 bits of Unix time in
/// milliseconds, then 74 random bits. Event ids are made with it, so that a server's index of
/// event ids grows at its end rather than at random places (a random id dirties one index page
/// per event stored; these touch a few per request).
pub(crate) fn new_time_ordered_uuid() -> String {
    let mut bytes = random_bytes();
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    bytes[..6].copy_from_slice(&millis.to_be_bytes()[2..]);
    bytes[6] = (bytes[6] & 0x0f) | 0x70;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    hyphenated(&bytes)
}

/// A random (version 4) UUID, lower-case and hyphenated.
pub(crate) fn new_uuid() -> String {
    let mut bytes = random_bytes();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    hyphenated(&bytes)
}

/// Sixteen random bytes, or, when the system's randomness fails, bytes still unique in this
/// process.
fn random_bytes() -> [u8; 16] {
    let mut bytes = [0_u8; 16];
    if !fill_random(&mut bytes) {
        // The system's randomness failed: the id must still be unique in this process, so mix the
        // clock with a counter. It is not secret; only the server's de-duplication relies on it.
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let count = COUNTER.fetch_add(1, Ordering::Relaxed);
        bytes[..8].copy_from_slice(&(nanos as u64).to_le_bytes());
        bytes[8..].copy_from_slice(&(count ^ std::process::id() as u64).to_le_bytes());
    }
    bytes
}

fn hyphenated(bytes: &[u8; 16]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(36);
    for (i, b) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            text.push('-');
        }
        text.push(char::from(HEX[usize::from(b >> 4)]));
        text.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    text
}

/// A random number for jitter; `None` when the system's randomness fails.
pub(crate) fn random_u64() -> Option<u64> {
    getrandom::u64().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_version_4() {
        let id = new_uuid();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"));
        assert_ne!(id, new_uuid());
        let parts: Vec<usize> = id.split('-').map(str::len).collect();
        assert_eq!(parts, [8, 4, 4, 4, 12]);
        assert!(
            id.bytes()
                .all(|b| b == b'-' || b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        // Ids drawn past one refill of the pool stay distinct.
        let many: std::collections::HashSet<String> = (0..1000).map(|_| new_uuid()).collect();
        assert_eq!(many.len(), 1000);
    }

    #[test]
    fn time_ordered_uuids_are_version_7_and_sort_by_time() {
        let first = new_time_ordered_uuid();
        assert_eq!(first.len(), 36);
        assert_eq!(&first[14..15], "7");
        assert!(matches!(&first[19..20], "8" | "9" | "a" | "b"));
        std::thread::sleep(std::time::Duration::from_millis(2));
        let later = new_time_ordered_uuid();
        assert!(later > first, "{later} sorts after {first}");
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let stamped = u64::from_str_radix(&later[..8], 16).unwrap() << 16
            | u64::from_str_radix(&later[9..13], 16).unwrap();
        assert!(millis.abs_diff(stamped) < 1000, "{later} carries the time");
        let many: std::collections::HashSet<String> =
            (0..1000).map(|_| new_time_ordered_uuid()).collect();
        assert_eq!(many.len(), 1000);
    }
}
