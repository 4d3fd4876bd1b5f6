//! Configuration (SPEC §13): one typed struct, layered from the embedded
//! `default.toml`, then the config file, then `CSPULSE__SECTION__KEY`
//! environment variables. Errors name the key and where its value came from.
//! Secrets are masked when printed and can come from `*_env` keys ([`secrets`]).

pub mod delivery;
pub mod reports;
pub mod secrets;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::{Deserialize, Serialize};

use crate::exact::Decimal;
use crate::state::StateConfig;
use crate::time::{MICROS_PER_MIN, Span};

/// The embedded defaults, also the reference for every key.
pub const DEFAULT_TOML: &str = include_str!("default.toml");

/// The environment prefix; `__` separates table levels.
pub const ENV_PREFIX: &str = "CSPULSE__";

/// Accepts a string, or a number or boolean as written (environment values
/// like `CSPULSE__AUTH__JWT_SECRET=1234…` arrive typed).
fn text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Loose {
        S(String),
        U(u64),
        I(i64),
        F(f64),
        B(bool),
    }
    Ok(match Loose::deserialize(d)? {
        Loose::S(s) => s,
        Loose::U(v) => v.to_string(),
        Loose::I(v) => v.to_string(),
        Loose::F(v) => v.to_string(),
        Loose::B(v) => v.to_string(),
    })
}

fn text_map<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    #[derive(Deserialize)]
    struct T(#[serde(deserialize_with = "text")] String);
    let m = BTreeMap::<String, T>::deserialize(d)?;
    Ok(m.into_iter().map(|(k, v)| (k, v.0)).collect())
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Load(#[from] Box<figment::Error>),
    #[error("invalid configuration: {key}: {problem}")]
    Invalid { key: &'static str, problem: String },
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub kafka: KafkaConfig,
    pub http: HttpConfig,
    pub auth: AuthConfig,
    pub state: StoreConfig,
    pub checkpoint: CheckpointConfig,
    pub cadence: CadenceConfig,
    pub time: TimeConfig,
    pub dedup: DedupConfig,
    pub health: HealthConfig,
    pub tickets: TicketsConfig,
    pub usage: UsageConfig,
    pub push: PushConfig,
    pub readiness: ReadinessConfig,
    pub log: LogConfig,
    pub limits: LimitsConfig,
    pub history: HistoryConfig,
    pub audit: AuditConfig,
    /// Targets against actuals (§15); none by default (then not serialized,
    /// like `[[alerts.rules]]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<TargetConfig>,
    /// Alert rules (§5; the default rule set applies when absent) and the
    /// delivery outbox's bound (§5.3 additions).
    #[serde(default)]
    pub alerts: AlertsConfig,
    /// Email, Slack and webhooks (§16); nothing is sent by default.
    #[serde(default)]
    pub delivery: delivery::DeliveryConfig,
    /// Scheduled reports (§17); none by default.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reports: Vec<reports::ReportConfig>,
    /// How report runs wait for data and catch up (§17).
    #[serde(default)]
    pub reporting: reports::ReportingConfig,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    #[serde(deserialize_with = "text")]
    pub brokers: String,
    #[serde(deserialize_with = "text")]
    pub group_id: String,
    pub max_message_bytes: usize,
    pub topics: TopicsConfig,
    /// librdkafka properties, passed through as is.
    #[serde(deserialize_with = "text_map")]
    pub properties: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TopicsConfig {
    #[serde(deserialize_with = "text")]
    pub accounts: String,
    #[serde(deserialize_with = "text")]
    pub usage: String,
    #[serde(deserialize_with = "text")]
    pub tickets: String,
    #[serde(deserialize_with = "text")]
    pub revenue: String,
    #[serde(deserialize_with = "text")]
    pub alerts: String,
    #[serde(deserialize_with = "text")]
    pub deadletter: String,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    pub allowed_origins: Vec<String>,
    /// A request head must arrive within this (slow-header connections are closed).
    pub header_timeout: Span,
    /// A keep-alive connection with no request in flight is closed after this.
    pub idle_timeout: Span,
    /// Larger request bodies get 413.
    pub max_body_bytes: usize,
    /// Open TCP connections (HTTP and WebSocket); more are refused.
    pub max_connections: usize,
}

#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    #[serde(deserialize_with = "text")]
    pub jwt_secret: String,
    /// The environment variable holding `jwt_secret`, read at load (empty: none).
    #[serde(deserialize_with = "text")]
    pub jwt_secret_env: String,
    pub insecure: bool,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("jwt_secret", &if self.jwt_secret.is_empty() { "(unset)" } else { "(set)" })
            .field("jwt_secret_env", &self.jwt_secret_env)
            .field("insecure", &self.insecure)
            .finish()
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `file://DIR`, `redis://HOST:PORT/DB` or `memory`.
    #[serde(deserialize_with = "text")]
    pub store: String,
}

/// SPEC §15: where history lives.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryConfig {
    /// `sqlite://PATH`, `postgres://USER@HOST:PORT/DB` or `off`.
    #[serde(deserialize_with = "text")]
    pub store: String,
    /// Scope snapshots at every multiple of this since the Unix epoch.
    pub resolution: Span,
    /// Rows kept for the store while it cannot take them; beyond, the
    /// oldest scope rows are dropped (listed as gaps).
    pub buffer: usize,
    /// The file the rows that are never dropped spill to while the store
    /// is unreachable.
    #[serde(deserialize_with = "text")]
    pub spill: String,
    /// Spill once more than this many of them wait in memory.
    pub spill_after: usize,
    pub retention: RetentionConfig,
}

/// SPEC §18: the audit trail.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// How long audit events are kept in the history store (`0s`: forever).
    pub retention: Span,
}

/// SPEC §15 "Retention": how long each kind of row is kept (`0s`: forever).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Scope rows at boundaries that are not whole hours.
    pub fine: Span,
    /// Scope rows at whole hours that are not UTC midnights.
    pub hourly: Span,
    /// Scope rows at UTC midnights, account rows, the tier and alert logs.
    pub daily: Span,
}

/// A target (SPEC §15 `[[targets]]`): a KPI figure of one scope against a
/// value, per UTC calendar period.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    #[serde(deserialize_with = "text")]
    pub name: String,
    /// A dotted path of the KPI object (§3.2), e.g. `revenue.nrr_qtd`.
    #[serde(deserialize_with = "text")]
    pub metric: String,
    /// `portfolio`, `segment:<v>`, `region:<v>` or `csm:<id>`.
    #[serde(deserialize_with = "text")]
    pub scope: String,
    pub period: crate::time::CalendarPeriod,
    /// `>=` or `<=`.
    #[serde(deserialize_with = "text")]
    pub op: String,
    pub value: f64,
}

impl HistoryConfig {
    pub fn enabled(&self) -> bool {
        self.store != "off"
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointConfig {
    pub interval: Span,
    /// Largest value one Redis write carries (a checkpoint is split into
    /// chunks of this size); must stay below Redis's `proto-max-bulk-len`.
    pub redis_chunk_bytes: usize,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CadenceConfig {
    pub health: Span,
    pub usage: Span,
    pub tickets: Span,
    pub revenue: Span,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TimeConfig {
    pub mode: String,
    pub allowed_lateness: Span,
    pub max_future_skew: Span,
    /// How long the fold waits for a lagging partition with nothing
    /// buffered before folding the others (§2 additions, event-time alignment).
    pub align_wait: Span,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DedupConfig {
    pub horizon: Span,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    pub green: f64,
    pub yellow: f64,
    pub weights: WeightsConfig,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WeightsConfig {
    pub adoption: f64,
    pub engagement: f64,
    pub support: f64,
    pub sentiment: f64,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TicketsConfig {
    pub sla_minutes: SlaConfig,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SlaConfig {
    pub p1: u32,
    pub p2: u32,
    pub p3: u32,
    pub p4: u32,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UsageConfig {
    pub core_features: Vec<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PushConfig {
    pub history: usize,
    /// Outbound messages queued per WebSocket connection (after folding
    /// updates) before it is closed as a slow consumer.
    pub queue: usize,
    /// Concurrent WebSocket connections; more get HTTP 503.
    pub max_connections: usize,
    /// WebSocket connections per token subject; more get HTTP 429.
    pub max_connections_per_subject: usize,
    /// How long a channel without subscribers is kept (its epoch with it).
    pub idle_channel_ttl: Span,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ReadinessConfig {
    pub max_lag: u64,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub format: String,
    pub level: String,
}

/// Cardinality limits (§18).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    pub max_accounts_per_partition: u64,
    pub max_features: usize,
    pub max_open_tickets_per_account: u64,
    pub max_events_per_ticket: usize,
}

/// `[alerts]`: `[[alerts.rules]]`, interpreted by the alert engine, and
/// `outbox_max`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// The configured rules; `None` (no `[[alerts.rules]]`): the defaults of
    /// §5.1. (An `[alerts]` table with only `outbox_max` keeps the defaults.)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rules: Option<Vec<serde_json::Value>>,
    /// Alert transitions held until the broker acknowledges them; when this
    /// many wait, ingestion pauses until they drain (nothing is dropped).
    pub outbox_max: usize,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig { rules: None, outbox_max: 100_000 }
    }
}

impl Config {
    /// Defaults, then `file` if given, then the process environment; validated.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let config = Self::load_unvalidated(file)?;
        config.validate()?;
        Ok(config)
    }

    /// As `load`, for callers that fill in values (the demo) before validating.
    pub fn load_unvalidated(file: Option<&Path>) -> Result<Config, ConfigError> {
        let env = Env::prefixed(ENV_PREFIX).split("__");
        let mut figment = Figment::from(Toml::string(DEFAULT_TOML));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::Invalid {
                    key: "--config",
                    problem: format!("{} does not exist", path.display()),
                });
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        let mut config: Config = figment.merge(env).extract().map_err(Box::new)?;
        config.resolve_env_secrets(|name| std::env::var(name).ok())?;
        Ok(config)
    }

    /// Defaults only (plus a TOML snippet), without the environment: for tests.
    pub fn from_toml(snippet: &str) -> Result<Config, ConfigError> {
        let mut config: Config =
            Figment::from(Toml::string(DEFAULT_TOML)).merge(Toml::string(snippet)).extract().map_err(Box::new)?;
        config.resolve_env_secrets(|name| std::env::var(name).ok())?;
        config.validate()?;
        Ok(config)
    }

    /// Reads the secrets given as `*_env` keys: `auth.jwt_secret_env`, and
    /// every `kafka.properties` key ending in `_env` (`"sasl.password_env" =
    /// "VAR"` becomes the property `sasl.password` with the value of `VAR`).
    /// A variable that is unset or empty, or a secret given both ways, is an error.
    pub fn resolve_env_secrets(&mut self, var: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let unset =
            |key: &'static str, what: String| ConfigError::Invalid { key, problem: format!("{what} is not set") };
        let auth = &mut self.auth;
        if !auth.jwt_secret_env.is_empty() {
            if !auth.jwt_secret.is_empty() {
                return Err(ConfigError::Invalid {
                    key: "auth.jwt_secret_env",
                    problem: "auth.jwt_secret is set too; give the secret one way".into(),
                });
            }
            auth.jwt_secret = var(&auth.jwt_secret_env)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| unset("auth.jwt_secret_env", format!("environment variable {}", auth.jwt_secret_env)))?;
        }
        let from_env: Vec<String> = self.kafka.properties.keys().filter(|k| k.ends_with("_env")).cloned().collect();
        for key in from_env {
            let name = self.kafka.properties.remove(&key).unwrap_or_default();
            let property = key.trim_end_matches("_env").to_owned();
            if self.kafka.properties.contains_key(&property) {
                return Err(ConfigError::Invalid {
                    key: "kafka.properties",
                    problem: format!("{property:?} is set, and {key:?} too; give it one way"),
                });
            }
            let value = var(&name)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| unset("kafka.properties", format!("{key:?}: environment variable {name}")))?;
            self.kafka.properties.insert(property, value);
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key, problem: &str| Err(ConfigError::Invalid { key, problem: problem.to_owned() });
        if self.time.mode != "event" {
            return bad("time.mode", "only \"event\" is supported (windows follow event time)");
        }
        let (weights, green, yellow) = match self.health_decimals() {
            Ok(h) => h,
            Err((key, problem)) => return Err(ConfigError::Invalid { key, problem }),
        };
        if let Err(problem) = crate::state::health::Weights::new(weights) {
            return bad("health.weights", &problem);
        }
        if yellow.ratio() > green.ratio() {
            return bad("health.yellow", "must be <= health.green");
        }
        let sla = &self.tickets.sla_minutes;
        if [sla.p1, sla.p2, sla.p3, sla.p4].contains(&0) {
            return bad("tickets.sla_minutes", "every SLA must be at least 1 minute");
        }
        if self.kafka.max_message_bytes == 0 {
            return bad("kafka.max_message_bytes", "must be > 0");
        }
        if self.push.history == 0 {
            return bad("push.history", "must be > 0");
        }
        if self.push.queue < 2 {
            return bad("push.queue", "must be at least 2 (a subscription queues two messages)");
        }
        if self.push.max_connections == 0 {
            return bad("push.max_connections", "must be > 0");
        }
        // [delivery] (§16): checked whole here, so check-config refuses what
        // serve would (the names of environment variables are read now).
        let routing =
            crate::delivery::routing::Routing::parse(&self.delivery, self.http.listen, |v| std::env::var(v).ok())
                .map_err(|e| ConfigError::Invalid { key: "delivery", problem: e.to_string() })?;
        if routing.is_active() && !self.history.enabled() {
            return bad(
                "delivery.alert_routes",
                "delivery needs a history store (the ledger lives there), and history.store is \"off\"",
            );
        }
        if self.push.max_connections_per_subject == 0 {
            return bad("push.max_connections_per_subject", "must be > 0");
        }
        if self.http.header_timeout.0.is_zero() {
            return bad("http.header_timeout", "must be > 0");
        }
        if self.http.idle_timeout.0.is_zero() {
            return bad("http.idle_timeout", "must be > 0");
        }
        if self.http.max_connections == 0 {
            return bad("http.max_connections", "must be > 0");
        }
        if !(self.log.format == "text" || self.log.format == "json") {
            return bad("log.format", "must be \"text\" or \"json\"");
        }
        if self.checkpoint.interval.0.is_zero() {
            return bad("checkpoint.interval", "must be > 0");
        }
        if self.checkpoint.redis_chunk_bytes < 1024 {
            return bad("checkpoint.redis_chunk_bytes", "must be at least 1024");
        }
        let store = &self.state.store;
        if !(store == "memory" || store.starts_with("file://") || store.starts_with("redis://")) {
            return bad("state.store", "must be file://DIR, redis://HOST:PORT/DB or memory");
        }
        let history = &self.history.store;
        if !(history == "off"
            || history.starts_with("sqlite://")
            || history.starts_with("postgres://")
            || history.starts_with("postgresql://"))
        {
            return bad("history.store", "must be sqlite://PATH, postgres://USER@HOST:PORT/DB or off");
        }
        let res = self.history.resolution.micros();
        if !(MICROS_PER_MIN..=60 * MICROS_PER_MIN).contains(&res) || (60 * MICROS_PER_MIN) % res != 0 {
            return bad("history.resolution", "must be between 1m and 1h and divide an hour (e.g. 5m)");
        }
        if self.history.buffer < 1000 {
            return bad("history.buffer", "must be at least 1000 rows");
        }
        if self.history.spill.trim().is_empty() {
            return bad("history.spill", "must be a file path");
        }
        if self.history.spill_after == 0 {
            return bad("history.spill_after", "must be > 0");
        }
        let r = &self.history.retention;
        let hour = 60 * MICROS_PER_MIN;
        for (key, span, least) in [
            ("history.retention.fine", r.fine, hour),
            ("history.retention.hourly", r.hourly, 24 * hour),
            ("history.retention.daily", r.daily, 24 * hour),
        ] {
            if !span.0.is_zero() && span.micros() < least {
                return bad(key, "must be 0s (forever) or at least a day (an hour for fine rows)");
            }
        }
        if let Err((i, problem)) = crate::history::targets::Target::parse_all(&self.targets) {
            return Err(ConfigError::Invalid { key: "targets", problem: format!("target {}: {problem}", i + 1) });
        }
        if let Err((i, problem)) = crate::report::ReportSpec::parse_all(&self.reports, &self.delivery) {
            return Err(ConfigError::Invalid { key: "reports", problem: format!("report {}: {problem}", i + 1) });
        }
        if self.alerts.outbox_max == 0 {
            return bad("alerts.outbox_max", "must be > 0");
        }
        if let Err(e) = self.rules() {
            return Err(ConfigError::Invalid { key: "alerts.rules", problem: e.to_string() });
        }
        if !self.auth.insecure && self.auth.jwt_secret.len() < 16 {
            return bad("auth.jwt_secret", "must be at least 16 bytes (or set auth.insecure = true)");
        }
        Ok(())
    }

    /// The health weights and thresholds as the decimals they were written
    /// as (SPEC §4: decided exactly), or the key that is not one.
    fn health_decimals(&self) -> Result<([Decimal; 4], Decimal, Decimal), (&'static str, String)> {
        let w = &self.health.weights;
        let weights = [w.adoption, w.engagement, w.support, w.sentiment].map(Decimal::from_f64);
        let weights = match weights {
            [Ok(a), Ok(e), Ok(s), Ok(t)] => [a, e, s, t],
            _ => return Err(("health.weights", "every weight must be a finite decimal number >= 0".into())),
        };
        let green = Decimal::from_f64(self.health.green).map_err(|e| ("health.green", e))?;
        let yellow = Decimal::from_f64(self.health.yellow).map_err(|e| ("health.yellow", e))?;
        Ok((weights, green, yellow))
    }

    /// The fold's parameters.
    pub fn state_config(&self) -> StateConfig {
        let (weights, green, yellow) = self.health_decimals().expect("validated");
        let sla = &self.tickets.sla_minutes;
        StateConfig {
            max_message_bytes: self.kafka.max_message_bytes,
            allowed_lateness: self.time.allowed_lateness.micros(),
            max_future_skew: self.time.max_future_skew.micros(),
            dedup_horizon: self.dedup.horizon.micros(),
            weights: crate::state::health::Weights::new(weights).expect("validated"),
            green,
            yellow,
            sla: [sla.p1, sla.p2, sla.p3, sla.p4].map(|m| m as i64 * MICROS_PER_MIN),
            core_features: self.usage.core_features.clone(),
            rules: self.rules().expect("validated"),
            topics: {
                let t = &self.kafka.topics;
                [t.accounts.clone(), t.usage.clone(), t.tickets.clone(), t.revenue.clone()]
            },
            limits: crate::state::config::Limits {
                max_accounts_per_partition: self.limits.max_accounts_per_partition,
                max_features: self.limits.max_features,
                max_open_tickets_per_account: self.limits.max_open_tickets_per_account,
                max_events_per_ticket: self.limits.max_events_per_ticket,
            },
            resolution: self.history.resolution.micros(),
        }
    }

    /// The settings that differ between `self` and `new` and that a reload
    /// (SIGHUP) does not take, as dotted keys (`kafka.brokers`): they need a
    /// restart. A reload takes `[[alerts.rules]]`, `[[targets]]` and
    /// `[delivery]` but for `delivery.concurrency`.
    pub fn restart_needed(&self, new: &Config) -> Vec<String> {
        fn reloadable(v: &mut serde_json::Value) {
            if let Some(o) = v.as_object_mut() {
                o.remove("targets");
                if let Some(alerts) = o.get_mut("alerts").and_then(serde_json::Value::as_object_mut) {
                    alerts.remove("rules");
                }
                if let Some(delivery) = o.get_mut("delivery").and_then(serde_json::Value::as_object_mut) {
                    delivery.retain(|k, _| k == "concurrency");
                }
            }
        }
        let as_value = |c: &Config| {
            let mut v = serde_json::to_value(c).unwrap_or_default();
            reloadable(&mut v);
            v
        };
        let (old, new) = (as_value(self), as_value(new));
        let empty = serde_json::Map::new();
        let (old, new) = (old.as_object().unwrap_or(&empty), new.as_object().unwrap_or(&empty));
        let mut changed = Vec::new();
        let mut sections: Vec<&String> = old.keys().chain(new.keys()).collect();
        sections.sort();
        sections.dedup();
        for section in sections {
            let (a, b) = (old.get(section), new.get(section));
            if a == b {
                continue;
            }
            match (a.and_then(|v| v.as_object()), b.and_then(|v| v.as_object())) {
                (Some(a), Some(b)) => {
                    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
                    keys.sort();
                    keys.dedup();
                    changed
                        .extend(keys.into_iter().filter(|k| a.get(*k) != b.get(*k)).map(|k| format!("{section}.{k}")));
                }
                _ => changed.push(section.clone()),
            }
        }
        changed
    }

    /// The alert rules: the configured ones, or the defaults of §5.1.
    pub fn rules(&self) -> Result<crate::alert::Rules, crate::alert::rules::RuleError> {
        let t = &self.kafka.topics;
        let names = [t.accounts.clone(), t.usage.clone(), t.tickets.clone(), t.revenue.clone()];
        match &self.alerts.rules {
            Some(rules) => crate::alert::Rules::parse(rules, &names),
            None => crate::alert::Rules::parse(&crate::alert::rules::default_rules(), &names),
        }
    }

    /// The effective configuration as TOML, every secret masked ([`secrets`]).
    pub fn to_toml_masked(&self) -> String {
        match toml::to_string_pretty(self) {
            Ok(text) => secrets::mask_toml(&text),
            Err(e) => format!("# cannot render: {e}"),
        }
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    const SECRET: &str = "[auth]\njwt_secret = \"0123456789abcdef\"\n";

    #[test]
    fn defaults_match_the_spec() {
        let c = Config::from_toml(SECRET).unwrap();
        assert_eq!(c.kafka.topics.usage, "cs.usage");
        assert_eq!(c.kafka.max_message_bytes, 1_048_576);
        assert_eq!(c.state_config(), StateConfig { ..StateConfig::default() });
        assert_eq!(c.cadence.health.0.as_secs(), 300);
        assert_eq!(c.push.history, 1000);
    }

    #[test]
    fn env_overrides_use_one_double_underscore_per_level() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("CSPULSE__KAFKA__TOPICS__USAGE", "prod.usage");
            jail.set_env("CSPULSE__KAFKA__BROKERS", "10.0.0.1:9092");
            jail.set_env("CSPULSE__AUTH__JWT_SECRET", "1234567890123456789");
            jail.set_env("CSPULSE__CADENCE__TICKETS", "250ms");
            jail.create_file("c.toml", "[push]\nhistory = 5\n")?;
            let c = Config::load(Some(Path::new("c.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(c.kafka.topics.usage, "prod.usage");
            assert_eq!(c.kafka.brokers, "10.0.0.1:9092");
            assert_eq!(c.auth.jwt_secret, "1234567890123456789");
            assert_eq!(c.cadence.tickets.0.as_millis(), 250);
            assert_eq!(c.push.history, 5);
            Ok(())
        });
    }

    /// Every key of `default.toml`, dotted.
    fn default_keys() -> Vec<String> {
        fn walk(prefix: &str, table: &toml::Table, out: &mut Vec<String>) {
            for (k, v) in table {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                match v {
                    toml::Value::Table(t) if k != "properties" => walk(&key, t, out),
                    _ => out.push(key),
                }
            }
        }
        let mut out = Vec::new();
        walk("", &DEFAULT_TOML.parse::<toml::Table>().unwrap(), &mut out);
        out
    }

    /// A reload takes rules, targets and delivery (but its concurrency);
    /// every other change is named as needing a restart.
    #[test]
    fn restart_needed_names_the_changed_settings_a_reload_does_not_take() {
        let old = Config::from_toml(SECRET).unwrap();
        let rule = "[[alerts.rules]]\nname = \"red\"\nscope = \"account\"\nseverity = \"critical\"\nwhen = [{ metric = \"health.tier\", op = \"==\", value = \"red\" }]\n";
        let target = "[[targets]]\nname = \"nrr\"\nmetric = \"revenue.nrr_qtd\"\nscope = \"portfolio\"\nperiod = \"quarter\"\nop = \">=\"\nvalue = 1.05\n";
        let people = "[delivery]\ngive_up_after = \"1h\"\n[[delivery.destinations]]\nname = \"mail\"\nkind = \"email\"\nsmtp_url = \"smtp://127.0.0.1:25\"\nfrom = \"a@x.test\"\n[[delivery.people]]\nid = \"ana\"\nemail = \"ana@x.test\"\nrole = \"manager\"\n";
        let reloadable = Config::from_toml(&format!("{SECRET}{rule}{target}{people}")).unwrap();
        assert_eq!(old.restart_needed(&reloadable), Vec::<String>::new());
        let other = Config::from_toml(&format!(
            "{SECRET}[kafka]\nbrokers = \"elsewhere:9092\"\n[push]\nqueue = 7\n[delivery]\nconcurrency = 3\n"
        ))
        .unwrap();
        assert_eq!(old.restart_needed(&other), ["delivery.concurrency", "kafka.brokers", "push.queue"]);
    }

    #[test]
    fn readme_documents_every_key_and_its_environment_name() {
        let readme = include_str!("../../README.md");
        for key in default_keys() {
            assert!(readme.contains(&format!("| `{key}` |")), "README config table lacks {key}");
            if key != "kafka.properties" {
                let env = format!("{ENV_PREFIX}{}", key.replace('.', "__").to_uppercase());
                assert!(readme.contains(&format!("`{env}`")), "README lacks {env}");
            }
        }
    }

    #[test]
    fn errors_name_the_key() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("CSPULSE__AUTH__JWT_SECRET", "0123456789abcdef");
            jail.set_env("CSPULSE__KAFKA__MAX_MESSAGE_BYTES", "lots");
            let e = Config::load(None).unwrap_err().to_string();
            assert!(e.to_lowercase().contains("kafka.max_message_bytes"), "{e}");
            Ok(())
        });
        let e = Config::from_toml(&format!("{SECRET}[cadence]\nhealth = \"soon\"\n")).unwrap_err().to_string();
        assert!(e.contains("cadence.health") && e.contains("soon"), "{e}");
        let e = Config::from_toml(&format!("{SECRET}[kafka]\nbrokerz = \"x\"\n")).unwrap_err().to_string();
        assert!(e.contains("brokerz"), "{e}");
        let e = Config::from_toml("").unwrap_err().to_string();
        assert!(e.contains("auth.jwt_secret"), "{e}");
        let e = Config::from_toml(&format!("{SECRET}[health]\nyellow = 80.0\n")).unwrap_err().to_string();
        assert!(e.contains("health.yellow"), "{e}");
        let e = Config::from_toml(&format!("{SECRET}[health]\ngreen = 1e-40\nyellow = 0.0\n")).unwrap_err().to_string();
        assert!(e.contains("health.green") && e.contains("decimal places"), "{e}");
        // Thresholds and weights are the decimals written (0.15, not 0.1499…).
        let c = Config::from_toml(&format!("{SECRET}[health]\nyellow = 40.5\n")).unwrap().state_config();
        assert_eq!(c.yellow.ratio(), crate::exact::Ratio::new(81, 2));
        assert_eq!(c.weights.decimals[0].ratio(), crate::exact::Ratio::new(7, 20));
        let rule = "[[alerts.rules]]\nname = \"drop\"\nscope = \"account\"\nseverity = \"warning\"\nwhen = [{ metric = \"usage.dropratio\", op = \">\", value = 1 }]\n";
        let e = Config::from_toml(&format!("{SECRET}{rule}")).unwrap_err().to_string();
        assert!(e.contains("alerts.rules[0] (drop): when[0].metric"), "{e}");
        let target = "[[targets]]\nname = \"nrr\"\nmetric = \"revenue.nrr_qtd\"\nscope = \"portfolio\"\nperiod = \"quarter\"\nop = \">=\"\nvalue = 1.05\n";
        let c = Config::from_toml(&format!("{SECRET}{target}")).unwrap();
        assert_eq!(c.targets.len(), 1);
        let e = Config::from_toml(&format!("{SECRET}{target}{}", target.replace("portfolio", "team:x")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("targets") && e.contains("target 2") && e.contains("team:x"), "{e}");
        let e = Config::from_toml(&format!("{SECRET}{}", target.replace("quarter", "week"))).unwrap_err().to_string();
        assert!(e.contains("targets") && e.contains("week"), "{e}");
        let e = Config::from_toml(&format!("{SECRET}[history.retention]\nfine = \"10m\"\n")).unwrap_err().to_string();
        assert!(e.contains("history.retention.fine"), "{e}");
        let none = Config::from_toml(&format!("{SECRET}[alerts]\nrules = []\n")).unwrap();
        assert!(none.rules().unwrap().conditions.is_empty(), "an explicit empty list means no rules");
        assert_eq!(Config::from_toml(SECRET).unwrap().rules().unwrap().conditions.len(), 7, "defaults");
    }
}
