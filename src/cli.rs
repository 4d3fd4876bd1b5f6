//! The command line (SPEC §13): `serve`, `demo`, `token`, `check-config`,
//! and `healthcheck` for container images that carry no HTTP client.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

use crate::auth::{Auth, Role};
use crate::config::Config;
use crate::demo::DemoOptions;
use crate::time::Span;

#[derive(Parser, Debug)]
#[command(name = "cspulse", version, about = "Streaming real-time customer-success metrics engine")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the engine against the configured Kafka.
    Serve {
        /// TOML configuration file (CSPULSE__SECTION__KEY variables override it).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Everything on one machine: embedded broker, synthetic portfolio, engine, dashboard.
    Demo {
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// HTTP address of the demo.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Accounts in the synthetic portfolio.
        #[arg(long, default_value_t = 2000)]
        accounts: usize,
        /// CSMs owning the accounts.
        #[arg(long, default_value_t = 40)]
        csms: usize,
        /// Average live events per second (bursts come on top).
        #[arg(long, default_value_t = 300.0)]
        rate: f64,
        /// Days of history produced before the live stream starts.
        #[arg(long, default_value_t = 30)]
        history_days: i64,
        /// Seed of the generator (same seed, same portfolio).
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Serve without tokens (never do this outside a laptop).
        #[arg(long)]
        insecure: bool,
    },
    /// Mint a token for a role.
    Token {
        #[arg(long, value_enum)]
        role: Role,
        /// Required for the csm role: the book the token may see.
        #[arg(long)]
        csm_id: Option<String>,
        /// Lifetime, e.g. 12h, 30d.
        #[arg(long, default_value = "12h")]
        ttl: Span,
        /// Subject (who the token is for).
        #[arg(long, default_value = "operator")]
        sub: String,
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Validate the configuration and print the effective values.
    CheckConfig {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Restate the history store (SPEC §15) by folding the input again.
    History {
        #[command(subcommand)]
        action: HistoryCommand,
    },
    /// Reports (SPEC §17).
    Report {
        #[command(subcommand)]
        action: ReportCommand,
    },
    /// Exit 0 if the URL answers 200 within 2 s, else 1 (a container HEALTHCHECK).
    Healthcheck {
        /// Plain `http://` URL to GET.
        #[arg(long, default_value = "http://127.0.0.1:8080/healthz")]
        url: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum HistoryCommand {
    /// Replay the input topics from their earliest offsets (a consumer group
    /// of its own) and swap the restated history in at the end; the running
    /// engine is not touched.
    Rebuild {
        /// Restate only rows at or after this instant (RFC 3339).
        #[arg(long, value_parser = instant)]
        from: Option<crate::time::Ts>,
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// As rebuild, from JSON-lines files of input events (the §1 shapes with
    /// a `topic` field), for history older than the topics' retention.
    Import {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[arg(long, value_parser = instant)]
        from: Option<crate::time::Ts>,
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum ReportCommand {
    /// Render a report from the history store without sending it. So far
    /// `daily_ops` as `csv` (a zip of one CSV per table) or `xlsx`.
    Render {
        #[arg(long)]
        template: String,
        /// `manager` or `csm:<id>` (daily_ops).
        #[arg(long)]
        audience: String,
        /// The run's instant (RFC 3339): the period ends here.
        #[arg(long, value_parser = instant)]
        at: crate::time::Ts,
        /// `csv` or `xlsx`.
        #[arg(long)]
        format: String,
        #[arg(long)]
        out: PathBuf,
        /// IANA zone of the period (local days).
        #[arg(long, default_value = "UTC")]
        time_zone: String,
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

fn instant(s: &str) -> Result<crate::time::Ts, String> {
    crate::time::parse_rfc3339(s).ok_or_else(|| format!("{s:?} is not an RFC 3339 instant"))
}

/// Exit code for configuration errors (runtime failures exit with 1).
const EXIT_CONFIG: u8 = 2;

fn load(config: Option<&PathBuf>) -> Result<Config, ExitCode> {
    Config::load(config.map(PathBuf::as_path)).map_err(|e| {
        eprintln!("cspulse: {e}");
        ExitCode::from(EXIT_CONFIG)
    })
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cspulse: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve { config } => {
            let file = config.clone();
            let config = match load(config.as_ref()) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            crate::telemetry::init_logging(&config.log);
            crate::telemetry::prometheus();
            runtime()?.block_on(async {
                let app = crate::app::App::start(&config).await?;
                crate::app::until_shutdown(&app, file.as_deref()).await;
                app.shutdown().await;
                anyhow::Ok(())
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo { config, listen, accounts, csms, rate, history_days, seed, insecure } => {
            let mut config = match Config::load_unvalidated(config.as_deref()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("cspulse: {e}");
                    return Ok(ExitCode::from(EXIT_CONFIG));
                }
            };
            config.auth.insecure |= insecure;
            crate::telemetry::init_logging(&config.log);
            crate::telemetry::prometheus();
            let opts =
                DemoOptions { listen, accounts, csms: csms.max(1), rate, history_days: history_days.max(0), seed };
            runtime()?.block_on(crate::demo::run(config, opts))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Token { role, csm_id, ttl, sub, config } => {
            let config = match load(config.as_ref()) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            let auth = Auth::new(&config.auth.jwt_secret, false);
            match auth.mint(&sub, role, csm_id.as_deref(), ttl.0) {
                Ok(token) => {
                    println!("{token}");
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("cspulse: {e}");
                    Ok(ExitCode::from(EXIT_CONFIG))
                }
            }
        }
        Command::CheckConfig { config } => {
            let config = match load(config.as_ref()) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            print!("{}", config.to_toml_masked());
            eprintln!("configuration is valid");
            Ok(ExitCode::SUCCESS)
        }
        Command::History { action } => {
            let (config, source, from) = match action {
                HistoryCommand::Rebuild { from, config } => (config, crate::history::rebuild::Source::Topics, from),
                HistoryCommand::Import { files, from, config } => {
                    (config, crate::history::rebuild::Source::Files(files), from)
                }
            };
            let config = match load(config.as_ref()) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            crate::telemetry::init_logging(&config.log);
            let summary = crate::history::rebuild::run(&config, source, from)?;
            println!(
                "history restated: {} events folded, {} rows written, through {}",
                summary.events,
                summary.rows,
                summary.watermark.map_or("(no events)".into(), crate::time::format_rfc3339)
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Report {
            action: ReportCommand::Render { template, audience, at, format, out, time_zone, config },
        } => {
            let config = match load(config.as_ref()) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            crate::telemetry::init_logging(&config.log);
            let usage = |message: String| -> anyhow::Result<ExitCode> {
                eprintln!("cspulse report render: {message}");
                Ok(ExitCode::from(EXIT_CONFIG))
            };
            if template != crate::report::Template::DailyOps.name() {
                return usage(format!("--template {template}: only daily_ops renders so far (issue #22)"));
            }
            let Some(audience_of) = crate::report::Audience::parse(&audience) else {
                return usage(format!("--audience {audience}: manager or csm:<id>"));
            };
            if !matches!(format.as_str(), "csv" | "xlsx") {
                return usage(format!("--format {format}: csv or xlsx so far (html and pdf: issue #22)"));
            }
            if !config.history.enabled() {
                return usage("history.store is off: a render reads the history store".to_owned());
            }
            let bytes = runtime()?.block_on(async {
                let store = crate::history::store::HistoryStore::open(&config.history.store).await?;
                let doc = crate::report::daily::daily_ops(&store, &template, &audience_of, at, &time_zone)
                    .await
                    .map_err(anyhow::Error::msg)?;
                let bytes = if format == "csv" { doc.csv_zip()? } else { doc.xlsx()? };
                anyhow::Ok((doc, bytes))
            });
            let (doc, bytes) = match bytes {
                Ok(b) => b,
                Err(e) => {
                    eprintln!("cspulse report render: {e:#}");
                    return Ok(ExitCode::FAILURE);
                }
            };
            std::fs::write(&out, &bytes)?;
            let rows: usize = doc.sections.iter().map(|s| s.table.rows.len()).sum();
            println!(
                "rendered {} ({}) for {} to {}: {} rows in {} tables, {} bytes",
                template,
                format,
                doc.header.audience,
                out.display(),
                rows,
                doc.sections.len(),
                bytes.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        // Never exit 2 here: Docker reserves it in HEALTHCHECK commands.
        Command::Healthcheck { url } => match probe(&url, HEALTHCHECK_TIMEOUT) {
            Ok(200) => Ok(ExitCode::SUCCESS),
            Ok(status) => {
                eprintln!("cspulse: {url} answered {status}");
                Ok(ExitCode::FAILURE)
            }
            Err(e) => {
                eprintln!("cspulse: {url}: {e}");
                Ok(ExitCode::FAILURE)
            }
        },
    }
}

/// The whole probe (connect, send, read the status line) must fit in this.
const HEALTHCHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// `http://host[:port][/path]` split into the `host[:port]` to connect to
/// (and send as `Host`) and the request target.
fn split_http_url(url: &str) -> Result<(&str, &str), String> {
    let rest = url.strip_prefix("http://").ok_or("only plain http:// URLs are supported")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') {
        return Err("the URL needs a host (and no user info)".into());
    }
    Ok((authority, path))
}

/// One HTTP/1.1 GET with std's blocking socket: the status code of the answer.
fn probe(url: &str, timeout: Duration) -> Result<u16, String> {
    let deadline = Instant::now() + timeout;
    let left = || deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()).ok_or("timed out");
    let (authority, path) = split_http_url(url)?;
    let with_port = if authority.ends_with(']') || !authority.contains(':') {
        format!("{authority}:80")
    } else {
        authority.to_owned()
    };
    let addrs = with_port.to_socket_addrs().map_err(|e| format!("cannot resolve {authority}: {e}"))?;
    let mut last = format!("{authority} resolves to no address");
    let mut stream = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, left()?) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = format!("cannot connect to {addr}: {e}"),
        }
    }
    let mut stream = stream.ok_or(last)?;
    stream.set_write_timeout(Some(left()?)).map_err(|e| e.to_string())?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: cspulse-healthcheck\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).map_err(|e| format!("cannot send the request: {e}"))?;
    // The status line is all we need; stop at its end or after 1 KiB.
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 256];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 1024 {
        stream.set_read_timeout(Some(left()?)).map_err(|e| e.to_string())?;
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return Err("timed out waiting for the answer".into());
            }
            Err(e) => return Err(format!("cannot read the answer: {e}")),
        }
    }
    let head = String::from_utf8_lossy(&head);
    let line = head.lines().next().unwrap_or_default();
    let mut parts = line.split(' ');
    match (parts.next(), parts.next().and_then(|code| code.parse::<u16>().ok())) {
        (Some(version), Some(code)) if version.starts_with("HTTP/1.") => Ok(code),
        _ => Err(format!("not an HTTP/1 answer: {line:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthcheck_urls_split_into_authority_and_target() {
        assert_eq!(split_http_url("http://127.0.0.1:8080/healthz"), Ok(("127.0.0.1:8080", "/healthz")));
        assert_eq!(split_http_url("http://localhost"), Ok(("localhost", "/")));
        assert_eq!(split_http_url("http://[::1]:8080/readyz?x=1"), Ok(("[::1]:8080", "/readyz?x=1")));
        assert!(split_http_url("https://127.0.0.1/healthz").is_err());
        assert!(split_http_url("http:///healthz").is_err());
        assert!(split_http_url("http://user@host/").is_err());
    }
}
