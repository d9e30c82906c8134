//! The IAB TCF part: `aam` and `ecid` follow vendor 565 and purposes 1 and 10.

use crate::category::Category;

/// Adobe's IAB vendor id, which must have consent for `aam` and `ecid`.
pub const ADOBE_VENDOR_ID: u16 = 565;

/// The purposes that must have consent for `aam` and `ecid`.
pub const REQUIRED_PURPOSES: [u8; 2] = [1, 10];

/// The categories the TC string decides; every other category is left as it is.
pub const TCF_CATEGORIES: [Category; 2] = [Category::Aam, Category::Ecid];

/// The cookie key under which the hash of the last TC string is memoised.
pub const IAB_CONSENT_HASH_KEY: &str = "iabConsentHash";

/// What the service needs from a decoded TCF v2 TC string.
///
/// The TC string codec (`consent-tcf`) implements this for its `TcString`; tests use a small
/// hand-written implementation.
pub trait TcfSignal {
    /// The TC string as the CMP gave it, which is hashed into `iabConsentHash`.
    fn tc_string(&self) -> &str;
    /// Whether the user consented to this purpose (1–24).
    fn purpose_consent(&self, purpose: u8) -> bool;
    /// Whether the user consented to this vendor.
    fn vendor_consent(&self, vendor: u16) -> bool;
}

/// A TC string decoded by this project's codec, kept with its text (which `iabConsentHash` hashes).
///
/// ```
/// use consent_optin::{DecodedTcString, TcfSignal};
/// use consent_tcf::TcString;
///
/// let text = TcString::builder().purpose_consent(1, true).vendor_consent(565, true).build()?.encode();
/// let signal = DecodedTcString::parse(&text)?;
/// assert!(signal.purpose_consent(1) && signal.vendor_consent(565) && !signal.purpose_consent(10));
/// assert_eq!(signal.tc_string(), text);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct DecodedTcString {
    text: String,
    decoded: consent_tcf::TcString,
}

impl DecodedTcString {
    /// Decodes `text` with [`consent_tcf::TcString::parse`].
    pub fn parse(text: &str) -> Result<Self, consent_tcf::ParseError> {
        Ok(Self {
            decoded: consent_tcf::TcString::parse(text)?,
            text: text.to_owned(),
        })
    }

    /// The decoded string.
    pub fn decoded(&self) -> &consent_tcf::TcString {
        &self.decoded
    }
}

impl TcfSignal for DecodedTcString {
    fn tc_string(&self) -> &str {
        &self.text
    }

    fn purpose_consent(&self, purpose: u8) -> bool {
        self.decoded.purpose_consent(u32::from(purpose))
    }

    fn vendor_consent(&self, vendor: u16) -> bool {
        self.decoded.vendor_consent(vendor)
    }
}

/// Whether the TC string approves `aam` and `ecid`: vendor 565 and purposes 1 and 10 all consented.
pub fn tcf_approves<T: TcfSignal + ?Sized>(signal: &T) -> bool {
    signal.vendor_consent(ADOBE_VENDOR_ID)
        && REQUIRED_PURPOSES
            .iter()
            .all(|purpose| signal.purpose_consent(*purpose))
}

/// The outcome of [`OptIn::apply_tcf`](crate::OptIn::apply_tcf).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct IabOutcome {
    /// Whether `aam` and `ecid` are approved.
    pub approved: bool,
    /// `crc32(tcString).toString(32)`, as memoised in the cookie.
    pub consent_hash: String,
    /// Whether the hash differs from the one memoised in the cookie before this call
    /// (`hasConsentChangedSinceLastCmpPull`).
    pub has_consent_changed_since_last_cmp_pull: bool,
    /// Whether this call completed a workflow. It does not when the same TC string was already
    /// applied by this service.
    pub completed: bool,
}

/// Why a TC string was not applied.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyTcfError {
    /// The IAB part only runs with `is_iab_context` and `does_opt_in_apply` both true.
    #[error(
        "the IAB TCF part needs is_iab_context and does_opt_in_apply (is_iab_context: {is_iab_context}, does_opt_in_apply: {does_opt_in_apply})"
    )]
    NotIabContext {
        /// The configured `is_iab_context`.
        is_iab_context: bool,
        /// The evaluated `does_opt_in_apply`.
        does_opt_in_apply: bool,
    },
}

const CRC_TABLE: [u32; 256] = crc_table();

const fn crc_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut bit = 0;
        while bit < 8 {
            c = if c & 1 == 1 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            bit += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
}

/// CRC-32 (IEEE, polynomial `0xEDB88320`) of some bytes, as the reference computes it over the
/// UTF-8 of the TC string.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for byte in bytes {
        crc = (crc >> 8) ^ CRC_TABLE[usize::from((crc as u8) ^ byte)];
    }
    !crc
}

/// `crc32(tcString).toString(32)`: the CRC in lower-case base 32, the value of `iabConsentHash`.
pub fn iab_consent_hash(tc_string: &str) -> String {
    const DIGITS: &[u8; 32] = b"0123456789abcdefghijklmnopqrstuv";
    let mut value = crc32(tc_string.as_bytes());
    let mut digits = Vec::with_capacity(7);
    loop {
        digits.push(DIGITS[(value % 32) as usize]);
        value /= 32;
        if value == 0 {
            break;
        }
    }
    digits.iter().rev().map(|d| char::from(*d)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, crc: u32, hash: &str) {
        assert_eq!(crc32(input.as_bytes()), crc, "{input}");
        assert_eq!(iab_consent_hash(input), hash, "{input}");
    }

    #[test]
    fn crc32_matches_the_standard_check_values() {
        // 0xCBF43926 is the published CRC-32 check value of "123456789"; the base-32 forms are
        // what `Number.prototype.toString(32)` gives for those numbers.
        check("123456789", 0xCBF4_3926, "35v8e96");
        check("", 0, "0");
        check("a", 0xE8B7_BE43, "3kbffi3");
    }
}
