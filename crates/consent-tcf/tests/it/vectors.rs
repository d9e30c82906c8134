//! Every vector of `tcf-vectors.md` (V1–V6, V10), checked field by field, plus the 720-vendor
//! LiveRamp fixture used by the benchmark.

use consent_tcf::{RestrictionType, TcString, VendorEncoding, VendorSet};

/// Expected content of one vendor section: encoding, MaxVendorId, range entries, ids.
struct Section {
    encoding: VendorEncoding,
    max: u16,
    entries: Option<usize>,
    ids: &'static [u16],
}

const fn bitfield(max: u16, ids: &'static [u16]) -> Section {
    Section {
        encoding: VendorEncoding::Bitfield,
        max,
        entries: None,
        ids,
    }
}

const fn range(max: u16, entries: usize, ids: &'static [u16]) -> Section {
    Section {
        encoding: VendorEncoding::Range,
        max,
        entries: Some(entries),
        ids,
    }
}

struct PubTc {
    consents: &'static [u32],
    legitimate_interests: &'static [u32],
    num_custom: u8,
    custom_consents: &'static [u32],
    custom_legitimate_interests: &'static [u32],
}

struct Expected {
    created: (u64, &'static str),
    last_updated: (u64, &'static str),
    cmp_id: u16,
    cmp_version: u16,
    consent_screen: u8,
    consent_language: &'static str,
    vendor_list_version: u16,
    tcf_policy_version: u8,
    is_service_specific: bool,
    use_non_standard_texts: bool,
    special_features: &'static [u32],
    purpose_consents: &'static [u32],
    purpose_legitimate_interests: &'static [u32],
    purpose_one_treatment: bool,
    publisher_cc: &'static str,
    vendor_consents: Section,
    vendor_legitimate_interests: Section,
    restrictions: &'static [(u8, RestrictionType, &'static [u16])],
    disclosed: Option<Section>,
    allowed: Option<Section>,
    publisher_tc: Option<PubTc>,
    /// The rules strict validation reports (every vector predates TCF v2.2).
    violations: &'static [&'static str],
}

fn ones(n: u32, get: impl Fn(u32) -> bool) -> Vec<u32> {
    (1..=n).filter(|&i| get(i)).collect()
}

fn check_section(name: &str, set: &VendorSet, expected: &Section) {
    assert_eq!(
        set.source_encoding(),
        Some(expected.encoding),
        "{name} encoding"
    );
    assert_eq!(set.max_vendor_id(), expected.max, "{name} max");
    assert_eq!(set.iter().collect::<Vec<_>>(), expected.ids, "{name} ids");
    if let Some(entries) = expected.entries {
        assert_eq!(set.ranges().count(), entries, "{name} range entries");
    }
    for id in 0..=expected.max.saturating_add(2) {
        assert_eq!(set.contains(id), expected.ids.contains(&id), "{name} {id}");
    }
}

fn check(input: &str, e: &Expected) {
    let tc = TcString::parse(input).unwrap();
    assert_eq!(tc.version(), 2);
    assert_eq!(tc.created().deciseconds(), e.created.0);
    assert_eq!(tc.created().to_string(), e.created.1);
    assert_eq!(tc.last_updated().deciseconds(), e.last_updated.0);
    assert_eq!(tc.last_updated().to_string(), e.last_updated.1);
    assert_eq!(tc.cmp_id(), e.cmp_id);
    assert_eq!(tc.cmp_version(), e.cmp_version);
    assert_eq!(tc.consent_screen(), e.consent_screen);
    assert_eq!(tc.consent_language().to_string(), e.consent_language);
    assert_eq!(tc.vendor_list_version(), e.vendor_list_version);
    assert_eq!(tc.tcf_policy_version(), e.tcf_policy_version);
    assert_eq!(tc.is_service_specific(), e.is_service_specific);
    assert_eq!(tc.use_non_standard_texts(), e.use_non_standard_texts);
    assert_eq!(
        ones(13, |n| tc.special_feature_opt_in(n)),
        e.special_features
    );
    assert_eq!(ones(25, |n| tc.purpose_consent(n)), e.purpose_consents);
    assert_eq!(
        ones(25, |n| tc.purpose_legitimate_interest(n)),
        e.purpose_legitimate_interests
    );
    assert_eq!(tc.purpose_one_treatment(), e.purpose_one_treatment);
    assert_eq!(tc.publisher_cc().to_string(), e.publisher_cc);
    check_section("vendor consents", tc.vendor_consents(), &e.vendor_consents);
    check_section(
        "vendor LI",
        tc.vendor_legitimate_interests(),
        &e.vendor_legitimate_interests,
    );
    for id in 0..800 {
        assert_eq!(tc.vendor_consent(id), e.vendor_consents.ids.contains(&id));
        assert_eq!(
            tc.vendor_legitimate_interest(id),
            e.vendor_legitimate_interests.ids.contains(&id)
        );
    }
    let restrictions: Vec<_> = tc
        .publisher_restrictions()
        .map(|r| {
            (
                r.purpose_id(),
                r.restriction_type(),
                r.vendors().collect::<Vec<_>>(),
            )
        })
        .collect();
    let expected: Vec<_> = e
        .restrictions
        .iter()
        .map(|&(p, t, v)| (p, t, v.to_vec()))
        .collect();
    assert_eq!(restrictions, expected);
    match (&e.disclosed, tc.disclosed_vendors()) {
        (Some(expected), Some(set)) => check_section("disclosed", set, expected),
        (None, None) => {}
        (expected, got) => panic!("disclosed: expected {}, got {got:?}", expected.is_some()),
    }
    match (&e.allowed, tc.allowed_vendors()) {
        (Some(expected), Some(set)) => check_section("allowed", set, expected),
        (None, None) => {}
        (expected, got) => panic!("allowed: expected {}, got {got:?}", expected.is_some()),
    }
    match (&e.publisher_tc, tc.publisher_tc()) {
        (Some(x), Some(p)) => {
            assert_eq!(ones(25, |n| p.purpose_consent(n)), x.consents);
            assert_eq!(
                ones(25, |n| p.purpose_legitimate_interest(n)),
                x.legitimate_interests
            );
            assert_eq!(p.num_custom_purposes(), x.num_custom);
            assert_eq!(ones(64, |n| p.custom_purpose_consent(n)), x.custom_consents);
            assert_eq!(
                ones(64, |n| p.custom_purpose_legitimate_interest(n)),
                x.custom_legitimate_interests
            );
        }
        (None, None) => {}
        (x, p) => panic!("publisher TC: expected {}, got {p:?}", x.is_some()),
    }
    let rules: Vec<_> = tc.violations().iter().map(|v| v.rule()).collect();
    assert_eq!(rules, e.violations);

    // Decoding then encoding gives back the vector, byte for byte.
    assert_eq!(tc.encode(), input);
    // The canonical (6-bit padded) form decodes to the same model.
    let canonical = tc
        .to_builder()
        .padding(consent_tcf::Padding::Sextet)
        .equals_padding(false)
        .build()
        .unwrap()
        .encode();
    assert_eq!(TcString::parse(&canonical).unwrap(), tc);
}

const NONE: &[u32] = &[];

#[test]
fn v1_iab_spec_example() {
    check(
        "CQSbk4AQSbk4ANwAAAENAwCgAAAAAAAAAAYgACPAAAAA.IDKQA4AAgAKAGQAygAAA.YAAAAAAAAAAA",
        &Expected {
            created: (17_489_088_000, "2025-06-03T00:00:00Z"),
            last_updated: (17_489_088_000, "2025-06-03T00:00:00Z"),
            cmp_id: 880,
            cmp_version: 0,
            consent_screen: 0,
            consent_language: "EN",
            vendor_list_version: 48,
            tcf_policy_version: 2,
            is_service_specific: true,
            use_non_standard_texts: false,
            special_features: NONE,
            purpose_consents: NONE,
            purpose_legitimate_interests: NONE,
            purpose_one_treatment: false,
            publisher_cc: "DE",
            vendor_consents: bitfield(4, &[1, 2, 3, 4]),
            vendor_legitimate_interests: bitfield(0, &[]),
            restrictions: &[],
            disclosed: Some(range(404, 3, &[1, 2, 3, 4, 5, 100, 404])),
            allowed: None,
            publisher_tc: Some(PubTc {
                consents: NONE,
                legitimate_interests: NONE,
                num_custom: 0,
                custom_consents: NONE,
                custom_legitimate_interests: NONE,
            }),
            // The disclosed segment carries 21 padding bits (iabtcf-es pads to 24 bits).
            violations: &["padding", "policy-version"],
        },
    );
}

#[test]
fn v2_iabtcf_java_minimal_core() {
    check(
        "COtybn4PA_zT4KjACBENAPCIAEBAAECAAIAAAAAAAAAA",
        &Expected {
            created: (15_800_580_600, "2020-01-26T17:01:00Z"),
            last_updated: (16_122_852_600, "2021-02-02T17:01:00Z"),
            cmp_id: 675,
            cmp_version: 2,
            consent_screen: 1,
            consent_language: "EN",
            vendor_list_version: 15,
            tcf_policy_version: 2,
            is_service_specific: false,
            use_non_standard_texts: false,
            special_features: &[1],
            purpose_consents: &[2, 10],
            purpose_legitimate_interests: &[2, 9],
            purpose_one_treatment: true,
            publisher_cc: "AA",
            vendor_consents: bitfield(0, &[]),
            vendor_legitimate_interests: bitfield(0, &[]),
            restrictions: &[],
            disclosed: None,
            allowed: None,
            publisher_tc: None,
            violations: &[
                "service-specific",
                "policy-version",
                "timestamps-equal",
                "timestamps-day",
                "timestamps-day",
                "disclosed-vendors",
            ],
        },
    );
}

#[test]
fn v3_iabtcf_java_disclosed_and_allowed() {
    check(
        "COrEAV4OrXx94ACABBENAHCIAD-AAAAAAACAAxAAAAgAIAwgAgAAAAEAgQAAAAAEAYQAQAAAACAAAABAAA.IBAgAAAgAIAwgAgAAAAEAAAACA.QAagAQAgAIAwgA",
        &Expected {
            created: (15_754_855_800, "2019-12-04T18:53:00Z"),
            last_updated: (15_760_039_800, "2019-12-10T18:53:00Z"),
            cmp_id: 2,
            cmp_version: 1,
            consent_screen: 1,
            consent_language: "EN",
            vendor_list_version: 7,
            tcf_policy_version: 2,
            is_service_specific: false,
            use_non_standard_texts: false,
            special_features: &[1],
            purpose_consents: &[3, 4, 5, 6, 7, 8, 9],
            purpose_legitimate_interests: NONE,
            purpose_one_treatment: false,
            publisher_cc: "AQ",
            vendor_consents: bitfield(98, &[23, 37, 47, 48, 53, 65, 98]),
            vendor_legitimate_interests: bitfield(129, &[37, 47, 48, 53, 65, 98, 129]),
            restrictions: &[],
            disclosed: Some(bitfield(129, &[23, 37, 47, 48, 53, 65, 98, 129])),
            allowed: Some(bitfield(53, &[12, 23, 37, 47, 48, 53])),
            publisher_tc: None,
            violations: &[
                "padding",
                "service-specific",
                "policy-version",
                "timestamps-equal",
                "timestamps-day",
                "timestamps-day",
            ],
        },
    );
}

#[test]
fn v4_iabtcf_java_range_vendor_sections() {
    check(
        "COv__-wOv__-wC2AAAENAPCgAAAAAAAAAAAAA_wAQA_gEBABAEAAAA",
        &Expected {
            created: (15_837_691_824, "2020-03-09T15:53:02.4Z"),
            last_updated: (15_837_691_824, "2020-03-09T15:53:02.4Z"),
            cmp_id: 182,
            cmp_version: 0,
            consent_screen: 0,
            consent_language: "EN",
            vendor_list_version: 15,
            tcf_policy_version: 2,
            is_service_specific: true,
            use_non_standard_texts: false,
            special_features: NONE,
            purpose_consents: NONE,
            purpose_legitimate_interests: NONE,
            purpose_one_treatment: false,
            publisher_cc: "AA",
            vendor_consents: range(127, 1, &[127]),
            vendor_legitimate_interests: range(128, 1, &[128]),
            restrictions: &[],
            disclosed: None,
            allowed: None,
            publisher_tc: None,
            violations: &[
                "padding",
                "policy-version",
                "timestamps-day",
                "disclosed-vendors",
            ],
        },
    );
}

#[test]
fn v5_iabtcf_java_range_of_two() {
    check(
        "COwBOpCOwBOpCLqAAAENAPCAAAAAAAAAAAAAFfwAYFfAV-BVkAGBVYFWAAA",
        &Expected {
            created: (15_838_014_018, "2020-03-10T00:50:01.8Z"),
            last_updated: (15_838_014_018, "2020-03-10T00:50:01.8Z"),
            cmp_id: 746,
            cmp_version: 0,
            consent_screen: 0,
            consent_language: "EN",
            vendor_list_version: 15,
            tcf_policy_version: 2,
            is_service_specific: false,
            use_non_standard_texts: false,
            special_features: NONE,
            purpose_consents: NONE,
            purpose_legitimate_interests: NONE,
            purpose_one_treatment: false,
            publisher_cc: "AA",
            vendor_consents: range(703, 1, &[702, 703]),
            vendor_legitimate_interests: range(684, 1, &[683, 684]),
            restrictions: &[],
            disclosed: None,
            allowed: None,
            publisher_tc: None,
            violations: &[
                "service-specific",
                "policy-version",
                "timestamps-day",
                "disclosed-vendors",
            ],
        },
    );
}

#[test]
fn v6_liveramp_publisher_restrictions() {
    check(
        "COvzTO5OvzTO5BRAAAENAPCoALIAADgAAAAAAewAwABAAlAB6ABBFADBQAQA9hAAAcAA",
        &Expected {
            created: (15_834_362_809, "2020-03-05T19:24:40.9Z"),
            last_updated: (15_834_362_809, "2020-03-05T19:24:40.9Z"),
            cmp_id: 81,
            cmp_version: 0,
            consent_screen: 0,
            consent_language: "EN",
            vendor_list_version: 15,
            tcf_policy_version: 2,
            is_service_specific: true,
            use_non_standard_texts: false,
            special_features: &[1],
            purpose_consents: &[1, 3, 4, 7],
            purpose_legitimate_interests: &[3, 4, 5],
            purpose_one_treatment: false,
            publisher_cc: "AA",
            // iabtcf-es wrote this as a range although the bitfield is 2 bits smaller; re-encoding a
            // decoded section keeps its encoding so the string round-trips.
            vendor_consents: range(61, 3, &[2, 37, 61]),
            vendor_legitimate_interests: bitfield(8, &[2, 6, 8]),
            restrictions: &[
                (1, RestrictionType::RequireConsent, &[123]),
                (2, RestrictionType::NotAllowed, &[]),
                (3, RestrictionType::RequireLegitimateInterest, &[]),
            ],
            disclosed: None,
            allowed: None,
            publisher_tc: None,
            violations: &["policy-version", "timestamps-day", "disclosed-vendors"],
        },
    );
}

#[test]
fn v10_iabtcf_java_publisher_tc_with_equals_padding() {
    check(
        "COtybn4PA_zT4KjACBENAPCIAEBAAECAAIAAAAAAAAAA.cAAAAAAAITg=",
        &Expected {
            created: (15_800_580_600, "2020-01-26T17:01:00Z"),
            last_updated: (16_122_852_600, "2021-02-02T17:01:00Z"),
            cmp_id: 675,
            cmp_version: 2,
            consent_screen: 1,
            consent_language: "EN",
            vendor_list_version: 15,
            tcf_policy_version: 2,
            is_service_specific: false,
            use_non_standard_texts: false,
            special_features: &[1],
            purpose_consents: &[2, 10],
            purpose_legitimate_interests: &[2, 9],
            purpose_one_treatment: true,
            publisher_cc: "AA",
            vendor_consents: bitfield(0, &[]),
            vendor_legitimate_interests: bitfield(0, &[]),
            restrictions: &[],
            disclosed: None,
            allowed: None,
            publisher_tc: Some(PubTc {
                consents: &[1],
                legitimate_interests: &[24],
                num_custom: 2,
                custom_consents: &[2],
                custom_legitimate_interests: &[1, 2],
            }),
            violations: &[
                "service-specific",
                "policy-version",
                "timestamps-equal",
                "timestamps-day",
                "timestamps-day",
                "disclosed-vendors",
            ],
        },
    );
}

/// The 720-vendor bitfield string of the benchmark (LiveRamp/iabconsent fixture).
pub(crate) const LIVERAMP_720: &str = "COvzTO5OvzTO5BZAFMENAPCgAAAAAAAAAAwIFoEUQQgAIQwgIwQABAEAAAAOIAACAIAAAAQAIAgEAACEAAAAAgAQBAAAAAAAGBAAgAAAAAAAFAAECAAAgAAQARAEQAAAAAJAAIAAgAAAYQEAAAQmAgBC3ZAYzUwLQIoghAAQhhARggACAIAAAAcQAAEAQAAAAgAQBAIAAEIAAAABAAgCAAAAAAAMCABAAAAAAAAKAAIEAABAAAgAiAIgAAAAASAAQABAAAAwgIAAAhMBACFuyAxmpgAA";

const LIVERAMP_720_IDS: &[u16] = &[
    2, 6, 8, 12, 18, 23, 37, 42, 47, 48, 53, 61, 65, 66, 72, 88, 98, 127, 128, 129, 133, 153, 163,
    192, 205, 215, 224, 243, 248, 281, 294, 304, 350, 351, 358, 371, 422, 424, 440, 447, 467, 486,
    498, 502, 512, 516, 553, 556, 571, 587, 612, 613, 618, 626, 648, 653, 656, 657, 665, 676, 681,
    683, 684, 686, 687, 688, 690, 691, 694, 702, 703, 707, 708, 711, 712, 714, 716, 719, 720,
];

#[test]
fn liveramp_720_vendor_bitfield() {
    check(
        LIVERAMP_720,
        &Expected {
            created: (15_834_362_809, "2020-03-05T19:24:40.9Z"),
            last_updated: (15_834_362_809, "2020-03-05T19:24:40.9Z"),
            cmp_id: 89,
            cmp_version: 5,
            consent_screen: 12,
            consent_language: "EN",
            vendor_list_version: 15,
            tcf_policy_version: 2,
            is_service_specific: true,
            use_non_standard_texts: false,
            special_features: NONE,
            purpose_consents: NONE,
            purpose_legitimate_interests: NONE,
            purpose_one_treatment: false,
            publisher_cc: "GB",
            vendor_consents: bitfield(720, LIVERAMP_720_IDS),
            vendor_legitimate_interests: bitfield(720, LIVERAMP_720_IDS),
            restrictions: &[],
            disclosed: None,
            allowed: None,
            publisher_tc: None,
            violations: &["policy-version", "timestamps-day", "disclosed-vendors"],
        },
    );
}

#[test]
fn segments_decode_in_any_order_and_keep_it() {
    let reordered = "COrEAV4OrXx94ACABBENAHCIAD-AAAAAAACAAxAAAAgAIAwgAgAAAAEAgQAAAAAEAYQAQAAAACAAAABAAA.QAagAQAgAIAwgA.IBAgAAAgAIAwgAgAAAAEAAAACA";
    let canonical = "COrEAV4OrXx94ACABBENAHCIAD-AAAAAAACAAxAAAAgAIAwgAgAAAAEAgQAAAAAEAYQAQAAAACAAAABAAA.IBAgAAAgAIAwgAgAAAAEAAAACA.QAagAQAgAIAwgA";
    let a = TcString::parse(reordered).unwrap();
    let b = TcString::parse(canonical).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.encode(), reordered);
    // The core need not come first either: every segment carries its type.
    let core_last = "IBAgAAAgAIAwgAgAAAAEAAAACA.COrEAV4OrXx94ACABBENAHCIAD-AAAAAAACAAxAAAAgAIAwgAgAAAAEAgQAAAAAEAYQAQAAAACAAAABAAA";
    let c = TcString::parse(core_last).unwrap();
    assert_eq!(c.disclosed_vendors(), b.disclosed_vendors());
    assert_eq!(c.cmp_id(), 2);
}

#[test]
fn equals_padding_is_optional() {
    let with =
        TcString::parse("COtybn4PA_zT4KjACBENAPCIAEBAAECAAIAAAAAAAAAA.cAAAAAAAITg=").unwrap();
    let without =
        TcString::parse("COtybn4PA_zT4KjACBENAPCIAEBAAECAAIAAAAAAAAAA.cAAAAAAAITg").unwrap();
    assert_eq!(with, without);
    assert_eq!(
        without.encode(),
        "COtybn4PA_zT4KjACBENAPCIAEBAAECAAIAAAAAAAAAA.cAAAAAAAITg"
    );
}
