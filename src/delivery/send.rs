//! The transports (SPEC §16): SMTP through `lettre`, Slack incoming webhooks
//! and Standard Webhooks through `reqwest`. One attempt each; the caller
//! records the outcome and decides on retries.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use lettre::Message;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, AsyncTokioStream, Certificate, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

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

/// Idle SMTP connections kept per destination at most.
const SMTP_IDLE_MAX: usize = 16;
/// An idle SMTP connection older than this is closed rather than reused.
const SMTP_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The HTTP client, and each email destination's idle SMTP connections.
///
/// SMTP sessions are opened here rather than by lettre's transport, to
/// turn Nagle's algorithm off: lettre 0.11.23 writes a message's body and
/// its final `.` in two writes, and with Nagle on the second waits for the
/// server's delayed ACK (40 ms on Linux) on every message (measured: 68 ms
/// per email to aiosmtpd on loopback; lettre PR #1159 fixes it upstream,
/// not yet released).
pub struct Senders {
    http: reqwest::Client,
    smtp: Mutex<HashMap<String, Vec<(AsyncSmtpConnection, Instant)>>>,
}

impl Default for Senders {
    fn default() -> Self {
        Senders::new()
    }
}

/// An implicit-TLS stream (`smtps://`), as lettre takes an opened stream.
#[derive(Debug)]
struct Tls(tokio_rustls::client::TlsStream<TcpStream>);

impl AsyncRead for Tls {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Tls {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

impl AsyncTokioStream for Tls {
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.0.get_ref().0.peer_addr()
    }
}

/// The TLS client of `smtps://` destinations: the webpki roots, as for
/// STARTTLS, and the certificates of `ca_pem`.
fn tls_connector(ca_pem: Option<&[u8]>) -> Result<tokio_rustls::TlsConnector, SendError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    for cert in ca_pem.map(CertificateDer::pem_slice_iter).into_iter().flatten() {
        let cert = cert.map_err(|e| SendError::Build(format!("ca_file: {e}")))?;
        roots.add(cert).map_err(|e| SendError::Build(format!("ca_file: {e}")))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| SendError::Build(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// Opens an SMTP session to `d` (TLS, STARTTLS and AUTH as configured).
async fn smtp_connect(d: &Destination) -> Result<AsyncSmtpConnection, SendError> {
    let Channel::Email { smtp_url, starttls, credentials, ca_pem, .. } = &d.channel else {
        return Err(SendError::Build(format!("{} is not an email destination", d.name)));
    };
    let url = reqwest::Url::parse(smtp_url).map_err(|e| SendError::Build(format!("smtp_url {smtp_url:?}: {e}")))?;
    let host = url.host_str().unwrap_or("localhost").to_owned();
    let tls = url.scheme() == "smtps";
    let port = url.port().unwrap_or(if tls { 465 } else { 25 });
    let io = |what: &str, e: std::io::Error| SendError::Build(format!("smtp: {what} {host}:{port}: {e}"));
    let tcp = TcpStream::connect((host.as_str(), port)).await.map_err(|e| io("connecting to", e))?;
    tcp.set_nodelay(true).map_err(|e| io("setting TCP_NODELAY on", e))?;
    let hello = ClientId::default();
    let mut conn = if tls {
        let name = rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|e| SendError::Build(format!("smtp_url {smtp_url:?}: {e}")))?;
        let stream = tls_connector(ca_pem.as_deref())?.connect(name, tcp).await.map_err(|e| io("TLS with", e))?;
        AsyncSmtpConnection::connect_with_transport(Box::new(Tls(stream)), &hello).await?
    } else {
        AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &hello).await?
    };
    if !tls && *starttls {
        let mut params = TlsParameters::builder(host.clone());
        if let Some(pem) = ca_pem {
            params = params.add_root_certificate(Certificate::from_pem(pem)?);
        }
        conn.starttls(params.build()?, &hello).await?;
    }
    if let Some((user, password)) = credentials {
        conn.auth(&[Mechanism::Plain, Mechanism::Login], &Credentials::new(user.clone(), password.clone())).await?;
    }
    Ok(conn)
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

    /// Forgets the idle SMTP connections (after a reload changed destinations).
    pub fn reset(&self) {
        self.smtp.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// An idle session of `d` that still answers, or a new one.
    async fn smtp_session(&self, d: &Destination) -> Result<AsyncSmtpConnection, SendError> {
        loop {
            let idle = self.smtp.lock().unwrap_or_else(|p| p.into_inner()).get_mut(&d.name).and_then(Vec::pop);
            let Some((mut conn, since)) = idle else { break };
            if since.elapsed() < SMTP_IDLE_TIMEOUT && !conn.has_broken() && conn.test_connected().await {
                return Ok(conn);
            }
            conn.abort().await;
        }
        smtp_connect(d).await
    }

    /// Keeps a session that sent its message for the next one.
    fn smtp_idle(&self, d: &Destination, conn: AsyncSmtpConnection) {
        let mut idle = self.smtp.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.entry(d.name.clone()).or_default();
        if list.len() < SMTP_IDLE_MAX {
            list.push((conn, Instant::now()));
        }
    }

    /// Sends an email to `to` (a person's address, or the destination's
    /// list); the whole session is bounded by the destination's `timeout`.
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
        let session = async {
            let mut conn = self.smtp_session(d).await?;
            match conn.send(message.envelope(), &message.formatted()).await {
                Ok(_) => {
                    self.smtp_idle(d, conn);
                    Ok(())
                }
                Err(e) => {
                    conn.abort().await;
                    Err(SendError::Smtp(e))
                }
            }
        };
        match tokio::time::timeout(d.timeout, session).await {
            Ok(result) => result,
            Err(_) => Err(SendError::Build(format!("smtp: no answer within {:?} (timeout)", d.timeout))),
        }
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
