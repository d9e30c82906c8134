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
    #[cfg(test)]
    if FORCE_FALLBACK.with(std::cell::Cell::get) {
        return false;
    }
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
/// process and unlikely to repeat in another: the clock in the first eight, the process id and a
/// counter in the last seven (bytes 9 to 15), which neither UUID version overwrites or masks.
fn random_bytes() -> [u8; 16] {
    let mut bytes = [0_u8; 16];
    if !fill_random(&mut bytes) {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let count = COUNTER.fetch_add(1, Ordering::Relaxed) & 0xffff_ffff;
        let unique = (u64::from(std::process::id()) << 32) | count;
        bytes[..8].copy_from_slice(&(nanos as u64).to_be_bytes());
        bytes[8..].copy_from_slice(&unique.to_be_bytes());
        // Byte 8 is masked by the variant; the counter lives in bytes 9 to 15.
        bytes[8] = 0;
    }
    bytes
}

/// The bytes `random_bytes` gives when the system's randomness fails, for the tests.
#[cfg(test)]
fn fallback_bytes() -> [u8; 16] {
    FORCE_FALLBACK.with(|f| f.set(true));
    let bytes = random_bytes();
    FORCE_FALLBACK.with(|f| f.set(false));
    bytes
}

#[cfg(test)]
thread_local! {
    static FORCE_FALLBACK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
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
    fn ids_stay_unique_when_the_system_randomness_fails() {
        let ids: std::collections::HashSet<String> = (0..10_000)
            .map(|_| {
                let mut bytes = fallback_bytes();
                // What the version 7 id does to the fallback bytes.
                bytes[..6].copy_from_slice(&[0; 6]);
                bytes[6] = (bytes[6] & 0x0f) | 0x70;
                bytes[8] = (bytes[8] & 0x3f) | 0x80;
                hyphenated(&bytes)
            })
            .collect();
        assert_eq!(ids.len(), 10_000);
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
