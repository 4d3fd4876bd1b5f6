//! Ingest: consume the input topics, decode and validate, dead-letter what is
//! rejected, and hand the rest to the fold.

pub mod decode;
