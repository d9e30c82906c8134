//! The reference's engine scenarios (web-sdk-consent.md §6.1–6.4, the engine side of §6.6, the
//! improvements of §6.7) and seed 004's defaultConsent × setConsent table.

use consent_core::*;
use serde_json::json;

use crate::harness::{Answer, Harness, adobe1, adobe2, iab};

use LogLevel::{Info, Warn};

const USER_CONSENTED: (LogLevel, &str) = (Info, "User consented.");
const USER_DECLINED: (LogLevel, &str) = (Warn, "User declined consent.");

// ----- helpers -----

/// Where a submitted command stands, as the harness saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Released,
    Declined(RejectReason),
    Queued,
}

/// The fate of `command`; a command that neither ended nor waits in the queue fails the test,
/// since the engine must account for every command it was given.
fn fate(h: &Harness, command: CommandId) -> Fate {
    if h.released.contains(&command) {
        Fate::Released
    } else if let Some(reason) = h.reason_of(command) {
        Fate::Declined(reason)
    } else {
        assert!(
            h.engine.queued().any(|queued| queued == command),
            "{command:?} was lost: neither released, declined nor queued"
        );
        Fate::Queued
    }
}

/// The names of the cookies in the jar, sorted (the jar is ordered by name).
fn jar_names(h: &Harness) -> Vec<&str> {
    h.jar.keys().map(String::as_str).collect()
}

/// The cookie names for the short names the tables use ("consent", "identity", "cluster"),
/// sorted like [`jar_names`], so that the tables can spell out the expected jar.
fn cookie_names(h: &Harness, kinds: &[&str]) -> Vec<String> {
    let mut names: Vec<String> = kinds
        .iter()
        .map(|kind| match *kind {
            "consent" => h.names.consent().to_owned(),
            "identity" => h.names.identity().to_owned(),
            "cluster" => h.names.cluster().to_owned(),
            other => panic!("unknown cookie kind {other}"),
        })
        .collect();
    names.sort();
    names
}

/// Checks that every cookie other than the consent cookie was written while the state last
/// reported to subscribers (in the action stream, before the write) was "in", and returns the
/// names written, in order. A write under any other reported state is a cookie written before
/// or against consent.
fn other_writes_all_in<'h>(h: &'h Harness, context: &str) -> Vec<&'h str> {
    for (name, view) in &h.other_cookie_writes {
        assert_eq!(
            view.state,
            Decision::In,
            "{context}: {name} was written while {view:?} was the reported state"
        );
    }
    h.other_cookie_writes
        .iter()
        .map(|(name, _)| name.as_str())
        .collect()
}

// ----- §6.1 the state machine -----

#[test]
fn pending_queues_in_releases_out_declines() {
    // Pending: commands neither run nor end; they wait, in the order they came.
    let mut h = Harness::new("pending");
    let c = h.submit();
    assert!(h.released.is_empty() && h.rejected.is_empty());
    assert_eq!(h.engine.queued().collect::<Vec<_>>(), vec![c]);
    let d = h.submit();
    assert_eq!(h.engine.queued().collect::<Vec<_>>(), vec![c, d]);
    // A later "in" releases the queued commands in order, once the server has answered.
    h.set_consent("in");
    assert!(
        h.released.is_empty() && h.rejected.is_empty(),
        "nothing runs while the call is in flight"
    );
    h.answer(Answer::Edge);
    assert_eq!(h.released, vec![c, d]);
    assert!(h.rejected.is_empty());
    assert_eq!(h.engine.queued().count(), 0);

    // A later "out" declines the queued commands in order, as the user's own refusal.
    let mut h = Harness::new("pending");
    let c = h.submit();
    let d = h.submit();
    h.set_consent("out");
    assert!(
        h.rejected.is_empty(),
        "nothing ends while the call is in flight"
    );
    h.answer(Answer::Edge);
    assert_eq!(
        h.rejected,
        vec![
            (c, RejectReason::UserDeclined),
            (d, RejectReason::UserDeclined)
        ]
    );
    assert!(h.released.is_empty());
    assert_eq!(h.engine.queued().count(), 0);

    // Default "in" releases at once, and nothing is left waiting.
    let mut h = Harness::new("in");
    let c = h.submit();
    assert_eq!(h.released, vec![c]);
    assert!(h.rejected.is_empty());
    assert_eq!(h.engine.queued().count(), 0);

    // Default "out" declines at once, with the reason for a person who said nothing yet.
    let mut h = Harness::new("out");
    let c = h.submit();
    assert_eq!(h.rejected, vec![(c, RejectReason::NoPreferences)]);
    assert!(h.released.is_empty());
    assert_eq!(h.engine.queued().count(), 0);
}

#[test]
fn decline_reasons_follow_the_source() {
    // out from the default: "No consent preferences have been set."
    let mut h = Harness::new("out");
    let c = h.submit();
    assert_eq!(h.reason_of(c), Some(RejectReason::NoPreferences));
    assert_eq!(
        RejectReason::NoPreferences.message(),
        "No consent preferences have been set."
    );
    // out from the stored cookie ("initial"): "The user declined consent."
    let mut h = Harness::with_cookies("in", Some("general=out"), true);
    let c = h.submit();
    assert_eq!(h.reason_of(c), Some(RejectReason::UserDeclined));
    // out from a new choice.
    let mut h = Harness::new("in");
    h.set_consent("out");
    h.answer(Answer::Edge);
    let c = h.submit();
    assert_eq!(h.reason_of(c), Some(RejectReason::UserDeclined));
    assert_eq!(
        RejectReason::UserDeclined.to_string(),
        "The user declined consent."
    );
    assert!(RejectReason::UserDeclined.is_declined());
    assert!(!RejectReason::Pending.is_declined());
}

#[test]
fn queued_commands_are_released_in_order_on_in() {
    let mut h = Harness::new("pending");
    let a = h.submit();
    h.advance(200);
    let b = h.submit();
    let c = h.submit();
    h.set_consent("in");
    h.advance(50);
    h.answer(Answer::Edge);
    assert_eq!(h.released, vec![a, b, c]);
    assert_eq!(h.state(), (Decision::In, true));
}

#[test]
fn queue_time_includes_the_wait_for_consent() {
    let mut h = Harness::new("pending");
    h.submit();
    h.advance(200);
    h.set_consent("in");
    h.engine
        .handle(
            h.now,
            Input::Response(Response {
                origin: Origin::SetConsent(h.outstanding[0]),
                outcome: Outcome::Success,
                cookies: h.edge_cookies(&[adobe1("in")]),
            }),
        )
        .unwrap();
    let release = std::iter::from_fn(|| h.engine.poll_action())
        .find_map(|a| match a {
            Action::Release { queued_for_ms, .. } => Some(queued_for_ms),
            _ => None,
        })
        .unwrap();
    assert!(
        release >= 200,
        "queueTimeMillis reflects the wait: {release}"
    );
}

#[test]
fn queued_commands_are_declined_in_order_on_out() {
    let mut h = Harness::new("pending");
    let a = h.submit();
    let b = h.submit();
    h.set_consent("out");
    h.answer(Answer::Edge);
    assert_eq!(
        h.rejected,
        vec![
            (a, RejectReason::UserDeclined),
            (b, RejectReason::UserDeclined)
        ]
    );
    assert!(h.released.is_empty());
}

#[test]
fn commands_before_start_wait_for_the_stored_state() {
    // The Web SDK treats a machine that has not read its state as "in"; this engine never
    // guesses: commands wait for the start-up input.
    let mut h = Harness::unstarted(Harness::config("in"));
    let c = h.submit();
    assert!(h.released.is_empty());
    let fast = h.submit_with(Requirement::general(), Mode::FailFast);
    assert_eq!(h.reason_of(fast), Some(RejectReason::Pending));
    // setConsent and responses need the stored state first.
    let options = SetConsentOptions::new(vec![ConsentObject::adobe_v1("in").unwrap()]);
    let err = h
        .engine
        .handle(
            h.now,
            Input::SetConsent {
                id: SetConsentId(1),
                options,
            },
        )
        .unwrap_err();
    assert_eq!(err, HandleError::NotStarted);
    let response = Response {
        origin: Origin::Other,
        outcome: Outcome::Success,
        cookies: vec![],
    };
    assert_eq!(
        h.engine
            .handle(h.now, Input::Response(response))
            .unwrap_err(),
        HandleError::NotStarted
    );
    h.start();
    assert_eq!(h.released, vec![c]);
}

fn check_start_logs(
    default: &str,
    cookie: Option<&str>,
    identity: bool,
    expected: &[(LogLevel, &str)],
    state: (Decision, bool),
) {
    let h = Harness::with_cookies(default, cookie, identity);
    assert_eq!(
        h.log_messages(),
        expected,
        "{default} {cookie:?} {identity}"
    );
    assert_eq!(h.state(), state, "{default} {cookie:?} {identity}");
}

#[test]
fn start_up_logs_and_states() {
    use Decision::*;
    check_start_logs("in", None, false, &[], (In, false));
    check_start_logs(
        "out",
        None,
        false,
        &[(
            Warn,
            "User consent preferences not found. Default consent of out will be used.",
        )],
        (Out, false),
    );
    check_start_logs(
        "pending",
        None,
        false,
        &[(
            Info,
            "User consent preferences not found. Default consent of pending will be used. Some commands may be delayed.",
        )],
        (Pending, false),
    );
    check_start_logs(
        "out",
        Some("general=in"),
        true,
        &[(
            Info,
            "Loaded user consent preferences. The user previously consented.",
        )],
        (In, true),
    );
    check_start_logs(
        "in",
        Some("general=out"),
        true,
        &[(
            Warn,
            "Loaded user consent preferences. The user previously declined consent.",
        )],
        (Out, true),
    );
    // pending("initial") is silent.
    check_start_logs("in", Some("general=pending"), true, &[], (Pending, false));
}

#[test]
fn a_new_choice_logs_once() {
    for default in ["in", "out", "pending"] {
        let mut h = Harness::new(default);
        h.logs.clear();
        h.set_consent("in");
        h.answer(Answer::Edge);
        assert_eq!(h.log_messages(), vec![USER_CONSENTED], "{default}");

        let mut h = Harness::new(default);
        h.logs.clear();
        h.set_consent("out");
        h.answer(Answer::Edge);
        assert_eq!(h.log_messages(), vec![USER_DECLINED], "{default}");

        // The cookie path (a consent cookie in an interact response) logs the same.
        let mut h = Harness::new(default);
        h.logs.clear();
        let cookie = Cookie::new(
            h.names.consent(),
            "general=in",
            Some(CONSENT_COOKIE_MAX_AGE),
        );
        h.interact_response(Outcome::Success, vec![cookie]);
        assert_eq!(h.log_messages(), vec![USER_CONSENTED], "{default}");
    }
}

#[test]
fn a_repeated_choice_logs_nothing() {
    for value in ["in", "out"] {
        let mut h = Harness::with_cookies("pending", Some(&format!("general={value}")), true);
        h.logs.clear();
        for _ in 0..2 {
            let cookie = Cookie::new(
                h.names.consent(),
                format!("general={value}"),
                Some(CONSENT_COOKIE_MAX_AGE),
            );
            h.interact_response(Outcome::Success, vec![cookie]);
        }
        assert_eq!(h.log_messages(), vec![], "{value}");
    }
}

#[test]
fn fail_fast_commands_never_wait() {
    for (default, expected) in [
        ("in", None),
        ("out", Some(RejectReason::NoPreferences)),
        ("pending", Some(RejectReason::Pending)),
    ] {
        let mut h = Harness::new(default);
        let c = h.submit_with(Requirement::general(), Mode::FailFast);
        assert_eq!(h.reason_of(c), expected, "{default}");
        assert_eq!(h.released.contains(&c), expected.is_none());
        assert_eq!(h.engine.queued().count(), 0);
    }
    assert_eq!(RejectReason::Pending.message(), "Consent is pending.");
}

// ----- §6.2 the consent manager -----

#[test]
fn unknown_cookie_values_warn_and_change_nothing() {
    let mut h = Harness::with_cookies("in", Some("general=in"), true);
    h.logs.clear();
    let cookie = Cookie::new(
        h.names.consent(),
        "general=foo",
        Some(CONSENT_COOKIE_MAX_AGE),
    );
    h.interact_response(Outcome::Success, vec![cookie]);
    assert_eq!(h.log_messages(), vec![(Warn, "Unknown consent value: foo")]);
    assert_eq!(h.state(), (Decision::In, true));
    // The unknown value does not replace the stored choice, so a restart cannot lose it.
    assert_eq!(h.consent_cookie(), Some("general=in"));
    assert_eq!(h.refused, vec![h.names.consent().to_owned()]);
    let mut h = Harness::with_cookies("in", Some("general=out"), true);
    let cookie = Cookie::new(h.names.consent(), "foo=in", Some(CONSENT_COOKIE_MAX_AGE));
    h.interact_response(Outcome::Success, vec![cookie]);
    h.restart();
    assert_eq!(
        h.state(),
        (Decision::Out, true),
        "out survives a cookie without general"
    );
}

#[test]
fn unknown_consent_values_from_the_caller_are_typed_errors() {
    let err = ConsentObject::adobe_v1("foo").unwrap_err();
    assert_eq!(err.edge_code(), "EXEG-0102-400");
    let err = SetConsentOptions::from_json(&json!({"consent": [adobe1("IN")]})).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"'consent[0].value.general': Expected one of these values: ["in","out"], but got "IN"."#
    );
}

// ----- §6.3 the consent component -----

#[test]
fn set_consent_suspends_at_once_even_from_in() {
    let mut h = Harness::new("in");
    h.set_consent("in");
    assert_eq!(h.state(), (Decision::Pending, false));
    let c = h.submit();
    assert!(h.released.is_empty(), "commands after setConsent wait");
    h.answer(Answer::Edge);
    assert_eq!(h.released, vec![c]);
}

#[test]
fn state_comes_from_the_response_cookie() {
    let mut h = Harness::new("pending");
    h.set_consent("in");
    assert_eq!(h.sent.len(), 1);
    assert_eq!(h.sent[0].1, vec![adobe1("in")]);
    assert_eq!(
        h.state(),
        (Decision::Pending, false),
        "not before the response"
    );
    // The server's word wins over the request.
    let request = h.outstanding.pop_front().unwrap();
    let cookie = Cookie::new(
        h.names.consent(),
        "general=out",
        Some(CONSENT_COOKIE_MAX_AGE),
    );
    h.handle(Input::Response(Response {
        origin: Origin::SetConsent(request),
        outcome: Outcome::Success,
        cookies: vec![cookie],
    }));
    assert_eq!(h.state(), (Decision::Out, true));
    assert_eq!(h.done, vec![(SetConsentId(1), SetConsentOutcome::Sent)]);
}

#[test]
fn a_failure_with_a_cookie_takes_the_cookie() {
    let mut h = Harness::new("pending");
    let c = h.submit();
    h.set_consent("in");
    h.answer(Answer::FailWithCookie("in"));
    assert_eq!(h.state(), (Decision::In, true));
    assert_eq!(h.released, vec![c]);
    assert_eq!(h.done, vec![(SetConsentId(1), SetConsentOutcome::Failed)]);
}

#[test]
fn set_consent_calls_are_serial_and_only_the_last_cookie_counts() {
    let mut h = Harness::new("pending");
    h.logs.clear();
    h.set_consent("in");
    h.set_consent("out");
    let c = h.submit();
    assert_eq!(h.sent.len(), 1, "the second waits for the first response");
    h.answer(Answer::Edge);
    assert_eq!(h.sent.len(), 2);
    assert_eq!(h.state(), (Decision::Pending, false), "still suspended");
    assert!(h.released.is_empty());
    h.answer(Answer::Edge);
    assert_eq!(h.state(), (Decision::Out, true));
    assert_eq!(
        h.log_messages(),
        vec![USER_DECLINED],
        "applied once, as out"
    );
    assert_eq!(h.reason_of(c), Some(RejectReason::UserDeclined));
    assert_eq!(h.consent_cookie(), Some("general=out"));
}

#[test]
fn other_responses_apply_the_cookie_when_no_set_consent_is_in_flight() {
    let mut h = Harness::new("in");
    let a = h.submit();
    let cookie = Cookie::new(
        h.names.consent(),
        "general=out",
        Some(CONSENT_COOKIE_MAX_AGE),
    );
    h.interact_response(Outcome::Failure, vec![cookie]);
    assert_eq!(h.released, vec![a]);
    assert_eq!(h.state(), (Decision::Out, true));
    // Without a cookie, responses change nothing.
    let mut h = Harness::new("pending");
    h.interact_response(Outcome::Success, vec![]);
    h.interact_response(Outcome::Failure, vec![]);
    assert_eq!(h.state(), (Decision::Pending, false));
}

#[test]
fn identity_cookie_missing_clears_the_stored_in_consent() {
    let h = Harness::with_cookies("pending", Some("general=in"), false);
    assert_eq!(h.consent_cookie(), None, "the consent cookie is removed");
    assert_eq!(h.state(), (Decision::Pending, false));
    assert_eq!(h.snapshot.as_ref().unwrap().fingerprint, None);
}

#[test]
fn consent_cookie_missing_clears_the_hashes_only() {
    let mut h = Harness::new("pending");
    h.set_consent("in");
    h.answer(Answer::Edge);
    assert!(h.snapshot.as_ref().unwrap().fingerprint.is_some());
    h.jar.remove(h.names.consent());
    h.restart();
    assert!(h.jar.contains_key(h.names.identity()), "identity kept");
    assert_eq!(h.snapshot.as_ref().unwrap().fingerprint, None);
    assert_eq!(h.state(), (Decision::Pending, false));
}

// ----- §6.4 the hash skip, end to end -----

#[test]
fn unchanged_consent_is_not_sent_again_after_a_restart() {
    // C1472433: same consent after reload, no set-consent call.
    let mut h = Harness::new("pending");
    h.set_consent_json(json!({"consent": [adobe2("y")]}));
    h.answer(Answer::Edge);
    h.restart();
    let c = h.submit();
    assert_eq!(h.released, vec![c], "consent restored from the cookie");
    h.set_consent_json(json!({"consent": [adobe2("y")]}));
    assert_eq!(h.sent.len(), 1);
    assert_eq!(
        h.done.last(),
        Some(&(SetConsentId(2), SetConsentOutcome::Skipped))
    );
    assert_eq!(h.state(), (Decision::In, true));
    // C1472434: a different consent is sent.
    h.set_consent_json(json!({"consent": [adobe2("n")]}));
    assert_eq!(h.sent.len(), 2);
}

#[test]
fn a_missing_cookie_means_the_consent_is_sent_again() {
    // C1472435: identity deleted; C1472436: consent cookie deleted.
    for deleted in ["identity", "consent"] {
        let mut h = Harness::new("pending");
        h.set_consent_json(json!({"consent": [adobe2("y")]}));
        h.answer(Answer::Edge);
        let name = if deleted == "identity" {
            h.names.identity().to_owned()
        } else {
            h.names.consent().to_owned()
        };
        h.jar.remove(&name);
        h.restart();
        let c = h.submit();
        assert!(h.released.is_empty(), "{deleted}: the event is queued");
        h.set_consent_json(json!({"consent": [adobe2("y")]}));
        assert_eq!(h.sent.len(), 2, "{deleted}: sent again");
        h.answer(Answer::Edge);
        assert_eq!(h.released, vec![c]);
    }
}

// ----- §6.6 engine side of the integration scenarios -----

#[test]
fn c14404_out_then_in() {
    let mut h = Harness::new("pending");
    h.set_consent("out");
    h.answer(Answer::Edge);
    h.set_consent("in");
    h.answer(Answer::Edge);
    assert_eq!(h.consent_cookie(), Some("general=in"));
    assert_eq!(h.sent.len(), 2);
    let c = h.submit();
    assert_eq!(h.released, vec![c]);
}

#[test]
fn c14407_c14409_consent_is_restored_from_the_cookie() {
    for (value, released) in [("in", true), ("out", false)] {
        let mut h = Harness::new("pending");
        h.set_consent(value);
        h.answer(Answer::Edge);
        h.restart();
        let c = h.submit();
        assert_eq!(h.released.contains(&c), released, "{value}");
        if !released {
            assert_eq!(h.reason_of(c), Some(RejectReason::UserDeclined));
        }
    }
}

#[test]
fn c14411_repeated_out_is_fine() {
    let mut h = Harness::new("pending");
    h.set_consent("out");
    h.answer(Answer::Edge);
    h.set_consent("out");
    assert_eq!(h.done[1], (SetConsentId(2), SetConsentOutcome::Skipped));
    assert_eq!(h.state(), (Decision::Out, true));
}

#[test]
fn c14414_concurrent_in_out_and_event() {
    let mut h = Harness::new("pending");
    h.set_consent("in");
    h.set_consent("out");
    let c = h.submit();
    h.answer(Answer::Edge);
    h.answer(Answer::Edge);
    assert_eq!(h.sent.len(), 2);
    assert_eq!(h.reason_of(c), Some(RejectReason::UserDeclined));
    assert!(h.released.is_empty());
}

#[test]
fn c1631712_out_by_default_is_not_replayed() {
    let mut h = Harness::new("out");
    let a = h.submit();
    assert_eq!(h.reason_of(a), Some(RejectReason::NoPreferences));
    h.set_consent("in");
    h.answer(Answer::Edge);
    assert!(h.released.is_empty(), "nothing replayed");
    let b = h.submit();
    assert_eq!(h.released, vec![b]);
}

#[test]
fn c25148_events_before_the_call_are_sent_and_after_are_declined() {
    let mut h = Harness::new("in");
    let a = h.submit();
    h.set_consent("out");
    h.answer(Answer::Edge);
    let b = h.submit();
    assert_eq!(h.released, vec![a]);
    assert_eq!(h.reason_of(b), Some(RejectReason::UserDeclined));
}

#[test]
fn c225953_identity_map_goes_with_the_request() {
    let mut h = Harness::new("pending");
    h.set_consent_json(
        json!({"identityMap": {"HYP": [{"id": "id123"}]}, "consent": [adobe1("in")]}),
    );
    assert_eq!(h.sent[0].2, Some(json!({"HYP": [{"id": "id123"}]})));
}

#[test]
fn iab_scenarios() {
    // C224670, C224671, C224673, C224674. The harness's scripted Edge evaluates IAB strings with
    // the engine's own rule, so its answers cannot tell the two apart. Here the server's cookie is
    // given explicitly, once agreeing with the local evaluation and once contradicting it: the
    // state must follow the cookie. Then the server answers without a cookie, and only the
    // engine's own evaluation can decide.
    for (tc, applies, local) in [
        ("GRANT", true, Decision::In),
        ("DENY", true, Decision::Out),
        ("GRANT", false, Decision::In),
        ("DENY", false, Decision::In),
    ] {
        for (cookie, server) in [("general=in", Decision::In), ("general=out", Decision::Out)] {
            let context = format!("{tc} {applies}, server says {cookie}");
            let mut h = Harness::new("pending");
            let c = h.submit();
            h.set_consent_json(json!({"consent": [iab(tc, applies)]}));
            h.answer(Answer::EdgeWithConsent(cookie, CONSENT_COOKIE_MAX_AGE));
            assert_eq!(h.state(), (server, true), "{context}");
            assert_eq!(h.consent_cookie(), Some(cookie), "{context}");
            match server {
                Decision::In => assert_eq!(fate(&h, c), Fate::Released, "{context}"),
                _ => assert_eq!(
                    fate(&h, c),
                    Fate::Declined(RejectReason::UserDeclined),
                    "{context}"
                ),
            }
            // The record keeps both words: what the call asked (the local evaluation) and what
            // applied (the server's cookie).
            let record = h
                .records
                .iter()
                .rfind(|r| r.source == RecordSource::User)
                .unwrap();
            assert_eq!(record.requested, Some(local), "{context}");
            assert_eq!(record.general, server, "{context}");
        }
        // Without a cookie, the engine's own evaluation decides, and the consent cookie it
        // writes says so, so that the next start agrees.
        let mut h = Harness::new("pending");
        let c = h.submit();
        h.set_consent_json(json!({"consent": [iab(tc, applies)]}));
        h.answer(Answer::NoCookie);
        assert_eq!(h.state(), (local, true), "local {tc} {applies}");
        assert_eq!(
            h.consent_cookie(),
            Some(format!("general={local}").as_str()),
            "local {tc} {applies}"
        );
        assert_eq!(
            h.released.contains(&c),
            local == Decision::In,
            "local {tc} {applies}"
        );
    }
}

#[test]
fn the_default_evaluator_decodes_real_tc_strings() {
    use consent_tcf::TcString;
    let build = |purpose_one: bool, vendor: bool| {
        TcString::builder()
            .purpose_consent(1, purpose_one)
            .purpose_consent(10, true)
            .vendor_consent(DEFAULT_IAB_VENDOR_ID, vendor)
            .build()
            .unwrap()
            .encode()
    };
    for (purpose_one, vendor, expected) in [
        (true, true, Decision::In),
        (false, true, Decision::Out),
        (true, false, Decision::Out),
    ] {
        // The server answers without a cookie, so the engine's own decoding decides.
        let config = Config::new(crate::harness::ORG).default_consent(DefaultConsent::Pending);
        let mut h = Harness::unstarted(config);
        h.start();
        let tc = build(purpose_one, vendor);
        h.set_consent_json(json!({"consent": [iab(&tc, true)]}));
        h.answer(Answer::NoCookie);
        assert_eq!(
            h.state().0,
            expected,
            "purpose 1 {purpose_one}, vendor {vendor}"
        );
    }
    let config = Config::new(crate::harness::ORG);
    let mut h = Harness::unstarted(config);
    h.start();
    let options =
        SetConsentOptions::from_json(&json!({"consent": [iab("CO-not-base64!", true)]})).unwrap();
    let err = h
        .engine
        .handle(
            h.now,
            Input::SetConsent {
                id: SetConsentId(1),
                options,
            },
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            HandleError::Payload(PayloadError::InvalidTcString { .. })
        ),
        "{err}"
    );
}

#[test]
fn the_iab_vendor_is_configurable() {
    use consent_tcf::TcString;
    // Consent for vendor 565 only: "in" for the default vendor, "out" for another.
    let tc = TcString::builder()
        .purpose_consent(1, true)
        .vendor_consent(DEFAULT_IAB_VENDOR_ID, true)
        .build()
        .unwrap()
        .encode();
    for (vendor, expected) in [(DEFAULT_IAB_VENDOR_ID, Decision::In), (755, Decision::Out)] {
        let config = Config::new(crate::harness::ORG)
            .default_consent(DefaultConsent::Pending)
            .iab_vendor_id(vendor);
        let mut h = Harness::unstarted(config);
        h.start();
        h.set_consent_json(json!({"consent": [iab(&tc, true)]}));
        h.answer(Answer::NoCookie);
        assert_eq!(h.state().0, expected, "vendor {vendor}");
    }
}

#[test]
fn subscribers_hear_each_change_once() {
    let mut h = Harness::new("pending");
    assert_eq!(h.changes.len(), 1, "the start-up state");
    for _ in 0..3 {
        h.submit();
    }
    assert_eq!(h.changes.len(), 1, "commands change nothing");
    h.set_consent("in");
    // Suspension keeps the state pending and not set: nothing new to tell.
    assert_eq!(h.changes.len(), 1);
    h.answer(Answer::Edge);
    assert_eq!(h.changes.len(), 2);
    assert_eq!(h.changes[1].state, Decision::In);
    assert!(h.changes[1].was_set);
    // A skipped repeat suspends and resumes within one input: nothing to tell.
    h.set_consent("in");
    assert_eq!(h.changes.len(), 2);
    h.set_consent("out");
    assert_eq!(
        h.changes.len(),
        3,
        "suspended while a changed consent is sent"
    );
    assert_eq!(h.changes[2].state, Decision::Pending);
    h.answer(Answer::Edge);
    assert_eq!(h.changes.len(), 4);
    assert_eq!(h.changes[3].state, Decision::Out);
}

#[test]
fn a_tc_string_that_does_not_decode_is_refused_and_changes_nothing() {
    let mut h = Harness::new("in");
    let options =
        SetConsentOptions::from_json(&json!({"consent": [iab("garbage", true)]})).unwrap();
    let err = h
        .engine
        .handle(
            h.now,
            Input::SetConsent {
                id: SetConsentId(9),
                options,
            },
        )
        .unwrap_err();
    assert!(matches!(
        err,
        HandleError::Payload(PayloadError::InvalidTcString { .. })
    ));
    assert_eq!(
        err.to_string(),
        "'consent[0].value': Invalid IAB TCF consent string: not a TC string"
    );
    assert!(h.engine.poll_action().is_none(), "no effect");
    assert_eq!(h.state(), (Decision::In, false));
    assert!(!h.engine.is_setting_consent());
}

#[test]
fn c224678_a_negative_cookie_on_an_interact_response_flips_to_out() {
    let mut h = Harness::new("in");
    let a = h.submit();
    let cookie = Cookie::new(
        h.names.consent(),
        "general=out",
        Some(CONSENT_COOKIE_MAX_AGE),
    );
    h.interact_response(Outcome::Success, vec![cookie]);
    let b = h.submit();
    assert_eq!(h.released, vec![a]);
    assert_eq!(h.reason_of(b), Some(RejectReason::UserDeclined));
}

#[test]
fn c1576777_identity_deleted_after_out() {
    // The reference discards a stored consent without the identity cookie. A stored "out" is kept
    // here: this engine never writes the identity cookie while consent is out, so discarding it
    // would send events after every restart of an opted-out user.
    let mut h = Harness::new("in");
    h.set_consent("out");
    h.answer(Answer::Edge);
    assert!(
        !h.jar.contains_key(h.names.identity()),
        "no identity cookie while out"
    );
    h.restart();
    let c = h.submit();
    assert_eq!(h.reason_of(c), Some(RejectReason::UserDeclined));
    assert_eq!(h.consent_cookie(), Some("general=out"));

    // The reference's precondition: an identity cookie written while consent was in (by
    // default), from the interact answer of an event sent before the opt-out.
    let mut h = Harness::new("in");
    let early = h.submit();
    assert_eq!(h.released, vec![early]);
    let offered = h.identity_cookies();
    h.interact_response(Outcome::Success, offered);
    assert!(
        h.jar.contains_key(h.names.identity()),
        "precondition: the identity cookie exists, written while in"
    );
    let written_while_in = other_writes_all_in(&h, "before the opt-out").len();
    assert_eq!(written_while_in, 2, "identity and cluster");
    // The opt-out's answer asks to remove the identity and cluster cookies (max-age 0): removing
    // a cookie collects nothing, so the engine carries it out even though consent is now out.
    h.set_consent("out");
    let request = h.outstanding.pop_front().unwrap();
    let cookies = vec![
        Cookie::new(
            h.names.consent(),
            "general=out",
            Some(CONSENT_COOKIE_MAX_AGE),
        ),
        Cookie::new(h.names.identity(), "", Some(0)),
        Cookie::new(h.names.cluster(), "", Some(0)),
    ];
    h.handle(Input::Response(Response {
        origin: Origin::SetConsent(request),
        outcome: Outcome::Success,
        cookies,
    }));
    assert_eq!(h.state(), (Decision::Out, true));
    assert_eq!(
        jar_names(&h),
        cookie_names(&h, &["consent"]),
        "the identity cookie is gone"
    );
    assert_eq!(h.consent_cookie(), Some("general=out"));
    // A new identity cookie offered while out (a late interact answer) is refused.
    let refused = h.refused.len();
    let offered = h.identity_cookies();
    h.interact_response(Outcome::Success, offered);
    assert!(!h.jar.contains_key(h.names.identity()));
    assert_eq!(
        h.refused[refused..],
        [h.names.identity().to_owned(), h.names.cluster().to_owned()]
    );
    // The reload without the identity cookie: the reference deletes the consent cookie and sends
    // events again; here the stored opt-out is honoured, and identity cookies stay refused.
    h.restart();
    assert_eq!(h.state(), (Decision::Out, true));
    assert_eq!(h.consent_cookie(), Some("general=out"));
    let c = h.submit();
    assert_eq!(h.reason_of(c), Some(RejectReason::UserDeclined));
    let offered = h.identity_cookies();
    h.interact_response(Outcome::Success, offered);
    assert_eq!(jar_names(&h), cookie_names(&h, &["consent"]));
    assert_eq!(
        h.other_cookie_writes.len(),
        written_while_in,
        "no cookie but the consent cookie is written while out: {:?}",
        h.other_cookie_writes
    );

    // The reference's own steps: the server does not remove the identity cookie; the person
    // deletes it, then reloads. Whatever the engine does with the identity cookie written while
    // in, it must never write one again while out, and the reload must stay out.
    let mut h = Harness::new("in");
    h.submit();
    let offered = h.identity_cookies();
    h.interact_response(Outcome::Success, offered);
    assert!(h.jar.contains_key(h.names.identity()), "precondition");
    h.set_consent("out");
    let refused = h.refused.len();
    h.answer(Answer::Edge);
    assert!(
        h.refused[refused..].contains(&h.names.identity().to_owned()),
        "the opt-out's answer offers the identity cookie again: refused"
    );
    assert_eq!(
        h.other_cookie_writes.len(),
        2,
        "only the writes from before the opt-out: {:?}",
        h.other_cookie_writes
    );
    other_writes_all_in(&h, "identity written, then out");
    h.jar.remove(h.names.identity());
    h.restart();
    assert_eq!(h.state(), (Decision::Out, true));
    assert_eq!(h.consent_cookie(), Some("general=out"));
    let c = h.submit();
    assert_eq!(h.reason_of(c), Some(RejectReason::UserDeclined));
    assert_eq!(
        h.released.len(),
        1,
        "only the event from before the opt-out"
    );
}

// ----- §6.7 improvements over the reference -----

#[test]
fn improvement_1_a_failed_call_is_not_reported_as_set() {
    let mut h = Harness::new("out");
    h.set_consent("in");
    h.answer(Answer::Fail);
    assert_eq!(h.state(), (Decision::Out, false), "previous state, not set");
    let c = h.submit();
    assert_eq!(h.reason_of(c), Some(RejectReason::NoPreferences));
    assert_eq!(h.done, vec![(SetConsentId(1), SetConsentOutcome::Failed)]);
    // With default pending, queued events stay queued and a second call succeeds (C14410).
    let mut h = Harness::new("pending");
    let c = h.submit();
    h.set_consent("in");
    h.answer(Answer::Fail);
    assert!(h.released.is_empty() && h.rejected.is_empty());
    h.set_consent("in");
    h.answer(Answer::Edge);
    assert_eq!(h.released, vec![c]);
}

#[test]
fn improvement_2_an_unknown_stored_value_is_never_in() {
    let mut h = Harness::with_cookies("out", Some("general=foo"), true);
    assert!(
        h.log_messages()
            .contains(&(Warn, "Unknown consent value: foo"))
    );
    assert_eq!(h.state(), (Decision::Out, false));
    let c = h.submit();
    assert_eq!(h.reason_of(c), Some(RejectReason::NoPreferences));
    // An empty value falls back to the default silently.
    let h = Harness::with_cookies("pending", Some("general="), true);
    assert_eq!(h.state(), (Decision::Pending, false));
}

#[test]
fn improvement_3_no_cookie_in_the_answer_never_leaves_the_engine_stuck() {
    for (general, expected) in [("in", Decision::In), ("out", Decision::Out)] {
        let mut h = Harness::new("in");
        h.set_consent(general);
        let c = h.submit();
        h.answer(Answer::NoCookie);
        assert_eq!(h.state(), (expected, true), "{general}");
        assert_eq!(h.released.contains(&c), expected == Decision::In);
        assert_eq!(
            h.consent_cookie(),
            Some(format!("general={general}").as_str()),
            "the next start agrees"
        );
    }
    let mut h = Harness::new("in");
    h.set_consent_json(json!({"consent": [adobe2("p")]}));
    h.answer(Answer::NoCookie);
    assert_eq!(
        h.state().0,
        Decision::Pending,
        "collect p evaluates to pending"
    );
}

#[test]
fn improvement_4_a_deleted_cookie_means_the_call_is_sent() {
    let mut h = Harness::new("pending");
    h.set_consent("in");
    h.answer(Answer::Edge);
    // The consent cookie is deleted from the jar (by the person, or a cleaner) between runs.
    h.jar.remove(h.names.consent());
    h.restart();
    assert_eq!(h.consent_cookie(), None);
    h.set_consent("in");
    assert_eq!(h.sent.len(), 2, "not skipped");
    h.answer(Answer::Edge);
    assert_eq!(h.state(), (Decision::In, true));
    // A response that asks to remove the consent cookie is refused: only the engine removes it.
    let removal = Cookie::new(h.names.consent(), "", Some(0));
    h.interact_response(Outcome::Success, vec![removal]);
    assert_eq!(h.consent_cookie(), Some("general=in"));
    assert_eq!(
        h.refused.last().map(String::as_str),
        Some(h.names.consent())
    );
}

#[test]
fn improvement_5_a_new_identity_map_is_sent() {
    let mut h = Harness::new("pending");
    h.set_consent_json(json!({"consent": [adobe1("in")], "identityMap": {"HYP": [{"id": "a"}]}}));
    h.answer(Answer::Edge);
    h.set_consent_json(json!({"consent": [adobe1("in")], "identityMap": {"HYP": [{"id": "b"}]}}));
    assert_eq!(h.sent.len(), 2);
}

#[test]
fn improvement_6_and_cross_standard_calls_are_not_collapsed() {
    let mut h = Harness::new("pending");
    h.set_consent_json(json!({"consent": [adobe1("in"), adobe1("out")]}));
    h.answer(Answer::Edge);
    h.set_consent_json(json!({"consent": [adobe1("in"), adobe1("in")]}));
    assert_eq!(h.sent.len(), 2, "the second object counts");
    h.answer(Answer::Edge);
    // Adobe 1.0 in, IAB out, Adobe 1.0 in: the third is sent.
    h.set_consent_json(json!({"consent": [iab("DENY", true)]}));
    h.answer(Answer::Edge);
    h.set_consent("in");
    assert_eq!(h.sent.len(), 4);
}

#[test]
fn improvement_7_no_state_change_while_a_set_consent_is_in_flight() {
    let mut h = Harness::new("in");
    h.set_consent("out");
    let cookie = Cookie::new(
        h.names.consent(),
        "general=in",
        Some(CONSENT_COOKIE_MAX_AGE),
    );
    h.interact_response(Outcome::Success, vec![cookie]);
    assert_eq!(h.state(), (Decision::Pending, false));
    h.answer(Answer::Edge);
    assert_eq!(h.state(), (Decision::Out, true));
}

#[test]
fn improvement_no_cookie_but_the_consent_cookie_before_consent() {
    // Pending and out: identity and cluster cookies offered by responses are not written.
    for default in ["pending", "out"] {
        let mut h = Harness::new(default);
        let cookies = h.identity_cookies();
        h.interact_response(Outcome::Success, cookies);
        assert!(h.jar.is_empty(), "{default}: {:?}", h.jar);
        assert_eq!(h.refused.len(), 2, "identity and cluster refused");
        h.set_consent("out");
        h.answer(Answer::Edge);
        assert_eq!(
            h.jar.keys().collect::<Vec<_>>(),
            vec![h.names.consent()],
            "{default}: only the consent cookie"
        );
        assert!(
            h.other_cookie_writes.is_empty(),
            "{default}: {:?}",
            h.other_cookie_writes
        );
    }
    // In: the set-consent answer's identity cookie is written once the state is in, and the
    // action stream tells subscribers about "in" before the write, not after it.
    let mut h = Harness::new("pending");
    h.set_consent("in");
    h.answer(Answer::Edge);
    assert!(h.jar.contains_key(h.names.identity()));
    for (name, view) in &h.other_cookie_writes {
        assert_eq!(view.state, Decision::In, "{name} written while {view:?}");
    }
    assert_eq!(
        other_writes_all_in(&h, "set-consent answer"),
        [h.names.identity(), h.names.cluster()],
        "the cookies were written"
    );
    assert!(h.other_cookie_writes.iter().all(|(_, view)| view.was_set));

    // One response that carries both the consent cookie and the identity cookies: the identity
    // cookies follow the state this response leads to. From pending, "in" allows them, and
    // "in" is reported before they are written.
    let mut h = Harness::new("pending");
    let mut cookies = vec![Cookie::new(
        h.names.consent(),
        "general=in",
        Some(CONSENT_COOKIE_MAX_AGE),
    )];
    cookies.extend(h.identity_cookies());
    h.interact_response(Outcome::Success, cookies);
    assert_eq!(
        other_writes_all_in(&h, "interact answer with general=in"),
        [h.names.identity(), h.names.cluster()]
    );
    assert_eq!(
        jar_names(&h),
        cookie_names(&h, &["consent", "identity", "cluster"])
    );
    // From "in" by default, "out" in the same response refuses them.
    let mut h = Harness::new("in");
    let mut cookies = vec![Cookie::new(
        h.names.consent(),
        "general=out",
        Some(CONSENT_COOKIE_MAX_AGE),
    )];
    cookies.extend(h.identity_cookies());
    h.interact_response(Outcome::Success, cookies);
    assert!(
        h.other_cookie_writes.is_empty(),
        "{:?}",
        h.other_cookie_writes
    );
    assert_eq!(jar_names(&h), cookie_names(&h, &["consent"]));
    assert_eq!(
        h.refused,
        [h.names.identity().to_owned(), h.names.cluster().to_owned()]
    );

    // While a setConsent is in flight (the engine is suspended, even from "in" by default),
    // cookies offered by another response are held: written once the chain settles to "in",
    // never while it runs.
    let mut h = Harness::new("in");
    h.set_consent("in");
    let offered = h.identity_cookies();
    h.interact_response(Outcome::Success, offered);
    assert!(
        h.other_cookie_writes.is_empty() && !h.jar.contains_key(h.names.identity()),
        "held while the chain runs: {:?}",
        h.other_cookie_writes
    );
    h.answer(Answer::NoCookie);
    assert_eq!(
        other_writes_all_in(&h, "held, then in"),
        [h.names.identity(), h.names.cluster()]
    );
    // The same held cookies are refused when the chain settles to "out".
    let mut h = Harness::new("in");
    h.set_consent("out");
    let offered = h.identity_cookies();
    h.interact_response(Outcome::Success, offered);
    h.answer(Answer::NoCookie);
    assert!(
        h.other_cookie_writes.is_empty(),
        "{:?}",
        h.other_cookie_writes
    );
    assert_eq!(jar_names(&h), cookie_names(&h, &["consent"]));
}

#[test]
fn the_consent_cookie_expires_back_to_the_default() {
    let mut h = Harness::new("pending");
    h.set_consent("in");
    h.answer(Answer::Edge);
    let expiry = h.engine.poll_timeout().unwrap();
    assert_eq!(expiry, h.now.plus_secs(CONSENT_COOKIE_MAX_AGE));
    // A command that needs a purpose still undecided waits while consent is in.
    h.handle(Input::SetPurposes(vec![(
        Purpose::AD_ID,
        Decision::Pending,
    )]));
    let ad = h.submit_with(Requirement::general().and(Purpose::AD_ID), Mode::Queue);
    assert_eq!(fate(&h, ad), Fate::Queued);
    // One millisecond before the expiry the choice still holds.
    h.now = Timestamp::from_millis(expiry.as_millis() - 1);
    h.handle(Input::Tick);
    let early = h.submit();
    assert_eq!(fate(&h, early), Fate::Released);
    h.now = expiry;
    h.handle(Input::Tick);
    assert_eq!(h.state(), (Decision::Pending, false));
    assert_eq!(h.consent_cookie(), None);
    assert_eq!(h.records.last().unwrap().source, RecordSource::Expiry);
    let record = h.records.last().unwrap();
    assert_eq!((record.general, record.at), (Decision::Pending, expiry));
    assert_eq!(h.engine.poll_timeout(), None, "nothing left to expire");
    // The queued command keeps waiting under the default, and a new one waits too.
    assert_eq!(fate(&h, ad), Fate::Queued);
    let late = h.submit();
    assert_eq!(fate(&h, late), Fate::Queued);
    // The same call again is sent, not skipped: the cookie it left is gone. Its answer releases
    // what waited, in order.
    h.set_consent("in");
    assert_eq!(h.sent.len(), 2, "not skipped after expiry");
    h.answer(Answer::Edge);
    assert_eq!(h.released, vec![early, ad, late]);

    // With default "out", the commands still queued at expiry are declined by the default.
    let mut h = Harness::new("out");
    h.set_consent("in");
    h.answer(Answer::Edge);
    h.handle(Input::SetPurposes(vec![(
        Purpose::AD_ID,
        Decision::Pending,
    )]));
    let ad = h.submit_with(Requirement::general().and(Purpose::AD_ID), Mode::Queue);
    assert_eq!(fate(&h, ad), Fate::Queued);
    h.now = h.engine.poll_timeout().unwrap();
    h.handle(Input::Tick);
    assert_eq!(h.state(), (Decision::Out, false));
    assert_eq!(fate(&h, ad), Fate::Declined(RejectReason::NoPreferences));
    assert_eq!(h.records.last().unwrap().source, RecordSource::Expiry);

    // A late Tick: a Submit whose `now` is past the expiry already sees the default.
    let mut h = Harness::new("pending");
    h.set_consent("in");
    h.answer(Answer::Edge);
    let expiry = h.engine.poll_timeout().unwrap();
    h.now = expiry.plus_secs(86_400);
    let c = h.submit();
    assert_eq!(
        fate(&h, c),
        Fate::Queued,
        "not released under the expired in"
    );
    assert_eq!(h.state(), (Decision::Pending, false));
    assert_eq!(h.consent_cookie(), None);
    assert_eq!(h.records.last().unwrap().source, RecordSource::Expiry);
    // A response past the expiry, as the first input after it, writes no identity cookie under
    // the expired in.
    let mut h = Harness::new("pending");
    h.set_consent("in");
    h.answer(Answer::Edge);
    let written = other_writes_all_in(&h, "before expiry").len();
    h.now = h.engine.poll_timeout().unwrap().plus_secs(86_400);
    let offered = h.identity_cookies();
    h.interact_response(Outcome::Success, offered);
    assert_eq!(h.state(), (Decision::Pending, false));
    assert_eq!(
        h.other_cookie_writes.len(),
        written,
        "{:?}",
        h.other_cookie_writes
    );
    assert!(h.refused.contains(&h.names.identity().to_owned()));
    // A setConsent past the expiry, without a Tick, is sent rather than skipped on the expired
    // cookie.
    let mut h = Harness::new("pending");
    h.set_consent("in");
    h.answer(Answer::Edge);
    h.now = h.engine.poll_timeout().unwrap().plus_secs(86_400);
    let id = h.set_consent("in");
    assert_eq!(h.sent.len(), 2, "sent again");
    assert!(!h.done.iter().any(|(done, _)| *done == id), "not skipped");
    let c = h.submit();
    assert_eq!(fate(&h, c), Fate::Queued);
    h.answer(Answer::Edge);
    assert_eq!(fate(&h, c), Fate::Released);

    // Expiry while a setConsent is in flight: the default becomes what a failed chain falls back
    // to. A failed "in" leaves the default (pending), not the expired "in", and writes no cookie.
    let mut h = Harness::new("pending");
    h.set_consent("in");
    h.answer(Answer::Edge);
    let expiry = h.engine.poll_timeout().unwrap();
    h.now = Timestamp::from_millis(expiry.as_millis() - 1_000);
    // Adobe 2.0 rather than the same Adobe 1.0 call, so that it is not skipped as unchanged.
    h.set_consent_json(json!({"consent": [adobe2("y")]}));
    assert_eq!(h.sent.len(), 2);
    let c = h.submit();
    assert_eq!(fate(&h, c), Fate::Queued);
    h.now = expiry;
    h.handle(Input::Tick);
    assert_eq!(h.consent_cookie(), None);
    assert_eq!(fate(&h, c), Fate::Queued, "still suspended");
    h.answer(Answer::Fail);
    assert_eq!(h.state(), (Decision::Pending, false));
    assert_eq!(fate(&h, c), Fate::Queued);
    assert_eq!(
        h.consent_cookie(),
        None,
        "the expired in is not written back"
    );
    // A failed "out" still stops collection, here with the answer itself past the expiry and no
    // Tick before it.
    let mut h = Harness::new("pending");
    h.set_consent("in");
    h.answer(Answer::Edge);
    let expiry = h.engine.poll_timeout().unwrap();
    h.now = Timestamp::from_millis(expiry.as_millis() - 1_000);
    h.set_consent("out");
    let c = h.submit();
    h.now = expiry.plus_secs(1);
    h.answer(Answer::Fail);
    assert_eq!(h.state(), (Decision::Out, true));
    assert_eq!(fate(&h, c), Fate::Declined(RejectReason::UserDeclined));
    assert_eq!(h.consent_cookie(), Some("general=out"));
}

// ----- granular purposes -----

#[test]
fn purposes_follow_general_unless_decided() {
    let mut h = Harness::new("pending");
    let personalize = Requirement::general().and(Purpose::PERSONALIZE_CONTENT);
    let share = Requirement::general().and(Purpose::SHARE);
    let plain = h.submit();
    let p = h.submit_with(personalize, Mode::Queue);
    let s = h.submit_with(share, Mode::Queue);
    h.set_consent_json(json!({"consent": [{"standard": "Adobe", "version": "2.0",
        "value": {"collect": {"val": "y"}, "share": {"val": "n"}}}]}));
    h.answer(Answer::Edge);
    assert_eq!(h.released, vec![plain, p], "personalize follows general");
    assert_eq!(h.reason_of(s), Some(RejectReason::UserDeclined));
    assert_eq!(h.engine.decision(Purpose::SHARE), Decision::Out);
    assert_eq!(
        h.engine.decision(Purpose::PERSONALIZE_CONTENT),
        Decision::In
    );
    assert_eq!(
        h.engine.consent().purposes,
        vec![("share".to_owned(), Decision::Out)]
    );
    // The purposes survive a restart through the snapshot.
    h.restart();
    assert_eq!(h.engine.decision(Purpose::SHARE), Decision::Out);
    // Adobe 1.0 speaks for all purposes and clears them.
    h.set_consent("in");
    h.answer(Answer::Edge);
    assert_eq!(h.engine.decision(Purpose::SHARE), Decision::In);
    assert!(h.engine.consent().purposes.is_empty());
}

#[test]
fn a_purpose_pending_keeps_its_commands_waiting_while_others_pass() {
    let config = Harness::config("in").purpose("analytics").unwrap();
    let mut h = Harness::unstarted(config);
    h.start();
    let analytics = h.engine.purpose("analytics").unwrap();
    assert_eq!(h.engine.purpose("nope"), None);
    h.set_consent_json(json!({"consent": [{"standard": "Adobe", "version": "2.0",
        "value": {"collect": {"val": "y"}, "adID": {"val": "p"}}}]}));
    h.answer(Answer::Edge);
    let ad = h.submit_with(Requirement::general().and(Purpose::AD_ID), Mode::Queue);
    let a = h.submit_with(Requirement::general().and(analytics), Mode::Queue);
    assert_eq!(h.released, vec![a]);
    assert_eq!(h.engine.queued().collect::<Vec<_>>(), vec![ad]);
    // The other way round: the custom purpose pending keeps its commands waiting, while plain
    // commands pass and the adID command keeps waiting for its own decision.
    h.handle(Input::SetPurposes(vec![(analytics, Decision::Pending)]));
    let a2 = h.submit_with(Requirement::general().and(analytics), Mode::Queue);
    let plain = h.submit();
    assert_eq!(fate(&h, a2), Fate::Queued);
    assert_eq!(fate(&h, plain), Fate::Released);
    assert_eq!(h.engine.queued().collect::<Vec<_>>(), vec![ad, a2]);
    // Deciding adID releases only its command; the analytics one still waits.
    h.handle(Input::SetPurposes(vec![(Purpose::AD_ID, Decision::In)]));
    assert_eq!(fate(&h, ad), Fate::Released);
    assert_eq!(h.engine.queued().collect::<Vec<_>>(), vec![a2]);
}

#[test]
fn a_custom_purpose_is_decided_by_the_app() {
    let config = Harness::config("pending").purpose("analytics").unwrap();
    let mut h = Harness::unstarted(config);
    h.start();
    let analytics = h.engine.purpose("analytics").unwrap();
    let needs = Requirement::general().and(analytics);
    // "in" from the server, with the identity cookie, so that a restart restores the choice.
    h.set_consent("in");
    h.answer(Answer::Edge);

    // Pending: commands that need analytics wait while the others pass.
    h.handle(Input::SetPurposes(vec![(analytics, Decision::Pending)]));
    let waiting = h.submit_with(needs, Mode::Queue);
    let plain = h.submit();
    assert_eq!(fate(&h, waiting), Fate::Queued);
    assert_eq!(fate(&h, plain), Fate::Released);

    // In releases them, and is recorded as the app's own decision.
    let records = h.records.len();
    h.advance(5);
    h.handle(Input::SetPurposes(vec![(analytics, Decision::In)]));
    assert_eq!(fate(&h, waiting), Fate::Released);
    assert_eq!(h.records.len(), records + 1);
    let record = h.records.last().unwrap();
    assert_eq!(record.source, RecordSource::Local);
    assert_eq!(record.at, h.now);
    assert_eq!(record.general, Decision::In);
    assert_eq!(
        record.purposes,
        vec![("analytics".to_owned(), Decision::In)]
    );
    assert_eq!(h.engine.decision(analytics), Decision::In);

    // Out declines the commands that wait for it and the ones that come later; plain commands
    // still pass.
    h.handle(Input::SetPurposes(vec![(analytics, Decision::Pending)]));
    let second = h.submit_with(needs, Mode::Queue);
    assert_eq!(fate(&h, second), Fate::Queued);
    h.handle(Input::SetPurposes(vec![(analytics, Decision::Out)]));
    assert_eq!(fate(&h, second), Fate::Declined(RejectReason::UserDeclined));
    let third = h.submit_with(needs, Mode::Queue);
    assert_eq!(fate(&h, third), Fate::Declined(RejectReason::UserDeclined));
    let plain = h.submit();
    assert_eq!(fate(&h, plain), Fate::Released);
    let record = h.records.last().unwrap();
    assert_eq!(record.source, RecordSource::Local);
    assert_eq!(
        record.purposes,
        vec![("analytics".to_owned(), Decision::Out)]
    );
    assert_eq!(
        h.engine.consent().purposes,
        vec![("analytics".to_owned(), Decision::Out)]
    );
    assert_eq!(
        h.changes.last().unwrap().purposes,
        vec![("analytics".to_owned(), Decision::Out)],
        "subscribers were told"
    );
    assert_eq!(
        h.snapshot.as_ref().unwrap().purposes,
        vec![("analytics".to_owned(), Decision::Out)],
        "persisted"
    );

    // The decision survives a restart, both ways.
    h.restart();
    assert_eq!(h.state(), (Decision::In, true));
    assert_eq!(h.engine.decision(analytics), Decision::Out);
    let c = h.submit_with(needs, Mode::Queue);
    assert_eq!(fate(&h, c), Fate::Declined(RejectReason::UserDeclined));
    h.handle(Input::SetPurposes(vec![(analytics, Decision::In)]));
    h.restart();
    assert_eq!(h.engine.decision(analytics), Decision::In);
    let c = h.submit_with(needs, Mode::Queue);
    assert_eq!(fate(&h, c), Fate::Released);

    // `general` is not a named purpose: refused, with nothing changed and no action queued,
    // also when it comes after a valid decision in the same input.
    let before = h.engine.consent();
    let records = h.records.len();
    for purposes in [
        vec![(Purpose::GENERAL, Decision::Out)],
        vec![
            (analytics, Decision::Out),
            (Purpose::GENERAL, Decision::Out),
        ],
    ] {
        let err = h
            .engine
            .handle(h.now, Input::SetPurposes(purposes))
            .unwrap_err();
        assert_eq!(err, HandleError::GeneralIsNotANamedPurpose);
        assert!(h.engine.poll_action().is_none(), "no action queued");
    }
    assert_eq!(h.engine.consent(), before);
    assert_eq!(h.records.len(), records);
    assert_eq!(h.engine.decision(analytics), Decision::In);
    let c = h.submit_with(needs, Mode::Queue);
    assert_eq!(fate(&h, c), Fate::Released);
}

#[test]
fn config_rejects_bad_purposes() {
    assert_eq!(
        Config::new("o").purpose("share").unwrap_err(),
        ConfigError::DuplicatePurpose("share".into())
    );
    assert_eq!(
        Config::new("o").purpose("").unwrap_err(),
        ConfigError::EmptyPurpose
    );
    let mut config = Config::new("o");
    for i in 0..(MAX_PURPOSES - 13) {
        config = config.purpose(format!("p{i}")).unwrap();
    }
    assert_eq!(
        config.purpose("one-too-many").unwrap_err(),
        ConfigError::TooManyPurposes
    );
}

// ----- bad input changes nothing -----

#[test]
fn refused_inputs_leave_no_trace() {
    let mut h = Harness::new("pending");
    let c = h.submit();
    let err = h
        .engine
        .handle(
            h.now,
            Input::Submit {
                id: c,
                requirement: Requirement::general(),
                mode: Mode::Queue,
            },
        )
        .unwrap_err();
    assert_eq!(err, HandleError::DuplicateCommand(c));
    let err = h
        .engine
        .handle(
            h.now,
            Input::Response(Response {
                origin: Origin::SetConsent(RequestId(42)),
                outcome: Outcome::Success,
                cookies: vec![],
            }),
        )
        .unwrap_err();
    assert_eq!(err, HandleError::UnknownRequest(RequestId(42)));
    let err = h
        .engine
        .handle(h.now, Input::Start(Stored::default()))
        .unwrap_err();
    assert_eq!(err, HandleError::AlreadyStarted);
    assert!(h.engine.poll_action().is_none());
    assert_eq!(h.engine.queued().collect::<Vec<_>>(), vec![c]);
}

#[test]
fn records_prove_what_when_and_how() {
    let mut h = Harness::new("pending");
    assert_eq!(h.records[0].source, RecordSource::Default);
    h.advance(10);
    h.set_consent("in");
    h.answer(Answer::Edge);
    let user = h
        .records
        .iter()
        .find(|r| r.source == RecordSource::User)
        .unwrap();
    assert_eq!(user.standards, vec!["Adobe.1.0"]);
    assert_eq!(user.payload_hashes, vec!["e385c3ab"]);
    assert_eq!(user.general, Decision::In);
    assert_eq!(user.at, h.now);
    h.restart();
    assert_eq!(h.records.last().unwrap().source, RecordSource::Restore);
    assert!(
        h.changes
            .iter()
            .any(|v| v.state == Decision::In && v.was_set),
        "subscribers were told"
    );

    // A failed call whose answer carries a consent cookie: the server's cookie decided, and the
    // record says "in" as the server's word, at the time of the answer.
    let mut h = Harness::new("pending");
    let from = h.records.len();
    h.set_consent("in");
    h.advance(10);
    h.answer(Answer::FailWithCookie("in"));
    assert_eq!(h.state(), (Decision::In, true));
    let new = &h.records[from..];
    assert!(
        new.iter().all(|r| r.general == Decision::In),
        "no record of another state: {new:?}"
    );
    let record = new
        .last()
        .expect("the change from pending to in is recorded");
    assert_eq!(record.source, RecordSource::Server);
    assert_eq!(record.at, h.now);

    // An accepted call that asked "in" and whose answer's cookie says "out": one record of the
    // call, with both what it asked and what applied, and none that claims "in".
    let mut h = Harness::new("pending");
    let from = h.records.len();
    h.set_consent("in");
    h.advance(10);
    h.answer(Answer::EdgeWithConsent(
        "general=out",
        CONSENT_COOKIE_MAX_AGE,
    ));
    assert_eq!(h.state(), (Decision::Out, true));
    let new = &h.records[from..];
    assert!(
        new.iter().all(|r| r.general == Decision::Out),
        "no record says the requested in applied: {new:?}"
    );
    let calls: Vec<_> = new
        .iter()
        .filter(|r| r.source == RecordSource::User)
        .collect();
    assert_eq!(calls.len(), 1, "{new:?}");
    assert_eq!(calls[0].requested, Some(Decision::In));
    assert_eq!(calls[0].general, Decision::Out);
    assert_eq!(calls[0].standards, vec!["Adobe.1.0"]);
    assert_eq!(calls[0].at, h.now);

    // A server cookie on an interact response that changes the state.
    let mut h = Harness::new("in");
    let from = h.records.len();
    h.advance(10);
    let cookie = Cookie::new(
        h.names.consent(),
        "general=out",
        Some(CONSENT_COOKIE_MAX_AGE),
    );
    h.interact_response(Outcome::Success, vec![cookie]);
    let new = &h.records[from..];
    assert_eq!(new.len(), 1, "{new:?}");
    assert_eq!(new[0].source, RecordSource::Server);
    assert_eq!(new[0].general, Decision::Out);
    assert_eq!(new[0].requested, None, "no call asked anything");
    assert_eq!(new[0].at, h.now);

    // Expiry: the default applied again, recorded at the expiry.
    let mut h = Harness::new("out");
    h.set_consent("in");
    h.answer(Answer::Edge);
    let from = h.records.len();
    h.now = h.engine.poll_timeout().unwrap();
    h.handle(Input::Tick);
    let new = &h.records[from..];
    assert_eq!(new.len(), 1, "{new:?}");
    assert_eq!(new[0].source, RecordSource::Expiry);
    assert_eq!(new[0].general, Decision::Out);
    assert_eq!(new[0].at, h.now);

    // A failed "out" from "in": the state became "out" without the server's confirmation.
    let mut h = Harness::new("pending");
    h.set_consent("in");
    h.answer(Answer::Edge);
    let from = h.records.len();
    h.set_consent("out");
    h.advance(10);
    h.answer(Answer::Fail);
    assert_eq!(h.state(), (Decision::Out, true));
    let new = &h.records[from..];
    assert!(
        new.iter().all(|r| r.general == Decision::Out),
        "no record of another state: {new:?}"
    );
    let record = new.last().expect("the change from in to out is recorded");
    assert_eq!(record.source, RecordSource::Unconfirmed);
    assert_eq!(record.requested, Some(Decision::Out));
    assert_eq!(record.standards, vec!["Adobe.1.0"]);
    assert_eq!(record.at, h.now);
}

// ----- seed 004: defaultConsent × setConsent -----

/// One row of seed 004's table: the seed's two columns, and what exactly this engine does.
struct Row {
    default: &'static str,
    set: Option<&'static str>,
    /// The seed's "data collection occurs" (for the event after the call when there is one).
    collected: bool,
    /// The seed's "Web SDK sets browser cookies" (this engine: the jar is not empty).
    cookies_set: bool,
    /// The event submitted before the call, right after its submission.
    before_at_once: Fate,
    /// The same event at the end (queued ones are released or declined by the call).
    before: Fate,
    /// The event submitted after the call settled.
    after: Fate,
    /// Every cookie left in the jar.
    jar: &'static [&'static str],
    /// The consent cookie's value.
    consent: Option<&'static str>,
}

/// Runs one row. Every released event makes an interact call whose answer offers the identity
/// and cluster cookies: for events released before a setConsent call, the answer arrives while
/// the call is in flight. At the end a response offers them once more on its own (an
/// `identity/acquire` answer, say), so that the rows where nothing is released also show that
/// an offered cookie is refused.
fn check_table(row: &Row) {
    let context = format!("{} × {:?}", row.default, row.set);
    let mut h = Harness::new(row.default);
    let mut answered = 0;
    let answer_released = |h: &mut Harness, answered: &mut usize| {
        while *answered < h.released.len() {
            *answered += 1;
            let offered = h.identity_cookies();
            h.interact_response(Outcome::Success, offered);
        }
    };
    let before = h.submit();
    assert_eq!(
        fate(&h, before),
        row.before_at_once,
        "{context}: event before, at once"
    );
    if let Some(value) = row.set {
        h.set_consent(value);
        answer_released(&mut h, &mut answered);
        h.answer(Answer::Edge);
    }
    answer_released(&mut h, &mut answered);
    let after = h.submit();
    answer_released(&mut h, &mut answered);
    let offered = h.identity_cookies();
    h.interact_response(Outcome::Success, offered);

    // The seed's columns.
    let event = if row.set.is_some() { after } else { before };
    assert_eq!(
        h.released.contains(&event),
        row.collected,
        "{context}: data collected"
    );
    assert_eq!(
        !h.jar.is_empty(),
        row.cookies_set,
        "{context}: cookies set {:?}",
        h.jar
    );
    // This engine's detail.
    assert_eq!(fate(&h, before), row.before, "{context}: event before");
    assert_eq!(fate(&h, after), row.after, "{context}: event after");
    assert_eq!(
        jar_names(&h),
        cookie_names(&h, row.jar),
        "{context}: the jar {:?}",
        h.jar
    );
    assert_eq!(h.consent_cookie(), row.consent, "{context}: consent cookie");
    let written = other_writes_all_in(&h, &context);
    let identity = h.names.identity();
    if row.jar.contains(&"identity") {
        assert!(
            written.contains(&identity) && written.contains(&h.names.cluster()),
            "{context}: written {written:?}"
        );
        assert!(!h.refused.iter().any(|name| name == identity), "{context}");
    } else {
        assert!(written.is_empty(), "{context}: written {written:?}");
        assert!(
            h.refused.iter().any(|name| name == identity),
            "{context}: the offered identity cookie was refused"
        );
    }
}

#[test]
fn seed_004_default_consent_by_set_consent_table() {
    use Fate::{Declined, Queued, Released};
    use RejectReason::{NoPreferences, UserDeclined};
    let rows = [
        Row {
            default: "in",
            set: Some("in"),
            collected: true,
            cookies_set: true,
            before_at_once: Released,
            before: Released,
            after: Released,
            jar: &["consent", "identity", "cluster"],
            consent: Some("general=in"),
        },
        // C25148: the event before the call is sent; its answer's cookies arrive during the
        // opt-out and are refused.
        Row {
            default: "in",
            set: Some("out"),
            collected: false,
            cookies_set: true,
            before_at_once: Released,
            before: Released,
            after: Declined(UserDeclined),
            jar: &["consent"],
            consent: Some("general=out"),
        },
        Row {
            default: "in",
            set: None,
            collected: true,
            cookies_set: true,
            before_at_once: Released,
            before: Released,
            after: Released,
            jar: &["identity", "cluster"],
            consent: None,
        },
        Row {
            default: "pending",
            set: Some("in"),
            collected: true,
            cookies_set: true,
            before_at_once: Queued,
            before: Released,
            after: Released,
            jar: &["consent", "identity", "cluster"],
            consent: Some("general=in"),
        },
        Row {
            default: "pending",
            set: Some("out"),
            collected: false,
            cookies_set: true,
            before_at_once: Queued,
            before: Declined(UserDeclined),
            after: Declined(UserDeclined),
            jar: &["consent"],
            consent: Some("general=out"),
        },
        Row {
            default: "pending",
            set: None,
            collected: false,
            cookies_set: false,
            before_at_once: Queued,
            before: Queued,
            after: Queued,
            jar: &[],
            consent: None,
        },
        // C1631712: the event declined by the default is not replayed by the later "in".
        Row {
            default: "out",
            set: Some("in"),
            collected: true,
            cookies_set: true,
            before_at_once: Declined(NoPreferences),
            before: Declined(NoPreferences),
            after: Released,
            jar: &["consent", "identity", "cluster"],
            consent: Some("general=in"),
        },
        Row {
            default: "out",
            set: Some("out"),
            collected: false,
            cookies_set: true,
            before_at_once: Declined(NoPreferences),
            before: Declined(NoPreferences),
            after: Declined(UserDeclined),
            jar: &["consent"],
            consent: Some("general=out"),
        },
        Row {
            default: "out",
            set: None,
            collected: false,
            cookies_set: false,
            before_at_once: Declined(NoPreferences),
            before: Declined(NoPreferences),
            after: Declined(NoPreferences),
            jar: &[],
            consent: None,
        },
    ];
    for row in &rows {
        check_table(row);
    }
}
