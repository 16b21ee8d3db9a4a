//! How the C library's allocator gives freed memory back. glibc's malloc raises its mmap
//! threshold each time a large mapped buffer is freed, so later large buffers (a batch of
//! chunks read from the bucket) come from heaps it seldom shrinks, and freed small blocks stay
//! resident until something trims the heap: a store gateway that answered one broad query would
//! keep that memory for good. [`tune`] pins the threshold at glibc's default (large buffers
//! are always mapped, and unmapped when freed); [`release_free_memory`] hands the free pages of
//! every heap back after a large answer. With another C library both do nothing.

/// Buffers at least this large are mapped on their own (glibc's initial threshold).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 128 * 1024;

/// Sets the allocator up to return large freed buffers at once; called when `gauntlet store`
/// starts, before any thread exists.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only changes the allocator's parameters; glibc serialises it with
    // allocations.
    #[allow(unsafe_code)]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}

/// Returns the free pages of the allocator's heaps to the operating system (`malloc_trim`).
/// Takes a moment on large heaps: call it after large requests, not after each small one.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` only releases memory the allocator holds free; it locks each
    // heap while it works.
    #[allow(unsafe_code)]
    unsafe {
        libc::malloc_trim(0);
    }
}
