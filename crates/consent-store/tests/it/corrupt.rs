//! Damage on disk that a crash cannot cause (a flipped bit, a destroyed block) in the middle of
//! the queue: every event that still verifies is kept, nothing is cut but a true tail, the damaged
//! bytes stay on disk, no sequence number is given twice, and the queue still opens and purges.

use std::path::{Path, PathBuf};

use consent_store::{DiskIo, EventQueue, FRAME_HEADER, QueueConfig, SyncPolicy};

/// A payload of fixed size (109 bytes, so 125-byte frames) that names its event.
pub(crate) fn payload(i: u64) -> Vec<u8> {
    format!("event-{i:06}-{}", "x".repeat(96)).into_bytes()
}

pub(crate) const FRAME: u64 = FRAME_HEADER + 109;

/// Every file under `dir`, recursively.
pub(crate) fn all_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(all_files(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// The segment files directly in the queue directory, in order.
pub(crate) fn segments(dir: &Path) -> Vec<PathBuf> {
    all_files(dir)
        .into_iter()
        .filter(|p| p.parent() == Some(dir) && p.extension().is_some_and(|e| e == "seg"))
        .collect()
}

/// A queue in `dir` holding events `0..n`, all durable.
pub(crate) fn fill(dir: &Path, config: QueueConfig, n: u64) {
    let mut queue = EventQueue::open(DiskIo, dir, config).unwrap();
    for i in 0..n {
        queue.append(&payload(i)).unwrap();
    }
    assert_eq!(queue.sync().unwrap(), n);
}

/// Flips one bit of `path` at `at`; the file's new content.
pub(crate) fn flip(path: &Path, at: u64) -> Vec<u8> {
    let mut data = std::fs::read(path).unwrap();
    data[at as usize] ^= 0x10;
    std::fs::write(path, &data).unwrap();
    data
}

/// The sequence numbers waiting, each checked against its payload.
pub(crate) fn waiting(queue: &EventQueue) -> Vec<u64> {
    queue
        .peek(usize::MAX)
        .unwrap()
        .into_iter()
        .map(|e| {
            assert_eq!(e.payload, payload(e.seq), "event {}", e.seq);
            e.seq
        })
        .collect()
}

pub(crate) fn big_segments() -> QueueConfig {
    QueueConfig::default()
}

/// 200 events in small segments, the second of which (events 32..64) lost everything after its
/// 16th frame to a block of zeros. Returns the directory and the segment files.
pub(crate) fn with_a_destroyed_end() -> (tempfile::TempDir, Vec<PathBuf>) {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), small_segments(), 200);
    let segs = segments(dir.path());
    let mut data = std::fs::read(&segs[1]).unwrap();
    data[(16 * FRAME) as usize..].fill(0);
    std::fs::write(&segs[1], &data).unwrap();
    (dir, segs)
}

pub(crate) fn small_segments() -> QueueConfig {
    QueueConfig::default()
        .with_sync(SyncPolicy::EveryWrite)
        .with_segment_bytes(32 * FRAME)
}

/// The review's main case: one 4 MiB segment holds the whole queue, and one bit flips in the
/// payload of event 100 of 1,000 durable ones.
#[test]
fn a_flipped_bit_in_the_last_segment_keeps_every_event_after_it() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), big_segments(), 1000);
    let seg = segments(dir.path()).pop().unwrap();
    let damaged = flip(&seg, 100 * FRAME + FRAME_HEADER + 10);

    let mut queue = EventQueue::open(DiskIo, dir.path(), big_segments()).unwrap();
    assert_eq!(queue.len(), 999);
    let expected: Vec<u64> = (0..100).chain(101..1000).collect();
    assert_eq!(waiting(&queue), expected);
    // Event 100's number is not given again: the next append carries on after event 999.
    assert_eq!(queue.append(b"after").unwrap().seq, 1000);
    queue.sync().unwrap();
    drop(queue);
    // Nothing was cut away: the damaged file is still on disk, byte for byte.
    assert!(
        all_files(dir.path())
            .iter()
            .any(|p| std::fs::read(p).unwrap() == damaged),
        "the damaged segment is kept"
    );

    let queue = EventQueue::open(DiskIo, dir.path(), big_segments()).unwrap();
    assert_eq!(queue.len(), 1000);
    let events = queue.peek(usize::MAX).unwrap();
    assert_eq!(events.last().unwrap().payload, b"after");
    assert!(events.iter().all(|e| e.seq != 100));
}

/// A flipped bit in a frame's length field (so the next frame must be searched for), in the last
/// of several segments.
#[test]
fn a_damaged_frame_header_in_the_last_of_several_segments_costs_one_event() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_segments().with_segment_bytes(8 * FRAME);
    fill(dir.path(), config, 200);
    let last = segments(dir.path()).pop().unwrap();
    assert!(last.ends_with("00000000000000000192.seg"), "{last:?}");
    flip(&last, 2 * FRAME + 5);

    let mut queue = EventQueue::open(DiskIo, dir.path(), config).unwrap();
    let expected: Vec<u64> = (0..194).chain(195..200).collect();
    assert_eq!(waiting(&queue), expected);
    assert_eq!(queue.append(&payload(200)).unwrap().seq, 200);
}

/// Damage in an event that was already acknowledged costs no waiting event.
#[test]
fn a_damaged_acknowledged_event_does_not_cost_the_waiting_ones() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), big_segments(), 1000);
    {
        let mut queue = EventQueue::open(DiskIo, dir.path(), big_segments()).unwrap();
        queue.ack(99).unwrap();
        queue.sync().unwrap();
    }
    let seg = segments(dir.path()).pop().unwrap();
    flip(&seg, 50 * FRAME + FRAME_HEADER + 3);

    let mut queue = EventQueue::open(DiskIo, dir.path(), big_segments()).unwrap();
    assert_eq!(queue.head(), 100);
    assert_eq!(waiting(&queue), (100..1000).collect::<Vec<_>>());
    assert_eq!(queue.append(b"after").unwrap().seq, 1000);
}

/// The review's M1 case: a bit flips in a sealed segment in the middle of the queue. The queue
/// opens, keeps everything else, and a purge deletes every file that held an event.
#[test]
fn a_corrupt_sealed_segment_does_not_stop_the_queue_and_purge_removes_it() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), small_segments(), 200);
    let segs = segments(dir.path());
    assert_eq!(segs.len(), 7);
    // Byte 2048 of the second segment: inside the payload of its event 16, that is event 48.
    flip(&segs[1], 2048);

    let mut queue = EventQueue::open(DiskIo, dir.path(), small_segments())
        .expect("a corrupt sealed segment does not make the queue unopenable");
    let expected: Vec<u64> = (0..48).chain(49..200).collect();
    assert_eq!(waiting(&queue), expected);
    assert_eq!(queue.purge().unwrap(), 199);
    // Withdrawn consent deletes everything: no file under the queue directory holds an event.
    let left: Vec<PathBuf> = all_files(dir.path());
    assert_eq!(left, [dir.path().join("head")], "files left: {left:?}");
}

/// A sealed segment whose second half was destroyed (a block of zeros): no frame after the damage
/// can be found, and the next segment starts later. The events in between are lost, the queue
/// still opens, and nothing is handed out twice.
#[test]
fn a_sealed_segment_with_a_destroyed_end_does_not_stop_the_queue() {
    let (dir, _) = with_a_destroyed_end();

    let mut queue = EventQueue::open(DiskIo, dir.path(), small_segments()).unwrap();
    let expected: Vec<u64> = (0..48).chain(64..200).collect();
    assert_eq!(waiting(&queue), expected);
    assert_eq!(queue.len(), 200 - 16);
    assert_eq!(queue.append(&payload(200)).unwrap().seq, 200);
    queue.purge().unwrap();
    assert_eq!(all_files(dir.path()), [dir.path().join("head")]);
}

/// Found by fuzzing (`fuzz/fuzz_targets/queue_recovery.rs`): a lone segment whose name puts the
/// head far below the next sequence number opened fine, then `peek(usize::MAX)` reserved room
/// for every number in between and panicked ("capacity overflow"). It reads what there is.
#[test]
fn a_segment_name_far_from_the_head_does_not_make_peek_panic() {
    let dir = tempfile::tempdir().unwrap();
    let queue_dir = dir.path().join("queue");
    std::fs::create_dir_all(&queue_dir).unwrap();
    std::fs::write(
        queue_dir.join("18446526518137807214.seg"),
        [
            0x01, 0, 0, 0, 0, 0, 0, 0, 0x6e, 0x61, 0x6d, 0x65, 0x22, 0x3a, 0xff, 0xff,
        ],
    )
    .unwrap();
    let queue = EventQueue::open(DiskIo, &queue_dir, big_segments()).unwrap();
    let events = queue.peek(usize::MAX).unwrap();
    assert!(events.len() as u64 <= queue.len());
}

/// Found by fuzzing: a segment named `u64::MAX` leaves no sequence number to give; `append`
/// overflowed (a panic, or in a release build the numbers would start again at zero). It is
/// refused with a typed error and the queue is unchanged.
#[test]
fn no_sequence_number_left_is_a_typed_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let queue_dir = dir.path().join("queue");
    std::fs::create_dir_all(&queue_dir).unwrap();
    std::fs::write(queue_dir.join("18446744073709551615.seg"), [0xff; 16]).unwrap();
    let mut queue = EventQueue::open(DiskIo, &queue_dir, big_segments()).unwrap();
    let before = queue.len();
    let err = queue.append(b"an event").unwrap_err();
    assert!(
        matches!(err, consent_store::AppendError::SequenceExhausted),
        "{err:?}"
    );
    assert_eq!(queue.len(), before);
    assert!(err.to_string().contains("no sequence number left"));
}

/// Found by fuzzing (`fuzz/fuzz_targets/queue_recovery.rs`): recovery took a damaged frame's own
/// length at its word whenever a valid frame started there, so when an event appended after
/// recovery put a frame exactly where that length pointed, the next open jumped over the valid
/// frame between the two and lost an event it had recovered at the two opens before (with a
/// report). Recovery now jumps by the damaged frame's length only to the very next sequence
/// number; otherwise it takes the first valid frame after the damage.
#[test]
fn an_append_after_damage_does_not_make_recovery_skip_a_valid_frame() {
    const SEGMENT: &str = concat!(
        "c7c07aec5d000000000000000000000000000000000000000000000000000a000000fcffffffffffffff",
        "00000000000000b5602b000000000000000000000000000000006c7d7d732e706167655669657773222c",
        "22776562223a7b22775db5602b0000000000000000000000006c7d7d",
    );
    let bytes: Vec<u8> = (0..SEGMENT.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&SEGMENT[i..i + 2], 16).unwrap())
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let queue_dir = dir.path().join("queue");
    std::fs::create_dir_all(&queue_dir).unwrap();
    std::fs::write(queue_dir.join("00000000000000000000.seg"), &bytes).unwrap();
    let config = || QueueConfig::default().with_sync(SyncPolicy::None);

    let first = EventQueue::open(DiskIo, &queue_dir, config()).unwrap();
    let recovered = first.peek(usize::MAX).unwrap();
    assert!(!recovered.is_empty(), "the segment holds a valid frame");
    drop(first);
    let mut second = EventQueue::open(DiskIo, &queue_dir, config()).unwrap();
    assert_eq!(second.peek(usize::MAX).unwrap(), recovered);
    let appended = second.append(b"{\"eventType\":\"fuzz.appended\"}").unwrap();
    second.sync().unwrap();
    drop(second);

    let third = EventQueue::open(DiskIo, &queue_dir, config()).unwrap();
    let mut expected = recovered;
    expected.push(consent_store::Event {
        seq: appended.seq,
        payload: b"{\"eventType\":\"fuzz.appended\"}".to_vec(),
    });
    assert_eq!(third.peek(usize::MAX).unwrap(), expected);
    assert_eq!(
        third.recovery().lost_events,
        0,
        "{:?}",
        third.recovery().damage
    );
}
