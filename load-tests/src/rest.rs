//! `rest`: latency of REST snapshot reads while the engine folds a live
//! stream (SPEC §7; readers never wait for the fold).
//!
//! Runs `cspulse demo` (embedded broker, synthetic portfolio streaming at
//! `--rate`), waits until the history is folded and the live stream runs,
//! then makes `--requests` sequential reads of `--path` (default the
//! manager snapshot, `/api/v1/channels/manager`; the accounts list, SPEC
//! §19, with a filter and a sort for issue #21) on one keep-alive
//! connection, each followed by a `/healthz` on the same connection: the
//! floor (same server, same socket, no state read).

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::Command;

#[derive(clap::Args)]
pub struct RestArgs {
    #[arg(long, default_value_t = 20_000)]
    accounts: usize,
    #[arg(long, default_value_t = 400)]
    csms: usize,
    /// Live events per second produced by the demo.
    #[arg(long, default_value_t = 3000.0)]
    rate: f64,
    #[arg(long, default_value_t = 300)]
    requests: usize,
    /// Seconds of live stream before measuring.
    #[arg(long, default_value_t = 20)]
    settle: u64,
    /// Days of history the demo produces before the live stream.
    #[arg(long, default_value_t = 30)]
    history_days: u64,
    /// What to read (read as a manager).
    #[arg(long, default_value = "/api/v1/channels/manager")]
    path: String,
    /// The p99 goal printed beside the result, in ms.
    #[arg(long, default_value_t = 5.0)]
    goal_ms: f64,
}

/// One HTTP/1.1 GET on a kept-alive connection; returns the body.
async fn get(stream: &mut BufReader<TcpStream>, path: &str, token: &str) -> anyhow::Result<Vec<u8>> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\r\n");
    stream.get_mut().write_all(request.as_bytes()).await?;
    let mut line = String::new();
    stream.read_line(&mut line).await?;
    if !line.starts_with("HTTP/1.1 200") {
        bail!("GET {path}: {}", line.trim());
    }
    let mut length = None;
    loop {
        line.clear();
        stream.read_line(&mut line).await?;
        let l = line.trim();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = Some(v.trim().parse::<usize>()?);
        }
    }
    let n = length.context("no content-length")?;
    let mut body = vec![0; n];
    stream.read_exact(&mut body).await?;
    Ok(body)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

pub async fn rest(args: RestArgs) -> anyhow::Result<()> {
    let bin = crate::push::server_bin_at(None)?;
    let port = crate::push::free_port()?;
    let mut child = Command::new(&bin)
        .args(["demo", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--accounts", &args.accounts.to_string(), "--csms", &args.csms.to_string()])
        .args(["--rate", &args.rate.to_string(), "--history-days", &args.history_days.to_string()])
        .env("CSPULSE__LOG__LEVEL", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("spawn cspulse demo")?;
    let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
    let started = Instant::now();
    let token = loop {
        let line = tokio::time::timeout(Duration::from_secs(600), lines.next_line())
            .await
            .context("the demo printed no banner")??
            .context("the demo exited")?;
        if line.trim_start().starts_with("manager") && line.contains("token=") {
            break line.split("token=").nth(1).context("token")?.trim().to_owned();
        }
    };
    eprintln!(
        "demo up in {:.1} s; live stream for {} s before measuring",
        started.elapsed().as_secs_f64(),
        args.settle
    );
    let mut stream = BufReader::new(TcpStream::connect(("127.0.0.1", port)).await?);
    stream.get_mut().set_nodelay(true)?;
    // Every account of the portfolio in the state first (the backfill folds
    // for a while at 100,000 accounts), then the live stream alone.
    let loading = Instant::now();
    loop {
        let body: serde_json::Value =
            serde_json::from_slice(&get(&mut stream, "/api/v1/accounts?limit=1", &token).await?)?;
        let n = body["total"].as_u64().unwrap_or(0) as usize;
        if n >= args.accounts {
            eprintln!("{n} accounts in the state after {:.0} s", loading.elapsed().as_secs_f64());
            break;
        }
        if loading.elapsed() > Duration::from_secs(900) {
            bail!("only {n} of {} accounts in the state after 15 minutes", args.accounts);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    tokio::time::sleep(Duration::from_secs(args.settle)).await;
    let (mut reads, mut floor) = (Vec::new(), Vec::new());
    let (mut bytes, mut last) = (0, Vec::new());
    for _ in 0..args.requests {
        let t = Instant::now();
        last = get(&mut stream, &args.path, &token).await?;
        bytes = last.len();
        reads.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        get(&mut stream, "/healthz", &token).await?;
        floor.push(t.elapsed().as_secs_f64() * 1e3);
    }
    // What the state held at the end (an accounts list says how many matched).
    let accounts_in_state = {
        let body: serde_json::Value =
            serde_json::from_slice(&get(&mut stream, "/api/v1/accounts?limit=1", &token).await?)?;
        body["total"].as_u64()
    };
    let matched = serde_json::from_slice::<serde_json::Value>(&last).ok().and_then(|b| b["total"].as_u64());
    let _ = child.kill().await;
    for v in [&mut reads, &mut floor] {
        v.sort_by(f64::total_cmp);
    }
    let stat = |v: &[f64]| json!({"p50": percentile(v, 0.5), "p99": percentile(v, 0.99), "max": v[v.len() - 1]});
    let result = json!({
        "accounts": args.accounts, "csms": args.csms, "rate": args.rate, "requests": args.requests,
        "path": args.path, "history_days": args.history_days,
        "accounts_in_state": accounts_in_state, "matched": matched,
        "bytes": bytes, "read_ms": stat(&reads), "healthz_ms": stat(&floor),
    });
    println!(
        "\nREST under ingest: {} accounts, {} CSMs, demo at {} events/s, {} sequential reads",
        args.accounts, args.csms, args.rate, args.requests
    );
    println!(
        "  GET {} ({} KiB): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (goal p99 <= {} ms)",
        args.path,
        bytes / 1024,
        percentile(&reads, 0.5),
        percentile(&reads, 0.99),
        reads[reads.len() - 1],
        args.goal_ms
    );
    println!("  accounts in the state at the end: {accounts_in_state:?}; the read matched {matched:?}");
    println!(
        "  GET /healthz (floor):              p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        percentile(&floor, 0.5),
        percentile(&floor, 0.99),
        floor[floor.len() - 1]
    );
    println!(
        "reproduce: ./target/release/cspulse-load rest --accounts {} --csms {} --rate {} --requests {} --history-days {} --path '{}' --goal-ms {}",
        args.accounts, args.csms, args.rate, args.requests, args.history_days, args.path, args.goal_ms
    );
    crate::write_results("rest", json!({"result": result, "machine": crate::machine()}))
}
