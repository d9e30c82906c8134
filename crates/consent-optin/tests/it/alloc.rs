//! `is_approved` allocates nothing: a global allocator that counts this thread's allocations.
#![allow(
    unsafe_code,
    reason = "a counting GlobalAlloc needs unsafe; it only forwards to System"
)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use consent_optin::Category;

use crate::support::{applies, optin};

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

struct Counting;

// SAFETY: every call forwards to `System` with the same arguments; counting touches only a
// const-initialised thread-local `Cell`, which never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which we pass on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

fn count() {
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_during(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

#[test]
fn the_counter_sees_allocations() {
    assert!(allocations_during(|| drop(std::hint::black_box(vec![1u8; 16]))) >= 1);
}

#[test]
fn is_approved_of_three_categories_allocates_nothing() {
    let optin = optin(applies().custom_category("chat"));
    optin
        .approve(&[Category::Aam, Category::Analytics], false)
        .unwrap();
    let three = [Category::Aam, Category::Analytics, Category::Target];
    let custom = [Category::Aam, Category::custom("chat")];
    let two = [Category::Aam, Category::Analytics];
    let permissions = optin.permissions();
    let mut approved = 0;
    let allocations = allocations_during(|| {
        for _ in 0..1_000 {
            approved += usize::from(optin.is_approved(std::hint::black_box(&three)));
            approved += usize::from(optin.is_approved(std::hint::black_box(&[])));
            approved += usize::from(optin.is_approved(std::hint::black_box(&custom)));
            approved += usize::from(permissions.is_approved(std::hint::black_box(&three)));
            approved += usize::from(optin.is_approved(std::hint::black_box(&two)));
        }
    });
    assert_eq!(allocations, 0);
    assert_eq!(
        approved, 1_000,
        "only the two approved categories are approved"
    );
}
