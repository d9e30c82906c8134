//! Model-based property test: random sequences of configuration, commands, `setConsent` calls,
//! server answers, failures and restarts, with the invariants checked after every step.

use std::collections::BTreeMap;

use consent_core::*;
use proptest::prelude::*;
use serde_json::{Value, json};

use crate::harness::{Answer, Harness, adobe1, adobe2, iab};

#[derive(Debug, Clone)]
enum Op {
    Submit {
        purposes: u8,
        fail_fast: bool,
    },
    SetConsent(Value),
    Answer(Answer),
    Interact {
        cookie: Option<&'static str>,
        identity: bool,
        failed: bool,
    },
    Restart,
    Advance(u64),
    Tick,
}

fn consent_object() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop_oneof![Just("in"), Just("out")].prop_map(adobe1),
        prop_oneof![Just("y"), Just("n"), Just("p")].prop_map(adobe2),
        (prop_oneof![Just("GRANT"), Just("DENY")], any::<bool>()).prop_map(|(tc, a)| iab(tc, a)),
        (
            prop_oneof![Just("y"), Just("n"), Just("p")],
            prop_oneof![Just("y"), Just("n")]
        )
            .prop_map(
                |(share, collect)| json!({"standard": "Adobe", "version": "2.0",
                "value": {"collect": {"val": collect}, "share": {"val": share}}})
            ),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..4, proptest::bool::weighted(0.2))
            .prop_map(|(purposes, fail_fast)| Op::Submit { purposes, fail_fast }),
        2 => proptest::collection::vec(consent_object(), 1..3)
            .prop_map(|objects| Op::SetConsent(json!({"consent": objects}))),
        3 => prop_oneof![
            4 => Just(Answer::Edge),
            1 => Just(Answer::NoCookie),
            1 => Just(Answer::Fail),
            1 => Just(Answer::FailWithCookie("in")),
            1 => Just(Answer::FailWithCookie("out")),
        ]
        .prop_map(Op::Answer),
        1 => (
            proptest::option::of(prop_oneof![Just("in"), Just("out"), Just("foo")]),
            any::<bool>(),
            any::<bool>()
        )
            .prop_map(|(cookie, identity, failed)| Op::Interact { cookie, identity, failed }),
        1 => Just(Op::Restart),
        1 => (0u64..400_000).prop_map(Op::Advance),
        1 => Just(Op::Tick),
    ]
}

fn requirement(bits: u8) -> Requirement {
    let mut r = Requirement::general();
    if bits & 1 != 0 {
        r = r.and(Purpose::SHARE);
    }
    if bits & 2 != 0 {
        r = r.and(Purpose::PERSONALIZE_CONTENT);
    }
    r
}

struct Run {
    h: Harness,
    requirements: BTreeMap<CommandId, Requirement>,
}

impl Run {
    fn new(default: &str) -> Self {
        Self {
            h: Harness::new(default),
            requirements: BTreeMap::new(),
        }
    }

    fn apply(&mut self, op: &Op) {
        let h = &mut self.h;
        let released_before = h.released.len();
        let trace_before = h.trace.len();
        let state_before = h.engine.consent();
        match op {
            Op::Submit {
                purposes,
                fail_fast,
            } => {
                let req = requirement(*purposes);
                let mode = if *fail_fast {
                    Mode::FailFast
                } else {
                    Mode::Queue
                };
                let id = h.submit_with(req, mode);
                self.requirements.insert(id, req);
            }
            Op::SetConsent(options) => {
                h.set_consent_json(options.clone());
            }
            Op::Answer(answer) => {
                if !h.outstanding.is_empty() {
                    h.answer(*answer);
                }
            }
            Op::Interact {
                cookie,
                identity,
                failed,
            } => {
                let mut cookies = Vec::new();
                if let Some(value) = cookie {
                    cookies.push(Cookie::new(
                        h.names.consent(),
                        format!("general={value}"),
                        Some(CONSENT_COOKIE_MAX_AGE),
                    ));
                }
                if *identity {
                    cookies.extend(h.identity_cookies());
                }
                let outcome = if *failed {
                    Outcome::Failure
                } else {
                    Outcome::Success
                };
                h.interact_response(outcome, cookies);
            }
            Op::Restart => {
                // The durable queue gives back what was still waiting, in order.
                for id in h.restart() {
                    let req = self.requirements[&id];
                    h.submit_id(id, req, Mode::Queue);
                }
            }
            Op::Advance(ms) => h.advance(*ms),
            Op::Tick => h.handle(Input::Tick),
        }
        self.check_step(released_before, trace_before, &state_before, op);
    }

    fn check_step(
        &self,
        released_before: usize,
        trace_before: usize,
        before: &ConsentView,
        op: &Op,
    ) {
        let h = &self.h;
        // Nothing is released that the state after this step does not allow.
        for id in &h.released[released_before..] {
            assert_eq!(
                h.engine.check(self.requirements[id]),
                Verdict::Allowed,
                "{id:?} released while not allowed after {op:?}"
            );
        }
        // While pending, out, or suspended: no release at all.
        let view = h.engine.consent();
        if view.state != Decision::In {
            assert_eq!(h.released.len(), released_before, "released while {view:?}");
        }
        // No cookie but the consent cookie unless collection is allowed.
        for action in &h.trace[trace_before..] {
            if let Action::StoreCookie(cookie) = action
                && cookie.name != h.names.consent()
            {
                assert!(
                    // Judged from the reported state, not the engine's own cookie predicate.
                    view.state == Decision::In && !h.engine.is_setting_consent(),
                    "{} written while {view:?}",
                    cookie.name
                );
            }
        }
        // Every command is released, rejected or still queued: exactly one of them.
        let queued: Vec<CommandId> = h.engine.queued().collect();
        for id in self.requirements.keys() {
            let ended = h.released.iter().filter(|c| *c == id).count()
                + h.rejected.iter().filter(|(c, _)| c == id).count();
            let waiting = usize::from(queued.contains(id));
            assert_eq!(
                ended + waiting,
                1,
                "{id:?} ended {ended} times, queued {waiting}"
            );
        }
        // FIFO among commands with the same requirement.
        let mut last: BTreeMap<u64, CommandId> = BTreeMap::new();
        for id in &h.released {
            let key = format!("{:?}", self.requirements[id]);
            let slot = last.entry(fnv(&key)).or_insert(*id);
            assert!(
                *slot <= *id,
                "released out of order: {slot:?} before {id:?}"
            );
            *slot = *id;
        }
        // Once no setConsent is in flight, a known consent cookie decides the state.
        if !h.engine.is_setting_consent() {
            if let Some(cookie) = h.consent_cookie() {
                let general = parse_consent_cookie(cookie)
                    .into_iter()
                    .find(|(n, _)| *n == "general")
                    .and_then(|(_, v)| Decision::from_wire(v));
                if let Some(decision) = general {
                    assert_eq!(view.state, decision, "cookie {cookie} but state {view:?}");
                }
            }
        } else {
            assert_eq!(
                view.state,
                Decision::Pending,
                "suspended while setting consent"
            );
        }
        // Out: nothing waits (every requirement includes general).
        if view.state == Decision::Out {
            assert!(queued.is_empty(), "queued while out: {queued:?}");
        }
        // Consent never goes from out to in without the server or the user saying so.
        if before.state == Decision::Out && view.state == Decision::In {
            assert!(
                matches!(
                    op,
                    Op::Answer(_)
                        | Op::Interact {
                            cookie: Some("in"),
                            ..
                        }
                        | Op::Tick
                ),
                "out became in through {op:?}"
            );
        }
    }
}

fn fnv(s: &str) -> u64 {
    u64::from(hash::fnv1a32(s.as_bytes()))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn engine_invariants_hold_after_every_step(
        default in prop_oneof![Just("in"), Just("out"), Just("pending")],
        ops in proptest::collection::vec(op(), 1..60),
    ) {
        let mut run = Run::new(default);
        for op in &ops {
            run.apply(op);
        }
        // Same inputs, same effects.
        let mut replay = Run::new(default);
        for op in &ops {
            replay.apply(op);
        }
        prop_assert_eq!(&run.h.trace, &replay.h.trace);
    }
}
