//! Global Privacy Control: the `Sec-GPC` request header (W3C GPC, `w3c/gpc` `index.html`).
//!
//! The header's grammar is `Sec-GPC = "1"`, with deliberately no extension mechanism. A server treats a
//! request as carrying the preference only when the field value is exactly `1`; any other value means
//! the header is ignored, as if absent. When a request has several `Sec-GPC` fields, the preference
//! holds if any of them is `1`.

/// Whether one `Sec-GPC` field value signals the Global Privacy Control preference.
///
/// The value is taken as an HTTP field value: optional whitespace (spaces and horizontal tabs) around
/// it is not part of the value (RFC 9110 §5.5) and is ignored. What remains must be exactly `1`;
/// `0`, `true`, `"1"`, `1, 1`, ` 1;x` and the empty value all mean "no signal". Bytes rather than
/// `&str`, because field values need not be UTF-8.
///
/// ```
/// use consent_tcf::gpc;
///
/// assert!(gpc::sec_gpc(b"1"));
/// assert!(gpc::sec_gpc(b" 1\t"));
/// assert!(!gpc::sec_gpc(b"0"));
/// assert!(!gpc::sec_gpc(b"true"));
/// ```
pub fn sec_gpc(value: &[u8]) -> bool {
    trim_ows(value) == b"1"
}

/// Whether any of the `Sec-GPC` field values of one request signals the preference.
///
/// ```
/// use consent_tcf::gpc;
///
/// assert!(gpc::sec_gpc_any(["0", "1"]));
/// assert!(!gpc::sec_gpc_any(Vec::<&[u8]>::new()));
/// ```
pub fn sec_gpc_any<I>(values: I) -> bool
where
    I: IntoIterator,
    I::Item: AsRef<[u8]>,
{
    values.into_iter().any(|v| sec_gpc(v.as_ref()))
}

fn trim_ows(mut value: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = value {
        value = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = value {
        value = rest;
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_exact_one_signals() {
        for (value, expected) in [
            (&b"1"[..], true),
            (b"  1  ", true),
            (b"\t1", true),
            (b"", false),
            (b"0", false),
            (b"11", false),
            (b"01", false),
            (b"1.0", false),
            (b"\"1\"", false),
            (b"1, 1", false),
            (b"1;q=1", false),
            (b"true", false),
            (b"\n1", false),
            (b"1\r\n", false),
            (b"\xff", false),
        ] {
            assert_eq!(sec_gpc(value), expected, "{value:?}");
        }
    }
}
