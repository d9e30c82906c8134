//! The reference's engine scenarios (web-sdk-consent.md §6.1–6.4, the engine side of §6.6, the
//! improvements of §6.7) and seed 004's defaultConsent × setConsent table.

use consent_core::*;
use serde_json::json;

use crate::harness::{Answer, Harness, adobe1, adobe2, iab};

use LogLevel::{Info, Warn};

const USER_CONSENTED: (LogLevel, &str) = (Info, "User consented.");
const USER_DECLINED: (LogLevel, &str) = (Warn, "User declined consent.");

// ----- §6.1 the state machine -----

#[test]
fn pending_queues_in_releases_out_declines() {
    let mut h = Harness::new("pending");
    let c = h.submit();
    assert!(h.released.is_empty() && h.rejected.is_empty());
    assert_eq!(h.engine.queued().collect::<Vec<_>>(), vec![c]);

    let mut h = Harness::new("in");
    let c = h.submit();
    assert_eq!(h.released, vec![c]);
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
    // C224670, C224671, C224673, C224674 with the engine's own evaluation, and the server's
    // cookie agreeing.
    for (tc, applies, expected) in [
        ("GRANT", true, Decision::In),
        ("DENY", true, Decision::Out),
        ("GRANT", false, Decision::In),
        ("DENY", false, Decision::In),
    ] {
        let mut h = Harness::new("pending");
        let c = h.submit();
        h.set_consent_json(json!({"consent": [iab(tc, applies)]}));
        h.answer(Answer::Edge);
        assert_eq!(h.state().0, expected, "{tc} {applies}");
        assert_eq!(h.released.contains(&c), expected == Decision::In);
        // Without the cookie, the local evaluation decides the same way.
        let mut h = Harness::new("pending");
        h.set_consent_json(json!({"consent": [iab(tc, applies)]}));
        h.answer(Answer::NoCookie);
        assert_eq!(h.state().0, expected, "local {tc} {applies}");
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
    assert_eq!(h.refused.last().map(String::as_str), Some(h.names.consent()));
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
    }
    // In: the set-consent answer's identity cookie is written once the state is in.
    let mut h = Harness::new("pending");
    h.set_consent("in");
    h.answer(Answer::Edge);
    assert!(h.jar.contains_key(h.names.identity()));
    for (name, view) in &h.other_cookie_writes {
        assert_eq!(view.state, Decision::In, "{name} written while {view:?}");
    }
}

#[test]
fn the_consent_cookie_expires_back_to_the_default() {
    let mut h = Harness::new("pending");
    h.set_consent("in");
    h.answer(Answer::Edge);
    let expiry = h.engine.poll_timeout().unwrap();
    assert_eq!(expiry, h.now.plus_secs(CONSENT_COOKIE_MAX_AGE));
    h.now = expiry;
    h.handle(Input::Tick);
    assert_eq!(h.state(), (Decision::Pending, false));
    assert_eq!(h.consent_cookie(), None);
    assert_eq!(h.records.last().unwrap().source, RecordSource::Expiry);
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
}

// ----- seed 004: defaultConsent × setConsent -----

fn check_table(default: &str, set: Option<&str>, collected: bool, cookies: bool) {
    let mut h = Harness::new(default);
    let before = h.submit();
    if let Some(value) = set {
        h.set_consent(value);
        h.answer(Answer::Edge);
    }
    let after = h.submit();
    // Every released command makes an interact call whose response carries identity cookies.
    for _ in 0..h.released.len() {
        let offered = h.identity_cookies();
        h.interact_response(Outcome::Success, offered);
    }
    let event = if set.is_some() { after } else { before };
    assert_eq!(
        h.released.contains(&event),
        collected,
        "{default} × {set:?}: data collected"
    );
    assert_eq!(
        !h.jar.is_empty(),
        cookies,
        "{default} × {set:?}: cookies set {:?}",
        h.jar
    );
}

#[test]
fn seed_004_default_consent_by_set_consent_table() {
    check_table("in", Some("in"), true, true);
    check_table("in", Some("out"), false, true);
    check_table("in", None, true, true);
    check_table("pending", Some("in"), true, true);
    check_table("pending", Some("out"), false, true);
    check_table("pending", None, false, false);
    check_table("out", Some("in"), true, true);
    check_table("out", Some("out"), false, true);
    check_table("out", None, false, false);
}
