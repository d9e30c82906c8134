//! The decoded TC string: parsing, accessors, validation and encoding.

use std::fmt;
use std::ops::ControlFlow;
use std::str::FromStr;

use crate::bits::{BitReader, BitWriter, Padding, field};
use crate::error::{ParseError, SegmentType, TcfError, ValidationError, VendorSection};
use crate::types::{
    Alpha2, PublisherRestriction, PublisherTc, RangeList, RestrictionType, Restrictions, Timestamp,
    VendorEncoding, VendorRange, VendorSet, flag,
};

/// How the string was written, so that re-encoding a parsed string gives back the same text.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Layout {
    pub(crate) padding: Padding,
    /// Whether segments were padded with `=` to a multiple of 4 characters.
    pub(crate) equals: bool,
    /// Segment types in the order they appeared; `count` of them are set.
    order: [u8; 4],
    count: u8,
}

/// Rule breaches noticed while decoding, which [`TcString::validate`] reports. Lenient parsing keeps
/// going past them.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Findings {
    reversed_range: Option<(VendorSection, u16, u16)>,
    out_of_range: Option<(VendorSection, u16, u16)>,
    pub(crate) excess_padding: Option<(SegmentType, usize)>,
}

/// A decoded IAB TCF v2 TC string: the core segment and the optional Disclosed Vendors, Allowed
/// Vendors and Publisher TC segments.
///
/// Decode with [`TcString::parse`], check the rules of the specification with
/// [`TcString::validate`], create or change one with [`TcString::builder`] /
/// [`TcString::to_builder`], and write it with [`TcString::encode`]. Numbered accessors are 1-based as
/// in the specification (`purpose_consent(1)` is purpose 1) and return `false` out of range.
///
/// Equality compares content only: two strings that differ only in padding, `=` or segment order
/// compare equal.
#[derive(Clone)]
pub struct TcString {
    pub(crate) version: u8,
    pub(crate) created: Timestamp,
    pub(crate) last_updated: Timestamp,
    pub(crate) cmp_id: u16,
    pub(crate) cmp_version: u16,
    pub(crate) consent_screen: u8,
    pub(crate) consent_language: Alpha2,
    pub(crate) vendor_list_version: u16,
    pub(crate) tcf_policy_version: u8,
    pub(crate) is_service_specific: bool,
    pub(crate) use_non_standard_texts: bool,
    /// SpecialFeatureOptIns, 12 bits, right-aligned (bit 11 is special feature 1).
    pub(crate) special_features: u16,
    /// PurposesConsent, 24 bits, right-aligned.
    pub(crate) purpose_consents: u32,
    /// PurposesLITransparency, 24 bits, right-aligned.
    pub(crate) purpose_legitimate_interests: u32,
    pub(crate) purpose_one_treatment: bool,
    pub(crate) publisher_cc: Alpha2,
    pub(crate) vendor_consents: VendorSet,
    pub(crate) vendor_legitimate_interests: VendorSet,
    /// NumPubRestrictions.
    pub(crate) num_restrictions: u16,
    /// The restrictions, each a header entry followed by its ranges.
    pub(crate) restrictions: RangeList,
    pub(crate) disclosed_vendors: Option<VendorSet>,
    pub(crate) allowed_vendors: Option<VendorSet>,
    pub(crate) publisher_tc: Option<PublisherTc>,
    pub(crate) layout: Layout,
    pub(crate) findings: Findings,
}

impl PartialEq for TcString {
    fn eq(&self, other: &Self) -> bool {
        self.version == other.version
            && self.created == other.created
            && self.last_updated == other.last_updated
            && self.cmp_id == other.cmp_id
            && self.cmp_version == other.cmp_version
            && self.consent_screen == other.consent_screen
            && self.consent_language == other.consent_language
            && self.vendor_list_version == other.vendor_list_version
            && self.tcf_policy_version == other.tcf_policy_version
            && self.is_service_specific == other.is_service_specific
            && self.use_non_standard_texts == other.use_non_standard_texts
            && self.special_features == other.special_features
            && self.purpose_consents == other.purpose_consents
            && self.purpose_legitimate_interests == other.purpose_legitimate_interests
            && self.purpose_one_treatment == other.purpose_one_treatment
            && self.publisher_cc == other.publisher_cc
            && self.vendor_consents == other.vendor_consents
            && self.vendor_legitimate_interests == other.vendor_legitimate_interests
            && self
                .publisher_restrictions()
                .eq(other.publisher_restrictions())
            && self.disclosed_vendors == other.disclosed_vendors
            && self.allowed_vendors == other.allowed_vendors
            && self.publisher_tc == other.publisher_tc
    }
}

impl Eq for TcString {}

impl fmt::Debug for TcString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Restrictions<'a>(&'a TcString);
        impl fmt::Debug for Restrictions<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_list()
                    .entries(self.0.publisher_restrictions())
                    .finish()
            }
        }
        f.debug_struct("TcString")
            .field("version", &self.version)
            .field("created", &self.created)
            .field("last_updated", &self.last_updated)
            .field("cmp_id", &self.cmp_id)
            .field("cmp_version", &self.cmp_version)
            .field("consent_screen", &self.consent_screen)
            .field("consent_language", &self.consent_language)
            .field("vendor_list_version", &self.vendor_list_version)
            .field("tcf_policy_version", &self.tcf_policy_version)
            .field("is_service_specific", &self.is_service_specific)
            .field("use_non_standard_texts", &self.use_non_standard_texts)
            .field(
                "special_feature_opt_ins",
                &format_args!("{:012b}", self.special_features),
            )
            .field(
                "purpose_consents",
                &format_args!("{:024b}", self.purpose_consents),
            )
            .field(
                "purpose_legitimate_interests",
                &format_args!("{:024b}", self.purpose_legitimate_interests),
            )
            .field("purpose_one_treatment", &self.purpose_one_treatment)
            .field("publisher_cc", &self.publisher_cc)
            .field("vendor_consents", &self.vendor_consents)
            .field(
                "vendor_legitimate_interests",
                &self.vendor_legitimate_interests,
            )
            .field("publisher_restrictions", &Restrictions(self))
            .field("disclosed_vendors", &self.disclosed_vendors)
            .field("allowed_vendors", &self.allowed_vendors)
            .field("publisher_tc", &self.publisher_tc)
            .finish()
    }
}

impl Default for TcString {
    /// An empty TCF v2.2 string: version 2, policy version 4, service-specific, language `EN`,
    /// publisher country `AA`, timestamps 0, nothing consented and no optional segment.
    #[inline]
    fn default() -> Self {
        TcString {
            version: 2,
            created: Timestamp::default(),
            last_updated: Timestamp::default(),
            cmp_id: 0,
            cmp_version: 0,
            consent_screen: 0,
            consent_language: Alpha2::EN,
            vendor_list_version: 0,
            tcf_policy_version: 4,
            is_service_specific: true,
            use_non_standard_texts: false,
            special_features: 0,
            purpose_consents: 0,
            purpose_legitimate_interests: 0,
            purpose_one_treatment: false,
            publisher_cc: Alpha2::AA,
            vendor_consents: VendorSet::new(),
            vendor_legitimate_interests: VendorSet::new(),
            num_restrictions: 0,
            restrictions: RangeList::default(),
            disclosed_vendors: None,
            allowed_vendors: None,
            publisher_tc: None,
            layout: Layout::default(),
            findings: Findings::default(),
        }
    }
}

const F_VERSION: &str = "Version";

/// An empty optional segment's set, as a constant: assigning it copies from read-only data, where
/// building `Some(VendorSet::new())` on the stack first and moving it stalls store forwarding.
const EMPTY_SECTION: Option<VendorSet> = Some(VendorSet::new());

impl TcString {
    /// Decodes a TC string.
    ///
    /// Segments may come in any order (each carries its type); each may end with `=` padding.
    /// Decoding is lenient: older strings (policy versions below 4, global scope, no Disclosed
    /// Vendors segment, any padding) decode, and so do strings with reversed or out-of-range vendor
    /// ranges, which are skipped and reported by [`TcString::validate`].
    ///
    /// Allocation: none for a vendor section written as a bitfield of up to 256 ids or as up to 8
    /// sorted ranges (any ids), and none for up to 8 publisher-restriction entries (a header per
    /// restriction plus its ranges). Beyond that, one allocation per vendor section (never one per
    /// vendor) and one growing list for the restrictions. A typical core-only string therefore
    /// decodes without touching the heap.
    ///
    /// # Errors
    ///
    /// A [`ParseError`] when the input is not base64url, ends before a field, lacks a core segment,
    /// repeats a segment, has an unknown segment type or is a TCF v1 string.
    #[inline]
    pub fn parse(input: &str) -> Result<TcString, ParseError> {
        // Decoding straight into the returned `Result` (one local, returned as is) lets the
        // compiler build the string in the caller's slot instead of copying the whole struct out.
        let mut out = Ok(TcString::default());
        if let Ok(tc) = &mut out
            && let Err(e) = tc.decode(input)
        {
            out = Err(e);
        }
        out
    }

    /// Decodes `input` into `self`, which is a default string.
    #[inline(never)]
    fn decode(&mut self, input: &str) -> Result<(), ParseError> {
        if input.is_empty() {
            return Err(ParseError::Empty);
        }
        let tc = self;
        let mut seen = [false; 4];
        let mut padding_ok = [true; 3];
        let bytes = input.as_bytes();
        let mut start = 0;
        let mut index = 0;
        loop {
            let first = match bytes.get(start) {
                None | Some(b'.') | Some(b'=') => return Err(ParseError::EmptySegment { index }),
                Some(&first) => first,
            };
            let first = crate::bits::sextet(first)
                .ok_or(ParseError::InvalidCharacter { position: start })?;
            let segment = SegmentType::from_id(first >> 3)
                .ok_or(ParseError::UnknownSegmentType(first >> 3))?;
            let id = usize::from(segment.id());
            if seen[id] {
                return Err(ParseError::DuplicateSegment(segment));
            }
            seen[id] = true;
            if let Some(slot) = tc.layout.order.get_mut(usize::from(tc.layout.count)) {
                *slot = segment.id();
                tc.layout.count += 1;
            }

            let mut r = BitReader::new(bytes, start, segment);
            match segment {
                SegmentType::Core => tc.read_core(&mut r)?,
                SegmentType::DisclosedVendors => {
                    r.read(3, "SegmentType")?;
                    tc.disclosed_vendors = EMPTY_SECTION;
                    let set = tc.disclosed_vendors.get_or_insert_with(VendorSet::new);
                    read_vendor_section(
                        &mut r,
                        VendorSection::DisclosedVendors,
                        &mut tc.findings,
                        set,
                    )?;
                }
                SegmentType::AllowedVendors => {
                    r.read(3, "SegmentType")?;
                    tc.allowed_vendors = EMPTY_SECTION;
                    let set = tc.allowed_vendors.get_or_insert_with(VendorSet::new);
                    read_vendor_section(
                        &mut r,
                        VendorSection::AllowedVendors,
                        &mut tc.findings,
                        set,
                    )?;
                }
                SegmentType::PublisherTc => {
                    r.read(3, "SegmentType")?;
                    tc.publisher_tc = Some(read_publisher_tc(&mut r)?);
                }
            }
            let used = r.bits_read();
            let end = r.finish()?;
            tc.layout.equals |= end.equals > 0;
            if end.trailing_bits >= 6 && tc.findings.excess_padding.is_none() {
                tc.findings.excess_padding = Some((segment, end.trailing_bits));
            }
            for (ok, style) in
                padding_ok
                    .iter_mut()
                    .zip([Padding::Sextet, Padding::Byte, Padding::Quad])
            {
                *ok &= style.chars(used) == end.chars;
            }
            match end.dot {
                Some(dot) => {
                    start = dot + 1;
                    index += 1;
                }
                None => break,
            }
        }
        if !seen[0] {
            return Err(ParseError::MissingCore);
        }
        tc.layout.padding = if padding_ok[0] {
            Padding::Sextet
        } else if padding_ok[1] {
            Padding::Byte
        } else if padding_ok[2] {
            Padding::Quad
        } else {
            Padding::Sextet
        };
        Ok(())
    }

    /// Decodes a TC string and checks every rule of [`TcString::validate`].
    ///
    /// # Errors
    ///
    /// [`TcfError::Parse`] when the string does not decode, [`TcfError::Invalid`] with the first rule
    /// broken.
    pub fn parse_strict(input: &str) -> Result<TcString, TcfError> {
        let tc = TcString::parse(input)?;
        tc.validate()?;
        Ok(tc)
    }

    fn read_core(&mut self, r: &mut BitReader<'_>) -> Result<(), ParseError> {
        match r.core_header() {
            Some(h) => self.core_fields_from(&h)?,
            None => self.read_core_fields(r)?,
        }
        self.read_core_sections(r)
    }

    /// The fixed-width core fields from a decoded 213-bit header (offsets from the spec's table).
    fn core_fields_from(&mut self, h: &[u64; 5]) -> Result<(), ParseError> {
        self.version = field(h, 0, 6) as u8;
        if self.version == 1 {
            return Err(ParseError::UnsupportedVersion(1));
        }
        self.created = Timestamp::from_deciseconds(field(h, 6, 36));
        self.last_updated = Timestamp::from_deciseconds(field(h, 42, 36));
        self.cmp_id = field(h, 78, 12) as u16;
        self.cmp_version = field(h, 90, 12) as u16;
        self.consent_screen = field(h, 102, 6) as u8;
        self.consent_language = Alpha2::from_raw(field(h, 108, 12));
        self.vendor_list_version = field(h, 120, 12) as u16;
        self.tcf_policy_version = field(h, 132, 6) as u8;
        self.is_service_specific = field(h, 138, 1) == 1;
        self.use_non_standard_texts = field(h, 139, 1) == 1;
        self.special_features = field(h, 140, 12) as u16;
        self.purpose_consents = field(h, 152, 24) as u32;
        self.purpose_legitimate_interests = field(h, 176, 24) as u32;
        self.purpose_one_treatment = field(h, 200, 1) == 1;
        self.publisher_cc = Alpha2::from_raw(field(h, 201, 12));
        Ok(())
    }

    /// The fixed-width core fields read one by one (short or malformed segments).
    fn read_core_fields(&mut self, r: &mut BitReader<'_>) -> Result<(), ParseError> {
        self.version = r.read(6, F_VERSION)? as u8;
        if self.version == 1 {
            return Err(ParseError::UnsupportedVersion(1));
        }
        self.created = Timestamp::from_deciseconds(r.read(36, "Created")?);
        self.last_updated = Timestamp::from_deciseconds(r.read(36, "LastUpdated")?);
        self.cmp_id = r.read(12, "CmpId")? as u16;
        self.cmp_version = r.read(12, "CmpVersion")? as u16;
        self.consent_screen = r.read(6, "ConsentScreen")? as u8;
        self.consent_language = Alpha2::from_raw(r.read(12, "ConsentLanguage")?);
        self.vendor_list_version = r.read(12, "VendorListVersion")? as u16;
        self.tcf_policy_version = r.read(6, "TcfPolicyVersion")? as u8;
        self.is_service_specific = r.read_bool("IsServiceSpecific")?;
        self.use_non_standard_texts = r.read_bool("UseNonStandardTexts")?;
        self.special_features = r.read(12, "SpecialFeatureOptIns")? as u16;
        self.purpose_consents = r.read(24, "PurposesConsent")? as u32;
        self.purpose_legitimate_interests = r.read(24, "PurposesLITransparency")? as u32;
        self.purpose_one_treatment = r.read_bool("PurposeOneTreatment")?;
        self.publisher_cc = Alpha2::from_raw(r.read(12, "PublisherCC")?);
        Ok(())
    }

    /// The vendor sections and publisher restrictions of the core segment, from bit 213.
    fn read_core_sections(&mut self, r: &mut BitReader<'_>) -> Result<(), ParseError> {
        read_vendor_section(
            r,
            VendorSection::VendorConsents,
            &mut self.findings,
            &mut self.vendor_consents,
        )?;
        read_vendor_section(
            r,
            VendorSection::VendorLegitimateInterests,
            &mut self.findings,
            &mut self.vendor_legitimate_interests,
        )?;
        let count = r.read(12, "NumPubRestrictions")? as u16;
        self.num_restrictions = count;
        for _ in 0..count {
            let purpose_id = r.read(6, "PurposeId")? as u8;
            let restriction_type = RestrictionType::from_bits(r.read(2, "RestrictionType")?);
            let entries = r.read(12, "NumEntries")? as u16;
            self.restrictions
                .push(RangeList::header(purpose_id, restriction_type, entries));
            for _ in 0..entries {
                let is_range = r.read_bool("IsARange")?;
                let start = r.read(16, "StartOrOnlyVendorId")? as u16;
                let end = if is_range {
                    r.read(16, "EndVendorId")? as u16
                } else {
                    start
                };
                let section = VendorSection::PublisherRestrictions;
                if end < start {
                    self.findings
                        .reversed_range
                        .get_or_insert((section, start, end));
                }
                if start == 0 {
                    self.findings
                        .out_of_range
                        .get_or_insert((section, 0, u16::MAX));
                }
                self.restrictions.push(VendorRange { start, end });
            }
        }
        Ok(())
    }

    /// Checks the strict rules of the TCF specification (`standards-and-peers.md` §1.6) and returns
    /// the first one broken, checked in this order:
    ///
    /// 1. version is 2;
    /// 2. range entries do not end before they start;
    /// 3. vendor ids are between 1 and the section's MaxVendorId;
    /// 4. each segment ends with fewer than 6 padding bits;
    /// 5. ConsentLanguage and PublisherCC are letters;
    /// 6. IsServiceSpecific is 1;
    /// 7. TcfPolicyVersion is at least 4;
    /// 8. with policy version 4 or more, legitimate interest is not set for purposes 3 to 6;
    /// 9. Created equals LastUpdated, and both are day-level (midnight UTC);
    /// 10. the Disclosed Vendors segment is present (TCF 2.3).
    ///
    /// "No read past the end" is enforced by [`TcString::parse`] itself
    /// ([`ParseError::UnexpectedEnd`]). The date-dependent rules (timestamps since December 2021,
    /// policy 4 since September 2023, Disclosed Vendors since TCF 2.3) are applied to every string:
    /// any string still in use today must follow them.
    ///
    /// # Errors
    ///
    /// The [`ValidationError`] of the first rule broken.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let mut first = None;
        self.check_rules(&mut |e| {
            first = Some(e);
            ControlFlow::Break(())
        });
        first.map_or(Ok(()), Err)
    }

    /// Every rule of [`TcString::validate`] the string breaks, in the same order (empty when valid).
    pub fn violations(&self) -> Vec<ValidationError> {
        let mut all = Vec::new();
        self.check_rules(&mut |e| {
            all.push(e);
            ControlFlow::Continue(())
        });
        all
    }

    fn check_rules(&self, report: &mut dyn FnMut(ValidationError) -> ControlFlow<()>) {
        let _ = self.try_check_rules(report);
    }

    fn try_check_rules(
        &self,
        report: &mut dyn FnMut(ValidationError) -> ControlFlow<()>,
    ) -> ControlFlow<()> {
        if self.version != 2 {
            report(ValidationError::Version {
                found: self.version,
            })?;
        }
        if let Some((section, start, end)) = self.findings.reversed_range {
            report(ValidationError::RangeEndBeforeStart {
                section,
                start,
                end,
            })?;
        }
        if let Some((section, id, max)) = self.findings.out_of_range {
            report(ValidationError::VendorIdOutOfRange { section, id, max })?;
        }
        if let Some((segment, bits)) = self.findings.excess_padding {
            report(ValidationError::ExcessPadding { segment, bits })?;
        }
        if !self.consent_language.is_valid() {
            report(ValidationError::InvalidLetterCode {
                field: "ConsentLanguage",
            })?;
        }
        if !self.publisher_cc.is_valid() {
            report(ValidationError::InvalidLetterCode {
                field: "PublisherCC",
            })?;
        }
        if !self.is_service_specific {
            report(ValidationError::NotServiceSpecific)?;
        }
        if self.tcf_policy_version < 4 {
            report(ValidationError::PolicyVersion {
                found: self.tcf_policy_version,
            })?;
        } else {
            for purpose in 3..=6 {
                if self.purpose_legitimate_interest(purpose) {
                    report(ValidationError::PurposeLegitimateInterest {
                        purpose: purpose as u8,
                        policy_version: self.tcf_policy_version,
                    })?;
                }
            }
        }
        if self.created != self.last_updated {
            report(ValidationError::TimestampsDiffer {
                created: self.created,
                last_updated: self.last_updated,
            })?;
        }
        if !self.created.is_day_level() {
            report(ValidationError::TimestampNotDayLevel {
                field: "Created",
                value: self.created,
            })?;
        }
        if self.last_updated != self.created && !self.last_updated.is_day_level() {
            report(ValidationError::TimestampNotDayLevel {
                field: "LastUpdated",
                value: self.last_updated,
            })?;
        }
        if self.disclosed_vendors.is_none() {
            report(ValidationError::MissingDisclosedVendors)?;
        }
        ControlFlow::Continue(())
    }

    /// Encodes the string.
    ///
    /// Each vendor section is written as a bitfield or a range list, whichever is smaller (the
    /// bitfield on a tie); a section decoded and left unchanged keeps the encoding it was read
    /// with. A parsed string keeps its padding convention, `=` padding and segment order, so
    /// `TcString::parse(s)?.encode() == s` for well-formed input; a built string pads to a 6-bit
    /// boundary, has no `=` and writes the segments in the order core, Disclosed Vendors, Allowed
    /// Vendors, Publisher TC.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(self.encoded_len_hint());
        let mut done = [false; 4];
        let order = self.layout.order[..usize::from(self.layout.count)]
            .iter()
            .copied()
            .chain(0..4);
        for id in order {
            let slot = usize::from(id);
            if done[slot] {
                continue;
            }
            done[slot] = true;
            let present = match id {
                0 => true,
                1 => self.disclosed_vendors.is_some(),
                2 => self.allowed_vendors.is_some(),
                _ => self.publisher_tc.is_some(),
            };
            if !present {
                continue;
            }
            if !out.is_empty() {
                out.push('.');
            }
            let mut w = BitWriter::new(&mut out);
            match id {
                0 => self.write_core(&mut w),
                1 => {
                    w.write(1, 3);
                    if let Some(set) = &self.disclosed_vendors {
                        write_vendor_section(&mut w, set);
                    }
                }
                2 => {
                    w.write(2, 3);
                    if let Some(set) = &self.allowed_vendors {
                        write_vendor_section(&mut w, set);
                    }
                }
                _ => {
                    w.write(3, 3);
                    if let Some(p) = &self.publisher_tc {
                        w.write(u64::from(p.consents), 24);
                        w.write(u64::from(p.legitimate_interests), 24);
                        w.write(u64::from(p.num_custom), 6);
                        let n = u32::from(p.num_custom);
                        write_wide(&mut w, p.custom_consents, n);
                        write_wide(&mut w, p.custom_legitimate_interests, n);
                    }
                }
            }
            w.finish(self.layout.padding, self.layout.equals);
        }
        out
    }

    fn encoded_len_hint(&self) -> usize {
        let vendors = |s: &VendorSet| usize::from(s.max_vendor_id().min(2048)) / 6 + 4;
        48 + vendors(&self.vendor_consents)
            + vendors(&self.vendor_legitimate_interests)
            + self.restrictions.len() * 6
            + self.disclosed_vendors.as_ref().map_or(0, vendors)
            + self.allowed_vendors.as_ref().map_or(0, vendors)
            + if self.publisher_tc.is_some() { 24 } else { 0 }
    }

    fn write_core(&self, w: &mut BitWriter<'_>) {
        w.write(u64::from(self.version), 6);
        w.write(self.created.deciseconds(), 36);
        w.write(self.last_updated.deciseconds(), 36);
        w.write(u64::from(self.cmp_id), 12);
        w.write(u64::from(self.cmp_version), 12);
        w.write(u64::from(self.consent_screen), 6);
        w.write(self.consent_language.raw(), 12);
        w.write(u64::from(self.vendor_list_version), 12);
        w.write(u64::from(self.tcf_policy_version), 6);
        w.write_bool(self.is_service_specific);
        w.write_bool(self.use_non_standard_texts);
        w.write(u64::from(self.special_features), 12);
        w.write(u64::from(self.purpose_consents), 24);
        w.write(u64::from(self.purpose_legitimate_interests), 24);
        w.write_bool(self.purpose_one_treatment);
        w.write(self.publisher_cc.raw(), 12);
        write_vendor_section(w, &self.vendor_consents);
        write_vendor_section(w, &self.vendor_legitimate_interests);
        w.write(u64::from(self.num_restrictions), 12);
        for r in self.publisher_restrictions() {
            w.write(u64::from(r.purpose_id), 6);
            w.write(u64::from(r.restriction_type.bits()), 2);
            w.write(r.ranges.len() as u64, 12);
            for range in r.ranges {
                if range.start == range.end {
                    w.write(0, 1);
                    w.write(u64::from(range.start), 16);
                } else {
                    w.write(1, 1);
                    w.write(u64::from(range.start), 16);
                    w.write(u64::from(range.end), 16);
                }
            }
        }
    }

    // ----- accessors -----

    /// Version (6 bits); 2 for every TCF v2 string.
    pub const fn version(&self) -> u8 {
        self.version
    }

    /// Created: when the string was first created.
    pub const fn created(&self) -> Timestamp {
        self.created
    }

    /// LastUpdated: when the string was last changed.
    pub const fn last_updated(&self) -> Timestamp {
        self.last_updated
    }

    /// CmpId: the IAB-assigned id of the CMP that wrote the string.
    pub const fn cmp_id(&self) -> u16 {
        self.cmp_id
    }

    /// CmpVersion.
    pub const fn cmp_version(&self) -> u16 {
        self.cmp_version
    }

    /// ConsentScreen: the CMP's own number for the screen where consent was given.
    pub const fn consent_screen(&self) -> u8 {
        self.consent_screen
    }

    /// ConsentLanguage (ISO 639-1), displayed as two upper-case letters such as `EN`.
    pub const fn consent_language(&self) -> Alpha2 {
        self.consent_language
    }

    /// VendorListVersion: the GVL version used.
    pub const fn vendor_list_version(&self) -> u16 {
        self.vendor_list_version
    }

    /// TcfPolicyVersion (4 for TCF v2.2).
    pub const fn tcf_policy_version(&self) -> u8 {
        self.tcf_policy_version
    }

    /// IsServiceSpecific (must be true since September 2021).
    pub const fn is_service_specific(&self) -> bool {
        self.is_service_specific
    }

    /// UseNonStandardTexts (formerly UseNonStandardStacks).
    pub const fn use_non_standard_texts(&self) -> bool {
        self.use_non_standard_texts
    }

    /// PurposeOneTreatment: true when purpose 1 was not disclosed (publisher country rule).
    pub const fn purpose_one_treatment(&self) -> bool {
        self.purpose_one_treatment
    }

    /// PublisherCC (ISO 3166-1 alpha-2), displayed as two upper-case letters such as `DE`.
    pub const fn publisher_cc(&self) -> Alpha2 {
        self.publisher_cc
    }

    /// Whether the user opted in to special feature `n` (1 to 12).
    #[inline]
    pub const fn special_feature_opt_in(&self, n: u32) -> bool {
        flag(self.special_features as u64, 12, n)
    }

    /// Whether purpose `n` (1 to 24) has consent.
    #[inline]
    pub const fn purpose_consent(&self, n: u32) -> bool {
        flag(self.purpose_consents as u64, 24, n)
    }

    /// Whether legitimate interest for purpose `n` (1 to 24) was disclosed and not objected to.
    #[inline]
    pub const fn purpose_legitimate_interest(&self, n: u32) -> bool {
        flag(self.purpose_legitimate_interests as u64, 24, n)
    }

    /// Whether vendor `id` has consent.
    #[inline]
    pub fn vendor_consent(&self, id: u16) -> bool {
        self.vendor_consents.contains(id)
    }

    /// Whether vendor `id` has legitimate-interest transparency and was not objected to.
    #[inline]
    pub fn vendor_legitimate_interest(&self, id: u16) -> bool {
        self.vendor_legitimate_interests.contains(id)
    }

    /// Whether vendor `id` was disclosed to the user (false when the segment is absent).
    #[inline]
    pub fn disclosed_vendor(&self, id: u16) -> bool {
        self.disclosed_vendors
            .as_ref()
            .is_some_and(|set| set.contains(id))
    }

    /// Whether vendor `id` is in the (deprecated) Allowed Vendors segment.
    #[inline]
    pub fn allowed_vendor(&self, id: u16) -> bool {
        self.allowed_vendors
            .as_ref()
            .is_some_and(|set| set.contains(id))
    }

    /// The vendor consent section.
    pub const fn vendor_consents(&self) -> &VendorSet {
        &self.vendor_consents
    }

    /// The vendor legitimate-interest section.
    pub const fn vendor_legitimate_interests(&self) -> &VendorSet {
        &self.vendor_legitimate_interests
    }

    /// The Disclosed Vendors segment, if present.
    pub const fn disclosed_vendors(&self) -> Option<&VendorSet> {
        self.disclosed_vendors.as_ref()
    }

    /// The Allowed Vendors segment (deprecated), if present.
    pub const fn allowed_vendors(&self) -> Option<&VendorSet> {
        self.allowed_vendors.as_ref()
    }

    /// The Publisher TC segment, if present.
    pub const fn publisher_tc(&self) -> Option<&PublisherTc> {
        self.publisher_tc.as_ref()
    }

    /// The publisher restrictions, in string order.
    pub fn publisher_restrictions(
        &self,
    ) -> impl ExactSizeIterator<Item = PublisherRestriction<'_>> + '_ {
        Restrictions {
            items: self.restrictions.as_slice(),
            remaining: usize::from(self.num_restrictions),
        }
    }

    /// The restriction the publisher set on `purpose_id` for vendor `vendor_id`, if any.
    pub fn publisher_restriction(&self, purpose_id: u8, vendor_id: u16) -> Option<RestrictionType> {
        self.publisher_restrictions()
            .find(|r| r.purpose_id == purpose_id && r.contains(vendor_id))
            .map(|r| r.restriction_type)
    }

    /// The padding convention [`TcString::encode`] uses.
    pub const fn padding(&self) -> Padding {
        self.layout.padding
    }
}

/// Decodes a vendor section into `set`, which must be a default (empty) set. Filling the set in
/// place, rather than returning one, spares moving it into the `TcString` afterwards.
#[inline]
fn read_vendor_section(
    r: &mut BitReader<'_>,
    section: VendorSection,
    findings: &mut Findings,
    set: &mut VendorSet,
) -> Result<(), ParseError> {
    let max = r.read(16, "MaxVendorId")? as u16;
    let is_range = r.read_bool("IsRangeEncoding")?;
    if is_range {
        // Up to 8 sorted, disjoint entries are kept as ranges; anything else becomes a bitset.
        // The ranges are written straight into the set, so nothing is moved at the end.
        set.reset_spans(max);
        let mut expanded = false;
        let entries = r.read(12, "NumEntries")?;
        for _ in 0..entries {
            let is_range = r.read_bool("IsARange")?;
            let start = r.read(16, "StartOrOnlyVendorId")? as u16;
            let end = if is_range {
                r.read(16, "EndVendorId")? as u16
            } else {
                start
            };
            if end < start {
                findings.reversed_range.get_or_insert((section, start, end));
                continue;
            }
            if start == 0 || end > max {
                let id = if start == 0 { 0 } else { end };
                findings.out_of_range.get_or_insert((section, id, max));
            }
            let start = start.max(1);
            let end = end.min(max);
            if start > end {
                continue;
            }
            if !expanded {
                if set.push_span(start, end) {
                    continue;
                }
                // Turns the ranges kept so far into a bitset of MaxVendorId `max`.
                set.words_mut();
                expanded = true;
            }
            set.set_range_unchecked(start, end);
        }
        set.set_source(VendorEncoding::Range);
        Ok(())
    } else {
        set.reset_with_max(max);
        set.set_source(VendorEncoding::Bitfield);
        r.read_words(usize::from(max), set.words_mut(), "BitField")
    }
}

fn write_vendor_section(w: &mut BitWriter<'_>, set: &VendorSet) {
    let max = set.max_vendor_id();
    w.write(u64::from(max), 16);
    match set.encoding() {
        VendorEncoding::Range => {
            w.write(1, 1);
            let count = set.ranges().count();
            w.write(count as u64, 12);
            for range in set.ranges() {
                if range.start == range.end {
                    w.write(0, 1);
                    w.write(u64::from(range.start), 16);
                } else {
                    w.write(1, 1);
                    w.write(u64::from(range.start), 16);
                    w.write(u64::from(range.end), 16);
                }
            }
        }
        _ => {
            w.write(0, 1);
            match set.words() {
                Some(words) => w.write_words(words, usize::from(max)),
                None => {
                    // A set kept as ranges always re-encodes as ranges (its source encoding);
                    // should that change, expand a copy.
                    let mut bits = set.clone();
                    bits.words_mut();
                    w.write_words(bits.words().unwrap_or_default(), usize::from(max));
                }
            }
        }
    }
}

fn read_publisher_tc(r: &mut BitReader<'_>) -> Result<PublisherTc, ParseError> {
    let consents = r.read(24, "PubPurposesConsent")? as u32;
    let legitimate_interests = r.read(24, "PubPurposesLITransparency")? as u32;
    let num_custom = r.read(6, "NumCustomPurposes")? as u8;
    let n = u32::from(num_custom);
    let custom_consents = read_wide(r, n, "CustomPurposesConsent")?;
    let custom_legitimate_interests = read_wide(r, n, "CustomPurposesLITransparency")?;
    Ok(PublisherTc {
        consents,
        legitimate_interests,
        num_custom,
        custom_consents,
        custom_legitimate_interests,
    })
}

/// Reads a field of up to 63 bits.
fn read_wide(r: &mut BitReader<'_>, n: u32, field: &'static str) -> Result<u64, ParseError> {
    Ok(match n {
        0 => 0,
        1..=32 => r.read(n, field)?,
        _ => {
            let hi = r.read(n - 32, field)?;
            (hi << 32) | r.read(32, field)?
        }
    })
}

/// Writes a field of up to 63 bits.
fn write_wide(w: &mut BitWriter<'_>, value: u64, n: u32) {
    match n {
        0 => {}
        1..=32 => w.write(value, n),
        _ => {
            w.write(value >> 32, n - 32);
            w.write(value & 0xFFFF_FFFF, 32);
        }
    }
}

impl FromStr for TcString {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        TcString::parse(s)
    }
}

impl fmt::Display for TcString {
    /// Writes [`TcString::encode`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.encode())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_reencodes_the_minimal_core() {
        let s = "COtybn4PA_zT4KjACBENAPCIAEBAAECAAIAAAAAAAAAA";
        let tc = TcString::parse(s).unwrap();
        assert_eq!(tc.cmp_id(), 675);
        assert_eq!(tc.encode(), s);
    }

    #[test]
    fn rejects_structural_errors() {
        assert_eq!(TcString::parse(""), Err(ParseError::Empty));
        assert_eq!(
            TcString::parse("COtybn4PA_zT4KjACBENAPCIAEBAAECAAIAAAAAAAAAA."),
            Err(ParseError::EmptySegment { index: 1 })
        );
        assert_eq!(
            TcString::parse("BOtybn4PA_zT4KjACBENAPCIAEBAAECAAIAAAAAAAAAA"),
            Err(ParseError::UnsupportedVersion(1))
        );
        assert_eq!(
            TcString::parse("IDKQA4AAgAKAGQAygAAA"),
            Err(ParseError::MissingCore)
        );
        assert_eq!(
            TcString::parse("COtybn4PA_zT4KjACBENAPCIAEBAAECAAIAAAAAAAAAA.gA"),
            Err(ParseError::UnknownSegmentType(4))
        );
        assert_eq!(
            TcString::parse("COtybn4PA_zT4KjACBENAPCIAEBAAECAAIAAAAAAAAAA===="),
            Err(ParseError::InvalidCharacter { position: 47 })
        );
    }
}
