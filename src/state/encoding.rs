//! The checkpoint encoding of the whole engine state (SPEC §10).
//!
//! Layout: `CSPULSE\0` magic, state schema version (u32 LE), body length
//! (u64 LE), SipHash-1-3 128-bit checksum of the section table, then the
//! body: the section table (count u32 LE, then per section its length u64 LE
//! and the SipHash-1-3 128-bit checksum of its bytes) and the sections, each
//! in postcard (compact, varint-encoded serde): the engine's scalars, scopes
//! and alerting; the account slots in [`SLOT_CHUNKS`] chunks; the
//! de-duplication index; the feature table. Sections are verified and
//! decoded on threads of their own, so a restore takes about the time of its
//! largest section rather than of the whole state.
//!
//! A checkpoint of another schema version is refused with an explicit error
//! (version 1, one postcard body, was written before sections; version 2
//! before alerts carried a `version`, positions their topic names, and the
//! cardinality limits and the feature table's expiry order came; version 3
//! before the history log; rebuilding from Kafka replaces it), and a truncated or corrupt one is never
//! half-loaded: the checksums cover every byte.
//!
//! Positions are stored with the names of the topics they were consumed
//! from (version 3): on restore, the positions of a role whose configured
//! topic has another name now are dropped, so the renamed topic is consumed
//! from its beginning instead of at the old topic's offsets (SPEC §18).
//!
//! Configuration is not part of the state: the fold parameters and rules
//! come from the running configuration. Alert lifecycle state is stored by
//! rule name; if health weights, tier thresholds, SLAs or core features
//! changed since the checkpoint, every account's contribution is recomputed
//! on restore.

use std::hash::Hasher;

use serde::{Deserialize, Serialize};
use siphasher::sip128::{Hasher128, SipHasher13};

use super::account::FeatureTable;
use super::{Dedup, Engine, Slot, StateConfig};
use crate::alert::{Alerting, StoredAlerting};

/// The state schema version this binary writes and reads.
pub const STATE_VERSION: u32 = 5;
/// Account slots are split into this many sections (decoded in parallel).
const SLOT_CHUNKS: usize = 2;
/// Sections: core, slot chunks, de-duplication index, feature table.
const SECTIONS: usize = 1 + SLOT_CHUNKS + 2;
const TABLE: usize = 4 + SECTIONS * (8 + 16);
const MAGIC: &[u8; 8] = b"CSPULSE\0";
const HEADER: usize = 8 + 4 + 8 + 16;

/// Body size of the last checkpoint encoded (sizes the next buffer).
static LAST_SIZE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Records the size of a checkpoint encoded elsewhere (by a forked writer,
/// whose own record dies with it), so the next buffer is sized from it.
pub fn note_size(blob_bytes: usize) {
    LAST_SIZE.store(blob_bytes.saturating_sub(HEADER), std::sync::atomic::Ordering::Relaxed);
}

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
/// (Weights and thresholds as decimals: a checkpoint written when tiers were
/// decided in floating point has another one, so its tiers are re-derived.)
fn fingerprint(cfg: &StateConfig) -> String {
    format!("{:?}", (&cfg.weights.decimals, cfg.green, cfg.yellow, cfg.sla, &cfg.core_features))
}

/// Everything but the sections of their own.
#[derive(Serialize)]
struct CoreOut<'a> {
    fingerprint: String,
    engine: &'a Engine,
    alerting: StoredAlerting,
    /// The input topics the positions in `engine` were consumed from, by role.
    topics: &'a [String; 4],
}

#[derive(Deserialize)]
struct CoreIn {
    fingerprint: String,
    engine: Engine,
    alerting: StoredAlerting,
    topics: [String; 4],
}

fn section<T: serde::de::DeserializeOwned>(
    body: &[u8],
    at: (usize, usize, u128),
    name: &str,
) -> Result<T, RestoreError> {
    let bytes = &body[at.0..at.0 + at.1];
    if checksum(bytes) != at.2 {
        return Err(RestoreError::Checksum);
    }
    postcard::from_bytes(bytes).map_err(|e| RestoreError::Decode(format!("{name}: {e}")))
}

/// Appends one section to the checkpoint buffer and records where it ends.
fn put<T: Serialize + ?Sized>(blob: Vec<u8>, value: &T, ends: &mut Vec<usize>) -> Vec<u8> {
    let blob = postcard::to_extend(value, blob).expect("the state always serializes");
    ends.push(blob.len());
    blob
}

fn joined<T>(h: std::thread::ScopedJoinHandle<'_, Result<T, RestoreError>>) -> Result<T, RestoreError> {
    h.join().unwrap_or_else(|_| Err(RestoreError::Decode("a decoding thread panicked".into())))
}

impl Engine {
    /// The whole state, input positions included, as one checkpoint blob.
    pub fn encode(&self) -> Vec<u8> {
        let core = CoreOut {
            fingerprint: fingerprint(&self.cfg),
            engine: self,
            alerting: self.alerting.to_stored(),
            topics: &self.cfg.topics,
        };
        // One buffer, sized from the previous checkpoint (no regrowth, no
        // second copy): header and table placeholders, the sections, then
        // the table and header filled in.
        let hint = LAST_SIZE.load(std::sync::atomic::Ordering::Relaxed);
        let mut blob = Vec::with_capacity(HEADER + TABLE + hint + hint / 16);
        blob.resize(HEADER + TABLE, 0);
        let mut ends = Vec::with_capacity(SECTIONS);
        blob = put(blob, &core, &mut ends);
        let chunk = self.slots.len().div_ceil(SLOT_CHUNKS).max(1);
        for i in 0..SLOT_CHUNKS {
            let part = self.slots.get(i * chunk..((i + 1) * chunk).min(self.slots.len())).unwrap_or(&[]);
            blob = put(blob, part, &mut ends);
        }
        blob = put(blob, &self.dedup, &mut ends);
        blob = put(blob, &self.features, &mut ends);
        let mut table = Vec::with_capacity(TABLE);
        table.extend_from_slice(&(SECTIONS as u32).to_le_bytes());
        let mut start = HEADER + TABLE;
        for &end in &ends {
            table.extend_from_slice(&((end - start) as u64).to_le_bytes());
            table.extend_from_slice(&checksum(&blob[start..end]).to_le_bytes());
            start = end;
        }
        let len = blob.len() - HEADER;
        let sum = checksum(&table);
        blob[HEADER..HEADER + TABLE].copy_from_slice(&table);
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
        if body.len() < TABLE || checksum(&body[..TABLE]) != sum {
            return Err(RestoreError::Checksum);
        }
        let count = u32::from_le_bytes(body[..4].try_into().expect("4 bytes")) as usize;
        if count != SECTIONS {
            return Err(RestoreError::Decode(format!("{count} sections, expected {SECTIONS}")));
        }
        let mut at = Vec::with_capacity(SECTIONS);
        let mut start = TABLE;
        for i in 0..SECTIONS {
            let entry = &body[4 + i * 24..4 + (i + 1) * 24];
            let n = u64::from_le_bytes(entry[..8].try_into().expect("8 bytes")) as usize;
            let sum = u128::from_le_bytes(entry[8..].try_into().expect("16 bytes"));
            at.push((start, n, sum));
            start = start.saturating_add(n);
        }
        if start != body.len() {
            return Err(RestoreError::Decode(format!("sections end at {start}, the body is {} bytes", body.len())));
        }
        let (core, chunks, dedup, features) = std::thread::scope(|s| {
            let at = &at;
            let core = s.spawn(move || section::<CoreIn>(body, at[0], "engine"));
            let chunks: Vec<_> =
                (1..=SLOT_CHUNKS).map(|i| s.spawn(move || section::<Vec<Slot>>(body, at[i], "accounts"))).collect();
            let dedup = s.spawn(move || section::<Dedup>(body, at[SLOT_CHUNKS + 1], "de-duplication index"));
            let features = section::<FeatureTable>(body, at[SLOT_CHUNKS + 2], "feature table");
            (joined(core), chunks.into_iter().map(joined).collect::<Vec<_>>(), joined(dedup), features)
        });
        let stored = core?;
        let mut engine = stored.engine;
        for role in crate::event::Topic::ALL {
            if stored.topics[role.index()] != cfg.topics[role.index()] {
                // Renamed: its offsets belong to another topic.
                engine.partitions.retain(|(topic, _), _| *topic != role);
            }
        }
        for chunk in chunks {
            engine.slots.extend(chunk?);
        }
        engine.dedup = dedup?;
        engine.features = features?;
        if engine.index.len() != engine.slots.len() {
            return Err(RestoreError::Decode(format!(
                "{} accounts indexed, {} stored",
                engine.index.len(),
                engine.slots.len()
            )));
        }
        let changed = stored.fingerprint != fingerprint(&cfg);
        engine.renewal_rules = cfg.rules.uses_account_metric("revenue.days_to_renewal");
        engine.alerting = Alerting::from_stored(cfg.rules.clone(), stored.alerting);
        engine.features.restored(&cfg);
        if let Some(now) = engine.watermark {
            for slot in &mut engine.slots {
                slot.account.tickets.restore_clocks(now, &cfg);
            }
        }
        engine.list_quarter_revenue();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Topic;
    use crate::state::Input;
    use crate::time::parse_rfc3339;

    #[test]
    fn a_renamed_topic_loses_its_positions_and_only_those() {
        let wall = parse_rfc3339("2026-03-03T00:00:00Z").unwrap();
        let mut engine = Engine::new(StateConfig::default());
        let account = br#"{"event_id":"a1","ts":"2026-03-02T10:00:00Z","account_id":"acme","name":"Acme","csm_id":"csm-1","segment":"smb","seats":5}"#;
        let usage =
            br#"{"event_id":"u1","ts":"2026-03-02T10:00:00Z","account_id":"acme","user_id":"u","feature":"api"}"#;
        engine.fold(&Input { topic: Topic::Accounts, partition: 0, offset: 7, payload: account, wall });
        engine.fold(&Input { topic: Topic::Usage, partition: 2, offset: 41, payload: usage, wall });
        let blob = engine.encode();

        let same = Engine::decode(StateConfig::default(), &blob).unwrap();
        assert_eq!(same.partitions(), engine.partitions());

        let mut cfg = StateConfig::default();
        cfg.topics[Topic::Usage.index()] = "cs.usage.v2".into();
        let renamed = Engine::decode(cfg, &blob).unwrap();
        let kept: Vec<_> = renamed.partitions().iter().map(|(k, p)| (*k, p.next_offset)).collect();
        assert_eq!(kept, vec![((Topic::Accounts, 0), 8)], "the usage topic starts from its beginning");
        assert_eq!(renamed.stats(), engine.stats(), "the state itself is kept");
    }
}
