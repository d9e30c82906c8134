//! `is_approved` for three categories: on the service (one uncontended lock) and on a snapshot,
//! next to a `HashMap<&str, bool>` lookup of the same three wire values as a baseline.
#![allow(
    clippy::expect_used,
    reason = "a bench with a fixed, valid setup; a failure is a bug"
)]

use std::collections::HashMap;
use std::hint::black_box;

use consent_optin::{Category, OptIn, OptInConfig};
use criterion::{Criterion, criterion_group, criterion_main};

fn is_approved(c: &mut Criterion) {
    let config = OptInConfig::builder()
        .does_opt_in_apply(true)
        .custom_category("chat")
        .build()
        .expect("a valid configuration");
    let optin = OptIn::new(config);
    optin
        .approve(
            &[Category::Aam, Category::Analytics, Category::Target],
            false,
        )
        .expect("known categories");
    let three = [Category::Aam, Category::Analytics, Category::Target];
    let permissions = optin.permissions();
    let map: HashMap<&str, bool> = permissions.iter().map(|(c, v)| (c.as_str(), v)).collect();
    let wire = ["aam", "aa", "target"];

    let mut group = c.benchmark_group("is_approved/3 categories");
    group.bench_function("OptIn::is_approved", |b| {
        b.iter(|| optin.is_approved(black_box(&three)))
    });
    group.bench_function("Permissions::is_approved (snapshot)", |b| {
        b.iter(|| permissions.is_approved(black_box(&three)))
    });
    group.bench_function("baseline: HashMap<&str, bool>", |b| {
        b.iter(|| {
            black_box(&wire)
                .iter()
                .all(|k| map.get(k).copied().unwrap_or(false))
        })
    });
    let custom = [Category::Aam, Category::Analytics, Category::custom("chat")];
    group.bench_function("OptIn::is_approved with a custom category", |b| {
        b.iter(|| optin.is_approved(black_box(&custom)))
    });
    group.finish();
}

criterion_group!(benches, is_approved);
criterion_main!(benches);
