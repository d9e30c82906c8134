//! The errors of parsing, validating and building TC strings.

use std::fmt;

use crate::types::Timestamp;

/// The segments of a TC string, told apart by their 3-bit segment type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SegmentType {
    /// The core segment (type 0, always present).
    Core,
    /// The Disclosed Vendors segment (type 1, mandatory since TCF 2.3).
    DisclosedVendors,
    /// The Allowed Vendors segment (type 2, deprecated out-of-band segment seen in old strings).
    AllowedVendors,
    /// The Publisher TC segment (type 3).
    PublisherTc,
}

impl SegmentType {
    /// The 3-bit segment type that identifies the segment.
    pub const fn id(self) -> u8 {
        match self {
            SegmentType::Core => 0,
            SegmentType::DisclosedVendors => 1,
            SegmentType::AllowedVendors => 2,
            SegmentType::PublisherTc => 3,
        }
    }

    pub(crate) const fn from_id(id: u8) -> Option<Self> {
        match id {
            0 => Some(SegmentType::Core),
            1 => Some(SegmentType::DisclosedVendors),
            2 => Some(SegmentType::AllowedVendors),
            3 => Some(SegmentType::PublisherTc),
            _ => None,
        }
    }
}

impl fmt::Display for SegmentType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SegmentType::Core => "core segment",
            SegmentType::DisclosedVendors => "Disclosed Vendors segment",
            SegmentType::AllowedVendors => "Allowed Vendors segment",
            SegmentType::PublisherTc => "Publisher TC segment",
        })
    }
}

/// The sections of a TC string that hold vendor ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum VendorSection {
    /// Vendor consents (core segment).
    VendorConsents,
    /// Vendor legitimate-interest transparency (core segment).
    VendorLegitimateInterests,
    /// The vendor ranges of publisher restrictions (core segment).
    PublisherRestrictions,
    /// Disclosed vendors (segment 1).
    DisclosedVendors,
    /// Allowed vendors (segment 2).
    AllowedVendors,
}

impl fmt::Display for VendorSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            VendorSection::VendorConsents => "vendor consents",
            VendorSection::VendorLegitimateInterests => "vendor legitimate interests",
            VendorSection::PublisherRestrictions => "publisher restrictions",
            VendorSection::DisclosedVendors => "disclosed vendors",
            VendorSection::AllowedVendors => "allowed vendors",
        })
    }
}

/// Why [`TcString::parse`](crate::TcString::parse) could not decode a string.
///
/// Parsing is lenient: it fails only when no model can be read at all. Strings that decode but break
/// the rules of the specification are reported by [`TcString::validate`](crate::TcString::validate).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The input is empty.
    #[error("the TC string is empty")]
    Empty,
    /// A segment between two `.` is empty.
    #[error("segment {index} of the TC string is empty")]
    EmptySegment {
        /// Zero-based index of the segment.
        index: usize,
    },
    /// A byte is not in the base64url alphabet (`A–Z a–z 0–9 - _`, with optional trailing `=`).
    #[error("byte {position} of the TC string is not a base64url character")]
    InvalidCharacter {
        /// Byte offset in the input.
        position: usize,
    },
    /// A segment ends before all of its fields are read (rule: no read past the end).
    #[error("the {segment} ends inside the field {field}")]
    UnexpectedEnd {
        /// The segment being read.
        segment: SegmentType,
        /// The field being read when the segment ended.
        field: &'static str,
    },
    /// The core segment has version 1, whose (TCF v1) layout this crate does not decode.
    #[error("TC string version {0} is not supported; only the TCF v2 layout is decoded")]
    UnsupportedVersion(u8),
    /// A segment has a segment type other than 0–3.
    #[error("unknown segment type {0}")]
    UnknownSegmentType(u8),
    /// A segment type occurs twice.
    #[error("the {0} occurs more than once")]
    DuplicateSegment(SegmentType),
    /// No segment is a core segment.
    #[error("the TC string has no core segment")]
    MissingCore,
}

/// A rule of the TCF specification that a decoded TC string breaks, as reported by
/// [`TcString::validate`](crate::TcString::validate).
///
/// The rules are those of `standards-and-peers.md` §1.6, plus the letter codes (last variant). The
/// message of each variant names the rule; [`ValidationError::rule`] gives a stable identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValidationError {
    /// Rule "version": the version field must be 2.
    #[error("rule version: the TC string version must be 2, found {found}")]
    Version {
        /// The version found.
        found: u8,
    },
    /// Rule "service-specific": IsServiceSpecific must be 1 since global scope was deprecated (Sept 2021).
    #[error("rule service-specific: IsServiceSpecific must be 1")]
    NotServiceSpecific,
    /// Rule "policy-version": TcfPolicyVersion must be 4 or more (strings below 4 are invalid since
    /// 30 September 2023).
    #[error("rule policy-version: TcfPolicyVersion must be at least 4, found {found}")]
    PolicyVersion {
        /// The policy version found.
        found: u8,
    },
    /// Rule "purpose-li-3-6": with policy version 4 or more, legitimate interest is not allowed for
    /// purposes 3 to 6.
    #[error(
        "rule purpose-li-3-6: legitimate interest is set for purpose {purpose}, which policy version {policy_version} forbids"
    )]
    PurposeLegitimateInterest {
        /// The purpose (3 to 6) whose bit is set.
        purpose: u8,
        /// The policy version of the string.
        policy_version: u8,
    },
    /// Rule "timestamps-equal": Created must equal LastUpdated (Dec 2021).
    #[error("rule timestamps-equal: Created ({created}) must equal LastUpdated ({last_updated})")]
    TimestampsDiffer {
        /// Created.
        created: Timestamp,
        /// LastUpdated.
        last_updated: Timestamp,
    },
    /// Rule "timestamps-day": Created and LastUpdated must be day-level (midnight UTC).
    #[error("rule timestamps-day: {field} ({value}) is not a day-level timestamp")]
    TimestampNotDayLevel {
        /// `"Created"` or `"LastUpdated"`.
        field: &'static str,
        /// The timestamp.
        value: Timestamp,
    },
    /// Rule "disclosed-vendors": the Disclosed Vendors segment is mandatory (TCF 2.3).
    #[error("rule disclosed-vendors: the Disclosed Vendors segment is mandatory")]
    MissingDisclosedVendors,
    /// Rule "range-order": a range entry must not end before it starts.
    #[error("rule range-order: a range in {section} ends at {end}, before its start {start}")]
    RangeEndBeforeStart {
        /// The section holding the range.
        section: VendorSection,
        /// StartVendorId.
        start: u16,
        /// EndVendorId.
        end: u16,
    },
    /// Rule "vendor-id-range": vendor ids must be between 1 and MaxVendorId.
    #[error("rule vendor-id-range: vendor id {id} in {section} is outside 1..={max}")]
    VendorIdOutOfRange {
        /// The section holding the id.
        section: VendorSection,
        /// The id.
        id: u16,
        /// The section's MaxVendorId (65535 for publisher restrictions, which have none).
        max: u16,
    },
    /// Rule "padding": a segment must end with fewer than 6 padding bits (no character of padding
    /// only). Note that iabtcf-java and iabtcf-es both pad further (see [`Padding`](crate::Padding)).
    #[error("rule padding: the {segment} ends with {bits} padding bits; fewer than 6 are allowed")]
    ExcessPadding {
        /// The segment.
        segment: SegmentType,
        /// Number of bits after the last field.
        bits: usize,
    },
    /// Rule "letter-code": ConsentLanguage and PublisherCC are two letters, each 0 (`A`) to 25 (`Z`).
    #[error("rule letter-code: {field} holds a 6-bit value above 25, which is not a letter")]
    InvalidLetterCode {
        /// `"ConsentLanguage"` or `"PublisherCC"`.
        field: &'static str,
    },
}

impl ValidationError {
    /// A stable identifier of the rule broken, such as `"policy-version"`.
    pub fn rule(&self) -> &'static str {
        match self {
            ValidationError::Version { .. } => "version",
            ValidationError::NotServiceSpecific => "service-specific",
            ValidationError::PolicyVersion { .. } => "policy-version",
            ValidationError::PurposeLegitimateInterest { .. } => "purpose-li-3-6",
            ValidationError::TimestampsDiffer { .. } => "timestamps-equal",
            ValidationError::TimestampNotDayLevel { .. } => "timestamps-day",
            ValidationError::MissingDisclosedVendors => "disclosed-vendors",
            ValidationError::RangeEndBeforeStart { .. } => "range-order",
            ValidationError::VendorIdOutOfRange { .. } => "vendor-id-range",
            ValidationError::ExcessPadding { .. } => "padding",
            ValidationError::InvalidLetterCode { .. } => "letter-code",
        }
    }
}

/// Why [`TcStringBuilder::build`](crate::TcStringBuilder::build) refused a model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A value does not fit its field.
    #[error("{field} = {value} is out of range (allowed {min}..={max})")]
    OutOfRange {
        /// The field or argument.
        field: &'static str,
        /// The value given.
        value: u64,
        /// The smallest value allowed.
        min: u64,
        /// The largest value allowed.
        max: u64,
    },
    /// A vendor range ends before it starts.
    #[error("a vendor range ends at {end}, before its start {start}")]
    ReversedRange {
        /// Start of the range.
        start: u16,
        /// End of the range.
        end: u16,
    },
}

/// Either failure of [`TcString::parse_strict`](crate::TcString::parse_strict): the string does not
/// decode, or it decodes but breaks a rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TcfError {
    /// The string does not decode.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// The string decodes but breaks a rule of the specification.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
}
