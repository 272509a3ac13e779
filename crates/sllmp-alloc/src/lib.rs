//! SLLMP's global allocator: [mimalloc], entered on its fast path.
//!
//! The `mimalloc` crate's allocator passes every allocation to `mi_malloc_aligned`, whose
//! generic alignment handling costs about 65 instructions per call even when the alignment
//! is the natural one; a proxy request makes over a hundred allocations (callgrind, see
//! `docs/benchmarks.md`). [`MiMalloc`] calls `mi_malloc` (about 20) whenever mimalloc's own
//! guarantee already covers the alignment, and the aligned entry points otherwise.
//!
//! ```no_run
//! #[global_allocator]
//! static ALLOCATOR: sllmp_alloc::MiMalloc = sllmp_alloc::MiMalloc;
//! # fn main() {}
//! ```
//!
//! [mimalloc]: https://github.com/microsoft/mimalloc

#![no_std]

use core::alloc::{GlobalAlloc, Layout};
use core::ffi::c_void;

use libmimalloc_sys as ffi;

/// The alignment every `mi_malloc` block of at least this size has: mimalloc's
/// `MI_MAX_ALIGN_SIZE` (16 bytes on 64-bit targets, like glibc's `malloc`).
const GUARANTEED_ALIGN: usize = 2 * core::mem::size_of::<usize>();

/// The mimalloc global allocator (see the [crate] docs).
#[derive(Debug, Clone, Copy, Default)]
pub struct MiMalloc;

/// Whether a plain `mi_malloc` of `layout.size()` bytes is aligned enough for `layout`:
/// mimalloc aligns blocks of at least [`GUARANTEED_ALIGN`] bytes to it, and smaller blocks
/// to their size class (a multiple of the alignment, since Rust sizes are).
#[inline]
fn natural(layout: &Layout) -> bool {
    layout.align() <= GUARANTEED_ALIGN && layout.align() <= layout.size()
}

// SAFETY: every pointer handed out comes from mimalloc and is aligned as `layout` asks
// (`natural` checks mimalloc's guarantee, the aligned calls take the alignment), and every
// pointer freed or reallocated is one mimalloc handed out, as `GlobalAlloc` requires.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for MiMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: mimalloc's allocation functions have no preconditions.
        unsafe {
            if natural(&layout) {
                ffi::mi_malloc(layout.size()).cast()
            } else {
                ffi::mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        unsafe {
            if natural(&layout) {
                ffi::mi_zalloc(layout.size()).cast()
            } else {
                ffi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator (the caller's obligation).
        unsafe { ffi::mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from this allocator with `layout` (the caller's obligation);
        // the new block keeps the alignment by the same rule as `alloc`.
        unsafe {
            if layout.align() <= GUARANTEED_ALIGN && layout.align() <= new_size {
                ffi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
            } else {
                ffi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::vec::Vec;

    use super::*;

    #[test]
    fn blocks_have_the_alignment_asked_for() {
        for align in [1, 2, 4, 8, 16, 32, 64, 128, 4096] {
            for size in [align, align * 3, 24, 40, 100, 1000, 70_000] {
                let Ok(layout) = Layout::from_size_align(size, align) else {
                    continue;
                };
                // SAFETY: a non-zero size; the block is freed with the same layout.
                #[allow(unsafe_code)]
                unsafe {
                    let p = MiMalloc.alloc(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "size {size}, align {align}");
                    p.write_bytes(0xab, size);
                    let p = MiMalloc.realloc(p, layout, size * 2 + 8);
                    assert_eq!(p as usize % align, 0, "realloc: size {size}, align {align}");
                    assert_eq!(*p.add(size - 1), 0xab, "realloc kept the bytes");
                    MiMalloc.dealloc(p, Layout::from_size_align(size * 2 + 8, align).unwrap());
                    let z = MiMalloc.alloc_zeroed(layout);
                    assert_eq!(z as usize % align, 0);
                    assert!((0..size).all(|i| *z.add(i) == 0));
                    MiMalloc.dealloc(z, layout);
                }
            }
        }
        // And as a real allocator behind collections.
        let v: Vec<u64> = (0..1000).collect();
        assert_eq!(v.iter().sum::<u64>(), 499_500);
    }
}
