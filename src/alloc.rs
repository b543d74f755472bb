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
        // SAFETY: see the impl.
        unsafe {
            if plain(layout.size(), layout.align()) {
                mi_malloc(layout.size()).cast()
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

    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator, so from mimalloc.
        unsafe { libmimalloc_sys::mi_free(ptr.cast()) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        use libmimalloc_sys::{mi_realloc, mi_realloc_aligned};
        // SAFETY: `ptr` came from this allocator; the new block keeps `layout`'s alignment.
        unsafe {
            if plain(new_size, layout.align()) {
                mi_realloc(ptr.cast(), new_size).cast()
            } else {
                mi_realloc_aligned(ptr.cast(), new_size, layout.align()).cast()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Mimalloc;
    use std::alloc::{GlobalAlloc, Layout};

    /// Every size up to 64 KiB that is a multiple of each alignment up to 4 KiB comes back
    /// aligned, writable, and grown or shrunk by `realloc` with its bytes and alignment kept;
    /// blocks are held alive in between, so they are not the same block handed out again.
    #[test]
    fn every_block_is_aligned_as_its_layout_asks() {
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
}
