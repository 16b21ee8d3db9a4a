//! How the C library's allocator gives freed memory back. glibc's malloc raises its mmap
//! threshold each time a large mapped buffer is freed, so later large buffers (a batch of
//! chunks read from the bucket) come from heaps it seldom shrinks, and freed small blocks stay
//! resident until something trims the heap: a store gateway that answered one broad query would
//! keep that memory for good. [`tune`] pins the threshold at glibc's default (large buffers
//! are always mapped, and unmapped when freed); [`release_free_memory`] hands the free pages of
//! every heap back after a large answer. The querier is the other way round: it frees a whole
//! answer's buffers after each query and needs as many again for the next, so
//! [`tune_for_queries`] keeps them. With another C library all of these do nothing.

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

/// Buffers up to this size come from the heap in the querier (glibc's largest adaptive
/// threshold on 64-bit systems).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const QUERY_MMAP_THRESHOLD: libc::c_int = 32 * 1024 * 1024;

/// Free memory the querier's heaps keep at their top instead of giving it back.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const QUERY_TRIM_THRESHOLD: libc::c_int = 64 * 1024 * 1024;

/// Sets the allocator up for the querier, called when `gauntlet query` starts, before any
/// thread exists. A query's buffers (gRPC receive buffers that its chunks point into, decoded
/// series, results) are freed together when it ends. With glibc's defaults the heap is then
/// trimmed, and the next query touches every page afresh: some 40,000 page faults and a tenth
/// to a quarter of the time of a 2,000-series query over the gRPC StoreAPI. Keeping up to
/// 64 MiB free per heap avoids that; `release_free_memory` still returns everything on demand.
pub fn tune_for_queries() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only changes the allocator's parameters; glibc serialises it with
    // allocations.
    #[allow(unsafe_code)]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, QUERY_MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, QUERY_TRIM_THRESHOLD);
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
