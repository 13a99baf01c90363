//! A counting global allocator: the bytes Rust code holds now and at its peak, and a hard cap on any single
//! request. A binary that fuzzes installs it (`#[global_allocator] static A: Counting = Counting;`).
//!
//! What libtorch allocates in C++ does not pass through here; everything the importers, decoders and loaders
//! allocate in Rust does.
#![allow(unsafe_code)] // a GlobalAlloc is an unsafe trait; every method forwards to the system allocator

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
/// The input being run (for the abort message), as `target index` packed by [`set_current`].
static INPUT: AtomicU64 = AtomicU64::new(u64::MAX);

/// The largest single allocation an input may ask for: 1 GiB. A request over it aborts the process with a message
/// naming the input (an importer that trusted a number in its input once asked for 24 GB).
pub const MAX_ONE_ALLOCATION: usize = 1 << 30;

/// Counts every allocation; see the module docs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counting;

fn grow(n: usize) {
    let now = CURRENT.fetch_add(n, Ordering::Relaxed) + n;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

fn check(size: usize) {
    if size > MAX_ONE_ALLOCATION {
        // No allocation from here on: format into a stack buffer.
        let mut buf = [0u8; 160];
        let mut w: &mut [u8] = &mut buf;
        let _ = write!(
            w,
            "\nm6rec-fuzz: input {} asked for one allocation of {size} bytes (bound {MAX_ONE_ALLOCATION}); aborting\n",
            INPUT.load(Ordering::Relaxed)
        );
        let left = w.len();
        let _ = std::io::stderr().write_all(&buf[..buf.len() - left]);
        std::process::abort();
    }
}

// SAFETY: every method forwards to `System` with the caller's layout and pointer unchanged; the counters are atomics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        // SAFETY: forwarded as given (the caller upholds `alloc`'s contract).
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grow(layout.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        // SAFETY: as above.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grow(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator (hence from `System`) with this layout.
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        check(new_size);
        // SAFETY: forwarded as given.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
            grow(new_size);
        }
        p
    }
}

/// Bytes held now.
pub fn current() -> usize {
    CURRENT.load(Ordering::Relaxed)
}

/// Starts measuring one input's peak: the peak is reset to what is held now.
pub fn reset_peak() -> usize {
    let now = current();
    PEAK.store(now, Ordering::Relaxed);
    now
}

/// The peak since [`reset_peak`].
pub fn peak() -> usize {
    PEAK.load(Ordering::Relaxed)
}

/// Records which input runs (named in the abort message of an oversized allocation).
pub fn set_current(index: u64) {
    INPUT.store(index, Ordering::Relaxed);
}
