//! WebSocket scenarios against the real `cspulse serve` binary (and, for
//! `fanout`, a minimal Node.js `ws` server): fan-out, slow consumers, alert
//! latency. The harness (this process) hosts the mock broker and the
//! producer; the server and the swarm client run as separate processes
//! pinned with `taskset` to different cores.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use cspulse::auth::{Auth, Role};
use cspulse::config::Config;
use cspulse::demo::generator::{Generator, PortfolioSpec};
use cspulse::time::format_rfc3339;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio_tungstenite::tungstenite::Message;

use crate::broker::{Broker, BrokerProcess};
use crate::swarm::{histogram, now_us, summary};

pub const SECRET: &str = "load-test-secret-0123456789abcdef";
const FAN_CSM: &str = "csm-fanout";
/// Long enough that a one-ticket `update` of the csm channel is ~300 bytes.
const FAN_ACCOUNT: &str = "acct-fanout-broadcast-load-test-000000000000000000000000000000000000000001";

#[derive(Clone, Debug, clap::Args)]
pub struct Common {
    /// Kafka bootstrap servers; default: an embedded mock cluster.
    #[arg(long)]
    pub brokers: Option<String>,
    /// Core the server under test is pinned to.
    #[arg(long, default_value_t = 0)]
    pub server_core: usize,
    /// Core of the client swarm and of this harness (broker, producer).
    #[arg(long, default_value_t = 1)]
    pub client_core: usize,
    /// The cspulse binary (default: next to this one).
    #[arg(long)]
    pub server_bin: Option<PathBuf>,
    /// Tokio worker threads of the swarm client.
    #[arg(long, default_value_t = 1)]
    pub client_threads: usize,
    /// Niceness of the server and the swarm (`nice -n`; negative needs root):
    /// keeps other work on a shared machine from preempting them.
    #[arg(long, default_value_t = -10, allow_hyphen_values = true)]
    pub nice: i32,
}

/// `nice -n N taskset -c CORE …` (both exec, so the pid is the program's).
fn pinned(common: &Common, core: usize) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("nice");
    cmd.args(["-n", &common.nice.to_string(), "taskset", "-c", &core.to_string()]);
    cmd
}

pub(crate) fn token(role: Role, csm: Option<&str>) -> String {
    Auth::new(SECRET, false).mint("load", role, csm, Duration::from_secs(6 * 3600)).expect("token")
}

/// Pins this process (and what it starts) to one core.
pub fn pin_self(core: usize) {
    // SAFETY: a plain cpu_set_t on the stack, passed to the kernel by pointer.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            eprintln!("warning: cannot pin the harness to core {core}");
        }
    }
}

/// Raises the soft open-files limit to the hard one (children inherit it).
pub fn raise_nofile() -> u64 {
    // SAFETY: getrlimit/setrlimit on a local struct.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
            return r.rlim_cur as u64;
        }
    }
    0
}

/// User + system CPU seconds of a process.
pub fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { return 0.0 };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    ticks / hz
}

/// (busy, total) jiffies of one core from /proc/stat; busy includes
/// irq/softirq time (loopback TCP delivery is mostly softirq, which is not
/// charged to any process).
pub fn core_jiffies(core: usize) -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let name = format!("cpu{core} ");
    let Some(line) = stat.lines().find(|l| l.starts_with(&name)) else { return (0, 0) };
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

fn core_busy(a: (u64, u64), b: (u64, u64)) -> f64 {
    (b.0 - a.0) as f64 / (b.1 - a.1).max(1) as f64
}

pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn results_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("results")
}

/// A raw HTTP/1.1 GET on 127.0.0.1; the whole response.
pub(crate) async fn http_get(port: u16, path: &str, token: &str) -> Option<String> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    let req =
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tokio::io::AsyncReadExt::read_to_end(&mut s, &mut out))
        .await
        .ok()?
        .ok()?;
    String::from_utf8(out).ok()
}

/// The `cspulse_ws_*` counters of `/metrics`.
async fn ws_counters(port: u16) -> Value {
    let text = http_get(port, "/metrics", &token(Role::Executive, None)).await.unwrap_or_default();
    let mut out = serde_json::Map::new();
    for line in text.lines().filter(|l| l.starts_with("cspulse_ws_") && l.contains("_total")) {
        if let Some((name, value)) = line.rsplit_once(' ') {
            out.insert(name.to_owned(), json!(value.parse::<f64>().unwrap_or(f64::NAN)));
        }
    }
    Value::Object(out)
}

/// A raw HTTP/1.1 GET on 127.0.0.1; the status code.
pub(crate) async fn http_status(port: u16, path: &str, token: &str) -> Option<u16> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    let req =
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut buf = vec![0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), tokio::io::AsyncReadExt::read(&mut s, &mut buf))
        .await
        .ok()?
        .ok()?;
    std::str::from_utf8(&buf[..n]).ok()?.split_whitespace().nth(1)?.parse().ok()
}

pub(crate) async fn wait_http(port: u16, path: &str, token: &str, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if http_status(port, path, token).await == Some(200) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("GET {path} did not answer 200 within {limit:?}")
}

/// A server under test.
pub(crate) struct Server {
    child: Child,
    pid: u32,
    pub(crate) port: u16,
    stdin: Option<ChildStdin>,
    stdout: Option<Lines<BufReader<ChildStdout>>>,
}

impl Server {
    pub(crate) async fn stop(mut self) {
        drop(self.stdin.take());
        // SAFETY: signalling our own child by pid.
        unsafe {
            libc::kill(self.pid as i32, libc::SIGTERM);
        }
        if tokio::time::timeout(Duration::from_secs(15), self.child.wait()).await.is_err() {
            let _ = self.child.kill().await;
        }
    }
}

fn server_bin(common: &Common) -> anyhow::Result<PathBuf> {
    server_bin_at(common.server_bin.as_ref())
}

/// The given cspulse binary, or the one next to this program.
pub(crate) fn server_bin_at(given: Option<&PathBuf>) -> anyhow::Result<PathBuf> {
    let bin = match given {
        Some(b) => b.clone(),
        None => std::env::current_exe()?.with_file_name("cspulse"),
    };
    if !bin.exists() {
        bail!("{} not found: build it with `cargo build --release` (or pass --server-bin)", bin.display());
    }
    Ok(bin)
}

/// `taskset -c CORE cspulse serve` against `brokers`, with env configuration
/// and a small config file for the librdkafka properties (dotted keys).
async fn spawn_cspulse(common: &Common, brokers: &str, tag: &str, extra: &[(&str, &str)]) -> anyhow::Result<Server> {
    spawn_cspulse_with(common, brokers, tag, extra, "").await
}

/// As `spawn_cspulse`, with `toml` appended to its config file (tables the
/// environment cannot express, like `[[delivery.destinations]]`).
pub(crate) async fn spawn_cspulse_with(
    common: &Common,
    brokers: &str,
    tag: &str,
    extra: &[(&str, &str)],
    toml: &str,
) -> anyhow::Result<Server> {
    let bin = server_bin(common)?;
    let port = free_port()?;
    let dir = std::env::temp_dir().join(format!("cspulse-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let config = dir.join(format!("{tag}.toml"));
    std::fs::write(
        &config,
        format!(
            "[kafka.properties]\n\"fetch.wait.max.ms\" = \"1\"\n\"socket.nagle.disable\" = \"true\"\n\
             \"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"500\"\n{toml}"
        ),
    )?;
    let log = std::fs::File::create(dir.join(format!("{tag}.log")))?;
    let mut cmd = pinned(common, common.server_core);
    cmd.arg(&bin)
        .args(["serve", "--config"])
        .arg(&config)
        .env("CSPULSE__KAFKA__BROKERS", brokers)
        .env("CSPULSE__KAFKA__GROUP_ID", format!("load-{tag}-{}", now_us()))
        .env("CSPULSE__AUTH__JWT_SECRET", SECRET)
        .env("CSPULSE__HTTP__LISTEN", format!("127.0.0.1:{port}"))
        .env("CSPULSE__STATE__STORE", "memory")
        // History on, as `serve` runs by default, in a database of the run's
        // own (`CSPULSE_LOAD_HISTORY=off`: without, for comparison).
        .env("CSPULSE__HISTORY__STORE", history_store(&dir.join(format!("{tag}-{}.db", now_us()))))
        .env("CSPULSE__LOG__LEVEL", "warn")
        // The swarm's clients share one token (one subject) and may exceed
        // the default connection caps of §18.
        .env("CSPULSE__PUSH__MAX_CONNECTIONS_PER_SUBJECT", "1000000")
        .env("CSPULSE__HTTP__MAX_CONNECTIONS", "1000000")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true);
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let child = cmd.spawn().context("spawn taskset cspulse serve")?;
    let pid = child.id().context("pid")?;
    let server = Server { child, pid, port, stdin: None, stdout: None };
    wait_http(port, "/readyz", &token(Role::Executive, None), Duration::from_secs(60))
        .await
        .with_context(|| format!("cspulse did not become ready; log in {}", dir.display()))?;
    Ok(server)
}

/// The `history.store` of a spawned `cspulse serve`: SQLite at `path`, as
/// `serve` runs by default, or `off` with `CSPULSE_LOAD_HISTORY=off` (to
/// measure without it, for comparison).
pub(crate) fn history_store(path: &std::path::Path) -> String {
    match std::env::var("CSPULSE_LOAD_HISTORY").as_deref() {
        Ok("off") => "off".to_owned(),
        _ => format!("sqlite://{}", path.display()),
    }
}

async fn spawn_node(common: &Common) -> anyhow::Result<Server> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("node-ws");
    if !dir.join("node_modules/ws").exists() {
        bail!("run `npm ci` in {} first", dir.display());
    }
    let mut child = pinned(common, common.server_core)
        .args(["node", "server.js", "0"])
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("spawn node (is Node.js installed?)")?;
    let pid = child.id().context("pid")?;
    let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await??.context("node exited")?;
    let port: u16 = line.strip_prefix("listening ").context("listening line")?.trim().parse()?;
    let stdin = child.stdin.take();
    Ok(Server { child, pid, port, stdin, stdout: Some(lines) })
}

/// The swarm client process.
struct Swarm {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    pid: u32,
}

#[allow(clippy::too_many_arguments)]
async fn spawn_swarm(
    common: &Common,
    port: u16,
    token: &str,
    channel: &str,
    clients: usize,
    mode: &str,
    slow: usize,
) -> anyhow::Result<Swarm> {
    let exe = std::env::current_exe()?;
    let mut child = pinned(common, common.client_core)
        .arg(exe)
        .arg("swarm")
        .args(["--url", &format!("ws://127.0.0.1:{port}/ws"), "--token", token, "--channel", channel])
        .args(["--clients", &clients.to_string(), "--mode", mode, "--slow", &slow.to_string()])
        .args(["--threads", &common.client_threads.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    let stdin = child.stdin.take().context("stdin")?;
    let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
    let line = tokio::time::timeout(Duration::from_secs(330), lines.next_line()).await??.context("swarm exited")?;
    let mut it = line.split_whitespace().skip(1).map(|v| v.parse::<usize>());
    let (connected, failed) = (it.next().context("ready line")??, it.next().context("ready line")??);
    eprintln!("swarm: {connected} of {clients} clients subscribed, {failed} failed");
    let pid = child.id().context("swarm pid")?;
    Ok(Swarm { child, stdin, lines, pid })
}

impl Swarm {
    async fn send(&mut self, line: &str) -> anyhow::Result<()> {
        self.stdin.write_all(format!("{line}\n").as_bytes()).await?;
        self.stdin.flush().await?;
        Ok(())
    }

    async fn finish(mut self) -> anyhow::Result<Value> {
        self.send("stop").await?;
        let result = loop {
            let line = tokio::time::timeout(Duration::from_secs(90), self.lines.next_line())
                .await??
                .context("swarm exited without a result")?;
            if let Some(r) = line.strip_prefix("result ") {
                break serde_json::from_str(r)?;
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
        Ok(result)
    }
}

pub(crate) fn ticket_producer(
    brokers: &str,
    linger_ms: u32,
) -> anyhow::Result<ThreadedProducer<DefaultProducerContext>> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", linger_ms.to_string())
        .set("socket.nagle.disable", "true")
        .set("queue.buffering.max.messages", "1000000")
        .create()?)
}

pub(crate) fn send(p: &ThreadedProducer<DefaultProducerContext>, topic: &str, key: &str, body: &[u8]) {
    let mut record = BaseRecord::to(topic).key(key).payload(body);
    for _ in 0..10_000 {
        match p.send(record) {
            Ok(()) => return,
            Err((_, r)) => {
                record = r;
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    }
    eprintln!("warning: producer queue full, message dropped");
}

/// Sleeps until the wall-clock instant `at_us`.
async fn sleep_until_wall(at_us: i64) {
    let wait = at_us - now_us();
    if wait > 0 {
        tokio::time::sleep(Duration::from_micros(wait as u64)).await;
    }
}

fn ticket_event(tag: &str, j: i64, ts: i64) -> Vec<u8> {
    serde_json::to_vec(&json!({"event_id": format!("fan-{tag}-{j}"), "ts": format_rfc3339(ts),
        "account_id": FAN_ACCOUNT, "ticket_id": format!("T-{tag}-{j}"), "action": "opened", "priority": "p4"}))
    .expect("json")
}

/// A probe client in the harness: every text frame with its receive time.
async fn probe(
    port: u16,
    token: &str,
    channel: &str,
) -> anyhow::Result<tokio::sync::mpsc::UnboundedReceiver<(i64, String)>> {
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/ws?token={token}")).await?;
    let (mut sink, mut stream) = ws.split();
    sink.send(Message::Text(json!({"op": "subscribe", "channel": channel}).to_string().into())).await?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let _sink = sink;
        while let Some(Ok(m)) = stream.next().await {
            if let Message::Text(t) = m
                && tx.send((now_us(), t.to_string())).is_err()
            {
                break;
            }
        }
    });
    Ok(rx)
}

/// The tick grid's phase (µs, modulo `period`) from the receive times of
/// updates: the residue that the others follow most closely.
fn tick_phase(recv: &[i64], period: i64) -> Option<i64> {
    let r: Vec<i64> = recv.iter().map(|t| t.rem_euclid(period)).collect();
    r.iter().copied().min_by_key(|c| r.iter().map(|x| (x - c).rem_euclid(period)).max().unwrap_or(0))
}

#[derive(Clone, Debug)]
pub struct RunSpec {
    pub clients: usize,
    pub slow: usize,
    pub seconds: f64,
    /// Ticket events (so broadcasts) per second.
    pub rate: f64,
    /// `churn` events per second on the same account (each an `alert` message, not coalesced).
    pub churn_rate: f64,
    pub lead_ms: f64,
    pub bytes: usize,
}

/// One run against the cspulse binary.
async fn run_cspulse(common: &Common, broker: &Broker, spec: &RunSpec, tag: &str) -> anyhow::Result<Value> {
    let period = (1e6 / spec.rate).round() as i64;
    let server = spawn_cspulse(
        common,
        &broker.bootstrap,
        tag,
        &[
            ("CSPULSE__CADENCE__TICKETS", "0s"),
            ("CSPULSE__CADENCE__HEALTH", "24h"),
            ("CSPULSE__CADENCE__USAGE", "24h"),
            ("CSPULSE__CADENCE__REVENUE", "24h"),
        ],
    )
    .await?;
    let topics = Config::from_toml(&format!("[auth]\njwt_secret = \"{SECRET}\"\n"))?.kafka.topics;
    let producer = ticket_producer(&broker.bootstrap, 0)?;
    let now = now_us();
    // With alerts, a long (256-character) name makes each `alert` message
    // ~900 bytes, so a client that stops reading fills its buffers sooner.
    let name = if spec.churn_rate > 0.0 {
        "Slow-consumer test account ".repeat(10)[..256].to_owned()
    } else {
        "Fan-out".into()
    };
    let acct = json!({"event_id": format!("fan-acct-{tag}"), "ts": format_rfc3339(now), "account_id": FAN_ACCOUNT,
        "name": name, "csm_id": FAN_CSM, "segment": "smb", "region": "emea", "seats": 100, "renewal_date": "2027-06-30"});
    send(&producer, &topics.accounts, FAN_ACCOUNT, &serde_json::to_vec(&acct)?);
    let rev = json!({"event_id": format!("fan-rev-{tag}"), "ts": format_rfc3339(now), "account_id": FAN_ACCOUNT, "kind": "new", "arr": 120000});
    send(&producer, &topics.revenue, FAN_ACCOUNT, &serde_json::to_vec(&rev)?);
    producer.flush(Duration::from_secs(10))?;
    wait_http(
        server.port,
        &format!("/api/v1/accounts/{FAN_ACCOUNT}"),
        &token(Role::Executive, None),
        Duration::from_secs(30),
    )
    .await?;
    let csm_token = token(Role::Csm, Some(FAN_CSM));
    let channel = format!("csm:{FAN_CSM}");
    let mut probe_rx = probe(server.port, &csm_token, &channel).await?;

    // Idle server: CPU (the Kafka consumer's polling) and RSS.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let c0 = cpu_seconds(server.pid);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle_cpu = (cpu_seconds(server.pid) - c0) / 3.0;
    let rss0 = rss_kib(server.pid);
    let swarm = spawn_swarm(common, server.port, &csm_token, &channel, spec.clients, "cspulse", spec.slow).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_n = rss_kib(server.pid);
    let mut swarm = swarm;

    // Warm-up: 20 events to find the tickets ticker's phase.
    while probe_rx.try_recv().is_ok() {}
    let warm = 20i64;
    let start = now_us();
    for j in 1..=warm {
        sleep_until_wall(start + j * 100_000 + 37_000 * (j % 3)).await;
        send(&producer, &topics.tickets, FAN_ACCOUNT, &ticket_event(&format!("{tag}w"), j, now_us()));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut recv = Vec::new();
    let mut base = 0i64;
    let mut bytes = 0usize;
    while let Ok((t, text)) = probe_rx.try_recv() {
        if text.contains(r#""topic":"tickets""#) {
            recv.push(t);
            bytes = text.len();
            if let Some(v) = crate::swarm::number_after(&text, r#""total":"#) {
                base = base.max(v);
            }
        }
    }
    let tick = 100_000i64.max(period);
    let phase = tick_phase(&recv, tick).context("no tickets updates during warm-up")?;
    // First measured event `lead` before a tick, ≥ 1 s from now.
    let lead = (spec.lead_ms * 1000.0) as i64;
    let soon = now_us() + 1_000_000;
    let grid0 = soon - soon.rem_euclid(tick) + phase + tick;
    let t0 = grid0 - lead;
    let count = (spec.seconds * spec.rate).round() as i64;
    swarm.send(&format!("start {t0} {period} {base} {count}")).await?;
    let churn_period = if spec.churn_rate > 0.0 { (1e6 / spec.churn_rate) as i64 } else { i64::MAX };
    let mut next_churn = t0 + churn_period / 2;
    let mut churns = 0u64;
    sleep_until_wall(t0 - 2_000).await;
    let a = Sample::take(common, server.pid, swarm.pid);
    for j in 1..=count {
        let at = t0 + (j - 1) * period;
        while next_churn < at {
            sleep_until_wall(next_churn).await;
            let churn = json!({"event_id": format!("churn-{tag}-{churns}"), "ts": format_rfc3339(next_churn),
                "account_id": FAN_ACCOUNT, "kind": "churn"});
            send(&producer, &topics.revenue, FAN_ACCOUNT, &serde_json::to_vec(&churn)?);
            churns += 1;
            next_churn += churn_period;
        }
        sleep_until_wall(at).await;
        send(&producer, &topics.tickets, FAN_ACCOUNT, &ticket_event(tag, j, at));
    }
    sleep_until_wall(t0 + count * period).await;
    // Drain: what is still queued arrives now (and counts, as do its CPU and time).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let b = Sample::take(common, server.pid, swarm.pid);
    let rss_end = rss_kib(server.pid);
    let result = swarm.finish().await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let counters = ws_counters(server.port).await;
    server.stop().await;
    drop(probe_rx);
    let run = Run { spec, count, period, idle_cpu, rss: [rss0, rss_n, rss_end], a, b };
    let mut out = run.figures("cspulse", &result);
    out.extend(object(json!({
        "churn_alerts": churns, "update_bytes_warmup": bytes,
        "lead_ms": spec.lead_ms, "tick_phase_us": phase,
        "lag_from_event": result["lag"],
        "lag_from_tick": shift(&result["lag"], spec.lead_ms),
        "slow_closed_1008": result["slow_closed_1008"], "slow_closed_other": result["slow_closed_other"],
        "slow_still_open": result["slow_still_open"], "slow_reasons": result["slow_reasons"],
        "server_counters": counters,
    })));
    Ok(Value::Object(out))
}

/// Server and client CPU, per-core jiffies and the wall clock at one instant.
struct Sample {
    cpu: f64,
    wall: i64,
    client_cpu: f64,
    cores: ((u64, u64), (u64, u64)),
}

impl Sample {
    fn take(common: &Common, server: u32, client: u32) -> Sample {
        Sample {
            cpu: cpu_seconds(server),
            wall: now_us(),
            client_cpu: cpu_seconds(client),
            cores: (core_jiffies(common.server_core), core_jiffies(common.client_core)),
        }
    }
}

/// One measured window of a fan-out run, whichever server.
struct Run<'a> {
    spec: &'a RunSpec,
    count: i64,
    period: i64,
    idle_cpu: f64,
    /// RSS idle, with the clients connected, and at the end (KiB).
    rss: [u64; 3],
    a: Sample,
    b: Sample,
}

impl Run<'_> {
    /// The figures every server's run reports, from the swarm's `result`.
    fn figures(&self, server: &str, result: &Value) -> serde_json::Map<String, Value> {
        let (a, b, [rss0, rss_n, rss_end]) = (&self.a, &self.b, self.rss);
        let window = (b.wall - a.wall) as f64 / 1e6;
        let cpu = b.cpu - a.cpu;
        let deliveries = result["deliveries"].as_f64().unwrap_or(0.0);
        let connected = result["connected"].as_f64().unwrap_or(0.0);
        object(json!({
            "server": server,
            "clients": self.spec.clients, "connected": result["connected"], "failed": result["failed"],
            "slow": self.spec.slow, "broadcasts": self.count, "window_s": window,
            "deliveries": deliveries, "deliveries_per_s": deliveries / window,
            "offered_per_s": connected / self.period as f64 * 1e6,
            "server_cpu_s": cpu, "server_core_share": cpu / window, "idle_core_share": self.idle_cpu,
            "client_core_share": (b.client_cpu - a.client_cpu) / window,
            "server_core_busy": core_busy(a.cores.0, b.cores.0), "client_core_busy": core_busy(a.cores.1, b.cores.1),
            "deliveries_per_cpu_s": deliveries / cpu.max(1e-9),
            "deliveries_per_cpu_s_net_idle": deliveries / (cpu - self.idle_cpu * window).max(1e-9),
            "rss_idle_server_kib": rss0, "rss_with_clients_kib": rss_n, "rss_end_kib": rss_end,
            "rss_per_idle_connection_kib": (rss_n as f64 - rss0 as f64) / connected.max(1.0),
            "avg_measured_bytes": result["avg_measured_bytes"],
            "missing": result["missing"], "frames": result["frames"],
            "readers_closed_early": result["readers_closed_early"],
        }))
    }
}

fn object(v: Value) -> serde_json::Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => unreachable!("an object literal"),
    }
}

/// Lag percentiles measured from a point `ms` later.
fn shift(lag: &Value, ms: f64) -> Value {
    let mut out = lag.clone();
    if let Some(o) = out.as_object_mut() {
        for (k, v) in o.iter_mut() {
            if k.ends_with("_ms")
                && let Some(x) = v.as_f64()
            {
                *v = json!((x - ms).max(0.0));
            }
        }
    }
    out
}

/// One run against the Node.js `ws` server.
async fn run_node(common: &Common, spec: &RunSpec) -> anyhow::Result<Value> {
    let period = (1e6 / spec.rate).round() as i64;
    let mut server = spawn_node(common).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let c0 = cpu_seconds(server.pid);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle_cpu = (cpu_seconds(server.pid) - c0) / 3.0;
    let rss0 = rss_kib(server.pid);
    let mut swarm = spawn_swarm(common, server.port, "", "csm:csm-fanout", spec.clients, "node", spec.slow).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_n = rss_kib(server.pid);
    let count = (spec.seconds * spec.rate).round() as i64;
    let t0 = now_us() + 1_000_000;
    swarm.send(&format!("start {t0} {period} 0 {count}")).await?;
    let stdin = server.stdin.as_mut().context("node stdin")?;
    stdin.write_all(format!("broadcast {t0} {period} {count} {}\n", spec.bytes).as_bytes()).await?;
    stdin.flush().await?;
    sleep_until_wall(t0 - 2_000).await;
    let a = Sample::take(common, server.pid, swarm.pid);
    sleep_until_wall(t0 + count * period).await;
    let lines = server.stdout.as_mut().context("node stdout")?;
    let done = tokio::time::timeout(Duration::from_secs(120), lines.next_line()).await??.unwrap_or_default();
    // Drain: what is still queued arrives now (and counts, as do its CPU and time).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let b = Sample::take(common, server.pid, swarm.pid);
    let rss_end = rss_kib(server.pid);
    let result = swarm.finish().await?;
    server.stop().await;
    let run = Run { spec, count, period, idle_cpu, rss: [rss0, rss_n, rss_end], a, b };
    let mut out = run.figures("node-ws", &result);
    out.extend(object(json!({"node_said": done, "lag_from_event": result["lag"], "lag_from_tick": result["lag"]})));
    Ok(Value::Object(out))
}

fn get(v: &Value, path: &str) -> f64 {
    path.split('.').fold(v, |v, k| &v[k]).as_f64().unwrap_or(f64::NAN)
}

/// "median (min–max)" of a figure over runs.
fn med(runs: &[&Value], path: &str, digits: usize) -> (f64, String) {
    spread(runs.iter().map(|r| get(r, path)).collect(), digits)
}

/// The median of `values` (non-finite ones left out) and "median (min–max)".
pub(crate) fn spread(mut v: Vec<f64>, digits: usize) -> (f64, String) {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return (f64::NAN, "n/a".into());
    }
    v.sort_by(f64::total_cmp);
    let m = v[v.len() / 2];
    let s = if v.len() > 1 {
        format!("{m:.digits$} ({:.digits$}–{:.digits$})", v[0], v[v.len() - 1])
    } else {
        format!("{m:.digits$}")
    };
    (m, s)
}

/// `{median, min, max, runs}` of a figure over runs (null when absent).
pub(crate) fn stat_json(runs: &[&Value], path: &str) -> Value {
    let mut v: Vec<f64> = runs.iter().map(|r| get(r, path)).filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return Value::Null;
    }
    v.sort_by(f64::total_cmp);
    json!({"median": v[v.len() / 2], "min": v[0], "max": v[v.len() - 1], "runs": v.len()})
}

const FIGURES: [(&str, &str, usize); 16] = [
    ("connected clients", "connected", 0),
    ("offered deliveries/s", "offered_per_s", 0),
    ("delivered/s (window incl. 1 s drain)", "deliveries_per_s", 0),
    ("server CPU (share of a core)", "server_core_share", 3),
    ("  of which idle baseline", "idle_core_share", 3),
    ("swarm client CPU (share of a core)", "client_core_share", 3),
    ("server's core busy, incl. softirq", "server_core_busy", 3),
    ("client's core busy, incl. softirq", "client_core_busy", 3),
    ("deliveries per server CPU-second", "deliveries_per_cpu_s", 0),
    ("lag p50 ms (from intended send/event)", "lag_from_tick.p50_ms", 1),
    ("lag p99 ms", "lag_from_tick.p99_ms", 1),
    ("lag p99.9 ms", "lag_from_tick.p999_ms", 1),
    ("lag max ms", "lag_from_tick.max_ms", 1),
    ("lag p99 ms from the Kafka event (cspulse)", "lag_from_event.p99_ms", 1),
    ("RSS per idle connection KiB", "rss_per_idle_connection_kib", 2),
    ("message bytes", "avg_measured_bytes", 0),
];

pub(crate) fn machine() -> Value {
    crate::machine()
}

pub(crate) fn write(name: &str, v: &Value) -> anyhow::Result<()> {
    let dir = results_dir();
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(v)?)?;
    println!("results written to {}", path.display());
    Ok(())
}

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?)
}

pub(crate) fn base_config() -> anyhow::Result<Config> {
    Ok(Config::from_toml(&format!("[auth]\njwt_secret = \"{SECRET}\"\n[state]\nstore = \"memory\"\n"))?)
}

#[derive(Clone, Debug, clap::Args)]
pub struct FanoutArgs {
    #[arg(long, default_value_t = 10_000)]
    pub clients: usize,
    /// Measured broadcast window per run.
    #[arg(long, default_value_t = 20.0)]
    pub seconds: f64,
    /// Broadcasts per second.
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// Node message size (the cspulse update is ~300 bytes by construction).
    #[arg(long, default_value_t = 300)]
    pub bytes: usize,
    /// For a server with a fixed tickets ticker: produce each event this
    /// long before the tick found in the warm-up, and also report the lag
    /// from the tick (= lag from the event − lead). 0 (default): the server
    /// pushes each folded batch at once, so lag counts from the event.
    #[arg(long, default_value_t = 0.0)]
    pub lead_ms: f64,
    #[arg(long)]
    pub skip_node: bool,
    #[arg(long)]
    pub skip_cspulse: bool,
    #[command(flatten)]
    pub common: Common,
}

pub fn fanout(args: FanoutArgs, runs: usize) -> anyhow::Result<()> {
    pin_self(args.common.client_core);
    let nofile = raise_nofile();
    if nofile < args.clients as u64 + 100 {
        bail!("open files limit {nofile} < clients + 100: raise the hard limit (ulimit -Hn)");
    }
    let rt = runtime()?;
    let broker = Broker::start(args.common.brokers.as_deref(), &base_config()?, 16)?;
    let spec = RunSpec {
        clients: args.clients,
        slow: 0,
        seconds: args.seconds,
        rate: args.rate,
        churn_rate: 0.0,
        lead_ms: args.lead_ms,
        bytes: args.bytes,
    };
    let mut cs = Vec::new();
    let mut node = Vec::new();
    for run in 0..runs {
        if !args.skip_cspulse {
            let r = rt.block_on(run_cspulse(&args.common, &broker, &spec, &format!("fan{run}")));
            match r {
                Ok(v) => {
                    eprintln!("run {}/{runs} cspulse: {v}", run + 1);
                    cs.push(v);
                }
                Err(e) => eprintln!("run {}/{runs} cspulse failed: {e:#}", run + 1),
            }
        }
        if !args.skip_node {
            match rt.block_on(run_node(&args.common, &spec)) {
                Ok(v) => {
                    eprintln!("run {}/{runs} node: {v}", run + 1);
                    node.push(v);
                }
                Err(e) => eprintln!("run {}/{runs} node failed: {e:#}", run + 1),
            }
        }
        // Let TIME_WAIT sockets and the kernel settle between runs.
        std::thread::sleep(Duration::from_secs(2));
    }
    let (c, n): (Vec<&Value>, Vec<&Value>) = (cs.iter().collect(), node.iter().collect());
    println!(
        "\nfanout: {} clients subscribed to one channel, {} broadcasts/s, {} s per run, {} runs; server on core {}, swarm client on core {} ({}); median (min–max)",
        args.clients,
        args.rate,
        args.seconds,
        runs,
        args.common.server_core,
        args.common.client_core,
        broker.describe()
    );
    println!("  {:<40} {:>28} {:>28}", "figure", "cspulse serve", "node ws");
    for (label, path, d) in FIGURES {
        println!("  {:<40} {:>28} {:>28}", label, med(&c, path, d).1, med(&n, path, d).1);
    }
    let ratio = med(&c, "deliveries_per_cpu_s", 0).0 / med(&n, "deliveries_per_cpu_s", 0).0;
    println!("  cspulse / node deliveries per CPU-second = {ratio:.2}× (target >= 4×)");
    println!("  targets: p99 <= 20 ms at 100K deliveries/s; <= 6 KiB RSS per idle connection");
    println!(
        "  lag: node = from the embedded intended send time; cspulse = from the event's intended produce time{}",
        if args.lead_ms > 0.0 { format!(" minus the {} ms lead before the tick", args.lead_ms) } else { String::new() }
    );
    println!(
        "reproduce: ./target/release/cspulse-load fanout --clients {} --seconds {} --rate {} --runs {runs}",
        args.clients, args.seconds, args.rate
    );
    let mut summary = serde_json::Map::new();
    for (_, path, _) in FIGURES {
        summary.insert(format!("cspulse.{path}"), stat_json(&c, path));
        summary.insert(format!("node.{path}"), stat_json(&n, path));
    }
    write(
        &format!("fanout-{}", args.clients),
        &json!({"clients": args.clients, "rate": args.rate, "seconds": args.seconds, "runs": runs,
            "broker": broker.describe(), "machine": machine(), "delivery_per_cpu_ratio": ratio,
            "summary": summary, "cspulse": cs, "node": node}),
    )
}

#[derive(Clone, Debug, clap::Args)]
pub struct SlowArgs {
    #[arg(long, default_value_t = 1000)]
    pub clients: usize,
    /// Clients that stop reading.
    #[arg(long, default_value_t = 10)]
    pub slow: usize,
    #[arg(long, default_value_t = 45.0)]
    pub seconds: f64,
    /// Ticket updates per second (coalescible).
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// `churn` alerts per second on the same account (not coalescible).
    #[arg(long, default_value_t = 10.0)]
    pub alert_rate: f64,
    /// See `fanout --lead-ms`.
    #[arg(long, default_value_t = 0.0)]
    pub lead_ms: f64,
    #[command(flatten)]
    pub common: Common,
}

pub fn slow(args: SlowArgs, runs: usize) -> anyhow::Result<()> {
    pin_self(args.common.client_core);
    raise_nofile();
    let rt = runtime()?;
    let broker = Broker::start(args.common.brokers.as_deref(), &base_config()?, 16)?;
    let mut spec = RunSpec {
        clients: args.clients,
        slow: 0,
        seconds: args.seconds,
        rate: args.rate,
        churn_rate: args.alert_rate,
        lead_ms: args.lead_ms,
        bytes: 300,
    };
    let (mut without, mut with) = (Vec::new(), Vec::new());
    for run in 0..runs {
        for (slow, out) in [(0, &mut without), (args.slow, &mut with)] {
            spec.slow = slow;
            match rt.block_on(run_cspulse(&args.common, &broker, &spec, &format!("slow{run}-{slow}"))) {
                Ok(v) => {
                    eprintln!("run {}/{runs} with {slow} slow clients: {v}", run + 1);
                    out.push(v);
                }
                Err(e) => eprintln!("run {}/{runs} with {slow} slow clients failed: {e:#}", run + 1),
            }
            std::thread::sleep(Duration::from_secs(2));
        }
    }
    let (a, b): (Vec<&Value>, Vec<&Value>) = (without.iter().collect(), with.iter().collect());
    println!(
        "\nslow: {} clients, {} of them stop reading; {} ticket updates/s + {} alert messages/s (+ their `alerts` updates) on one csm channel, {} s per run, {runs} runs; median (min–max)",
        args.clients, args.slow, args.rate, args.alert_rate, args.seconds
    );
    println!("  {:<40} {:>28} {:>28}", "figure", "no slow clients", format!("{} slow clients", args.slow));
    for (label, path, d) in [
        ("reading clients connected", "connected", 0),
        ("ticket deliveries/s", "deliveries_per_s", 0),
        ("readers' lag p50 ms", "lag_from_tick.p50_ms", 2),
        ("readers' lag p99 ms", "lag_from_tick.p99_ms", 2),
        ("readers' lag p99.9 ms", "lag_from_tick.p999_ms", 2),
        ("readers' lag max ms", "lag_from_tick.max_ms", 2),
        ("readers closed by the server", "readers_closed_early", 0),
        ("slow clients closed 1008", "slow_closed_1008", 0),
        ("slow clients closed otherwise", "slow_closed_other", 0),
        ("slow clients still open", "slow_still_open", 0),
        ("server CPU (share of a core)", "server_core_share", 3),
    ] {
        println!("  {:<40} {:>28} {:>28}", label, med(&a, path, d).1, med(&b, path, d).1);
    }
    let p99 = |v: &[&Value]| med(v, "lag_from_tick.p99_ms", 2).0;
    let change = p99(&b) / p99(&a) - 1.0;
    println!("  readers' p99 with slow clients vs without: {:+.1}% (target within ±10%)", change * 100.0);
    println!(
        "reproduce: ./target/release/cspulse-load slow --clients {} --slow {} --seconds {} --runs {runs}",
        args.clients, args.slow, args.seconds
    );
    write(
        &format!("slow-{}", args.clients),
        &json!({"clients": args.clients, "slow": args.slow, "seconds": args.seconds, "runs": runs,
            "broker": broker.describe(), "machine": machine(), "p99_change": change,
            "without_slow": without, "with_slow": with}),
    )
}

#[derive(Clone, Debug, clap::Args)]
pub struct AlertsArgs {
    /// Events per second produced in total (constant rate).
    #[arg(long, default_value_t = 10_000.0)]
    pub rate: f64,
    /// Of which `churn` events (each fires the `churned` rule) per second.
    #[arg(long, default_value_t = 20.0)]
    pub alert_rate: f64,
    #[arg(long, default_value_t = 20.0)]
    pub seconds: f64,
    /// Background portfolio (demo generator) size.
    #[arg(long, default_value_t = 1000)]
    pub accounts: usize,
    /// The producer's `linger.ms` (batching; its wait counts in the latency,
    /// which is measured from each event's scheduled send time).
    #[arg(long, default_value_t = 0)]
    pub linger_ms: u32,
    #[command(flatten)]
    pub common: Common,
}

pub fn alerts(args: AlertsArgs, runs: usize) -> anyhow::Result<()> {
    pin_self(args.common.client_core);
    let rt = runtime()?;
    let config = base_config()?;
    // With `--brokers`, that Kafka for every run; otherwise a fresh broker
    // process per run.
    let external = match args.common.brokers.as_deref() {
        Some(list) => Some(Broker::start(Some(list), &config, 16)?),
        None => None,
    };
    let topics = config.kafka.topics.clone();
    let names = cspulse::ingest::TopicNames::new(&topics);
    // Background traffic from the demo generator. Each run's events are
    // generated once its schedule starts and produced at their own `ts`, as
    // a live source would: with event-time alignment (SPEC §2 additions) an
    // event folds after every older one, so a benchmark whose background is
    // stamped in the past measures how long the past takes to fold, not the
    // alert path.
    eprintln!("generating the portfolio ({} accounts)…", args.accounts);
    let mut generator = Generator::new(PortfolioSpec {
        accounts: args.accounts,
        csms: (args.accounts / 50).max(1),
        users_per_account: 30,
        seed: 11,
    });
    let t_open = now_us() - 60_000_000;
    let opening = generator.tick(t_open, t_open + 1, 0.0);
    let mut out = Vec::new();
    for run in 0..runs {
        // A fresh broker per run, in a process of its own on the harness's
        // core (the mock's cost grows with its log; see the README), and a
        // fresh server on it; or the given `--brokers`.
        let fresh = match &external {
            None => Some(BrokerProcess::start(args.common.client_core)?),
            Some(_) => None,
        };
        let bootstrap = match (&fresh, &external) {
            (Some(f), _) => f.bootstrap.clone(),
            (None, Some(e)) => e.bootstrap.clone(),
            (None, None) => unreachable!("one or the other"),
        };
        let r = rt.block_on(async {
            let server = spawn_cspulse(&args.common, &bootstrap, "alerts", &[]).await?;
            let producer = Arc::new(ticket_producer(&bootstrap, args.linger_ms)?);
            // The portfolio's upserts and opening revenue first.
            for m in &opening {
                send(&producer, names.name(m.topic), &m.key, &m.payload);
            }
            producer.flush(Duration::from_secs(30))?;
            let r = alerts_run(&args, &server, &producer, &names, &mut generator, run).await;
            server.stop().await;
            r
        });
        drop(fresh);
        match r {
            Ok(v) => {
                eprintln!("run {}/{runs}: {v}", run + 1);
                out.push(v);
            }
            Err(e) => eprintln!("run {}/{runs} failed: {e:#}", run + 1),
        }
    }
    let r: Vec<&Value> = out.iter().collect();
    println!(
        "\nalerts: {} events/s produced at a constant rate (linger.ms {}; {} churn/s on one CSM's accounts, the rest the demo generator's {}-account portfolio), {} s per run, {runs} runs; server on core {}, producer+client on core {} ({}); median (min–max)",
        args.rate,
        args.linger_ms,
        args.alert_rate,
        args.accounts,
        args.seconds,
        args.common.server_core,
        args.common.client_core,
        external.as_ref().map_or_else(
            || "a fresh mock cluster per run, in its own process on the harness's core".to_owned(),
            Broker::describe
        )
    );
    for (label, path, d) in [
        ("events produced/s", "produced_per_s", 0),
        ("churn alerts expected per run", "expected", 0),
        ("alert frames received", "received", 0),
        ("missing (never received)", "missing", 0),
        ("event → alert p50 ms", "lag.p50_ms", 1),
        ("event → alert p99 ms", "lag.p99_ms", 1),
        ("event → alert p99.9 ms", "lag.p999_ms", 1),
        ("event → alert max ms", "lag.max_ms", 1),
        ("server CPU (share of a core)", "server_core_share", 3),
        ("producer max behind schedule ms", "producer_max_behind_ms", 1),
    ] {
        println!("  {:<40} {:>28}", label, med(&r, path, d).1);
    }
    println!("  target: p99 <= 20 ms at 10,000 events/s");
    println!(
        "reproduce: ./target/release/cspulse-load alerts --rate {} --alert-rate {} --seconds {} --linger-ms {} --runs {runs}{}",
        args.rate,
        args.alert_rate,
        args.seconds,
        args.linger_ms,
        args.common.brokers.as_ref().map(|b| format!(" --brokers {b}")).unwrap_or_default()
    );
    write(
        "alerts",
        &json!({"rate": args.rate, "alert_rate": args.alert_rate, "seconds": args.seconds, "runs": runs,
            "accounts": args.accounts, "linger_ms": args.linger_ms,
            "broker": external.as_ref().map_or_else(|| "fresh mock cluster process per run".to_owned(), Broker::describe),
            "machine": machine(),
            "p99_ms": stat_json(&r, "lag.p99_ms"), "p50_ms": stat_json(&r, "lag.p50_ms"), "runs_detail": out}),
    )
}

#[allow(clippy::too_many_arguments)]
async fn alerts_run(
    args: &AlertsArgs,
    server: &Server,
    producer: &Arc<ThreadedProducer<DefaultProducerContext>>,
    names: &cspulse::ingest::TopicNames,
    generator: &mut Generator,
    run: usize,
) -> anyhow::Result<Value> {
    use cspulse::event::Topic;
    let csm = format!("csm-probe-{run}");
    let k = (args.seconds * args.alert_rate).round() as usize;
    let account = |i: usize| format!("r{run}-probe-{i:05}");
    let now = now_us();
    for i in 0..k {
        let id = account(i);
        let a = json!({"event_id": format!("pa-{id}"), "ts": format_rfc3339(now), "account_id": id, "name": id,
            "csm_id": csm, "segment": "enterprise", "region": "emea", "seats": 40, "renewal_date": "2027-09-30"});
        send(producer, names.name(Topic::Accounts), &id, &serde_json::to_vec(&a)?);
        let r = json!({"event_id": format!("pr-{id}"), "ts": format_rfc3339(now), "account_id": id, "kind": "new", "arr": 30000});
        send(producer, names.name(Topic::Revenue), &id, &serde_json::to_vec(&r)?);
    }
    producer.flush(Duration::from_secs(30))?;
    wait_http(
        server.port,
        &format!("/api/v1/accounts/{}", account(k - 1)),
        &token(Role::Executive, None),
        Duration::from_secs(60),
    )
    .await?;
    let mut rx = probe(server.port, &token(Role::Csm, Some(&csm)), &format!("csm:{csm}")).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, text) = tokio::time::timeout_at(deadline.into(), rx.recv()).await?.context("probe closed")?;
        if text.contains(r#""type":"snapshot""#) {
            break;
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    while rx.try_recv().is_ok() {}

    // The schedule: the background at its own ts, `rate` events/s in all
    // (bursts included); churn i at t0 + (i + ½)·period.
    let churn_period = 1e6 / args.alert_rate;
    let t0 = now_us() + 2_000_000;
    let end = t0 + (args.seconds * 1e6) as i64;
    let intended = |i: usize| t0 + (churn_period * (i as f64 + 0.5)) as i64;
    let mut msgs = Vec::new();
    let mut t = t0;
    while t < end {
        let to = (t + 1_000_000).min(end);
        msgs.extend(generator.tick(t, to, (args.rate - args.alert_rate).max(0.0)));
        t = to;
    }
    anyhow::ensure!(now_us() < t0, "generating the background took longer than the 2 s lead");
    let per_run = msgs.len() + k;
    let producer_task = {
        let schedule: Vec<(i64, Option<usize>)> = {
            let mut s: Vec<(i64, Option<usize>)> = msgs.iter().map(|m| (m.ts, None)).collect();
            s.extend((0..k).map(|i| (intended(i), Some(i))));
            s.sort_by_key(|(t, _)| *t);
            s
        };
        let topics: Vec<String> = [Topic::Tickets, Topic::Revenue].iter().map(|t| names.name(*t).to_owned()).collect();
        let producer = producer.clone();
        let msgs_names: Vec<String> = msgs.iter().map(|m| names.name(m.topic).to_owned()).collect();
        std::thread::spawn(move || {
            let mut bgi = 0usize;
            let mut max_behind = 0i64;
            for (at, churn) in schedule {
                let wait = at - now_us();
                if wait > 200 {
                    std::thread::sleep(Duration::from_micros(wait as u64));
                }
                max_behind = max_behind.max(now_us() - at);
                match churn {
                    Some(i) => {
                        let id = format!("r{run}-probe-{i:05}");
                        let body = json!({"event_id": format!("pc-{id}"), "ts": format_rfc3339(at), "account_id": id, "kind": "churn"});
                        send(&producer, &topics[1], &id, &serde_json::to_vec(&body).expect("json"));
                    }
                    None => {
                        let m = &msgs[bgi];
                        send(&producer, &msgs_names[bgi], &m.key, &m.payload);
                        bgi += 1;
                    }
                }
            }
            let _ = producer.flush(Duration::from_secs(30));
            max_behind
        })
    };
    let cpu_a = cpu_seconds(server.pid);
    let wall_a = now_us();
    let mut seen = vec![false; k];
    let mut hist: Histogram<u64> = histogram();
    let mut received = 0usize;
    let mut cpu_b = None;
    let prefix = format!("\"r{run}-probe-");
    loop {
        let left = end + 5_000_000 - now_us();
        if left <= 0 || received >= k {
            break;
        }
        if cpu_b.is_none() && now_us() >= end {
            cpu_b = Some((cpu_seconds(server.pid), now_us()));
        }
        let Ok(Some((recv, text))) = tokio::time::timeout(Duration::from_millis(100), rx.recv()).await else {
            continue;
        };
        if !text.contains(r#""type":"alert""#) || !text.contains(r#""rule":"churned""#) {
            continue;
        }
        let Some(at) = text.find(&prefix) else { continue };
        let digits = &text[at + prefix.len()..];
        let Some(i) = digits.get(..5).and_then(|d| d.parse::<usize>().ok()) else { continue };
        if i < k && !seen[i] {
            seen[i] = true;
            received += 1;
            let _ = hist.record((recv - intended(i)).max(1) as u64);
        }
    }
    let max_behind = producer_task.join().map_err(|_| anyhow::anyhow!("producer thread panicked"))?;
    let (cpu_b, wall_b) = cpu_b.unwrap_or_else(|| (cpu_seconds(server.pid), now_us()));
    let stop = now_us();
    let mut missing = 0;
    for (i, s) in seen.iter().enumerate() {
        if !s {
            missing += 1;
            let _ = hist.record((stop - intended(i)).max(1) as u64);
        }
    }
    let window = (wall_b - wall_a) as f64 / 1e6;
    Ok(json!({
        "run": run, "events": per_run, "produced_per_s": per_run as f64 / ((end - t0) as f64 / 1e6),
        "expected": k, "received": received, "missing": missing,
        "lag": summary(&hist), "server_core_share": (cpu_b - cpu_a) / window.max(1e-9),
        "producer_max_behind_ms": max_behind as f64 / 1000.0,
    }))
}
