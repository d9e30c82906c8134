//! Criterion benchmarks of the engine: the hot check ("may this command run now?") and a whole
//! setConsent-to-drain cycle.

#![allow(
    clippy::unwrap_used,
    reason = "bench setup: a failure aborts the bench"
)]

use std::hint::black_box;

use consent_core::*;
use criterion::{Criterion, criterion_group, criterion_main};

const ORG: &str = "5BFE274A5F6980A50A495C08@AdobeOrg";

fn drain(engine: &mut Engine) -> usize {
    let mut n = 0;
    while let Some(action) = engine.poll_action() {
        black_box(&action);
        n += 1;
    }
    n
}

fn started(default: DefaultConsent) -> Engine {
    let mut engine = Engine::new(Config::new(ORG).default_consent(default));
    engine
        .handle(Timestamp(0), Input::Start(Stored::default()))
        .unwrap();
    drain(&mut engine);
    engine
}

fn check(c: &mut Criterion) {
    let mut group = c.benchmark_group("check");
    let engine = started(DefaultConsent::In);
    let general = Requirement::general();
    group.bench_function("general/in", |b| {
        b.iter(|| black_box(&engine).check(black_box(general)))
    });
    let granular = Requirement::general()
        .and(Purpose::PERSONALIZE_CONTENT)
        .and(Purpose::SHARE);
    group.bench_function("three purposes/in", |b| {
        b.iter(|| black_box(&engine).check(black_box(granular)))
    });
    let pending = started(DefaultConsent::Pending);
    group.bench_function("general/pending", |b| {
        b.iter(|| black_box(&pending).check(black_box(general)))
    });
    group.finish();
}

fn cycle(c: &mut Criterion) {
    let names = CookieNames::new(ORG);
    let options = SetConsentOptions::new(vec![ConsentObject::adobe_v1("in").unwrap()]);
    c.bench_function("cycle/pending, 10 queued, setConsent in, drain", |b| {
        b.iter(|| {
            let mut engine = started(DefaultConsent::Pending);
            let now = Timestamp(1);
            for i in 0..10 {
                engine
                    .handle(
                        now,
                        Input::Submit {
                            id: CommandId(i),
                            requirement: Requirement::general(),
                            mode: Mode::Queue,
                        },
                    )
                    .unwrap();
            }
            engine
                .handle(
                    now,
                    Input::SetConsent {
                        id: SetConsentId(1),
                        options: options.clone(),
                    },
                )
                .unwrap();
            let mut request = None;
            while let Some(action) = engine.poll_action() {
                if let Action::SendSetConsent { request: r, .. } = action {
                    request = Some(r);
                }
            }
            engine
                .handle(
                    now,
                    Input::Response(Response {
                        origin: Origin::SetConsent(request.unwrap()),
                        outcome: Outcome::Success,
                        cookies: vec![
                            Cookie::new(
                                names.consent(),
                                "general=in",
                                Some(CONSENT_COOKIE_MAX_AGE),
                            ),
                            Cookie::new(names.identity(), "CiQ", Some(34_128_000)),
                        ],
                    }),
                )
                .unwrap();
            black_box(drain(&mut engine))
        })
    });
}

criterion_group!(benches, check, cycle);
criterion_main!(benches);
