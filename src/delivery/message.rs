//! What a message says (SPEC §16): the account, what changed, the values, a
//! link to the account's book in the dashboard, and for email an unsubscribe
//! link; rendered from the ledger row's payload when it is sent.

use serde_json::{Value, json};

/// A ledger payload: the route it came by and its alerts (§5.3 messages).
pub struct Content<'a> {
    pub id: &'a str,
    /// `alert` (one, or a group) or `digest`.
    pub kind: &'a str,
    pub alerts: &'a [Value],
    /// The dashboard's address (no trailing slash).
    pub base_url: &'a str,
    /// The recipient's role, for the link's view (`None`: a system).
    pub role: Option<crate::auth::Role>,
    /// The unsubscribe address (emails to people).
    pub unsubscribe: Option<String>,
}

fn text(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

/// `k = v, …` of an alert's values.
fn values(a: &Value) -> String {
    a.get("values")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k} = {}", v.as_str().map_or_else(|| v.to_string(), str::to_owned)))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

/// One line's headline: "Acme Corp is red …" or "Resolved: …".
fn headline(a: &Value) -> String {
    let message = text(a, "message");
    match text(a, "state").as_str() {
        "resolved" => format!("Resolved: {message}"),
        "updated" => format!("Updated: {message}"),
        _ => message,
    }
}

impl Content<'_> {
    /// The dashboard page for an alert: the book that holds its account.
    pub fn link(&self, a: &Value) -> String {
        use crate::auth::Role;
        let csm = a.get("csm_id").and_then(Value::as_str).or_else(|| {
            (a.get("scope").and_then(Value::as_str) == Some("csm"))
                .then(|| a.get("scope_id").and_then(Value::as_str))
                .flatten()
        });
        let view = match (self.role, csm) {
            (Some(Role::Csm), _) => "#csm".to_owned(),
            (Some(Role::Executive), None) => "#executive".to_owned(),
            (_, Some(csm)) => format!("#manager/{}", urlencode(csm)),
            (_, None) => "#manager".to_owned(),
        };
        format!("{}/{view}", self.base_url)
    }

    pub fn subject(&self) -> String {
        match (self.kind, self.alerts) {
            ("digest", alerts) => format!("[cspulse] Daily digest: {} alert{}", alerts.len(), plural(alerts.len())),
            (_, [one]) => {
                let severity = text(one, "severity");
                format!("[cspulse {severity}] {}", headline(one))
            }
            (_, alerts) => format!(
                "[cspulse] {} alerts: {} and {} more",
                alerts.len(),
                alerts.first().map(headline).unwrap_or_default(),
                alerts.len().saturating_sub(1)
            ),
        }
    }

    /// The plain-text body.
    pub fn plain(&self) -> String {
        let mut out = String::new();
        for a in self.alerts {
            let account =
                match (a.get("account_name").and_then(Value::as_str), a.get("account_id").and_then(Value::as_str)) {
                    (Some(name), Some(id)) => format!("{name} ({id})"),
                    _ => format!("{} {}", text(a, "scope"), text(a, "scope_id")),
                };
            out.push_str(&format!(
                "{}\n  {account}: rule {}, {} {}, at {}\n  Values: {}\n  Open: {}\n\n",
                headline(a),
                text(a, "rule"),
                text(a, "severity"),
                text(a, "state"),
                text(a, "ts"),
                values(a),
                self.link(a)
            ));
        }
        out.push_str(&format!("Message {}\n", self.id));
        if let Some(u) = &self.unsubscribe {
            out.push_str(&format!("Stop these messages: {u}\n"));
        }
        out
    }

    /// The HTML body.
    pub fn html(&self) -> String {
        let mut rows = String::new();
        for a in self.alerts {
            let account = a
                .get("account_name")
                .and_then(Value::as_str)
                .map_or_else(|| format!("{} {}", text(a, "scope"), text(a, "scope_id")), str::to_owned);
            rows.push_str(&format!(
                "<tr><td><strong>{}</strong><br>{} · {} {} · {}</td><td>{}</td><td><a href=\"{}\">Open</a></td></tr>",
                escape(&headline(a)),
                escape(&account),
                escape(&text(a, "severity")),
                escape(&text(a, "state")),
                escape(&text(a, "ts")),
                escape(&values(a)),
                escape(&self.link(a))
            ));
        }
        let unsubscribe = self
            .unsubscribe
            .as_ref()
            .map(|u| format!("<p style=\"color:#666\"><a href=\"{}\">Stop these messages</a></p>", escape(u)))
            .unwrap_or_default();
        format!(
            "<!doctype html><html><body><h2>{}</h2><table cellpadding=\"6\">{rows}</table>\
             <p style=\"color:#666\">Message {}</p>{unsubscribe}</body></html>",
            escape(&self.subject()),
            escape(self.id)
        )
    }

    /// A Slack incoming-webhook message (Block Kit), at most 20 alerts shown.
    pub fn slack(&self) -> Value {
        let mut blocks =
            vec![json!({"type": "header", "text": {"type": "plain_text", "text": truncate(&self.subject(), 150)}})];
        for a in self.alerts.iter().take(20) {
            let account =
                a.get("account_name").and_then(Value::as_str).map_or_else(|| text(a, "scope_id"), str::to_owned);
            blocks.push(json!({
                "type": "section",
                "text": {"type": "mrkdwn", "text": truncate(&format!("*{}*\n{}", slack_escape(&headline(a)), slack_escape(&values(a))), 3000)},
                "fields": [
                    {"type": "mrkdwn", "text": format!("*Account*\n{}", slack_escape(&account))},
                    {"type": "mrkdwn", "text": format!("*Rule*\n{} ({})", slack_escape(&text(a, "rule")), text(a, "severity"))},
                ],
                "accessory": {"type": "button", "text": {"type": "plain_text", "text": "Open"}, "url": self.link(a)},
            }));
        }
        if self.alerts.len() > 20 {
            blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": format!("and {} more", self.alerts.len() - 20)}]}));
        }
        blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": format!("cspulse message {}", self.id)}]}));
        json!({"text": self.subject(), "blocks": blocks})
    }

    /// A webhook's body: `{type, timestamp, data}` (Standard Webhooks' form).
    pub fn webhook(&self, timestamp: &str) -> Value {
        let kind = match (self.kind, self.alerts) {
            ("digest", _) => "digest".to_owned(),
            (_, [one]) => format!("alert.{}", text(one, "state")),
            _ => "alert.group".to_owned(),
        };
        json!({"type": kind, "timestamp": timestamp, "data": {"id": self.id, "alerts": self.alerts}})
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max { s.to_owned() } else { s.chars().take(max - 1).chain(['…']).collect() }
}

pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

pub fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
