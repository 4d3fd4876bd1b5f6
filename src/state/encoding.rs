//! The checkpoint encoding of the whole engine state (SPEC §10).
//!
//! Layout: `CSPULSE\0` magic, state schema version (u32 LE), body length
//! (u64 LE), SipHash-1-3 128-bit checksum of the body, then the body in
//! postcard (compact, varint-encoded serde). A checkpoint of another schema
//! version is refused with an explicit error (there is one version so far;
//! a future one adds a migration here), and a truncated or corrupt one is
//! never half-loaded: the checksum covers every byte.
//!
//! Configuration is not part of the state: the fold parameters and rules
//! come from the running configuration. Alert lifecycle state is stored by
//! rule name; if health weights, tier thresholds, SLAs or core features
//! changed since the checkpoint, every account's contribution is recomputed
//! on restore.

use std::hash::Hasher;

use serde::{Deserialize, Serialize};
use siphasher::sip128::{Hasher128, SipHasher13};

use super::{Engine, StateConfig};
use crate::alert::{Alerting, StoredAlerting};

/// The state schema version this binary writes and reads.
pub const STATE_VERSION: u32 = 1;
const MAGIC: &[u8; 8] = b"CSPULSE\0";
const HEADER: usize = 8 + 4 + 8 + 16;

/// Body size of the last checkpoint encoded (sizes the next buffer).
static LAST_SIZE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RestoreError {
    #[error("not a cspulse checkpoint (bad magic)")]
    BadMagic,
    #[error(
        "checkpoint has state schema version {found}; this binary reads version {supported} \
         (start without the checkpoint to rebuild the state from Kafka)"
    )]
    Version { found: u32, supported: u32 },
    #[error("checkpoint is truncated: {0}")]
    Truncated(String),
    #[error("checkpoint checksum mismatch: the checkpoint is corrupt")]
    Checksum,
    #[error("checkpoint cannot be decoded: {0}")]
    Decode(String),
}

fn checksum(body: &[u8]) -> u128 {
    let mut h = SipHasher13::new_with_keys(0x6373_7075_6c73_6563, 0x6b70_6f69_6e74_2121);
    h.write(body);
    h.finish128().as_u128()
}

/// What the fold's stored contributions depend on besides the events.
fn fingerprint(cfg: &StateConfig) -> String {
    format!("{:?}", (cfg.weights, cfg.green, cfg.yellow, cfg.sla, &cfg.core_features))
}

#[derive(Serialize)]
struct Out<'a> {
    fingerprint: String,
    engine: &'a Engine,
    alerting: StoredAlerting,
}

#[derive(Deserialize)]
struct In {
    fingerprint: String,
    engine: Engine,
    alerting: StoredAlerting,
}

impl Engine {
    /// The whole state, input positions included, as one checkpoint blob.
    pub fn encode(&self) -> Vec<u8> {
        let out = Out { fingerprint: fingerprint(&self.cfg), engine: self, alerting: self.alerting.to_stored() };
        // One buffer, sized from the previous checkpoint (no regrowth, no
        // second copy): header placeholder, body, then the header filled in.
        let hint = LAST_SIZE.load(std::sync::atomic::Ordering::Relaxed);
        let mut blob = Vec::with_capacity(HEADER + hint + hint / 16);
        blob.resize(HEADER, 0);
        let mut blob = postcard::to_extend(&out, blob).expect("the state always serializes");
        let len = blob.len() - HEADER;
        let sum = checksum(&blob[HEADER..]);
        blob[..8].copy_from_slice(MAGIC);
        blob[8..12].copy_from_slice(&STATE_VERSION.to_le_bytes());
        blob[12..20].copy_from_slice(&(len as u64).to_le_bytes());
        blob[20..36].copy_from_slice(&sum.to_le_bytes());
        LAST_SIZE.store(len, std::sync::atomic::Ordering::Relaxed);
        blob
    }

    /// Restores a checkpoint under the running configuration.
    pub fn decode(cfg: StateConfig, blob: &[u8]) -> Result<Engine, RestoreError> {
        if blob.len() < 8 || &blob[..8] != MAGIC {
            return Err(RestoreError::BadMagic);
        }
        if blob.len() < HEADER {
            return Err(RestoreError::Truncated(format!("{} bytes, the header alone is {HEADER}", blob.len())));
        }
        let version = u32::from_le_bytes(blob[8..12].try_into().expect("4 bytes"));
        if version != STATE_VERSION {
            return Err(RestoreError::Version { found: version, supported: STATE_VERSION });
        }
        let len = u64::from_le_bytes(blob[12..20].try_into().expect("8 bytes")) as usize;
        let sum = u128::from_le_bytes(blob[20..36].try_into().expect("16 bytes"));
        let body = &blob[HEADER..];
        if body.len() != len {
            return Err(RestoreError::Truncated(format!("body is {} bytes, the header says {len}", body.len())));
        }
        if checksum(body) != sum {
            return Err(RestoreError::Checksum);
        }
        let stored: In = postcard::from_bytes(body).map_err(|e| RestoreError::Decode(e.to_string()))?;
        let mut engine = stored.engine;
        let changed = stored.fingerprint != fingerprint(&cfg);
        engine.renewal_rules = cfg.rules.uses_account_metric("revenue.days_to_renewal");
        engine.alerting = Alerting::from_stored(cfg.rules.clone(), stored.alerting);
        engine.features.set_core(&cfg);
        engine.cfg = cfg;
        if changed && engine.watermark.is_some() {
            // Health weights, tiers, SLAs or core features moved: re-derive
            // what every account contributes under the new parameters.
            for idx in 0..engine.slots.len() as u32 {
                engine.refresh(idx);
            }
            engine.evaluate_pending(None);
        }
        Ok(engine)
    }
}
