//! Chunked Redis checkpoints (SPEC §10, issue #17 point 3): a state larger
//! than Redis's `proto-max-bulk-len` is checkpointed and restored; a write
//! interrupted before its manifest switch leaves the previous checkpoint;
//! a missing or damaged chunk is an error, never a partial state.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cspulse::checkpoint::{RedisStore, Store, fork};
use cspulse::event::Topic;
use cspulse::state::{Engine, Input, StateConfig};
use cspulse::time::parse_rfc3339;

/// A private Redis on a random port, killed with the test.
struct Redis {
    child: Child,
    url: String,
}

impl Redis {
    /// `--proto-max-bulk-len 1mb`: Redis's minimum; it refuses any value over 1 MB.
    fn start() -> Redis {
        Redis::start_with(&[], "")
    }

    /// With more `redis-server` arguments, and `userinfo` (`:password@`) in the URL.
    fn start_with(args: &[&str], userinfo: &str) -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--proto-max-bulk-len", "1mb"])
            .args(args)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/test.sh installs it)");
        let url = format!("redis://{userinfo}127.0.0.1:{port}/0");
        let deadline = Instant::now() + Duration::from_secs(10);
        while redis::Client::open(url.as_str())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
            .is_err()
        {
            assert!(Instant::now() < deadline, "redis-server did not start on port {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Redis { child, url }
    }

    fn con(&self) -> redis::Connection {
        redis::Client::open(self.url.as_str()).unwrap().get_connection().unwrap()
    }

    /// A store with chunks well below the 1 MB limit.
    fn store(&self, group: &str) -> RedisStore {
        RedisStore::open(&self.url, group).unwrap().with_chunk_bytes(256 * 1024)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An engine whose checkpoint is a few MB: `n` usage events of distinct users.
fn engine_with(n: usize) -> Engine {
    let wall = parse_rfc3339("2026-03-03T00:00:00Z").unwrap();
    let mut engine = Engine::new(StateConfig::default());
    for i in 0..n {
        let payload = format!(
            r#"{{"event_id":"usage-event-{i:08}","ts":"2026-03-02T{:02}:{:02}:{:02}Z","account_id":"account-{:04}","user_id":"user-of-the-account-{i:08}","feature":"feature-{}"}}"#,
            (i / 3600) % 24,
            (i / 60) % 60,
            i % 60,
            i % 500,
            i % 40
        );
        engine.fold(&Input { topic: Topic::Usage, partition: 0, offset: i as i64, payload: payload.as_bytes(), wall });
    }
    engine
}

fn blob(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

fn keys(con: &mut redis::Connection, pattern: &str) -> Vec<String> {
    let mut k: Vec<String> = redis::cmd("KEYS").arg(pattern).query(con).unwrap();
    k.sort();
    k
}

#[test]
fn a_state_larger_than_proto_max_bulk_len_is_checkpointed_by_the_writer_and_restored() {
    let redis = Redis::start();
    let engine = engine_with(40_000);
    let encoded = engine.encode();
    assert!(encoded.len() > 2 << 20, "the state must exceed the 1 MB limit well: {} bytes", encoded.len());
    // What one SET of the whole checkpoint meets at this Redis:
    let refused = redis::cmd("SET").arg("whole").arg(&encoded).query::<()>(&mut redis.con());
    assert!(refused.is_err(), "this Redis refuses values over 1 MB");

    let store = Store::Redis(redis.store("big"));
    // As production writes it: by the forked writer.
    let written = fork::spawn(&engine, &store).unwrap().wait().expect("the chunked checkpoint is written");
    assert_eq!(written.bytes, encoded.len());
    let loaded = store.load().unwrap().expect("a checkpoint");
    assert!(loaded == encoded, "the restored checkpoint is the one written, byte for byte");
    let restored = Engine::decode(StateConfig::default(), &loaded).unwrap();
    assert_eq!(restored.stats().accepted, engine.stats().accepted);
    let chunks = keys(&mut redis.con(), "cspulse:big:checkpoint:1:*");
    assert_eq!(chunks.len(), encoded.len().div_ceil(256 * 1024), "{chunks:?}");
}

#[test]
fn a_write_interrupted_before_the_switch_leaves_the_previous_checkpoint_and_is_cleaned_up() {
    let redis = Redis::start();
    let store = redis.store("crash");
    let first = blob(700_000, 1);
    store.save(&first).unwrap();
    // A writer that died after its chunks, before the manifest switch.
    let abandoned = store.write_chunks(&blob(900_000, 2)).unwrap();
    assert!(!keys(&mut redis.con(), "cspulse:crash:checkpoint:2:*").is_empty(), "its chunks are there");
    assert!(store.load().unwrap() == Some(first.clone()), "the previous checkpoint is still the one read");

    // The next write makes its own generation current and deletes the rest.
    let third = blob(600_000, 3);
    store.save(&third).unwrap();
    assert!(store.load().unwrap() == Some(third.clone()));
    let mut con = redis.con();
    assert_eq!(keys(&mut con, "cspulse:crash:checkpoint:1:*"), Vec::<String>::new(), "previous generation deleted");
    assert_eq!(keys(&mut con, "cspulse:crash:checkpoint:2:*"), Vec::<String>::new(), "abandoned chunks deleted");
    assert_eq!(keys(&mut con, "cspulse:crash:checkpoint:3:*").len(), 3);
    let pending: Vec<String> = redis::cmd("HKEYS").arg("cspulse:crash:checkpoint:pending").query(&mut con).unwrap();
    assert!(pending.is_empty(), "{pending:?}");

    // An older generation can never replace a newer one.
    let err = store.switch(&abandoned).unwrap_err().to_string();
    assert!(err.contains("superseded") || err.contains("missing"), "{err}");
    assert!(store.load().unwrap() == Some(third));
}

#[test]
fn a_missing_or_damaged_chunk_is_an_error_never_a_partial_state() {
    let redis = Redis::start();
    let store = redis.store("damaged");
    store.save(&blob(800_000, 4)).unwrap();
    let mut con = redis.con();
    redis::cmd("SETRANGE").arg("cspulse:damaged:checkpoint:1:1").arg(10).arg("X").query::<()>(&mut con).unwrap();
    let err = store.load().unwrap_err();
    assert!(err.is_corrupt() && err.to_string().contains("checksum"), "{err}");

    store.save(&blob(800_000, 5)).unwrap();
    redis::cmd("DEL").arg("cspulse:damaged:checkpoint:2:2").query::<()>(&mut con).unwrap();
    let err = store.load().unwrap_err();
    assert!(err.is_corrupt() && err.to_string().contains("chunk 2 of checkpoint generation 2 is missing"), "{err}");
}

#[test]
fn a_single_key_checkpoint_of_an_earlier_version_is_read_then_replaced() {
    let redis = Redis::start();
    let store = redis.store("legacy");
    let old = blob(500_000, 6);
    redis::cmd("SET").arg("cspulse:legacy:checkpoint").arg(&old).query::<()>(&mut redis.con()).unwrap();
    assert!(store.load().unwrap() == Some(old));
    let new = blob(500_000, 7);
    store.save(&new).unwrap();
    assert!(store.load().unwrap() == Some(new));
    let exists: bool = redis::cmd("EXISTS").arg("cspulse:legacy:checkpoint").query(&mut redis.con()).unwrap();
    assert!(!exists, "the single key is deleted by the first chunked write");
}

#[test]
fn the_url_password_and_database_apply_to_the_chunks_too() {
    let redis = Redis::start_with(&["--requirepass", "chunk-secret"], ":chunk-secret@");
    let url = redis.url.replace("/0", "/3");
    let store = RedisStore::open(&url, "auth").unwrap().with_chunk_bytes(256 * 1024);
    let data = blob(900_000, 8);
    store.save(&data).unwrap();
    assert!(store.load().unwrap() == Some(data));
    let mut con = redis::Client::open(url.as_str()).unwrap().get_connection().unwrap();
    assert_eq!(keys(&mut con, "cspulse:auth:checkpoint:1:*").len(), 4, "the chunks are in database 3");
    assert!(keys(&mut redis.con(), "*").is_empty(), "nothing in database 0");
}
