//! Fuzzes the recovery of consent-store's durable event queue (`EventQueue::open` on `DiskIo`)
//! from arbitrary bytes on disk: the input is written as the only segment file of a fresh queue
//! directory (`queue/<first sequence number, 20 digits>.seg`, the number read from the first
//! frame header when there is one, else 0; frames are `crc32c | length | seq | payload`, see
//! `crates/consent-store/src/queue.rs`), in a temporary directory (on `/dev/shm` when it
//! exists, so syncs are cheap), and the queue is opened with `SyncPolicy::None`.
//!
//! Properties checked, besides never panicking:
//! - opening returns the queue or a typed `OpenQueueError`, and every recovered event reads back
//!   (`read_from`/`peek`, a page at a time, do not fail and agree);
//! - reading returns exactly `len()` events, in strictly increasing sequence order, within
//!   `head()..next_seq()`, and each is a frame that checks out in the input (its exact bytes, with
//!   a correct CRC-32C, are in the file: recovery never invents or alters an event);
//!   `recovery().lost_events` is the sum of the damage's;
//! - a second open gives the same events, head and next sequence number;
//! - an event appended after recovery gets a sequence number above every recovered one, and a
//!   third open reads back exactly the recovered events and the appended one.
//!
//! The three findings of the first runs are fixed and checked here: `peek(usize::MAX)` after
//! recovery, an append with no sequence number left, and an event lost at the open after an
//! append (recovery took a damaged frame's length at its word when it landed on the new frame).
#![no_main]

use std::path::{Path, PathBuf};

use consent_store::{DiskIo, Event, EventQueue, QueueConfig, SyncPolicy};
use libfuzzer_sys::fuzz_target;

const APPENDED: &[u8] = b"{\"eventType\":\"fuzz.appended\"}";
const PAGE: usize = 64;

fn config() -> QueueConfig {
    QueueConfig::default().with_sync(SyncPolicy::None)
}

fn open(dir: &Path) -> Option<EventQueue> {
    match EventQueue::open(DiskIo, dir, config()) {
        Ok(queue) => Some(queue),
        Err(err) => {
            let _ = err.to_string();
            None
        }
    }
}

/// Reads every waiting event, a page at a time. (`peek(usize::MAX)` is not used: it preallocates
/// for the whole sequence range from the head, unverifiable events included, and a segment named
/// with a huge first sequence number makes that a "capacity overflow" panic; see the report.)
fn read_all(queue: &EventQueue) -> Vec<Event> {
    let mut events: Vec<Event> = Vec::new();
    loop {
        let from = events.last().map_or(0, |e| e.seq + 1);
        let page = queue
            .read_from(from, PAGE)
            .expect("recovered events read back");
        let full = page.len() == PAGE;
        events.extend(page);
        if !full {
            break;
        }
    }
    assert_eq!(
        events.len() as u64,
        queue.len(),
        "read_from and len disagree"
    );
    let first = queue.peek(PAGE).expect("recovered events read back");
    assert_eq!(
        first.as_slice(),
        &events[..events.len().min(PAGE)],
        "peek and read_from disagree"
    );
    events
}

fn frame(event: &Event) -> Vec<u8> {
    let mut body = Vec::with_capacity(12 + event.payload.len());
    body.extend_from_slice(&(event.payload.len() as u32).to_le_bytes());
    body.extend_from_slice(&event.seq.to_le_bytes());
    body.extend_from_slice(&event.payload);
    let mut out = crc32c::crc32c(&body).to_le_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

fn temp_root() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(dir) = tempfile::Builder::new()
            .prefix("queue-fuzz")
            .tempdir_in(shm)
    {
        return dir;
    }
    tempfile::tempdir().expect("a temporary directory")
}

fuzz_target!(|data: &[u8]| {
    let root = temp_root();
    let dir: PathBuf = root.path().join("queue");
    std::fs::create_dir_all(&dir).expect("create the queue directory");
    let base = data
        .get(8..16)
        .map_or(0, |b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
    std::fs::write(dir.join(format!("{base:020}.seg")), data).expect("write the segment");

    let Some(queue) = open(&dir) else {
        return;
    };
    let events = read_all(&queue);
    let (head, next) = (queue.head(), queue.next_seq());
    let report = queue.recovery().clone();
    assert_eq!(
        report.lost_events,
        report.damage.iter().map(|d| d.lost_events()).sum::<u64>()
    );
    for d in &report.damage {
        let _ = d.to_string();
    }
    for pair in events.windows(2) {
        assert!(pair[0].seq < pair[1].seq, "events out of order");
    }
    for event in &events {
        assert!(
            head <= event.seq && event.seq < next,
            "event {} outside {head}..{next}",
            event.seq
        );
        let bytes = frame(event);
        assert!(
            data.windows(bytes.len()).any(|w| w == bytes.as_slice()),
            "event {} is not a frame of the file",
            event.seq
        );
    }
    drop(queue);

    let Some(mut queue) = open(&dir) else {
        panic!("the queue opened once, not twice");
    };
    assert_eq!(read_all(&queue), events, "a second open reads other events");
    assert_eq!((queue.head(), queue.next_seq()), (head, next));

    // Reading everything at once works too (it once reserved room for every sequence number
    // between the head and the next one, and panicked: regression test
    // `a_segment_name_far_from_the_head_does_not_make_peek_panic`).
    assert_eq!(
        queue.peek(usize::MAX).expect("recovered events read back"),
        events,
        "peek(usize::MAX) and paged reads disagree"
    );
    if queue.next_seq() == u64::MAX {
        // No number left: a typed refusal (it once overflowed: regression test
        // `no_sequence_number_left_is_a_typed_refusal`).
        let err = queue.append(APPENDED).expect_err("an event appended with no number left");
        assert!(matches!(err, consent_store::AppendError::SequenceExhausted), "{err:?}");
        return;
    }
    let appended = match queue.append(APPENDED) {
        Ok(appended) => appended,
        Err(err) => {
            let _ = err.to_string();
            return;
        }
    };
    assert!(
        events.iter().all(|e| e.seq < appended.seq),
        "sequence number {} given again",
        appended.seq
    );
    queue.sync().expect("sync");
    drop(queue);

    let queue = open(&dir).expect("the queue opens after an append");
    let mut expected = events;
    expected.push(Event {
        seq: appended.seq,
        payload: APPENDED.to_vec(),
    });
    let got = read_all(&queue);
    assert_eq!(
        got.last(),
        expected.last(),
        "the appended event is not read back"
    );
    // Every recovered event is still delivered after the append, and nothing else: recovery once
    // took a damaged frame's length at its word when the appended frame landed where it pointed,
    // and lost the valid frame in between (regression test
    // `an_append_after_damage_does_not_make_recovery_skip_a_valid_frame`).
    assert_eq!(got, expected, "recovered events changed after an append");
});
