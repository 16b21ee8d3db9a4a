//! The querier's side of the StoreAPI: fan-out over stores, merging, replica deduplication and
//! partial responses.

pub mod dedup;
pub mod endpoints;
pub mod store;
