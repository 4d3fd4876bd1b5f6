//! History (SPEC §15): the store that keeps every figure over time, and the
//! writer that fills it from the fold's history log (`state::log`) without
//! ever making the fold wait.

pub mod ledger;
pub mod reads;
pub mod rebuild;
pub mod store;
pub mod targets;
pub mod views;
pub mod writer;
