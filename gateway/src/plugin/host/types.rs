//! `gauntlet:plugin/types` has no functions; its `Host` trait is empty.

use crate::plugin::bindings::host::gauntlet::plugin::types;
use crate::plugin::state::HostState;

impl types::Host for HostState {}
