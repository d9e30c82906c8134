//! The reference's acceptance scenarios OI-01…OI-19, one test (or a few) per scenario.

use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use consent_optin::{
    ApplyTcfError, COOKIE_NAME, Category, CategoryError, CookieExpiry, MemoryStorage, OptIn,
    OptInConfig, PermissionsInput, Status, StorageExpiry, Warning, iab_consent_hash,
};

use crate::support::{
    Counter, Recorder, Tcf, applies, approved, block_on, cookie_json, optin, poll_once, stored,
};

const ALL: [&str; 8] = [
    "aam", "adcloud", "aa", "campaign", "ecid", "livefyre", "target", "mediaaa",
];

fn map(entries: &[(&str, bool)]) -> PermissionsInput {
    PermissionsInput::Map(entries.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect())
}

#[test]
fn oi_01_opt_in_does_not_apply() {
    let optin = optin(OptInConfig::builder().does_opt_in_apply(false));
    assert_eq!(approved(&optin.permissions()), ALL);
    assert!(optin.is_approved(&[Category::Analytics]));
    assert!(!optin.does_opt_in_apply());
    // The reference's status stays "pending" although everything is approved.
    assert_eq!(optin.status(), Status::Pending);

    let called = Counter::default();
    let hit = called.clone();
    optin.fetch_permissions_with(move |_| hit.hit());
    assert_eq!(
        called.get(),
        1,
        "fetch_permissions calls back synchronously"
    );
    assert!(poll_once(&mut optin.fetch_permissions()).is_ready());
    // Solutions are not gated.
    assert_eq!(
        poll_once(&mut optin.wait_for(&Category::Ecid).unwrap()),
        Poll::Ready(true)
    );
}

#[test]
fn oi_01_02_does_opt_in_apply_closure_runs_once() {
    for applies in [false, true] {
        let calls = Counter::default();
        let counted = calls.clone();
        let optin = optin(OptInConfig::builder().does_opt_in_apply_with(move || {
            counted.hit();
            applies
        }));
        assert_eq!(calls.get(), 1, "evaluated at construction");
        assert_eq!(optin.does_opt_in_apply(), applies);
        assert_eq!(optin.is_approved(&[Category::Analytics]), !applies);
        optin.approve_all();
        assert!(poll_once(&mut optin.fetch_permissions()).is_ready());
        assert_eq!(calls.get(), 1, "and never again");
    }
}

#[test]
fn oi_02_opt_in_applies_and_nothing_is_given() {
    let optin = optin(applies());
    assert!(approved(&optin.permissions()).is_empty());
    assert!(optin.is_pending());

    let calls = Arc::new(Mutex::new(Vec::new()));
    let sink = calls.clone();
    optin.fetch_permissions_with(move |p| sink.lock().unwrap().push(approved(p)));
    let mut future = optin.fetch_permissions();
    assert!(calls.lock().unwrap().is_empty());
    assert!(poll_once(&mut future).is_pending());

    optin.approve(&[Category::Analytics], false).unwrap();
    optin.approve(&[Category::Target], false).unwrap();
    assert_eq!(
        *calls.lock().unwrap(),
        [vec!["aa".to_owned()]],
        "called exactly once"
    );
    assert_eq!(
        approved(&block_on(future)),
        ["aa"],
        "resolves with the first completion"
    );
}

#[test]
fn oi_03_pre_opt_in_approvals() {
    for pre in [
        map(&[("aa", true)]),
        PermissionsInput::Json(r#"{"aa":true}"#.to_owned()),
    ] {
        let optin = optin(applies().pre_opt_in_approvals(pre));
        assert_eq!(approved(&optin.permissions()), ["aa"]);
        assert!(optin.is_pre_approved(&[Category::Analytics]));
        assert!(optin.is_pre_approved(&[]));
        assert!(!optin.is_pre_approved(&[Category::Target]));
        assert_eq!(optin.status(), Status::Pending);
        let called = Counter::default();
        let hit = called.clone();
        optin.fetch_permissions_with(move |_| hit.hit());
        assert_eq!(
            called.get(),
            1,
            "pre-approvals make fetch_permissions answer at once"
        );
    }
    assert!(!optin(applies()).is_pre_approved(&[]));
}

#[test]
fn oi_04_previous_permissions_override_pre_approvals() {
    let optin = optin(
        applies()
            .pre_opt_in_approvals(map(&[("aa", true)]))
            .previous_permissions(map(&[("aa", false), ("aam", true)])),
    );
    assert_eq!(approved(&optin.permissions()), ["aam"]);
    assert_eq!(optin.status(), Status::Complete);
    assert!(optin.is_pre_approved(&[Category::Analytics]));
    assert!(optin.warnings().is_empty());
}

#[test]
fn oi_05_previous_permissions_as_json_or_closure() {
    let evaluations = Counter::default();
    let counted = evaluations.clone();
    let builders = [
        applies().previous_permissions(PermissionsInput::Json(r#"{"target":true}"#.into())),
        applies().previous_permissions_with(move || {
            counted.hit();
            PermissionsInput::from_categories([(Category::Target, true)])
        }),
        applies().previous_permissions_with(|| PermissionsInput::Json(r#"{"target":true}"#.into())),
    ];
    for builder in builders {
        let optin = optin(builder);
        assert_eq!(approved(&optin.permissions()), ["target"]);
        assert_eq!(optin.status(), Status::Complete);
    }
    assert_eq!(evaluations.get(), 1, "the closure runs once");
}

fn check_invalid_previous(input: PermissionsInput, reason: &str) {
    let optin = optin(applies().previous_permissions(input.clone()));
    assert_eq!(optin.status(), Status::Pending, "{input:?}");
    assert!(
        approved(&optin.permissions()).is_empty(),
        "{input:?} is not merged"
    );
    let warnings = optin.warnings();
    assert_eq!(warnings.len(), 1, "{input:?}");
    let text = warnings[0].to_string();
    assert!(
        text.starts_with("[ADOBE OPT-IN] Invalid `previousPermissions`!"),
        "{text}"
    );
    assert!(text.contains(reason), "{text} should say {reason}");
    assert!(matches!(
        warnings[0],
        Warning::InvalidPreviousPermissions { .. }
    ));
}

#[test]
fn oi_06_invalid_previous_permissions_warn_and_stay_pending() {
    check_invalid_previous(map(&[("foo", true)]), "\"foo\" is not a category");
    check_invalid_previous(
        map(&[("aa", true), ("foo", true)]),
        "\"foo\" is not a category",
    );
    check_invalid_previous(map(&[]), "no category");
    check_invalid_previous(PermissionsInput::Json("{}".into()), "no category");
    check_invalid_previous(
        PermissionsInput::Json("not json".into()),
        "not a JSON object",
    );
    check_invalid_previous(PermissionsInput::Json("[1]".into()), "not a JSON object");
    check_invalid_previous(
        PermissionsInput::Json(r#"{"aa":"yes"}"#.into()),
        "not a boolean",
    );
    check_invalid_previous(
        PermissionsInput::Json(r#"{"ANALYTICS":true}"#.into()),
        "\"ANALYTICS\"",
    );

    let optin = optin(applies().pre_opt_in_approvals(map(&[("foo", true)])));
    assert!(matches!(
        optin.warnings()[..],
        [Warning::InvalidPreOptInApprovals { .. }]
    ));
    assert!(
        optin.warnings()[0]
            .to_string()
            .starts_with("[ADOBE OPT-IN] Invalid `preOptInApprovals`!")
    );
    assert!(!optin.is_pre_approved(&[]));
}

#[test]
fn oi_07_approve_completes_with_one_event_and_chains() {
    let optin = optin(applies());
    let recorder = Recorder::default();
    let _subscription = recorder.subscribe(&optin);
    let returned = optin.approve(&[Category::Analytics], false).unwrap();
    assert!(std::ptr::eq(returned, &optin));
    assert_eq!(optin.status(), Status::Complete);
    assert_eq!(recorder.count(), 1);
    assert_eq!(recorder.events()[0], optin.permissions());
    assert!(optin.is_approved(&[Category::Analytics]));
}

fn check_invalid_categories(optin: &OptIn, categories: &[Category], expected: CategoryError) {
    let before = (optin.status(), optin.permissions());
    assert_eq!(
        optin.approve(categories, false).err(),
        Some(expected.clone())
    );
    assert_eq!(optin.deny(categories, true).err(), Some(expected.clone()));
    assert_eq!(
        (optin.status(), optin.permissions()),
        before,
        "{categories:?}"
    );
    assert!(
        expected
            .to_string()
            .starts_with("[OptIn] Invalid category(-ies). Please use the `OptIn.Categories` enum.")
    );
}

#[test]
fn oi_08_invalid_categories_are_errors_and_change_nothing() {
    let optin = optin(applies().custom_category("chat"));
    let recorder = Recorder::default();
    let _subscription = recorder.subscribe(&optin);
    check_invalid_categories(&optin, &[], CategoryError::Empty);
    check_invalid_categories(
        &optin,
        &[Category::custom("videoaa")],
        CategoryError::Unknown("videoaa".into()),
    );
    check_invalid_categories(
        &optin,
        &[Category::Analytics, Category::custom("ANALYTICS")],
        CategoryError::Unknown("ANALYTICS".into()),
    );
    assert_eq!(recorder.count(), 0);
    for value in ["ANALYTICS", "videoaa", "iabConsentHash", ""] {
        assert_eq!(
            optin.category(value),
            Err(CategoryError::Unknown(value.into()))
        );
    }
    assert_eq!(optin.category("aa"), Ok(Category::Analytics));
    assert_eq!(optin.category("chat"), Ok(Category::custom("chat")));
    assert!(optin.wait_for(&Category::custom("nope")).is_err());
}

#[test]
fn oi_09_workflow_stages_until_complete() {
    let jar = Arc::new(MemoryStorage::new());
    let optin = optin(stored(&jar));
    let recorder = Recorder::default();
    let _subscription = recorder.subscribe(&optin);

    optin.approve(&[Category::Analytics], true).unwrap();
    assert_eq!(optin.status(), Status::Changed);
    assert_eq!(recorder.count(), 0);
    assert!(!optin.is_approved(&[Category::Analytics]));
    optin.deny(&[Category::Target], true).unwrap();
    optin.complete();
    assert_eq!(optin.status(), Status::Complete);
    assert_eq!(recorder.count(), 1);
    assert_eq!(approved(&optin.permissions()), ["aa"]);
    assert_eq!(jar.writes(), 1);

    // The reference's aliasing made later staged choices visible at once; here they wait.
    optin.approve(&[Category::Target], true).unwrap();
    assert_eq!(optin.status(), Status::Changed);
    assert!(!optin.is_approved(&[Category::Target]));
    assert_eq!(approved(&optin.permissions()), ["aa"]);
    optin.complete();
    assert_eq!(approved(&optin.permissions()), ["aa", "target"]);
    assert_eq!(recorder.count(), 2);
    assert_eq!(jar.writes(), 2);
}

#[test]
fn oi_10_complete_without_changes_does_nothing() {
    let jar = Arc::new(MemoryStorage::new());
    let optin = optin(stored(&jar));
    let recorder = Recorder::default();
    let _subscription = recorder.subscribe(&optin);
    optin.complete();
    assert_eq!(
        (optin.status(), recorder.count(), jar.writes()),
        (Status::Pending, 0, 0)
    );
    optin.approve_all();
    optin.complete();
    optin.complete();
    assert_eq!(
        (optin.status(), recorder.count(), jar.writes()),
        (Status::Complete, 1, 1)
    );
}

#[test]
fn oi_11_approve_all_and_deny_all() {
    let optin = optin(applies());
    let recorder = Recorder::default();
    let _subscription = recorder.subscribe(&optin);
    optin.approve_all();
    assert_eq!(approved(&optin.permissions()), ALL);
    assert_eq!(recorder.count(), 1);
    optin.deny_all();
    assert!(approved(&optin.permissions()).is_empty());
    assert_eq!(recorder.count(), 2);
}

#[test]
fn oi_12_is_approved_of_several_and_of_none() {
    let optin = optin(applies().custom_category("chat"));
    let check = |categories: &[Category], expected: bool| {
        assert_eq!(optin.is_approved(categories), expected, "{categories:?}");
        assert_eq!(
            optin.permissions().is_approved(categories),
            expected,
            "{categories:?}"
        );
    };
    check(&[], false);
    optin
        .approve(&[Category::Analytics, Category::Target], false)
        .unwrap();
    check(&[Category::Analytics, Category::Target], true);
    check(&[Category::Analytics, Category::Aam], false);
    check(&[], false);
    optin.approve_all();
    check(&[], true);
    check(&[Category::custom("chat")], true);
    check(&[Category::custom("unknown")], false);
    optin.deny(&[Category::custom("chat")], false).unwrap();
    check(&[], false);
}

#[test]
fn oi_13_the_cookie_is_written_and_read_back() {
    let jar = Arc::new(MemoryStorage::new());
    let optin = optin(stored(&jar).host("www.example.com"));
    optin.approve(&[Category::Analytics], false).unwrap();
    let cookie = jar.cookie(COOKIE_NAME).unwrap();
    assert_eq!(
        cookie.value,
        "%7B%22aam%22%3Afalse%2C%22adcloud%22%3Afalse%2C%22aa%22%3Atrue%2C%22campaign%22%3Afalse%2C\
         %22ecid%22%3Afalse%2C%22livefyre%22%3Afalse%2C%22target%22%3Afalse%2C%22mediaaa%22%3Afalse%7D"
    );
    assert_eq!(cookie.path, "/");
    assert_eq!(cookie.domain.as_deref(), Some("example.com"));
    assert_eq!(
        cookie.expires,
        CookieExpiry::After(Duration::from_secs(34_190_000))
    );
    assert!(!cookie.secure);

    // The next load reads it: complete, and the cookie wins over previousPermissions.
    let restarted = crate::support::optin(
        stored(&jar).previous_permissions(map(&[("aa", false), ("aam", true)])),
    );
    assert_eq!(restarted.status(), Status::Complete);
    assert_eq!(approved(&restarted.permissions()), ["aa"]);
}

#[test]
fn oi_13_the_cookie_matches_the_value_seen_in_the_wild() {
    let jar = Arc::new(MemoryStorage::new());
    optin(stored(&jar)).approve_all();
    assert_eq!(
        jar.cookie(COOKIE_NAME).unwrap().value,
        "%7B%22aam%22%3Atrue%2C%22adcloud%22%3Atrue%2C%22aa%22%3Atrue%2C%22campaign%22%3Atrue%2C\
         %22ecid%22%3Atrue%2C%22livefyre%22%3Atrue%2C%22target%22%3Atrue%2C%22mediaaa%22%3Atrue%7D"
    );
}

#[test]
fn oi_13_the_cookie_merges_with_other_keys() {
    let jar = Arc::new(MemoryStorage::new());
    jar.insert_raw(
        COOKIE_NAME,
        "%7B%22iabConsentHash%22%3A%22abc%22%2C%22aa%22%3Afalse%7D",
    );
    let optin = optin(stored(&jar).custom_category("chat"));
    assert_eq!(optin.status(), Status::Complete);
    optin.approve(&[Category::Analytics], false).unwrap();
    assert_eq!(
        cookie_json(&jar).unwrap(),
        r#"{"iabConsentHash":"abc","aa":true,"aam":false,"adcloud":false,"campaign":false,"ecid":false,"livefyre":false,"target":false,"mediaaa":false}"#
    );
    // Custom categories have a cookie of their own (see `review::o5_…`).
    let custom = jar.cookie("adobeujs-optin-custom").unwrap().value;
    assert_eq!(crate::support::decode(&custom), r#"{"chat":false}"#);
}

fn check_stored_cookie(raw: &str, status: Status, approved_now: &[&str], warns: bool) {
    let jar = Arc::new(MemoryStorage::new());
    jar.insert_raw(COOKIE_NAME, raw);
    let optin = optin(stored(&jar));
    assert_eq!(optin.status(), status, "{raw}");
    assert_eq!(approved(&optin.permissions()), approved_now, "{raw}");
    assert_eq!(
        matches!(
            optin.warnings()[..],
            [Warning::InvalidStoredPermissions { .. }]
        ),
        warns,
        "{raw}: {:?}",
        optin.warnings()
    );
}

#[test]
fn oi_13_unreadable_or_empty_cookies_are_ignored() {
    check_stored_cookie("%7B%22aa%22%3Atrue%7D", Status::Complete, &["aa"], false);
    check_stored_cookie(r#"{"aa":true}"#, Status::Complete, &["aa"], false);
    check_stored_cookie(
        "%7B%22iabConsentHash%22%3A%22x%22%7D",
        Status::Pending,
        &[],
        false,
    );
    check_stored_cookie("%7B%7D", Status::Pending, &[], false);
    check_stored_cookie("%E0%A4%A", Status::Pending, &[], true);
    check_stored_cookie("garbage", Status::Pending, &[], true);
    check_stored_cookie("%7B%22aa%22%3A1%7D", Status::Pending, &[], true);
    // A key this service does not know is another configuration's, not a mistake: it is skipped
    // (and kept at the next write), and the categories next to it are read.
    check_stored_cookie("%7B%22foo%22%3Atrue%7D", Status::Pending, &[], false);
    check_stored_cookie(
        "%7B%22foo%22%3Atrue%2C%22aa%22%3Atrue%7D",
        Status::Complete,
        &["aa"],
        false,
    );
    // A category whose value is not a boolean is skipped, with a warning; the rest is read.
    check_stored_cookie(
        "%7B%22aa%22%3A%22yes%22%2C%22target%22%3Atrue%7D",
        Status::Complete,
        &["target"],
        true,
    );
}

fn check_lifetime(expiry: StorageExpiry, expected: Option<CookieExpiry>) {
    let jar = Arc::new(MemoryStorage::new());
    optin(stored(&jar).opt_in_storage_expiry(expiry)).approve_all();
    assert_eq!(
        jar.cookie(COOKIE_NAME).map(|c| c.expires),
        expected,
        "{expiry:?}"
    );
}

#[test]
fn oi_14_expiry_and_host_only_domain() {
    check_lifetime(
        StorageExpiry::Seconds(3600),
        Some(CookieExpiry::After(Duration::from_secs(3600))),
    );
    check_lifetime(StorageExpiry::Session, Some(CookieExpiry::Session));
    check_lifetime(StorageExpiry::None, None);

    let jar = Arc::new(MemoryStorage::new());
    let optin = optin(
        stored(&jar)
            .host("www.example.com")
            .opt_in_cookie_domain("www.example.com")
            .secure_cookie(true),
    );
    optin.approve_all();
    let cookie = jar.cookie(COOKIE_NAME).unwrap();
    assert_eq!(
        cookie.domain, None,
        "a domain equal to the host means a host-only cookie"
    );
    assert!(cookie.secure);

    let jar = Arc::new(MemoryStorage::with_public_suffixes(["co.uk"]));
    crate::support::optin(stored(&jar).host("shop.example.co.uk")).approve_all();
    assert_eq!(
        jar.cookie(COOKIE_NAME).unwrap().domain.as_deref(),
        Some("example.co.uk")
    );
}

#[test]
fn oi_15_storage_disabled_neither_reads_nor_writes() {
    let jar = Arc::new(MemoryStorage::new());
    jar.insert_raw(COOKIE_NAME, "%7B%22aa%22%3Atrue%7D");
    let optin = optin(
        applies()
            .opt_in_storage(jar.clone())
            .is_opt_in_storage_enabled(false),
    );
    assert_eq!(optin.status(), Status::Pending);
    assert!(approved(&optin.permissions()).is_empty());
    optin.approve_all();
    assert_eq!(jar.writes(), 0);
    assert_eq!(cookie_json(&jar).unwrap(), r#"{"aa":true}"#);
}

fn check_iab(signal: Tcf, approves: bool) {
    let jar = Arc::new(MemoryStorage::new());
    let optin = optin(
        stored(&jar)
            .is_iab_context(true)
            .pre_opt_in_approvals(map(&[("target", true)])),
    );
    let recorder = Recorder::default();
    let _subscription = recorder.subscribe(&optin);
    let outcome = optin.apply_tcf(&signal).unwrap();
    assert_eq!(outcome.approved, approves, "{signal:?}");
    assert!(outcome.completed);
    assert_eq!(recorder.count(), 1, "one workflow completion");
    assert_eq!(optin.is_approved(&[Category::Aam]), approves, "{signal:?}");
    assert_eq!(optin.is_approved(&[Category::Ecid]), approves, "{signal:?}");
    assert!(
        optin.is_approved(&[Category::Target]),
        "other categories are untouched"
    );
    assert!(
        !optin.is_approved(&[Category::Analytics]),
        "other categories are untouched"
    );
}

#[test]
fn oi_16_with_real_tc_strings() {
    use consent_optin::DecodedTcString;
    use consent_tcf::TcString;
    let cases: [(&[u32], bool, bool); 4] = [
        (&[1, 10], true, true),
        (&[1, 2, 10], true, true),
        (&[1], true, false),
        (&[1, 10], false, false),
    ];
    for (purposes, vendor, approves) in cases {
        let mut builder = TcString::builder().vendor_consent(565, vendor);
        for purpose in purposes {
            builder = builder.purpose_consent(*purpose, true);
        }
        let text = builder.build().unwrap().encode();
        let signal = DecodedTcString::parse(&text).unwrap();
        let jar = Arc::new(MemoryStorage::new());
        let optin = optin(stored(&jar).is_iab_context(true));
        let outcome = optin.apply_tcf(&signal).unwrap();
        assert_eq!(outcome.approved, approves, "{purposes:?} {vendor}");
        assert_eq!(optin.is_approved(&[Category::Aam]), approves);
        assert_eq!(optin.is_approved(&[Category::Ecid]), approves);
    }
    assert!(DecodedTcString::parse("definitely not a TC string").is_err());
}

#[test]
fn oi_16_iab_vendor_565_and_purposes_1_and_10() {
    check_iab(Tcf::new("A", true, &[1, 10]), true);
    check_iab(Tcf::new("A", true, &[1, 2, 3, 10]), true);
    check_iab(Tcf::new("A", false, &[1, 10]), false);
    check_iab(Tcf::new("A", true, &[1]), false);
    check_iab(Tcf::new("A", true, &[10]), false);
    check_iab(Tcf::new("A", true, &[]), false);
}

#[test]
fn oi_16_iab_hash_is_memoised_and_new_strings_are_evaluated_again() {
    let jar = Arc::new(MemoryStorage::new());
    let config = || stored(&jar).is_iab_context(true);
    let optin = optin(config());
    let recorder = Recorder::default();
    let _subscription = recorder.subscribe(&optin);

    let first = optin
        .apply_tcf(&Tcf::new(
            "COtybn4PA_zT4KjACBENAPCIAEBAAECAAIAAAAAAAAAA",
            true,
            &[1, 10],
        ))
        .unwrap();
    assert!(first.has_consent_changed_since_last_cmp_pull);
    assert_eq!(
        first.consent_hash,
        iab_consent_hash("COtybn4PA_zT4KjACBENAPCIAEBAAECAAIAAAAAAAAAA")
    );
    let cookie = cookie_json(&jar).unwrap();
    assert!(
        cookie.contains(&format!(r#""iabConsentHash":"{}""#, first.consent_hash)),
        "{cookie}"
    );
    assert!(cookie.contains(r#""aam":true"#), "{cookie}");

    // The same string again: nothing to complete, and the hash is known now.
    let again = optin
        .apply_tcf(&Tcf::new(
            "COtybn4PA_zT4KjACBENAPCIAEBAAECAAIAAAAAAAAAA",
            true,
            &[1, 10],
        ))
        .unwrap();
    assert!(!again.completed);
    assert!(!again.has_consent_changed_since_last_cmp_pull);
    assert_eq!(recorder.count(), 1);

    // A new string is evaluated again (the reference never re-read the CMP).
    let withdrawn = optin.apply_tcf(&Tcf::new("B", true, &[1])).unwrap();
    assert!(withdrawn.completed && withdrawn.has_consent_changed_since_last_cmp_pull);
    assert!(!optin.is_approved(&[Category::Aam]));
    assert_eq!(recorder.count(), 2);

    // After a restart the memoised hash is compared with the stored one.
    let restarted = crate::support::optin(config());
    let outcome = restarted.apply_tcf(&Tcf::new("B", true, &[1])).unwrap();
    assert!(!outcome.has_consent_changed_since_last_cmp_pull);
    assert!(outcome.completed);
}

#[test]
fn oi_16_iab_needs_the_iab_context_and_opt_in() {
    let signal = Tcf::new("A", true, &[1, 10]);
    let check = |builder: consent_optin::OptInConfigBuilder, expected: ApplyTcfError| {
        let optin = optin(builder);
        assert_eq!(optin.apply_tcf(&signal), Err(expected));
        assert_eq!(optin.status(), Status::Pending);
    };
    check(
        applies(),
        ApplyTcfError::NotIabContext {
            is_iab_context: false,
            does_opt_in_apply: true,
        },
    );
    check(
        OptInConfig::builder().is_iab_context(true),
        ApplyTcfError::NotIabContext {
            is_iab_context: true,
            does_opt_in_apply: false,
        },
    );
}

#[test]
fn oi_16_iab_hash_is_memoised_even_with_storage_disabled() {
    let jar = Arc::new(MemoryStorage::new());
    let optin = optin(applies().is_iab_context(true).opt_in_storage(jar.clone()));
    optin.apply_tcf(&Tcf::new("A", true, &[1, 10])).unwrap();
    assert_eq!(
        cookie_json(&jar).unwrap(),
        format!(r#"{{"iabConsentHash":"{}"}}"#, iab_consent_hash("A"))
    );
}

/// A stand-in for Visitor's ECID gating (ref. § a.10): when ECID is approved and the choices are
/// complete it makes the ID call at once; otherwise it subscribes with `subscribe_permissions`, and
/// the first call that approves ECID makes the ID call and unsubscribes. Every ID call is counted,
/// so a subscriber called after its unsubscription, or twice for one completion, shows.
struct Visitor {
    optin: OptIn,
    id_calls: Counter,
    waiting: Arc<Mutex<Option<consent_optin::Subscription>>>,
}

impl Visitor {
    fn new(optin: &OptIn) -> Visitor {
        let id_calls = Counter::default();
        let waiting: Arc<Mutex<Option<consent_optin::Subscription>>> = Arc::default();
        if optin.is_complete() && optin.is_approved(&[Category::Ecid]) {
            id_calls.hit();
        } else {
            let (calls, slot) = (id_calls.clone(), waiting.clone());
            let subscription = optin.subscribe_permissions(move |permissions| {
                if permissions.get(&Category::Ecid) == Some(true) {
                    calls.hit();
                    slot.lock().unwrap().take();
                }
            });
            // The first call may have come already (permissions were available), before there
            // was a subscription to drop: then it is dropped now.
            if id_calls.get() == 0 {
                *waiting.lock().unwrap() = Some(subscription);
            }
        }
        Visitor {
            optin: optin.clone(),
            id_calls,
            waiting,
        }
    }

    fn is_waiting(&self) -> bool {
        self.waiting.lock().unwrap().is_some()
    }

    fn marketing_cloud_visitor_id(&self) -> String {
        if self.optin.is_approved(&[Category::Ecid]) && self.id_calls.get() > 0 {
            "ECID-1".to_owned()
        } else {
            String::new()
        }
    }
}

#[test]
fn oi_17_solutions_wait_for_their_category() {
    let optin = optin(applies());
    // Another part of the page, subscribed before Visitor, reacts to the ECID approval with a
    // completion of its own, delivered right after.
    let reacting = optin.clone();
    let _analytics = optin.on_complete(move |permissions| {
        if permissions.get(&Category::Ecid) == Some(true)
            && permissions.get(&Category::Analytics) == Some(false)
        {
            reacting.approve(&[Category::Analytics], false).unwrap();
        }
    });
    let visitor = Visitor::new(&optin);
    let mut ecid = optin.wait_for(&Category::Ecid).unwrap();
    assert_eq!(visitor.marketing_cloud_visitor_id(), "");
    assert_eq!(visitor.id_calls.get(), 0);
    assert!(visitor.is_waiting());
    assert!(poll_once(&mut ecid).is_pending());

    optin.approve(&[Category::Target], false).unwrap();
    assert_eq!(visitor.id_calls.get(), 0, "ECID is still denied");
    assert!(
        !block_on(ecid),
        "a completion that denies the category decides it too"
    );
    optin.approve(&[Category::Ecid], false).unwrap();
    assert!(optin.is_approved(&[Category::Analytics]));
    assert_eq!(visitor.id_calls.get(), 1);
    assert!(!visitor.is_waiting());
    assert_eq!(visitor.marketing_cloud_visitor_id(), "ECID-1");
    assert!(block_on(optin.wait_for(&Category::Ecid).unwrap()));
    optin.deny(&[Category::Ecid], false).unwrap();
    optin.approve_all();
    assert_eq!(visitor.id_calls.get(), 1, "the ID call is made once");

    // Approved and complete already: the ID call at once, no subscription.
    let optin = crate::support::optin(applies().previous_permissions(map(&[("ecid", true)])));
    let visitor = Visitor::new(&optin);
    assert_eq!((visitor.id_calls.get(), visitor.is_waiting()), (1, false));
    optin.approve_all();
    assert_eq!(visitor.id_calls.get(), 1);

    // Pre-approved while pending: the first call of subscribe_permissions makes it.
    let optin = crate::support::optin(applies().pre_opt_in_approvals(map(&[("ecid", true)])));
    let visitor = Visitor::new(&optin);
    assert_eq!((visitor.id_calls.get(), visitor.is_waiting()), (1, false));
    optin.approve_all();
    assert_eq!(visitor.id_calls.get(), 1);
}

#[test]
fn oi_18_subscriptions_unsubscribe_and_auto_subscribe() {
    let optin = optin(applies());
    let a = Recorder::default();
    let b = Recorder::default();
    let c = Recorder::default();
    let sub_a = a.subscribe(&optin);
    let sub_b = b.subscribe(&optin);
    let _sub_c = c.subscribe(&optin);
    optin.approve_all();
    // The reference removed by an index captured at subscription time, so removing `a` and then `b`
    // removed `c` instead of `b`.
    drop(sub_a);
    sub_b.unsubscribe();
    optin.deny_all();
    assert_eq!((a.count(), b.count(), c.count()), (1, 1, 2));

    // fetchPermissions(cb, true): nothing at once while pending, then every completion.
    let optin = crate::support::optin(applies());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let subscription = optin.subscribe_permissions(move |p| sink.lock().unwrap().push(approved(p)));
    assert!(seen.lock().unwrap().is_empty());
    optin.approve(&[Category::Aam], false).unwrap();
    optin.approve(&[Category::Target], false).unwrap();
    drop(subscription);
    optin.deny_all();
    assert_eq!(
        *seen.lock().unwrap(),
        [
            vec!["aam".to_owned()],
            vec!["aam".to_owned(), "target".to_owned()]
        ]
    );

    // Once complete, the auto-subscribed callback is also called at once.
    let count = Counter::default();
    let hit = count.clone();
    optin.subscribe_permissions(move |_| hit.hit()).detach();
    assert_eq!(count.get(), 1);
    optin.approve_all();
    assert_eq!(count.get(), 2, "a detached subscriber stays");
}

#[test]
fn oi_19_one_service_per_page() {
    // The page builds one service and hands out clones: every clone, on any thread, is that
    // service.
    let jar = Arc::new(MemoryStorage::new());
    let page = optin(stored(&jar));
    let events = Recorder::default();
    let _page_subscription = events.subscribe(&page);
    let clone = page.clone();
    std::thread::spawn(move || clone.approve(&[Category::Analytics], false).map(|_| ()))
        .join()
        .unwrap()
        .unwrap();
    assert!(page.is_approved(&[Category::Analytics]));
    assert_eq!(page.status(), Status::Complete);
    assert_eq!(
        (events.count(), jar.writes()),
        (1, 1),
        "one event, one write"
    );

    // A subscription made through a clone is the service's, and outlives the clone.
    let clone = page.clone();
    let through_clone = Recorder::default();
    let _clone_subscription = through_clone.subscribe(&clone);
    drop(clone);
    page.deny_all();
    assert_eq!((events.count(), through_clone.count()), (2, 1));

    // The reference's second `getInstance` with another configuration leaves `adobe.optIn` as it
    // is. Here a second construction is a second service: it changes nothing of the page's.
    let second = optin(OptInConfig::builder().does_opt_in_apply(false));
    second.approve_all();
    assert!(page.does_opt_in_apply());
    assert!(approved(&page.permissions()).is_empty());
    assert_eq!((events.count(), jar.writes()), (2, 2));

    // The service lives as long as any handle: the page's own may go.
    let last = page.clone();
    drop(page);
    last.approve(&[Category::Target], false).unwrap();
    assert_eq!((events.count(), through_clone.count()), (3, 2));
}

/// Found while fuzzing the cookie reader (`fuzz/fuzz_targets/optin_cookie.rs`): an escape with
/// a sign (`%+9`) was decoded as a byte, where `decodeURIComponent` throws, so a cookie
/// VisitorAPI.js reads as invalid approved `aa` here. It is invalid here too: nothing stored.
#[test]
fn oi_13_a_cookie_with_a_signed_escape_is_invalid_as_in_visitor_api() {
    let valid = Arc::new(MemoryStorage::new());
    valid.insert_raw(COOKIE_NAME, "%7B%22aa%22%3Atrue%7D");
    assert_eq!(approved(&optin(stored(&valid)).permissions()), ["aa"]);

    let signed = Arc::new(MemoryStorage::new());
    signed.insert_raw(COOKIE_NAME, "%+9%7B%22aa%22%3Atrue%7D");
    let read = optin(stored(&signed));
    assert!(approved(&read.permissions()).is_empty());
    assert_ne!(read.status(), Status::Complete);
}
