//! Accepting connections, before anything reaches axum: caps, timeouts, TLS.
//!
//! One loop accepts TCP connections. An `accept` error (out of file descriptors: `EMFILE`)
//! is logged and retried after a pause, so the server survives it. Each connection then:
//!
//! 1. takes a slot under [`ConnectionLimits`]: at most `max_connections` in all and
//!    `max_per_address` from one IP address; over either, it is closed at once (and logged);
//!    the slot is held for the connection's whole life, WebSocket included;
//! 2. completes its TLS handshake within [`crate::tls::HANDSHAKE_TIMEOUT`] (with TLS);
//! 3. is served by hyper's HTTP/1 with a **header-read timeout**: a client that does not
//!    finish its request head in time (a slowloris) is dropped; upgrades to WebSocket go on
//!    in axum's handler, still holding the slot.
//!
//! On shutdown the loop stops accepting and open HTTP exchanges get a few seconds to finish.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;

/// Caps and timeouts on connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections open at once, in all (HTTP and WebSocket).
    pub max_connections: usize,
    /// Connections open at once from one IP address.
    pub max_per_address: usize,
    /// Time a client has to send its whole request head (WebSocket upgrade included).
    pub header_read_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: 4_096,
            max_per_address: 256,
            header_read_timeout: Duration::from_secs(10),
        }
    }
}

/// How long open HTTP exchanges may take to finish after shutdown begins.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Pause after an `accept` error before trying again.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Open connections, in all and per address.
#[derive(Default)]
struct Counts {
    total: usize,
    per_address: HashMap<IpAddr, usize>,
}

/// A connection's place under the caps, given back when it is dropped.
struct Slot {
    counts: Arc<Mutex<Counts>>,
    address: IpAddr,
}

impl Slot {
    fn take(
        counts: &Arc<Mutex<Counts>>,
        address: IpAddr,
        limits: &ConnectionLimits,
    ) -> Option<Self> {
        let mut c = counts.lock().unwrap_or_else(|p| p.into_inner());
        let from_address = c.per_address.get(&address).copied().unwrap_or(0);
        if c.total >= limits.max_connections || from_address >= limits.max_per_address {
            return None;
        }
        c.total += 1;
        *c.per_address.entry(address).or_insert(0) += 1;
        Some(Self {
            counts: counts.clone(),
            address,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_address.get_mut(&self.address) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.per_address.remove(&self.address);
            }
        }
    }
}

/// A connection's stream with its slot: the slot lives as long as the stream, through the
/// WebSocket upgrade (hyper hands the same stream to the WebSocket).
struct Counted<S> {
    stream: S,
    _slot: Slot,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Serves `router` on `listener` (with TLS if `tls` is set) until `shutdown` completes.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: axum::Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let counts = Arc::new(Mutex::new(Counts::default()));
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    // Connections hear here that shutdown began; their tasks are reaped as they end.
    let (stopping_tx, stopping) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!("accept failed (retrying in 100 ms): {err}");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
            () = &mut shutdown => break,
        };
        let Some(slot) = Slot::take(&counts, peer.ip(), &limits) else {
            tracing::warn!("refused a connection from {peer}: too many connections");
            continue;
        };
        // Signaling is request/answer ping-pong: without TCP_NODELAY, Nagle and delayed ACKs
        // add ~40 ms per exchange.
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!("TCP_NODELAY: {err}");
        }
        let (router, acceptor, stopping) = (router.clone(), acceptor.clone(), stopping.clone());
        tasks.spawn(async move {
            let result = match acceptor {
                Some(acceptor) => {
                    let handshake = tokio::time::timeout(
                        crate::tls::HANDSHAKE_TIMEOUT,
                        acceptor.accept(stream),
                    );
                    match handshake.await {
                        Ok(Ok(tls)) => {
                            let io = Counted {
                                stream: tls,
                                _slot: slot,
                            };
                            serve_http(io, router, &limits, stopping).await
                        }
                        Ok(Err(err)) => {
                            tracing::debug!("TLS handshake with {peer} failed: {err}");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!("TLS handshake with {peer} timed out");
                            return;
                        }
                    }
                }
                None => {
                    let io = Counted {
                        stream,
                        _slot: slot,
                    };
                    serve_http(io, router, &limits, stopping).await
                }
            };
            if let Err(err) = result {
                tracing::debug!("connection from {peer} ended: {err}");
            }
        });
    }
    drop(listener);
    let _ = stopping_tx.send(true);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
}

/// HTTP/1 on one connection, with the header-read timeout and upgrades (the WebSocket);
/// when `stopping` turns true, an exchange in progress finishes and the connection closes.
async fn serve_http<S>(
    io: Counted<S>,
    router: axum::Router,
    limits: &ConnectionLimits,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) -> Result<(), hyper::Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let connection = http
        .serve_connection(TokioIo::new(io), TowerToHyperService::new(router))
        .with_upgrades();
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => result,
        () = async {
            // The guard `wait_for` returns is not `Send`: drop it at once.
            let _ = stopping.wait_for(|stop| *stop).await.map(|_| ());
        } => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    }
}

/// The address clients reach us at, for the log line.
pub(crate) fn describe(addr: SocketAddr, tls: bool) -> String {
    let (scheme, web) = if tls {
        ("wss", "https")
    } else {
        ("ws", "http")
    };
    format!("{addr} ({scheme}://{addr}/ws; web client {web}://{addr}/)")
}
