//! Decoding allocates nothing for a core-only string with vendor ids up to 256 and at most 8
//! publisher-restriction entries, and never once per vendor: counted with a global allocator that tallies this thread's allocations.

#![allow(
    unsafe_code,
    reason = "a GlobalAlloc implementation is unsafe by definition"
)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::hint::black_box;

use consent_tcf::TcString;

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded to the system allocator unchanged; the counter is a
// thread-local `Cell` that does not allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

/// Decodes `input` and checks the number of allocations it took.
fn check(input: &str, expected: u64) {
    let before = allocations();
    let tc = TcString::parse(black_box(input)).unwrap();
    let during = allocations() - before;
    drop(black_box(tc));
    assert_eq!(during, expected, "{input}");
}

#[test]
fn allocations_per_decode() {
    // Core-only strings: none.
    check("CQSbk4AQSbk4ANwAAAENAwCgAAAAAAAAAAYgACPAAAAA", 0);
    check("COtybn4PA_zT4KjACBENAPCIAEBAAECAAIAAAAAAAAAA", 0);
    check("COv__-wOv__-wC2AAAENAPCgAAAAAAAAAAAAA_wAQA_gEBABAEAAAA", 0);
    // Range sections of up to 8 sorted entries are kept as ranges, whatever the ids: V5 (702–703
    // and 683–684) and V1 whole (Disclosed Vendors up to 404) allocate nothing either.
    check(
        "COwBOpCOwBOpCLqAAAENAPCAAAAAAAAAAAAAFfwAYFfAV-BVkAGBVYFWAAA",
        0,
    );
    check(
        "CQSbk4AQSbk4ANwAAAENAwCgAAAAAAAAAAYgACPAAAAA.IDKQA4AAgAKAGQAygAAA.YAAAAAAAAAAA",
        0,
    );
    // Bitfields above 256 ids take one allocation per section, whatever the number of vendors:
    // the 720-vendor string has two.
    check(crate::vectors::LIVERAMP_720, 2);
    // A range section with more than 8 entries becomes a bitset: one allocation (ids above 256).
    let ranges = TcString::builder()
        .vendor_consents((1..=9).map(|i| i * 100))
        .build()
        .unwrap();
    assert_eq!(
        ranges.vendor_consents().encoding(),
        consent_tcf::VendorEncoding::Range
    );
    check(&ranges.encode(), 1);
    // Publisher restrictions: none for up to 8 entries (V6: three restrictions, one range)...
    check(
        "COvzTO5OvzTO5BRAAAENAPCoALIAADgAAAAAAewAwABAAlAB6ABBFADBQAQA9hAAAcAA",
        0,
    );
    // ...and a growing list beyond: 10 restrictions with 3 ranges each (40 entries) spill once to
    // 32 entries and grow once.
    let mut many = TcString::builder();
    for purpose in 1..=10 {
        many = many.publisher_restriction(
            purpose,
            consent_tcf::RestrictionType::RequireConsent,
            [1, 10, 100].map(consent_tcf::VendorRange::single),
        );
    }
    check(&many.build().unwrap().encode(), 2);
    // Lookups allocate nothing, and the counter does count.
    let tc = TcString::parse(crate::vectors::LIVERAMP_720).unwrap();
    let before = allocations();
    assert!(black_box(&tc).vendor_consent(black_box(720)) && !tc.purpose_consent(1));
    assert_eq!(allocations() - before, 0);
    let v: Vec<u8> = Vec::with_capacity(black_box(16));
    assert_eq!(allocations() - before, 1);
    drop(v);
}
