//! `[delivery]` checked and resolved (SPEC §16): destinations with their
//! secrets, people with their zones and quiet hours, alert routes with
//! their targets. Every problem names the key and the entry.

use std::collections::HashMap;

use base64::Engine as _;
use jiff::civil::Time;
use jiff::tz::TimeZone;
use lettre::message::Mailbox;

use crate::auth::Role;
use crate::config::delivery::{AlertRouteConfig, DeliveryConfig, DestinationConfig, PersonConfig};
use crate::time::Ts;

/// A problem with `[delivery]`: the key, and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct RoutingError {
    pub key: String,
    pub problem: String,
}

fn bad<T>(key: impl Into<String>, problem: impl Into<String>) -> Result<T, RoutingError> {
    Err(RoutingError { key: key.into(), problem: problem.into() })
}

#[derive(Clone, Debug)]
pub enum Channel {
    Email {
        smtp_url: String,
        starttls: bool,
        from: Mailbox,
        to: Vec<Mailbox>,
        credentials: Option<(String, String)>,
        /// `ca_file`'s certificates, PEM (checked when parsed).
        ca_pem: Option<Vec<u8>>,
    },
    Slack {
        url: String,
    },
    Webhook {
        url: String,
        key: Vec<u8>,
    },
}

impl Channel {
    pub fn kind(&self) -> &'static str {
        match self {
            Channel::Email { .. } => "email",
            Channel::Slack { .. } => "slack",
            Channel::Webhook { .. } => "webhook",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Destination {
    pub name: String,
    pub channel: Channel,
    pub timeout: std::time::Duration,
}

/// Quiet hours: from, to (wrapping midnight when to <= from).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quiet {
    pub from: Time,
    pub to: Time,
}

#[derive(Clone, Debug)]
pub struct Person {
    pub id: String,
    pub email: Option<Mailbox>,
    /// Index of the slack destination that reaches this person.
    pub slack: Option<usize>,
    pub zone: TimeZone,
    pub zone_name: String,
    pub role: Role,
    pub csm_id: Option<String>,
    pub quiet: Option<Quiet>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Owner,
    Managers,
    Executives,
    Destination(usize),
}

#[derive(Clone, Debug)]
pub struct Route {
    pub name: String,
    pub severity: Option<Vec<String>>,
    pub rule: Option<Vec<String>>,
    pub scope: Option<Vec<String>>,
    pub to: Vec<Target>,
    pub states: Vec<String>,
    /// Microseconds; 0: each alert is its own message.
    pub group_window: i64,
    /// `daily HH:MM` in each recipient's zone.
    pub digest: Option<Time>,
}

impl Route {
    pub fn matches(&self, severity: &str, rule: &str, scope: &str, state: &str) -> bool {
        let ok = |list: &Option<Vec<String>>, v: &str| list.as_ref().is_none_or(|l| l.iter().any(|x| x == v));
        ok(&self.severity, severity)
            && ok(&self.rule, rule)
            && ok(&self.scope, scope)
            && self.states.iter().any(|s| s == state)
    }
}

/// `[delivery]`, resolved.
#[derive(Clone, Debug, Default)]
pub struct Routing {
    pub give_up_after: Ts,
    pub base_url: String,
    pub concurrency: usize,
    pub destinations: Vec<Destination>,
    pub people: Vec<Person>,
    pub routes: Vec<Route>,
    by_name: HashMap<String, usize>,
    by_person: HashMap<String, usize>,
}

const STATES: [&str; 4] = ["firing", "fired", "resolved", "updated"];
const SCOPES: [&str; 4] = ["account", "csm", "segment", "portfolio"];

impl Routing {
    /// Checks `c`; `var` reads the environment (`password_env`, `secret_env`);
    /// `listen` makes the default `base_url`.
    pub fn parse(
        c: &DeliveryConfig,
        listen: std::net::SocketAddr,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Routing, RoutingError> {
        if c.concurrency == 0 {
            return bad("delivery.concurrency", "must be > 0");
        }
        let base_url = if c.base_url.is_empty() {
            format!("http://{listen}")
        } else if c.base_url.starts_with("http://") || c.base_url.starts_with("https://") {
            c.base_url.trim_end_matches('/').to_owned()
        } else {
            return bad("delivery.base_url", format!("{:?} is not an http:// or https:// address", c.base_url));
        };
        let mut routing = Routing {
            give_up_after: c.give_up_after.micros(),
            base_url,
            concurrency: c.concurrency,
            ..Routing::default()
        };
        for (i, d) in c.destinations.iter().enumerate() {
            let key = format!("delivery.destinations[{i}] ({:?})", d.name);
            if d.name.is_empty() {
                return bad(format!("delivery.destinations[{i}]"), "name is empty");
            }
            if routing.by_name.insert(d.name.clone(), i).is_some() {
                return bad(key, "a destination of that name is listed before");
            }
            let channel = destination(d, &key, &var)?;
            let timeout = d.timeout.map(|t| t.0).unwrap_or(std::time::Duration::from_secs(10));
            routing.destinations.push(Destination { name: d.name.clone(), channel, timeout });
        }
        for (i, p) in c.people.iter().enumerate() {
            let key = format!("delivery.people[{i}] ({:?})", p.id);
            let person = person(p, &key, &routing)?;
            if routing.by_person.insert(p.id.clone(), i).is_some() {
                return bad(key, "a person with that id is listed before");
            }
            routing.people.push(person);
        }
        if routing.people.iter().any(|p| p.email.is_some()) && routing.email().is_none() {
            return bad("delivery.people", "people have email addresses but no destination has kind = \"email\"");
        }
        for (i, r) in c.alert_routes.iter().enumerate() {
            let route = route(r, i, &routing)?;
            if routing.routes.iter().any(|o| o.name == route.name) {
                return bad(
                    format!("delivery.alert_routes[{i}]"),
                    format!("route name {:?} is used before", route.name),
                );
            }
            routing.routes.push(route);
        }
        Ok(routing)
    }

    pub fn destination(&self, name: &str) -> Option<&Destination> {
        self.by_name.get(name).map(|&i| &self.destinations[i])
    }

    pub fn person(&self, id: &str) -> Option<&Person> {
        self.by_person.get(id).map(|&i| &self.people[i])
    }

    /// The destination people's emails go through (the first of kind email).
    pub fn email(&self) -> Option<&Destination> {
        self.destinations.iter().find(|d| matches!(d.channel, Channel::Email { .. }))
    }

    /// Whether anything can be sent.
    pub fn is_active(&self) -> bool {
        !self.routes.is_empty()
    }
}

/// The PEM text of a CA file holding at least one certificate.
fn ca_file(path: &str) -> Result<Vec<u8>, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let pem = std::fs::read(path).map_err(|e| e.to_string())?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not PEM certificates ({e})"))?;
    if certs.is_empty() {
        return Err("holds no certificate (-----BEGIN CERTIFICATE-----)".into());
    }
    Ok(pem)
}

fn destination(
    d: &DestinationConfig,
    key: &str,
    var: &impl Fn(&str) -> Option<String>,
) -> Result<Channel, RoutingError> {
    let unexpected = |names: &[(&str, bool)]| -> Result<(), RoutingError> {
        match names.iter().find(|(_, set)| *set) {
            Some((name, _)) => bad(key, format!("{name} does not apply to kind = {:?}", d.kind)),
            None => Ok(()),
        }
    };
    let env = |name: &str, what: &str| -> Result<String, RoutingError> {
        var(name)
            .filter(|v| !v.is_empty())
            .map_or_else(|| bad(key, format!("{what}: environment variable {name} is not set")), Ok)
    };
    match d.kind.as_str() {
        "email" => {
            unexpected(&[
                ("url", d.url.is_some()),
                ("secret", d.secret.is_some()),
                ("secret_env", d.secret_env.is_some()),
            ])?;
            let Some(smtp_url) = d.smtp_url.clone() else {
                return bad(key, "smtp_url is required for kind = \"email\"");
            };
            if !(smtp_url.starts_with("smtp://") || smtp_url.starts_with("smtps://")) {
                return bad(key, format!("smtp_url {smtp_url:?} must start with smtp:// or smtps://"));
            }
            if d.starttls && smtp_url.starts_with("smtps://") {
                return bad(key, "starttls applies to smtp:// (smtps:// is TLS from the start)");
            }
            let Some(from) = d.from.as_deref() else { return bad(key, "from is required for kind = \"email\"") };
            let from: Mailbox = from.parse().or_else(|e| bad(key, format!("from {from:?} is not an address ({e})")))?;
            let to =
                d.to.iter()
                    .map(|t| t.parse::<Mailbox>().or_else(|e| bad(key, format!("to {t:?} is not an address ({e})"))))
                    .collect::<Result<Vec<_>, _>>()?;
            let credentials = match (&d.username, &d.password_env) {
                (Some(u), Some(p)) => Some((u.clone(), env(p, "password_env")?)),
                (None, None) => None,
                _ => return bad(key, "username and password_env go together"),
            };
            let ca_pem = match &d.ca_file {
                None => None,
                Some(_) if !(d.starttls || smtp_url.starts_with("smtps://")) => {
                    return bad(key, "ca_file applies to TLS: smtps://, or smtp:// with starttls = true");
                }
                Some(path) => Some(ca_file(path).or_else(|problem| bad(key, format!("ca_file {path:?}: {problem}")))?),
            };
            Ok(Channel::Email { smtp_url, starttls: d.starttls, from, to, credentials, ca_pem })
        }
        "slack" | "webhook" => {
            unexpected(&[
                ("smtp_url", d.smtp_url.is_some()),
                ("from", d.from.is_some()),
                ("to", !d.to.is_empty()),
                ("username", d.username.is_some()),
                ("password_env", d.password_env.is_some()),
                ("ca_file", d.ca_file.is_some()),
                ("starttls", d.starttls),
            ])?;
            let Some(url) = d.url.clone() else { return bad(key, format!("url is required for kind = {:?}", d.kind)) };
            if reqwest::Url::parse(&url).map_or(true, |u| !matches!(u.scheme(), "http" | "https")) {
                return bad(key, format!("url {url:?} is not an http:// or https:// address"));
            }
            if d.kind == "slack" {
                unexpected(&[("secret", d.secret.is_some()), ("secret_env", d.secret_env.is_some())])?;
                return Ok(Channel::Slack { url });
            }
            let secret = match (&d.secret, &d.secret_env) {
                (Some(s), None) => s.clone(),
                (None, Some(name)) => env(name, "secret_env")?,
                (Some(_), Some(_)) => return bad(key, "secret and secret_env are both set; give the secret one way"),
                (None, None) => return bad(key, "a webhook needs secret (whsec_…) or secret_env"),
            };
            let key_bytes = secret
                .strip_prefix("whsec_")
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                .filter(|k| !k.is_empty());
            let Some(key_bytes) = key_bytes else {
                return bad(key, "the secret must be whsec_ followed by base64 (Standard Webhooks)");
            };
            Ok(Channel::Webhook { url, key: key_bytes })
        }
        other => bad(key, format!("kind {other:?}: one of email, slack, webhook")),
    }
}

/// `HH:MM`.
pub fn parse_time(s: &str) -> Option<Time> {
    let (h, m) = s.trim().split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    Time::new(h.parse().ok()?, m.parse().ok()?, 0, 0).ok()
}

fn person(p: &PersonConfig, key: &str, routing: &Routing) -> Result<Person, RoutingError> {
    if p.id.is_empty() {
        return bad(key, "id is empty");
    }
    let role = match p.role.as_str() {
        "executive" => Role::Executive,
        "manager" => Role::Manager,
        "analyst" => Role::Analyst,
        "csm" => Role::Csm,
        other => return bad(key, format!("role {other:?}: one of executive, manager, analyst, csm")),
    };
    if (role == Role::Csm) != p.csm_id.is_some() {
        return bad(key, "a csm has a csm_id (its book), and only a csm");
    }
    let zone = TimeZone::get(&p.time_zone)
        .or_else(|e| bad(key, format!("time_zone {:?} is not an IANA zone ({e})", p.time_zone)))?;
    let email = p
        .email
        .as_deref()
        .map(|e| e.parse::<Mailbox>().or_else(|err| bad(key, format!("email {e:?} is not an address ({err})"))))
        .transpose()?;
    let slack = match &p.slack {
        None => None,
        Some(name) => match routing.by_name.get(name) {
            Some(&i) if matches!(routing.destinations[i].channel, Channel::Slack { .. }) => Some(i),
            Some(_) => return bad(key, format!("slack {name:?} is not a destination of kind = \"slack\"")),
            None => return bad(key, format!("slack {name:?} is not a destination")),
        },
    };
    if email.is_none() && slack.is_none() {
        return bad(key, "a person needs an email or a slack destination");
    }
    let quiet = match &p.quiet_hours {
        None => None,
        Some(q) => {
            let parsed = q.split_once('-').and_then(|(a, b)| Some(Quiet { from: parse_time(a)?, to: parse_time(b)? }));
            match parsed {
                Some(quiet) if quiet.from != quiet.to => Some(quiet),
                _ => return bad(key, format!("quiet_hours {q:?}: HH:MM-HH:MM, two different times")),
            }
        }
    };
    Ok(Person {
        id: p.id.clone(),
        email,
        slack,
        zone,
        zone_name: p.time_zone.clone(),
        role,
        csm_id: p.csm_id.clone(),
        quiet,
    })
}

fn route(r: &AlertRouteConfig, i: usize, routing: &Routing) -> Result<Route, RoutingError> {
    let name = r.name.clone().unwrap_or_else(|| format!("route-{}", i + 1));
    let key = format!("delivery.alert_routes[{i}] ({name:?})");
    let check =
        |what: &str, list: Option<Vec<String>>, allowed: &[&str]| -> Result<Option<Vec<String>>, RoutingError> {
            if let Some(v) = list.iter().flatten().find(|v| !allowed.is_empty() && !allowed.contains(&v.as_str())) {
                return bad(&key, format!("{what} {v:?}: one of {}", allowed.join(", ")));
            }
            Ok(list)
        };
    let m = &r.matches;
    let severity = check("match.severity", m.severity.as_ref().map(|s| s.values()), &["critical", "warning"])?;
    let rule = check("match.rule", m.rule.as_ref().map(|s| s.values()), &[])?;
    let scope = check("match.scope", m.scope.as_ref().map(|s| s.values()), &SCOPES)?;
    let states =
        check("states", Some(r.states.clone().unwrap_or_else(|| STATES.map(str::to_owned).to_vec())), &STATES)?
            .unwrap_or_default();
    if r.to.is_empty() {
        return bad(&key, "to is empty: name owner, managers, executives or destinations");
    }
    let to =
        r.to.iter()
            .map(|t| match t.as_str() {
                "owner" => Ok(Target::Owner),
                "managers" => Ok(Target::Managers),
                "executives" => Ok(Target::Executives),
                name => routing.by_name.get(name).map(|&d| Target::Destination(d)).map_or_else(
                    || bad(&key, format!("to {name:?}: not owner, managers, executives or a destination")),
                    Ok,
                ),
            })
            .collect::<Result<Vec<_>, _>>()?;
    let digest = match &r.digest {
        None => None,
        Some(d) => match d.strip_prefix("daily ").and_then(parse_time) {
            Some(t) => Some(t),
            None => return bad(&key, format!("digest {d:?}: \"daily HH:MM\"")),
        },
    };
    let group_window = r.group_window.map(|g| g.micros()).unwrap_or(0);
    if digest.is_some() && group_window > 0 {
        return bad(&key, "group_window and digest exclude each other (a digest already groups a day)");
    }
    Ok(Route { name, severity, rule, scope, to, states, group_window, digest })
}
