//! Criterion benchmarks of signed consent receipts: what signing every consent change costs.
//!
//! `cargo bench -p consent-server --bench receipts`. Rows: `sign_receipt` (JSON, base64url and
//! an Ed25519 signature of a typical receipt), its parts measured apart (`encode_only` with a
//! no-op signer, `ed25519_sign` of a message of the same length), `verify_receipt`, and
//! `sign_checkpoint`.
//!
//! Criterion measures wall time, which a busy shared machine inflates; before the criterion rows
//! the bench also prints the on-CPU time per signature of this thread (Linux's
//! `/proc/thread-self/schedstat`), which other processes do not inflate.
#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    missing_docs,
    reason = "bench setup: a failure aborts the bench; the receipt's size is reported on stdout"
)]

use std::hint::black_box;

use consent_core::Decision;
use consent_core::receipt::{
    Checkpoint, KANTARA_VERSION, PiiController, PurposeReceipt, ReceiptClaims, Service,
    SignedClaims as _,
};
use consent_server::{ReceiptKey, ReceiptKeys};
use criterion::{Criterion, criterion_group, criterion_main};

/// The binary's allocator, so that the benchmark measures what the binary runs.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A receipt as a set-consent with a general decision and two purposes would have.
fn claims() -> ReceiptClaims {
    ReceiptClaims {
        version: KANTARA_VERSION.to_owned(),
        jurisdiction: Some("EU".to_owned()),
        consent_timestamp: 1_765_000_000,
        collection_method: "edge:set-consent".to_owned(),
        consent_receipt_id: "5BFE274A5F6980A50A495C08@AdobeOrg/prod/123456789".to_owned(),
        pii_principal_id:
            "hmac-sha256:3b1f0c9a7e5d2b4f6a8c0e1d3b5f7a9c1e3d5b7f9a1c3e5d7b9f1a3c5e7d9b1f"
                .to_owned(),
        pii_controllers: vec![PiiController::named("5BFE274A5F6980A50A495C08@AdobeOrg")],
        policy_url: None,
        language: None,
        services: vec![Service {
            service: "adobe-consent".to_owned(),
            purposes: vec![
                PurposeReceipt::explicit("collect", Decision::In),
                PurposeReceipt::explicit("personalize", Decision::Out),
            ],
        }],
        sensitive: false,
        spi_cat: Vec::new(),
        org: "5BFE274A5F6980A50A495C08@AdobeOrg".to_owned(),
        sandbox: "prod".to_owned(),
        seq: 123_456_789,
        chain_hash: "6f1ed002ab5595859014ebf0951522d9bd6c3a8e8e3c6f0a2b8d4e1f7c9a0b3d".to_owned(),
        general: Some(Decision::In),
        iat: 1_765_000_001,
    }
}

/// Nanoseconds this thread has run on a CPU (Linux), if known.
fn thread_cpu_nanos() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// Prints the on-CPU time per call of `f`, over `n` calls.
fn cpu_time_per_call<T>(name: &str, n: u32, mut f: impl FnMut() -> T) {
    let start = thread_cpu_nanos();
    let wall = std::time::Instant::now();
    for _ in 0..n {
        black_box(f());
    }
    let wall = wall.elapsed().as_nanos() / u128::from(n);
    if let (Some(start), Some(end)) = (start, thread_cpu_nanos()) {
        let cpu = (end - start) / u64::from(n);
        println!("{name}: {cpu} ns on-CPU per call ({wall} ns wall), over {n} calls");
    }
}

fn receipts(c: &mut Criterion) {
    let key = ReceiptKey::new("2026-12", &[7; 32]).unwrap();
    let keys = ReceiptKeys::new(vec![key], 0).unwrap();
    let claims = claims();
    let token = keys.sign_receipt(&claims);
    let signing_input_len = token.rfind('.').unwrap();
    println!(
        "receipt: {} bytes as a token, {signing_input_len} bytes signed",
        token.len()
    );

    cpu_time_per_call("sign_receipt", 20_000, || keys.sign_receipt(&claims));
    cpu_time_per_call("verify_receipt", 10_000, || keys.verify_receipt(&token));

    c.bench_function("sign_receipt", |b| {
        b.iter(|| keys.sign_receipt(black_box(&claims)))
    });
    c.bench_function("encode_only (no-op signer)", |b| {
        b.iter(|| black_box(&claims).sign_with("2026-12", |_| [0u8; 64]))
    });
    let pair = ring::signature::Ed25519KeyPair::from_seed_unchecked(&[7; 32]).unwrap();
    let message = vec![b'a'; signing_input_len];
    c.bench_function("ed25519_sign (ring, same length)", |b| {
        b.iter(|| pair.sign(black_box(&message)))
    });
    c.bench_function("verify_receipt", |b| {
        b.iter(|| keys.verify_receipt(black_box(&token)).unwrap())
    });
    let checkpoint = Checkpoint {
        org: claims.org.clone(),
        sandbox: "prod".to_owned(),
        seq: 123_456_789,
        hash: claims.chain_hash.clone(),
        time: 1_765_000_002,
    };
    c.bench_function("sign_checkpoint", |b| {
        b.iter(|| keys.sign_checkpoint(black_box(&checkpoint)))
    });
}

criterion_group!(benches, receipts);
criterion_main!(benches);
