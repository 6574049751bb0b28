//! The plugin's heap: a bump allocator (the `bump-heap` feature, on by
//! default; wasm32 only).
//!
//! Every call runs in a fresh instance whose memory is thrown away when the
//! call returns, so nothing needs to be freed: an allocation moves a pointer
//! forward, a free does nothing, and growing the newest allocation extends
//! it in place. That is less work than a general allocator (about a fifth
//! of the fuel of a JSON-schema validation went to `dlmalloc`), and it
//! starts from the memory the module already has: a general allocator asks
//! for new pages with `memory.grow` on its first allocation, and each grown
//! page costs the host two protection changes (a TLB shootdown across cores)
//! per call. So link the plugin with room for its heap, as plugins/build.sh
//! does: `-C link-arg=--initial-memory=4194304` (4 MiB, stack and data
//! included); beyond it the heap grows page by page up to the plugin's
//! memory limit.
//!
//! A call that allocates and drops a lot holds all of it until it returns.
//! Turn the feature off (`default-features = false`) to bring your own
//! allocator.

use core::alloc::{GlobalAlloc, Layout};
use core::arch::wasm32;
use core::cell::Cell;

const PAGE: usize = 65536;

unsafe extern "C" {
    /// The end of the module's data and stack, where the heap starts (set
    /// by the linker).
    static __heap_base: u8;
}

/// The heap: `[next, end)` is free; `end` is the end of linear memory.
/// Both are zero until the first allocation.
struct Bump {
    next: Cell<usize>,
    end: Cell<usize>,
}

// SAFETY: a plugin instance has one thread (no threads in Corral's engine).
unsafe impl Sync for Bump {}

impl Bump {
    /// Makes `[next, next + size)` available, growing memory if needed.
    fn reserve(&self, start: usize, size: usize) -> bool {
        if self.end.get() == 0 {
            self.end.set(wasm32::memory_size(0) * PAGE);
        }
        let Some(want) = start.checked_add(size) else { return false };
        if want > self.end.get() {
            let pages = (want - self.end.get()).div_ceil(PAGE);
            if wasm32::memory_grow(0, pages) == usize::MAX {
                return false;
            }
            self.end.set(self.end.get() + pages * PAGE);
        }
        true
    }
}

unsafe impl GlobalAlloc for Bump {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if self.next.get() == 0 {
            self.next.set(&raw const __heap_base as usize);
        }
        let start = self.next.get().next_multiple_of(layout.align());
        if !self.reserve(start, layout.size()) {
            return core::ptr::null_mut();
        }
        self.next.set(start + layout.size());
        start as *mut u8
    }

    unsafe fn dealloc(&self, _ptr: *mut u8, _layout: Layout) {}

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let at = ptr as usize;
        // The newest allocation grows or shrinks in place.
        if at + layout.size() == self.next.get() && self.reserve(at, new_size) {
            self.next.set(at + new_size);
            return ptr;
        }
        // SAFETY: the caller guarantees a valid layout of `new_size`.
        let new = unsafe { self.alloc(Layout::from_size_align_unchecked(new_size, layout.align())) };
        if !new.is_null() {
            // SAFETY: both blocks are live and do not overlap.
            unsafe { core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size)) };
        }
        new
    }
}

#[global_allocator]
static HEAP: Bump = Bump { next: Cell::new(0), end: Cell::new(0) };
