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

use crate::auth::Auth;
use crate::config::Config;
use crate::http::{self, AppState};
use crate::ingest::{Ingest, Shared, TopicNames};
use crate::state::Engine;

pub struct App {
    /// Where the HTTP server listens (useful with port 0).
    pub addr: SocketAddr,
    pub shared: Arc<Shared>,
    ingest: Option<Ingest>,
    server: JoinHandle<std::io::Result<()>>,
    stop: watch::Sender<bool>,
}

impl App {
    pub async fn start(config: &Config) -> anyhow::Result<App> {
        crate::telemetry::prometheus();
        let engine = Engine::new(config.state_config());
        let shared = Arc::new(Shared::new(engine, TopicNames::new(&config.kafka.topics)));
        if config.state.store != "memory" {
            warn!(
                store = %config.state.store,
                "checkpoints are not written yet: the state is rebuilt from the earliest retained offsets on every start"
            );
        }
        shared.restored.store(true, Ordering::SeqCst);
        let ingest = Ingest::start(&config.kafka, shared.clone()).context("cannot create the Kafka consumer")?;
        let listener = TcpListener::bind(config.http.listen)
            .await
            .with_context(|| format!("cannot listen on {} (http.listen)", config.http.listen))?;
        let addr = listener.local_addr()?;
        let state = AppState {
            shared: shared.clone(),
            auth: Arc::new(Auth::new(&config.auth.jwt_secret, config.auth.insecure)),
            max_lag: config.readiness.max_lag,
        };
        if config.auth.insecure {
            warn!("auth.insecure is set: every request is served without a token");
        }
        let (stop, mut stopped) = watch::channel(false);
        let router = http::router(state);
        let server = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stopped.wait_for(|s| *s).await;
                })
                .await
        });
        info!(%addr, brokers = %config.kafka.brokers, "cspulse is running");
        Ok(App { addr, shared, ingest: Some(ingest), server, stop })
    }

    /// Stops consuming, then stops serving.
    pub async fn shutdown(mut self) {
        if let Some(ingest) = self.ingest.take() {
            let _ = tokio::task::spawn_blocking(move || ingest.stop()).await;
        }
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), &mut self.server).await;
        info!("cspulse stopped");
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
