//! Store implementations served by this process: the in-memory store (demo, tests) and, with
//! long-term storage, the store gateway over blocks in a bucket.

pub mod memory;
pub mod serve;
