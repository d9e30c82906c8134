//! The durable event queue: segment files of checksummed frames, a head pointer and group commit.
//!
//! # On disk
//!
//! The queue directory holds segment files named after the sequence number of their first event
//! (`00000000000000000042.seg`), a `head` file and, once damage was found, a
//! [`quarantine`](QUARANTINE_DIR) directory. A segment is a run of frames:
//!
//! ```text
//! crc32c: u32 LE | length: u32 LE | sequence: u64 LE | payload: length bytes
//! ```
//!
//! The CRC-32C covers everything after it: the length, the sequence number and the payload. `head`
//! is a small log of head records (the sequence number of the first event not yet acknowledged,
//! 8 bytes LE, and their CRC-32C); the last valid record wins. Moving the head appends one record
//! and syncs it, which costs one `fdatasync`; every 1,024 records, and when the queue is opened,
//! the file is replaced atomically by one holding only the last record.
//!
//! # Acknowledged events leave the disk
//!
//! Events are only ever appended; acknowledging one moves the head. Once the new head is persisted
//! (at the next group commit or [`EventQueue::sync`]), every segment whose events are all behind
//! it is deleted, and in the segments still in use the frames behind it are overwritten in place
//! with frames of the same length whose payload is all zeros (their checksum recomputed), then
//! synced under a durable policy. So no acknowledged payload stays in the queue's files past that
//! sync, not even in the last segment, which is never deleted while the queue is open; opening
//! zeroes any left by a crash. Only frames behind the durable head are rewritten: a crash in the
//! middle leaves at worst torn frames behind the head, which recovery skips without a report.
//! What the file system does with the old blocks (a copy-on-write file system keeps them until
//! they are reused, and so does a device that remaps writes) is out of the queue's reach.
//!
//! # Sealing full segments
//!
//! A segment that is full is *sealed* (its data synced) before the next segment's name is made
//! durable, so that only the last `.seg` file can ever end in a torn write. Under every-write sync
//! and group commit without the sync thread this happens inline: seal, create the next segment,
//! sync the directory. Under group commit with the sync thread, appends do not wait for it: the
//! seal is queued on the sync thread, behind the group being synced, and appends go on into a new
//! file named `00000000000000000042.open`. Once every seal is done (the thread is idle), the next
//! group commit renames the `.open` files to their `.seg` names and syncs the directory before the
//! data of the group; only then are their events reported durable. [`EventQueue::peek`] and
//! [`EventQueue::read_from`] show durable events only, so no event is handed out (to be sent)
//! while a crash could still take it, and its sequence number, back.
//!
//! # Recovery
//!
//! Opening scans every segment and checks each frame's checksum and sequence number. At a frame
//! that is cut short or does not check out, the scan looks for the next frame that does, with a
//! plausible sequence number (at every byte after the damaged frame's start; where the damaged
//! frame's own length points only when the frame there has that frame's own number). What it
//! finds decides:
//!
//! - **Nothing valid after it: a tail.** In the last segment that is a torn write, left by a crash,
//!   and it is cut off (counted in [`RecoveryReport::torn_bytes`]). Only the last segment can end
//!   in a torn write; at the end of an earlier one it is damage when the next segment does not
//!   carry on with the very next sequence number.
//! - **Valid frames after it: damage**, which a crash cannot cause (bad media, an outside write).
//!   Every frame that checks out, before and after, is kept, and what could not be verified is
//!   reported. Sequence numbers go on after the last valid frame, so none is given twice.
//!
//! A segment file that lost waiting (not acknowledged) events either way is *quarantined*: moved,
//! byte for byte and never truncated, to the [`QUARANTINE_DIR`] directory, from which its valid
//! events are still delivered (only the payloads of events acknowledged later are zeroed in it,
//! as in any segment). It is never appended to again, is reported at every open
//! ([`Damage::Corrupt`], naming the file, the events it held, how many were kept and which could
//! not be verified) and is deleted like any segment once every event it held is acknowledged, or
//! by [`EventQueue::purge`]. Waiting events that no file holds (a segment file that is gone) are
//! reported as [`Damage::Missing`]. Damage never stops the queue from opening, so withdrawn consent
//! can always purge it. Damage among acknowledged events costs nothing and is not reported.
//!
//! Undetectable by design: a damaged frame at the very end of the last segment, with no valid
//! frame after it, looks exactly like a torn write and is cut as one; if it was durable, it is
//! lost without a report and the sequence numbers of the frames cut are given again.
//!
//! Everything recovered counts as durable afterwards, so under a durable policy opening syncs every
//! segment (a queue last written under [`SyncPolicy::None`] may have left them in the page cache
//! only).
//!
//! An `.open` file was started before the segment ahead of it was sealed, so none of its events
//! was ever reported durable. It is kept when the segments ahead of it end exactly where it
//! begins (then that segment is synced first, and the file gets its `.seg` name); otherwise what
//! ahead of it was lost in a power loss and the file is dropped, counted in
//! [`QueueStats::torn_bytes`].

use std::collections::{BTreeMap, VecDeque};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::fsutil::{Context, FsError, parent, read_optional, write_atomic};
use crate::io::{DirLock, DiskIo, Io, IoFile};

/// Bytes before the payload in a frame.
pub const FRAME_HEADER: u64 = 16;
const HEAD_FILE: &str = "head";
/// Under group commit, frames are written to the segment once this many bytes are buffered, and at
/// every sync.
const WRITE_BUFFER: usize = 256 << 10;
/// Head records appended to the head file before it is rewritten with just the last one.
const HEAD_LOG_MAX: u64 = 1024;
const SEGMENT_SUFFIX: &str = ".seg";
/// A segment started under group commit before the one ahead of it was sealed; renamed to
/// [`SEGMENT_SUFFIX`] once it is (see the module documentation).
const OPEN_SUFFIX: &str = ".open";
/// Directory, inside the queue directory, where damaged segments are moved (see the module
/// documentation).
pub const QUARANTINE_DIR: &str = "quarantine";
/// The offset recorded for an event whose frame could not be verified.
const HOLE: u64 = u64::MAX;
/// The most bytes of frames rewritten at once when acknowledged payloads are zeroed.
const SCRUB_CHUNK: usize = 1 << 20;

/// When appended events are made durable with `fsync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SyncPolicy {
    /// Sync after every append: an event is durable when [`EventQueue::append`] returns.
    EveryWrite,
    /// Group commit: once the last sync is at least this long ago, the next append or
    /// acknowledgement writes out what is buffered and hands the sync to a background thread, so
    /// one write and one `fdatasync` cover every event appended in between and appends go on while
    /// the disk works. Until then events are buffered in the process (written to the segment every
    /// 256 KiB) and are not durable: [`Appended::durable`] and [`EventQueue::durable_seq`] say when
    /// they are, and [`EventQueue::peek`] shows them from then on. The owner calls [`EventQueue::sync`] at [`EventQueue::poll_timeout`] so the last
    /// events do not wait for another append. If the thread cannot be started, syncs run inline.
    GroupCommit(Duration),
    /// Never sync: each event is written to the segment at once, so it survives a crash of the
    /// process, not a power loss.
    None,
}

impl Default for SyncPolicy {
    /// Group commit every 10 ms.
    fn default() -> Self {
        Self::GroupCommit(Duration::from_millis(10))
    }
}

/// Limits and durability of an [`EventQueue`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueConfig {
    /// When appends are synced.
    pub sync: SyncPolicy,
    /// The most events waiting at once; one more is refused with [`AppendError::Full`].
    pub max_events: u64,
    /// The most bytes waiting at once, frames included; one more is refused with [`AppendError::Full`].
    pub max_bytes: u64,
    /// A segment is closed and a new one started once it holds this many bytes.
    pub segment_bytes: u64,
}

impl Default for QueueConfig {
    /// Group commit every 10 ms, at most 100,000 events and 128 MiB, 4 MiB segments.
    fn default() -> Self {
        Self {
            sync: SyncPolicy::default(),
            max_events: 100_000,
            max_bytes: 128 << 20,
            segment_bytes: 4 << 20,
        }
    }
}

impl QueueConfig {
    /// Sets the sync policy.
    pub fn with_sync(mut self, sync: SyncPolicy) -> Self {
        self.sync = sync;
        self
    }

    /// Sets the most events waiting at once.
    pub fn with_max_events(mut self, max_events: u64) -> Self {
        self.max_events = max_events;
        self
    }

    /// Sets the most bytes waiting at once.
    pub fn with_max_bytes(mut self, max_bytes: u64) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// Sets the size at which a new segment is started.
    pub fn with_segment_bytes(mut self, segment_bytes: u64) -> Self {
        self.segment_bytes = segment_bytes;
        self
    }
}

/// An event read back from the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Its sequence number, given at append; a durable event's is never given again.
    pub seq: u64,
    /// The bytes appended.
    pub payload: Vec<u8>,
}

/// The result of a successful append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The event's sequence number.
    pub seq: u64,
    /// Whether the event is already synced; otherwise it is once
    /// [`EventQueue::durable_seq`] is past `seq`.
    pub durable: bool,
}

/// Counters of what the queue did since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueStats {
    /// Events appended.
    pub appended: u64,
    /// Events refused because the queue was full.
    pub refused: u64,
    /// Events released by acknowledgements.
    pub acked: u64,
    /// Events deleted by purges.
    pub purged: u64,
    /// Syncs of segment data.
    pub syncs: u64,
    /// Segment files deleted.
    pub segments_deleted: u64,
    /// Bytes of torn tail dropped when the queue was opened, `.open` segments that could not be
    /// kept included.
    pub torn_bytes: u64,
    /// Acknowledged events whose payload was overwritten with zeros in their segment file.
    pub scrubbed: u64,
}

/// What recovery found when the queue was opened: [`EventQueue::recovery`].
///
/// A clean queue has no [`damage`](Self::damage). Damage never stops the queue from opening:
/// every event that still verifies is kept and delivered, and what could not be verified is
/// listed here, by sequence number, with the file it was in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveryReport {
    /// Each damaged segment file and each range of missing events, in sequence order.
    pub damage: Vec<Damage>,
    /// Waiting events (not acknowledged) that could not be verified, over all damage.
    pub lost_events: u64,
    /// Bytes cut off the end of the last segment as a torn write, and of `.open` segments dropped
    /// (the same as [`QueueStats::torn_bytes`] after the open).
    pub torn_bytes: u64,
}

impl RecoveryReport {
    /// Whether the queue opened without damage (a torn tail cut off is not damage).
    pub fn is_clean(&self) -> bool {
        self.damage.is_empty()
    }
}

/// One piece of damage found by recovery.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Damage {
    /// A segment file holds frames that do not check out before frames that do, or ends in bytes
    /// that are not frames where the next segment does not carry on. It was moved to the
    /// [`QUARANTINE_DIR`] directory, byte for byte, and its verified events are still delivered
    /// from there (the payloads of those acknowledged are zeroed, as in any segment); the file is
    /// deleted once every event it held is acknowledged, or by [`EventQueue::purge`].
    #[error(
        "queue segment {} is damaged: it held events {}..{}; {kept} waiting events in it were \
         verified and are kept, {} could not be verified ({}); {}",
        path.display(),
        events.start,
        events.end,
        count(lost),
        ranges(lost),
        moved(path, quarantined)
    )]
    Corrupt {
        /// Where the damaged file was found.
        path: PathBuf,
        /// Where it is now.
        quarantined: PathBuf,
        /// The sequence numbers it held, as far as can be told.
        events: Range<u64>,
        /// Waiting events in it that were verified and stay in the queue.
        kept: u64,
        /// Waiting events in it that could not be verified.
        lost: Vec<Range<u64>>,
        /// Bytes of the file that are not verified frames.
        damaged_bytes: u64,
    },
    /// Waiting events that no segment file holds: the file that held them is gone, or the one
    /// before ends exactly where they should begin.
    #[error(
        "queue events {}..{} are missing: no segment file holds them (the next one is {})",
        events.start,
        events.end,
        next.display()
    )]
    Missing {
        /// The missing sequence numbers.
        events: Range<u64>,
        /// The segment file where the events carry on.
        next: PathBuf,
    },
    /// A file in the quarantine that holds nothing the queue can use (it only repeats events that
    /// earlier segments hold); it was renamed so that it is not read again, and is deleted by
    /// [`EventQueue::purge`].
    #[error("queue segment {} was set aside: {reason}", path.display())]
    SetAside {
        /// Where it is now.
        path: PathBuf,
        /// Why.
        reason: &'static str,
    },
}

fn count(ranges: &[Range<u64>]) -> u64 {
    ranges.iter().map(|r| r.end - r.start).sum()
}

fn ranges(ranges: &[Range<u64>]) -> String {
    if ranges.is_empty() {
        return "none".to_owned();
    }
    ranges
        .iter()
        .map(|r| format!("{}..{}", r.start, r.end))
        .collect::<Vec<_>>()
        .join(", ")
}

fn moved(from: &Path, to: &Path) -> String {
    if from == to {
        "it stays in quarantine".to_owned()
    } else {
        format!("moved to {}", to.display())
    }
}

impl Damage {
    /// Waiting events this damage made unreadable.
    pub fn lost_events(&self) -> u64 {
        match self {
            Self::Corrupt { lost, .. } => count(lost),
            Self::Missing { events, .. } => events.end - events.start,
            Self::SetAside { .. } => 0,
        }
    }
}

/// Why the queue could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenQueueError {
    /// A file could not be read, repaired or removed.
    #[error(transparent)]
    Io(#[from] FsError),
    /// The head file does not check out.
    #[error("queue head file {} is corrupt", path.display())]
    CorruptHead {
        /// The file.
        path: PathBuf,
    },
    /// Events that were never acknowledged are missing between two segments. No longer returned:
    /// damage is quarantined and reported in [`EventQueue::recovery`] ([`Damage`]) so that the
    /// queue always opens; the variant stays so that code matching on it still compiles.
    #[error("queue events {expected}..{found} are missing or corrupt (before {})", path.display())]
    Gap {
        /// The first missing sequence number.
        expected: u64,
        /// The sequence number the data carries on with.
        found: u64,
        /// The segment where the data carries on.
        path: PathBuf,
    },
}

/// The most events [`EventQueue::read_from`] reserves room for up front (it grows past it).
const READ_RESERVE: usize = 4096;

/// Why an event was not appended. In every case the event is not in the queue.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppendError {
    /// The queue holds `max_events` events or `max_bytes` bytes; the event was refused and counted
    /// in [`QueueStats::refused`].
    #[error("event queue is full ({events} events, {bytes} bytes waiting)")]
    Full {
        /// Events waiting.
        events: u64,
        /// Bytes waiting.
        bytes: u64,
    },
    /// The event alone is larger than the queue may hold.
    #[error("event of {0} bytes is larger than the queue allows")]
    TooLarge(usize),
    /// A write or sync failed. The queue must be reopened: the event may or may not be found then.
    #[error(transparent)]
    Io(#[from] FsError),
    /// An earlier write or sync failed; reopen the queue to recover.
    #[error("event queue is unusable after an I/O error; reopen it")]
    Poisoned,
    /// Every sequence number has been given out (only a damaged or crafted segment name can
    /// bring a queue there): the event was refused rather than given a number already used.
    #[error("event queue has no sequence number left")]
    SequenceExhausted,
}

/// Why a sync failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// A sync or a write of the head failed; the queue must be reopened.
    #[error(transparent)]
    Io(#[from] FsError),
    /// An earlier write or sync failed; reopen the queue to recover.
    #[error("event queue is unusable after an I/O error; reopen it")]
    Poisoned,
}

/// Why an acknowledgement failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AckError {
    /// The sequence number was never given out.
    #[error("cannot acknowledge event {seq}: the next event will be {next}")]
    Beyond {
        /// The sequence number acknowledged.
        seq: u64,
        /// The next sequence number to be given out.
        next: u64,
    },
    /// Persisting the head failed.
    #[error(transparent)]
    Sync(#[from] SyncError),
}

/// Why a purge failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PurgeError {
    /// The head could not be durably moved past the events: they may or may not be purged after a
    /// crash. Retry the purge.
    #[error("purge failed; it may not survive a crash")]
    Head(#[source] FsError),
    /// The head was durably moved past every event, so they are gone for good, but deleting a
    /// segment file failed; it is deleted when the queue is next compacted or opened.
    #[error("events purged, but their segment files are not all deleted yet")]
    Delete(#[source] FsError),
}

/// Why events could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// A segment could not be read.
    #[error(transparent)]
    Io(#[from] FsError),
    /// A frame no longer checks out (the file changed since it was opened).
    #[error("event {seq} is corrupt in {}", path.display())]
    Corrupt {
        /// The event.
        seq: u64,
        /// Its segment.
        path: PathBuf,
    },
}

#[derive(Debug)]
struct Segment {
    base: u64,
    path: PathBuf,
    /// Byte offset of each frame; event `base + i` starts at `offsets[i]`, or is [`HOLE`] when its
    /// frame could not be verified (or repeats an event of an earlier segment).
    offsets: Vec<u64>,
    /// The end of each verified frame that is followed by damaged bytes rather than by the next
    /// frame, by index; empty for an undamaged segment.
    ends: BTreeMap<usize, u64>,
    /// Bytes up to the end of the last verified frame.
    len: u64,
    /// Whether the file has its final name (`.seg`); an `.open` segment gets it once every
    /// segment ahead of it is sealed.
    published: bool,
    /// Whether the file is damaged and lives in the quarantine: it is read, never appended to.
    quarantined: bool,
}

impl Segment {
    fn end(&self) -> u64 {
        self.base + self.offsets.len() as u64
    }

    fn index(&self, seq: u64) -> usize {
        usize::try_from(seq - self.base).unwrap_or(usize::MAX)
    }

    fn is_hole(&self, seq: u64) -> bool {
        self.offsets.get(self.index(seq)).is_none_or(|&o| o == HOLE)
    }

    /// Where the frame at index `i` ends.
    fn frame_end(&self, i: usize) -> u64 {
        if let Some(&end) = self.ends.get(&i) {
            return end;
        }
        self.offsets
            .get(i + 1)
            .copied()
            .filter(|&o| o != HOLE)
            .unwrap_or(self.len)
    }

    /// Bytes of the frame of `seq`, 0 for a hole.
    fn frame_len(&self, seq: u64) -> u64 {
        let i = self.index(seq);
        match self.offsets.get(i) {
            Some(&start) if start != HOLE => self.frame_end(i).saturating_sub(start),
            _ => 0,
        }
    }
}

/// A durable FIFO of opaque events, for events waiting for consent or for the server.
///
/// Appends go to the end of the newest segment; [`ack`](Self::ack) releases events from the front
/// by moving the head; [`purge`](Self::purge) drops everything, durably, for consent "out".
/// Sequence numbers start at 0 and go on across purges. A number is given once to a durable
/// event: a crash can only take back events that were never reported durable (and that
/// [`peek`](Self::peek) therefore never showed), and their numbers are given again after it.
///
/// Delivery is at least once: an event whose acknowledgement did not reach the disk before a crash
/// is read again after it. An append that returned an error may or may not be found after a reopen;
/// one that was reported durable always is, unless the disk damaged it, which the reopen reports
/// ([`recovery`](Self::recovery); see the module documentation for the one case it cannot see).
/// After an I/O error the queue refuses further appends ([`AppendError::Poisoned`]) until it is
/// reopened, because only recovery can tell what reached the disk; [`purge`](Self::purge) still
/// works.
///
/// # Recovery and damage
///
/// [`open`](Self::open) checks every frame's CRC-32C and sequence number. A bad frame with no
/// valid frame after it is a tail: at the end of the last segment that is a torn write, which is
/// cut off. A bad frame with valid frames after it is damage (a crash cannot cause it): every
/// frame that verifies is kept and delivered, the next sequence number comes after the last one
/// found, and the segment file is moved, untouched, into the [`QUARANTINE_DIR`] directory, from
/// which its events are still read. A segment file that is gone, or a sealed one whose end is
/// destroyed, loses the waiting events it held. All of it is listed in
/// [`recovery`](Self::recovery) ([`Damage`], naming the damaged file and the sequence numbers it
/// could not verify) at every open until those events are acknowledged or purged; it never stops
/// the queue from opening. Damage among acknowledged events costs nothing. One case cannot be
/// told from a torn write: a damaged frame at the very end of the last segment, with no valid
/// frame after it, is cut as a tail without a report, and the numbers of what was cut are given
/// again.
///
/// # What stays on disk
///
/// Once acknowledgements are persisted (next group commit or [`sync`](Self::sync)), segments that
/// hold only acknowledged events are deleted and, in the others, the payloads of acknowledged
/// events are overwritten with zeros and synced. [`purge`](Self::purge) deletes every segment,
/// the quarantine included. Blocks the file system itself keeps (copy-on-write file systems,
/// remapping devices) are beyond the queue's reach.
///
/// ```
/// use consent_store::{MemoryStore, QueueConfig, SyncPolicy};
/// let store = MemoryStore::in_memory();
/// let config = QueueConfig::default().with_sync(SyncPolicy::EveryWrite);
/// let mut queue = store.queue(config)?;
/// let a = queue.append(br#"{"eventType":"web.webpagedetails.pageViews"}"#)?;
/// assert!(a.durable);
/// queue.append(b"second")?;
/// let events = queue.peek(10)?;
/// assert_eq!(events.len(), 2);
/// queue.ack(a.seq)?; // the server took the first one
/// drop(queue);
/// let mut queue = store.queue(config)?; // after a restart
/// assert_eq!(queue.peek(10)?[0].payload, b"second");
/// queue.purge()?; // consent "out"
/// assert!(queue.is_empty());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct EventQueue<I: Io = DiskIo> {
    io: I,
    dir: PathBuf,
    config: QueueConfig,
    segments: VecDeque<Segment>,
    /// The open last segment, when it is being appended to.
    active: Option<I::File>,
    /// First event not acknowledged.
    head: u64,
    /// Head as last written to the head file.
    persisted_head: u64,
    /// The head file, open for appending records.
    head_file: Option<I::File>,
    /// Records in the head file (0 when there is none).
    head_records: u64,
    /// Sequence number of the next append.
    next_seq: u64,
    /// Every event below this is synced.
    durable_seq: u64,
    /// Frame bytes of the events from `head` on.
    bytes: u64,
    last_sync: Instant,
    poisoned: bool,
    stats: QueueStats,
    /// Frames appended to the last segment under group commit and not yet written to it.
    wbuf: Vec<u8>,
    /// Files of purged segments that could not be deleted yet.
    garbage: Vec<PathBuf>,
    /// Under group commit, the thread that seals full segments and syncs the last one while
    /// appends go on.
    syncer: Option<Syncer>,
    /// Sequence numbers from `head` to `next_seq` that no verified frame holds (damage).
    missing: u64,
    /// Every acknowledged event below this has its payload zeroed in its segment file.
    scrubbed: u64,
    /// Set when the `Io` cannot overwrite files in place: acknowledged events then stay until
    /// their segment is deleted.
    scrub_unsupported: bool,
    /// What recovery found when the queue was opened.
    recovery: RecoveryReport,
    /// The data directory's lock, when opened from a [`Store`](crate::Store): held as long as this is.
    lock: Option<Arc<DirLock>>,
}

/// A background thread that syncs files in the order they were posted (seals of full segments,
/// group commits of the last one), so that neither stalls the appends that follow it.
#[derive(Debug)]
struct Syncer {
    shared: Arc<SyncShared>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct SyncShared {
    state: Mutex<SyncState>,
    cond: Condvar,
}

#[derive(Debug, Default)]
struct SyncState {
    /// What to sync, in order.
    requests: VecDeque<SyncRequest>,
    busy: bool,
    /// Every event below this is durable.
    done: u64,
    error: Option<FsError>,
    /// A sync failed: nothing is reported durable from then on, even when a later sync succeeds
    /// (after a failed `fsync` the kernel may have dropped the dirty pages it could not write).
    failed: bool,
    shutdown: bool,
}

/// One job of the sync thread.
#[derive(Debug)]
struct SyncRequest {
    /// A directory to sync first (new segment names), if any.
    dir: Option<PathBuf>,
    /// The file whose data to sync.
    file: PathBuf,
    /// Every event below this is durable once this request and every one before it are done;
    /// `None` for the seal of a full segment, which makes nothing durable on its own (the next
    /// segment's name is not durable yet).
    durable: Option<u64>,
}

impl SyncShared {
    fn lock(&self) -> MutexGuard<'_, SyncState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Syncer {
    fn spawn<I: Io>(io: I, done: u64) -> std::io::Result<Self> {
        let shared = Arc::new(SyncShared::default());
        shared.lock().done = done;
        let worker = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("consent-store-sync".into())
            .spawn(move || run_syncer(&io, &worker))?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// Posts a group commit unless a sync is already queued or running; says whether it was
    /// posted. Once `dir` (if any) and then `file` are synced, every event below `seq` is durable.
    fn request(&self, dir: Option<PathBuf>, file: PathBuf, seq: u64) -> bool {
        let mut st = self.shared.lock();
        if st.busy || !st.requests.is_empty() {
            return false;
        }
        st.requests.push_back(SyncRequest {
            dir,
            file,
            durable: Some(seq),
        });
        self.shared.cond.notify_all();
        true
    }

    /// Queues the seal of a full segment behind whatever is queued or running.
    fn seal(&self, file: PathBuf) {
        let mut st = self.shared.lock();
        st.requests.push_back(SyncRequest {
            dir: None,
            file,
            durable: None,
        });
        self.shared.cond.notify_all();
    }

    fn is_idle(&self) -> bool {
        let st = self.shared.lock();
        !st.busy && st.requests.is_empty()
    }

    /// Whether a sync failed (and nothing has been reported durable since).
    fn has_failed(&self) -> bool {
        self.shared.lock().failed
    }

    /// Waits until no sync is queued or running.
    fn wait_idle(&self) {
        let mut st = self.shared.lock();
        while st.busy || !st.requests.is_empty() {
            st = self
                .shared
                .cond
                .wait(st)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn done(&self) -> u64 {
        self.shared.lock().done
    }

    fn take_error(&self) -> Option<FsError> {
        self.shared.lock().error.take()
    }

    /// Forgets a failure, once nothing it could have lost is left (every segment was purged).
    fn forget_failure(&self) {
        let mut st = self.shared.lock();
        st.error = None;
        st.failed = false;
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.shared.lock().shutdown = true;
        self.shared.cond.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run_syncer<I: Io>(io: &I, shared: &SyncShared) {
    let mut st = shared.lock();
    loop {
        while st.requests.is_empty() && !st.shutdown {
            st = shared.cond.wait(st).unwrap_or_else(PoisonError::into_inner);
        }
        let Some(request) = st.requests.pop_front() else {
            return;
        };
        st.busy = true;
        drop(st);
        let dir = request
            .dir
            .as_ref()
            .map_or(Ok(()), |dir| io.sync_dir(dir).ctx("sync directory", dir));
        // fsync through another descriptor flushes the same file; one that is gone is an error.
        let result = dir.and_then(|()| io.sync_file(&request.file).ctx("sync", &request.file));
        st = shared.lock();
        st.busy = false;
        match result {
            Ok(()) if !st.failed => {
                if let Some(seq) = request.durable {
                    st.done = st.done.max(seq);
                }
            }
            Ok(()) => {}
            Err(e) => {
                st.failed = true;
                st.error = Some(e);
            }
        }
        shared.cond.notify_all();
    }
}

fn segment_name(base: u64) -> String {
    format!("{base:020}{SEGMENT_SUFFIX}")
}

fn open_segment_name(base: u64) -> String {
    format!("{base:020}{OPEN_SUFFIX}")
}

fn encode_head(seq: u64) -> [u8; 12] {
    let mut out = [0; 12];
    out[..8].copy_from_slice(&seq.to_le_bytes());
    out[8..].copy_from_slice(&crc32c::crc32c(&seq.to_le_bytes()).to_le_bytes());
    out
}

/// Reads a head log: the last valid record and whether anything after it is torn.
fn decode_head_log(bytes: &[u8]) -> Option<(u64, u64, bool)> {
    let mut last = None;
    let mut count = 0;
    let mut chunks = bytes.chunks_exact(12);
    for chunk in &mut chunks {
        match decode_head(chunk) {
            Some(seq) => {
                last = Some(seq);
                count += 1;
            }
            None => return last.map(|seq| (seq, count, true)),
        }
    }
    last.map(|seq| (seq, count, !chunks.remainder().is_empty()))
}

fn decode_head(bytes: &[u8]) -> Option<u64> {
    let seq: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
    let crc: [u8; 4] = bytes.get(8..12)?.try_into().ok()?;
    (bytes.len() == 12 && crc32c::crc32c(&seq) == u32::from_le_bytes(crc))
        .then(|| u64::from_le_bytes(seq))
}

/// One frame parsed from `data` at `at`: its sequence number and payload, if it checks out.
fn parse_frame(data: &[u8], at: usize) -> Option<(u64, &[u8])> {
    let header = data.get(at..at + FRAME_HEADER as usize)?;
    let crc = u32::from_le_bytes(header[0..4].try_into().ok()?);
    let len = u32::from_le_bytes(header[4..8].try_into().ok()?);
    let seq = u64::from_le_bytes(header[8..16].try_into().ok()?);
    let start = at + FRAME_HEADER as usize;
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    let covered = data.get(at + 4..end)?;
    (crc32c::crc32c(covered) == crc).then(|| (seq, &covered[12..]))
}

/// What scanning one segment file found.
#[derive(Debug, Default)]
struct Scan {
    /// Offsets of the frames, [`HOLE`] for those that could not be verified.
    offsets: Vec<u64>,
    /// The end of each verified frame that damaged bytes follow, by index.
    ends: BTreeMap<usize, u64>,
    /// The end of the last verified frame: what follows is a torn tail or damage.
    len: u64,
    /// Sequence numbers between verified frames that could not be verified.
    holes: Vec<Range<u64>>,
    /// Bytes between verified frames that are not frames.
    damaged_bytes: u64,
}

/// Scans a segment whose first event is `base`: every frame that checks out, in order. At a frame
/// that does not, it looks for the next one that does ([`resync`]); only when there is none is the
/// rest of the file a tail.
fn scan(data: &[u8], base: u64) -> Scan {
    let mut found = Scan::default();
    let mut at = 0usize;
    let mut expected = base;
    loop {
        while let Some((seq, payload)) = parse_frame(data, at) {
            if seq != expected {
                break;
            }
            found.offsets.push(at as u64);
            at += FRAME_HEADER as usize + payload.len();
            expected += 1;
        }
        if at >= data.len() {
            break;
        }
        let Some((next, seq)) = resync(data, at, expected, base) else {
            break;
        };
        if let Some(last) = found.offsets.len().checked_sub(1) {
            found.ends.insert(last, at as u64);
        }
        if seq > expected {
            found.holes.push(expected..seq);
            let holes = usize::try_from(seq - expected).unwrap_or(0);
            found.offsets.resize(found.offsets.len() + holes, HOLE);
        }
        found.damaged_bytes += (next - at) as u64;
        at = next;
        expected = seq;
    }
    found.len = at as u64;
    found
}

/// The first frame after the damaged bytes at `at` that checks out and can belong here: its
/// sequence number is at least `expected` and no larger than the frames before it allow (each
/// frame takes at least [`FRAME_HEADER`] bytes). Its offset and sequence number.
fn resync(data: &[u8], at: usize, expected: u64, base: u64) -> Option<(usize, u64)> {
    let plausible = |pos: usize, seq: u64| {
        seq >= expected && seq - base <= (pos / FRAME_HEADER as usize) as u64
    };
    // Where the damaged frame's own length points, a frame is taken at once only when it carries
    // the damaged frame's own number (that frame written again). Any other frame there is left to
    // the search below, which finds the first valid frame after the damage: jumping to a frame
    // with a later number can skip a valid frame in between (fuzzing found one: an event
    // appended after an earlier recovery had cut the damaged tail landed exactly there). So after
    // a flipped bit in a payload the next frame is found by the search, byte by byte.
    let claimed = data
        .get(at + 4..at + 8)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
        .and_then(|len| usize::try_from(len).ok())
        .and_then(|len| (at + FRAME_HEADER as usize).checked_add(len));
    if let Some(next) = claimed
        && let Some((seq, _)) = parse_frame(data, next)
        && seq == expected
    {
        return Some((next, seq));
    }
    // Otherwise every later offset, cheapest checks first: a plausible sequence number and a
    // length that fits, before the checksum.
    let last = data.len().checked_sub(FRAME_HEADER as usize)?;
    for pos in at + 1..=last {
        let Some(seq) = data
            .get(pos + 8..pos + 16)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
        else {
            break;
        };
        if !plausible(pos, seq) {
            continue;
        }
        let fits = data
            .get(pos + 4..pos + 8)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
            .and_then(|len| usize::try_from(len).ok())
            .is_some_and(|len| len <= data.len() - pos - FRAME_HEADER as usize);
        if fits && let Some((seq, _)) = parse_frame(data, pos) {
            return Some((pos, seq));
        }
    }
    None
}

/// The part of `range` that is not acknowledged (from `head` on), if any.
fn waiting(range: &Range<u64>, head: u64) -> Option<Range<u64>> {
    let start = range.start.max(head);
    (start < range.end).then_some(start..range.end)
}

/// The first sequence number below `head` in `data` (a segment scanned as `found`, first event
/// `base`) whose payload is not all zeros: acknowledged data still on disk.
fn first_unscrubbed(data: &[u8], base: u64, found: &Scan, head: u64) -> Option<u64> {
    let below = usize::try_from(head.saturating_sub(base)).unwrap_or(usize::MAX);
    found
        .offsets
        .iter()
        .take(below)
        .enumerate()
        .filter(|&(_, &o)| o != HOLE)
        .find(|&(_, &o)| {
            usize::try_from(o)
                .ok()
                .and_then(|o| parse_frame(data, o))
                .is_some_and(|(_, payload)| payload.iter().any(|&b| b != 0))
        })
        .map(|(i, _)| base + i as u64)
}

/// Which directory a segment file was found in, and under which name: the order in which files
/// with the same first event are taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Found {
    Quarantined,
    Sealed,
    Open,
}

/// A segment file read during recovery, before it is judged.
#[derive(Debug)]
struct Scanned {
    base: u64,
    path: PathBuf,
    found: Scan,
    file_len: u64,
    quarantined: bool,
    /// Whether its first events repeat events of earlier segments (they are holes here).
    overlaps: bool,
}

impl Scanned {
    fn end(&self) -> u64 {
        self.base + self.found.offsets.len() as u64
    }
}

/// Rewrites the frames of `seqs` in `segment` with zero payloads and recomputed checksums, in runs
/// of adjacent frames, without syncing; how many frames were rewritten.
fn scrub_segment<I: Io>(io: &I, segment: &Segment, seqs: Range<u64>) -> Result<u64, FsError> {
    let zeros = [0u8; 4096];
    let mut run: Option<u64> = None;
    let mut buf = Vec::new();
    let mut count = 0;
    let write = |start: u64, buf: &[u8]| {
        io.write_at(&segment.path, start, buf)
            .ctx("overwrite", &segment.path)
    };
    for seq in seqs {
        let i = segment.index(seq);
        let Some(&offset) = segment.offsets.get(i).filter(|&&o| o != HOLE) else {
            continue;
        };
        let payload_len = segment
            .frame_end(i)
            .saturating_sub(offset)
            .saturating_sub(FRAME_HEADER);
        let (Ok(len32), Ok(payload)) = (u32::try_from(payload_len), usize::try_from(payload_len))
        else {
            continue;
        };
        let contiguous = run.is_some_and(|start| start + buf.len() as u64 == offset);
        if !contiguous || buf.len() >= SCRUB_CHUNK {
            if let Some(start) = run.take() {
                write(start, &buf)?;
            }
            buf.clear();
            run = Some(offset);
        }
        let mut header = [0u8; FRAME_HEADER as usize];
        header[4..8].copy_from_slice(&len32.to_le_bytes());
        header[8..16].copy_from_slice(&seq.to_le_bytes());
        let mut crc = crc32c::crc32c(&header[4..]);
        let mut left = payload;
        while left > 0 {
            let n = left.min(zeros.len());
            crc = crc32c::crc32c_append(crc, &zeros[..n]);
            left -= n;
        }
        header[..4].copy_from_slice(&crc.to_le_bytes());
        buf.extend_from_slice(&header);
        buf.resize(buf.len() + payload, 0);
        count += 1;
    }
    if let Some(start) = run {
        write(start, &buf)?;
    }
    Ok(count)
}

impl<I: Io> EventQueue<I> {
    /// Opens the queue in `dir`, creating it if needed, and recovers it (see the module
    /// documentation): a torn tail is cut off, damaged segments are quarantined and reported in
    /// [`recovery`](Self::recovery), segments that were fully acknowledged are deleted, and the
    /// payloads of acknowledged events still on disk are zeroed.
    ///
    /// Damaged data never stops the queue from opening; only an I/O error or a head file that does
    /// not check out does.
    pub fn open(
        io: I,
        dir: impl Into<PathBuf>,
        config: QueueConfig,
    ) -> Result<Self, OpenQueueError> {
        let dir = dir.into();
        io.create_dir_all(&dir).ctx("create directory", &dir)?;
        // The directory itself may be new: make its entry durable before anything relies on it.
        let parent_dir = parent(&dir);
        io.sync_dir(parent_dir).ctx("sync directory", parent_dir)?;
        let head_path = dir.join(HEAD_FILE);
        let (head, head_records) = match read_optional(&io, &head_path)? {
            None => (0, 0),
            Some(bytes) => {
                // The first record is written whole before the file gets its name, so a file
                // without one valid record is damage, not a torn write.
                let (head, count, torn) =
                    decode_head_log(&bytes).ok_or(OpenQueueError::CorruptHead {
                        path: head_path.clone(),
                    })?;
                if torn || count > 1 {
                    // Compact, and get rid of a torn record before appending after it.
                    write_atomic(&io, &head_path, &encode_head(head), true)?;
                }
                (head, 1)
            }
        };
        // Segment files by base, a quarantined one first, then a final (`.seg`) name, then an
        // `.open` one.
        let mut files = Vec::new();
        for name in io.list(&dir).ctx("list", &dir)? {
            if let Some(base) = name
                .strip_suffix(SEGMENT_SUFFIX)
                .and_then(|b| b.parse::<u64>().ok())
            {
                files.push((base, Found::Sealed));
            } else if let Some(base) = name
                .strip_suffix(OPEN_SUFFIX)
                .and_then(|b| b.parse::<u64>().ok())
            {
                files.push((base, Found::Open));
            } else if name.ends_with(".tmp") {
                // A head update that crashed before its rename.
                let _ = io.remove_file(&dir.join(name));
            }
        }
        let quarantine = dir.join(QUARANTINE_DIR);
        let quarantined_names = match io.list(&quarantine) {
            Ok(names) => names,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e).ctx("list", &quarantine)?,
        };
        for name in quarantined_names {
            if let Some(base) = name
                .strip_suffix(SEGMENT_SUFFIX)
                .and_then(|b| b.parse::<u64>().ok())
            {
                files.push((base, Found::Quarantined));
            }
        }
        files.sort_unstable();
        // A crash may have left a rename (of the head) or a new segment visible but not durable;
        // recovery acts on what it sees, so make that durable first.
        io.sync_dir(&dir).ctx("sync directory", &dir)?;

        let mut queue = Self {
            io,
            dir,
            config,
            segments: VecDeque::new(),
            active: None,
            head,
            persisted_head: head,
            head_file: None,
            head_records,
            next_seq: head,
            durable_seq: head,
            bytes: 0,
            last_sync: Instant::now(),
            poisoned: false,
            stats: QueueStats::default(),
            wbuf: Vec::new(),
            garbage: Vec::new(),
            syncer: None,
            missing: 0,
            scrubbed: head,
            scrub_unsupported: false,
            recovery: RecoveryReport::default(),
            lock: None,
        };
        let (scanned, highest) = queue.scan_files(&files, head)?;
        queue.judge(scanned)?;
        // Past every event any file held, set-aside ones included, so that no number is given twice.
        queue.next_seq = queue
            .segments
            .back()
            .map_or(head, Segment::end)
            .max(head)
            .max(highest);
        queue.durable_seq = queue.next_seq;
        let mut verified = 0;
        for segment in &queue.segments {
            for seq in segment.base.max(head)..segment.end() {
                if !segment.is_hole(seq) {
                    queue.bytes += segment.frame_len(seq);
                    verified += 1;
                }
            }
        }
        queue.missing = (queue.next_seq - head).saturating_sub(verified);
        queue.delete_acked_segments(true)?;
        queue.scrub()?;
        queue.recovery.torn_bytes = queue.stats.torn_bytes;
        queue.recovery.lost_events = queue.recovery.damage.iter().map(Damage::lost_events).sum();
        if let SyncPolicy::GroupCommit(_) = config.sync {
            // Without the thread, group commit syncs inline: slower, just as safe.
            queue.syncer = Syncer::spawn(queue.io.clone(), queue.durable_seq).ok();
        }
        Ok(queue)
    }

    /// Recovery, first part: reads and scans every segment file in order, deals with `.open`
    /// files (kept and renamed when what is ahead of them is whole, dropped otherwise) and with
    /// files that repeat events of earlier ones. Sets `scrubbed` to the first acknowledged event
    /// whose payload is still on disk. Also returns the sequence number after the last verified
    /// frame of any file read, those set aside included.
    fn scan_files(
        &mut self,
        files: &[(u64, Found)],
        head: u64,
    ) -> Result<(Vec<Scanned>, u64), OpenQueueError> {
        let quarantine = self.dir.join(QUARANTINE_DIR);
        let mut scanned: Vec<Scanned> = Vec::new();
        // The sequence number after the last verified frame so far.
        let mut expected: Option<u64> = None;
        let mut renamed = false;
        let mut data = Vec::new();
        let mut first_dirty: Option<u64> = None;
        let mut highest = head;
        for &(base, found) in files {
            let path = match found {
                Found::Quarantined => quarantine.join(segment_name(base)),
                Found::Sealed | Found::Open => self.dir.join(segment_name(base)),
            };
            if found == Found::Sealed
                && let Some(prev) = scanned.last()
                && prev.quarantined
                && prev.base == base
            {
                // The same segment under its old and its quarantined name: a move into the
                // quarantine whose directory syncs did not both complete.
                self.io.read_into(&path, &mut data).ctx("read", &path)?;
                let same = self
                    .io
                    .read(&prev.path)
                    .ctx("read", &prev.path)
                    .map(|q| q == data)?;
                if same {
                    self.io.remove_file(&path).ctx("remove", &path)?;
                    renamed = true;
                    continue;
                }
                // Two different files for the same events cannot come from the queue; keep the
                // live one and set the quarantined one aside, untouched.
                let Some(prev) = scanned.pop() else { continue };
                self.set_aside(&prev.path, "another segment file starts at the same event")?;
                expected = scanned.last().map(Scanned::end);
            }
            if found == Found::Open {
                let open_path = self.dir.join(open_segment_name(base));
                // Started before the segment ahead of it was sealed, so nothing in it was ever
                // reported durable: kept only when what is ahead of it is whole.
                let follows = match expected {
                    Some(e) => e == base || (base > e && base <= head),
                    None => base <= head,
                };
                if !follows {
                    self.io
                        .read_into(&open_path, &mut data)
                        .ctx("read", &open_path)?;
                    self.stats.torn_bytes += data.len() as u64;
                    self.io.remove_file(&open_path).ctx("remove", &open_path)?;
                    renamed = true;
                    continue;
                }
                // Seal what is ahead of it before its name says so. An empty segment ahead with
                // the same base (a purged one) gives way to it.
                if scanned
                    .last()
                    .is_some_and(|s| s.base == base && !s.quarantined)
                {
                    scanned.pop();
                }
                if let Some(last) = scanned.last() {
                    self.io.sync_file(&last.path).ctx("sync", &last.path)?;
                }
                self.io
                    .rename(&open_path, &path)
                    .ctx("rename", &open_path)?;
                renamed = true;
            }
            self.io.read_into(&path, &mut data).ctx("read", &path)?;
            let mut found_frames = scan(&data, base);
            highest = highest.max(base + found_frames.offsets.len() as u64);
            let mut overlaps = false;
            if let Some(e) = expected
                && base < e
            {
                // Its first events repeat events that earlier segments hold: those are holes here.
                overlaps = true;
                let repeated = usize::try_from(e - base)
                    .unwrap_or(usize::MAX)
                    .min(found_frames.offsets.len());
                found_frames.offsets[..repeated].fill(HOLE);
                if base + found_frames.offsets.len() as u64 <= e {
                    self.set_aside(&path, "it only repeats events that earlier segments hold")?;
                    continue;
                }
            }
            if let Some(dirty) = first_unscrubbed(&data, base, &found_frames, head) {
                first_dirty.get_or_insert(dirty);
            }
            expected = Some(base + found_frames.offsets.len() as u64);
            scanned.push(Scanned {
                base,
                path,
                file_len: data.len() as u64,
                found: found_frames,
                quarantined: found == Found::Quarantined,
                overlaps,
            });
        }
        if renamed {
            self.io
                .sync_dir(&self.dir)
                .ctx("sync directory", &self.dir)?;
        }
        self.scrubbed = first_dirty.unwrap_or(head);
        Ok((scanned, highest))
    }

    /// Renames a file that the queue cannot use to a name it does not read (in the quarantine,
    /// with the suffix `.aside`) and reports it.
    fn set_aside(&mut self, path: &Path, reason: &'static str) -> Result<(), FsError> {
        let quarantine = self.dir.join(QUARANTINE_DIR);
        self.ensure_quarantine()?;
        let name = path
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_default();
        let mut aside = quarantine.join(name);
        aside.as_mut_os_string().push(".aside");
        self.io.rename(path, &aside).ctx("rename", path)?;
        self.io
            .sync_dir(&quarantine)
            .ctx("sync directory", &quarantine)?;
        let from = parent(path).to_path_buf();
        self.io.sync_dir(&from).ctx("sync directory", &from)?;
        self.recovery.damage.push(Damage::SetAside {
            path: aside,
            reason,
        });
        Ok(())
    }

    /// Creates the quarantine directory if needed, with its entry synced.
    fn ensure_quarantine(&self) -> Result<(), FsError> {
        let quarantine = self.dir.join(QUARANTINE_DIR);
        if let Err(e) = self.io.list(&quarantine) {
            if e.kind() != std::io::ErrorKind::NotFound {
                return Err(e).ctx("list", &quarantine);
            }
            self.io
                .create_dir_all(&quarantine)
                .ctx("create directory", &quarantine)?;
            self.io
                .sync_dir(&self.dir)
                .ctx("sync directory", &self.dir)?;
        }
        Ok(())
    }

    /// Recovery, second part: judges each scanned segment against its neighbours. A segment that
    /// lost waiting events (frames that do not check out before frames that do, or a damaged end
    /// where the next segment does not carry on) is moved to the quarantine and reported; waiting
    /// events that no file holds are reported as missing; a torn tail of the last segment is cut
    /// off. Builds the queue's segments and opens the last one for appending.
    fn judge(&mut self, scanned: Vec<Scanned>) -> Result<(), OpenQueueError> {
        let head = self.head;
        let quarantine = self.dir.join(QUARANTINE_DIR);
        if let Some(first) = scanned.first()
            && first.base > head
        {
            self.recovery.damage.push(Damage::Missing {
                events: head..first.base,
                next: first.path.clone(),
            });
        }
        let bases: Vec<u64> = scanned.iter().map(|s| s.base).collect();
        // Where each file was found, to name the one where missing events carry on.
        let paths: Vec<PathBuf> = scanned.iter().map(|s| s.path.clone()).collect();
        let count = scanned.len();
        let mut moved = false;
        let mut tail = None;
        for (i, item) in scanned.into_iter().enumerate() {
            let end = item.end();
            let trailing = item.file_len - item.found.len;
            let next = bases.get(i + 1).copied();
            let is_last = i + 1 == count;
            let mut lost: Vec<Range<u64>> = item
                .found
                .holes
                .iter()
                .filter_map(|r| waiting(r, head))
                .collect();
            let mut missing = None;
            if let Some(next) = next
                && next > end
                && let Some(gap) = waiting(&(end..next), head)
            {
                // Bytes after its last good frame: the events in between were in this file.
                if trailing > 0 {
                    lost.push(gap);
                } else {
                    missing = Some(gap);
                }
            }
            let damaged = !lost.is_empty() || item.overlaps;
            let mut path = item.path.clone();
            if damaged || item.quarantined {
                if !item.quarantined {
                    self.ensure_quarantine()?;
                    let to = quarantine.join(segment_name(item.base));
                    self.io.rename(&item.path, &to).ctx("rename", &item.path)?;
                    path = to;
                    moved = true;
                }
                let kept = (item.base.max(head)..end)
                    .filter(|&seq| {
                        usize::try_from(seq - item.base)
                            .ok()
                            .and_then(|i| item.found.offsets.get(i))
                            .is_some_and(|&o| o != HOLE)
                    })
                    .count() as u64;
                let held = if lost.last().is_some_and(|r| r.end > end) {
                    next.unwrap_or(end)
                } else {
                    end
                };
                self.recovery.damage.push(Damage::Corrupt {
                    path: item.path.clone(),
                    quarantined: path.clone(),
                    events: item.base..held,
                    kept,
                    lost,
                    damaged_bytes: item.found.damaged_bytes + trailing,
                });
            } else if is_last && trailing > 0 {
                // Only the last segment can end in a torn write, and this one lost nothing in
                // the middle: the tail is cut off below.
                tail = Some(trailing);
            }
            if let Some(events) = missing
                && let Some(next) = paths.get(i + 1)
            {
                self.recovery.damage.push(Damage::Missing {
                    events,
                    next: next.clone(),
                });
            }
            self.segments.push_back(Segment {
                base: item.base,
                path,
                offsets: item.found.offsets,
                ends: item.found.ends,
                len: item.found.len,
                published: true,
                quarantined: damaged || item.quarantined,
            });
        }
        if moved {
            // The quarantine first: a crash in between leaves the file under both names, which
            // the next recovery resolves, never under none.
            self.io
                .sync_dir(&quarantine)
                .ctx("sync directory", &quarantine)?;
            self.io
                .sync_dir(&self.dir)
                .ctx("sync directory", &self.dir)?;
        }
        if self.config.sync != SyncPolicy::None {
            // Everything found is reported durable from here on. A queue last written without
            // syncs (`SyncPolicy::None`) sealed nothing, so what a killed process left in the page
            // cache becomes durable only now; for a sealed segment this costs a no-op sync.
            for segment in self.segments.iter().rev().skip(1) {
                self.io
                    .sync_file(&segment.path)
                    .ctx("sync", &segment.path)?;
            }
        }
        if let Some(last) = self.segments.back() {
            let path = &last.path;
            if last.quarantined {
                // Never appended to again; the next append starts a new segment.
                if self.config.sync != SyncPolicy::None {
                    self.io.sync_file(path).ctx("sync", path)?;
                }
            } else {
                // Keep the last segment open for appending. Sync it even when nothing was torn:
                // what a killed process left in the page cache is only durable after this.
                let mut file = self.io.open_append(path).ctx("open", path)?;
                if let Some(torn) = tail {
                    self.stats.torn_bytes += torn;
                    file.truncate(last.len).ctx("truncate", path)?;
                }
                file.sync().ctx("sync", path)?;
                self.active = Some(file);
            }
        }
        Ok(())
    }

    /// Keeps the data directory's lock alive as long as this queue.
    pub(crate) fn holding(mut self, lock: Arc<DirLock>) -> Self {
        self.lock = Some(lock);
        self
    }

    /// What recovery found when the queue was opened: damaged segments (quarantined), missing
    /// events and the torn tail cut off. Check [`RecoveryReport::is_clean`] after every open.
    pub fn recovery(&self) -> &RecoveryReport {
        &self.recovery
    }

    /// The directory the queue lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The configuration the queue was opened with.
    pub fn config(&self) -> &QueueConfig {
        &self.config
    }

    /// Number of events waiting (appended and not acknowledged or purged); events that recovery
    /// could not verify ([`RecoveryReport::lost_events`]) do not count.
    pub fn len(&self) -> u64 {
        (self.next_seq - self.head).saturating_sub(self.missing)
    }

    /// Whether no event is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of the waiting events, frame headers included.
    pub fn pending_bytes(&self) -> u64 {
        self.bytes
    }

    /// Sequence number of the first waiting event (or of the next append when none waits).
    pub fn head(&self) -> u64 {
        self.head
    }

    /// Sequence number the next append gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Every event with a lower sequence number than this is durable.
    pub fn durable_seq(&self) -> u64 {
        self.syncer
            .as_ref()
            .map_or(self.durable_seq, |s| s.done().max(self.durable_seq))
    }

    /// Takes the result of background syncs: a failed one poisons the queue.
    fn check_background(&mut self) -> Result<(), FsError> {
        if let Some(e) = self.syncer.as_ref().and_then(Syncer::take_error) {
            self.poisoned = true;
            return Err(e);
        }
        Ok(())
    }

    /// Waits for a background sync in flight, and takes its result.
    fn wait_background(&mut self) -> Result<(), FsError> {
        if let Some(syncer) = &self.syncer {
            syncer.wait_idle();
            self.durable_seq = self.durable_seq.max(syncer.done());
        }
        self.check_background()
    }

    /// Counters since the queue was opened.
    pub fn stats(&self) -> QueueStats {
        self.stats
    }

    /// When [`sync`](Self::sync) should be called next under group commit, if anything waits for it.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.config.sync {
            SyncPolicy::GroupCommit(every) if self.has_unsynced() => Some(self.last_sync + every),
            _ => None,
        }
    }

    fn has_unsynced(&self) -> bool {
        self.durable_seq() < self.next_seq || self.persisted_head != self.head
    }

    /// Appends one event.
    ///
    /// When the queue is full the event is refused with [`AppendError::Full`] and counted; the queue
    /// never drops an event to make room.
    pub fn append(&mut self, payload: &[u8]) -> Result<Appended, AppendError> {
        if self.poisoned {
            return Err(AppendError::Poisoned);
        }
        if self.next_seq == u64::MAX {
            return Err(AppendError::SequenceExhausted);
        }
        self.check_background()?;
        let frame_len = FRAME_HEADER + payload.len() as u64;
        let len = u32::try_from(payload.len()).map_err(|_| AppendError::TooLarge(payload.len()))?;
        if frame_len > self.config.max_bytes {
            return Err(AppendError::TooLarge(payload.len()));
        }
        if self.len() >= self.config.max_events || self.bytes + frame_len > self.config.max_bytes {
            self.stats.refused += 1;
            return Err(AppendError::Full {
                events: self.len(),
                bytes: self.bytes,
            });
        }
        let seq = self.next_seq;
        let needs_new = match self.segments.back() {
            None => true,
            Some(last) => {
                last.quarantined
                    || last.end() != seq
                    || (last.len > 0 && last.len + frame_len > self.config.segment_bytes)
            }
        };
        if needs_new || self.active.is_none() {
            self.roll(needs_new).inspect_err(|_| self.poisoned = true)?;
        }

        let at = self.wbuf.len();
        self.wbuf.extend_from_slice(&[0; 4]);
        self.wbuf.extend_from_slice(&len.to_le_bytes());
        self.wbuf.extend_from_slice(&seq.to_le_bytes());
        self.wbuf.extend_from_slice(payload);
        let sum = crc32c::crc32c(&self.wbuf[at + 4..]);
        self.wbuf[at..at + 4].copy_from_slice(&sum.to_le_bytes());
        let Some(segment) = self.segments.back_mut() else {
            return Err(AppendError::Poisoned);
        };
        segment.offsets.push(segment.len);
        segment.len += frame_len;
        self.next_seq += 1;
        self.bytes += frame_len;
        self.stats.appended += 1;
        let buffered = matches!(self.config.sync, SyncPolicy::GroupCommit(_));
        if !buffered || self.wbuf.len() >= WRITE_BUFFER {
            self.flush_buffer()?;
        }
        self.maybe_sync().map_err(|e| match e {
            SyncError::Io(e) => AppendError::Io(e),
            SyncError::Poisoned => AppendError::Poisoned,
        })?;
        Ok(Appended {
            seq,
            durable: self.durable_seq() > seq,
        })
    }

    /// Writes the buffered frames to the last segment (without syncing).
    fn flush_buffer(&mut self) -> Result<(), FsError> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        let (Some(segment), Some(file)) = (self.segments.back(), self.active.as_mut()) else {
            return Ok(());
        };
        let result = file.write_all(&self.wbuf).ctx("write", &segment.path);
        if result.is_err() {
            // The frames may be half written; only a reopen can tell what is on disk.
            self.poisoned = true;
        }
        self.wbuf.clear();
        result
    }

    /// Opens the last segment for appending, or starts a new one at `next_seq`.
    fn roll(&mut self, new_segment: bool) -> Result<(), FsError> {
        if !new_segment && let Some(last) = self.segments.back() {
            self.active = Some(self.io.open_append(&last.path).ctx("open", &last.path)?);
            return Ok(());
        }
        self.flush_buffer()?;
        let final_path = self.dir.join(segment_name(self.next_seq));
        let open_path = self.dir.join(open_segment_name(self.next_seq));
        // A purged segment may have had this name: the new segment then takes it over at once,
        // so that no rename can ever land on a file still listed for deletion.
        let reused = self
            .garbage
            .iter()
            .any(|p| *p == final_path || *p == open_path);
        let background = self.syncer.is_some() && !reused;
        if background {
            // Group commit with the sync thread: the old segment is sealed behind what is being
            // synced, while appends go on into a new segment that keeps its `.open` name until
            // then (see the module documentation).
            self.check_background()?;
            if let (Some(syncer), Some(last)) = (&self.syncer, self.segments.back())
                && last.len > 0
                && !last.quarantined
            {
                syncer.seal(last.path.clone());
                self.stats.syncs += 1;
            }
        } else {
            self.wait_background()?;
            if self.config.sync != SyncPolicy::None {
                // Seal the old segment first, so that only the last segment can ever have a torn
                // tail, and give the new one its final name at once.
                if self.publish_all()? {
                    self.io
                        .sync_dir(&self.dir)
                        .ctx("sync directory", &self.dir)?;
                }
                if self.durable_seq < self.next_seq {
                    self.sync_data()?;
                }
            }
        }
        let path = if background {
            open_path
        } else {
            self.garbage.retain(|p| *p != final_path);
            final_path
        };
        let file = self.io.create(&path).ctx("create", &path)?;
        if !background && self.config.sync != SyncPolicy::None {
            self.io
                .sync_dir(&self.dir)
                .ctx("sync directory", &self.dir)?;
        }
        self.active = Some(file);
        self.segments.push_back(Segment {
            base: self.next_seq,
            path,
            offsets: Vec::new(),
            ends: BTreeMap::new(),
            len: 0,
            published: !background,
            quarantined: false,
        });
        Ok(())
    }

    /// Gives every `.open` segment its final name, in order; says whether any was renamed (the
    /// names are durable after the next directory sync). Only once every segment ahead of them is
    /// sealed: with the sync thread idle and no sync failed, since its queue may still name the
    /// old files.
    fn publish_all(&mut self) -> Result<bool, FsError> {
        if self.segments.iter().all(|s| s.published) {
            return Ok(false);
        }
        if let Some(syncer) = &self.syncer
            && (!syncer.is_idle() || syncer.has_failed())
        {
            return Ok(false);
        }
        let mut renamed = false;
        for segment in self.segments.iter_mut().filter(|s| !s.published) {
            let to = self.dir.join(segment_name(segment.base));
            let result = self
                .io
                .rename(&segment.path, &to)
                .ctx("rename", &segment.path);
            if result.is_err() {
                // Only a reopen can tell which name the file has now.
                self.poisoned = true;
            }
            result?;
            segment.path = to;
            segment.published = true;
            renamed = true;
        }
        Ok(renamed)
    }

    fn sync_data(&mut self) -> Result<(), FsError> {
        self.flush_buffer()?;
        if self.durable_seq < self.next_seq {
            if let (Some(file), Some(segment)) = (self.active.as_mut(), self.segments.back()) {
                file.sync().ctx("sync", &segment.path)?;
                self.stats.syncs += 1;
            }
            self.durable_seq = self.next_seq;
        }
        Ok(())
    }

    fn maybe_sync(&mut self) -> Result<(), SyncError> {
        match self.config.sync {
            SyncPolicy::EveryWrite => self.sync().map(drop),
            SyncPolicy::GroupCommit(every) => {
                if self.last_sync.elapsed() < every {
                    return Ok(());
                }
                let Some(syncer) = &self.syncer else {
                    return self.sync().map(drop);
                };
                if !syncer.is_idle() {
                    // The previous group is still being synced: this one joins the next.
                    return Ok(());
                }
                self.flush_buffer()?;
                // Every segment ahead of an `.open` one is sealed now: name them, and sync the
                // directory with the group.
                let dir = self.publish_all()?.then(|| self.dir.clone());
                let target = self.next_seq;
                if (dir.is_some() || self.durable_seq() < target)
                    && let (Some(syncer), Some(segment)) = (&self.syncer, self.segments.back())
                    && segment.published
                    && syncer.request(dir, segment.path.clone(), target)
                {
                    self.stats.syncs += 1;
                }
                self.write_head()?;
                self.last_sync = Instant::now();
                Ok(())
            }
            SyncPolicy::None => {
                // Nothing is synced, but the head still has to reach the file system.
                self.durable_seq = self.next_seq;
                self.write_head()
            }
        }
    }

    /// Persists the head, durably whatever the sync policy: a head file that a power loss could
    /// leave empty would make the queue unreadable. Then deletes the segments it released and
    /// zeroes the payloads of the acknowledged events left in the others.
    fn write_head(&mut self) -> Result<(), SyncError> {
        if self.persisted_head != self.head {
            if let Err(e) = self.append_head() {
                self.poisoned = true;
                return Err(e.into());
            }
            self.persisted_head = self.head;
            // Deleting released segments is only housekeeping: one that cannot be deleted now is
            // retried at the next head update and when the queue is opened.
            let _ = self.delete_acked_segments(false);
            let _ = self.collect_garbage();
            if let Err(e) = self.scrub() {
                // A failed overwrite may have torn frames anywhere in the range; only a reopen
                // (which scrubs again) can tell what is on disk.
                self.poisoned = true;
                return Err(e.into());
            }
        }
        Ok(())
    }

    /// Overwrites the payload of every acknowledged event (below the persisted head) still in a
    /// segment file with zeros, keeping each frame valid (its checksum recomputed), so that
    /// acknowledged events do not stay on disk until their whole segment is released; under a
    /// durable policy the files are synced. Only frames behind the durable head are touched, so a
    /// crash in the middle leaves at worst torn frames that recovery skips as acknowledged.
    fn scrub(&mut self) -> Result<(), FsError> {
        let upto = self.persisted_head;
        if self.scrubbed >= upto || self.scrub_unsupported {
            self.scrubbed = self.scrubbed.max(upto);
            return Ok(());
        }
        // Acknowledged frames may still be in the write buffer: write them out first.
        if self.segments.back().is_some_and(|s| s.base < upto) {
            self.flush_buffer()?;
        }
        let mut scrubbed = 0;
        for segment in &self.segments {
            let from = self.scrubbed.max(segment.base);
            let to = upto.min(segment.end());
            if from >= to {
                continue;
            }
            match scrub_segment(&self.io, segment, from..to) {
                Ok(0) => {}
                Ok(n) => {
                    scrubbed += n;
                    if self.config.sync != SyncPolicy::None {
                        self.io
                            .sync_file(&segment.path)
                            .ctx("sync", &segment.path)?;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Unsupported => {
                    // This `Io` cannot overwrite in place: acknowledged events then stay until
                    // their segment is deleted, as documented on `Io::write_at`.
                    self.scrub_unsupported = true;
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        self.stats.scrubbed += scrubbed;
        self.scrubbed = upto;
        Ok(())
    }

    /// Appends the head to the head file and syncs it, or replaces the file when it is missing, long,
    /// or may end in a torn record after an error.
    fn append_head(&mut self) -> Result<(), FsError> {
        let path = self.dir.join(HEAD_FILE);
        let record = encode_head(self.head);
        if self.poisoned || self.head_records == 0 || self.head_records >= HEAD_LOG_MAX {
            self.head_file = None;
            self.head_records = 0;
            write_atomic(&self.io, &path, &record, true)?;
            self.head_records = 1;
            return Ok(());
        }
        let file = match &mut self.head_file {
            Some(file) => file,
            None => self
                .head_file
                .insert(self.io.open_append(&path).ctx("open", &path)?),
        };
        file.write_all(&record).ctx("write", &path)?;
        file.sync().ctx("sync", &path)?;
        self.head_records += 1;
        Ok(())
    }

    /// Makes every appended event and every acknowledgement durable now, and deletes the segments
    /// that are fully acknowledged. Returns [`durable_seq`](Self::durable_seq).
    pub fn sync(&mut self) -> Result<u64, SyncError> {
        if self.poisoned {
            return Err(SyncError::Poisoned);
        }
        self.wait_background()?;
        let durable = self.config.sync != SyncPolicy::None;
        if durable {
            // Every segment is sealed but the last: give the `.open` ones their final names.
            let named = self.publish_all().and_then(|renamed| {
                if renamed {
                    self.io
                        .sync_dir(&self.dir)
                        .ctx("sync directory", &self.dir)?;
                }
                Ok(())
            });
            if let Err(e) = named.and_then(|()| self.sync_data()) {
                // After a failed fsync the kernel may have dropped the dirty pages: only a reopen,
                // which reads what really is on disk, can tell what survived.
                self.poisoned = true;
                return Err(e.into());
            }
        } else {
            self.durable_seq = self.next_seq;
        }
        self.write_head()?;
        self.last_sync = Instant::now();
        Ok(self.durable_seq)
    }

    /// Acknowledges every event up to and including `seq`: they are released once the new head is
    /// persisted, which happens under the queue's sync policy (at the next group commit or
    /// [`sync`](Self::sync)). Then segments holding only acknowledged events are deleted, and in
    /// the others the payloads of acknowledged events are overwritten with zeros (synced under a
    /// durable policy), so no acknowledged event stays on disk past that sync.
    pub fn ack(&mut self, seq: u64) -> Result<(), AckError> {
        if seq >= self.next_seq {
            return Err(AckError::Beyond {
                seq,
                next: self.next_seq,
            });
        }
        if self.poisoned {
            return Err(SyncError::Poisoned.into());
        }
        let new_head = seq + 1;
        if new_head <= self.head {
            return Ok(());
        }
        let mut verified = 0;
        for segment in &self.segments {
            for s in segment.base.max(self.head)..segment.end().min(new_head) {
                if !segment.is_hole(s) {
                    self.bytes -= segment.frame_len(s);
                    verified += 1;
                }
            }
        }
        // Sequence numbers that no verified frame held are released with the rest.
        self.missing = self
            .missing
            .saturating_sub((new_head - self.head).saturating_sub(verified));
        self.stats.acked += new_head - self.head;
        self.head = new_head;
        self.maybe_sync()?;
        Ok(())
    }

    /// Deletes every waiting event for good, for consent "out".
    ///
    /// The head is durably moved past the last event first (whatever the sync policy), so once this
    /// returns `Ok`, or [`PurgeError::Delete`], no event can come back; then every segment file is
    /// deleted, quarantined ones and everything else in the [`QUARANTINE_DIR`] directory included,
    /// and the deletions synced. Works on a queue poisoned by an earlier I/O error too. Returns
    /// how many events were purged.
    pub fn purge(&mut self) -> Result<u64, PurgeError> {
        if let Some(syncer) = &self.syncer {
            // Nothing may still be syncing a segment about to be deleted; an error it had does not
            // matter once every segment is gone.
            syncer.wait_idle();
            let _ = syncer.take_error();
        }
        let purged = self.len();
        let old_head = self.head;
        self.head = self.next_seq;
        if let Err(e) = self.append_head() {
            self.head = old_head;
            self.poisoned = true;
            return Err(PurgeError::Head(e));
        }
        self.stats.purged += purged;
        self.persisted_head = self.head;
        if let Some(syncer) = &self.syncer {
            // Every event is gone for good: a failed sync has nothing left to lose.
            syncer.forget_failure();
        }
        self.durable_seq = self.next_seq;
        self.bytes = 0;
        self.missing = 0;
        self.scrubbed = self.head;
        self.wbuf.clear();
        self.active = None;
        // Every segment is gone from the queue now, whether or not its file can be deleted yet.
        let stale: Vec<PathBuf> = self.segments.drain(..).map(|s| s.path).collect();
        self.garbage.extend(stale);
        // Whatever else the quarantine holds (files set aside) goes too: withdrawn consent must be
        // able to delete every event.
        let quarantine = self.dir.join(QUARANTINE_DIR);
        let quarantined = match self.io.list(&quarantine) {
            Ok(names) => names,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                return Err(PurgeError::Delete(FsError {
                    op: "list",
                    path: quarantine,
                    source: e,
                }));
            }
        };
        let had_quarantine = !quarantined.is_empty();
        for name in quarantined {
            let path = quarantine.join(name);
            if !self.garbage.contains(&path) {
                self.garbage.push(path);
            }
        }
        self.collect_garbage().map_err(PurgeError::Delete)?;
        if had_quarantine {
            self.io
                .sync_dir(&quarantine)
                .ctx("sync directory", &quarantine)
                .map_err(PurgeError::Delete)?;
        }
        self.io
            .sync_dir(&self.dir)
            .ctx("sync directory", &self.dir)
            .map_err(PurgeError::Delete)?;
        // No segment is left, so whatever an earlier failure left half-written is gone too.
        self.poisoned = false;
        Ok(purged)
    }

    /// Deletes the files of purged segments; the ones that fail stay listed for the next try.
    fn collect_garbage(&mut self) -> Result<(), FsError> {
        let mut first_error = None;
        let io = &self.io;
        let mut deleted = 0;
        self.garbage.retain(|path| match io.remove_file(path) {
            Ok(()) => {
                deleted += 1;
                false
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => {
                first_error.get_or_insert(FsError {
                    op: "remove",
                    path: path.clone(),
                    source: e,
                });
                true
            }
        });
        self.stats.segments_deleted += deleted;
        first_error.map_or(Ok(()), Err)
    }

    /// Deletes the segments whose events are all behind the persisted head; the last segment too
    /// when `include_last`.
    fn delete_acked_segments(&mut self, include_last: bool) -> Result<(), FsError> {
        while let Some(first) = self.segments.front() {
            let is_last = self.segments.len() == 1;
            if first.end() > self.persisted_head || (is_last && !include_last) {
                break;
            }
            if is_last {
                self.active = None;
            }
            match self.io.remove_file(&first.path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).ctx("remove", &first.path),
            }
            self.stats.segments_deleted += 1;
            self.segments.pop_front();
        }
        Ok(())
    }

    /// Reads up to `max` waiting events from the head on.
    ///
    /// Only durable events are shown (below [`durable_seq`](Self::durable_seq)): an event that a
    /// crash could still lose, and whose sequence number it could then give to another event, is
    /// never handed out to be sent. Under group commit a new event shows up once its group is
    /// synced (call [`sync`](Self::sync) to wait for it); under [`SyncPolicy::None`] every event
    /// counts as durable.
    pub fn peek(&self, max: usize) -> Result<Vec<Event>, ReadError> {
        self.read_from(self.head, max)
    }

    /// Reads up to `max` waiting durable events starting at sequence number `from` (or the head,
    /// if later), as [`peek`](Self::peek) does. Events that recovery could not verify are skipped.
    pub fn read_from(&self, from: u64, max: usize) -> Result<Vec<Event>, ReadError> {
        let visible = self.durable_seq().min(self.next_seq);
        let mut seq = from.max(self.head);
        // Reserve for what can be read, not for the span of sequence numbers: a damaged or
        // crafted segment name can put `head` and `next_seq` far apart.
        let mut out = Vec::with_capacity(
            max.min(usize::try_from(visible.saturating_sub(seq)).unwrap_or(0))
                .min(READ_RESERVE),
        );
        let idx = self.segments.partition_point(|s| s.end() <= seq);
        let last = self.segments.len().saturating_sub(1);
        let mut chosen = Vec::new();
        for (i, segment) in self.segments.range(idx..).enumerate() {
            if out.len() >= max || seq >= visible {
                break;
            }
            seq = seq.max(segment.base);
            let stop = segment.end().min(visible);
            if seq >= stop {
                continue;
            }
            // The verified frames to read, up to what is still wanted.
            chosen.clear();
            let mut at = segment.index(seq);
            let stop_at = segment.index(stop);
            while at < stop_at && chosen.len() < max - out.len() {
                if segment.offsets.get(at).is_some_and(|&o| o != HOLE) {
                    chosen.push(at);
                }
                at += 1;
            }
            seq = segment.base + at as u64;
            let (Some(&first), Some(&final_frame)) = (chosen.first(), chosen.last()) else {
                continue;
            };
            let start = segment.offsets[first];
            let end = segment.frame_end(final_frame);
            // The end of the last segment may still be in the write buffer.
            let on_disk = if idx + i == last {
                segment.len - self.wbuf.len() as u64
            } else {
                segment.len
            };
            let mut data = Vec::new();
            if start < on_disk {
                data = self
                    .io
                    .read_range(&segment.path, start, (end.min(on_disk) - start) as usize)
                    .ctx("read", &segment.path)?;
            }
            if end > on_disk {
                let from = (start.max(on_disk) - on_disk) as usize;
                data.extend_from_slice(
                    self.wbuf.get(from..(end - on_disk) as usize).unwrap_or(&[]),
                );
            }
            for &k in &chosen {
                let want = segment.base + k as u64;
                let at = usize::try_from(segment.offsets[k] - start).unwrap_or(usize::MAX);
                match parse_frame(&data, at) {
                    Some((s, payload)) if s == want => out.push(Event {
                        seq: want,
                        payload: payload.to_vec(),
                    }),
                    _ => {
                        return Err(ReadError::Corrupt {
                            seq: want,
                            path: segment.path.clone(),
                        });
                    }
                }
            }
        }
        Ok(out)
    }
}

impl<I: Io> Drop for EventQueue<I> {
    fn drop(&mut self) {
        // Best effort: a clean shutdown should not leave the last group unsynced. Errors cannot be
        // reported from here; call `sync` before dropping to see them.
        if !self.poisoned && self.has_unsynced() {
            let _ = self.sync();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::MemIo;

    fn open(io: &MemIo, config: QueueConfig) -> EventQueue<MemIo> {
        EventQueue::open(io.clone(), "/q", config).unwrap()
    }

    fn every_write() -> QueueConfig {
        QueueConfig::default()
            .with_sync(SyncPolicy::EveryWrite)
            .with_segment_bytes(100)
    }

    fn payloads(q: &EventQueue<MemIo>) -> Vec<(u64, Vec<u8>)> {
        q.peek(usize::MAX)
            .unwrap()
            .into_iter()
            .map(|e| (e.seq, e.payload))
            .collect()
    }

    #[test]
    fn appends_survive_a_power_loss_with_every_write() {
        let io = MemIo::new();
        let mut q = open(&io, every_write());
        for i in 0..20u8 {
            assert!(q.append(&[i; 30]).unwrap().durable);
        }
        assert!(q.segments.len() > 3, "small segments roll");
        std::mem::forget(q); // no clean shutdown
        io.crash();
        let q = open(&io, every_write());
        let got = payloads(&q);
        assert_eq!(got.len(), 20);
        for (i, (seq, p)) in got.into_iter().enumerate() {
            assert_eq!(seq, i as u64);
            assert_eq!(p, vec![i as u8; 30]);
        }
    }

    #[test]
    fn group_commit_syncs_at_the_deadline() {
        let io = MemIo::new();
        let config =
            QueueConfig::default().with_sync(SyncPolicy::GroupCommit(Duration::from_secs(3600)));
        let mut q = open(&io, config);
        q.last_sync = Instant::now();
        let a = q.append(b"a").unwrap();
        assert!(!a.durable);
        assert_eq!(q.len(), 1);
        assert_eq!(
            payloads(&q),
            vec![],
            "an event is not shown before it is durable"
        );
        assert!(q.poll_timeout().is_some());
        assert_eq!(q.sync().unwrap(), 1);
        assert_eq!(payloads(&q), vec![(0, b"a".to_vec())]);
        assert_eq!(q.poll_timeout(), None);
        q.append(b"b").unwrap();
        std::mem::forget(q);
        io.crash();
        let q = open(&io, config);
        assert_eq!(payloads(&q), vec![(0, b"a".to_vec())]);
    }

    #[test]
    fn acks_delete_whole_segments_and_survive_reopen() {
        let io = MemIo::new();
        let mut q = open(&io, every_write());
        for i in 0..20u8 {
            q.append(&[i; 30]).unwrap();
        }
        let before = io.list(Path::new("/q")).unwrap().len();
        q.ack(9).unwrap();
        assert_eq!(q.len(), 10);
        assert_eq!(q.pending_bytes(), 10 * (FRAME_HEADER + 30));
        assert!(io.list(Path::new("/q")).unwrap().len() < before);
        assert!(q.ack(5).is_ok(), "acknowledging again is a no-op");
        assert!(matches!(
            q.ack(20),
            Err(AckError::Beyond { seq: 20, next: 20 })
        ));
        drop(q);
        io.crash();
        let q = open(&io, every_write());
        assert_eq!(q.head(), 10);
        assert_eq!(q.peek(1).unwrap()[0].payload, vec![10; 30]);
        assert_eq!(
            q.read_from(15, 2)
                .unwrap()
                .iter()
                .map(|e| e.seq)
                .collect::<Vec<_>>(),
            [15, 16]
        );
        assert_eq!(q.pending_bytes(), 10 * (FRAME_HEADER + 30));
    }

    #[test]
    fn full_queue_refuses_and_counts() {
        let io = MemIo::new();
        let mut q = open(&io, every_write().with_max_events(3));
        for _ in 0..3 {
            q.append(b"x").unwrap();
        }
        assert!(matches!(
            q.append(b"y"),
            Err(AppendError::Full { events: 3, .. })
        ));
        assert!(matches!(q.append(b"y"), Err(AppendError::Full { .. })));
        assert_eq!(q.stats().refused, 2);
        q.ack(0).unwrap();
        q.append(b"z").unwrap();
        assert_eq!(q.len(), 3);

        let mut q = EventQueue::open(io.clone(), "/q2", every_write().with_max_bytes(100)).unwrap();
        q.append(&[0; 50]).unwrap();
        assert!(matches!(
            q.append(&[0; 50]),
            Err(AppendError::Full {
                events: 1,
                bytes: 66
            })
        ));
        assert!(matches!(q.append(&[0; 90]), Err(AppendError::TooLarge(90))));
        assert_eq!(q.stats().refused, 1);
    }

    #[test]
    fn purge_is_durable_and_keeps_sequence_numbers() {
        let io = MemIo::new();
        let mut q = open(&io, QueueConfig::default().with_segment_bytes(100));
        for i in 0..10u8 {
            q.append(&[i; 30]).unwrap();
        }
        assert_eq!(q.purge().unwrap(), 10);
        std::mem::forget(q);
        io.crash();
        let mut q = open(&io, every_write());
        assert!(q.is_empty());
        assert_eq!(io.list(Path::new("/q")).unwrap(), vec!["head".to_owned()]);
        assert_eq!(q.append(b"after").unwrap().seq, 10);
    }

    #[test]
    fn torn_tail_is_cut_and_appends_continue() {
        let io = MemIo::new();
        let config = every_write().with_segment_bytes(1 << 20);
        let mut q = open(&io, config);
        for i in 0..5u8 {
            q.append(&[i; 10]).unwrap();
        }
        drop(q);
        let seg = Path::new("/q").join(segment_name(0));
        let full = io.read(&seg).unwrap();
        // Cut inside the last frame at every possible point.
        for cut in (full.len() - 26 + 1)..full.len() {
            io.replace(&seg, full[..cut].to_vec()).unwrap();
            let mut q = open(&io, config);
            assert_eq!(q.len(), 4, "cut at {cut}");
            assert_eq!(q.stats().torn_bytes, (cut - (full.len() - 26)) as u64);
            assert_eq!(q.append(b"new").unwrap().seq, 4);
            drop(q);
            let q = open(&io, config);
            assert_eq!(q.peek(10).unwrap().last().unwrap().payload, b"new");
            drop(q);
        }
    }

    /// A segment file that is gone is reported with the events it held; the queue still opens,
    /// delivers the rest and can be purged.
    #[test]
    fn a_missing_segment_is_reported_and_the_queue_still_opens() {
        let io = MemIo::new();
        let mut q = open(&io, every_write());
        for i in 0..20u8 {
            q.append(&[i; 30]).unwrap();
        }
        drop(q);
        let q_dir = Path::new("/q");
        io.remove_file(&q_dir.join(segment_name(2))).unwrap();
        let q = open(&io, every_write());
        assert_eq!(
            q.recovery().damage,
            [Damage::Missing {
                events: 2..4,
                next: q_dir.join(segment_name(4)),
            }]
        );
        assert_eq!(q.recovery().lost_events, 2);
        assert_eq!(q.len(), 18);
        let seqs: Vec<u64> = payloads(&q).iter().map(|(s, _)| *s).collect();
        let expected: Vec<u64> = [0, 1].into_iter().chain(4..20).collect();
        assert_eq!(seqs, expected);
        drop(q);
        io.remove_file(&q_dir.join(segment_name(0))).unwrap();
        let mut q = open(&io, every_write());
        assert!(matches!(
            q.recovery().damage.as_slice(),
            [Damage::Missing { events, .. }] if *events == (0..4)
        ));
        assert!(
            q.recovery().damage[0]
                .to_string()
                .contains("00000000000000000004.seg"),
            "{}",
            q.recovery().damage[0]
        );
        assert_eq!(q.purge().unwrap(), 16);
        assert_eq!(io.list(q_dir).unwrap(), ["head"]);
        assert_eq!(q.append(b"after").unwrap().seq, 20);
    }

    #[test]
    fn head_file_round_trips() {
        assert_eq!(decode_head(&encode_head(42)), Some(42));
        let mut log = [encode_head(1), encode_head(5), encode_head(9)].concat();
        assert_eq!(decode_head_log(&log), Some((9, 3, false)));
        log.truncate(30);
        assert_eq!(decode_head_log(&log), Some((5, 2, true)));
        log[20] ^= 1;
        assert_eq!(decode_head_log(&log), Some((1, 1, true)));
        assert_eq!(decode_head_log(&log[..11]), None);
        let mut bad = encode_head(42);
        bad[0] ^= 1;
        assert_eq!(decode_head(&bad), None);
        assert_eq!(decode_head(&bad[..5]), None);
    }

    /// After a background sync failed, a later one that succeeds does not make anything durable:
    /// the pages the failed one could not write may be gone. Only a purge (nothing left to lose)
    /// or a reopen starts afresh.
    #[test]
    fn events_written_without_syncs_are_durable_once_reopened_under_a_durable_policy() {
        let io = MemIo::new();
        let unsynced = QueueConfig::default()
            .with_sync(SyncPolicy::None)
            .with_segment_bytes(100);
        let mut q = open(&io, unsynced);
        for i in 0..10u8 {
            q.append(&[i; 40]).unwrap();
        }
        drop(q); // a process that ends without syncing, its pages still in the cache
        let q = open(&io, every_write());
        assert_eq!(q.durable_seq(), 10);
        assert!(
            q.segments.len() > 2,
            "several segments: {}",
            q.segments.len()
        );
        drop(q);
        io.crash();
        let q = open(&io, every_write());
        let events = q.peek(100).unwrap();
        assert_eq!(events.len(), 10, "every event reported durable survives");
        assert_eq!(events[3].payload, [3u8; 40]);
    }

    #[test]
    fn a_failed_background_sync_is_not_made_good_by_a_later_one() {
        use crate::fault::{FaultyIo, Op};
        let io = FaultyIo::new(MemIo::new());
        let config = QueueConfig::default().with_sync(SyncPolicy::GroupCommit(Duration::ZERO));
        let mut q = EventQueue::open(io.clone(), "/q", config).unwrap();
        q.append(b"a").unwrap();
        assert_eq!(q.sync().unwrap(), 1);
        io.fail_next(Op::Sync);
        // Group commit at every append: the background sync of "b" fails.
        q.append(b"b").unwrap();
        q.syncer.as_ref().unwrap().wait_idle();
        // The next group is posted before the failure is noticed, and its sync succeeds.
        q.maybe_sync().unwrap();
        q.syncer.as_ref().unwrap().wait_idle();
        assert_eq!(q.durable_seq(), 1, "b is not reported durable");
        assert!(matches!(q.append(b"c"), Err(AppendError::Io(_))));
        assert!(matches!(q.append(b"c"), Err(AppendError::Poisoned)));
        q.purge().unwrap();
        let c = q.append(b"c").unwrap();
        q.syncer.as_ref().unwrap().wait_idle();
        assert!(q.durable_seq() > c.seq, "after a purge syncs count again");
    }

    /// A segment file of `n` frames from `base`, each with a payload of `len` bytes of its index.
    fn frames(base: u64, n: u64, len: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for i in 0..n {
            let seq = base + i;
            let mut frame = Vec::new();
            frame.extend_from_slice(&[0; 4]);
            frame.extend_from_slice(&(len as u32).to_le_bytes());
            frame.extend_from_slice(&seq.to_le_bytes());
            frame.extend(std::iter::repeat_n(i as u8, len));
            let crc = crc32c::crc32c(&frame[4..]);
            frame[..4].copy_from_slice(&crc.to_le_bytes());
            out.extend_from_slice(&frame);
        }
        out
    }

    #[test]
    fn scan_finds_the_frames_after_damage_and_cuts_only_a_true_tail() {
        let frame = FRAME_HEADER as usize + 20;
        let clean = frames(7, 10, 20);
        let found = scan(&clean, 7);
        assert_eq!(found.offsets.len(), 10);
        assert!(found.holes.is_empty());
        assert_eq!(found.len, clean.len() as u64);

        // A payload bit: the frame's own length leads to the next one.
        let mut data = clean.clone();
        data[3 * frame + 20] ^= 1;
        let found = scan(&data, 7);
        assert_eq!(found.holes, std::slice::from_ref(&(10..11)));
        assert_eq!(found.offsets[3], HOLE);
        assert_eq!(found.offsets.len(), 10);
        assert_eq!(found.ends.get(&2), Some(&(3 * frame as u64)));
        assert_eq!(found.damaged_bytes, frame as u64);

        // A length bit: the next frame is searched for byte by byte.
        let mut data = clean.clone();
        data[3 * frame + 6] ^= 0x40;
        let found = scan(&data, 7);
        assert_eq!(found.holes, std::slice::from_ref(&(10..11)));
        assert_eq!(found.len, clean.len() as u64);

        // Two damaged regions, and a torn tail after them.
        let mut data = clean.clone();
        data[frame + 17] ^= 1;
        data[5 * frame..7 * frame].fill(0);
        data.truncate(data.len() - 5);
        let found = scan(&data, 7);
        assert_eq!(found.holes, [8..9, 12..14]);
        assert_eq!(found.offsets.len(), 9, "the last frame is torn");
        assert_eq!(found.len, (9 * frame) as u64);

        // Garbage that is no frame at all: a tail, nothing found after it.
        let mut data = clean[..4 * frame].to_vec();
        data.extend((0..=255u8).cycle().take(3000));
        let found = scan(&data, 7);
        assert_eq!(found.offsets.len(), 4);
        assert!(found.holes.is_empty());
        assert_eq!(found.len, (4 * frame) as u64);
    }

    /// A crash in the middle of zeroing acknowledged payloads leaves torn frames behind the head:
    /// recovery skips them silently and loses nothing that waits.
    #[test]
    fn torn_frames_behind_the_head_are_not_damage() {
        let io = MemIo::new();
        let config = every_write().with_segment_bytes(1 << 20);
        let mut q = open(&io, config);
        for i in 0..10u8 {
            q.append(&[i + 1; 30]).unwrap();
        }
        q.ack(5).unwrap();
        assert_eq!(q.stats().scrubbed, 6);
        drop(q);
        let seg = Path::new("/q").join(segment_name(0));
        let data = io.read(&seg).unwrap();
        let frame = (FRAME_HEADER + 30) as usize;
        assert!(
            data[..6 * frame]
                .chunks(frame)
                .all(|f| f[16..].iter().all(|&b| b == 0))
        );
        // Frame 2 half scrubbed: a checksum that no longer matches.
        io.corrupt(&seg, 2 * frame + 20, 9).unwrap();
        let mut q = open(&io, config);
        assert!(q.recovery().is_clean(), "{:?}", q.recovery());
        assert_eq!(q.len(), 4);
        assert_eq!(
            payloads(&q),
            (6..10u8)
                .map(|i| (i as u64, vec![i + 1; 30]))
                .collect::<Vec<_>>()
        );
        assert_eq!(q.append(b"x").unwrap().seq, 10);
    }

    #[test]
    fn acknowledged_frames_still_in_the_write_buffer_are_zeroed_too() {
        let io = MemIo::new();
        let config =
            QueueConfig::default().with_sync(SyncPolicy::GroupCommit(Duration::from_secs(3600)));
        let mut q = open(&io, config);
        q.last_sync = Instant::now();
        for i in 0..3u8 {
            q.append(&[b'a' + i; 10]).unwrap();
        }
        q.ack(1).unwrap();
        q.sync().unwrap();
        let data = io.read(&Path::new("/q").join(segment_name(0))).unwrap();
        assert!(!data.windows(10).any(|w| w == [b'a'; 10] || w == [b'b'; 10]));
        assert!(data.windows(10).any(|w| w == [b'c'; 10]));
        drop(q);
        let q = open(&io, config);
        assert_eq!(payloads(&q), vec![(2, vec![b'c'; 10])]);
    }

    /// An `Io` that only has the required methods: `write_at` is not supported.
    #[derive(Debug, Clone, Default)]
    struct PlainIo(MemIo);

    impl Io for PlainIo {
        type File = crate::io::MemFile;
        fn create_dir_all(&self, dir: &Path) -> std::io::Result<()> {
            self.0.create_dir_all(dir)
        }
        fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
            self.0.read(path)
        }
        fn read_range(&self, path: &Path, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
            self.0.read_range(path, offset, len)
        }
        fn open_append(&self, path: &Path) -> std::io::Result<Self::File> {
            self.0.open_append(path)
        }
        fn create(&self, path: &Path) -> std::io::Result<Self::File> {
            self.0.create(path)
        }
        fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
            self.0.rename(from, to)
        }
        fn remove_file(&self, path: &Path) -> std::io::Result<()> {
            self.0.remove_file(path)
        }
        fn list(&self, dir: &Path) -> std::io::Result<Vec<String>> {
            self.0.list(dir)
        }
        fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
            self.0.sync_dir(dir)
        }
    }

    #[test]
    fn an_io_that_cannot_overwrite_keeps_acknowledged_events_until_their_segment_goes() {
        let io = PlainIo::default();
        let mut q = EventQueue::open(io.clone(), "/q", every_write()).unwrap();
        for i in 0..10u8 {
            q.append(&[i; 30]).unwrap();
        }
        q.ack(2).unwrap();
        q.ack(5).unwrap();
        assert_eq!(q.stats().scrubbed, 0);
        assert_eq!(q.len(), 4);
        drop(q);
        let q = EventQueue::open(io, "/q", every_write()).unwrap();
        assert_eq!(q.head(), 6);
        assert_eq!(q.peek(1).unwrap()[0].payload, [6; 30]);
    }

    /// A move into the quarantine whose second directory sync was lost leaves the file under both
    /// names: the next recovery keeps one.
    #[test]
    fn a_segment_under_its_old_and_its_quarantined_name_is_read_once() {
        let io = MemIo::new();
        let config = every_write().with_segment_bytes(1 << 20);
        let mut q = open(&io, config);
        for i in 0..10u8 {
            q.append(&[i; 30]).unwrap();
        }
        drop(q);
        let live = Path::new("/q").join(segment_name(0));
        io.corrupt(&live, 3 * 46 + 20, 0xff).unwrap();
        let damaged = io.read(&live).unwrap();
        let q = open(&io, config);
        assert_eq!(q.recovery().damage.len(), 1);
        drop(q);
        let mut again = io.create(&live).unwrap();
        again.write_all(&damaged).unwrap();
        let q = open(&io, config);
        assert!(
            matches!(
                q.recovery().damage.as_slice(),
                [Damage::Corrupt { kept: 9, .. }]
            ),
            "{:?}",
            q.recovery()
        );
        assert_eq!(q.len(), 9);
        assert!(io.read(&live).is_err(), "the old name is gone");
        drop(q);

        // Different content under the old name: it cannot come from the queue. The quarantined
        // one is set aside, untouched, and the live one is read.
        let mut other = io.create(&live).unwrap();
        other.write_all(&frames(0, 4, 30)).unwrap();
        let q = open(&io, config);
        assert!(
            q.recovery()
                .damage
                .iter()
                .any(|d| matches!(d, Damage::SetAside { .. })),
            "{:?}",
            q.recovery()
        );
        assert_eq!(q.len(), 4);
        assert_eq!(
            q.next_seq(),
            10,
            "numbers the set-aside file held are not given again"
        );
        let aside = Path::new("/q/quarantine/00000000000000000000.seg.aside");
        assert_eq!(io.read(aside).unwrap(), damaged);
    }
}
