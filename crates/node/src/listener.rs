//! The HTTP listener: accepts TCP connections, terminates TLS when the node serves
//! HTTPS, and serves each connection with hyper under bounds that keep slow or
//! hostile clients from holding the node.
//!
//! - A connection must deliver a complete request head within `header_timeout_ms`
//!   of being ready for one: when it opens, and again between requests (so an idle
//!   keep-alive connection is closed after the same time). A TLS handshake must end
//!   within `tls_handshake_timeout_ms`.
//! - Each connection buffers at most `connection_buffer_bytes_max` bytes of a request
//!   head (bodies stream through the same buffer), so a connection that has not yet
//!   said who it is costs a few kilobytes.
//! - A connection counts as unauthenticated until one of its requests carries a valid
//!   token. At most `unauthenticated_connections_max` are kept: a new connection past
//!   that closes the oldest unauthenticated one, so that a flood of half-open
//!   connections delays nobody who sends a request at once.
//! - At most as many connections as the process's descriptor limit minus
//!   `descriptors_reserved` are open; when that or the process limit is reached the
//!   oldest unauthenticated connection is closed to make room, so an admin can always
//!   connect.
//!
//! On a TLS port, a client that speaks plain HTTP gets a plain `400` saying to use
//! `https://`, and the connection is closed.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};

/// Bounds on connections; see the module documentation.
#[derive(Clone, Debug)]
pub struct ListenConfig {
    pub header_timeout_ms: u64,
    pub tls_handshake_timeout_ms: u64,
    pub unauthenticated_connections_max: usize,
    pub connection_buffer_bytes_max: usize,
    pub descriptors_reserved: u64,
    /// A request's whole body must arrive within this long (`408 body_timeout`).
    pub body_timeout_ms: u64,
    /// Requests of one principal served at once (`429 too_many_requests`; the
    /// governance lane and admins are not counted).
    pub requests_in_flight_per_principal_max: usize,
    /// Bytes of the large request bodies (gateway, artifacts) being read or served,
    /// node-wide (`503 body_budget`) and per principal (`429 body_budget`).
    pub body_bytes_in_flight_max: u64,
    pub body_bytes_in_flight_per_principal_max: u64,
}

impl Default for ListenConfig {
    fn default() -> Self {
        ListenConfig {
            header_timeout_ms: 30_000,
            tls_handshake_timeout_ms: 10_000,
            unauthenticated_connections_max: 1_024,
            connection_buffer_bytes_max: 16 << 10,
            descriptors_reserved: 256,
            body_timeout_ms: 30_000,
            requests_in_flight_per_principal_max: 256,
            body_bytes_in_flight_max: 256 << 20,
            body_bytes_in_flight_per_principal_max: 32 << 20,
        }
    }
}

/// The open connections of one listener.
pub(crate) struct Connections {
    config: ListenConfig,
    next_id: AtomicU64,
    /// HTTP connections open now (an upgraded bus connection leaves this count and
    /// is counted by the bus).
    open: AtomicU64,
    /// Connections open at most: the descriptor limit less the reserve.
    open_max: u64,
    /// Unauthenticated connections, oldest first, with the signal that closes each.
    unauthenticated: Mutex<BTreeMap<u64, Arc<Notify>>>,
    /// Connections closed to make room.
    pub(crate) evicted: AtomicU64,
    /// Told when `open` falls to zero.
    drained: Notify,
}

/// Put into every request's extensions: lets authentication mark the connection.
#[derive(Clone)]
pub(crate) struct ConnectionTag {
    id: u64,
    authenticated: Arc<AtomicBool>,
    connections: Arc<Connections>,
}

impl ConnectionTag {
    /// The connection carried a valid token: it is no longer evictable.
    pub(crate) fn mark_authenticated(&self) {
        if !self.authenticated.swap(true, Ordering::AcqRel) {
            self.connections
                .unauthenticated
                .lock()
                .expect("connections lock")
                .remove(&self.id);
        }
    }
}

/// Marks the connection a request came on as authenticated (no-op for requests
/// that did not come through this listener, as in tests of the router alone).
pub(crate) fn mark_authenticated(extensions: &axum::http::Extensions) {
    if let Some(tag) = extensions.get::<ConnectionTag>() {
        tag.mark_authenticated();
    }
}

impl Connections {
    pub(crate) fn new(config: ListenConfig) -> Arc<Connections> {
        let descriptors = descriptor_limit().unwrap_or(1 << 20);
        let open_max = descriptors
            .saturating_sub(config.descriptors_reserved)
            .max(16);
        Arc::new(Connections {
            config,
            next_id: AtomicU64::new(1),
            open: AtomicU64::new(0),
            open_max,
            unauthenticated: Mutex::new(BTreeMap::new()),
            evicted: AtomicU64::new(0),
            drained: Notify::new(),
        })
    }

    pub(crate) fn config(&self) -> &ListenConfig {
        &self.config
    }

    pub(crate) fn open(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }

    pub(crate) fn unauthenticated(&self) -> usize {
        self.unauthenticated.lock().expect("connections lock").len()
    }

    /// Closes the oldest unauthenticated connection; false when there is none.
    fn evict_oldest(&self) -> bool {
        let oldest = self
            .unauthenticated
            .lock()
            .expect("connections lock")
            .pop_first();
        match oldest {
            Some((_, close)) => {
                close.notify_one();
                self.evicted.fetch_add(1, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// Registers a new connection, making room first; `None` when there is no room
    /// (every open connection is authenticated and the descriptors are spent).
    fn register(self: &Arc<Connections>) -> Option<(ConnectionTag, Arc<Notify>)> {
        if self.open.load(Ordering::Acquire) >= self.open_max && !self.evict_oldest() {
            return None;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let close = Arc::new(Notify::new());
        {
            let mut unauthenticated = self.unauthenticated.lock().expect("connections lock");
            while unauthenticated.len() >= self.config.unauthenticated_connections_max {
                let Some((_, oldest)) = unauthenticated.pop_first() else {
                    break;
                };
                oldest.notify_one();
                self.evicted.fetch_add(1, Ordering::Relaxed);
            }
            unauthenticated.insert(id, Arc::clone(&close));
        }
        self.open.fetch_add(1, Ordering::AcqRel);
        let tag = ConnectionTag {
            id,
            authenticated: Arc::new(AtomicBool::new(false)),
            connections: Arc::clone(self),
        };
        Some((tag, close))
    }

    fn unregister(&self, id: u64) {
        self.unauthenticated
            .lock()
            .expect("connections lock")
            .remove(&id);
        if self.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.drained.notify_waiters();
        }
    }
}

/// The soft limit on open files of this process, from `/proc/self/limits`.
fn descriptor_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

fn is_descriptor_exhaustion(error: &std::io::Error) -> bool {
    // EMFILE (24): the process's limit; ENFILE (23): the system's.
    matches!(error.raw_os_error(), Some(24) | Some(23))
}

/// Serves `router` on `listener`, over TLS when `tls` is given, until the future is
/// dropped; no connection is ever evicted (for servers without authentication, such
/// as the mock upstream).
pub async fn serve_router(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> std::io::Result<()> {
    let (keep_open, stopping) = watch::channel(false);
    let config = ListenConfig {
        unauthenticated_connections_max: usize::MAX,
        ..ListenConfig::default()
    };
    let served = serve(listener, router, tls, Connections::new(config), stopping).await;
    drop(keep_open);
    served
}

/// Serves `router` on `listener` until `stopping` turns true, then lets open
/// requests finish (keep-alive connections close after their current request).
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    connections: Arc<Connections>,
    mut stopping: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopping.changed() => break,
        };
        let tcp = match accepted {
            Ok((tcp, _peer)) => tcp,
            Err(error) if is_descriptor_exhaustion(&error) => {
                // Make room from the unauthenticated; wait a moment if there is none.
                if !connections.evict_oldest() {
                    tracing::warn!(
                        "out of file descriptors and every connection is authenticated: {error}"
                    );
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
            Err(error) => {
                tracing::debug!("accept failed: {error}");
                continue;
            }
        };
        let Some((tag, close)) = connections.register() else {
            // Dropping the stream closes it at once.
            tracing::warn!("connection refused: every descriptor but the reserve is held by authenticated connections");
            continue;
        };
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY: {error}");
        }
        let connection = Connection {
            router: router.clone(),
            tag,
            stopping: stopping.clone(),
            config: connections.config.clone(),
        };
        let acceptor = acceptor.clone();
        let connections = Arc::clone(&connections);
        tokio::spawn(async move {
            let id = connection.tag.id;
            tokio::select! {
                _ = connection.run(tcp, acceptor) => {}
                _ = close.notified() => {}
            }
            connections.unregister(id);
        });
    }
    // Wait for the connections to finish their requests.
    loop {
        let drained = connections.drained.notified();
        if connections.open() == 0 {
            break;
        }
        drained.await;
    }
    Ok(())
}

struct Connection {
    router: Router,
    tag: ConnectionTag,
    stopping: watch::Receiver<bool>,
    config: ListenConfig,
}

impl Connection {
    async fn run(self, tcp: TcpStream, acceptor: Option<tokio_rustls::TlsAcceptor>) {
        let Some(acceptor) = acceptor else {
            return self.http(tcp).await;
        };
        // Boxed: a plain connection's task would otherwise have room for a TLS
        // handshake and a TLS connection's state (6.4 KB a connection, idle or not).
        Box::pin(self.tls(tcp, acceptor)).await
    }

    async fn tls(self, tcp: TcpStream, acceptor: tokio_rustls::TlsAcceptor) {
        let handshake_timeout = Duration::from_millis(self.config.tls_handshake_timeout_ms);
        let mut first = [0u8; 1];
        match tokio::time::timeout(handshake_timeout, tcp.peek(&mut first)).await {
            Ok(Ok(1)) => {}
            _ => return,
        }
        // A TLS record starts with 0x16 (handshake); an ASCII letter is plain HTTP.
        if first[0] != 0x16 {
            if first[0].is_ascii_alphabetic() {
                refuse_plain_http(tcp).await;
            }
            return;
        }
        match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
            Ok(Ok(stream)) => self.http(stream).await,
            Ok(Err(error)) => tracing::debug!("TLS handshake failed: {error}"),
            Err(_) => tracing::debug!("TLS handshake timed out"),
        }
    }

    async fn http<I>(mut self, io: I)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let router = self.router;
        let tag = self.tag;
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(tag.clone());
            tower::ServiceExt::oneshot(router.clone(), request)
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_millis(self.config.header_timeout_ms))
            .max_buf_size(self.config.connection_buffer_bytes_max.max(8 << 10))
            .keep_alive(true);
        let connection = builder
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades();
        tokio::pin!(connection);
        if *self.stopping.borrow() {
            connection.as_mut().graceful_shutdown();
        }
        loop {
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!("connection ended: {error}");
                    }
                    return;
                }
                changed = self.stopping.changed() => {
                    if changed.is_err() || *self.stopping.borrow() {
                        connection.as_mut().graceful_shutdown();
                        // Serve out the current request, then the connection closes.
                        if let Err(error) = connection.as_mut().await {
                            tracing::debug!("connection ended: {error}");
                        }
                        return;
                    }
                }
            }
        }
    }
}

/// The answer to plain HTTP on a TLS port.
async fn refuse_plain_http(mut tcp: TcpStream) {
    use tokio::io::AsyncReadExt;
    // Read what the client sent first: closing a socket with unread bytes resets it,
    // and the client would see the reset instead of the answer.
    let mut head = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_millis(200), tcp.read(&mut head)).await;
    let body = r#"{"error":{"code":"tls_required","message":"this port serves HTTPS: use an https:// (or wss://) URL"}}"#;
    let response = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = tcp.write_all(response.as_bytes()).await;
        let _ = tcp.shutdown().await;
    })
    .await;
}
