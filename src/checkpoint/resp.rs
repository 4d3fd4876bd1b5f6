//! A minimal RESP2 client for the bulk of a Redis checkpoint: `SET` of a
//! chunk written straight from the checkpoint buffer, `GET` read straight
//! into the restored one. The `redis` crate copies each value into its
//! command and parses replies through its generic value type: ~4 s each
//! way for 870 MiB on the development machine, most of a restart's budget.
//! Everything else (counters, manifest, the switch script) goes through the
//! `redis` crate.

use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// The connection's socket (TCP, or a Unix socket for `redis+unix://`).
enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn try_clone(&self) -> std::io::Result<Stream> {
        Ok(match self {
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
        })
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => s.flush(),
            Stream::Unix(s) => s.flush(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Reply(String),
    #[error("this store address is not supported for checkpoints (TCP or Unix socket only)")]
    Address,
}

/// One connection, authenticated and on the configured database.
pub struct Wire {
    reader: BufReader<Stream>,
    writer: BufWriter<Stream>,
}

impl Wire {
    pub fn connect(info: &redis::ConnectionInfo, connect: Duration, io: Duration) -> Result<Wire, WireError> {
        let stream = match info.addr() {
            redis::ConnectionAddr::Tcp(host, port) => {
                let addr = std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), *port))?
                    .next()
                    .ok_or_else(|| std::io::Error::other(format!("{host} has no address")))?;
                let s = TcpStream::connect_timeout(&addr, connect)?;
                s.set_nodelay(true)?;
                s.set_read_timeout(Some(io))?;
                s.set_write_timeout(Some(io))?;
                Stream::Tcp(s)
            }
            redis::ConnectionAddr::Unix(path) => {
                let s = UnixStream::connect(path)?;
                s.set_read_timeout(Some(io))?;
                s.set_write_timeout(Some(io))?;
                Stream::Unix(s)
            }
            _ => return Err(WireError::Address),
        };
        let mut wire = Wire {
            reader: BufReader::with_capacity(64 * 1024, stream.try_clone()?),
            writer: BufWriter::with_capacity(64 * 1024, stream),
        };
        let settings = info.redis_settings();
        if let Some(password) = settings.password() {
            match settings.username() {
                Some(user) => wire.send(&[b"AUTH", user.as_bytes(), password.as_bytes()])?,
                None => wire.send(&[b"AUTH", password.as_bytes()])?,
            }
            wire.flush()?;
            wire.ok()?;
        }
        if settings.db() != 0 {
            wire.send(&[b"SELECT", settings.db().to_string().as_bytes()])?;
            wire.flush()?;
            wire.ok()?;
        }
        Ok(wire)
    }

    /// Queues one command (large arguments go to the socket uncopied).
    pub fn send(&mut self, args: &[&[u8]]) -> std::io::Result<()> {
        write!(self.writer, "*{}\r\n", args.len())?;
        for arg in args {
            write!(self.writer, "${}\r\n", arg.len())?;
            self.writer.write_all(arg)?;
            self.writer.write_all(b"\r\n")?;
        }
        Ok(())
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        self.writer.flush()
    }

    fn line(&mut self) -> Result<Vec<u8>, WireError> {
        let mut line = Vec::new();
        self.reader.read_until(b'\n', &mut line)?;
        if !line.ends_with(b"\r\n") {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the connection closed").into());
        }
        line.truncate(line.len() - 2);
        if line.first() == Some(&b'-') {
            return Err(WireError::Reply(String::from_utf8_lossy(&line[1..]).into_owned()));
        }
        Ok(line)
    }

    /// Reads a status reply (`+OK`).
    pub fn ok(&mut self) -> Result<(), WireError> {
        let line = self.line()?;
        match line.first() {
            Some(b'+') => Ok(()),
            _ => Err(WireError::Reply(format!("unexpected reply {:?}", String::from_utf8_lossy(&line)))),
        }
    }

    /// Reads a bulk reply, appending its bytes to `out` unless it would
    /// exceed `limit` bytes in all; `None` if the key does not exist.
    pub fn bulk_into(&mut self, out: &mut Vec<u8>, limit: usize) -> Result<Option<usize>, WireError> {
        let line = self.line()?;
        let len = match (line.first(), std::str::from_utf8(&line[1..]).ok().and_then(|n| n.parse::<i64>().ok())) {
            (Some(b'$'), Some(-1)) => return Ok(None),
            (Some(b'$'), Some(n)) if n >= 0 => n as usize,
            _ => return Err(WireError::Reply(format!("unexpected reply {:?}", String::from_utf8_lossy(&line)))),
        };
        if out.len() + len > limit {
            return Err(WireError::Reply(format!("a value of {len} bytes exceeds the {limit} expected")));
        }
        let read = (&mut self.reader).take(len as u64).read_to_end(out)?;
        let mut crlf = [0u8; 2];
        self.reader.read_exact(&mut crlf)?;
        if read != len || &crlf != b"\r\n" {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "a value was cut short").into());
        }
        Ok(Some(len))
    }
}
