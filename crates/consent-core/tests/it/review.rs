//! One regression test per finding of the engine review (`shared/reviews/engine-review.md`), each
//! the review's own input sequence. The name starts with the finding's label.

use consent_core::*;
use serde_json::{Value, json};

use crate::harness::{Answer, Harness, adobe1, adobe2};

fn adobe2_value(value: Value) -> Value {
    json!({"standard": "Adobe", "version": "2.0", "value": value})
}

/// In, then an opt-out with a command queued behind it: the state the H1 sequences start from.
fn opted_in_then_out() -> (Harness, CommandId) {
    let mut h = Harness::new("pending");
    h.set_consent("in");
    h.answer(Answer::Edge);
    assert_eq!(h.state(), (Decision::In, true));
    h.set_consent("out");
    let c = h.submit();
    (h, c)
}

// ----- High -----

#[test]
fn h1_an_unusable_consent_cookie_in_the_answer_never_brings_back_in() {
    for (value, max_age) in [
        ("general=foo", CONSENT_COOKIE_MAX_AGE),
        ("foo=out", CONSENT_COOKIE_MAX_AGE),
        ("", 0),
        ("general=in", 0),
    ] {
        let (mut h, c) = opted_in_then_out();
        h.answer(Answer::EdgeWithConsent(value, max_age));
        assert_eq!(h.state(), (Decision::Out, true), "{value:?} {max_age}");
        assert_eq!(
            h.reason_of(c),
            Some(RejectReason::UserDeclined),
            "{value:?}"
        );
        assert!(h.released.is_empty(), "{value:?}: nothing released");
        assert!(
            !h.jar.contains_key(h.names.identity()) || h.other_cookie_writes.len() == 2,
            "no identity cookie written by the opt-out's answer"
        );
        assert_eq!(
            h.other_cookie_writes
                .iter()
                .filter(|(_, view)| view.state != Decision::In)
                .count(),
            0
        );
        assert_eq!(
            h.consent_cookie(),
            Some("general=out"),
            "the call's own decision"
        );
        assert!(h.refused.contains(&h.names.consent().to_owned()));
        // The next opt-out is sent and applied, not skipped.
        h.set_consent("out");
        assert_eq!(h.sent.len(), 3, "{value:?}: a repeat is not skipped");
    }
}

#[test]
fn h2_a_cookie_changed_by_another_response_makes_a_repeated_opt_out_go_out() {
    let mut h = Harness::new("in");
    h.set_consent("out");
    h.answer(Answer::Edge);
    assert_eq!(h.state(), (Decision::Out, true));
    // The late answer to an event released before the opt-out says "in".
    let cookie = Cookie::new(
        h.names.consent(),
        "general=in",
        Some(CONSENT_COOKIE_MAX_AGE),
    );
    h.interact_response(Outcome::Success, vec![cookie.clone()]);
    assert_eq!(h.state(), (Decision::In, true));
    h.set_consent("out");
    assert_eq!(h.sent.len(), 2, "the repeated opt-out is sent");
    let c = h.submit();
    h.answer(Answer::Edge);
    assert_eq!(h.state(), (Decision::Out, true));
    assert_eq!(h.reason_of(c), Some(RejectReason::UserDeclined));

    // The same across a restart: the skip is bound to the cookie the call left. (The identity
    // cookie comes with the "in", so the stored "in" is kept at the restart.)
    let mut cookies = vec![cookie];
    cookies.extend(h.identity_cookies());
    h.interact_response(Outcome::Success, cookies);
    h.restart();
    assert_eq!(h.state(), (Decision::In, true));
    h.set_consent("out");
    assert_eq!(h.sent.len(), 3, "sent after a restart too");
    assert!(!h.done.iter().any(|(_, o)| *o == SetConsentOutcome::Skipped));
}

#[test]
fn h3_a_restart_during_a_set_consent_takes_it_up_again() {
    let mut h = Harness::new("in");
    h.set_consent("out");
    let c = h.submit();
    let requeued = h.restart();
    assert_eq!(requeued, vec![c]);
    assert_eq!(h.state(), (Decision::Pending, false), "suspended again");
    assert_eq!(h.sent.len(), 2, "the opt-out is sent again");
    assert_eq!(h.sent[1].1, vec![adobe1("out")]);
    // The durable queue submits the command again: it waits, and is declined by the opt-out.
    h.submit_id(c, Requirement::general(), Mode::Queue);
    assert!(h.released.is_empty());
    h.answer(Answer::Edge);
    assert_eq!(h.state(), (Decision::Out, true));
    assert_eq!(h.reason_of(c), Some(RejectReason::UserDeclined));
    assert_eq!(
        h.done.last(),
        Some(&(SetConsentId(1), SetConsentOutcome::Sent))
    );
    assert!(h.snapshot.as_ref().unwrap().pending.is_empty());
}

#[test]
fn h3_every_call_of_an_unsettled_chain_is_sent_again_in_order() {
    let share_n = adobe2_value(json!({"collect": {"val": "y"}, "share": {"val": "n"}}));
    for (first_answer, resent) in [(Answer::NoCookie, 2), (Answer::Edge, 1)] {
        // `resent`: how many of the two calls go out again after the restart. The person was
        // in before (with the identity cookie, which the skip needs).
        let mut h = Harness::with_cookies("pending", Some("general=in"), true);
        h.set_consent_json(json!({"consent": [share_n.clone()]}));
        h.set_consent("in");
        // The first call is answered, the second not yet: then the process dies.
        h.answer(first_answer);
        h.restart();
        assert_eq!(h.state(), (Decision::Pending, false));
        // One call in flight at a time: the first one not known to the server goes out.
        assert_eq!(h.sent.len(), 3, "{first_answer:?}");
        if resent == 1 {
            // The server provably has the first call (its cookie is still there): skipped.
            assert!(
                h.done
                    .contains(&(SetConsentId(1), SetConsentOutcome::Skipped))
            );
        } else {
            assert_eq!(h.sent[2].1, vec![share_n.clone()], "oldest first");
            h.answer(Answer::Edge);
        }
        assert_eq!(h.sent.last().unwrap().1, vec![adobe1("in")]);
        h.answer(Answer::Edge);
        assert_eq!(h.state(), (Decision::In, true));
        // The Adobe 1.0 call came last and speaks for every purpose.
        assert_eq!(h.engine.decision(Purpose::SHARE), Decision::In);
    }
}

// ----- Medium -----

#[test]
fn m1_an_expiry_during_a_failed_set_consent_is_not_undone() {
    // A call that asks "in" (another payload than the first, so it is not skipped) and one
    // that asks "out".
    for (call, expected) in [
        (adobe2("y"), Decision::Pending),
        (adobe1("out"), Decision::Out),
    ] {
        let mut h = Harness::new("pending");
        h.set_consent("in");
        h.answer(Answer::Edge);
        let expiry = h.engine.poll_timeout().unwrap();
        h.now = Timestamp::from_millis(expiry.as_millis() - 1);
        h.set_consent_json(json!({"consent": [call.clone()]}));
        let c = h.submit();
        h.now = expiry;
        h.handle(Input::Tick);
        // The expired "in" is gone; an opt-out in flight has already written its stricter wish.
        let provisional = (expected == Decision::Out).then_some("general=out");
        assert_eq!(h.consent_cookie(), provisional);
        h.answer(Answer::Fail);
        assert_eq!(h.state().0, expected, "{call}");
        assert!(
            h.released.is_empty(),
            "{call}: the expired in never comes back"
        );
        if expected == Decision::Pending {
            assert_eq!(h.state(), (Decision::Pending, false), "the default");
            assert_eq!(h.engine.queued().collect::<Vec<_>>(), vec![c]);
        } else {
            assert_eq!(h.reason_of(c), Some(RejectReason::UserDeclined));
        }
    }
}

#[test]
fn m2_expiry_applies_on_every_input_not_only_tick() {
    let mut h = Harness::new("pending");
    h.set_consent("in");
    h.answer(Answer::Edge);
    h.now = h.now.plus_secs(CONSENT_COOKIE_MAX_AGE + 86_400);
    let c = h.submit();
    assert!(h.released.is_empty(), "no release under an expired cookie");
    assert_eq!(h.engine.queued().collect::<Vec<_>>(), vec![c]);
    assert_eq!(h.state(), (Decision::Pending, false));
    assert_eq!(h.records.last().unwrap().source, RecordSource::Expiry);
    // And the repeat of the expired call is sent, not skipped.
    h.set_consent("in");
    assert_eq!(h.sent.len(), 2);
    // A check between inputs sees what the last input left; the next one expires first.
    let mut h = Harness::new("pending");
    h.set_consent("in");
    h.answer(Answer::Edge);
    h.now = h.now.plus_secs(CONSENT_COOKIE_MAX_AGE);
    h.set_consent("in");
    assert_eq!(h.sent.len(), 2, "not skipped on an expired cookie");
}

#[test]
fn m3_marketing_any_governs_every_channel_for_every_value() {
    let email = Requirement::general().and(Purpose::MARKETING_EMAIL);
    for any in ["dn", "p", "u", "dy", "LI"] {
        let mut h = Harness::new("pending");
        h.set_consent_json(json!({"consent": [adobe2_value(
            json!({"collect": {"val": "y"}, "marketing": {"any": {"val": any}}}))]}));
        h.answer(Answer::Edge);
        let c = h.submit_with(email, Mode::Queue);
        assert!(
            h.released.is_empty(),
            "any={any}: email follows any, not general"
        );
        assert_eq!(
            h.engine.decision(Purpose::MARKETING_EMAIL),
            Decision::Pending
        );
        assert_eq!(h.engine.queued().collect::<Vec<_>>(), vec![c]);
    }
    // `any: y` makes a pending channel `y`; an explicit `n` still wins.
    let mut h = Harness::new("pending");
    h.set_consent_json(
        json!({"consent": [adobe2_value(json!({"collect": {"val": "y"},
        "marketing": {"any": {"val": "y"}, "email": {"val": "p"}, "sms": {"val": "n"}}}))]}),
    );
    h.answer(Answer::Edge);
    assert_eq!(h.engine.decision(Purpose::MARKETING_EMAIL), Decision::In);
    assert_eq!(h.engine.decision(Purpose::MARKETING_SMS), Decision::Out);
}

#[test]
fn m4_several_objects_the_strictest_wins_for_every_purpose_in_any_order() {
    let share_n = adobe2_value(json!({"collect": {"val": "y"}, "share": {"val": "n"}}));
    let share_y = adobe2_value(json!({"collect": {"val": "y"}, "share": {"val": "y"}}));
    for objects in [
        vec![share_n.clone(), adobe1("in")],
        vec![adobe1("in"), share_n.clone()],
        vec![share_n.clone(), share_y.clone()],
        vec![share_y.clone(), share_n.clone()],
    ] {
        let mut h = Harness::new("pending");
        h.set_consent_json(json!({"consent": objects.clone()}));
        h.answer(Answer::NoCookie);
        let s = h.submit_with(Requirement::general().and(Purpose::SHARE), Mode::Queue);
        assert_eq!(h.state(), (Decision::In, true), "{objects:?}");
        assert_eq!(
            h.reason_of(s),
            Some(RejectReason::UserDeclined),
            "{objects:?}"
        );
    }
}

#[test]
fn m5_a_lost_state_file_never_releases_a_denied_purpose() {
    let share = Requirement::general().and(Purpose::SHARE);
    let mut h = Harness::new("pending");
    h.set_consent_json(
        json!({"consent": [adobe2_value(json!({"collect": {"val": "y"}, "share": {"val": "n"}}))]}),
    );
    h.answer(Answer::Edge);
    // The state file is lost (or corrupt and dropped).
    h.snapshot = None;
    h.restart();
    let plain = h.submit();
    let s = h.submit_with(share, Mode::Queue);
    assert_eq!(
        h.released,
        vec![plain],
        "general still comes from the cookie"
    );
    assert_eq!(
        h.engine.queued().collect::<Vec<_>>(),
        vec![s],
        "share waits"
    );
    assert_eq!(h.engine.decision(Purpose::SHARE), Decision::Pending);
}

#[test]
fn m5_a_crash_between_the_consent_cookie_and_the_state_file_releases_nothing_denied() {
    let share = Requirement::general().and(Purpose::SHARE);
    let mut h = Harness::new("pending");
    h.set_consent_json(
        json!({"consent": [adobe2_value(json!({"collect": {"val": "y"}, "share": {"val": "n"}}))]}),
    );
    // The answer's consent cookie reached the jar, the process died before PersistState.
    let before = h.snapshot.clone();
    h.answer(Answer::Edge);
    h.snapshot = before;
    h.restart();
    let s = h.submit_with(share, Mode::Queue);
    assert!(h.released.is_empty());
    h.answer(Answer::Edge);
    assert_eq!(h.reason_of(s), Some(RejectReason::UserDeclined));
}

#[test]
fn m5_custom_purposes_can_be_decided() {
    let config = Harness::config("pending").purpose("analytics").unwrap();
    let mut h = Harness::unstarted(config);
    h.start();
    let analytics = h.engine.purpose("analytics").unwrap();
    h.set_consent("in");
    h.answer(Answer::Edge);
    h.handle(Input::SetPurposes(vec![(analytics, Decision::Out)]));
    let a = h.submit_with(Requirement::general().and(analytics), Mode::Queue);
    assert_eq!(h.reason_of(a), Some(RejectReason::UserDeclined));
    let record = h.records.last().unwrap();
    assert_eq!(record.source, RecordSource::Local);
    assert_eq!(
        record.purposes,
        vec![("analytics".to_owned(), Decision::Out)]
    );
    h.restart();
    assert_eq!(h.engine.decision(analytics), Decision::Out, "persisted");
    let err = h
        .engine
        .handle(
            h.now,
            Input::SetPurposes(vec![(Purpose::GENERAL, Decision::In)]),
        )
        .unwrap_err();
    assert_eq!(err, HandleError::GeneralIsNotANamedPurpose);
    assert_eq!(
        h.engine.poll_action(),
        None,
        "a refused input queues nothing"
    );
}

#[test]
fn m6_a_failed_chain_never_applies_a_replaced_choice() {
    let mut h = Harness::new("out");
    h.set_consent("in");
    h.set_consent("out");
    let c = h.submit();
    h.answer(Answer::NoCookie);
    h.answer(Answer::Fail);
    assert_eq!(h.state().0, Decision::Out);
    assert_eq!(h.reason_of(c), Some(RejectReason::UserDeclined));
    assert_ne!(h.consent_cookie(), Some("general=in"));
    // The same with the server's cookie from the first call.
    let mut h = Harness::new("pending");
    h.set_consent("in");
    h.set_consent("out");
    let c = h.submit();
    h.answer(Answer::Edge);
    h.answer(Answer::Fail);
    assert_eq!(h.state(), (Decision::Out, true));
    assert_eq!(h.reason_of(c), Some(RejectReason::UserDeclined));
    assert_eq!(h.consent_cookie(), Some("general=out"), "a restart agrees");
}

#[test]
fn m7_every_change_is_recorded_with_what_applied_beside_what_was_asked() {
    // A failure whose cookie decides: pending -> in is a record.
    let mut h = Harness::new("pending");
    let before = h.records.len();
    h.set_consent("in");
    h.answer(Answer::FailWithCookie("in"));
    assert_eq!(h.state(), (Decision::In, true));
    let added = &h.records[before..];
    assert_eq!(added.len(), 1, "{added:?}");
    assert_eq!(added[0].general, Decision::In);
    assert_eq!(added[0].source, RecordSource::Server);
    assert_eq!(added[0].requested, Some(Decision::In));

    // The server's cookie says out for a call that asked in: the record says both.
    let mut h = Harness::new("pending");
    h.set_consent("in");
    h.answer(Answer::EdgeWithConsent(
        "general=out",
        CONSENT_COOKIE_MAX_AGE,
    ));
    let record = h.records.last().unwrap();
    assert_eq!(h.state(), (Decision::Out, true));
    assert_eq!(
        (record.requested, record.general),
        (Some(Decision::In), Decision::Out)
    );
    assert_eq!(record.standards, vec!["Adobe.1.0".to_owned()]);
}

// ----- Low -----

#[test]
fn l1_a_stored_unusable_general_clears_the_fingerprint() {
    let mut h = Harness::new("pending");
    h.set_consent("in");
    h.answer(Answer::Edge);
    h.jar.get_mut(h.names.consent()).unwrap().0 = "general=foo".to_owned();
    h.restart();
    assert_eq!(h.snapshot.as_ref().unwrap().fingerprint, None);
    h.set_consent("in");
    assert_eq!(h.sent.len(), 2, "sent, not skipped");
    h.answer(Answer::Edge);
    assert_eq!(h.state(), (Decision::In, true));
}

#[test]
fn l2_commands_that_need_a_purpose_the_chain_may_change_wait() {
    let share = Requirement::general().and(Purpose::SHARE);
    let mut h = Harness::new("pending");
    h.set_consent_json(
        json!({"consent": [adobe2_value(json!({"collect": {"val": "y"}, "share": {"val": "n"}}))]}),
    );
    h.answer(Answer::Edge);
    h.set_consent_json(
        json!({"consent": [adobe2_value(json!({"collect": {"val": "y"}, "share": {"val": "y"}}))]}),
    );
    let s = h.submit_with(share, Mode::Queue);
    assert!(h.rejected.is_empty(), "waits for the chain");
    h.answer(Answer::Edge);
    assert_eq!(h.released, vec![s]);
    // A purpose the chain does not touch is still declined at once.
    let mut h = Harness::new("pending");
    h.set_consent_json(
        json!({"consent": [adobe2_value(json!({"collect": {"val": "y"}, "share": {"val": "n"}}))]}),
    );
    h.answer(Answer::Edge);
    h.set_consent_json(json!({"consent": [adobe2("y")]}));
    let s = h.submit_with(share, Mode::Queue);
    assert_eq!(h.reason_of(s), Some(RejectReason::UserDeclined));
}

#[test]
fn l3_id_specific_is_validated_and_an_id_level_no_is_honoured() {
    let email = Requirement::general().and(Purpose::MARKETING_EMAIL);
    let mut h = Harness::new("pending");
    h.set_consent_json(
        json!({"consent": [adobe2_value(json!({"collect": {"val": "y"},
        "idSpecific": {"email": {"a@example.com": {"marketing": {"email": {"val": "n"}}}}}}))]}),
    );
    h.answer(Answer::Edge);
    let c = h.submit_with(email, Mode::Queue);
    assert_eq!(h.reason_of(c), Some(RejectReason::UserDeclined));
    for bad in [
        json!({"idSpecific": {"email": []}}),
        json!({"idSpecific": {"email": {"a@example.com": {"colect": {"val": "n"}}}}}),
        json!({"idSpecific": {"email": {"a@example.com": {"collect": {"val": "x"}}}}}),
    ] {
        let err = SetConsentOptions::from_json(&json!({"consent": [adobe2_value(bad.clone())]}));
        assert!(err.is_err(), "{bad}");
    }
}

#[test]
fn l4_metadata_time_is_an_rfc_3339_date_time() {
    let check = |time: Value| {
        SetConsentOptions::from_json(&json!({"consent": [adobe2_value(
            json!({"collect": {"val": "y"}, "metadata": {"time": time}}))]}))
    };
    assert!(check(json!("2019-01-01T15:52:25+00:00")).is_ok());
    let err = check(json!("not a date")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "'consent[0].value.metadata.time': Expected an RFC 3339 date-time string, but got \"not a date\"."
    );
}

#[test]
fn l5_marketing_preferred_is_an_exact_value() {
    let check = |preferred: &str| {
        SetConsentOptions::from_json(&json!({"consent": [adobe2_value(
            json!({"marketing": {"preferred": preferred}}))]}))
    };
    assert!(check("email").is_ok());
    assert!(check("email\",\"push").is_err());
    assert!(check("mail").is_err());
}

#[test]
fn l6_a_missing_gdpr_applies_is_read_as_true() {
    let mut h = Harness::new("pending");
    h.set_consent_json(
        json!({"consent": [{"standard": "IAB TCF", "version": "2.0", "value": "DENY"}]}),
    );
    h.answer(Answer::NoCookie);
    assert_eq!(
        h.state(),
        (Decision::Out, true),
        "the string must grant consent"
    );
}

#[test]
fn l7_a_duplicated_key_in_the_consent_cookie_takes_the_stricter_value() {
    let h = Harness::with_cookies("in", Some("general=out; general=in"), true);
    assert_eq!(h.state(), (Decision::Out, true));
    let h = Harness::with_cookies("pending", Some("general=in;general=foo"), true);
    assert_eq!(h.state(), (Decision::Pending, false), "never in");
}

#[test]
fn l9_an_identity_cookie_offered_during_a_chain_is_kept_once_it_settles_in() {
    let mut h = Harness::new("pending");
    h.set_consent("in");
    h.set_consent_json(json!({"consent": [adobe2("y")]}));
    // The first call's answer carries the identity cookie while the second is still to come.
    h.answer(Answer::Edge);
    assert!(
        !h.jar.contains_key(h.names.identity()),
        "not while suspended"
    );
    h.answer(Answer::NoCookie);
    assert!(h.jar.contains_key(h.names.identity()), "written once in");
    for (name, view) in &h.other_cookie_writes {
        assert_eq!(view.state, Decision::In, "{name} written while {view:?}");
    }
    // Settled out: refused.
    let mut h = Harness::new("pending");
    h.set_consent("in");
    h.set_consent("out");
    h.answer(Answer::Edge);
    h.answer(Answer::Edge);
    assert!(!h.jar.contains_key(h.names.identity()));
    assert!(h.refused.contains(&h.names.identity().to_owned()));
}

// ----- Found by the model-based property test (property.rs) -----

#[test]
fn model_d2_a_failed_adobe_1_out_restricts_purposes_with_a_decision_of_their_own() {
    let share = Requirement::general().and(Purpose::SHARE);
    let mut h = Harness::new("in");
    h.set_consent_json(
        json!({"consent": [adobe2_value(json!({"collect": {"val": "y"}, "share": {"val": "y"}}))]}),
    );
    h.answer(Answer::Edge);
    // The person then says out for everything; the call fails, so it is applied unconfirmed.
    h.set_consent("out");
    h.answer(Answer::Fail);
    assert_eq!(h.engine.decision(Purpose::SHARE), Decision::Out);
    // A later call about collection only does not bring back the replaced share "y".
    h.set_consent_json(json!({"consent": [adobe2("y")]}));
    h.answer(Answer::Edge);
    let s = h.submit_with(share, Mode::Queue);
    assert_eq!(h.reason_of(s), Some(RejectReason::UserDeclined));
}

#[test]
fn model_d3_an_expiry_during_a_chain_clears_the_purposes_a_restart_would_restore() {
    let config = Harness::config("pending").purpose("analytics").unwrap();
    for restart in [false, true] {
        let mut h = Harness::unstarted(config.clone());
        h.start();
        let analytics = h.engine.purpose("analytics").unwrap();
        h.set_consent("in");
        h.answer(Answer::Edge);
        h.handle(Input::SetPurposes(vec![(analytics, Decision::Out)]));
        // Two calls; the consent cookie (and with it the analytics choice) expires while the
        // first is in flight, whose answer then writes a fresh cookie.
        let expiry = h.engine.poll_timeout().unwrap();
        h.now = Timestamp::from_millis(expiry.as_millis() - 1);
        h.set_consent_json(json!({"consent": [adobe2("y")]}));
        h.set_consent_json(
            json!({"consent": [adobe2_value(json!({"collect": {"val": "y"}, "share": {"val": "y"}}))]}),
        );
        h.now = expiry;
        h.handle(Input::Tick);
        h.answer(Answer::Edge);
        if restart {
            // The first call is provably on the server (its cookie is here): skipped; the
            // second goes out again.
            h.restart();
        }
        h.answer(Answer::Edge);
        assert_eq!(h.state(), (Decision::In, true), "restart: {restart}");
        assert_eq!(
            h.engine.decision(analytics),
            Decision::In,
            "restart: {restart}: the expired choice is gone either way"
        );
    }
}

// ----- Found by a second reading of the change -----

#[test]
fn second_a_purpose_the_app_decides_during_a_chain_is_not_overridden_by_older_calls() {
    let share = Requirement::general().and(Purpose::SHARE);
    let share_y = adobe2_value(json!({"collect": {"val": "y"}, "share": {"val": "y"}}));
    for restart in [false, true] {
        let mut h = Harness::new("in");
        h.set_consent_json(json!({"consent": [share_y.clone()]}));
        h.set_consent("in");
        h.handle(Input::SetPurposes(vec![(Purpose::SHARE, Decision::Out)]));
        // Declined at once: the person's newest word on share is out.
        let s = h.submit_with(share, Mode::Queue);
        assert_eq!(h.reason_of(s), Some(RejectReason::UserDeclined));
        if restart {
            h.restart();
        }
        // Both older calls settle: neither brings share back.
        h.answer(Answer::Edge);
        h.answer(Answer::Edge);
        assert_eq!(h.state(), (Decision::In, true), "restart: {restart}");
        assert_eq!(
            h.engine.decision(Purpose::SHARE),
            Decision::Out,
            "restart: {restart}"
        );
        let after = h.submit_with(share, Mode::Queue);
        assert_eq!(
            h.reason_of(after),
            Some(RejectReason::UserDeclined),
            "restart: {restart}"
        );
    }
}

#[test]
fn second_a_state_file_lost_while_an_opt_out_is_in_flight_keeps_the_opt_out() {
    let mut h = Harness::new("in");
    h.set_consent("in");
    h.answer(Answer::Edge);
    h.set_consent("out");
    // The opt-out's wish is in the consent cookie before the request goes out.
    assert_eq!(h.consent_cookie(), Some("general=out"));
    let c = h.submit();
    h.snapshot = None;
    h.restart();
    h.submit_id(c, Requirement::general(), Mode::Queue);
    assert!(
        h.released.is_empty(),
        "nothing released under the replaced in"
    );
    assert_eq!(h.state(), (Decision::Out, true));
    assert_eq!(h.reason_of(c), Some(RejectReason::UserDeclined));
}

#[test]
fn second_a_chosen_pending_survives_a_restart_without_the_identity_cookie() {
    let mut h = Harness::new("in");
    h.set_consent_json(json!({"consent": [adobe2("p")]}));
    h.answer(Answer::EdgeWithConsent(
        "general=pending",
        CONSENT_COOKIE_MAX_AGE,
    ));
    assert!(
        !h.jar.contains_key(h.names.identity()),
        "never written while pending"
    );
    let c = h.submit();
    h.restart();
    h.submit_id(c, Requirement::general(), Mode::Queue);
    assert_eq!(h.state(), (Decision::Pending, false));
    assert!(h.released.is_empty(), "the default in does not come back");
}

#[test]
fn second_after_a_failed_call_the_next_call_is_sent_not_skipped() {
    let mut h = Harness::new("pending");
    h.set_consent("out");
    h.answer(Answer::Edge);
    // "in" fails, but the server may have applied it: a repeated "out" must reach it.
    h.set_consent("in");
    h.answer(Answer::Fail);
    h.set_consent("out");
    assert_eq!(h.sent.len(), 3, "sent, not skipped");
    assert!(!h.done.iter().any(|(_, o)| *o == SetConsentOutcome::Skipped));
}

#[test]
fn second_a_purpose_decision_is_persisted_before_it_is_recorded_and_records_what_applies() {
    let mut h = Harness::new("in");
    let trace_before = h.trace.len();
    h.handle(Input::SetPurposes(vec![(Purpose::SHARE, Decision::Out)]));
    let order: Vec<&str> = h.trace[trace_before..]
        .iter()
        .filter_map(|a| match a {
            Action::PersistState(_) => Some("persist"),
            Action::Record(_) => Some("record"),
            _ => None,
        })
        .collect();
    assert_eq!(order, vec!["persist", "record"]);
    // During a chain the record says what the person's choices leave, not the suspension.
    h.set_consent("out");
    h.handle(Input::SetPurposes(vec![(
        Purpose::PERSONALIZE_CONTENT,
        Decision::Out,
    )]));
    let record = h.records.last().unwrap();
    assert_eq!(
        (record.source, record.general),
        (RecordSource::Local, Decision::In)
    );
}

#[test]
fn second_an_expiry_during_a_failed_chain_is_recorded_as_the_expiry() {
    let mut h = Harness::new("pending");
    h.set_consent("in");
    h.answer(Answer::Edge);
    let expiry = h.engine.poll_timeout().unwrap();
    h.now = Timestamp::from_millis(expiry.as_millis() - 1);
    h.set_consent_json(json!({"consent": [adobe2("y")]}));
    h.now = expiry;
    h.handle(Input::Tick);
    h.answer(Answer::Fail);
    assert_eq!(h.state(), (Decision::Pending, false));
    let record = h.records.last().unwrap();
    assert_eq!(
        (record.source, record.general),
        (RecordSource::Expiry, Decision::Pending)
    );
}

#[test]
fn model_d4_a_cookie_found_expired_at_start_is_removed_and_does_not_drop_later_purposes() {
    let mut h = Harness::unstarted(Harness::config("in"));
    let past = Timestamp::from_millis(h.now.as_millis() - 1);
    h.jar.insert(
        h.names.consent().to_owned(),
        ("general=in".to_owned(), Some(past)),
    );
    h.start();
    assert_eq!(h.consent_cookie(), None, "the expired cookie is removed");
    h.handle(Input::SetPurposes(vec![(Purpose::SHARE, Decision::Out)]));
    h.restart();
    let s = h.submit_with(Requirement::general().and(Purpose::SHARE), Mode::Queue);
    assert_eq!(h.reason_of(s), Some(RejectReason::UserDeclined));
}

#[test]
fn model_d5_an_earlier_calls_answer_does_not_overwrite_a_later_calls_opt_out_wish() {
    let mut h = Harness::with_cookies("in", Some("general=in"), true);
    h.set_consent_json(json!({"consent": [adobe2("y")]}));
    h.set_consent("out");
    assert_eq!(h.consent_cookie(), Some("general=out"));
    // The first call's answer writes the server's "in"; the opt-out still to come keeps its wish.
    h.answer(Answer::Edge);
    assert_eq!(h.consent_cookie(), Some("general=out"));
    let c = h.submit();
    h.snapshot = None;
    h.restart();
    h.submit_id(c, Requirement::general(), Mode::Queue);
    assert!(h.released.is_empty());
    assert_eq!(h.reason_of(c), Some(RejectReason::UserDeclined));
}
