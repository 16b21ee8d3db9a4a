//! Store implementations served by this process: the in-memory store (demo, tests), the store
//! gateway over blocks in a bucket, and `gauntlet store` serving either (or a store plugin).

pub mod bucket;
pub mod memory;
pub mod serve;
