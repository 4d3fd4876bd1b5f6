//! The Redis checkpoint store: a checkpoint as bounded chunks under a
//! manifest switched atomically, so no single value comes near Redis's
//! `proto-max-bulk-len` (512 MB by default; a 100,000-account checkpoint is
//! ~870 MiB) and a reader never sees a half-written state.
//!
//! Keys, all under `cspulse:{group_id}:checkpoint`:
//! - `…:generation`: a counter; each write takes the next generation.
//! - `…:{gen}:{i}`: chunk `i` of generation `gen` (`checkpoint.redis_chunk_bytes`).
//! - `…:pending`: a hash of the generations being written (to their chunk
//!   count), so the chunks of a write that never finished (a crash, a kill)
//!   are found and deleted by the next successful one.
//! - `…:manifest`: a hash `{generation, chunks, length, checksum}` (XXH3-64
//!   of the whole checkpoint): the current checkpoint.
//!
//! A write takes a generation, records it as pending, sets its chunks
//! (pipelined, a few at a time, over [`super::resp`]), then runs [`SWITCH`], a Lua script (atomic
//! in Redis) that checks every chunk is there, points the manifest at the new
//! generation, and deletes the chunks of the previous one and of every older
//! pending write (none of which can become current any more). A load reads
//! the manifest, then its chunks, and checks the length and checksum: a
//! missing or corrupt chunk is an error, never a partial state.
//!
//! Upgrade: a checkpoint written by earlier versions as one value under
//! `cspulse:{group_id}:checkpoint` itself is read when there is no manifest,
//! and deleted by the first chunked write.

use std::collections::HashMap;
use std::time::Duration;

use super::StoreError;
use super::resp::{Wire, WireError};

/// Default size of one chunk (`checkpoint.redis_chunk_bytes`).
pub const DEFAULT_CHUNK_BYTES: usize = 8 << 20;
/// Chunks sent or read per round trip: bounds the memory of a pipeline
/// (each chunk is copied into its command) while keeping the link busy.
const PIPELINE_CHUNKS: usize = 4;
const TIMEOUT: Duration = Duration::from_secs(2);
/// Per command; a pipeline of a few chunks to a loaded Redis takes well under it.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Loads retried when a concurrent write replaced the generation being read.
const LOAD_ATTEMPTS: usize = 3;

/// Switches the manifest to a fully written generation and deletes what can
/// never be read again. KEYS: manifest, pending, legacy single key. ARGV:
/// generation, chunks, length, checksum, chunk key prefix (`…:checkpoint:`).
const SWITCH: &str = r"
local gen = tonumber(ARGV[1])
local current = redis.call('HGET', KEYS[1], 'generation')
if current and tonumber(current) >= gen then
  return redis.error_reply('superseded: the checkpoint of generation ' .. current .. ' is newer than ' .. ARGV[1])
end
for i = 0, tonumber(ARGV[2]) - 1 do
  if redis.call('EXISTS', ARGV[5] .. ARGV[1] .. ':' .. i) == 0 then
    return redis.error_reply('chunk ' .. i .. ' of generation ' .. ARGV[1] .. ' is missing')
  end
end
local old_chunks = tonumber(redis.call('HGET', KEYS[1], 'chunks') or '0')
redis.call('HSET', KEYS[1], 'generation', ARGV[1], 'chunks', ARGV[2], 'length', ARGV[3], 'checksum', ARGV[4])
redis.call('HDEL', KEYS[2], ARGV[1])
if current then
  for i = 0, old_chunks - 1 do
    redis.call('UNLINK', ARGV[5] .. current .. ':' .. i)
  end
end
local pending = redis.call('HGETALL', KEYS[2])
for j = 1, #pending, 2 do
  if tonumber(pending[j]) < gen then
    for i = 0, tonumber(pending[j + 1]) - 1 do
      redis.call('UNLINK', ARGV[5] .. pending[j] .. ':' .. i)
    end
    redis.call('HDEL', KEYS[2], pending[j])
  end
end
redis.call('UNLINK', KEYS[3])
return 1
";

/// Checkpoints in Redis as chunks under a manifest.
#[derive(Clone, Debug)]
pub struct RedisStore {
    client: redis::Client,
    /// `cspulse:{group_id}:checkpoint`: the legacy single key, and the
    /// prefix of every other key.
    key: String,
    /// As configured, for messages (masked by `describe`).
    url: String,
    chunk_bytes: usize,
}

/// The current checkpoint, as its manifest describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Manifest {
    pub generation: u64,
    pub chunks: usize,
    pub length: usize,
    pub checksum: u64,
}

/// A generation whose chunks are written but which is not (yet) current.
#[derive(Debug)]
pub struct Pending {
    generation: u64,
    chunks: usize,
    length: usize,
    checksum: u64,
}

fn checksum(blob: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(blob)
}

impl RedisStore {
    pub fn open(url: &str, group_id: &str) -> Result<RedisStore, StoreError> {
        let client = redis::Client::open(url)?;
        Ok(RedisStore {
            client,
            key: format!("cspulse:{group_id}:checkpoint"),
            url: url.to_owned(),
            chunk_bytes: DEFAULT_CHUNK_BYTES,
        })
    }

    /// Sets the largest chunk written (at least 1 byte).
    pub fn with_chunk_bytes(mut self, bytes: usize) -> RedisStore {
        self.chunk_bytes = bytes.max(1);
        self
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The key prefix (the legacy single key).
    pub fn key(&self) -> &str {
        &self.key
    }

    fn sub(&self, name: &str) -> String {
        format!("{}:{name}", self.key)
    }

    fn chunk_key(&self, generation: u64, i: usize) -> String {
        format!("{}:{generation}:{i}", self.key)
    }

    fn connect(&self) -> Result<redis::Connection, StoreError> {
        let con = self.client.get_connection_with_timeout(TIMEOUT)?;
        con.set_read_timeout(Some(IO_TIMEOUT))?;
        con.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(con)
    }

    fn wire(&self) -> Result<Wire, StoreError> {
        Wire::connect(self.client.get_connection_info(), TIMEOUT, IO_TIMEOUT).map_err(StoreError::from)
    }

    /// Replaces the checkpoint: chunks first, then the manifest switch.
    pub fn save(&self, blob: &[u8]) -> Result<(), StoreError> {
        let pending = self.write_chunks(blob)?;
        self.switch(&pending)
    }

    /// The first half of a write: a new generation's chunks, not yet current
    /// (public for the tests of a write interrupted there).
    pub fn write_chunks(&self, blob: &[u8]) -> Result<Pending, StoreError> {
        let mut con = self.connect()?;
        let generation: u64 = redis::cmd("INCR").arg(self.sub("generation")).query(&mut con)?;
        let chunks = blob.len().div_ceil(self.chunk_bytes);
        redis::cmd("HSET").arg(self.sub("pending")).arg(generation).arg(chunks).query::<()>(&mut con)?;
        let mut wire = self.wire()?;
        let parts: Vec<&[u8]> = blob.chunks(self.chunk_bytes).collect();
        for (group, batch) in parts.chunks(PIPELINE_CHUNKS).enumerate() {
            for (j, part) in batch.iter().enumerate() {
                let key = self.chunk_key(generation, group * PIPELINE_CHUNKS + j);
                wire.send(&[b"SET", key.as_bytes(), part]).map_err(WireError::from)?;
            }
            wire.flush().map_err(WireError::from)?;
            for _ in batch {
                wire.ok()?;
            }
        }
        Ok(Pending { generation, chunks, length: blob.len(), checksum: checksum(blob) })
    }

    /// The second half: makes `p` current (refused if a newer generation is).
    pub fn switch(&self, p: &Pending) -> Result<(), StoreError> {
        let mut con = self.connect()?;
        redis::cmd("EVAL")
            .arg(SWITCH)
            .arg(3)
            .arg(self.sub("manifest"))
            .arg(self.sub("pending"))
            .arg(&self.key)
            .arg(p.generation)
            .arg(p.chunks)
            .arg(p.length)
            .arg(p.checksum.to_string())
            .arg(format!("{}:", self.key))
            .query::<()>(&mut con)?;
        Ok(())
    }

    /// A connection to the store's Redis (for tools and tests).
    pub fn connection(&self) -> Result<redis::Connection, StoreError> {
        self.connect()
    }

    /// The current manifest, if a chunked checkpoint was ever written.
    pub fn manifest(&self, con: &mut redis::Connection) -> Result<Option<Manifest>, StoreError> {
        let fields: HashMap<String, String> = redis::cmd("HGETALL").arg(self.sub("manifest")).query(con)?;
        if fields.is_empty() {
            return Ok(None);
        }
        let field = |name: &str| -> Result<u64, StoreError> {
            fields
                .get(name)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| StoreError::Corrupt(format!("manifest {} has no valid `{name}`", self.sub("manifest"))))
        };
        Ok(Some(Manifest {
            generation: field("generation")?,
            chunks: field("chunks")? as usize,
            length: field("length")? as usize,
            checksum: field("checksum")?,
        }))
    }

    /// The latest checkpoint, if any.
    pub fn load(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let mut con = self.connect()?;
        let mut attempt = 0;
        loop {
            let Some(m) = self.manifest(&mut con)? else {
                // Written by a version before chunks, or nothing at all.
                return Ok(redis::cmd("GET").arg(&self.key).query::<Option<Vec<u8>>>(&mut con)?);
            };
            match self.read_chunks(&m)? {
                Ok(blob) => return Ok(Some(blob)),
                Err(missing) => {
                    // A write that switched meanwhile deletes the chunks of
                    // the generation being read: read the new one. If the
                    // manifest did not move, the checkpoint is damaged.
                    attempt += 1;
                    let moved = self.manifest(&mut con)?.is_some_and(|now| now.generation != m.generation);
                    if !moved || attempt >= LOAD_ATTEMPTS {
                        return Err(StoreError::Corrupt(missing));
                    }
                }
            }
        }
    }

    /// The chunks of `m`, checked; `Err(why)` if one is missing.
    fn read_chunks(&self, m: &Manifest) -> Result<Result<Vec<u8>, String>, StoreError> {
        let mut wire = self.wire()?;
        let mut blob = Vec::with_capacity(m.length);
        let ids: Vec<usize> = (0..m.chunks).collect();
        for batch in ids.chunks(PIPELINE_CHUNKS) {
            for &i in batch {
                wire.send(&[b"GET", self.chunk_key(m.generation, i).as_bytes()]).map_err(WireError::from)?;
            }
            wire.flush().map_err(WireError::from)?;
            for &i in batch {
                match wire.bulk_into(&mut blob, m.length) {
                    Ok(Some(_)) => {}
                    Ok(None) => {
                        return Ok(Err(format!("chunk {} of checkpoint generation {} is missing", i, m.generation)));
                    }
                    Err(WireError::Reply(why)) => {
                        return Err(StoreError::Corrupt(format!("chunk {i} of generation {}: {why}", m.generation)));
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        if blob.len() != m.length {
            return Err(StoreError::Corrupt(format!(
                "checkpoint generation {} has {} bytes, its manifest says {}",
                m.generation,
                blob.len(),
                m.length
            )));
        }
        if checksum(&blob) != m.checksum {
            return Err(StoreError::Corrupt(format!("checkpoint generation {} fails its checksum", m.generation)));
        }
        Ok(Ok(blob))
    }
}
