//! Shared file helpers: I/O errors with context and the atomic replace-a-file routine.

use std::io;
use std::path::{Path, PathBuf};

use crate::io::{Io, IoFile};

/// An I/O operation that failed, with the file it was about.
#[derive(Debug, thiserror::Error)]
#[error("cannot {op} {}", path.display())]
pub struct FsError {
    /// What was being done ("read", "sync", "rename", ...).
    pub op: &'static str,
    /// The file or directory concerned.
    pub path: PathBuf,
    /// The underlying error.
    #[source]
    pub source: io::Error,
}

impl FsError {
    /// The kind of the underlying I/O error.
    pub fn kind(&self) -> io::ErrorKind {
        self.source.kind()
    }
}

/// Adds context to an `io::Result`.
pub(crate) trait Context<T> {
    fn ctx(self, op: &'static str, path: &Path) -> Result<T, FsError>;
}

impl<T> Context<T> for io::Result<T> {
    fn ctx(self, op: &'static str, path: &Path) -> Result<T, FsError> {
        self.map_err(|source| FsError {
            op,
            path: path.to_path_buf(),
            source,
        })
    }
}

/// The directory holding `path` (the current directory for a bare name).
pub(crate) fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Reads a file, mapping a missing file to `None`.
pub(crate) fn read_optional<I: Io>(io: &I, path: &Path) -> Result<Option<Vec<u8>>, FsError> {
    match io.read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).ctx("read", path),
    }
}

/// Replaces `path` with `bytes` so that a crash at any instant leaves either the old or the new
/// content: write `path.tmp`, sync it, rename it over `path`, sync the directory. With `durable`
/// false the two syncs are skipped (the result still survives a process crash, not a power loss).
///
/// On failure the temporary file is removed on a best-effort basis and `path` keeps its old content.
pub(crate) fn write_atomic<I: Io>(
    io: &I,
    path: &Path,
    bytes: &[u8],
    durable: bool,
) -> Result<(), FsError> {
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let result = (|| {
        let mut file = io.create(&tmp).ctx("create", &tmp)?;
        file.write_all(bytes).ctx("write", &tmp)?;
        if durable {
            file.sync().ctx("sync", &tmp)?;
        }
        drop(file);
        io.rename(&tmp, path).ctx("rename", &tmp)
    })();
    if let Err(e) = result {
        // Best effort: a leftover temporary file is harmless and is overwritten next time.
        let _ = io.remove_file(&tmp);
        return Err(e);
    }
    if durable {
        let dir = parent(path);
        io.sync_dir(dir).ctx("sync directory", dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::{FaultyIo, Op};
    use crate::io::MemIo;

    #[test]
    fn failed_steps_keep_the_old_content() {
        let io = FaultyIo::new(MemIo::new());
        let dir = Path::new("/d");
        io.create_dir_all(dir).unwrap();
        let path = dir.join("f");
        write_atomic(&io, &path, b"old", true).unwrap();
        for op in [Op::Open, Op::Write, Op::Sync, Op::Rename] {
            io.fail_next(op);
            let err = write_atomic(&io, &path, b"new", true).unwrap_err();
            assert!(err.to_string().contains("cannot"), "{err}");
            assert_eq!(io.read(&path).unwrap(), b"old", "{op:?}");
            io.inner().crash();
            assert_eq!(io.read(&path).unwrap(), b"old", "{op:?} after crash");
        }
        write_atomic(&io, &path, b"new", true).unwrap();
        io.inner().crash();
        assert_eq!(io.read(&path).unwrap(), b"new");
    }
}
