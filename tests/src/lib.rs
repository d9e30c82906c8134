//! Helpers shared by the end-to-end tests (`tests/it`) and the process they kill
//! (`e2e-child`): a small seeded random source, numbers from the environment, a process's
//! resident memory, and the JSON-lines reports the long runs append to.

use std::io::Write as _;
use std::path::Path;

/// A xorshift64 generator: the same seed gives the same sequence, which is all the tests need
/// (random instants, fault choices), with no dependency.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    /// A generator from `seed` (any value: zero is mapped to a non-zero state).
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// The whole number in the environment variable `name`, or `default` when it is unset or not a
/// number.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The resident memory of a process in KiB (`VmRSS` of `/proc/<pid>/status`; `self` for this
/// one), or `None` when it cannot be read.
pub fn rss_kib(pid: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Appends `line` (one JSON object) to the file named by the environment variable `env`, when
/// it is set: how the long runs hand their figures to `cargo xtask soak`.
pub fn append_report(env: &str, line: &serde_json::Value) -> std::io::Result<()> {
    let Some(path) = std::env::var_os(env) else {
        return Ok(());
    };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(Path::new(&path))?;
    writeln!(file, "{line}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_numbers() {
        let (mut a, mut b) = (XorShift::new(7), XorShift::new(7));
        let first: Vec<u64> = (0..4).map(|_| a.next_u64()).collect();
        assert_eq!(first, (0..4).map(|_| b.next_u64()).collect::<Vec<_>>());
        assert_ne!(first[0], first[1]);
        assert_ne!(XorShift::new(0).next_u64(), 0);
    }

    #[test]
    fn this_process_has_resident_memory() {
        assert!(rss_kib("self").is_some_and(|kib| kib > 0));
        assert_eq!(rss_kib("0"), None);
    }
}
