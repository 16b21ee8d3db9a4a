//! `gauntlet demo`: the querier, its UI and in-process stores with generated data, in one
//! process with no external services.

pub mod data;
