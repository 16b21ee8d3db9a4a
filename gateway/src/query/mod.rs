//! The querier's side of the StoreAPI: fan-out over stores, merging, replica deduplication and
//! partial responses.

pub mod dedup;
pub mod deferred;
pub mod endpoints;
pub mod matchers;
pub mod proxy;
pub mod querier;
pub mod queryable;
pub mod store;
