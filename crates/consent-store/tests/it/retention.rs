//! What stays on disk and what a crash can take back: acknowledged events leave the disk at the
//! next sync, every directory made for the data directory is synced, and `peek` never shows an
//! event whose sequence number a crash could give to another event.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use consent_store::{DiskFile, DiskIo, Io, MemIo, QueueConfig, Store, SyncPolicy};

use crate::corrupt::all_files;

fn marker(i: u64) -> String {
    format!("user-{i:05}@example.com")
}

/// How many of the markers of `events` occur in the files under `dir`.
fn markers_on_disk(dir: &Path, events: std::ops::Range<u64>) -> usize {
    let files: Vec<Vec<u8>> = all_files(dir)
        .iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    events
        .filter(|&i| {
            let m = marker(i);
            files
                .iter()
                .any(|data| data.windows(m.len()).any(|w| w == m.as_bytes()))
        })
        .count()
}

/// The review's L1 case: with the default 4 MiB segments one segment holds every event, so
/// deleting whole segments never removed the acknowledged ones while the queue was open.
#[test]
fn acknowledged_events_leave_the_disk_at_the_next_sync() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut queue = store.queue(QueueConfig::default()).unwrap();
    for i in 0..2000 {
        let event = format!(r#"{{"email":"{}","n":{i}}}"#, marker(i));
        queue.append(event.as_bytes()).unwrap();
    }
    queue.sync().unwrap();
    queue.ack(1199).unwrap();
    queue.sync().unwrap();
    assert_eq!(markers_on_disk(dir.path(), 0..1200), 0, "acknowledged");
    assert_eq!(markers_on_disk(dir.path(), 1200..2000), 800, "waiting");
    let first = queue.peek(1).unwrap();
    assert!(String::from_utf8_lossy(&first[0].payload).contains(&marker(1200)));

    queue.ack(1999).unwrap();
    queue.sync().unwrap();
    assert_eq!(markers_on_disk(dir.path(), 0..2000), 0, "all acknowledged");
    drop(queue);
    let queue = store.queue(QueueConfig::default()).unwrap();
    assert!(queue.is_empty());
}

/// Under group commit the acknowledgement is persisted by the next group: by then the events are
/// gone too.
#[test]
fn acknowledged_events_leave_the_disk_at_the_next_group_commit() {
    let dir = tempfile::tempdir().unwrap();
    let config = QueueConfig::default().with_sync(SyncPolicy::GroupCommit(Duration::ZERO));
    let store = Store::open(dir.path()).unwrap();
    let mut queue = store.queue(config).unwrap();
    for i in 0..100 {
        queue.append(marker(i).as_bytes()).unwrap();
    }
    queue.sync().unwrap();
    // A group commit is due at every call: the acknowledgement persists the head at once.
    queue.ack(49).unwrap();
    assert_eq!(markers_on_disk(dir.path(), 0..50), 0);
    assert_eq!(markers_on_disk(dir.path(), 50..100), 50);
}

/// An `Io` on the real disk that records every directory it syncs.
#[derive(Debug, Clone, Default)]
struct RecordingIo(Arc<Mutex<Vec<PathBuf>>>);

impl Io for RecordingIo {
    type File = DiskFile;

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        DiskIo.create_dir_all(dir)
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        DiskIo.read(path)
    }
    fn read_range(&self, path: &Path, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        DiskIo.read_range(path, offset, len)
    }
    fn open_append(&self, path: &Path) -> io::Result<DiskFile> {
        DiskIo.open_append(path)
    }
    fn create(&self, path: &Path) -> io::Result<DiskFile> {
        DiskIo.create(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        DiskIo.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        DiskIo.remove_file(path)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        DiskIo.list(dir)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.0.lock().unwrap().push(dir.to_path_buf());
        DiskIo.sync_dir(dir)
    }
}

/// The review's L2 case: the data directory `root/a/b/data` is created with its parents; each new
/// directory's entry is durable only once the directory holding it is synced.
#[test]
fn every_directory_created_for_the_data_directory_is_synced() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let data = root.join("a").join("b").join("data");
    let io = RecordingIo::default();
    let store = Store::with_io(io.clone(), &data).unwrap();
    let synced = io.0.lock().unwrap().clone();
    for created in [&root, &root.join("a"), &root.join("a").join("b"), &data] {
        let holder = created.parent().unwrap();
        assert!(
            synced.iter().any(|d| d == holder),
            "{} was created but {} was never synced: {synced:?}",
            created.display(),
            holder.display()
        );
    }
    // The queue's directory too.
    drop(store.queue(QueueConfig::default()).unwrap());
    assert!(io.0.lock().unwrap().iter().any(|d| d == &data));
}

/// The review's L3 case, as a power loss: every event `peek` hands out keeps its sequence number
/// and payload across a crash at that instant.
#[test]
fn peek_shows_no_event_whose_number_a_crash_could_give_again() {
    let config =
        QueueConfig::default().with_sync(SyncPolicy::GroupCommit(Duration::from_secs(3600)));
    let store = Store::with_io(MemIo::new(), "/data").unwrap();
    let mut queue = store.queue(config).unwrap();
    queue.append(b"first").unwrap();
    queue.sync().unwrap();
    for i in 0..5 {
        queue.append(format!("original-{i}").as_bytes()).unwrap();
    }
    let check = |peeked: Vec<consent_store::Event>, store: &Store<MemIo>| {
        let io = store.io().power_loss_copy();
        let after = Store::with_io(io, "/data").unwrap();
        let mut queue = after.queue(config).unwrap();
        queue.append(b"a-different-event").unwrap();
        queue.sync().unwrap();
        let now = queue.peek(usize::MAX).unwrap();
        for event in &peeked {
            let same = now.iter().find(|e| e.seq == event.seq);
            assert_eq!(
                same.map(|e| &e.payload),
                Some(&event.payload),
                "event {} was handed out, then its number went to another event",
                event.seq
            );
        }
        peeked.len()
    };
    let peeked = queue.peek(usize::MAX).unwrap();
    assert_eq!(check(peeked, &store), 1, "only the synced event is shown");
    queue.sync().unwrap();
    let peeked = queue.peek(usize::MAX).unwrap();
    assert_eq!(
        check(peeked, &store),
        6,
        "once synced, every event is shown"
    );
}
