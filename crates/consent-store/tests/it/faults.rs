//! Injected faults (a failed write, sync, rename, ...) leave the previous state readable, before
//! and after a simulated power loss, and lose nothing that was acknowledged.

use std::collections::BTreeMap;

use consent_store::{
    AppendError, FaultyIo, Io, MemIo, NewRecord, Op, PurgeError, QueueConfig, RecordPayload,
    RecordSource, Store, SyncPolicy,
};
use serde_json::{Value, json};

const OPS: [Op; 6] = [
    Op::Open,
    Op::Write,
    Op::Sync,
    Op::SyncDir,
    Op::Rename,
    Op::Remove,
];

fn store() -> Store<FaultyIo<MemIo>> {
    Store::with_io(FaultyIo::new(MemIo::new()), "/data").unwrap()
}

#[test]
fn failed_state_saves_keep_the_previous_state() {
    for op in OPS {
        let store = store();
        let state = store.state::<Value>(1);
        state.save(&json!({"general": "in"})).unwrap();
        store.io().fail_next(op);
        let result = state.save(&json!({"general": "out"}));
        if op == Op::Remove {
            assert!(result.is_ok(), "saving removes nothing");
            continue;
        }
        assert!(result.is_err(), "{op:?}");
        if op != Op::SyncDir {
            // Before the rename nothing changed; a failed directory sync comes after it.
            assert_eq!(
                state.load().unwrap(),
                Some(json!({"general": "in"})),
                "{op:?}"
            );
        }
        store.io().inner().crash();
        assert_eq!(
            state.load().unwrap(),
            Some(json!({"general": "in"})),
            "{op:?} after crash"
        );
    }
}

#[test]
fn failed_cookie_saves_keep_the_previous_jar() {
    let url = url::Url::parse("https://example.com/").unwrap();
    for op in [Op::Open, Op::Write, Op::Sync, Op::Rename] {
        let store = store();
        let jar = store.cookie_jar();
        let mut cookies = jar.load().unwrap();
        cookies.parse("a=1; Max-Age=1000", &url).unwrap();
        jar.save(&cookies).unwrap();
        cookies.parse("b=2; Max-Age=1000", &url).unwrap();
        store.io().fail_next(op);
        assert!(jar.save(&cookies).is_err(), "{op:?}");
        store.io().inner().crash();
        let loaded = jar.load().unwrap();
        assert!(loaded.get("example.com", "/", "a").is_some(), "{op:?}");
        assert!(loaded.get("example.com", "/", "b").is_none(), "{op:?}");
    }
}

#[test]
fn a_failed_record_append_leaves_a_valid_chain() {
    for op in [Op::Write, Op::Sync] {
        let store = store();
        let mut log = store.records().unwrap();
        let record = |t| {
            NewRecord::new(
                t,
                "Adobe",
                "1.0",
                RecordSource::User,
                RecordPayload::Full(json!({"general": "in"})),
            )
        };
        log.append(record(1)).unwrap();
        log.append(record(2)).unwrap();
        store.io().fail_next(op);
        assert!(log.append(record(3)).is_err(), "{op:?}");
        store.io().inner().crash();
        let mut log = store.records().unwrap();
        let head = log.verify().unwrap();
        // A torn write is dropped; a write whose sync failed may or may not have reached the disk.
        assert!(
            head.count == 2 || (op == Op::Sync && head.count == 3),
            "{op:?}: {head:?}"
        );
        log.append(record(4)).unwrap();
        assert_eq!(log.verify().unwrap().count, head.count + 1);
    }
}

#[test]
fn a_failed_purge_of_the_head_purges_nothing_and_a_failed_delete_purges_all() {
    let config = QueueConfig::default()
        .with_sync(SyncPolicy::EveryWrite)
        .with_segment_bytes(64);
    let store = store();
    let mut queue = store.queue(config).unwrap();
    for i in 0..10u8 {
        queue.append(&[i; 40]).unwrap();
    }
    store.io().fail_next(Op::Rename);
    assert!(matches!(queue.purge(), Err(PurgeError::Head(_))));
    store.io().inner().crash();
    let mut queue = store.queue(config).unwrap();
    assert_eq!(queue.len(), 10);

    store.io().fail_next(Op::Remove);
    assert!(matches!(queue.purge(), Err(PurgeError::Delete(_))));
    assert!(queue.is_empty());
    store.io().inner().crash();
    let queue = store.queue(config).unwrap();
    assert!(
        queue.is_empty(),
        "the purge is durable even though a delete failed"
    );
    assert_eq!(
        store.io().list(&store.dir().join("queue")).unwrap(),
        ["head"]
    );
}

/// A small xorshift generator.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// The events read back after a reopen, by sequence number, once every event of `model` (those
/// that must have survived) is among them with its payload.
fn found_all(
    model: &BTreeMap<u64, Vec<u8>>,
    events: Vec<consent_store::Event>,
    at: &str,
) -> BTreeMap<u64, Vec<u8>> {
    let found: BTreeMap<u64, Vec<u8>> = events.into_iter().map(|e| (e.seq, e.payload)).collect();
    for (seq, payload) in model {
        assert_eq!(found.get(seq), Some(payload), "{at}: lost {seq}");
    }
    found
}

/// Random appends, acks and purges with a random fault armed now and then; after every error the
/// queue is reopened, sometimes after a power loss. Every append acknowledged as durable and not
/// released is there, exactly once, with its payload.
#[test]
fn random_faults_lose_nothing_acknowledged() {
    let ops = [
        Op::Write,
        Op::Sync,
        Op::SyncDir,
        Op::Rename,
        Op::Open,
        Op::Remove,
        Op::Truncate,
    ];
    let mut faults = 0;
    for seed in 1..=40u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let sync = match seed % 3 {
            0 => SyncPolicy::EveryWrite,
            1 => SyncPolicy::GroupCommit(std::time::Duration::ZERO),
            _ => SyncPolicy::GroupCommit(std::time::Duration::from_secs(3600)),
        };
        let config = QueueConfig::default()
            .with_sync(sync)
            .with_segment_bytes(200)
            .with_max_events(30);
        let store = store();
        let mut queue = store.queue(config).unwrap();
        // What must be found: durable appends not yet released, by sequence number.
        let mut model: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        // Appended, not durable yet.
        let mut pending: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        for step in 0..300u64 {
            if rng.below(10) == 0 {
                store
                    .io()
                    .fail_next(ops[rng.below(ops.len() as u64) as usize]);
            }
            let result: Result<(), String> = match rng.below(20) {
                0..=13 => {
                    let payload = format!("{seed}-{step}").into_bytes();
                    match queue.append(&payload) {
                        Ok(a) if a.durable => {
                            model.insert(a.seq, payload);
                            Ok(())
                        }
                        Ok(a) => {
                            pending.insert(a.seq, payload);
                            Ok(())
                        }
                        Err(AppendError::Full { .. }) => Ok(()),
                        Err(e) => Err(e.to_string()),
                    }
                }
                14..=17 => match queue.peek(1).map(|e| e.first().map(|e| e.seq)) {
                    Ok(Some(seq)) => {
                        // A failed acknowledgement may still have taken effect: released either way.
                        model.remove(&seq);
                        pending.remove(&seq);
                        queue.ack(seq).map_err(|e| e.to_string())
                    }
                    Ok(None) => Ok(()),
                    Err(e) => Err(e.to_string()),
                },
                18 => queue.sync().map(drop).map_err(|e| e.to_string()),
                _ => match queue.purge() {
                    Ok(_) | Err(PurgeError::Delete(_)) => {
                        model.clear();
                        pending.clear();
                        Ok(())
                    }
                    Err(e) => {
                        // The purge may or may not have taken effect.
                        model.clear();
                        pending.clear();
                        Err(e.to_string())
                    }
                },
            };
            if result.is_ok() {
                let durable = queue.durable_seq();
                let now_durable: Vec<u64> = pending.range(..durable).map(|(seq, _)| *seq).collect();
                for seq in now_durable {
                    if let Some(payload) = pending.remove(&seq) {
                        model.insert(seq, payload);
                    }
                }
            } else {
                faults += 1;
                pending.clear();
                std::mem::forget(queue);
                store.io().heal();
                if rng.below(2) == 0 {
                    store.io().inner().crash();
                }
                queue = store
                    .queue(config)
                    .unwrap_or_else(|e| panic!("seed {seed} step {step}: {e}"));
                // Appends that were not acknowledged may or may not have survived; the ones that
                // were must all be there.
                let events = queue.peek(usize::MAX).unwrap();
                // Whatever survived is now on disk for good.
                model = found_all(&model, events, &format!("seed {seed} step {step}"));
            }
        }
    }
    assert!(faults > 40, "only {faults} faults fired");
}

/// A power loss at any instant under group commit, while full segments roll over and the sync
/// thread is still sealing the ones before: reopening always succeeds, finds every event that was
/// reported durable exactly once and with its payload, and what it finds carries on without a gap.
/// Half of the losses also keep every directory entry made so far (a file system that wrote its
/// directories back), so new segment names survive while their data does not.
#[test]
fn power_loss_under_group_commit_keeps_every_durable_event() {
    let config = QueueConfig::default()
        .with_sync(SyncPolicy::GroupCommit(std::time::Duration::ZERO))
        .with_segment_bytes(200)
        .with_max_events(100_000);
    let mut losses = 0;
    let mut with_open_segments = 0;
    let mut durable_found = 0;
    for seed in 1..=40u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut store = Store::with_io(MemIo::new(), "/data").unwrap();
        let mut queue = store.queue(config).unwrap();
        // Durable appends not yet released, and appends not reported durable yet.
        let mut model: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        let mut pending: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        for step in 0..500u64 {
            match rng.below(20) {
                0..=16 => {
                    let payload = format!("{seed}-{step}-{}", "x".repeat(rng.below(60) as usize));
                    let a = queue.append(payload.as_bytes()).unwrap();
                    if a.durable {
                        model.insert(a.seq, payload.into_bytes());
                    } else {
                        pending.insert(a.seq, payload.into_bytes());
                    }
                }
                17 => {
                    if let Some(first) = queue.peek(1).unwrap().first() {
                        model.remove(&first.seq);
                        pending.remove(&first.seq);
                        queue.ack(first.seq).unwrap();
                    }
                }
                18 => {
                    queue.sync().unwrap();
                }
                _ => std::thread::yield_now(),
            }
            let durable = queue.durable_seq();
            let now_durable: Vec<u64> = pending.range(..durable).map(|(seq, _)| *seq).collect();
            for seq in now_durable {
                if let Some(payload) = pending.remove(&seq) {
                    model.insert(seq, payload);
                }
            }
            if rng.below(30) != 0 {
                continue;
            }
            losses += 1;
            let dir = queue.dir().to_path_buf();
            let io = if rng.below(2) == 0 {
                store.io().power_loss_copy()
            } else {
                store.io().power_loss_copy_keeping_entries()
            };
            if io.list(&dir).unwrap().iter().any(|n| n.ends_with(".open")) {
                with_open_segments += 1;
            }
            drop(queue);
            store = Store::with_io(io, "/data").unwrap();
            queue = store
                .queue(config)
                .unwrap_or_else(|e| panic!("seed {seed} step {step}: {e}"));
            let events = queue.peek(usize::MAX).unwrap();
            for pair in events.windows(2) {
                assert_eq!(pair[1].seq, pair[0].seq + 1, "seed {seed} step {step}: gap");
            }
            durable_found += model.len();
            assert_eq!(queue.durable_seq(), queue.next_seq());
            model = found_all(&model, events, &format!("seed {seed} step {step}"));
            pending.clear();
        }
    }
    assert!(losses > 400, "only {losses} power losses");
    assert!(
        with_open_segments > 50,
        "only {with_open_segments} losses with a segment waiting for its name"
    );
    assert!(
        durable_found > 1000,
        "only {durable_found} durable events checked"
    );
}
