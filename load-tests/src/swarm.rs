//! The WebSocket swarm: N subscribed clients in one process (meant to run in
//! its own process, pinned to its own core, apart from the server under
//! test). It is driven by the harness over stdin/stdout, one line each:
//!
//! - it prints `ready <connected> <failed>` once every client is connected
//!   and subscribed (or has failed);
//! - `start <t0_us> <period_us> <base> <count>` fixes the schedule: the j-th
//!   measured message (j = 1..=count) was intended at t0 + (j-1)·period
//!   (wall clock, µs since the epoch);
//! - `stop` ends the measurement: it prints one JSON line with the results
//!   and exits.
//!
//! A frame's j is read from the frame itself: for the cspulse server, the
//! csm channel's `kpis.tickets.open.total` (every measured event opens one
//! ticket) minus `base`; for the Node baseline, its `seq`. Lag is the receive
//! time minus the intended time of every event the frame covers (so a
//! coalesced update records the lag of each event it carries, and an event
//! never seen by the end counts with the lag it had at `stop`): latency from
//! the intended send time at a constant offered load, which is what corrects
//! for coordinated omission.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::io::AsyncBufReadExt;
use tokio::net::TcpSocket;
use tokio::sync::{Semaphore, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Wall-clock microseconds since the epoch (shared by all processes).
pub fn now_us() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
}

pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds")
}

/// p50/p90/p99/p99.9/max/mean of a µs histogram, in milliseconds.
pub fn summary(h: &Histogram<u64>) -> serde_json::Value {
    let ms = |v: u64| v as f64 / 1000.0;
    if h.is_empty() {
        return json!({"count": 0});
    }
    json!({
        "count": h.len(),
        "p50_ms": ms(h.value_at_quantile(0.50)),
        "p90_ms": ms(h.value_at_quantile(0.90)),
        "p99_ms": ms(h.value_at_quantile(0.99)),
        "p999_ms": ms(h.value_at_quantile(0.999)),
        "max_ms": ms(h.max()),
        "mean_ms": h.mean() / 1000.0,
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// cspulse: measured frames are `tickets` updates; j from `"total":`.
    Cspulse,
    /// The Node baseline: j from `"seq":`.
    Node,
}

#[derive(Clone, Debug, clap::Args)]
pub struct SwarmArgs {
    /// ws://127.0.0.1:PORT/ws (the token is appended as a query parameter).
    #[arg(long)]
    pub url: String,
    #[arg(long, default_value = "")]
    pub token: String,
    #[arg(long)]
    pub channel: String,
    #[arg(long)]
    pub clients: usize,
    #[arg(long, value_enum)]
    pub mode: Mode,
    /// Tokio worker threads.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// This many clients stop reading after subscribing (until `stop`).
    #[arg(long, default_value_t = 0)]
    pub slow: usize,
    /// Connection attempts in flight at once.
    #[arg(long, default_value_t = 128)]
    pub connect_parallel: usize,
}

#[derive(Clone, Copy, Debug)]
struct Schedule {
    t0: i64,
    period: i64,
    base: i64,
    count: i64,
}

impl Schedule {
    fn intended(&self, j: i64) -> i64 {
        self.t0 + (j - 1) * self.period
    }
}

#[derive(Default)]
struct Counters {
    ready: AtomicUsize,
    failed: AtomicUsize,
    deliveries: AtomicU64,
    frames: AtomicU64,
    measured_bytes: AtomicU64,
    missing: AtomicU64,
    readers_closed_early: AtomicUsize,
    slow_closed_1008: AtomicUsize,
    slow_closed_other: AtomicUsize,
    slow_still_open: AtomicUsize,
    slow_reasons: Mutex<Vec<String>>,
}

struct Ctx {
    args: SwarmArgs,
    addr: std::net::SocketAddr,
    counters: Counters,
    hists: Vec<Mutex<Histogram<u64>>>,
    schedule: watch::Receiver<Option<Schedule>>,
    stop: watch::Receiver<Option<i64>>,
}

/// The number after `"key":` in `text`.
pub fn number_after(text: &str, key: &str) -> Option<i64> {
    let at = text.find(key)? + key.len();
    let digits: &str = &text[at..];
    let end = digits.bytes().position(|b| !b.is_ascii_digit()).unwrap_or(digits.len());
    digits[..end].parse().ok()
}

fn measured_index(mode: Mode, text: &str, base: i64) -> Option<i64> {
    match mode {
        Mode::Cspulse => {
            if !text.contains(r#""type":"update""#) || !text.contains(r#""topic":"tickets""#) {
                return None;
            }
            Some(number_after(text, r#""total":"#)? - base)
        }
        Mode::Node => number_after(text, r#""seq":"#),
    }
}

async fn client(i: usize, ctx: Arc<Ctx>, gate: Arc<Semaphore>) {
    let slow = i < ctx.args.slow;
    let permit = gate.acquire().await;
    let connected = async {
        let socket = TcpSocket::new_v4()?;
        if slow {
            // Small kernel buffers so a client that stops reading fills the
            // server's queue soon.
            socket.set_recv_buffer_size(4096)?;
        }
        let stream = socket.connect(ctx.addr).await?;
        stream.set_nodelay(true)?;
        let url = if ctx.args.token.is_empty() {
            ctx.args.url.clone()
        } else {
            format!("{}?token={}", ctx.args.url, ctx.args.token)
        };
        // Small buffers: tungstenite zero-fills up to `read_buffer_size`
        // (128 KiB by default) on every read, which would make the client
        // spend most of its CPU in memset.
        let config = WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0);
        let (ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(config)).await?;
        let (mut sink, mut stream) = ws.split();
        let sub = json!({"op": "subscribe", "channel": ctx.args.channel}).to_string();
        sink.send(Message::Text(sub.into())).await?;
        let first = match ctx.args.mode {
            Mode::Cspulse => r#""type":"snapshot""#,
            Mode::Node => r#""type":"subscribed""#,
        };
        loop {
            match tokio::time::timeout(Duration::from_secs(60), stream.next()).await {
                Ok(Some(Ok(Message::Text(t)))) if t.as_str().contains(first) => break,
                Ok(Some(Ok(_))) => {}
                other => anyhow::bail!("no subscription: {other:?}"),
            }
        }
        anyhow::Ok((sink, stream))
    }
    .await;
    drop(permit);
    let (sink, mut stream) = match connected {
        Ok(s) => {
            ctx.counters.ready.fetch_add(1, Ordering::Relaxed);
            s
        }
        Err(e) => {
            if ctx.counters.failed.fetch_add(1, Ordering::Relaxed) < 3 {
                eprintln!("swarm: client {i} failed: {e:#}");
            }
            return;
        }
    };
    let mut stop = ctx.stop.clone();
    if slow {
        // Stop reading until the end, then read what is left: the close
        // frame tells whether the server dropped us as a slow consumer.
        let _ = stop.wait_for(Option::is_some).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            match tokio::time::timeout_at(deadline, stream.next()).await {
                Ok(Some(Ok(Message::Close(frame)))) => {
                    let (code, reason) =
                        frame.map_or((0, String::new()), |f| (u16::from(f.code), f.reason.to_string()));
                    if code == 1008 {
                        ctx.counters.slow_closed_1008.fetch_add(1, Ordering::Relaxed);
                    } else {
                        ctx.counters.slow_closed_other.fetch_add(1, Ordering::Relaxed);
                    }
                    ctx.counters.slow_reasons.lock().unwrap().push(format!("{code} {reason}"));
                    break;
                }
                Ok(Some(Ok(_))) => {}
                Ok(_) => {
                    ctx.counters.slow_closed_other.fetch_add(1, Ordering::Relaxed);
                    ctx.counters.slow_reasons.lock().unwrap().push("closed without a close frame".into());
                    break;
                }
                Err(_) => {
                    ctx.counters.slow_still_open.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
        }
        drop(sink);
        return;
    }
    let shard = &ctx.hists[i % ctx.hists.len()];
    let mut schedule: Option<Schedule> = None;
    let mut last_j = 0i64;
    let mut local = histogram();
    let mut deliveries = 0u64;
    let mut frames = 0u64;
    let mut bytes = 0u64;
    let stop_at = loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break (*stop.borrow()).unwrap_or_else(now_us),
            msg = stream.next() => {
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(_)) => continue,
                    _ => {
                        ctx.counters.readers_closed_early.fetch_add(1, Ordering::Relaxed);
                        break now_us();
                    }
                };
                let recv = now_us();
                frames += 1;
                if schedule.is_none() {
                    schedule = *ctx.schedule.borrow();
                }
                let Some(s) = schedule else { continue };
                let Some(j) = measured_index(ctx.args.mode, text.as_str(), s.base) else { continue };
                if j < 1 {
                    continue;
                }
                deliveries += 1;
                bytes += text.len() as u64;
                let j = j.min(s.count);
                while last_j < j {
                    last_j += 1;
                    let _ = local.record((recv - s.intended(last_j)).max(1) as u64);
                }
            }
        }
    };
    if let Some(s) = schedule.or(*ctx.schedule.borrow()) {
        while last_j < s.count {
            last_j += 1;
            ctx.counters.missing.fetch_add(1, Ordering::Relaxed);
            let _ = local.record((stop_at - s.intended(last_j)).max(1) as u64);
        }
    }
    ctx.counters.deliveries.fetch_add(deliveries, Ordering::Relaxed);
    ctx.counters.frames.fetch_add(frames, Ordering::Relaxed);
    ctx.counters.measured_bytes.fetch_add(bytes, Ordering::Relaxed);
    let _ = shard.lock().unwrap().add(&local);
    drop(sink);
}

pub fn run(args: SwarmArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(args.threads.max(1)).enable_all().build()?;
    rt.block_on(run_async(args))
}

async fn run_async(args: SwarmArgs) -> anyhow::Result<()> {
    let host = args.url.trim_start_matches("ws://").split('/').next().context("url")?.to_owned();
    let addr: std::net::SocketAddr = host.parse().context("ws://IP:PORT/…")?;
    let (schedule_tx, schedule) = watch::channel(None);
    let (stop_tx, stop) = watch::channel(None);
    let n = args.clients;
    let gate = Arc::new(Semaphore::new(args.connect_parallel.max(1)));
    let ctx = Arc::new(Ctx {
        addr,
        counters: Counters::default(),
        hists: (0..16).map(|_| Mutex::new(histogram())).collect(),
        schedule,
        stop,
        args,
    });
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        tasks.push(tokio::spawn(client(i, ctx.clone(), gate.clone())));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    loop {
        let (r, f) = (ctx.counters.ready.load(Ordering::Relaxed), ctx.counters.failed.load(Ordering::Relaxed));
        if r + f >= n || tokio::time::Instant::now() > deadline {
            println!("ready {r} {f}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let parts: Vec<&str> = line.split_whitespace().collect();
        match parts.as_slice() {
            ["start", t0, period, base, count] => {
                let _ = schedule_tx.send(Some(Schedule {
                    t0: t0.parse()?,
                    period: period.parse()?,
                    base: base.parse()?,
                    count: count.parse()?,
                }));
            }
            ["stop"] => break,
            _ => eprintln!("swarm: unknown command {line:?}"),
        }
    }
    let _ = stop_tx.send(Some(now_us()));
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(30), t).await;
    }
    let mut all = histogram();
    for h in &ctx.hists {
        all.add(&*h.lock().unwrap()).ok();
    }
    let c = &ctx.counters;
    let deliveries = c.deliveries.load(Ordering::Relaxed);
    let out = json!({
        "connected": c.ready.load(Ordering::Relaxed),
        "failed": c.failed.load(Ordering::Relaxed),
        "deliveries": deliveries,
        "frames": c.frames.load(Ordering::Relaxed),
        "avg_measured_bytes": c.measured_bytes.load(Ordering::Relaxed) as f64 / deliveries.max(1) as f64,
        "missing": c.missing.load(Ordering::Relaxed),
        "readers_closed_early": c.readers_closed_early.load(Ordering::Relaxed),
        "slow_closed_1008": c.slow_closed_1008.load(Ordering::Relaxed),
        "slow_closed_other": c.slow_closed_other.load(Ordering::Relaxed),
        "slow_still_open": c.slow_still_open.load(Ordering::Relaxed),
        "slow_reasons": *c.slow_reasons.lock().unwrap(),
        "lag": summary(&all),
    });
    println!("result {out}");
    Ok(())
}
