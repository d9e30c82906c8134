//! The server's signed consent receipts: the client asks for one with every `setConsent`, keeps
//! it in its record log, and checks it against the server's published keys.

use consent::consent_core::receipt::{self, Jwks, ReceiptClaims};
use consent::{ConsentRequest, Decision, RECEIPT_STANDARD, consent_store};

use std::sync::Arc;

use crate::harness::{Edge, Scripted};

async fn published_keys(edge: &Edge) -> Jwks {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    let text = reqwest::get(format!("{}/.well-known/consent-receipt-keys", edge.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    Jwks::from_json(&text).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_confirmed_choice_leaves_a_receipt_that_verifies_with_the_server_s_keys() {
    let edge = Edge::start().await;
    let keys = published_keys(&edge).await;
    let dir = tempfile::tempdir().unwrap();
    let client = edge
        .builder(dir.path())
        .default_consent("pending")
        .receipt_keys(keys.clone())
        .build()
        .await
        .unwrap();
    client
        .set_consent(ConsentRequest::adobe_v1("in"))
        .await
        .unwrap();
    client
        .set_consent(ConsentRequest::adobe_v1("out"))
        .await
        .unwrap();
    let records = client.records();
    let receipts = records.receipts().unwrap();
    assert_eq!(receipts.len(), 2, "{receipts:?}");
    let decisions: Vec<Option<Decision>> = receipts
        .iter()
        .map(|(_, token)| {
            receipt::verify_with::<ReceiptClaims>(token, &keys, |pk, msg, sig| {
                ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, pk)
                    .verify(msg, sig)
                    .is_ok()
            })
            .unwrap()
            .general
        })
        .collect();
    assert_eq!(decisions, [Some(Decision::In), Some(Decision::Out)]);
    let kept = records.list().unwrap();
    let (seq, _) = &receipts[0];
    let record = kept.iter().find(|r| r.seq == *seq).unwrap();
    assert_eq!(record.standard, RECEIPT_STANDARD);
    assert_eq!(record.source, consent_store::RecordSource::Server);
    // The whole log verifies, receipts included.
    let count = records.verify().unwrap();
    assert!(count >= 4, "{count}");
    assert_eq!(records.verify_receipts(&keys).unwrap(), 2);

    // Against keys the server never used: refused, naming the record.
    let other = {
        let seed = [3u8; 32];
        let pair = ring::signature::Ed25519KeyPair::from_seed_unchecked(&seed).unwrap();
        let kid = receipt::decode(&receipts[0].1).unwrap().header.kid.unwrap();
        let public: [u8; 32] = ring::signature::KeyPair::public_key(&pair)
            .as_ref()
            .try_into()
            .unwrap();
        Jwks {
            keys: vec![receipt::Jwk::ed25519(&kid, &public)],
        }
    };
    let e = records.verify_receipts(&other).unwrap_err();
    assert_eq!(e.kind(), consent::ErrorKind::Storage, "{e:?}");
    assert!(
        e.to_string().contains(&format!("consent record {seq}")),
        "{e}"
    );
    client.shutdown().await.unwrap();

    // A client built with the wrong keys finds out in `verify`.
    let client = edge
        .builder(dir.path())
        .default_consent("pending")
        .receipt_keys(other)
        .build()
        .await
        .unwrap();
    assert_eq!(
        client.records().verify().unwrap_err().kind(),
        consent::ErrorKind::Storage
    );
    client.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_is_not_a_receipt_is_not_kept() {
    let transport = Arc::new(Scripted::new().consent_receipt("a.b.c"));
    let dir = tempfile::tempdir().unwrap();
    let client = transport.client(dir.path(), "pending").await;
    client
        .set_consent(ConsentRequest::adobe_v1("in"))
        .await
        .unwrap();
    assert_eq!(client.consent().state, Decision::In);
    let records = client.records();
    assert_eq!(records.receipts().unwrap(), Vec::new());
    // The default and the choice; nothing else, and the log verifies.
    assert_eq!(records.verify().unwrap(), 2);
    client.shutdown().await.unwrap();
}
