//! Building and changing TC strings.

use crate::bits::Padding;
use crate::error::BuildError;
use crate::tcstring::{Findings, TcString};
use crate::types::{
    Alpha2, PublisherTc, RangeList, RestrictionType, Timestamp, VendorRange, VendorSet, with_flag,
};

/// Builds a [`TcString`], for consent UIs and tests.
///
/// Start from [`TcString::builder`] (an empty TCF v2.2 string, see [`TcString::default`]) or from an
/// existing string with [`TcString::to_builder`]. Setters never fail; the first value out of range is
/// reported by [`TcStringBuilder::build`].
///
/// ```
/// use consent_tcf::{Alpha2, TcString, Timestamp};
///
/// let day = Timestamp::from_date(2026, 11, 22).unwrap();
/// let tc = TcString::builder()
///     .timestamps(day)
///     .cmp_id(300)
///     .vendor_list_version(120)
///     .tcf_policy_version(5)
///     .publisher_cc(Alpha2::new("DE").unwrap())
///     .purpose_consent(1, true)
///     .vendor_consents([565, 755])
///     .disclosed_vendors([565, 755, 1000])
///     .build()?;
/// assert!(tc.validate().is_ok());
/// assert_eq!(TcString::parse(&tc.encode())?, tc);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct TcStringBuilder {
    tc: TcString,
    error: Option<BuildError>,
}

impl TcString {
    /// A builder starting from an empty TCF v2.2 string.
    pub fn builder() -> TcStringBuilder {
        TcStringBuilder {
            tc: TcString::default(),
            error: None,
        }
    }

    /// A builder starting from this string, to change it. Vendor sections that are changed are
    /// re-encoded in their smaller form; the others keep their encoding.
    pub fn to_builder(&self) -> TcStringBuilder {
        TcStringBuilder {
            tc: self.clone(),
            error: None,
        }
    }
}

impl TcStringBuilder {
    fn check(&mut self, field: &'static str, value: u64, min: u64, max: u64) -> bool {
        let ok = (min..=max).contains(&value);
        if !ok && self.error.is_none() {
            self.error = Some(BuildError::OutOfRange {
                field,
                value,
                min,
                max,
            });
        }
        ok
    }

    /// Version (0 to 63; 2 unless you are testing validation).
    pub fn version(mut self, version: u8) -> Self {
        if self.check("Version", version.into(), 0, 63) {
            self.tc.version = version;
        }
        self
    }

    /// Created.
    pub fn created(mut self, at: Timestamp) -> Self {
        if self.check("Created", at.deciseconds(), 0, Timestamp::MAX_DECISECONDS) {
            self.tc.created = at;
        }
        self
    }

    /// LastUpdated.
    pub fn last_updated(mut self, at: Timestamp) -> Self {
        if self.check(
            "LastUpdated",
            at.deciseconds(),
            0,
            Timestamp::MAX_DECISECONDS,
        ) {
            self.tc.last_updated = at;
        }
        self
    }

    /// Created and LastUpdated both, rounded down to the day as TCF requires.
    pub fn timestamps(self, at: Timestamp) -> Self {
        let day = at.to_day_level();
        self.created(day).last_updated(day)
    }

    /// CmpId (0 to 4095).
    pub fn cmp_id(mut self, id: u16) -> Self {
        if self.check("CmpId", id.into(), 0, 4095) {
            self.tc.cmp_id = id;
        }
        self
    }

    /// CmpVersion (0 to 4095).
    pub fn cmp_version(mut self, version: u16) -> Self {
        if self.check("CmpVersion", version.into(), 0, 4095) {
            self.tc.cmp_version = version;
        }
        self
    }

    /// ConsentScreen (0 to 63).
    pub fn consent_screen(mut self, screen: u8) -> Self {
        if self.check("ConsentScreen", screen.into(), 0, 63) {
            self.tc.consent_screen = screen;
        }
        self
    }

    /// ConsentLanguage.
    pub fn consent_language(mut self, language: Alpha2) -> Self {
        self.tc.consent_language = language;
        self
    }

    /// VendorListVersion (0 to 4095).
    pub fn vendor_list_version(mut self, version: u16) -> Self {
        if self.check("VendorListVersion", version.into(), 0, 4095) {
            self.tc.vendor_list_version = version;
        }
        self
    }

    /// TcfPolicyVersion (0 to 63).
    pub fn tcf_policy_version(mut self, version: u8) -> Self {
        if self.check("TcfPolicyVersion", version.into(), 0, 63) {
            self.tc.tcf_policy_version = version;
        }
        self
    }

    /// IsServiceSpecific.
    pub fn is_service_specific(mut self, on: bool) -> Self {
        self.tc.is_service_specific = on;
        self
    }

    /// UseNonStandardTexts.
    pub fn use_non_standard_texts(mut self, on: bool) -> Self {
        self.tc.use_non_standard_texts = on;
        self
    }

    /// PurposeOneTreatment.
    pub fn purpose_one_treatment(mut self, on: bool) -> Self {
        self.tc.purpose_one_treatment = on;
        self
    }

    /// PublisherCC.
    pub fn publisher_cc(mut self, country: Alpha2) -> Self {
        self.tc.publisher_cc = country;
        self
    }

    /// Special feature `n` (1 to 12) opt-in.
    pub fn special_feature_opt_in(mut self, n: u32, on: bool) -> Self {
        if self.check("special feature", n.into(), 1, 12) {
            self.tc.special_features = with_flag(self.tc.special_features.into(), 12, n, on) as u16;
        }
        self
    }

    /// Consent for purpose `n` (1 to 24).
    pub fn purpose_consent(mut self, n: u32, on: bool) -> Self {
        if self.check("purpose", n.into(), 1, 24) {
            self.tc.purpose_consents = with_flag(self.tc.purpose_consents.into(), 24, n, on) as u32;
        }
        self
    }

    /// Legitimate interest for purpose `n` (1 to 24).
    pub fn purpose_legitimate_interest(mut self, n: u32, on: bool) -> Self {
        if self.check("purpose", n.into(), 1, 24) {
            self.tc.purpose_legitimate_interests =
                with_flag(self.tc.purpose_legitimate_interests.into(), 24, n, on) as u32;
        }
        self
    }

    fn set_vendor(&mut self, which: fn(&mut TcString) -> &mut VendorSet, id: u16, on: bool) {
        if self.check("vendor id", id.into(), 1, u16::MAX.into()) {
            let set = which(&mut self.tc);
            if on {
                set.insert(id);
            } else {
                set.remove(id);
            }
        }
    }

    /// Consent for vendor `id` (1 to 65535).
    pub fn vendor_consent(mut self, id: u16, on: bool) -> Self {
        self.set_vendor(|tc| &mut tc.vendor_consents, id, on);
        self
    }

    /// Consent for each vendor in `ids`.
    pub fn vendor_consents(mut self, ids: impl IntoIterator<Item = u16>) -> Self {
        for id in ids {
            self.set_vendor(|tc| &mut tc.vendor_consents, id, true);
        }
        self
    }

    /// Legitimate interest for vendor `id` (1 to 65535).
    pub fn vendor_legitimate_interest(mut self, id: u16, on: bool) -> Self {
        self.set_vendor(|tc| &mut tc.vendor_legitimate_interests, id, on);
        self
    }

    /// Legitimate interest for each vendor in `ids`.
    pub fn vendor_legitimate_interests(mut self, ids: impl IntoIterator<Item = u16>) -> Self {
        for id in ids {
            self.set_vendor(|tc| &mut tc.vendor_legitimate_interests, id, true);
        }
        self
    }

    /// Adds a Disclosed Vendors segment (if absent) holding `ids` as well.
    pub fn disclosed_vendors(mut self, ids: impl IntoIterator<Item = u16>) -> Self {
        self.tc.disclosed_vendors.get_or_insert_with(VendorSet::new);
        for id in ids {
            self.set_vendor(
                |tc| tc.disclosed_vendors.get_or_insert_with(VendorSet::new),
                id,
                true,
            );
        }
        self
    }

    /// Adds an Allowed Vendors segment (deprecated; if absent) holding `ids` as well.
    pub fn allowed_vendors(mut self, ids: impl IntoIterator<Item = u16>) -> Self {
        self.tc.allowed_vendors.get_or_insert_with(VendorSet::new);
        for id in ids {
            self.set_vendor(
                |tc| tc.allowed_vendors.get_or_insert_with(VendorSet::new),
                id,
                true,
            );
        }
        self
    }

    /// Removes the Disclosed Vendors segment.
    pub fn without_disclosed_vendors(mut self) -> Self {
        self.tc.disclosed_vendors = None;
        self
    }

    /// Removes the Allowed Vendors segment.
    pub fn without_allowed_vendors(mut self) -> Self {
        self.tc.allowed_vendors = None;
        self
    }

    /// Appends a publisher restriction on purpose `purpose_id` (0 to 63) for the vendor `ranges`
    /// (each with 1 <= start <= end), written as given.
    pub fn publisher_restriction(
        mut self,
        purpose_id: u8,
        restriction_type: RestrictionType,
        ranges: impl IntoIterator<Item = VendorRange>,
    ) -> Self {
        if !self.check("restriction PurposeId", purpose_id.into(), 0, 63)
            || !self.check(
                "NumPubRestrictions",
                u64::from(self.tc.num_restrictions) + 1,
                0,
                4095,
            )
        {
            return self;
        }
        let header = self.tc.restrictions.len();
        self.tc
            .restrictions
            .push(RangeList::header(purpose_id, restriction_type, 0));
        for range in ranges {
            if range.end < range.start {
                self.error.get_or_insert(BuildError::ReversedRange {
                    start: range.start,
                    end: range.end,
                });
            }
            self.check("vendor id", range.start.into(), 1, u16::MAX.into());
            self.tc.restrictions.push(range);
        }
        let count = self.tc.restrictions.len() - header - 1;
        if !self.check("restriction NumEntries", count as u64, 0, 4095) {
            self.tc.restrictions.truncate(header);
            return self;
        }
        self.tc.restrictions.set(
            header,
            RangeList::header(purpose_id, restriction_type, count as u16),
        );
        self.tc.num_restrictions += 1;
        self
    }

    /// Removes all publisher restrictions.
    pub fn clear_publisher_restrictions(mut self) -> Self {
        self.tc.restrictions = RangeList::default();
        self.tc.num_restrictions = 0;
        self
    }

    fn publisher(&mut self) -> &mut PublisherTc {
        self.tc
            .publisher_tc
            .get_or_insert_with(PublisherTc::default)
    }

    /// Publisher consent for purpose `n` (1 to 24); adds the Publisher TC segment.
    pub fn publisher_purpose_consent(mut self, n: u32, on: bool) -> Self {
        if self.check("purpose", n.into(), 1, 24) {
            let p = self.publisher();
            p.consents = with_flag(p.consents.into(), 24, n, on) as u32;
        }
        self
    }

    /// Publisher legitimate interest for purpose `n` (1 to 24); adds the Publisher TC segment.
    pub fn publisher_purpose_legitimate_interest(mut self, n: u32, on: bool) -> Self {
        if self.check("purpose", n.into(), 1, 24) {
            let p = self.publisher();
            p.legitimate_interests = with_flag(p.legitimate_interests.into(), 24, n, on) as u32;
        }
        self
    }

    /// NumCustomPurposes (0 to 63); adds the Publisher TC segment. Custom purposes above the new count
    /// are cleared.
    pub fn num_custom_purposes(mut self, count: u8) -> Self {
        if self.check("NumCustomPurposes", count.into(), 0, 63) {
            let p = self.publisher();
            let old = u32::from(p.num_custom);
            let new = u32::from(count);
            let resize = |bits: u64| {
                if new >= old {
                    bits << (new - old)
                } else {
                    bits >> (old - new)
                }
            };
            p.custom_consents = resize(p.custom_consents);
            p.custom_legitimate_interests = resize(p.custom_legitimate_interests);
            p.num_custom = count;
        }
        self
    }

    /// Consent for custom purpose `n` (1 to NumCustomPurposes).
    pub fn custom_purpose_consent(mut self, n: u32, on: bool) -> Self {
        let count = self.tc.publisher_tc.map_or(0, |p| p.num_custom);
        if self.check("custom purpose", n.into(), 1, count.into()) {
            let p = self.publisher();
            p.custom_consents = with_flag(p.custom_consents, count.into(), n, on);
        }
        self
    }

    /// Legitimate interest for custom purpose `n` (1 to NumCustomPurposes).
    pub fn custom_purpose_legitimate_interest(mut self, n: u32, on: bool) -> Self {
        let count = self.tc.publisher_tc.map_or(0, |p| p.num_custom);
        if self.check("custom purpose", n.into(), 1, count.into()) {
            let p = self.publisher();
            p.custom_legitimate_interests =
                with_flag(p.custom_legitimate_interests, count.into(), n, on);
        }
        self
    }

    /// Removes the Publisher TC segment.
    pub fn without_publisher_tc(mut self) -> Self {
        self.tc.publisher_tc = None;
        self
    }

    /// The padding convention of [`TcString::encode`] (default [`Padding::Sextet`], the strict one).
    pub fn padding(mut self, padding: Padding) -> Self {
        self.tc.layout.padding = padding;
        self
    }

    /// Whether [`TcString::encode`] pads segments with `=` to a multiple of 4 characters.
    pub fn equals_padding(mut self, on: bool) -> Self {
        self.tc.layout.equals = on;
        self
    }

    /// The string.
    ///
    /// # Errors
    ///
    /// The first [`BuildError`] a setter met.
    pub fn build(self) -> Result<TcString, BuildError> {
        if let Some(error) = self.error {
            return Err(error);
        }
        let mut tc = self.tc;
        // What a decoded string broke no longer matters once it is rebuilt; only padding carries over
        // into the new text, so recompute that one from the text encode() will write.
        tc.findings = Findings::default();
        if tc.layout.padding != Padding::Sextet
            && let Ok(written) = TcString::parse(&tc.encode())
        {
            tc.findings.excess_padding = written.findings.excess_padding;
        }
        Ok(tc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_reports_the_first_error() {
        let err = TcString::builder()
            .cmp_id(5000)
            .purpose_consent(25, true)
            .build()
            .unwrap_err();
        assert_eq!(
            err,
            BuildError::OutOfRange {
                field: "CmpId",
                value: 5000,
                min: 0,
                max: 4095
            }
        );
        assert!(TcString::builder().vendor_consent(0, true).build().is_err());
        assert!(
            TcString::builder()
                .custom_purpose_consent(1, true)
                .build()
                .is_err()
        );
        assert_eq!(
            TcString::builder()
                .publisher_restriction(
                    1,
                    RestrictionType::NotAllowed,
                    [VendorRange { start: 5, end: 4 }]
                )
                .build(),
            Err(BuildError::ReversedRange { start: 5, end: 4 })
        );
    }

    #[test]
    fn custom_purposes_keep_their_numbers_when_the_count_grows() {
        let tc = TcString::builder()
            .num_custom_purposes(2)
            .custom_purpose_consent(2, true)
            .num_custom_purposes(5)
            .build()
            .unwrap();
        let p = tc.publisher_tc().unwrap();
        assert_eq!(p.num_custom_purposes(), 5);
        assert!(p.custom_purpose_consent(2));
        assert!((1..=5).filter(|&n| p.custom_purpose_consent(n)).eq([2]));
        let shrunk = tc.to_builder().num_custom_purposes(1).build().unwrap();
        assert!(!shrunk.publisher_tc().unwrap().custom_purpose_consent(1));
    }
}
