//! The hot check allocates nothing: counted with a global allocator that tallies this thread's
//! allocations.

#![allow(
    unsafe_code,
    reason = "a GlobalAlloc implementation is unsafe by definition"
)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use consent_core::*;

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

#[test]
fn the_check_allocates_nothing() {
    let mut engine = Engine::new(Config::new("ORG@AdobeOrg"));
    engine
        .handle(Timestamp(0), Input::Start(Stored::default()))
        .unwrap();
    while engine.poll_action().is_some() {}
    let requirement = Requirement::general().and(Purpose::SHARE);
    let before = allocations();
    let mut allowed = 0;
    for _ in 0..1_000 {
        if engine.check(std::hint::black_box(requirement)) == Verdict::Allowed {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 1_000);
    assert_eq!(allocations() - before, 0);
    // The counter does count: a Vec allocates once.
    let v: Vec<u8> = Vec::with_capacity(std::hint::black_box(16));
    assert_eq!(allocations() - before, 1);
    drop(v);
}
