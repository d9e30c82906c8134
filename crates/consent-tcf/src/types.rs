//! The value types of a TC string: timestamps, letter codes, vendor sets and publisher data.

use std::fmt;

/// A TC string timestamp: deciseconds (tenths of a second) since the Unix epoch, UTC, 36 bits wide.
///
/// Displays as RFC 3339, for example `2025-06-03T00:00:00Z` or `2020-03-09T15:53:02.4Z`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The largest value the 36-bit field holds.
    pub const MAX_DECISECONDS: u64 = (1 << 36) - 1;
    /// Deciseconds in a day.
    const DAY: u64 = 864_000;

    /// A timestamp from deciseconds since the epoch. Values above [`Self::MAX_DECISECONDS`] are
    /// refused by the builder.
    pub const fn from_deciseconds(deciseconds: u64) -> Self {
        Timestamp(deciseconds)
    }

    /// A timestamp from whole seconds since the epoch.
    pub const fn from_unix_seconds(seconds: u64) -> Self {
        Timestamp(seconds.saturating_mul(10))
    }

    /// Midnight UTC of the given civil date (proleptic Gregorian), or `None` for an impossible date
    /// or one before 1970.
    pub fn from_date(year: u32, month: u32, day: u32) -> Option<Self> {
        if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) || year < 1970
        {
            return None;
        }
        let days = days_from_civil(i64::from(year), month, day);
        u64::try_from(days).ok().map(|d| Timestamp(d * Self::DAY))
    }

    /// Deciseconds since the epoch, as stored in the string.
    pub const fn deciseconds(self) -> u64 {
        self.0
    }

    /// Milliseconds since the epoch.
    pub const fn unix_millis(self) -> u64 {
        self.0.saturating_mul(100)
    }

    /// Whole seconds since the epoch (rounded down).
    pub const fn unix_seconds(self) -> u64 {
        self.0 / 10
    }

    /// Whether the timestamp is midnight UTC, as TCF requires since December 2021.
    pub const fn is_day_level(self) -> bool {
        self.0.is_multiple_of(Self::DAY)
    }

    /// The timestamp rounded down to midnight UTC.
    pub const fn to_day_level(self) -> Self {
        Timestamp(self.0 - self.0 % Self::DAY)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let days = self.0 / Self::DAY;
        let rest = self.0 % Self::DAY;
        let (year, month, day) = civil_from_days(days as i64);
        let (hour, minute) = (rest / 36_000, rest / 600 % 60);
        let (second, tenth) = (rest / 10 % 60, rest % 10);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}"
        )?;
        if tenth != 0 {
            write!(f, ".{tenth}")?;
        }
        f.write_str("Z")
    }
}

fn is_leap(year: u32) -> bool {
    year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400))
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// A two-letter code (ISO 639-1 language or ISO 3166-1 alpha-2 country) as TCF stores it: two 6-bit
/// values, `A` = 0 … `Z` = 25.
///
/// Displays as two upper-case letters (`EN`, `DE`). A decoded value above 25 is not a letter; it
/// displays as `?` and [`TcString::validate`](crate::TcString::validate) reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Alpha2([u8; 2]);

impl Alpha2 {
    /// `EN`, the default consent language.
    pub const EN: Alpha2 = Alpha2([4, 13]);
    /// `AA`, the publisher country code meaning "unknown".
    pub const AA: Alpha2 = Alpha2([0, 0]);

    /// Two ASCII letters, in either case; `None` for anything else.
    pub fn new(code: &str) -> Option<Self> {
        match code.as_bytes() {
            &[a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => Some(Alpha2([
                a.to_ascii_uppercase() - b'A',
                b.to_ascii_uppercase() - b'A',
            ])),
            _ => None,
        }
    }

    pub(crate) const fn from_raw(raw: u64) -> Self {
        Alpha2([((raw >> 6) & 63) as u8, (raw & 63) as u8])
    }

    pub(crate) const fn raw(self) -> u64 {
        ((self.0[0] as u64) << 6) | self.0[1] as u64
    }

    /// Whether both values are letters.
    pub const fn is_valid(self) -> bool {
        self.0[0] < 26 && self.0[1] < 26
    }

    /// The two upper-case ASCII letters (`?` for a value that is not a letter).
    pub const fn to_bytes(self) -> [u8; 2] {
        const fn letter(v: u8) -> u8 {
            if v < 26 { b'A' + v } else { b'?' }
        }
        [letter(self.0[0]), letter(self.0[1])]
    }
}

impl fmt::Display for Alpha2 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b] = self.to_bytes();
        write!(f, "{}{}", char::from(a), char::from(b))
    }
}

impl PartialEq<str> for Alpha2 {
    fn eq(&self, other: &str) -> bool {
        self.to_bytes() == other.as_bytes()
    }
}

impl PartialEq<&str> for Alpha2 {
    fn eq(&self, other: &&str) -> bool {
        self.to_bytes() == other.as_bytes()
    }
}

/// How a vendor section is written in the string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum VendorEncoding {
    /// One bit per vendor id up to MaxVendorId.
    Bitfield,
    /// A list of single ids and id ranges.
    Range,
}

/// Words kept inline: vendor ids up to 256 need no heap allocation.
const INLINE_WORDS: usize = 4;

/// Ranges of a range-encoded section kept as they are (sorted and disjoint), inline.
const INLINE_SPANS: usize = 8;

#[derive(Clone)]
enum Words {
    Inline([u64; INLINE_WORDS]),
    Heap(Box<[u64]>),
    /// A decoded range section of up to 8 sorted, disjoint entries, expanded into a bitset lazily,
    /// on the first change.
    Spans(u8, [VendorRange; INLINE_SPANS]),
}

/// A set of vendor ids (1 to 65535) stored as a bitset, with the section's MaxVendorId.
///
/// Ids up to 256 are stored inline; larger sets take one heap allocation for the whole set, never one
/// per vendor. A decoded range section of up to 8 sorted entries is kept as its ranges (no
/// allocation whatever the ids) and expanded into a bitset only when changed. Bit `i` of the bitset
/// is vendor `i + 1`, most significant bit first, as in the string.
#[derive(Clone)]
pub struct VendorSet {
    max: u16,
    words: Words,
    /// The encoding the set was decoded from, reused on re-encoding while the set is unchanged.
    source: Option<VendorEncoding>,
}

impl Default for VendorSet {
    fn default() -> Self {
        Self::new()
    }
}

impl VendorSet {
    /// An empty set (MaxVendorId 0).
    pub const fn new() -> Self {
        VendorSet {
            max: 0,
            words: Words::Inline([0; INLINE_WORDS]),
            source: None,
        }
    }

    /// An empty set with room for ids up to `max`, whose MaxVendorId is `max`.
    pub(crate) fn with_max(max: u16) -> Self {
        let n = usize::from(max).div_ceil(64);
        let words = if n <= INLINE_WORDS {
            Words::Inline([0; INLINE_WORDS])
        } else {
            Words::Heap(vec![0; n].into_boxed_slice())
        };
        VendorSet {
            max,
            words,
            source: None,
        }
    }

    /// Makes this set an empty bitset with room for ids up to `max`, in place. Decoding fills the
    /// set where it already lies inside the `TcString` rather than building one on the stack and
    /// moving it in, which costs a copy and stalls store forwarding.
    #[inline]
    pub(crate) fn reset_with_max(&mut self, max: u16) {
        let n = usize::from(max).div_ceil(64);
        self.max = max;
        self.source = None;
        if n <= INLINE_WORDS {
            match &mut self.words {
                Words::Inline(words) => *words = [0; INLINE_WORDS],
                other => *other = Words::Inline([0; INLINE_WORDS]),
            }
        } else {
            self.words = Words::Heap(vec![0; n].into_boxed_slice());
        }
    }

    /// Makes this set an empty range section with MaxVendorId `max`, kept as ranges, in place (see
    /// [`VendorSet::reset_with_max`] for why in place); [`VendorSet::push_span`] then adds to it.
    #[inline]
    pub(crate) fn reset_spans(&mut self, max: u16) {
        self.max = max;
        self.source = Some(VendorEncoding::Range);
        match &mut self.words {
            Words::Spans(n, _) => *n = 0,
            other => *other = Words::Spans(0, [VendorRange::single(0); INLINE_SPANS]),
        }
    }

    /// Appends the decoded range `start..=end` (within `1..=max`) to a set kept as ranges, and
    /// returns whether it could: `false` when the set is a bitset, is full, or the range does not
    /// come after the last one kept, and the caller then expands the set with
    /// [`VendorSet::words_mut`].
    #[inline]
    pub(crate) fn push_span(&mut self, start: u16, end: u16) -> bool {
        if let Words::Spans(n, items) = &mut self.words {
            let kept = usize::from(*n);
            let after_last = kept == 0 || items.get(kept - 1).is_some_and(|r| r.end < start);
            if after_last && let Some(slot) = items.get_mut(kept) {
                *slot = VendorRange { start, end };
                *n += 1;
                return true;
            }
        }
        false
    }

    /// A decoded range section kept as its ranges, which must be sorted, disjoint and within
    /// `1..=max`. Decoding uses [`VendorSet::set_spans`] in place; the tests build sets with this.
    #[cfg(test)]
    pub(crate) fn from_spans(max: u16, spans: &[VendorRange]) -> Self {
        let mut items = [VendorRange::single(0); INLINE_SPANS];
        let n = spans.len().min(INLINE_SPANS);
        items[..n].copy_from_slice(&spans[..n]);
        VendorSet {
            max,
            words: Words::Spans(n as u8, items),
            source: Some(VendorEncoding::Range),
        }
    }

    fn spans(&self) -> Option<&[VendorRange]> {
        match &self.words {
            Words::Spans(n, items) => Some(&items[..usize::from(*n)]),
            _ => None,
        }
    }

    /// Turns kept ranges into a bitset. The check is inlined because a set is almost always a
    /// bitset already (every decoded bitfield goes through here); the conversion is not.
    #[inline]
    fn materialize(&mut self) {
        if matches!(self.words, Words::Spans(..)) {
            self.expand_spans();
        }
    }

    /// The conversion of [`VendorSet::materialize`].
    #[inline(never)]
    fn expand_spans(&mut self) {
        if let Words::Spans(n, items) = self.words {
            let mut set = VendorSet::with_max(self.max);
            for r in &items[..usize::from(n)] {
                set.set_range_unchecked(r.start, r.end);
            }
            self.words = set.words;
        }
    }

    fn all_words(&self) -> &[u64] {
        match &self.words {
            Words::Inline(w) => w,
            Words::Heap(w) => w,
            Words::Spans(..) => &[],
        }
    }

    /// The words that hold ids up to MaxVendorId, or `None` when the set is kept as ranges.
    pub(crate) fn words(&self) -> Option<&[u64]> {
        let n = usize::from(self.max).div_ceil(64);
        match &self.words {
            Words::Spans(..) => None,
            _ => self.all_words().get(..n),
        }
    }

    pub(crate) fn words_mut(&mut self) -> &mut [u64] {
        self.materialize();
        match &mut self.words {
            Words::Inline(w) => w,
            Words::Heap(w) => w,
            Words::Spans(..) => &mut [],
        }
    }

    pub(crate) fn set_source(&mut self, source: VendorEncoding) {
        self.source = Some(source);
    }

    /// Adds the ids `start..=end` without touching MaxVendorId or the source encoding.
    #[inline]
    pub(crate) fn set_range_unchecked(&mut self, start: u16, end: u16) {
        // Callers guarantee 1 <= start <= end <= max.
        let (s, e) = (usize::from(start) - 1, usize::from(end) - 1);
        let words = self.words_mut();
        if s == e {
            if let Some(word) = words.get_mut(s / 64) {
                *word |= 1u64 << (63 - s % 64);
            }
            return;
        }
        let (ws, we) = (s / 64, e / 64);
        let head = u64::MAX >> (s % 64);
        let tail = u64::MAX << (63 - e % 64);
        if ws == we {
            words[ws] |= head & tail;
        } else {
            words[ws] |= head;
            for w in &mut words[ws + 1..we] {
                *w = u64::MAX;
            }
            words[we] |= tail;
        }
    }

    /// Whether vendor `id` is in the set.
    #[inline]
    pub fn contains(&self, id: u16) -> bool {
        if id == 0 || id > self.max {
            return false;
        }
        let i = usize::from(id - 1);
        let word = match &self.words {
            Words::Inline(w) => w[i / 64],
            Words::Heap(w) => w[i / 64],
            Words::Spans(n, items) => {
                return items[..usize::from(*n)].iter().any(|r| r.contains(id));
            }
        };
        (word >> (63 - i % 64)) & 1 == 1
    }

    /// The section's MaxVendorId: the largest id the section covers.
    pub const fn max_vendor_id(&self) -> u16 {
        self.max
    }

    /// The encoding the set was decoded from; `None` once it was built or changed.
    pub const fn source_encoding(&self) -> Option<VendorEncoding> {
        self.source
    }

    /// Number of vendors in the set.
    pub fn len(&self) -> usize {
        match (self.words(), self.spans()) {
            (Some(words), _) => words.iter().map(|w| w.count_ones() as usize).sum(),
            (None, Some(spans)) => spans.iter().map(|r| usize::from(r.end - r.start) + 1).sum(),
            (None, None) => 0,
        }
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds vendor `id` (raising MaxVendorId if needed). Id 0 is not a vendor and is ignored; returns
    /// whether the set changed.
    pub fn insert(&mut self, id: u16) -> bool {
        if id == 0 || self.contains(id) {
            return false;
        }
        self.materialize();
        if id > self.max {
            let needed = usize::from(id).div_ceil(64);
            let have = self.all_words().len();
            if needed > have {
                let mut grown = vec![0u64; needed.max(have * 2).min(1024)];
                grown[..have].copy_from_slice(self.all_words());
                self.words = Words::Heap(grown.into_boxed_slice());
            }
            self.max = id;
        }
        self.set_range_unchecked(id, id);
        self.source = None;
        true
    }

    /// Removes vendor `id`; when it was the largest id, MaxVendorId drops to the largest id left.
    /// Returns whether the set changed.
    pub fn remove(&mut self, id: u16) -> bool {
        if !self.contains(id) {
            return false;
        }
        let i = usize::from(id - 1);
        if let Some(word) = self.words_mut().get_mut(i / 64) {
            *word &= !(1u64 << (63 - i % 64));
        }
        if id == self.max {
            self.max = self.iter().last().unwrap_or(0);
        }
        self.source = None;
        true
    }

    /// The vendor ids in increasing order.
    pub fn iter(&self) -> VendorIter<'_> {
        match (self.words(), self.spans()) {
            (Some(words), _) => VendorIter(IterInner::Words {
                words,
                index: 0,
                current: words.first().copied().unwrap_or(0),
            }),
            (None, spans) => VendorIter(IterInner::Spans {
                spans: spans.unwrap_or_default(),
                next: spans
                    .and_then(|s| s.first())
                    .map_or(0, |r| u32::from(r.start)),
            }),
        }
    }

    /// The runs of consecutive ids, as a range encoding writes them.
    pub fn ranges(&self) -> impl Iterator<Item = VendorRange> + '_ {
        let mut ids = self.iter().peekable();
        std::iter::from_fn(move || {
            let start = ids.next()?;
            let mut end = start;
            while ids.peek() == Some(&(end.wrapping_add(1))) && end != u16::MAX {
                end += 1;
                ids.next();
            }
            Some(VendorRange { start, end })
        })
    }

    /// The number of bits the range encoding of this set takes after IsRangeEncoding, and the
    /// number of entries.
    pub(crate) fn range_cost(&self) -> (usize, usize) {
        let mut bits = 12;
        let mut entries = 0;
        for r in self.ranges() {
            bits += if r.start == r.end { 17 } else { 33 };
            entries += 1;
        }
        (bits, entries)
    }

    /// The encoding [`TcString::encode`](crate::TcString::encode) writes: the source encoding while
    /// the set is unchanged, otherwise the smaller of the two (the bitfield on a tie).
    pub fn encoding(&self) -> VendorEncoding {
        if let Some(source) = self.source {
            return source;
        }
        let (range_bits, entries) = self.range_cost();
        if entries <= 4095 && range_bits < usize::from(self.max) {
            VendorEncoding::Range
        } else {
            VendorEncoding::Bitfield
        }
    }
}

impl PartialEq for VendorSet {
    /// Sets are equal when they hold the same ids and MaxVendorId; the source encoding is ignored.
    fn eq(&self, other: &Self) -> bool {
        self.max == other.max
            && match (self.words(), other.words()) {
                (Some(a), Some(b)) => a == b,
                _ => self.iter().eq(other.iter()),
            }
    }
}

impl Eq for VendorSet {}

impl fmt::Debug for VendorSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VendorSet")
            .field("max_vendor_id", &self.max)
            .field("ids", &DebugIds(self))
            .finish()
    }
}

struct DebugIds<'a>(&'a VendorSet);

impl fmt::Debug for DebugIds<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.iter()).finish()
    }
}

impl FromIterator<u16> for VendorSet {
    fn from_iter<I: IntoIterator<Item = u16>>(iter: I) -> Self {
        let mut set = VendorSet::new();
        for id in iter {
            set.insert(id);
        }
        set
    }
}

impl<'a> IntoIterator for &'a VendorSet {
    type Item = u16;
    type IntoIter = VendorIter<'a>;
    fn into_iter(self) -> VendorIter<'a> {
        self.iter()
    }
}

/// Iterator over the ids of a [`VendorSet`], in increasing order.
#[derive(Debug, Clone)]
pub struct VendorIter<'a>(IterInner<'a>);

#[derive(Debug, Clone)]
enum IterInner<'a> {
    Words {
        words: &'a [u64],
        index: usize,
        current: u64,
    },
    Spans {
        spans: &'a [VendorRange],
        /// The next id of `spans[0]`.
        next: u32,
    },
}

impl Iterator for VendorIter<'_> {
    type Item = u16;

    fn next(&mut self) -> Option<u16> {
        match &mut self.0 {
            IterInner::Words {
                words,
                index,
                current,
            } => loop {
                if *current != 0 {
                    let bit = current.leading_zeros();
                    *current &= !(1u64 << (63 - bit));
                    return Some((*index * 64 + bit as usize + 1) as u16);
                }
                *index += 1;
                *current = *words.get(*index)?;
            },
            IterInner::Spans { spans, next } => {
                let first = spans.first()?;
                let id = *next as u16;
                if *next >= u32::from(first.end) {
                    *spans = &spans[1..];
                    *next = spans.first().map_or(0, |r| u32::from(r.start));
                } else {
                    *next += 1;
                }
                Some(id)
            }
        }
    }
}

/// An inclusive range of vendor ids, as written in range encodings and publisher restrictions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VendorRange {
    /// StartOrOnlyVendorId.
    pub start: u16,
    /// EndVendorId (equal to `start` for a single id).
    pub end: u16,
}

impl VendorRange {
    /// A range of one vendor.
    pub const fn single(id: u16) -> Self {
        VendorRange { start: id, end: id }
    }

    /// Whether `id` lies in the range.
    pub const fn contains(&self, id: u16) -> bool {
        self.start <= id && id <= self.end
    }
}

/// The type of a publisher restriction (2 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RestrictionType {
    /// 0: the purpose is flatly not allowed.
    NotAllowed,
    /// 1: the vendor must have consent.
    RequireConsent,
    /// 2: the vendor must use legitimate interest.
    RequireLegitimateInterest,
    /// 3: undefined by the specification.
    Undefined,
}

impl RestrictionType {
    pub(crate) const fn from_bits(bits: u64) -> Self {
        match bits & 3 {
            0 => RestrictionType::NotAllowed,
            1 => RestrictionType::RequireConsent,
            2 => RestrictionType::RequireLegitimateInterest,
            _ => RestrictionType::Undefined,
        }
    }

    /// The 2-bit value written in the string.
    pub const fn bits(self) -> u8 {
        match self {
            RestrictionType::NotAllowed => 0,
            RestrictionType::RequireConsent => 1,
            RestrictionType::RequireLegitimateInterest => 2,
            RestrictionType::Undefined => 3,
        }
    }
}

/// One publisher restriction: a purpose, a restriction type and the vendor ranges it applies to.
///
/// The ranges are kept as written; the specification allows them to span ids missing from the GVL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublisherRestriction<'a> {
    pub(crate) purpose_id: u8,
    pub(crate) restriction_type: RestrictionType,
    pub(crate) ranges: &'a [VendorRange],
}

impl<'a> PublisherRestriction<'a> {
    /// The purpose restricted (6 bits).
    pub const fn purpose_id(&self) -> u8 {
        self.purpose_id
    }

    /// The restriction type.
    pub const fn restriction_type(&self) -> RestrictionType {
        self.restriction_type
    }

    /// The vendor ranges, as written.
    pub const fn ranges(&self) -> &'a [VendorRange] {
        self.ranges
    }

    /// Whether the restriction applies to vendor `id`.
    pub fn contains(&self, id: u16) -> bool {
        self.ranges.iter().any(|r| r.contains(id))
    }

    /// The vendor ids, range by range as written (an id may repeat if ranges overlap).
    pub fn vendors(&self) -> impl Iterator<Item = u16> + 'a {
        self.ranges
            .iter()
            .flat_map(|r| (r.start..=r.end).filter(|&id| id != 0))
    }
}

/// Ranges kept inline before spilling to the heap.
const INLINE_RANGES: usize = 8;

/// The publisher restrictions as stored: one flat list where each restriction is a header entry
/// (`start` = PurposeId << 2 | RestrictionType, `end` = number of ranges) followed by its ranges.
/// Up to 8 entries live inline, so a few small restrictions need no allocation; more take one.
#[derive(Debug, Clone)]
pub(crate) enum RangeList {
    Inline(u8, [VendorRange; INLINE_RANGES]),
    Heap(Vec<VendorRange>),
}

impl Default for RangeList {
    fn default() -> Self {
        RangeList::Inline(0, [VendorRange::single(0); INLINE_RANGES])
    }
}

impl RangeList {
    pub(crate) fn as_slice(&self) -> &[VendorRange] {
        match self {
            RangeList::Inline(len, items) => &items[..usize::from(*len)],
            RangeList::Heap(items) => items,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.as_slice().len()
    }

    #[inline]
    pub(crate) fn push(&mut self, item: VendorRange) {
        match self {
            RangeList::Inline(len, items) => {
                if let Some(slot) = items.get_mut(usize::from(*len)) {
                    *slot = item;
                    *len += 1;
                } else {
                    let mut heap = Vec::with_capacity(INLINE_RANGES * 4);
                    heap.extend_from_slice(items);
                    heap.push(item);
                    *self = RangeList::Heap(heap);
                }
            }
            RangeList::Heap(items) => items.push(item),
        }
    }

    /// Sets entry `index` (which exists).
    pub(crate) fn set(&mut self, index: usize, item: VendorRange) {
        let slot = match self {
            RangeList::Inline(_, items) => items.get_mut(index),
            RangeList::Heap(items) => items.get_mut(index),
        };
        if let Some(slot) = slot {
            *slot = item;
        }
    }

    pub(crate) fn truncate(&mut self, new_len: usize) {
        match self {
            RangeList::Inline(len, _) => *len = (*len).min(new_len as u8),
            RangeList::Heap(items) => items.truncate(new_len),
        }
    }

    /// A restriction's header entry.
    pub(crate) fn header(
        purpose_id: u8,
        restriction_type: RestrictionType,
        count: u16,
    ) -> VendorRange {
        VendorRange {
            start: (u16::from(purpose_id) << 2) | u16::from(restriction_type.bits()),
            end: count,
        }
    }
}

/// Iterator over the publisher restrictions of a [`RangeList`].
#[derive(Debug, Clone)]
pub(crate) struct Restrictions<'a> {
    pub(crate) items: &'a [VendorRange],
    pub(crate) remaining: usize,
}

impl<'a> Iterator for Restrictions<'a> {
    type Item = PublisherRestriction<'a>;

    fn next(&mut self) -> Option<PublisherRestriction<'a>> {
        if self.remaining == 0 {
            return None;
        }
        let (header, rest) = self.items.split_first()?;
        let (ranges, rest) = rest.split_at(usize::from(header.end).min(rest.len()));
        self.items = rest;
        self.remaining -= 1;
        Some(PublisherRestriction {
            purpose_id: (header.start >> 2) as u8,
            restriction_type: RestrictionType::from_bits(u64::from(header.start)),
            ranges,
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for Restrictions<'_> {}

/// The Publisher TC segment (type 3): the publisher's own purposes and custom purposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PublisherTc {
    pub(crate) consents: u32,
    pub(crate) legitimate_interests: u32,
    pub(crate) num_custom: u8,
    pub(crate) custom_consents: u64,
    pub(crate) custom_legitimate_interests: u64,
}

/// Bit `n` (1-based) of a `width`-bit field stored right-aligned.
#[inline]
pub(crate) const fn flag(bits: u64, width: u32, n: u32) -> bool {
    n >= 1 && n <= width && (bits >> (width - n)) & 1 == 1
}

/// `bits` with bit `n` (1-based, `1 <= n <= width`) of a `width`-bit field set to `on`.
#[inline]
pub(crate) const fn with_flag(bits: u64, width: u32, n: u32, on: bool) -> u64 {
    let mask = 1u64 << (width - n);
    if on { bits | mask } else { bits & !mask }
}

impl PublisherTc {
    /// Whether the publisher has consent for purpose `n` (1 to 24).
    pub const fn purpose_consent(&self, n: u32) -> bool {
        flag(self.consents as u64, 24, n)
    }

    /// Whether the publisher has legitimate interest for purpose `n` (1 to 24).
    pub const fn purpose_legitimate_interest(&self, n: u32) -> bool {
        flag(self.legitimate_interests as u64, 24, n)
    }

    /// NumCustomPurposes (0 to 63).
    pub const fn num_custom_purposes(&self) -> u8 {
        self.num_custom
    }

    /// Whether custom purpose `n` (1 to NumCustomPurposes) has consent.
    pub const fn custom_purpose_consent(&self, n: u32) -> bool {
        flag(self.custom_consents, self.num_custom as u32, n)
    }

    /// Whether custom purpose `n` (1 to NumCustomPurposes) has legitimate interest.
    pub const fn custom_purpose_legitimate_interest(&self, n: u32) -> bool {
        flag(self.custom_legitimate_interests, self.num_custom as u32, n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_display_as_rfc3339() {
        assert_eq!(
            Timestamp::from_deciseconds(17_489_088_000).to_string(),
            "2025-06-03T00:00:00Z"
        );
        assert_eq!(
            Timestamp::from_deciseconds(15_837_691_824).to_string(),
            "2020-03-09T15:53:02.4Z"
        );
        assert_eq!(
            Timestamp::from_date(2025, 6, 3),
            Some(Timestamp::from_deciseconds(17_489_088_000))
        );
        assert_eq!(Timestamp::from_date(2025, 2, 29), None);
        assert!(Timestamp::from_date(2024, 2, 29).is_some_and(|t| t.is_day_level()));
    }

    #[test]
    fn alpha2_parses_and_displays_upper_case() {
        let de = Alpha2::new("de").unwrap();
        assert_eq!(de.to_string(), "DE");
        assert_eq!(de, "DE");
        assert_eq!(Alpha2::from_raw(de.raw()), de);
        assert_eq!(Alpha2::new("d1"), None);
        assert_eq!(Alpha2::new("DEU"), None);
        assert_eq!(Alpha2::from_raw(63 << 6).to_string(), "?A");
    }

    #[test]
    fn range_sections_kept_as_ranges_behave_like_bitsets() {
        let spans = [
            VendorRange { start: 3, end: 5 },
            VendorRange::single(300),
            VendorRange {
                start: 65534,
                end: 65535,
            },
        ];
        let kept = VendorSet::from_spans(u16::MAX, &spans);
        let bits: VendorSet = [3, 4, 5, 300, 65534, 65535].into_iter().collect();
        assert!(kept.words().is_none());
        assert_eq!(kept, bits);
        assert_eq!(kept.len(), 6);
        assert_eq!(
            kept.iter().collect::<Vec<_>>(),
            bits.iter().collect::<Vec<_>>()
        );
        for id in [0, 2, 3, 5, 6, 299, 300, 301, 65533, 65534, 65535] {
            assert_eq!(kept.contains(id), bits.contains(id), "{id}");
        }
        assert_eq!(kept.encoding(), VendorEncoding::Range);
        // A change expands it into a bitset and forgets the source encoding.
        let mut changed = kept.clone();
        assert!(changed.insert(7));
        assert!(changed.words().is_some());
        assert_eq!(changed.source_encoding(), None);
        assert!(changed.contains(7) && changed.contains(65535));
        let mut removed = kept.clone();
        assert!(removed.remove(65535));
        assert_eq!(removed.max_vendor_id(), 65534);
        assert!(VendorSet::from_spans(10, &[]).is_empty());
    }

    #[test]
    fn vendor_set_inserts_grows_and_removes() {
        let mut set: VendorSet = [3, 1, 2, 700, 256, 257].into_iter().collect();
        assert_eq!(set.max_vendor_id(), 700);
        assert_eq!(set.iter().collect::<Vec<_>>(), [1, 2, 3, 256, 257, 700]);
        assert_eq!(
            set.ranges().collect::<Vec<_>>(),
            [
                VendorRange { start: 1, end: 3 },
                VendorRange {
                    start: 256,
                    end: 257
                },
                VendorRange::single(700)
            ]
        );
        assert!(set.remove(700));
        assert_eq!(set.max_vendor_id(), 257);
        assert!(!set.contains(0) && !set.contains(700) && set.contains(257));
        assert_eq!(set.len(), 5);
        assert!(!set.insert(0));
        let mut all = VendorSet::new();
        assert!(all.insert(u16::MAX));
        all.set_range_unchecked(1, u16::MAX);
        assert_eq!(all.len(), 65535);
        assert_eq!(all.ranges().count(), 1);
    }
}
