//! Torn tails on the real file system: whatever a crash cut off the end of the last segment,
//! recovery keeps exactly the complete frames before it and appends carry on.

use std::fs::OpenOptions;
use std::io::Write;

use consent_store::{DiskIo, EventQueue, FRAME_HEADER, QueueConfig, SyncPolicy};
use proptest::prelude::*;

fn config() -> QueueConfig {
    QueueConfig::default()
        .with_sync(SyncPolicy::None)
        .with_segment_bytes(1 << 20)
}

fn segment(dir: &std::path::Path) -> std::path::PathBuf {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    names.sort();
    names.pop().unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn recovery_keeps_exactly_the_complete_frames(
        sizes in prop::collection::vec(0usize..200, 1..20),
        cut in any::<prop::sample::Index>(),
        garbage in prop::collection::vec(any::<u8>(), 0..40),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut queue = EventQueue::open(DiskIo, dir.path(), config()).unwrap();
        for (i, size) in sizes.iter().enumerate() {
            queue.append(&vec![i as u8; *size]).unwrap();
        }
        drop(queue);
        let path = segment(dir.path());
        let full = std::fs::metadata(&path).unwrap().len();
        let cut = cut.index(full as usize + 1) as u64;
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(cut).unwrap();
        drop(file);
        OpenOptions::new().append(true).open(&path).unwrap().write_all(&garbage).unwrap();

        // The frames that fit entirely before the cut.
        let mut end = 0;
        let mut kept = 0;
        for size in &sizes {
            end += FRAME_HEADER + *size as u64;
            if end > cut {
                break;
            }
            kept += 1;
        }
        let mut queue = EventQueue::open(DiskIo, dir.path(), config()).unwrap();
        let events = queue.peek(usize::MAX).unwrap();
        // Random garbage can only complete a frame with a matching CRC-32C by a 1-in-4-billion fluke.
        prop_assert_eq!(events.len(), kept);
        for (i, event) in events.iter().enumerate() {
            prop_assert_eq!(&event.payload, &vec![i as u8; sizes[i]]);
        }
        let next = queue.append(b"after").unwrap().seq;
        prop_assert_eq!(next, kept as u64);
        drop(queue);
        let queue = EventQueue::open(DiskIo, dir.path(), config()).unwrap();
        prop_assert_eq!(queue.len(), kept as u64 + 1);
        prop_assert_eq!(queue.stats().torn_bytes, 0);
    }
}

/// A flipped bit in a sealed segment is damage, not a tail: the frames after it are kept and the
/// queue opens (what could not be verified is reported, see `report.rs`).
#[test]
fn a_flipped_bit_before_the_tail_is_not_taken_for_a_tail() {
    let dir = tempfile::tempdir().unwrap();
    let config = QueueConfig::default()
        .with_sync(SyncPolicy::EveryWrite)
        .with_segment_bytes(256);
    let mut queue = EventQueue::open(DiskIo, dir.path(), config).unwrap();
    for i in 0..20u8 {
        queue.append(&[i; 100]).unwrap();
    }
    drop(queue);
    let mut names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    names.sort();
    // Damage the second frame of the first segment.
    let mut data = std::fs::read(&names[0]).unwrap();
    data[(FRAME_HEADER + 100 + 20) as usize] ^= 0x01;
    std::fs::write(&names[0], data).unwrap();
    let mut queue = EventQueue::open(DiskIo, dir.path(), config).unwrap();
    let events = queue.peek(usize::MAX).unwrap();
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    let expected: Vec<u64> = [0].into_iter().chain(2..20).collect();
    assert_eq!(seqs, expected);
    for event in &events {
        assert_eq!(event.payload, [event.seq as u8; 100]);
    }
    assert_eq!(queue.append(b"next").unwrap().seq, 20);
}
