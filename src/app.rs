//! The running service: engine, ingest thread and HTTP server under one
//! shutdown. `App::start` is what `serve`, `demo` and the integration tests call.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use std::time::Duration;

use crate::auth::Auth;
use crate::checkpoint::{CheckpointStatus, Store};
use crate::config::Config;
use crate::history::store::HistoryStore;
use crate::http::{self, AppState};
use crate::ingest::{Ingest, Shared, Subscribed, TopicNames};
use crate::push::server::{Limits, PushService};
use crate::state::Engine;

pub struct App {
    /// Where the HTTP server listens (useful with port 0).
    pub addr: SocketAddr,
    pub shared: Arc<Shared>,
    ingest: Option<Ingest>,
    server: JoinHandle<std::io::Result<()>>,
    /// Periodic checkpoints (none with a store that keeps nothing).
    checkpoints: Option<JoinHandle<()>>,
    store: Arc<Store>,
    checkpoint_status: Arc<CheckpointStatus>,
    /// The history writer (none with `history.store = "off"`).
    history: Option<JoinHandle<()>>,
    /// The audit trail's writer (none with `history.store = "off"`).
    audit_writer: Option<JoinHandle<()>>,
    /// The delivery sender (none with `history.store = "off"`).
    sender: Option<JoinHandle<()>>,
    stop: watch::Sender<bool>,
    /// What a reload replaces, and the configuration in force.
    reloadable: Reloadable,
}

/// The parts of the running service a reload (SIGHUP) replaces.
struct Reloadable {
    /// The configuration in force: as started, with what reloads took.
    config: std::sync::Mutex<Config>,
    targets: Arc<arc_swap::ArcSwap<Vec<crate::history::targets::Target>>>,
    delivery: Option<Arc<crate::delivery::DeliveryService>>,
    audit: Arc<crate::audit::Audit>,
}

/// What a reload took.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reloaded {
    /// Condition and event rules in force.
    pub rules: usize,
    /// Firing alerts resolved because their rule was removed.
    pub resolved: usize,
    pub targets: usize,
    pub destinations: usize,
    pub people: usize,
    pub routes: usize,
    /// Changed settings a reload does not take (they need a restart).
    pub restart_needed: Vec<String>,
}

impl App {
    pub async fn start(config: &Config) -> anyhow::Result<App> {
        crate::telemetry::prometheus();
        let engine = Engine::new(config.state_config());
        let shared = Arc::new(Shared::new(engine, TopicNames::new(&config.kafka.topics)));
        shared.set_outbox_max(config.alerts.outbox_max);
        shared.set_align_wait(config.time.align_wait.0);
        let store = Arc::new(
            Store::open(&config.state.store, &config.kafka.group_id)
                .context("state.store")?
                .with_chunk_bytes(config.checkpoint.redis_chunk_bytes),
        );
        let checkpoint_status = Arc::new(CheckpointStatus::default());
        let history_store = match config.history.enabled() {
            true => Some(HistoryStore::open(&config.history.store).await.context("history.store")?),
            false => None,
        };
        let history_status = Arc::new(crate::history::writer::Status::default());
        let (audit, audit_events) = match &history_store {
            Some(_) => {
                let (audit, rx) = crate::audit::Audit::new();
                (Arc::new(audit), Some(rx))
            }
            None => (Arc::new(crate::audit::Audit::log_only()), None),
        };
        let listener = TcpListener::bind(config.http.listen)
            .await
            .with_context(|| format!("cannot listen on {} (http.listen)", config.http.listen))?;
        let addr = listener.local_addr()?;
        let auth = Arc::new(Auth::new(&config.auth.jwt_secret, config.auth.insecure));
        let push = PushService::new(
            shared.clone(),
            auth.clone(),
            audit.clone(),
            config.http.allowed_origins.clone(),
            config.push.history,
            Limits {
                queue: config.push.queue,
                max_connections: config.push.max_connections,
                max_connections_per_subject: config.push.max_connections_per_subject,
                idle_channel_ttl: config.push.idle_channel_ttl.0,
                ..Limits::default()
            },
        );
        let routing = crate::delivery::routing::Routing::parse(&config.delivery, addr, |v| std::env::var(v).ok())
            .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        let delivery = history_store.as_ref().map(|_| {
            crate::delivery::DeliveryService::new(
                routing,
                &format!("{}\n{}", config.auth.jwt_secret, config.kafka.group_id),
            )
        });
        let targets = Arc::new(arc_swap::ArcSwap::from_pointee(
            crate::history::targets::Target::parse_all(&config.targets)
                .map_err(|(i, e)| anyhow::anyhow!("target {}: {e}", i + 1))?,
        ));
        let reloadable = Reloadable {
            config: std::sync::Mutex::new(config.clone()),
            targets: targets.clone(),
            delivery: delivery.clone(),
            audit: audit.clone(),
        };
        let state = AppState {
            shared: shared.clone(),
            auth,
            max_lag: config.readiness.max_lag,
            store: store.describe(),
            checkpoints: checkpoint_status.clone(),
            history: history_store.clone(),
            history_status: history_status.clone(),
            audit: audit.clone(),
            delivery: delivery.clone(),
            targets: targets.clone(),
            cursors: Arc::default(),
        };
        if config.auth.insecure {
            warn!("auth.insecure is set: every request is served without a token");
        }
        let (stop, _) = watch::channel(false);
        let router = http::router(state, crate::push::server::ws_route(push.clone()));
        let limits = http::serve::Limits {
            header_timeout: config.http.header_timeout.0,
            idle_timeout: config.http.idle_timeout.0,
            max_body_bytes: config.http.max_body_bytes,
            max_connections: config.http.max_connections,
        };
        // Serve health and readiness while the state is being restored.
        let server = tokio::spawn(http::serve::serve(listener, router, limits, stop.subscribe()));
        // Join the consumer group while the checkpoint is read and decoded
        // (both take seconds); polling, and so positioning, starts after.
        let subscribed = Subscribed::new(&config.kafka, shared.clone()).context("cannot create the Kafka consumer")?;
        restore(&shared, &store, config).await?;
        // Rows the checkpoint holds uncommitted stay; with history off, none are kept.
        {
            let mut engine = shared.engine();
            engine.set_history(history_store.is_some());
            engine.set_history_buffer(config.history.buffer);
        }
        let audit_writer = history_store
            .clone()
            .zip(audit_events)
            .map(|(h, rx)| tokio::spawn(crate::audit::run(rx, h, config.audit.retention.0, stop.subscribe())));
        let sender = history_store
            .clone()
            .zip(delivery.clone())
            .map(|(h, d)| tokio::spawn(crate::delivery::run(shared.clone(), h, d, stop.subscribe())));
        let history = history_store.map(|h| {
            info!(store = h.describe(), "history store open");
            tokio::spawn(crate::history::writer::run(
                shared.clone(),
                h,
                history_status,
                crate::history::writer::Settings {
                    keep: crate::history::store::Retention::of(&config.history.retention),
                    spill: config.history.spill.clone().into(),
                    spill_after: config.history.spill_after,
                    deliveries: delivery
                        .as_ref()
                        .map(|d| crate::history::writer::Deliveries { planner: d.planner(), planned: d.wake.clone() }),
                },
                stop.subscribe(),
            ))
        });
        let ingest = subscribed.start();
        let c = &config.cadence;
        tokio::spawn(push.run([c.health.0, c.usage.0, c.tickets.0, c.revenue.0], stop.subscribe()));
        let checkpoints = store.keeps_state().then(|| {
            tokio::spawn(crate::checkpoint::run_loop(
                shared.clone(),
                store.clone(),
                checkpoint_status.clone(),
                config.checkpoint.interval.0,
                stop.subscribe(),
            ))
        });
        let brokers = crate::config::secrets::mask_url(&config.kafka.brokers);
        info!(%addr, %brokers, store = %store.describe(), "cspulse is running");
        Ok(App {
            addr,
            shared,
            ingest: Some(ingest),
            server,
            checkpoints,
            store,
            checkpoint_status,
            history,
            audit_writer,
            sender,
            stop,
            reloadable,
        })
    }

    /// Takes the alert rules, targets and delivery settings (destinations,
    /// people, routes) of `new`, a validated configuration (see
    /// [`Config::load`]). Everything is checked before anything changes: if
    /// one part cannot be taken, nothing is, and the running configuration
    /// stays. Changed settings a reload does not take are listed (they need
    /// a restart). Not audited: see [`App::reload_file`].
    pub fn reload(&self, new: &Config) -> anyhow::Result<Reloaded> {
        let rules = new.rules().map_err(|e| anyhow::anyhow!("alerts.rules: {e}"))?;
        let targets = crate::history::targets::Target::parse_all(&new.targets)
            .map_err(|(i, e)| anyhow::anyhow!("targets: target {}: {e}", i + 1))?;
        let routing = crate::delivery::routing::Routing::parse(&new.delivery, self.addr, |v| std::env::var(v).ok())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let r = &self.reloadable;
        if r.delivery.is_none() && routing.is_active() {
            anyhow::bail!(
                "delivery: this process runs without a history store (history.store = \"off\"), which holds the ledger; routes need a restart with one"
            );
        }
        let mut running = r.config.lock().unwrap_or_else(|p| p.into_inner());
        let restart_needed = running.restart_needed(new);
        let reloaded = Reloaded {
            rules: rules.conditions.len() + rules.events.len(),
            resolved: 0,
            targets: targets.len(),
            destinations: routing.destinations.len(),
            people: routing.people.len(),
            routes: routing.routes.len(),
            restart_needed,
        };
        let resolved = self.shared.engine().replace_rules(rules);
        r.targets.store(Arc::new(targets));
        if let Some(d) = &r.delivery {
            d.replace(routing);
        }
        running.alerts.rules = new.alerts.rules.clone();
        running.targets = new.targets.clone();
        let concurrency = running.delivery.concurrency;
        running.delivery = crate::config::delivery::DeliveryConfig { concurrency, ..new.delivery.clone() };
        Ok(Reloaded { resolved, ..reloaded })
    }

    /// Re-reads the configuration (`file`, then the environment) and takes
    /// it (see [`App::reload`]); a file that does not load or validate is
    /// refused whole. Logged, and audited as `reload` with outcome `ok` or
    /// `invalid`.
    pub fn reload_file(&self, file: Option<&std::path::Path>, subject: &str) -> anyhow::Result<Reloaded> {
        let target = match file {
            Some(f) => format!("config {}", f.display()),
            None => "config (defaults and environment)".to_owned(),
        };
        let result = Config::load(file).map_err(anyhow::Error::from).and_then(|new| self.reload(&new));
        let audit = &self.reloadable.audit;
        match &result {
            Ok(r) => {
                info!(
                    rules = r.rules,
                    resolved = r.resolved,
                    targets = r.targets,
                    destinations = r.destinations,
                    people = r.people,
                    routes = r.routes,
                    "configuration reloaded"
                );
                if !r.restart_needed.is_empty() {
                    warn!(
                        settings = r.restart_needed.join(", "),
                        "changed settings a reload does not take: they apply after a restart"
                    );
                }
                audit.record_system(subject, "reload", target, "ok");
            }
            Err(e) => {
                warn!(error = %format!("{e:#}"), "reload refused: the running configuration stays");
                audit.record_system(subject, "reload", target, "invalid");
            }
        }
        result
    }

    /// Stops consuming, writes a final checkpoint, then stops serving.
    pub async fn shutdown(mut self) {
        if let Some(ingest) = self.ingest.take() {
            let _ = tokio::task::spawn_blocking(move || ingest.stop()).await;
        }
        let _ = self.stop.send(true);
        if let Some(checkpoints) = self.checkpoints.take() {
            let _ = checkpoints.await;
        }
        // The writer's last attempt, so the final checkpoint holds what the
        // history store could not take.
        if let Some(history) = self.history.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), history).await;
        }
        if let Some(sender) = self.sender.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), sender).await;
        }
        if let Some(audit) = self.audit_writer.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), audit).await;
        }
        if self.store.keeps_state() {
            let (shared, store, status) = (self.shared.clone(), self.store.clone(), self.checkpoint_status.clone());
            match tokio::task::spawn_blocking(move || crate::checkpoint::checkpoint_once(&shared, &store, &status))
                .await
            {
                Ok(Ok(bytes)) => info!(bytes, "final checkpoint written"),
                Ok(Err(e)) => warn!(error = %e, "final checkpoint failed; the next start replays from the last one"),
                Err(e) => warn!(error = %e, "final checkpoint task failed"),
            }
        }
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), &mut self.server).await;
        info!("cspulse stopped");
    }
}

/// Restores the latest checkpoint before anything is consumed. An
/// unreachable store is retried with backoff (health answers meanwhile, and
/// `/readyz` says why it is not ready); a corrupt or foreign checkpoint stops
/// the start with an error rather than being half-loaded.
async fn restore(shared: &Arc<Shared>, store: &Arc<Store>, config: &Config) -> anyhow::Result<()> {
    let mut wait = Duration::from_millis(200);
    let blob = loop {
        let s = store.clone();
        match tokio::task::spawn_blocking(move || s.load()).await? {
            Ok(blob) => break blob,
            Err(e) if e.is_corrupt() => {
                return Err(e).with_context(|| format!("cannot restore the checkpoint in {}", store.describe()));
            }
            Err(e) => {
                warn!(error = %e, retry_in = ?wait, "cannot read the checkpoint store; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(30));
            }
        }
    };
    match blob {
        None => info!(store = %store.describe(), "no checkpoint: starting from the earliest offsets"),
        Some(blob) => {
            let started = std::time::Instant::now();
            let cfg = config.state_config();
            let engine = tokio::task::spawn_blocking(move || Engine::decode(cfg, &blob))
                .await?
                .with_context(|| format!("cannot restore the checkpoint in {}", store.describe()))?;
            let (accounts, watermark) = (engine.account_count(), engine.watermark());
            shared.replace_engine(engine);
            info!(
                accounts,
                watermark = ?watermark.map(crate::time::format_rfc3339),
                secs = started.elapsed().as_secs_f64(),
                "checkpoint restored; consuming from its offsets"
            );
        }
    }
    shared.restored.store(true, Ordering::SeqCst);
    Ok(())
}

/// Runs until SIGINT or SIGTERM, re-reading the configuration (`file`, then
/// the environment) on each SIGHUP (see [`App::reload_file`]).
pub async fn until_shutdown(app: &App, file: Option<&std::path::Path>) {
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|e| warn!(error = %e, "cannot listen for SIGHUP: no reloads"))
        .ok();
    let stop = shutdown_signal();
    tokio::pin!(stop);
    loop {
        let reload = async {
            #[cfg(unix)]
            if let Some(h) = hangup.as_mut() {
                h.recv().await;
                return;
            }
            std::future::pending::<()>().await
        };
        tokio::select! {
            _ = &mut stop => return,
            _ = reload => {
                info!("SIGHUP received: reloading the configuration");
                // Re-evaluating every account under new rules holds the
                // engine for a moment: off the async workers' duty.
                let _ = tokio::task::block_in_place(|| app.reload_file(file, "SIGHUP"));
            }
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => info!("SIGINT received, shutting down"),
        _ = term => info!("SIGTERM received, shutting down"),
    }
}
