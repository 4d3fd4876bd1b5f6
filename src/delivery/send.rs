//! The transports (SPEC §16): SMTP through `lettre`, Slack incoming webhooks
//! and Standard Webhooks through `reqwest`. One attempt each; the caller
//! records the outcome and decides on retries.

use std::collections::HashMap;
use std::sync::Mutex;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use sha2::Sha256;

use super::message::Content;
use super::routing::{Channel, Destination};

/// Why an attempt failed (kept in the ledger's `last_error`).
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("{0}")]
    Build(String),
    #[error("smtp: {0}")]
    Smtp(#[from] lettre::transport::smtp::Error),
    #[error("http: {0}")]
    Http(#[from] reqwest::Error),
    #[error("the receiver answered {status}: {body}")]
    Refused { status: u16, body: String },
}

/// The Standard Webhooks signature of `body`: `v1,<base64 HMAC-SHA256 of
/// "id.timestamp.body">`.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()))
}

/// The transports, built once per destination (SMTP connections are pooled).
pub struct Senders {
    http: reqwest::Client,
    smtp: Mutex<HashMap<String, AsyncSmtpTransport<Tokio1Executor>>>,
}

impl Default for Senders {
    fn default() -> Self {
        Senders::new()
    }
}

impl Senders {
    pub fn new() -> Senders {
        let http = reqwest::Client::builder()
            .user_agent(concat!("cspulse/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("an HTTP client with the default TLS roots");
        Senders { http, smtp: Mutex::default() }
    }

    /// Forgets the SMTP transports (after a reload changed destinations).
    pub fn reset(&self) {
        self.smtp.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    fn smtp(&self, d: &Destination) -> Result<AsyncSmtpTransport<Tokio1Executor>, SendError> {
        let Channel::Email { smtp_url, starttls, credentials, .. } = &d.channel else {
            return Err(SendError::Build(format!("{} is not an email destination", d.name)));
        };
        let mut cache = self.smtp.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = cache.get(&d.name) {
            return Ok(t.clone());
        }
        let url = reqwest::Url::parse(smtp_url).map_err(|e| SendError::Build(format!("smtp_url {smtp_url:?}: {e}")))?;
        let host = url.host_str().unwrap_or("localhost").to_owned();
        let tls = url.scheme() == "smtps";
        let builder = if tls {
            AsyncSmtpTransport::<Tokio1Executor>::relay(&host)?
        } else if *starttls {
            AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&host)?
        } else {
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&host)
        };
        let mut builder = builder.port(url.port().unwrap_or(if tls { 465 } else { 25 })).timeout(Some(d.timeout));
        if let Some((user, password)) = credentials {
            builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
        }
        let transport = builder.build();
        cache.insert(d.name.clone(), transport.clone());
        Ok(transport)
    }

    /// Sends an email to `to` (a person's address, or the destination's list).
    pub async fn email(&self, d: &Destination, to: &[Mailbox], c: &Content<'_>) -> Result<(), SendError> {
        let Channel::Email { from, .. } = &d.channel else {
            return Err(SendError::Build(format!("{} is not an email destination", d.name)));
        };
        if to.is_empty() {
            return Err(SendError::Build(format!("no address to send to through {}", d.name)));
        }
        let mut b =
            Message::builder().from(from.clone()).subject(c.subject()).message_id(Some(format!("<{}@cspulse>", c.id)));
        for m in to {
            b = b.to(m.clone());
        }
        if let Some(u) = &c.unsubscribe {
            b = b
                .raw_header(HeaderValue::new(HeaderName::new_from_ascii_str("List-Unsubscribe"), format!("<{u}>")))
                .raw_header(HeaderValue::new(
                    HeaderName::new_from_ascii_str("List-Unsubscribe-Post"),
                    "List-Unsubscribe=One-Click".to_owned(),
                ));
        }
        let message = b
            .multipart(MultiPart::alternative_plain_html(c.plain(), c.html()))
            .map_err(|e| SendError::Build(format!("building the email: {e}")))?;
        self.smtp(d)?.send(message).await?;
        Ok(())
    }

    /// Posts a Slack message to the destination's incoming webhook.
    pub async fn slack(&self, d: &Destination, c: &Content<'_>) -> Result<(), SendError> {
        let Channel::Slack { url } = &d.channel else {
            return Err(SendError::Build(format!("{} is not a slack destination", d.name)));
        };
        let response = self.http.post(url).timeout(d.timeout).json(&c.slack()).send().await?;
        answered(response).await
    }

    /// Posts a signed webhook (`webhook-id` is the message's id).
    pub async fn webhook(&self, d: &Destination, c: &Content<'_>, now_secs: i64) -> Result<(), SendError> {
        let Channel::Webhook { url, key } = &d.channel else {
            return Err(SendError::Build(format!("{} is not a webhook destination", d.name)));
        };
        let timestamp = crate::time::format_rfc3339(now_secs * crate::time::MICROS_PER_SEC);
        let body = serde_json::to_vec(&c.webhook(&timestamp)).unwrap_or_default();
        let response = self
            .http
            .post(url)
            .timeout(d.timeout)
            .header("content-type", "application/json")
            .header("webhook-id", c.id)
            .header("webhook-timestamp", now_secs.to_string())
            .header("webhook-signature", sign(key, c.id, now_secs, &body))
            .body(body)
            .send()
            .await?;
        answered(response).await
    }
}

/// A 2xx answer is a delivery; anything else is an error with the start of
/// the receiver's body.
async fn answered(response: reqwest::Response) -> Result<(), SendError> {
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let body = response.text().await.unwrap_or_default();
    Err(SendError::Refused { status: status.as_u16(), body: body.chars().take(200).collect() })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification's reference
    /// libraries (secret, id, timestamp, payload and signature as published).
    #[test]
    fn signature_matches_the_standard_webhooks_example() {
        let key = base64::engine::general_purpose::STANDARD.decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            sign(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }
}
