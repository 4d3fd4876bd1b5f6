//! `[delivery]` (SPEC §16) as written in the file. `crate::delivery::Routing`
//! checks it and resolves what it names (zones, secrets, people).

use serde::{Deserialize, Serialize};

use crate::time::Span;

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// A message still failing this long after it was planned is given up.
    pub give_up_after: Span,
    /// The dashboard's address as people reach it, for the links in
    /// messages (the account, unsubscribe); empty: `http://` + `http.listen`.
    pub base_url: String,
    /// Messages sent at once at most (each waits for its server's answer).
    pub concurrency: usize,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub destinations: Vec<DestinationConfig>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub people: Vec<PersonConfig>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub alert_routes: Vec<AlertRouteConfig>,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            give_up_after: Span(std::time::Duration::from_secs(24 * 3600)),
            base_url: String::new(),
            concurrency: 16,
            destinations: Vec::new(),
            people: Vec::new(),
            alert_routes: Vec::new(),
        }
    }
}

/// `[[delivery.destinations]]`: where messages go.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationConfig {
    pub name: String,
    /// `email`, `slack` or `webhook`.
    pub kind: String,
    /// email: `smtp://host:port` or `smtps://host:port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp_url: Option<String>,
    /// email over `smtp://`: upgrade with STARTTLS (required when true).
    #[serde(default)]
    pub starttls: bool,
    /// email: the sender, `Name <address>` or an address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// email named directly in a route: its addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// email: the environment variable holding the SMTP password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// email over TLS (`smtps://`, or STARTTLS): a PEM file of CA
    /// certificates trusted besides the webpki roots (an internal relay).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// slack: the incoming webhook; webhook: the receiver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// webhook: `whsec_<base64>` (Standard Webhooks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// webhook: the environment variable holding the secret instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_env: Option<String>,
    /// How long one attempt may take (connect, send, answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Span>,
}

/// `[[delivery.people]]`: who receives messages, and when.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PersonConfig {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The name of a `slack` destination that reaches this person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack: Option<String>,
    /// IANA zone of the quiet hours and digests.
    #[serde(default = "utc")]
    pub time_zone: String,
    /// `executive`, `manager`, `analyst` or `csm`.
    pub role: String,
    /// A csm's book.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csm_id: Option<String>,
    /// `HH:MM-HH:MM` in `time_zone` (may wrap midnight): warnings wait.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiet_hours: Option<String>,
}

fn utc() -> String {
    "UTC".to_owned()
}

/// One value or a list of them.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn values(&self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

/// `match` of an alert route: each given key must hold (any of its values).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<OneOrMany>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<OneOrMany>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<OneOrMany>,
}

/// `[[delivery.alert_routes]]`.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRouteConfig {
    /// Names the route in unsubscribe links and the ledger (default
    /// `route-<n>`, by position).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, rename = "match")]
    pub matches: RouteMatch,
    /// `owner`, `managers`, `executives` or destination names.
    pub to: Vec<String>,
    /// The transitions sent (default all: firing, fired, resolved, updated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub states: Option<Vec<String>>,
    /// Alerts for one recipient within this go out as one message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_window: Option<Span>,
    /// `daily HH:MM`: one summary a day in each recipient's zone instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}
