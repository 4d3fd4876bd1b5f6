//! cspulse: a streaming, real-time customer-success metrics engine.
//!
//! Data path (SPEC.md): `ingest` consumes and validates Kafka messages →
//! `state` folds them into exact aggregates → `http` serves them. `config`,
//! `auth` and `telemetry` sit beside; `demo` runs everything on one machine.

pub mod auth;
pub mod config;
pub mod event;
pub mod ingest;
pub mod state;
pub mod time;
