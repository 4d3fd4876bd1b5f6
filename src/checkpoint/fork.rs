//! Checkpoints encoded and written by a forked child process, the way Redis
//! writes its snapshots (`BGSAVE`).
//!
//! `fork(2)` taken while the engine lock is held gives the child a
//! copy-on-write image of the whole process at that instant: a consistent
//! cut of state and input positions. The parent lets go of the lock as soon
//! as the fork returns (a page-table copy: tens of milliseconds for a
//! 1.5 GiB state), and the child encodes and saves the state at its own pace
//! on the other core while ingestion goes on. The kernel copies a page only
//! when the parent writes to it.
//!
//! A forked child of a multi-threaded process has only the forking thread,
//! so it must not touch anything another thread may have held at the fork:
//! it does not log, record metrics, or use the runtime, Kafka or any lock but
//! the engine's (which its own thread holds). It does allocate: glibc's
//! `fork` takes and releases the allocator's locks around the fork, so
//! `malloc` is usable in the child. It reports back over a socket pair and
//! leaves with `_exit`, running no destructors.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use super::{Store, StoreError};
use crate::state::Engine;

/// How long a writer may take before it is killed and the checkpoint counted
/// as failed (a healthy one at 100,000 accounts takes seconds).
const WRITER_TIMEOUT: Duration = Duration::from_secs(300);

/// A checkpoint being encoded and saved by a child process.
#[derive(Debug)]
pub struct Writer {
    pid: libc::pid_t,
    report: UnixStream,
}

/// What the child did, once it is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub bytes: usize,
    /// Time the child spent encoding (the rest was writing).
    pub encode: Duration,
}

/// Forks a child that encodes `engine` and saves it to `store`. Call it with
/// the engine lock held; it returns as soon as the fork has (the only pause
/// of ingestion), and the lock can be released then.
pub fn spawn(engine: &Engine, store: &Store) -> std::io::Result<Writer> {
    let (report, child_end) = UnixStream::pair()?;
    let parent = std::process::id();
    // SAFETY: the child runs only `child_main`, which keeps to what is safe
    // after a fork in a multi-threaded process (see the module docs) and
    // never returns.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(std::io::Error::last_os_error()),
        0 => child_main(engine, store, child_end, parent),
        pid => Ok(Writer { pid, report }),
    }
}

fn child_main(engine: &Engine, store: &Store, mut report: UnixStream, parent: u32) -> ! {
    // SAFETY: plain system calls on this process's own signals and fds.
    unsafe {
        // Die with the parent: a writer left behind by a `kill -9` would
        // race the restarted process's own checkpoints.
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::getppid() as u32 != parent {
            libc::_exit(1);
        }
        // The parent's signal handlers write to descriptors closed below,
        // whose numbers the checkpoint file or Redis socket may reuse: a
        // signal simply ends the child (the checkpoint is then not renamed
        // into place or not sent, and the parent reports the failure).
        for sig in 1..32 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        // Hold no client or broker socket open: the parent's closes must
        // reach the peers now, not when the child exits.
        let keep = report.as_raw_fd() as libc::c_uint;
        if keep > 3 {
            libc::syscall(libc::SYS_close_range, 3 as libc::c_uint, keep - 1, 0 as libc::c_uint);
        }
        libc::syscall(libc::SYS_close_range, keep + 1, libc::c_uint::MAX, 0 as libc::c_uint);
    }
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let started = Instant::now();
        let blob = engine.encode();
        let encode = started.elapsed();
        store.save(&blob).map(|()| (blob.len(), encode))
    }));
    let line = match outcome {
        Ok(Ok((bytes, encode))) => format!("ok {bytes} {}", encode.as_micros()),
        Ok(Err(e)) => format!("error {e}"),
        Err(_) => "error the checkpoint writer panicked".to_owned(),
    };
    let _ = report.write_all(line.as_bytes());
    // SAFETY: ends the child without running the parent's destructors.
    unsafe { libc::_exit(0) }
}

impl Writer {
    /// Waits for the child's report and reaps it.
    pub fn wait(mut self) -> Result<Written, StoreError> {
        let _ = self.report.set_read_timeout(Some(WRITER_TIMEOUT));
        let mut line = String::new();
        let read = self.report.read_to_string(&mut line);
        if read.is_err() {
            // SAFETY: signals our own child, which has not been reaped yet.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
        }
        let status = self.reap();
        let failed = |why: String| Err(StoreError::Writer(why));
        if let Err(e) = read {
            return failed(format!("no report within {WRITER_TIMEOUT:?} ({e}); the writer was killed"));
        }
        if let Some(rest) = line.strip_prefix("ok ") {
            if let Some((Ok(bytes), Ok(micros))) = rest.split_once(' ').map(|(b, m)| (b.parse(), m.parse())) {
                return Ok(Written { bytes, encode: Duration::from_micros(micros) });
            }
        }
        if let Some(error) = line.strip_prefix("error ") {
            return failed(error.to_owned());
        }
        failed(format!("the writer ended without a report ({status})"))
    }

    fn reap(&self) -> String {
        let mut status = 0;
        // SAFETY: waits for our own child; `status` outlives the call.
        let r = unsafe { libc::waitpid(self.pid, &mut status, 0) };
        if r != self.pid {
            return format!("waitpid: {}", std::io::Error::last_os_error());
        }
        if libc::WIFSIGNALED(status) {
            format!("killed by signal {}", libc::WTERMSIG(status))
        } else {
            format!("exit status {}", libc::WEXITSTATUS(status))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Topic;
    use crate::state::{Input, StateConfig};
    use crate::time::parse_rfc3339;

    fn usage(engine: &mut Engine, n: usize) {
        let wall = parse_rfc3339("2026-03-03T00:00:00Z").unwrap();
        for i in 0..n {
            let payload = format!(
                r#"{{"event_id":"u{n}-{i}","ts":"2026-03-02T10:{:02}:{:02}Z","account_id":"acc-{}","user_id":"user-{i}","feature":"api"}}"#,
                n % 60,
                i % 60,
                i % 7
            );
            let offset = engine.stats().accepted.iter().sum::<u64>() as i64;
            engine.fold(&Input { topic: Topic::Usage, partition: 0, offset, payload: payload.as_bytes(), wall });
        }
    }

    #[test]
    fn the_child_saves_the_state_as_it_was_at_the_fork() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&format!("file://{}", dir.path().display()), "g").unwrap();
        let mut engine = Engine::new(StateConfig::default());
        usage(&mut engine, 40);
        let at_fork = engine.encode();
        let writer = spawn(&engine, &store).unwrap();
        // The fold goes on while the child writes; none of it may show.
        usage(&mut engine, 41);
        assert_ne!(engine.encode(), at_fork);
        let written = writer.wait().unwrap();
        let saved = store.load().unwrap().expect("a checkpoint");
        assert_eq!(written.bytes, saved.len());
        assert!(saved == at_fork, "the checkpoint is the state at the fork, byte for byte");
        let restored = Engine::decode(StateConfig::default(), &saved).unwrap();
        assert_eq!(restored.stats().accepted, [0, 40, 0, 0]);
    }

    #[test]
    fn a_failing_save_in_the_child_is_reported_with_its_cause() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("not-a-dir");
        let store = Store::open(&format!("file://{}", blocker.display()), "g").unwrap();
        // Then a file where the store's directory was: nothing can be created in it.
        std::fs::remove_dir_all(&blocker).unwrap();
        std::fs::write(&blocker, b"x").unwrap();
        let engine = Engine::new(StateConfig::default());
        let err = spawn(&engine, &store).unwrap().wait().unwrap_err().to_string();
        assert!(err.starts_with("checkpoint writer: checkpoint file"), "{err}");
        assert!(err.contains("not-a-dir"), "{err}");
    }
}
