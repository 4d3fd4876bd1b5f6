//! The command line (SPEC §13): `serve`, `demo`, `token`, `check-config`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

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
            let config = match load(config.as_ref()) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            crate::telemetry::init_logging(&config.log);
            crate::telemetry::prometheus();
            runtime()?.block_on(async {
                let app = crate::app::App::start(&config).await?;
                crate::app::shutdown_signal().await;
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
    }
}
