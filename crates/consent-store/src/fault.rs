//! A fault-injecting [`Io`] wrapper for tests.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::io::{DirLock, Io, IoFile};

/// A kind of I/O operation that [`FaultyIo`] can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Op {
    /// Appending bytes to a file, or overwriting them in place ([`Io::write_at`]). A failed write
    /// first writes half of its buffer, like a write cut short by a full disk.
    Write,
    /// Syncing a file's data.
    Sync,
    /// Syncing a directory.
    SyncDir,
    /// Renaming a file.
    Rename,
    /// Creating or opening a file.
    Open,
    /// Removing a file.
    Remove,
    /// Truncating a file.
    Truncate,
}

/// When a fault fires, counted in calls of one [`Op`] since the wrapper was made (the first call is 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    Nth(Op, u64),
    From(Op, u64),
}

#[derive(Debug, Default)]
struct State {
    counts: BTreeMap<Op, u64>,
    rules: Vec<Rule>,
    injected: u64,
}

/// Wraps an [`Io`] and fails chosen operations on a schedule.
///
/// Rules can be added at any time through a shared handle (the wrapper is cheap to clone and all
/// clones share one schedule), so a test can open a store, arm a fault and then drive the store into it.
///
/// ```
/// use consent_store::{FaultyIo, MemIo, Op};
/// let io = FaultyIo::new(MemIo::new());
/// io.fail_next(Op::Rename);
/// assert_eq!(io.injected(), 0);
/// ```
#[derive(Debug, Clone)]
pub struct FaultyIo<I> {
    inner: I,
    state: Arc<Mutex<State>>,
}

/// A file opened by [`FaultyIo`].
#[derive(Debug)]
pub struct FaultyFile<F> {
    inner: F,
    state: Arc<Mutex<State>>,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Counts one call of `op` and says whether it must fail.
fn check(state: &Mutex<State>, op: Op) -> io::Result<()> {
    let mut st = lock(state);
    let n = {
        let count = st.counts.entry(op).or_insert(0);
        *count += 1;
        *count
    };
    let fire = st.rules.iter().any(|rule| match *rule {
        Rule::Nth(o, k) => o == op && k == n,
        Rule::From(o, k) => o == op && n >= k,
    });
    if fire {
        st.injected += 1;
        Err(io::Error::other(format!("injected fault: {op:?} #{n}")))
    } else {
        Ok(())
    }
}

impl<I: Io> FaultyIo<I> {
    /// Wraps `inner` with an empty schedule: nothing fails until a rule is added.
    pub fn new(inner: I) -> Self {
        Self {
            inner,
            state: Arc::default(),
        }
    }

    /// The wrapped I/O, for example to call [`MemIo::crash`](crate::MemIo::crash) on it.
    pub fn inner(&self) -> &I {
        &self.inner
    }

    /// Fails the `n`-th call of `op` (counting from 1 since the wrapper was made).
    pub fn fail_nth(&self, op: Op, n: u64) {
        lock(&self.state).rules.push(Rule::Nth(op, n));
    }

    /// Fails the next call of `op`.
    pub fn fail_next(&self, op: Op) {
        let next = self.count(op) + 1;
        self.fail_nth(op, next);
    }

    /// Fails every call of `op` from the `n`-th on.
    pub fn fail_from(&self, op: Op, n: u64) {
        lock(&self.state).rules.push(Rule::From(op, n));
    }

    /// Removes every rule; later calls succeed.
    pub fn heal(&self) {
        lock(&self.state).rules.clear();
    }

    /// How many calls of `op` were made so far, failed ones included.
    pub fn count(&self, op: Op) -> u64 {
        lock(&self.state).counts.get(&op).copied().unwrap_or(0)
    }

    /// How many faults were injected so far.
    pub fn injected(&self) -> u64 {
        lock(&self.state).injected
    }
}

impl<I: Io> Io for FaultyIo<I> {
    type File = FaultyFile<I::File>;

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.inner.create_dir_all(dir)
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.inner.read(path)
    }

    fn read_into(&self, path: &Path, buf: &mut Vec<u8>) -> io::Result<()> {
        self.inner.read_into(path, buf)
    }

    fn read_range(&self, path: &Path, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        self.inner.read_range(path, offset, len)
    }

    fn open_append(&self, path: &Path) -> io::Result<Self::File> {
        check(&self.state, Op::Open)?;
        let inner = self.inner.open_append(path)?;
        Ok(FaultyFile {
            inner,
            state: Arc::clone(&self.state),
        })
    }

    fn sync_file(&self, path: &Path) -> io::Result<()> {
        check(&self.state, Op::Open)?;
        check(&self.state, Op::Sync)?;
        self.inner.sync_file(path)
    }

    fn create(&self, path: &Path) -> io::Result<Self::File> {
        check(&self.state, Op::Open)?;
        let inner = self.inner.create(path)?;
        Ok(FaultyFile {
            inner,
            state: Arc::clone(&self.state),
        })
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        check(&self.state, Op::Rename)?;
        self.inner.rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        check(&self.state, Op::Remove)?;
        self.inner.remove_file(path)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.inner.list(dir)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        check(&self.state, Op::SyncDir)?;
        self.inner.sync_dir(dir)
    }

    fn write_at(&self, path: &Path, offset: u64, buf: &[u8]) -> io::Result<()> {
        if let Err(e) = check(&self.state, Op::Write) {
            // A torn write, like an append's: the first half lands before the error.
            let half = buf.len() / 2;
            if let Some(head) = buf.get(..half) {
                self.inner.write_at(path, offset, head)?;
            }
            return Err(e);
        }
        self.inner.write_at(path, offset, buf)
    }

    fn lock(&self, path: &Path) -> io::Result<DirLock> {
        self.inner.lock(path)
    }
}

impl<F: IoFile> IoFile for FaultyFile<F> {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        if let Err(e) = check(&self.state, Op::Write) {
            // A torn write: part of the data reaches the file before the error.
            let half = buf.len() / 2;
            if let Some(head) = buf.get(..half) {
                self.inner.write_all(head)?;
            }
            return Err(e);
        }
        self.inner.write_all(buf)
    }

    fn sync(&mut self) -> io::Result<()> {
        check(&self.state, Op::Sync)?;
        self.inner.sync()
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        check(&self.state, Op::Truncate)?;
        self.inner.truncate(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::MemIo;

    #[test]
    fn nth_and_from_rules_fire_on_schedule() {
        let io = FaultyIo::new(MemIo::new());
        io.create_dir_all(Path::new("/d")).unwrap();
        io.fail_nth(Op::Sync, 2);
        io.fail_from(Op::Rename, 3);
        let mut f = io.create(Path::new("/d/a")).unwrap();
        assert!(f.sync().is_ok());
        assert!(f.sync().is_err());
        assert!(f.sync().is_ok());
        assert!(io.rename(Path::new("/d/a"), Path::new("/d/b")).is_ok());
        assert!(io.rename(Path::new("/d/b"), Path::new("/d/c")).is_ok());
        assert!(io.rename(Path::new("/d/c"), Path::new("/d/d")).is_err());
        assert!(io.rename(Path::new("/d/c"), Path::new("/d/d")).is_err());
        assert_eq!(io.injected(), 3);
        io.heal();
        assert!(io.rename(Path::new("/d/c"), Path::new("/d/d")).is_ok());
    }

    #[test]
    fn failed_write_is_torn() {
        let io = FaultyIo::new(MemIo::new());
        io.create_dir_all(Path::new("/d")).unwrap();
        let mut f = io.create(Path::new("/d/a")).unwrap();
        io.fail_next(Op::Write);
        assert!(f.write_all(b"abcd").is_err());
        assert_eq!(io.read(Path::new("/d/a")).unwrap(), b"ab");
    }
}
