//! Serving HTTP/1.1 connections with the limits of SPEC §18: at most
//! `http.max_connections` open connections, a request head within
//! `http.header_timeout`, keep-alive connections closed after
//! `http.idle_timeout` without traffic, and request bodies of at most
//! `http.max_body_bytes`.
//!
//! The connection limit is a semaphore permit moved into the socket wrapper,
//! so it follows the socket through a WebSocket upgrade and is returned when
//! the socket closes, whatever ends it (a panic included). A connection beyond
//! the cap is answered at once with a canned 503 and closed: it never waits in
//! the backlog holding nothing.
//!
//! hyper's own `header_read_timeout` re-arms the moment a response is written,
//! so it would close every idle keep-alive connection at the header timeout.
//! A small watchdog per connection keeps the two deadlines apart instead: the
//! socket wrapper notes when bytes move, the service notes when a request is
//! in flight. The watchdog ends with the HTTP connection: an upgraded
//! WebSocket has its own liveness rules (§6.5).

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::http::{Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::Limited;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use metrics::{counter, gauge};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use tracing::{debug, warn};

use super::ApiError;

/// The §18 HTTP limits (`[http]`).
#[derive(Clone, Debug)]
pub struct Limits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_body_bytes: usize,
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_body_bytes: 64 * 1024,
            max_connections: 10_000,
        }
    }
}

/// hyper's connection buffer, hence the largest request head (request line
/// and headers; larger gets 431). Tokens are well under 1 KiB; this also
/// bounds what a slow-header connection can make the server hold.
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Serves `router` on `listener` until `stop` turns true, then lets the open
/// HTTP connections finish their request (idle ones close at once) and
/// returns when they are gone.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) -> io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let limits = Arc::new(limits);
    // Each connection task holds a receiver; `closed()` waits for them all.
    let (open_tx, open_rx) = watch::channel(());
    loop {
        let socket = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => socket,
                Err(e) if is_per_connection(&e) => continue,
                Err(e) => {
                    // Out of file descriptors or similar: retrying at once would spin.
                    warn!(error = %e, "cannot accept connections; retrying in 100 ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stopped(&mut stop) => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            refuse(socket);
            continue;
        };
        let task = Connection { limits: limits.clone(), stop: stop.clone(), _open: open_rx.clone() };
        tokio::spawn(task.run(socket, permit, router.clone()));
    }
    drop(listener);
    drop(open_rx);
    open_tx.closed().await;
    Ok(())
}

/// Resolves once `stop` is true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Errors that concern one connection only (it was reset before we took it).
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    )
}

/// Beyond the cap: a best-effort 503 (written without waiting, as the socket
/// buffer is empty), then the socket is closed.
fn refuse(socket: TcpStream) {
    counter!("cspulse_http_connections_refused_total").increment(1);
    let body = r#"{"error":"unavailable","message":"too many connections"}"#;
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = socket.try_write(response.as_bytes());
}

/// What one connection's task needs besides its socket.
struct Connection {
    limits: Arc<Limits>,
    stop: watch::Receiver<bool>,
    /// Dropped when the task ends (`serve` waits for all of them).
    _open: watch::Receiver<()>,
}

/// Why a connection was closed by the watchdog (the metric's label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expiry {
    Header,
    Idle,
}

impl Connection {
    async fn run(mut self, socket: TcpStream, permit: OwnedSemaphorePermit, router: Router) {
        let activity = Arc::new(Activity::new());
        let io = TokioIo::new(Metered { socket, activity: activity.clone(), _slot: Slot::new(permit) });
        let app = TowerToHyperService::new(router);
        let max_body = self.limits.max_body_bytes;
        let watched = activity.clone();
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let busy = Busy::begin(watched.clone());
            let declared = req
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            // A declared body over the limit is refused before a byte of it
            // is read; any other body is cut at the limit as it is read.
            let call = declared
                .is_none_or(|n| n <= max_body as u64)
                .then(|| hyper::service::Service::call(&app, req.map(|body| Limited::new(body, max_body))));
            async move {
                let _busy = busy;
                match call {
                    Some(call) => call.await,
                    None => Ok::<_, Infallible>(too_large(max_body)),
                }
            }
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder.header_read_timeout(None).max_buf_size(MAX_HEAD_BYTES);
        let conn = builder.serve_connection(io, service).with_upgrades();
        tokio::pin!(conn);
        let timer = tokio::time::sleep_until(activity.deadline(&self.limits).0);
        tokio::pin!(timer);
        let mut stopping = false;
        loop {
            tokio::select! {
                done = conn.as_mut() => {
                    if let Err(e) = done {
                        debug!(error = %e, "http connection ended with an error");
                    }
                    return;
                }
                _ = &mut timer => {
                    // Traffic since may have moved the deadline on.
                    let (deadline, why) = activity.deadline(&self.limits);
                    if deadline <= Instant::now() {
                        let kind = match why { Expiry::Header => "header", Expiry::Idle => "idle" };
                        counter!("cspulse_http_timeouts_total", "kind" => kind).increment(1);
                        return;
                    }
                    timer.as_mut().reset(deadline);
                }
                _ = activity.changed.notified() => timer.as_mut().reset(activity.deadline(&self.limits).0),
                _ = stopped(&mut self.stop), if !stopping => {
                    stopping = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// 413 with the JSON error body; the connection is not kept (the body was
/// not read).
fn too_large(max: usize) -> Response {
    let mut res = ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("request bodies are at most {max} bytes"),
    )
    .into_response();
    res.headers_mut().insert(header::CONNECTION, header::HeaderValue::from_static("close"));
    res
}

/// Counts the open connection (`cspulse_http_connections`) and holds its
/// permit until the socket is dropped.
struct Slot {
    _permit: OwnedSemaphorePermit,
}

impl Slot {
    fn new(permit: OwnedSemaphorePermit) -> Self {
        gauge!("cspulse_http_connections").increment(1.0);
        Slot { _permit: permit }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        gauge!("cspulse_http_connections").decrement(1.0);
    }
}

/// What the watchdog reads: when bytes last moved and whether a request is
/// being answered. Times are milliseconds since the connection opened.
struct Activity {
    opened: Instant,
    /// Requests being answered: their body bytes start no new head (hyper
    /// answers one at a time; a counter keeps a late guard harmless).
    in_flight: AtomicU32,
    /// When the pending request head began, + 1 (0: no head pending).
    head_since: AtomicU64,
    /// When bytes last moved either way.
    last_io: AtomicU64,
    /// Wakes the watchdog when its deadline moved earlier (a head began).
    changed: Notify,
}

impl Activity {
    fn new() -> Self {
        Activity {
            opened: Instant::now(),
            in_flight: AtomicU32::new(0),
            // The first request's head is due from the moment of accept.
            head_since: AtomicU64::new(1),
            last_io: AtomicU64::new(0),
            changed: Notify::new(),
        }
    }

    fn now(&self) -> u64 {
        self.opened.elapsed().as_millis() as u64
    }

    fn at(&self, ms: u64) -> Instant {
        self.opened + Duration::from_millis(ms)
    }

    fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Bytes arrived: between requests, they start the next head.
    fn heard(&self) {
        let now = self.now();
        self.last_io.store(now, Ordering::Relaxed);
        if self.in_flight() == 0 && self.head_since.load(Ordering::Relaxed) == 0 {
            self.head_since.store(now + 1, Ordering::Relaxed);
            self.changed.notify_one();
        }
    }

    fn sent(&self) {
        self.last_io.store(self.now(), Ordering::Relaxed);
    }

    /// When the watchdog closes the connection, and why: no byte moved for
    /// the idle timeout (between requests, or a request stuck mid-body or
    /// mid-response), or a request head not complete in time.
    fn deadline(&self, limits: &Limits) -> (Instant, Expiry) {
        let idle = self.at(self.last_io.load(Ordering::Relaxed)) + limits.idle_timeout;
        match self.head_since.load(Ordering::Relaxed) {
            0 => (idle, Expiry::Idle),
            h => {
                let header = self.at(h - 1) + limits.header_timeout;
                if header < idle { (header, Expiry::Header) } else { (idle, Expiry::Idle) }
            }
        }
    }
}

/// A request being answered (from its parsed head to its response).
struct Busy(Arc<Activity>);

impl Busy {
    fn begin(activity: Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        activity.head_since.store(0, Ordering::Relaxed);
        Busy(activity)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.sent();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The socket, noting its traffic and holding the connection's permit.
struct Metered {
    socket: TcpStream,
    activity: Arc<Activity>,
    _slot: Slot,
}

impl AsyncRead for Metered {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.socket).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.heard();
        }
        polled
    }
}

impl AsyncWrite for Metered {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.socket).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.sent();
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.socket).poll_write_vectored(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.sent();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.socket.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().socket).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().socket).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use axum::Json;
    use axum::extract::rejection::JsonRejection;
    use axum::routing::post;
    use std::net::SocketAddr;

    use serde_json::Value;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A router with JSON-body routes (none of the API's take a body yet),
    /// behind the API's last layer, served with the limits.
    async fn served() -> (SocketAddr, watch::Sender<bool>) {
        let router = Router::new()
            .route(
                "/typed",
                post(|body: Result<Json<Value>, JsonRejection>| async move { body.map_err(ApiError::from) }),
            )
            .route("/plain", post(|Json(v): Json<Value>| async move { Json(v) }))
            .layer(axum::middleware::map_response(super::super::json_errors));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(serve(listener, router, Limits { max_body_bytes: 1000, ..Limits::default() }, stopped));
        (addr, stop)
    }

    async fn post_json(addr: SocketAddr, path: &str, body: &str, json: bool) -> (u16, Value) {
        let mut req = reqwest::Client::new().post(format!("http://{addr}{path}")).body(body.to_owned());
        if json {
            req = req.header("content-type", "application/json");
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        (status, serde_json::from_str(&res.text().await.unwrap()).unwrap_or(Value::Null))
    }

    #[tokio::test]
    async fn json_body_rejections_are_json_errors() {
        let (addr, _stop) = served().await;
        assert_eq!(post_json(addr, "/typed", r#"{"a":1}"#, true).await, (200, serde_json::json!({"a": 1})));
        for path in ["/typed", "/plain"] {
            let (status, body) = post_json(addr, path, "{not json", true).await;
            assert_eq!((status, &body["error"]), (400, &serde_json::json!("bad_request")), "{path}: {body}");
            assert_eq!(body.as_object().unwrap().len(), 2, "{body}");
            let (status, body) = post_json(addr, path, "{}", false).await;
            assert_eq!((status, &body["error"]), (415, &serde_json::json!("unsupported_media_type")), "{path}: {body}");
        }
        let (status, body) = post_json(addr, "/typed", &"1".repeat(1001), true).await;
        assert_eq!((status, &body["error"]), (413, &serde_json::json!("payload_too_large")), "{body}");
    }

    #[tokio::test]
    async fn a_chunked_body_is_cut_at_the_limit() {
        let (addr, _stop) = served().await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        let chunk = "1".repeat(1500);
        let req = format!(
            "POST /typed HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
            chunk.len()
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut got = Vec::new();
        let read = async {
            let mut buf = [0u8; 1024];
            while !String::from_utf8_lossy(&got).contains('}') {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(5), read).await;
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 413"), "{text}");
        assert!(text.contains(r#""error":"payload_too_large""#), "{text}");
    }
}
