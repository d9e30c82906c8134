//! Decoding speed of consent-tcf against `lib_tcstring` 0.5.0 and `iab_gpp` 0.1.2, in the same run.
//!
//! Inputs (as in `standards-and-peers.md` §7.2): the V1 core segment alone, V1 whole, V6 (range
//! vendors and three publisher restrictions) and a core string with a 720-vendor bitfield. `iab_gpp`
//! decodes GPP strings, so it gets `DBABM~` (a GPP header naming one tcfeuv2 section) in front, and
//! its figure includes parsing that header; on V6 it returns an error (§1.8), measured all the same.

use std::hint::black_box;
use std::str::FromStr;

use consent_tcf::TcString;
use criterion::{Criterion, criterion_group, criterion_main};

const INPUTS: &[(&str, &str)] = &[
    ("v1_core", "CQSbk4AQSbk4ANwAAAENAwCgAAAAAAAAAAYgACPAAAAA"),
    (
        "v1_whole",
        "CQSbk4AQSbk4ANwAAAENAwCgAAAAAAAAAAYgACPAAAAA.IDKQA4AAgAKAGQAygAAA.YAAAAAAAAAAA",
    ),
    (
        "v6",
        "COvzTO5OvzTO5BRAAAENAPCoALIAADgAAAAAAewAwABAAlAB6ABBFADBQAQA9hAAAcAA",
    ),
    (
        "bitfield_720",
        "COvzTO5OvzTO5BZAFMENAPCgAAAAAAAAAAwIFoEUQQgAIQwgIwQABAEAAAAOIAACAIAAAAQAIAgEAACEAAAAAgAQBAAAAAAAGBAAgAAAAAAAFAAECAAAgAAQARAEQAAAAAJAAIAAgAAAYQEAAAQmAgBC3ZAYzUwLQIoghAAQhhARggACAIAAAAcQAAEAQAAAAgAQBAIAAEIAAAABAAgCAAAAAAAMCABAAAAAAAAKAAIEAABAAAgAiAIgAAAAASAAQABAAAAwgIAAAhMBACFuyAxmpgAA",
    ),
];

fn decode(c: &mut Criterion) {
    for &(name, input) in INPUTS {
        let gpp = format!("DBABM~{input}");
        let mut group = c.benchmark_group(format!("decode/{name}"));
        group.bench_function("consent_tcf", |b| {
            b.iter(|| TcString::parse(black_box(input)))
        });
        group.bench_function("lib_tcstring", |b| {
            b.iter(|| lib_tcstring::TcModelV2::try_from(black_box(input)))
        });
        group.bench_function("iab_gpp", |b| {
            b.iter(|| {
                iab_gpp::v1::GPPString::from_str(black_box(&gpp)).map(|s| s.decode_all_sections())
            })
        });
        group.finish();
    }
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    for &(name, input) in INPUTS {
        if let Ok(tc) = TcString::parse(input) {
            group.bench_function(name, |b| b.iter(|| black_box(&tc).encode()));
        }
    }
    group.finish();
}

fn lookup(c: &mut Criterion) {
    if let Ok(tc) = TcString::parse(INPUTS[3].1) {
        c.bench_function("lookup/vendor_consent_and_purpose_1", |b| {
            b.iter(|| black_box(&tc).vendor_consent(black_box(716)) && tc.purpose_consent(1))
        });
    }
}

criterion_group!(benches, decode, encode, lookup);
criterion_main!(benches);
