//! Property tests: random models survive encode → parse → encode, accessors agree with the model,
//! the encoder picks the smaller vendor encoding, and arbitrary input never panics the decoder.

use consent_tcf::{
    Alpha2, Padding, RestrictionType, TcString, Timestamp, VendorEncoding, VendorRange, VendorSet,
};
use proptest::prelude::*;

/// A publisher restriction: purpose, type bits, (start, end) ranges.
pub(crate) type Restriction = (u8, u8, Vec<(u16, u16)>);

/// A plain description of a TC string, independent of the crate's representation.
#[derive(Debug, Clone)]
pub(crate) struct Model {
    pub(crate) created: u64,
    pub(crate) last_updated: u64,
    pub(crate) cmp_id: u16,
    pub(crate) cmp_version: u16,
    pub(crate) consent_screen: u8,
    pub(crate) language: [u8; 2],
    pub(crate) vendor_list_version: u16,
    pub(crate) policy_version: u8,
    pub(crate) service_specific: bool,
    pub(crate) non_standard_texts: bool,
    pub(crate) special_features: u16,
    pub(crate) purpose_consents: u32,
    pub(crate) purpose_lis: u32,
    pub(crate) purpose_one_treatment: bool,
    pub(crate) country: [u8; 2],
    pub(crate) vendor_consents: Vec<u16>,
    pub(crate) vendor_lis: Vec<u16>,
    pub(crate) restrictions: Vec<Restriction>,
    pub(crate) disclosed: Option<Vec<u16>>,
    pub(crate) allowed: Option<Vec<u16>>,
    pub(crate) publisher_tc: Option<(u32, u32, u8, u64, u64)>,
}

/// Vendor id lists: sparse, clustered in runs (which favour the range encoding), or empty.
fn vendor_ids(max: u16) -> impl Strategy<Value = Vec<u16>> {
    prop_oneof![
        Just(Vec::new()),
        prop::collection::vec(1..=max, 0..40),
        prop::collection::vec((1..=max, 0u16..80), 0..8).prop_map(move |runs| {
            runs.into_iter()
                .flat_map(|(start, len)| start..=start.saturating_add(len).min(max))
                .collect()
        }),
    ]
}

fn letters() -> impl Strategy<Value = [u8; 2]> {
    (b'A'..=b'Z', b'A'..=b'Z').prop_map(|(a, b)| [a, b])
}

/// Random models. Vendor ids stop at `max_id` (the differential test needs 65534: see there).
pub(crate) fn model(max_id: u16) -> impl Strategy<Value = Model> {
    let header = (
        0..=Timestamp::MAX_DECISECONDS,
        prop_oneof![Just(None), (0..=Timestamp::MAX_DECISECONDS).prop_map(Some)],
        0u16..4096,
        0u16..4096,
        0u8..64,
        letters(),
        0u16..4096,
        0u8..64,
        any::<bool>(),
        any::<bool>(),
    );
    let purposes = (
        0u16..4096,
        0u32..(1 << 24),
        0u32..(1 << 24),
        any::<bool>(),
        letters(),
    );
    let restriction = (
        0u8..64,
        0u8..4,
        prop::collection::vec((1..=max_id, 0u16..50), 0..5),
    )
        .prop_map(move |(purpose, kind, ranges)| {
            let ranges = ranges
                .into_iter()
                .map(|(start, len)| (start, start.saturating_add(len).min(max_id)))
                .collect();
            (purpose, kind, ranges)
        });
    let segments = (
        vendor_ids(max_id),
        vendor_ids(max_id),
        prop::collection::vec(restriction, 0..4),
        prop::option::of(vendor_ids(max_id)),
        prop::option::of(vendor_ids(max_id)),
        prop::option::of((
            0u32..(1 << 24),
            0u32..(1 << 24),
            0u8..64,
            any::<u64>(),
            any::<u64>(),
        )),
    );
    (header, purposes, segments).prop_map(
        |(
            (created, last, cmp_id, cmp_version, screen, language, vlv, policy, ss, nst),
            (sf, pc, pli, p1t, country),
            (vc, vli, restrictions, disclosed, allowed, publisher_tc),
        )| Model {
            created,
            last_updated: last.unwrap_or(created),
            cmp_id,
            cmp_version,
            consent_screen: screen,
            language,
            vendor_list_version: vlv,
            policy_version: policy,
            service_specific: ss,
            non_standard_texts: nst,
            special_features: sf,
            purpose_consents: pc,
            purpose_lis: pli,
            purpose_one_treatment: p1t,
            country,
            vendor_consents: vc,
            vendor_lis: vli,
            restrictions,
            disclosed,
            allowed,
            publisher_tc: publisher_tc.map(|(c, l, n, cc, cl)| {
                let mask = if n == 0 {
                    0
                } else {
                    u64::MAX >> (64 - u32::from(n))
                };
                (c, l, n, cc & mask, cl & mask)
            }),
        },
    )
}

fn restriction_type(bits: u8) -> RestrictionType {
    match bits {
        0 => RestrictionType::NotAllowed,
        1 => RestrictionType::RequireConsent,
        2 => RestrictionType::RequireLegitimateInterest,
        _ => RestrictionType::Undefined,
    }
}

fn alpha2(code: [u8; 2]) -> Alpha2 {
    Alpha2::new(std::str::from_utf8(&code).unwrap()).unwrap()
}

impl Model {
    pub(crate) fn build(&self, padding: Padding) -> TcString {
        let mut b = TcString::builder()
            .created(Timestamp::from_deciseconds(self.created))
            .last_updated(Timestamp::from_deciseconds(self.last_updated))
            .cmp_id(self.cmp_id)
            .cmp_version(self.cmp_version)
            .consent_screen(self.consent_screen)
            .consent_language(alpha2(self.language))
            .vendor_list_version(self.vendor_list_version)
            .tcf_policy_version(self.policy_version)
            .is_service_specific(self.service_specific)
            .use_non_standard_texts(self.non_standard_texts)
            .purpose_one_treatment(self.purpose_one_treatment)
            .publisher_cc(alpha2(self.country))
            .vendor_consents(self.vendor_consents.iter().copied())
            .vendor_legitimate_interests(self.vendor_lis.iter().copied())
            .padding(padding);
        for n in 1..=12 {
            b = b.special_feature_opt_in(n, self.special_feature(n));
        }
        for n in 1..=24 {
            b = b
                .purpose_consent(n, self.purpose_consent(n))
                .purpose_legitimate_interest(n, self.purpose_li(n));
        }
        for (purpose, kind, ranges) in &self.restrictions {
            b = b.publisher_restriction(
                *purpose,
                restriction_type(*kind),
                ranges
                    .iter()
                    .map(|&(start, end)| VendorRange { start, end }),
            );
        }
        if let Some(ids) = &self.disclosed {
            b = b.disclosed_vendors(ids.iter().copied());
        }
        if let Some(ids) = &self.allowed {
            b = b.allowed_vendors(ids.iter().copied());
        }
        if let Some((c, l, n, cc, cl)) = self.publisher_tc {
            b = b.num_custom_purposes(n);
            for i in 1..=24 {
                b = b
                    .publisher_purpose_consent(i, (c >> (24 - i)) & 1 == 1)
                    .publisher_purpose_legitimate_interest(i, (l >> (24 - i)) & 1 == 1);
            }
            for i in 1..=u32::from(n) {
                b = b
                    .custom_purpose_consent(i, (cc >> (u32::from(n) - i)) & 1 == 1)
                    .custom_purpose_legitimate_interest(i, (cl >> (u32::from(n) - i)) & 1 == 1);
            }
        }
        b.build().unwrap()
    }

    pub(crate) fn special_feature(&self, n: u32) -> bool {
        (self.special_features >> (12 - n)) & 1 == 1
    }

    pub(crate) fn purpose_consent(&self, n: u32) -> bool {
        (self.purpose_consents >> (24 - n)) & 1 == 1
    }

    pub(crate) fn purpose_li(&self, n: u32) -> bool {
        (self.purpose_lis >> (24 - n)) & 1 == 1
    }
}

fn sorted(ids: &[u16]) -> Vec<u16> {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// The bits of the two encodings of a set: (bitfield, range).
fn costs(ids: &[u16]) -> (usize, usize) {
    let ids = sorted(ids);
    let max = ids.last().copied().unwrap_or(0);
    let mut range = 12;
    let mut i = 0;
    while i < ids.len() {
        let mut j = i;
        while j + 1 < ids.len() && ids[j + 1] == ids[j] + 1 {
            j += 1;
        }
        range += if i == j { 17 } else { 33 };
        i = j + 1;
    }
    (usize::from(max), range)
}

fn check_set(set: &VendorSet, ids: &[u16]) {
    let ids = sorted(ids);
    assert_eq!(set.iter().collect::<Vec<_>>(), ids);
    assert_eq!(set.max_vendor_id(), ids.last().copied().unwrap_or(0));
    let (bitfield, range) = costs(&ids);
    let smaller = if range < bitfield {
        VendorEncoding::Range
    } else {
        VendorEncoding::Bitfield
    };
    assert_eq!(set.source_encoding(), Some(smaller));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(192))]

    #[test]
    fn encode_parse_encode_round_trips(model in model(u16::MAX), padding in prop_oneof![Just(Padding::Sextet), Just(Padding::Byte), Just(Padding::Quad)]) {
        let built = model.build(padding);
        let text = built.encode();
        let parsed = TcString::parse(&text).unwrap();
        prop_assert_eq!(&parsed, &built);
        prop_assert_eq!(parsed.encode(), text.clone());
        prop_assert_eq!(parsed.padding(), if padding == Padding::Sextet { Padding::Sextet } else { parsed.padding() });

        // Accessors agree with the model.
        prop_assert_eq!(parsed.created().deciseconds(), model.created);
        prop_assert_eq!(parsed.last_updated().deciseconds(), model.last_updated);
        prop_assert_eq!(parsed.cmp_id(), model.cmp_id);
        prop_assert_eq!(parsed.cmp_version(), model.cmp_version);
        prop_assert_eq!(parsed.consent_screen(), model.consent_screen);
        prop_assert_eq!(parsed.consent_language().to_bytes(), model.language);
        prop_assert_eq!(parsed.publisher_cc().to_bytes(), model.country);
        prop_assert_eq!(parsed.vendor_list_version(), model.vendor_list_version);
        prop_assert_eq!(parsed.tcf_policy_version(), model.policy_version);
        prop_assert_eq!(parsed.is_service_specific(), model.service_specific);
        prop_assert_eq!(parsed.use_non_standard_texts(), model.non_standard_texts);
        prop_assert_eq!(parsed.purpose_one_treatment(), model.purpose_one_treatment);
        for n in 1..=12 {
            prop_assert_eq!(parsed.special_feature_opt_in(n), model.special_feature(n));
        }
        for n in 1..=24 {
            prop_assert_eq!(parsed.purpose_consent(n), model.purpose_consent(n));
            prop_assert_eq!(parsed.purpose_legitimate_interest(n), model.purpose_li(n));
        }
        prop_assert!(!parsed.purpose_consent(0) && !parsed.purpose_consent(25));
        check_set(parsed.vendor_consents(), &model.vendor_consents);
        check_set(parsed.vendor_legitimate_interests(), &model.vendor_lis);
        for &id in &model.vendor_consents {
            prop_assert!(parsed.vendor_consent(id));
        }
        match (&model.disclosed, parsed.disclosed_vendors()) {
            (Some(ids), Some(set)) => check_set(set, ids),
            (None, None) => {}
            (m, p) => prop_assert!(false, "disclosed {:?} vs {:?}", m, p),
        }
        match (&model.allowed, parsed.allowed_vendors()) {
            (Some(ids), Some(set)) => check_set(set, ids),
            (None, None) => {}
            (m, p) => prop_assert!(false, "allowed {:?} vs {:?}", m, p),
        }
        let restrictions: Vec<_> = parsed
            .publisher_restrictions()
            .map(|r| (r.purpose_id(), r.restriction_type(), r.ranges().iter().map(|x| (x.start, x.end)).collect::<Vec<_>>()))
            .collect();
        let expected: Vec<_> = model
            .restrictions
            .iter()
            .map(|(p, k, ranges)| (*p, restriction_type(*k), ranges.clone()))
            .collect();
        prop_assert_eq!(restrictions, expected);
        prop_assert_eq!(parsed.publisher_tc().is_some(), model.publisher_tc.is_some());
        if let (Some(p), Some((c, l, n, cc, cl))) = (parsed.publisher_tc(), model.publisher_tc) {
            prop_assert_eq!(p.num_custom_purposes(), n);
            for i in 1..=24 {
                prop_assert_eq!(p.purpose_consent(i), (c >> (24 - i)) & 1 == 1);
                prop_assert_eq!(p.purpose_legitimate_interest(i), (l >> (24 - i)) & 1 == 1);
            }
            for i in 1..=u32::from(n) {
                prop_assert_eq!(p.custom_purpose_consent(i), (cc >> (u32::from(n) - i)) & 1 == 1);
                prop_assert_eq!(p.custom_purpose_legitimate_interest(i), (cl >> (u32::from(n) - i)) & 1 == 1);
            }
        }
        // The strict padding rule holds for the default padding.
        if padding == Padding::Sextet {
            prop_assert!(!parsed.violations().iter().any(|v| v.rule() == "padding"));
        }
    }

    #[test]
    fn arbitrary_input_never_panics_and_what_decodes_round_trips(
        input in "[A-Za-z0-9_=.-]{0,120}|[A-Za-z0-9_-]{40,200}(\\.[A-Za-z0-9_-]{1,40}){0,3}",
    ) {
        if let Ok(tc) = TcString::parse(&input) {
            let _ = tc.validate();
            let again = TcString::parse(&tc.encode()).unwrap();
            prop_assert_eq!(&again, &tc);
            prop_assert_eq!(again.encode(), tc.encode());
        }
    }
}
