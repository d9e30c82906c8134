//! The small file-system interface every store goes through.
//!
//! Everything durable in this crate is built from a handful of primitives: append to a file, sync it,
//! write a new file, rename it over an old one, sync the directory. Putting them behind [`Io`] lets the
//! same code run on the real disk ([`DiskIo`]), in memory ([`MemIo`], which can also simulate a power
//! loss) and under injected faults ([`FaultyIo`](crate::FaultyIo)).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Debug};
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// A lock held on a data directory; dropping it releases the lock.
///
/// [`Io::lock`] hands one out. Whatever it holds (an open file with an OS lock on it, an entry in
/// a table of held locks) is released when the `DirLock` is dropped, and an OS lock also when the
/// process ends, however it ends.
pub struct DirLock {
    _guard: Box<dyn LockGuard>,
}

/// What a [`DirLock`] keeps alive: anything whose drop releases the lock.
trait LockGuard: Send + Sync + Debug {}

impl<T: Send + Sync + Debug> LockGuard for T {}

impl DirLock {
    /// A lock that is released when `guard` is dropped, for implementations of [`Io::lock`].
    pub fn new<G: Send + Sync + Debug + 'static>(guard: G) -> Self {
        Self {
            _guard: Box::new(guard),
        }
    }
}

impl Debug for DirLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("DirLock").field(&self._guard).finish()
    }
}

/// The locks taken through [`process_lock`], by path: the fallback for an [`Io`] that has no lock
/// of its own, which only keeps out other openers in the same process.
static PROCESS_LOCKS: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());

/// An entry in [`PROCESS_LOCKS`], removed when dropped.
#[derive(Debug)]
struct ProcessLock(PathBuf);

impl Drop for ProcessLock {
    fn drop(&mut self) {
        PROCESS_LOCKS
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.0);
    }
}

fn would_block(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::WouldBlock,
        format!("{} is locked by another opener", path.display()),
    )
}

/// Takes `path` in a table shared by the whole process; an error of kind
/// [`io::ErrorKind::WouldBlock`] when it is already taken.
fn process_lock(path: &Path) -> io::Result<DirLock> {
    let mut held = PROCESS_LOCKS.lock().unwrap_or_else(PoisonError::into_inner);
    if !held.insert(path.to_path_buf()) {
        return Err(would_block(path));
    }
    Ok(DirLock::new(ProcessLock(path.to_path_buf())))
}

/// File-system primitives used by the stores.
///
/// Implementations must give the POSIX guarantees the stores rely on: `rename` replaces the target
/// atomically, data written to a file is durable once [`IoFile::sync`] returned, and a new or renamed
/// directory entry is durable once [`Io::sync_dir`] returned for its directory.
pub trait Io: Clone + Debug + Send + Sync + 'static {
    /// An open file, positioned for appending.
    type File: IoFile;

    /// Creates `dir` and its parents if they are missing.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Reads a whole file; a missing file is an error of kind [`io::ErrorKind::NotFound`].
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Reads a whole file into `buf`, replacing its content; reusing one buffer for many files
    /// saves allocating and faulting in fresh memory for each.
    fn read_into(&self, path: &Path, buf: &mut Vec<u8>) -> io::Result<()> {
        *buf = self.read(path)?;
        Ok(())
    }
    /// Reads `len` bytes at `offset`.
    fn read_range(&self, path: &Path, offset: u64, len: usize) -> io::Result<Vec<u8>>;
    /// Opens a file for appending, creating it empty if it is missing.
    fn open_append(&self, path: &Path) -> io::Result<Self::File>;
    /// Makes the data written to the existing file `path` durable, through a descriptor of its
    /// own; a missing file is an error of kind [`io::ErrorKind::NotFound`] and is never created
    /// (the queue's sync thread must not bring back a file that a rename or a delete took away).
    /// The default checks that the file exists, then syncs it through [`Io::open_append`].
    fn sync_file(&self, path: &Path) -> io::Result<()> {
        self.read_range(path, 0, 0)?;
        self.open_append(path)?.sync()
    }
    /// Creates a file, truncating it if it exists, opened for appending.
    fn create(&self, path: &Path) -> io::Result<Self::File>;
    /// Renames `from` to `to`, atomically replacing `to`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Lists the names of the files in `dir`.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Makes the entries of `dir` (created, renamed and removed files) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Overwrites `buf.len()` bytes of the existing file `path` at `offset`, in place, through a
    /// descriptor of its own (not durable until [`Io::sync_file`]). The queue uses it to zero the
    /// payloads of acknowledged events. The default returns an error of kind
    /// [`io::ErrorKind::Unsupported`]; the queue then leaves acknowledged events in their segment
    /// until the whole segment is deleted.
    fn write_at(&self, path: &Path, offset: u64, buf: &[u8]) -> io::Result<()> {
        let _ = (path, offset, buf);
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "this Io cannot overwrite a file in place",
        ))
    }
    /// Takes an exclusive lock named by `path` (a lock file), held until the returned [`DirLock`]
    /// is dropped; an error of kind [`io::ErrorKind::WouldBlock`] when someone else holds it.
    ///
    /// The default keeps a table of locked paths for the whole process, so it only keeps out a
    /// second opener in the same process. An implementation on a file system shared by several
    /// processes must override it with an OS lock that the OS releases when the process ends, as
    /// [`DiskIo`] does.
    fn lock(&self, path: &Path) -> io::Result<DirLock> {
        process_lock(path)
    }
}

/// An open file handed out by an [`Io`].
pub trait IoFile: Debug + Send {
    /// Appends all of `buf` at the end of the file.
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()>;
    /// Makes the data written so far durable (`fdatasync`).
    fn sync(&mut self) -> io::Result<()>;
    /// Cuts the file to `len` bytes; later appends continue from there.
    fn truncate(&mut self, len: u64) -> io::Result<()>;
}

/// The real file system, through `std::fs`.
///
/// Directory sync opens the directory and calls `sync_all` on it, which is what Linux and the BSDs
/// need for a rename or a new file to survive a power loss.
#[derive(Debug, Clone, Copy, Default)]
pub struct DiskIo;

/// A file opened by [`DiskIo`].
#[derive(Debug)]
pub struct DiskFile(File);

impl Io for DiskIo {
    type File = DiskFile;

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        fs::read(path)
    }

    fn read_into(&self, path: &Path, buf: &mut Vec<u8>) -> io::Result<()> {
        buf.clear();
        File::open(path)?.read_to_end(buf)?;
        Ok(())
    }

    fn read_range(&self, path: &Path, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut file = File::open(path)?;
        file.seek(SeekFrom::Start(offset))?;
        let mut buf = vec![0; len];
        file.read_exact(&mut buf)?;
        Ok(buf)
    }

    fn open_append(&self, path: &Path) -> io::Result<DiskFile> {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map(DiskFile)
    }

    fn sync_file(&self, path: &Path) -> io::Result<()> {
        OpenOptions::new().append(true).open(path)?.sync_data()
    }

    fn create(&self, path: &Path) -> io::Result<DiskFile> {
        OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(path)
            .map(DiskFile)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file()
                && let Some(name) = entry.file_name().to_str()
            {
                names.push(name.to_owned());
            }
        }
        Ok(names)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn write_at(&self, path: &Path, offset: u64, buf: &[u8]) -> io::Result<()> {
        // Not `open_append`: writes through an `O_APPEND` descriptor always land at the end.
        let mut file = OpenOptions::new().write(true).open(path)?;
        file.seek(SeekFrom::Start(offset))?;
        file.write_all(buf)
    }

    /// An advisory lock (`flock` on Linux and the BSDs, `LockFileEx` on Windows) on the file
    /// `path`, created if needed. The OS releases it when the descriptor is closed, so when the
    /// `DirLock` is dropped or the process ends, even by `kill -9`. Two descriptors of one process
    /// exclude each other too. Where the file system cannot lock files, the lock falls back to the
    /// process-wide table of [`Io::lock`]'s default.
    fn lock(&self, path: &Path) -> io::Result<DirLock> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        match file.try_lock() {
            Ok(()) => Ok(DirLock::new(file)),
            Err(TryLockError::WouldBlock) => Err(would_block(path)),
            Err(TryLockError::Error(e)) if e.kind() == io::ErrorKind::Unsupported => {
                process_lock(path)
            }
            Err(TryLockError::Error(e)) => Err(e),
        }
    }
}

impl IoFile for DiskFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.0.write_all(buf)
    }

    fn sync(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
}

/// An in-memory file system that remembers what has been made durable.
///
/// Every file keeps the bytes written to it and the bytes it had at its last sync; every directory
/// keeps its live entries and the entries it had at its last directory sync. [`MemIo::crash`] throws
/// away everything that was not made durable, the way a power loss would, so tests can check that a
/// store written through [`Io`] recovers.
#[derive(Debug, Clone, Default)]
pub struct MemIo {
    fs: Arc<Mutex<MemFs>>,
}

#[derive(Debug, Default, Clone)]
struct MemFs {
    next_id: u64,
    nodes: BTreeMap<u64, Node>,
    live: BTreeMap<PathBuf, u64>,
    durable: BTreeMap<PathBuf, u64>,
    dirs: BTreeSet<PathBuf>,
    /// Locks held, by path, with the token of the `DirLock` holding each.
    locks: BTreeMap<PathBuf, u64>,
    next_lock: u64,
}

/// A lock held on a [`MemIo`]; released when dropped, unless a simulated power loss (which ends
/// every process) released it first.
#[derive(Debug)]
struct MemLock {
    fs: MemIo,
    path: PathBuf,
    token: u64,
}

impl Drop for MemLock {
    fn drop(&mut self) {
        let mut fs = self.fs.fs();
        if fs.locks.get(&self.path) == Some(&self.token) {
            fs.locks.remove(&self.path);
        }
    }
}

#[derive(Debug, Default, Clone)]
struct Node {
    data: Vec<u8>,
    synced: Vec<u8>,
}

/// A file opened by [`MemIo`].
#[derive(Debug)]
pub struct MemFile {
    fs: MemIo,
    id: u64,
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{} not found", path.display()),
    )
}

impl MemIo {
    /// Creates an empty in-memory file system.
    pub fn new() -> Self {
        Self::default()
    }

    fn fs(&self) -> MutexGuard<'_, MemFs> {
        self.fs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Simulates a power loss: every file goes back to its content at its last sync and every
    /// directory to its entries at its last directory sync.
    ///
    /// Every lock taken with [`Io::lock`] is released too, as the OS would release the locks of
    /// the processes the power loss ended.
    pub fn crash(&self) {
        let mut fs = self.fs();
        fs.locks.clear();
        fs.live = fs.durable.clone();
        for node in fs.nodes.values_mut() {
            node.data = node.synced.clone();
        }
        let reachable: BTreeSet<u64> = fs.live.values().copied().collect();
        fs.nodes.retain(|id, _| reachable.contains(id));
    }

    /// What a power loss at this instant would leave, as a file system of its own: every file at
    /// its content at its last sync, every directory with its entries at its last directory sync.
    /// This one is left as it is, so whatever still runs on it cannot touch the copy.
    pub fn power_loss_copy(&self) -> Self {
        let copy = Self {
            fs: Arc::new(Mutex::new(self.fs().clone())),
        };
        copy.crash();
        copy
    }

    /// Like [`MemIo::power_loss_copy`], on a file system that happened to write its directories
    /// back just before the loss: every entry made so far survives (new names pointing to files
    /// whose data may not), while file contents still go back to their last sync.
    pub fn power_loss_copy_keeping_entries(&self) -> Self {
        let mut fs = self.fs().clone();
        fs.durable = fs.live.clone();
        let copy = Self {
            fs: Arc::new(Mutex::new(fs)),
        };
        copy.crash();
        copy
    }

    /// Overwrites one byte of a file in place, as a test that tampers with or damages a file would.
    pub fn corrupt(&self, path: &Path, offset: usize, byte: u8) -> io::Result<()> {
        let mut fs = self.fs();
        let id = *fs.live.get(path).ok_or_else(|| not_found(path))?;
        let node = fs.nodes.entry(id).or_default();
        let slot = node
            .data
            .get_mut(offset)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "offset past end"))?;
        *slot = byte;
        node.synced = node.data.clone();
        Ok(())
    }

    /// Replaces a file's content wholesale and makes it durable, for tests that edit files.
    pub fn replace(&self, path: &Path, data: Vec<u8>) -> io::Result<()> {
        let mut fs = self.fs();
        let id = *fs.live.get(path).ok_or_else(|| not_found(path))?;
        let node = fs.nodes.entry(id).or_default();
        node.synced = data.clone();
        node.data = data;
        Ok(())
    }

    fn open_node(&self, path: &Path, truncate: bool) -> io::Result<MemFile> {
        let mut fs = self.fs();
        let parent = path.parent().unwrap_or(Path::new(""));
        if !parent.as_os_str().is_empty() && !fs.dirs.contains(parent) {
            return Err(not_found(parent));
        }
        let id = match fs.live.get(path) {
            Some(&id) => {
                if truncate {
                    fs.nodes.entry(id).or_default().data.clear();
                }
                id
            }
            None => {
                let id = fs.next_id;
                fs.next_id += 1;
                fs.nodes.insert(id, Node::default());
                fs.live.insert(path.to_path_buf(), id);
                id
            }
        };
        Ok(MemFile {
            fs: self.clone(),
            id,
        })
    }
}

impl Io for MemIo {
    type File = MemFile;

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut fs = self.fs();
        for ancestor in dir.ancestors() {
            if !ancestor.as_os_str().is_empty() {
                fs.dirs.insert(ancestor.to_path_buf());
            }
        }
        Ok(())
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let fs = self.fs();
        let id = fs.live.get(path).ok_or_else(|| not_found(path))?;
        Ok(fs.nodes.get(id).map(|n| n.data.clone()).unwrap_or_default())
    }

    fn read_range(&self, path: &Path, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let fs = self.fs();
        let id = fs.live.get(path).ok_or_else(|| not_found(path))?;
        let data = fs
            .nodes
            .get(id)
            .map(|n| n.data.as_slice())
            .unwrap_or_default();
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        data.get(start..start.saturating_add(len))
            .map(<[u8]>::to_vec)
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "read past end"))
    }

    fn open_append(&self, path: &Path) -> io::Result<MemFile> {
        self.open_node(path, false)
    }

    fn sync_file(&self, path: &Path) -> io::Result<()> {
        let mut fs = self.fs();
        let id = *fs.live.get(path).ok_or_else(|| not_found(path))?;
        let node = fs.nodes.entry(id).or_default();
        node.synced = node.data.clone();
        Ok(())
    }

    fn create(&self, path: &Path) -> io::Result<MemFile> {
        self.open_node(path, true)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut fs = self.fs();
        let id = fs.live.remove(from).ok_or_else(|| not_found(from))?;
        fs.live.insert(to.to_path_buf(), id);
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut fs = self.fs();
        fs.live
            .remove(path)
            .map(|_| ())
            .ok_or_else(|| not_found(path))
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let fs = self.fs();
        if !fs.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        Ok(fs
            .live
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name().and_then(|n| n.to_str()).map(str::to_owned))
            .collect())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut fs = self.fs();
        fs.durable.retain(|p, _| p.parent() != Some(dir));
        let entries: Vec<(PathBuf, u64)> = fs
            .live
            .iter()
            .filter(|(p, _)| p.parent() == Some(dir))
            .map(|(p, id)| (p.clone(), *id))
            .collect();
        fs.durable.extend(entries);
        Ok(())
    }

    fn write_at(&self, path: &Path, offset: u64, buf: &[u8]) -> io::Result<()> {
        let mut fs = self.fs();
        let id = *fs.live.get(path).ok_or_else(|| not_found(path))?;
        let data = &mut fs.nodes.entry(id).or_default().data;
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        if start > data.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "write past the end of the file",
            ));
        }
        let end = start.saturating_add(buf.len());
        if end > data.len() {
            data.resize(end, 0);
        }
        data[start..end].copy_from_slice(buf);
        Ok(())
    }

    /// A lock in this file system's table: one `MemIo` (and its clones) is one machine, so two
    /// stores on it exclude each other while two separate `MemIo`s do not.
    fn lock(&self, path: &Path) -> io::Result<DirLock> {
        let mut fs = self.fs();
        if fs.locks.contains_key(path) {
            return Err(would_block(path));
        }
        fs.next_lock += 1;
        let token = fs.next_lock;
        fs.locks.insert(path.to_path_buf(), token);
        drop(fs);
        Ok(DirLock::new(MemLock {
            fs: self.clone(),
            path: path.to_path_buf(),
            token,
        }))
    }
}

impl IoFile for MemFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let mut fs = self.fs.fs();
        fs.nodes
            .entry(self.id)
            .or_default()
            .data
            .extend_from_slice(buf);
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        let mut fs = self.fs.fs();
        let node = fs.nodes.entry(self.id).or_default();
        node.synced = node.data.clone();
        Ok(())
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        let mut fs = self.fs.fs();
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        fs.nodes.entry(self.id).or_default().data.truncate(len);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file system with the directory `/d` holding `name`, whose `data` and entry are durable;
    /// the file stays open for more writes.
    fn durable_file(name: &str, data: &[u8]) -> (MemIo, &'static Path, MemFile) {
        let io = MemIo::new();
        let dir = Path::new("/d");
        io.create_dir_all(dir).unwrap();
        let mut f = io.create(&dir.join(name)).unwrap();
        f.write_all(data).unwrap();
        f.sync().unwrap();
        io.sync_dir(dir).unwrap();
        (io, dir, f)
    }

    #[test]
    fn crash_keeps_only_what_was_synced() {
        let (io, dir, mut f) = durable_file("a", b"one");
        f.write_all(b"two").unwrap();
        let mut g = io.create(&dir.join("b")).unwrap();
        g.write_all(b"x").unwrap();
        g.sync().unwrap();
        io.crash();
        assert_eq!(io.read(&dir.join("a")).unwrap(), b"one");
        assert_eq!(
            io.read(&dir.join("b")).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }

    #[test]
    fn power_loss_copies_leave_the_original_alone() {
        let (io, dir, mut f) = durable_file("a", b"one");
        f.write_all(b"two").unwrap();
        let mut g = io.create(&dir.join("b")).unwrap();
        g.write_all(b"x").unwrap();

        let lost = io.power_loss_copy();
        assert_eq!(lost.read(&dir.join("a")).unwrap(), b"one");
        assert!(lost.read(&dir.join("b")).is_err(), "an entry never synced");
        let kept = io.power_loss_copy_keeping_entries();
        assert_eq!(kept.read(&dir.join("a")).unwrap(), b"one");
        assert_eq!(
            kept.read(&dir.join("b")).unwrap(),
            b"",
            "the name, not the data"
        );
        // Writing to a copy does not reach the original, nor the other way round.
        lost.create(&dir.join("c"))
            .unwrap()
            .write_all(b"c")
            .unwrap();
        f.write_all(b"three").unwrap();
        assert_eq!(io.read(&dir.join("a")).unwrap(), b"onetwothree");
        assert!(io.read(&dir.join("c")).is_err());
        assert_eq!(lost.read(&dir.join("a")).unwrap(), b"one");
    }

    #[test]
    fn sync_file_never_creates_a_file() {
        let mem = MemIo::new();
        mem.create_dir_all(Path::new("/d")).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let disk_dir = tmp.path().to_path_buf();
        fn check<I: Io>(io: &I, dir: &Path) {
            let path = dir.join("gone");
            assert_eq!(
                io.sync_file(&path).unwrap_err().kind(),
                io::ErrorKind::NotFound
            );
            assert!(io.list(dir).unwrap().is_empty(), "nothing was created");
            io.create(&path).unwrap().write_all(b"x").unwrap();
            io.sync_file(&path).unwrap();
        }
        check(&mem, Path::new("/d"));
        check(&DiskIo, &disk_dir);
    }

    #[test]
    fn rename_is_durable_only_after_dir_sync() {
        let (io, dir, _) = durable_file("tmp", b"new");
        io.rename(&dir.join("tmp"), &dir.join("final")).unwrap();
        io.crash();
        assert!(io.read(&dir.join("final")).is_err());
        io.rename(&dir.join("tmp"), &dir.join("final")).unwrap();
        io.sync_dir(dir).unwrap();
        io.crash();
        assert_eq!(io.read(&dir.join("final")).unwrap(), b"new");
    }

    #[test]
    fn disk_io_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let io = DiskIo;
        let path = dir.path().join("f");
        let mut f = io.open_append(&path).unwrap();
        f.write_all(b"hello world").unwrap();
        f.truncate(5).unwrap();
        f.write_all(b"!").unwrap();
        f.sync().unwrap();
        io.sync_dir(dir.path()).unwrap();
        assert_eq!(io.read(&path).unwrap(), b"hello!");
        assert_eq!(io.read_range(&path, 1, 3).unwrap(), b"ell");
        assert_eq!(io.list(dir.path()).unwrap(), vec!["f".to_owned()]);
    }
}
