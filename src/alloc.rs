//! The global allocator the binary uses: mimalloc, called the way C's `malloc` is.
//!
//! The `mimalloc` crate's allocator takes mimalloc's aligned path for every allocation, which
//! checks each block's address and sends blocks over 1 KiB to a slower, generic path; with
//! a replay allocating a few strings per line, that was 1.1% of its instructions. Here an
//! allocation goes to plain `mi_malloc` whenever its block is aligned enough anyway, as
//! Rust's own `System` allocator does with `malloc`.

use std::alloc::{GlobalAlloc, Layout};

/// Turns transparent huge pages off for this process (Linux), unless `MIMALLOC_ALLOW_THP` is
/// set, in which case mimalloc has already done as it says.
///
/// mimalloc asks for huge pages where the kernel allows them, and with THP on ("always", as
/// on this project's bench VM) each page that mimalloc touches afresh after giving memory back
/// costs the kernel a 2 MiB clear: 5–7% of a replay's samples. Off, a 1M replay ran 3–5%
/// faster on one thread and on two, with 10–15% less memory (README "Performance").
pub fn without_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        // SAFETY: PR_SET_THP_DISABLE takes no pointer; it only sets a flag on this process.
        // Failing (an old kernel) leaves THP as it was, which is only slower.
        let _ = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    }
}

/// Blocks of up to this many bytes are kept in a thread's cache.
const CACHED_BYTES: usize = 256;
/// Size classes of the cache, 8 bytes apart: class `i` holds blocks of at least `8 (i + 1)`
/// usable bytes.
const CLASSES: usize = CACHED_BYTES / 8;
/// Blocks a class holds at most.
const DEPTH: usize = 32;

/// The class of a block `layout` describes, if the cache takes it: any block mimalloc gave for
/// `size` bytes has at least `size` usable bytes rounded up to 8 (its size classes are whole
/// words), so it serves any request of its class; requests wanting more than 8-byte alignment
/// are left to mimalloc.
fn class_of(layout: Layout) -> Option<usize> {
    (layout.size() != 0 && layout.size() <= CACHED_BYTES && layout.align() <= 8)
        .then(|| (layout.size() - 1) / 8)
}

/// A thread's last freed small blocks, handed out again last in, first out.
///
/// mimalloc hands a page's free blocks out in the order they were freed a batch earlier, and
/// frees a block another thread allocated through that thread's atomic list. In a replay with
/// two threads, where one thread parses what the other frees and the other judges what the
/// first writes out, keeping the blocks a thread frees for its own next allocations took 3–5% off
/// the wall time (README "Performance"). On one thread it changes nothing: the cache miss on
/// the free list's link (9–10% of the samples) moves to the first write into the block, which
/// held something nobody has read since it was written.
///
/// Off until a thread turns it on with [`cache_this_thread`]: a thread that ends with blocks
/// in it would leak them, and only threads that say when they stop may hold any.
struct Cache {
    on: std::cell::Cell<bool>,
    lens: [std::cell::Cell<u8>; CLASSES],
    blocks: [[std::cell::Cell<*mut u8>; DEPTH]; CLASSES],
}

impl Cache {
    fn pop(&self, class: usize) -> Option<*mut u8> {
        let len = self.lens[class].get() as usize;
        if len == 0 {
            return None;
        }
        self.lens[class].set(len as u8 - 1);
        Some(self.blocks[class][len - 1].get())
    }

    /// Keeps `block` if this thread caches and the class has room.
    fn push(&self, class: usize, block: *mut u8) -> bool {
        let len = self.lens[class].get() as usize;
        if len == DEPTH || !self.on.get() {
            return false;
        }
        self.blocks[class][len].set(block);
        self.lens[class].set(len as u8 + 1);
        true
    }

    /// Gives every cached block back to mimalloc and stops caching.
    fn drain(&self) {
        self.on.set(false);
        for (len, blocks) in self.lens.iter().zip(&self.blocks) {
            for block in &blocks[..len.replace(0) as usize] {
                // SAFETY: a cached block came from mimalloc and is owned by the cache alone.
                unsafe { libmimalloc_sys::mi_free(block.get().cast()) }
            }
        }
    }
}

thread_local! {
    // No destructor and a constant start, so reaching it never allocates.
    static CACHE: Cache = const {
        Cache {
            on: std::cell::Cell::new(false),
            lens: [const { std::cell::Cell::new(0) }; CLASSES],
            blocks: [const { [const { std::cell::Cell::new(std::ptr::null_mut()) }; DEPTH] }; CLASSES],
        }
    };
}

/// Turns the calling thread's block cache on until the guard drops, which gives its blocks
/// back (unless an outer guard had it on already). Only for threads that free as much as
/// they allocate (a replay's); with another global allocator than [`Mimalloc`] it does
/// nothing.
pub fn cache_this_thread() -> CacheGuard {
    let was_on = CACHE.with(|c| c.on.replace(true));
    CacheGuard {
        was_on,
        thread: std::marker::PhantomData,
    }
}

/// See [`cache_this_thread`]. Not `Send`: it belongs to the thread whose cache it drains.
pub struct CacheGuard {
    was_on: bool,
    thread: std::marker::PhantomData<*const ()>,
}

impl Drop for CacheGuard {
    fn drop(&mut self) {
        if !self.was_on {
            CACHE.with(Cache::drain);
        }
    }
}

/// Asks the cache for the block mimalloc will hand out after `block`, for the next request of
/// its size.
///
/// mimalloc pops a block off its page's free list, reading the link to the next free block
/// out of the block itself; a block freed long ago (a settled operation's text) has left the
/// cache, so each allocation waited on memory for the one before's link (~5% of a replay's
/// samples). The block just handed out still holds that link in its first word, and mimalloc
/// has just read it, so reading it again is cheap: this prefetches what it points to.
/// mimalloc's release build keeps free-list links plain (`MI_ENCODE_FREELIST` is for its
/// secure and debug builds); were one encoded or `block` fresh, the prefetch would be of a
/// meaningless address, which is harmless: a prefetch never faults.
#[inline(always)]
fn fetch_next_free(block: *mut u8) {
    #[cfg(target_arch = "x86_64")]
    if !block.is_null() {
        // SAFETY: `block` is a live allocation of at least 8 bytes (mimalloc's smallest
        // block), read here as raw memory by the asm, not as a Rust value; `prefetcht0`
        // reads nothing the program sees and cannot fault, whatever the address.
        unsafe {
            std::arch::asm!(
                "mov {next}, qword ptr [{block}]",
                "prefetcht0 byte ptr [{next}]",
                block = in(reg) block,
                next = out(reg) _,
                options(nostack, readonly, preserves_flags),
            );
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = block;
}

/// mimalloc as a [`GlobalAlloc`].
pub struct Mimalloc;

/// What a `mi_malloc` block of a size that is a multiple of it is aligned to
/// (`MI_MAX_ALIGN_SIZE`): every block size is a multiple of 8 bytes, pages start their first
/// block 16-aligned, and a size that is a multiple of 16 gets a block size that is one too.
const MI_MAX_ALIGN: usize = 16;

/// Whether plain `mi_malloc(size)` gives a block aligned to `align`: a Rust size is always a
/// multiple of its alignment, so this is `align` ≤ 16 (and, for a size of 0, ≤ the size).
fn plain(size: usize, align: usize) -> bool {
    align <= MI_MAX_ALIGN && align <= size
}

// SAFETY: each method hands mimalloc's functions a size (and an alignment wherever plain
// `mi_malloc` might not meet it), as its API documents; every block is freed with `mi_free`,
// which takes blocks from all of them.
unsafe impl GlobalAlloc for Mimalloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        use libmimalloc_sys::{mi_malloc, mi_malloc_aligned};
        if let Some(block) = class_of(layout).and_then(|class| CACHE.with(|c| c.pop(class))) {
            return block;
        }
        // SAFETY: see the impl.
        unsafe {
            if plain(layout.size(), layout.align()) {
                let block: *mut u8 = mi_malloc(layout.size()).cast();
                fetch_next_free(block);
                block
            } else {
                mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        use libmimalloc_sys::{mi_zalloc, mi_zalloc_aligned};
        // SAFETY: see the impl.
        unsafe {
            if plain(layout.size(), layout.align()) {
                mi_zalloc(layout.size()).cast()
            } else {
                mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if let Some(class) = class_of(layout) {
            if CACHE.with(|c| c.push(class, ptr)) {
                return;
            }
        }
        // SAFETY: `ptr` came from this allocator, so from mimalloc.
        unsafe { libmimalloc_sys::mi_free(ptr.cast()) }
    }

    /// A block that must move goes through [`Mimalloc::alloc`] and [`Mimalloc::dealloc`]
    /// rather than `mi_realloc`, so the move takes its block from the thread's cache or asks
    /// for the next free one ([`fetch_next_free`]: `mi_realloc` copies over the link that
    /// reads), and the old block goes back to the cache. A pending join bucket grows this way
    /// when its gateway write comes (`PackedBucket::push_via`).
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        use libmimalloc_sys::mi_realloc_aligned;
        // SAFETY: `ptr` came from this allocator with `layout`, so it is a live mimalloc
        // block; the new block keeps `layout`'s alignment and gets the bytes both share.
        unsafe {
            if !plain(new_size, layout.align()) {
                return mi_realloc_aligned(ptr.cast(), new_size, layout.align()).cast();
            }
            // Where `mi_realloc` keeps the block: it fits, and no more than half is left idle.
            let usable = mi_usable_size(ptr.cast());
            if new_size <= usable && new_size >= usable / 2 {
                return ptr;
            }
            let moved = self.alloc(Layout::from_size_align_unchecked(new_size, layout.align()));
            if !moved.is_null() {
                std::ptr::copy_nonoverlapping(ptr, moved, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            moved
        }
    }
}

unsafe extern "C" {
    /// mimalloc's own count of a block's bytes (the `extended` API, not bound by the crate).
    fn mi_usable_size(block: *const std::ffi::c_void) -> usize;
}

#[cfg(test)]
mod tests {
    use super::{mi_usable_size, Mimalloc};
    use std::alloc::{GlobalAlloc, Layout};

    /// Every size up to 64 KiB that is a multiple of each alignment up to 4 KiB comes back
    /// aligned, writable, and grown or shrunk by `realloc` with its bytes and alignment kept;
    /// blocks are held alive in between, so they are not the same block handed out again.
    /// The same with the thread's cache on.
    #[test]
    fn every_block_is_aligned_as_its_layout_asks() {
        every_block_aligned();
        let _cache = super::cache_this_thread();
        every_block_aligned();
        every_block_aligned();
    }

    fn every_block_aligned() {
        let mut held = Vec::new();
        for align in [1usize, 2, 4, 8, 16, 32, 64, 4096] {
            let mut size = align;
            while size <= 64 * 1024 {
                let layout = Layout::from_size_align(size, align).unwrap();
                for zeroed in [false, true] {
                    // SAFETY: a non-zero size; the block is freed below with its layout.
                    let ptr = unsafe {
                        if zeroed {
                            Mimalloc.alloc_zeroed(layout)
                        } else {
                            Mimalloc.alloc(layout)
                        }
                    };
                    assert!(!ptr.is_null(), "{size} bytes, align {align}");
                    assert_eq!(ptr as usize % align, 0, "{size} bytes, align {align}");
                    // SAFETY: `ptr` holds `size` bytes.
                    let bytes = unsafe { std::slice::from_raw_parts_mut(ptr, size) };
                    if zeroed {
                        assert!(bytes.iter().all(|b| *b == 0), "{size} bytes zeroed");
                    }
                    bytes.fill(0xA5);
                    held.push((ptr, layout));
                }
                size += if size < 512 {
                    align
                } else {
                    size / 3 / align * align + align
                };
            }
        }
        for (i, (ptr, layout)) in held.into_iter().enumerate() {
            let new_size = if i % 2 == 0 {
                layout.size() * 3
            } else {
                (layout.size() / 2 / layout.align()).max(1) * layout.align()
            };
            // SAFETY: `ptr` is live with `layout`; the new size is a non-zero multiple of
            // the alignment.
            let grown = unsafe { Mimalloc.realloc(ptr, layout, new_size) };
            assert_eq!(grown as usize % layout.align(), 0, "realloc to {new_size}");
            let kept = layout.size().min(new_size);
            // SAFETY: the block holds at least `kept` bytes, copied from the old one.
            let bytes = unsafe { std::slice::from_raw_parts(grown, kept) };
            assert!(bytes.iter().all(|b| *b == 0xA5), "realloc kept the bytes");
            let new_layout = Layout::from_size_align(new_size, layout.align()).unwrap();
            // SAFETY: `grown` is live with `new_layout`.
            unsafe { Mimalloc.dealloc(grown, new_layout) };
        }
    }

    fn cached() -> usize {
        super::CACHE.with(|c| c.lens.iter().map(|len| len.get() as usize).sum())
    }

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    /// With the cache on, a freed block of up to 256 bytes comes back for the next request of
    /// its class, last freed first out, and has room for any size of that class; the class
    /// next door, over-aligned requests and bigger blocks are not served from it; a class
    /// holds at most `DEPTH`; the guard's drop hands everything back and turns it off.
    #[test]
    fn freed_small_blocks_come_back_last_in_first_out_while_the_thread_caches() {
        // Off: nothing is kept.
        // SAFETY (this test): every block is freed once, with the layout it was allocated
        // with or one of its class, and not used after.
        unsafe {
            let block = Mimalloc.alloc(layout(40, 8));
            Mimalloc.dealloc(block, layout(40, 8));
        }
        assert_eq!(cached(), 0);

        let mut cache = super::cache_this_thread();
        for size in 1..=super::CACHED_BYTES {
            let largest = size.next_multiple_of(8);
            // SAFETY: as above.
            unsafe {
                let block = Mimalloc.alloc(layout(size, 1));
                Mimalloc.dealloc(block, layout(size, 1));
                assert_eq!(cached(), 1, "{size} bytes cached");
                let again = Mimalloc.alloc(layout(largest, 8));
                assert_eq!(again, block, "{size} bytes: the same block for {largest}");
                assert!(mi_usable_size(again.cast()) >= largest, "{size} bytes");
                again.write_bytes(0x5A, largest);
                assert_eq!(cached(), 0);
                Mimalloc.dealloc(again, layout(largest, 8));
                // The next class up gets another block.
                if largest < super::CACHED_BYTES {
                    let other = Mimalloc.alloc(layout(largest + 1, 1));
                    assert_ne!(other, again, "{size} bytes");
                    Mimalloc.dealloc(other, layout(largest + 1, 1));
                }
            }
            // Start the next size empty.
            drop(cache);
            cache = super::cache_this_thread();
        }

        // SAFETY: as above.
        unsafe {
            // Last in, first out.
            let blocks: Vec<_> = (0..3).map(|_| Mimalloc.alloc(layout(24, 8))).collect();
            for &block in &blocks {
                Mimalloc.dealloc(block, layout(24, 8));
            }
            for &block in blocks.iter().rev() {
                assert_eq!(Mimalloc.alloc(layout(24, 8)), block);
            }
            for &block in &blocks {
                Mimalloc.dealloc(block, layout(24, 8));
            }
            assert_eq!(cached(), 3);
            // Not kept: 16-byte alignment, more than 256 bytes.
            let aligned = Mimalloc.alloc(layout(32, 16));
            Mimalloc.dealloc(aligned, layout(32, 16));
            let big = Mimalloc.alloc(layout(257, 8));
            Mimalloc.dealloc(big, layout(257, 8));
            assert_eq!(cached(), 3);
            // At most DEPTH a class.
            let many: Vec<_> = (0..super::DEPTH + 5)
                .map(|_| Mimalloc.alloc(layout(64, 8)))
                .collect();
            for &block in &many {
                Mimalloc.dealloc(block, layout(64, 8));
            }
            assert_eq!(cached(), 3 + super::DEPTH);
        }
        // An inner guard leaves the outer one's cache as it was.
        drop(super::cache_this_thread());
        assert_eq!(cached(), 3 + super::DEPTH);
        drop(cache);
        assert_eq!(cached(), 0);
        assert!(!super::CACHE.with(|c| c.on.get()));
    }
}
