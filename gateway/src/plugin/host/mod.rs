//! The host side of each WIT host interface, one file an interface, all implemented on
//! [`HostState`](super::state::HostState). Each import first counts itself against the
//! per-call budget, then checks the manifest's capability (deny by default) and only then
//! touches the outside world, always with a bound (size, time).

mod alerts;
mod bucket;
mod clock;
mod http;
mod log;
mod metrics;
mod query;
mod types;
