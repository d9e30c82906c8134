//! Differential test against `lib_tcstring` 0.5.0 over many random valid strings, plus the known
//! disagreements, each explained.
//!
//! Known disagreements (none shows up on the strings generated below, which avoid them):
//!
//! 1. Vendor id 65535 in a range: `lib_tcstring` computes `end_vendor_id + 1` in `u16`, which panics
//!    in debug builds and wraps to an empty range in release. We decode it. The generator stops at
//!    65534.
//! 2. `=` padding: `lib_tcstring` decodes with `DecodePaddingMode::RequireNone` and rejects it (V10).
//!    We accept it, as the issue and iabtcf-java's test strings require.
//! 3. Segments padded only to a 6-bit boundary (as the TCF text says) whose length is 4n + 1
//!    characters are not valid base64, and the `base64` crate under `lib_tcstring` rejects them. We
//!    accept them. The differential strings are written with byte padding (`Padding::Byte`), which
//!    every base64 decoder accepts.
//! 4. `lib_tcstring` takes the first segment as the core whatever its type; we tell segments apart
//!    by their type, so a string whose core is not first decodes here and not there.
//! 5. A letter code above 25 (not a letter) is a decoding error in `lib_tcstring` and a validation
//!    error here (rule "letter-code"); the generator uses letters only.
//! 6. `lib_tcstring` exposes timestamps in milliseconds (`deciseconds * 100`); we compare with
//!    `Timestamp::unix_millis`.

use consent_tcf::{Padding, RestrictionType, TcString};
use lib_tcstring::{PublisherRestrictionType, TcModelV2};
use proptest::prelude::*;

use crate::roundtrip::model;

fn ones(n: u32, get: impl Fn(u32) -> bool) -> Vec<u8> {
    (1..=n).filter(|&i| get(i)).map(|i| i as u8).collect()
}

fn restriction_type(t: RestrictionType) -> PublisherRestrictionType {
    match t {
        RestrictionType::NotAllowed => PublisherRestrictionType::NotAllowed,
        RestrictionType::RequireConsent => PublisherRestrictionType::RequireConsent,
        RestrictionType::RequireLegitimateInterest => {
            PublisherRestrictionType::RequireLegitimateInterest
        }
        _ => PublisherRestrictionType::Undefined,
    }
}

/// Decodes `input` with both crates and compares every field `lib_tcstring` exposes.
fn check(input: &str) {
    let ours = TcString::parse(input).unwrap();
    let theirs = TcModelV2::try_from(input).unwrap();
    assert_eq!(theirs.created_at, ours.created().unix_millis());
    assert_eq!(theirs.updated_at, ours.last_updated().unix_millis());
    assert_eq!(theirs.cmp_id, ours.cmp_id());
    assert_eq!(theirs.cmp_version, ours.cmp_version());
    assert_eq!(theirs.consent_screen, ours.consent_screen());
    assert_eq!(theirs.consent_language, ours.consent_language().to_string());
    assert_eq!(theirs.vendor_list_version, ours.vendor_list_version());
    assert_eq!(
        theirs.tcf_policy_version,
        u16::from(ours.tcf_policy_version())
    );
    assert_eq!(theirs.is_service_specific, ours.is_service_specific());
    assert_eq!(
        theirs.use_non_standard_stacks,
        ours.use_non_standard_texts()
    );
    assert_eq!(
        theirs.special_feature_opt_ins,
        ones(12, |n| ours.special_feature_opt_in(n))
    );
    assert_eq!(
        theirs.purposes_consent,
        ones(24, |n| ours.purpose_consent(n))
    );
    assert_eq!(
        theirs.purposes_li_transparency,
        ones(24, |n| ours.purpose_legitimate_interest(n))
    );
    assert_eq!(theirs.purpose_one_treatment, ours.purpose_one_treatment());
    assert_eq!(
        theirs.publisher_country_code,
        ours.publisher_cc().to_string()
    );
    assert_eq!(
        theirs.vendors_consent,
        ours.vendor_consents().iter().collect::<Vec<_>>()
    );
    assert_eq!(
        theirs.vendors_li_consent,
        ours.vendor_legitimate_interests()
            .iter()
            .collect::<Vec<_>>()
    );
    let restrictions: Vec<_> = ours
        .publisher_restrictions()
        .map(|r| lib_tcstring::PublisherRestriction {
            purpose_id: r.purpose_id(),
            restriction_type: restriction_type(r.restriction_type()),
            vendor_list: r.vendors().collect(),
        })
        .collect();
    assert_eq!(theirs.publisher_restrictions, restrictions);
    assert_eq!(
        theirs.disclosed_vendors,
        ours.disclosed_vendors()
            .map(|s| s.iter().collect::<Vec<_>>())
            .unwrap_or_default()
    );
    assert_eq!(
        theirs.allowed_vendors,
        ours.allowed_vendors()
            .map(|s| s.iter().collect::<Vec<_>>())
            .unwrap_or_default()
    );
    let p = ours.publisher_tc().copied().unwrap_or_default();
    assert_eq!(
        theirs.publisher_purposes_consent,
        ones(24, |n| p.purpose_consent(n))
    );
    assert_eq!(
        theirs.publisher_purposes_li_transparency,
        ones(24, |n| p.purpose_legitimate_interest(n))
    );
    let custom = u32::from(p.num_custom_purposes());
    assert_eq!(
        theirs.custom_purposes_consent,
        ones(custom, |n| p.custom_purpose_consent(n))
    );
    assert_eq!(
        theirs.custom_purposes_li_transparency,
        ones(custom, |n| p.custom_purpose_legitimate_interest(n))
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn agrees_with_lib_tcstring_on_random_valid_strings(model in model(u16::MAX - 1)) {
        check(&model.build(Padding::Byte).encode());
    }
}

#[test]
fn agrees_with_lib_tcstring_on_the_vectors() {
    for input in [
        "CQSbk4AQSbk4ANwAAAENAwCgAAAAAAAAAAYgACPAAAAA.IDKQA4AAgAKAGQAygAAA.YAAAAAAAAAAA",
        "COtybn4PA_zT4KjACBENAPCIAEBAAECAAIAAAAAAAAAA",
        "COrEAV4OrXx94ACABBENAHCIAD-AAAAAAACAAxAAAAgAIAwgAgAAAAEAgQAAAAAEAYQAQAAAACAAAABAAA.IBAgAAAgAIAwgAgAAAAEAAAACA.QAagAQAgAIAwgA",
        "COv__-wOv__-wC2AAAENAPCgAAAAAAAAAAAAA_wAQA_gEBABAEAAAA",
        "COwBOpCOwBOpCLqAAAENAPCAAAAAAAAAAAAAFfwAYFfAV-BVkAGBVYFWAAA",
        "COvzTO5OvzTO5BRAAAENAPCoALIAADgAAAAAAewAwABAAlAB6ABBFADBQAQA9hAAAcAA",
        crate::vectors::LIVERAMP_720,
        // V10 without its `=` (disagreement 2).
        "COtybn4PA_zT4KjACBENAPCIAEBAAECAAIAAAAAAAAAA.cAAAAAAAITg",
    ] {
        check(input);
    }
}

#[test]
fn known_disagreements() {
    // 2: `=` padding.
    let v10 = "COtybn4PA_zT4KjACBENAPCIAEBAAECAAIAAAAAAAAAA.cAAAAAAAITg=";
    assert!(TcString::parse(v10).is_ok());
    assert!(TcModelV2::try_from(v10).is_err());

    // 3: 6-bit padding giving 4n + 1 characters. A core of 266 bits takes 45 characters.
    let tc = TcString::builder().vendor_consents(1..=7).build().unwrap();
    let sextet = tc.encode();
    assert_eq!(sextet.len() % 4, 1);
    assert!(TcString::parse(&sextet).is_ok());
    assert!(TcModelV2::try_from(sextet.as_str()).is_err());
    let byte = tc
        .to_builder()
        .padding(Padding::Byte)
        .build()
        .unwrap()
        .encode();
    check(&byte);

    // 4: the core segment after another segment.
    let core_last = "IBAgAAAgAIAwgAgAAAAEAAAACA.COrEAV4OrXx94ACABBENAHCIAD-AAAAAAACAAxAAAAgAIAwgAgAAAAEAgQAAAAAEAYQAQAAAACAAAABAAA";
    assert!(TcString::parse(core_last).is_ok());
    assert!(TcModelV2::try_from(core_last).is_err());
}
