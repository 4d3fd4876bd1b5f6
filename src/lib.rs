//! cspulse: a streaming, real-time customer-success metrics engine.
//!
//! Data path (SPEC.md): `ingest` consumes and validates Kafka messages →
//! `state` folds them into exact aggregates → `http` serves them. `event`
//! (the input vocabulary) and `metric` (the catalogue of figures) are the
//! words every layer shares. `config`, `auth`, `audit` and `telemetry` sit
//! beside;
//! `demo` runs everything on one machine.

pub mod alert;
pub mod app;
pub mod audit;
pub mod auth;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod delivery;
pub mod demo;
pub mod event;
pub mod exact;
pub mod export;
pub mod fast;
pub mod history;
pub mod http;
pub mod ingest;
pub mod lead;
pub mod metric;
pub mod push;
pub mod report;
pub mod state;
pub mod telemetry;
pub mod time;
