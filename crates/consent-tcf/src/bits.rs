//! Bit-level reading and writing straight over base64url text.
//!
//! A TC string segment is a big-endian bit stream written six bits per base64url character. The reader
//! decodes characters into a left-aligned 64-bit accumulator on demand, so a segment is never copied
//! into a byte buffer and nothing is allocated.

use crate::error::{ParseError, SegmentType};

/// The base64url alphabet (RFC 4648 §5).
const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Marks a byte that is not in the alphabet.
const INVALID: u8 = 0xFF;

/// Maps each byte to its 6-bit value, or [`INVALID`].
static DECODE: [u8; 256] = {
    let mut table = [INVALID; 256];
    let mut i = 0;
    while i < 64 {
        table[ALPHABET[i] as usize] = i as u8;
        i += 1;
    }
    table
};

/// The 6-bit value of a base64url character, or `None`.
#[inline]
pub(crate) fn sextet(byte: u8) -> Option<u8> {
    let value = DECODE[usize::from(byte)];
    (value != INVALID).then_some(value)
}

/// Reads big-endian bit fields from one segment's base64url characters.
///
/// The reader is given the input from the segment's first character to the end of the whole string
/// and stops at the first `.` or `=`, so the input is scanned once, not split first.
#[derive(Debug, Clone)]
pub(crate) struct BitReader<'a> {
    input: &'a [u8],
    segment: SegmentType,
    /// Index in `input` of the next character to load.
    next: usize,
    /// Index in `input` of the segment's first character.
    start: usize,
    /// Pending bits, left-aligned: the next bit to read is bit 63.
    acc: u64,
    /// Number of valid bits in `acc`.
    avail: u32,
    /// Set once a chunk decode met the end of the segment (or a bad character): from then on
    /// characters are loaded one at a time, without retrying chunks that cannot succeed.
    tail: bool,
}

/// The `len`-bit field (at most 64 bits) at bit `offset` of a big-endian buffer from
/// [`BitReader::core_header`].
#[inline(always)]
pub(crate) fn field(buf: &[u64; 5], offset: usize, len: u32) -> u64 {
    let w = offset / 64;
    let pair = (u128::from(buf[w]) << 64) | u128::from(buf[w + 1]);
    ((pair << (offset % 64)) >> (128 - len)) as u64
}

/// Where a segment ended, as found by [`BitReader::finish`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct SegmentEnd {
    /// Number of base64url characters in the segment (without `=`).
    pub(crate) chars: usize,
    /// Bits after the last field read.
    pub(crate) trailing_bits: usize,
    /// Number of `=` after the characters.
    pub(crate) equals: usize,
    /// Index in the input of the `.` after the segment, or `None` at the end of the input.
    pub(crate) dot: Option<usize>,
}

impl<'a> BitReader<'a> {
    /// A reader of the segment starting at `input[start]`.
    pub(crate) fn new(input: &'a [u8], start: usize, segment: SegmentType) -> Self {
        BitReader {
            input,
            segment,
            next: start,
            start,
            acc: 0,
            avail: 0,
            tail: false,
        }
    }

    /// Refills for a read of `n` bits, failing when the segment ends first. Inlined so that the
    /// reader's state can stay in registers across reads; the rare path near the end of a segment,
    /// [`BitReader::refill_slow`], stays out of line.
    #[inline]
    fn refill_for(&mut self, n: u32, field: &'static str) -> Result<(), ParseError> {
        if self.refill_chunks() {
            return Ok(());
        }
        self.refill_slow(n, field)
    }

    /// The rest of [`BitReader::refill_for`]: near the end of a segment, or at a bad character.
    #[inline(never)]
    fn refill_slow(&mut self, n: u32, field: &'static str) -> Result<(), ParseError> {
        self.refill()?;
        if self.avail < n {
            return Err(self.end_error(field));
        }
        Ok(())
    }

    /// Loads whole chunks of four or eight characters; returns whether any read of up to 36 bits
    /// can now be served.
    #[inline(always)]
    fn refill_chunks(&mut self) -> bool {
        while !self.tail && self.avail <= 40 {
            if self.avail <= 16
                && let Some(bits) = self.chunk::<8>()
            {
                self.acc |= bits << (16 - self.avail);
                self.avail += 48;
                self.next += 8;
                return true;
            }
            match self.chunk::<4>() {
                Some(bits) => {
                    self.acc |= bits << (40 - self.avail);
                    self.avail += 24;
                    self.next += 4;
                    if self.avail >= 36 {
                        return true;
                    }
                }
                None => self.tail = true,
            }
        }
        self.avail >= 36
    }

    /// Decodes `N` characters at `self.next` into `6 * N` bits, or `None` if they are not all
    /// in the alphabet or the input is shorter.
    #[inline(always)]
    fn chunk<const N: usize>(&self) -> Option<u64> {
        let chunk: &[u8; N] = self.input.get(self.next..self.next + N)?.try_into().ok()?;
        let mut bits = 0u64;
        let mut bad = 0u8;
        // Each character is shifted to its own place, rather than shifting the running value for
        // every character, so that the shifts do not form one long chain of dependent steps.
        for (i, &byte) in chunk.iter().enumerate() {
            let v = DECODE[usize::from(byte)];
            bad |= v;
            bits |= u64::from(v & 63) << (6 * (N - 1 - i));
        }
        (bad < 64).then_some(bits)
    }

    /// The first 213 bits of a core segment (its fixed-width fields) in one go, as a 256-bit
    /// big-endian buffer, when the segment starts with at least 36 valid characters; the reader then
    /// stands at bit 213. `None` (reader untouched) otherwise, and the caller reads field by field.
    pub(crate) fn core_header(&mut self) -> Option<[u64; 5]> {
        debug_assert!(self.next == self.start && self.avail == 0);
        let c0 = self.chunk::<8>()?;
        self.next += 8;
        let rest = (|| {
            let c1 = self.chunk::<8>()?;
            self.next += 8;
            let c2 = self.chunk::<8>()?;
            self.next += 8;
            let c3 = self.chunk::<8>()?;
            self.next += 8;
            let c4 = self.chunk::<4>()?;
            self.next += 4;
            Some((c1, c2, c3, c4))
        })();
        let Some((c1, c2, c3, c4)) = rest else {
            self.next = self.start;
            return None;
        };
        // Bits 213..216 stay in the accumulator for the reads that follow.
        self.acc = (c4 & 0b111) << 61;
        self.avail = 3;
        Some([
            (c0 << 16) | (c1 >> 32),
            (c1 << 32) | (c2 >> 16),
            (c2 << 48) | c3,
            c4 << 40,
            0,
        ])
    }

    /// Loads characters: at least enough for any read of up to 36 bits, unless the segment ends.
    #[inline]
    fn refill(&mut self) -> Result<(), ParseError> {
        // Fast paths: eight characters (48 bits) or four (24 bits) at once while they are all in
        // the alphabet, until any read of up to 36 bits can be served.
        self.refill_chunks();
        // Near the end of the segment, or at a bad character: one at a time.
        while self.avail <= 58 {
            let Some(&byte) = self.input.get(self.next) else {
                break;
            };
            let value = DECODE[usize::from(byte)];
            if value == INVALID {
                if byte == b'.' || byte == b'=' {
                    break;
                }
                return Err(ParseError::InvalidCharacter {
                    position: self.next,
                });
            }
            self.acc |= u64::from(value) << (58 - self.avail);
            self.avail += 6;
            self.next += 1;
        }
        Ok(())
    }

    /// Reads `n` bits (1 to 36) as an unsigned big-endian integer. `field` names what is being read,
    /// for the error when the segment ends first.
    #[inline(always)]
    pub(crate) fn read(&mut self, n: u32, field: &'static str) -> Result<u64, ParseError> {
        debug_assert!((1..=36).contains(&n));
        if self.avail < n {
            self.refill_for(n, field)?;
        }
        let value = self.acc >> (64 - n);
        self.acc <<= n;
        self.avail -= n;
        Ok(value)
    }

    /// The error for a segment that ends before `field`: `=` inside a segment is a bad character,
    /// not an end.
    #[cold]
    fn end_error(&self, field: &'static str) -> ParseError {
        let mut i = self.next;
        while self.input.get(i) == Some(&b'=') {
            i += 1;
        }
        match self.input.get(i) {
            Some(&byte) if i > self.next && byte != b'.' => {
                ParseError::InvalidCharacter { position: i }
            }
            _ => ParseError::UnexpectedEnd {
                segment: self.segment,
                field,
            },
        }
    }

    /// Reads one bit as a boolean.
    #[inline(always)]
    pub(crate) fn read_bool(&mut self, field: &'static str) -> Result<bool, ParseError> {
        Ok(self.read(1, field)? == 1)
    }

    /// Reads `nbits` bits into `words`, most significant bit first: bit `i` of the field lands in
    /// `words[i / 64]` at bit position `63 - i % 64`. `words` must hold at least `nbits` bits.
    pub(crate) fn read_words(
        &mut self,
        nbits: usize,
        words: &mut [u64],
        field: &'static str,
    ) -> Result<(), ParseError> {
        // A 128-bit accumulator, left-aligned, so that a whole word can be taken at once.
        let mut acc = u128::from(self.acc) << 64;
        let mut avail = self.avail;
        let mut remaining = nbits;
        for word in words.iter_mut() {
            if remaining == 0 {
                break;
            }
            let take = remaining.min(64) as u32;
            while avail < take {
                if let Some(bits) = self.chunk::<8>() {
                    acc |= u128::from(bits) << (80 - avail);
                    avail += 48;
                    self.next += 8;
                    continue;
                }
                let byte = self.input.get(self.next).copied();
                match byte.map(|b| DECODE[usize::from(b)]) {
                    Some(value) if value != INVALID => {
                        acc |= u128::from(value) << (122 - avail);
                        avail += 6;
                        self.next += 1;
                    }
                    _ if byte.is_some_and(|b| b != b'.' && b != b'=') => {
                        return Err(ParseError::InvalidCharacter {
                            position: self.next,
                        });
                    }
                    _ => return Err(self.end_error(field)),
                }
            }
            *word = ((acc >> (128 - take)) as u64) << (64 - take);
            acc <<= take;
            avail -= take;
            remaining -= take as usize;
        }
        self.acc = (acc >> 64) as u64;
        self.avail = avail;
        Ok(())
    }

    /// Number of bits read so far.
    pub(crate) fn bits_read(&self) -> usize {
        (self.next - self.start) * 6 - self.avail as usize
    }

    /// Checks the characters not read, up to the segment's end, and reports where it ended.
    pub(crate) fn finish(self) -> Result<SegmentEnd, ParseError> {
        let used = self.bits_read();
        let mut i = self.next;
        while let Some(&byte) = self.input.get(i) {
            if DECODE[usize::from(byte)] == INVALID {
                break;
            }
            i += 1;
        }
        let chars = i - self.start;
        let mut equals = 0;
        while self.input.get(i) == Some(&b'=') {
            i += 1;
            equals += 1;
        }
        let dot = match self.input.get(i) {
            None => None,
            Some(b'.') => Some(i),
            Some(_) => return Err(ParseError::InvalidCharacter { position: i }),
        };
        // Base64 needs at most two `=`; three are accepted because a segment padded to 6 bits can
        // be 4n + 1 characters long, which takes three to reach a multiple of 4.
        if equals > 3 {
            return Err(ParseError::InvalidCharacter {
                position: i - equals + 3,
            });
        }
        Ok(SegmentEnd {
            chars,
            trailing_bits: chars * 6 - used,
            equals,
            dot,
        })
    }
}

/// How a segment is padded after its last field.
///
/// The TCF specification says the bits are "zero-padded to a 6-bit boundary" ([`Padding::Sextet`]).
/// The two reference libraries pad further: iabtcf-java pads to a byte boundary ([`Padding::Byte`],
/// which also makes every segment canonical base64 that byte-oriented decoders accept) and iabtcf-es
/// pads to a multiple of 24 bits ([`Padding::Quad`]). A parsed string remembers the convention it was
/// written with, so that decoding and re-encoding gives back the same text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Padding {
    /// Pad to a 6-bit boundary: the fewest characters, fewer than 6 trailing bits (the strict rule).
    #[default]
    Sextet,
    /// Pad to a byte boundary, then to a 6-bit boundary, as iabtcf-java and base64 encoders do.
    Byte,
    /// Pad to a multiple of 24 bits (whole groups of 4 characters), as iabtcf-es does.
    Quad,
}

impl Padding {
    /// The number of characters a segment of `bits` bits takes with this padding.
    pub(crate) fn chars(self, bits: usize) -> usize {
        match self {
            Padding::Sextet => bits.div_ceil(6),
            Padding::Byte => (bits.div_ceil(8) * 8).div_ceil(6),
            Padding::Quad => bits.div_ceil(24) * 4,
        }
    }
}

/// Writes big-endian bit fields as base64url characters onto a `String`.
#[derive(Debug)]
pub(crate) struct BitWriter<'a> {
    out: &'a mut String,
    /// Pending bits, right-aligned; fewer than 6 between calls.
    acc: u64,
    pending: u32,
    bits: usize,
}

impl<'a> BitWriter<'a> {
    pub(crate) fn new(out: &'a mut String) -> Self {
        BitWriter {
            out,
            acc: 0,
            pending: 0,
            bits: 0,
        }
    }

    /// Writes the low `n` bits (at most 36) of `value`.
    #[inline]
    pub(crate) fn write(&mut self, value: u64, n: u32) {
        debug_assert!(n <= 36);
        if n == 0 {
            return;
        }
        let mask = (1u64 << n) - 1;
        self.acc = (self.acc << n) | (value & mask);
        self.pending += n;
        self.bits += n as usize;
        while self.pending >= 6 {
            self.pending -= 6;
            let sextet = (self.acc >> self.pending) & 63;
            self.out.push(char::from(ALPHABET[sextet as usize]));
        }
        self.acc &= (1u64 << self.pending) - 1;
    }

    /// Writes one bit.
    #[inline]
    pub(crate) fn write_bool(&mut self, value: bool) {
        self.write(u64::from(value), 1);
    }

    /// Writes the first `nbits` bits of `words` (most significant bit first).
    pub(crate) fn write_words(&mut self, words: &[u64], mut nbits: usize) {
        for &word in words {
            if nbits == 0 {
                break;
            }
            let take = nbits.min(64) as u32;
            let value = word >> (64 - take);
            if take > 32 {
                self.write(value >> 32, take - 32);
                self.write(value & 0xFFFF_FFFF, 32);
            } else {
                self.write(value, take);
            }
            nbits -= take as usize;
        }
    }

    /// Pads the segment with zero bits and, when `equals` is set, with `=` to a multiple of 4
    /// characters.
    pub(crate) fn finish(mut self, padding: Padding, equals: bool) {
        let chars = padding.chars(self.bits);
        let mut zeros = chars * 6 - self.bits;
        while zeros > 0 {
            let n = zeros.min(36);
            self.write(0, n as u32);
            zeros -= n;
        }
        if equals {
            for _ in 0..(4 - chars % 4) % 4 {
                self.out.push('=');
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writer_then_reader_round_trips_fields() {
        let mut out = String::new();
        let mut w = BitWriter::new(&mut out);
        w.write(2, 6);
        w.write(0xF_FFFF_FFFF, 36);
        w.write_bool(true);
        w.write_words(&[0xDEAD_BEEF_0123_4567, 0xA000_0000_0000_0000], 67);
        w.finish(Padding::Sextet, false);
        assert_eq!(out.len(), (6 + 36 + 1 + 67usize).div_ceil(6));

        let mut r = BitReader::new(out.as_bytes(), 0, SegmentType::Core);
        assert_eq!(r.read(6, "a").unwrap(), 2);
        assert_eq!(r.read(36, "b").unwrap(), 0xF_FFFF_FFFF);
        assert!(r.read_bool("c").unwrap());
        let mut words = [0u64; 2];
        r.read_words(67, &mut words, "d").unwrap();
        assert_eq!(words, [0xDEAD_BEEF_0123_4567, 0xA000_0000_0000_0000]);
        assert_eq!(r.finish().unwrap().trailing_bits, 4);
    }

    #[test]
    fn reader_reports_the_end_and_bad_characters() {
        let mut r = BitReader::new(b"A", 0, SegmentType::Core);
        assert!(r.read(6, "x").is_ok());
        assert_eq!(
            r.read(1, "y"),
            Err(ParseError::UnexpectedEnd {
                segment: SegmentType::Core,
                field: "y"
            })
        );
        let mut r = BitReader::new(b"..A+", 2, SegmentType::Core);
        assert_eq!(
            r.read(12, "x"),
            Err(ParseError::InvalidCharacter { position: 3 })
        );
        let r = BitReader::new(b"A*", 0, SegmentType::Core);
        assert!(matches!(
            r.finish(),
            Err(ParseError::InvalidCharacter { position: 1 })
        ));
        let mut r = BitReader::new(b"AB=.C", 0, SegmentType::Core);
        assert!(r.read(6, "x").is_ok());
        let end = r.finish().unwrap();
        assert_eq!(
            (end.chars, end.trailing_bits, end.equals, end.dot),
            (2, 6, 1, Some(3))
        );
    }

    #[test]
    fn padding_character_counts() {
        assert_eq!(Padding::Sextet.chars(99), 17);
        assert_eq!(Padding::Byte.chars(99), 18);
        assert_eq!(Padding::Quad.chars(99), 20);
        assert_eq!(Padding::Byte.chars(486), 82);
    }
}
