//! The network side: an axum server with one WebSocket endpoint (`/ws`, the protocol of
//! `huddle_protocol::messages`), a small HTTP admin API (`/api/…`, bearer API key) and
//! `/healthz`.
//!
//! Each WebSocket gets a reader (this task) and a writer task joined by a bounded channel.
//! The reader enforces the frame size limit (close 1009), a per-connection rate limit
//! (token bucket; error frames, then close 1008), and a login deadline (close 1008); every
//! parsed frame goes to the [`Hub`] under a short lock, and what the hub queues is handed to
//! the writers. A timer task calls [`Hub::tick`] ten times a second.
//!
//! A client whose queue fills (it stopped reading) is cut off: its reader gives up, and its
//! writer, likely stuck on a full socket, drops what is queued, tries a 1008 close for
//! [`WRITER_GRACE`] and ends; a writer that still has not ended is aborted. The frames and
//! the socket are freed within a few seconds.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use futures_util::{SinkExt, StreamExt};
use huddle_protocol::{CallLogQuery, ClientFrame, ErrorCode, MAX_FRAME_BYTES, User};
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::hub::{ConnId, Hub, Out};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Per-connection flood protection.
#[derive(Clone, Copy, Debug)]
pub struct RateLimit {
    /// Messages allowed in a burst.
    pub burst: f64,
    /// Sustained messages per second.
    pub per_second: f64,
    /// Messages over the limit before the connection is closed (1008).
    pub close_after: u32,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self {
            burst: 100.0,
            per_second: 50.0,
            close_after: 200,
        }
    }
}

/// A frame (or close) queued for one connection's writer.
enum Outgoing {
    Text(String),
    Close(u16, String),
}

/// Depth of each connection's outgoing queue; a client that lets it fill is closed.
const OUTGOING_QUEUE: usize = 1024;

/// One connection's outgoing queue, and a way to make its reader and writer give up.
struct Writer {
    queue: mpsc::Sender<Outgoing>,
    kill: Arc<tokio::sync::Notify>,
    stop_writer: Arc<tokio::sync::Notify>,
}

/// How long a writer told to stop may try to send its close frame, and how long a
/// connection's end waits for its writer before aborting it.
const WRITER_GRACE: Duration = Duration::from_secs(1);

pub(crate) struct Shared {
    hub: Mutex<Hub>,
    writers: Mutex<HashMap<ConnId, Writer>>,
    next_conn: AtomicU64,
    api_key: Option<String>,
    login_timeout: Duration,
    /// A connection that sends nothing (not even a `ping`) for this long is closed (1001).
    idle_timeout: Duration,
    rate: RateLimit,
    /// Set when shutdown begins: new WebSockets are refused (503).
    shutting_down: std::sync::atomic::AtomicBool,
    /// Browser origins besides the server's own that may open `/ws`.
    allowed_origins: Vec<String>,
    /// The SFU's router, when Janus is configured (set once, right after start).
    sfu: std::sync::OnceLock<crate::sfu::SfuRouter>,
    /// This node's cluster, with `--redis` (set once, right after start).
    pub(crate) cluster: std::sync::OnceLock<Arc<crate::cluster::Cluster>>,
}

impl Shared {
    pub(crate) fn new(
        hub: Hub,
        api_key: Option<String>,
        (login_timeout, idle_timeout): (Duration, Duration),
        rate: RateLimit,
        allowed_origins: Vec<String>,
    ) -> Self {
        Self {
            hub: Mutex::new(hub),
            writers: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
            api_key,
            login_timeout,
            idle_timeout,
            rate,
            shutting_down: std::sync::atomic::AtomicBool::new(false),
            allowed_origins,
            sfu: std::sync::OnceLock::new(),
            cluster: std::sync::OnceLock::new(),
        }
    }

    /// A new connection id (for a socket, or a mirror of another node's connection).
    pub(crate) fn new_conn_id(&self) -> ConnId {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// Starts the SFU router; what it reports goes to the hub.
    pub(crate) fn start_sfu(self: &Arc<Self>, config: crate::sfu::SfuConfig) {
        let shared = Arc::downgrade(self);
        let router = crate::sfu::SfuRouter::start(config, move |news| {
            if let Some(shared) = shared.upgrade() {
                shared.with_hub(|hub| hub.handle_sfu_news(news));
            }
        });
        let _ = self.sfu.set(router);
    }

    /// Refuses new connections, ends every call and closes every connection.
    pub(crate) fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        if self.cluster.get().is_some() {
            // Another node takes this one's calls over as their members come back there.
            self.with_hub(Hub::shutdown_node);
        } else {
            self.with_hub(|hub| hub.shutdown(now_ms()));
        }
    }

    pub(crate) fn hub(&self) -> MutexGuard<'_, Hub> {
        // A panic while holding the lock must not take the server down with it.
        self.hub
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn writers(&self) -> MutexGuard<'_, HashMap<ConnId, Writer>> {
        self.writers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `f` on the hub and delivers what it queued.
    /// Frames are queued while the hub is still locked, so every client gets them in the
    /// order the hub produced them (lock order: hub, then writers; never the reverse).
    pub(crate) fn with_hub<T>(&self, f: impl FnOnce(&mut Hub) -> T) -> T {
        let mut hub = self.hub();
        let value = f(&mut hub);
        let mut outs = hub.drain();
        if let Some(cluster) = self.cluster.get() {
            outs = cluster.after_hub(&hub, outs);
        }
        self.deliver_local(outs);
        value
    }

    /// Hands frames to this node's own connections' writers, and commands to the SFU.
    pub(crate) fn deliver_local(&self, outs: Vec<Out>) {
        if outs.is_empty() {
            return;
        }
        let writers = self.writers();
        for out in outs {
            let (conn, item) = match out {
                Out::Send(conn, frame) => match serde_json::to_string(&frame) {
                    Ok(text) => (conn, Outgoing::Text(text)),
                    Err(err) => {
                        tracing::error!("cannot serialize a frame: {err}");
                        continue;
                    }
                },
                Out::Close(conn, code, reason) => (conn, Outgoing::Close(code, reason)),
                Out::Sfu(command) => {
                    match self.sfu.get() {
                        Some(sfu) => sfu.send(command),
                        None => tracing::error!("an SFU command without an SFU: {command:?}"),
                    }
                    continue;
                }
            };
            if let Some(writer) = writers.get(&conn)
                && writer.queue.try_send(item).is_err()
            {
                // Its queue is full: the close could not be queued either, so its reader is
                // told to give up, which disconnects it (and frees its place for a rejoin).
                tracing::warn!("connection {conn} is not reading its frames; closing it");
                writer.kill.notify_one();
                // Its writer is likely stuck on a full socket: it drops what is queued, tries
                // a 1008 close for a moment, and ends, which frees the frames and the socket.
                writer.stop_writer.notify_one();
            }
        }
    }
}

/// The router: `/ws`, `/healthz`, `/api/...`, and the web client at `/`.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(crate::web::index))
        .route("/{*path}", get(crate::web::file))
        .route("/ws", get(upgrade))
        .route("/healthz", get(|| async { "ok" }))
        .route("/api/users/{uid}", put(put_user))
        .route("/api/users/{uid}/auth_tokens", post(post_auth_token))
        .route("/api/groups/{guid}", put(put_group))
        .route("/api/call_logs", get(get_call_logs))
        .with_state(shared)
}

/// Ticks the hub until the process ends.
pub(crate) async fn run_timer(shared: Arc<Shared>) {
    let mut interval = tokio::time::interval(Duration::from_millis(100));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        shared.with_hub(|hub| hub.tick(now_ms()));
    }
}

async fn upgrade(
    ws: WebSocketUpgrade,
    headers: HeaderMap,
    State(shared): State<Arc<Shared>>,
) -> Response {
    if shared.shutting_down.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "server shutting down").into_response();
    }
    let header = |name: axum::http::HeaderName| {
        headers
            .get(name)
            .map(|value| value.to_str().unwrap_or("\u{fffd}"))
    };
    if let Some(origin) = header(axum::http::header::ORIGIN)
        && !origin_allowed(
            origin,
            header(axum::http::header::HOST),
            &shared.allowed_origins,
        )
    {
        tracing::info!("refused a WebSocket from origin {origin:?}");
        return (
            StatusCode::FORBIDDEN,
            format!("origin {origin} is not allowed (see --allowed-origin)"),
        )
            .into_response();
    }
    // The library limit is generous; our own check closes with 1009 above MAX_FRAME_BYTES.
    // Small per-connection buffers: signaling frames are small, and the defaults (128 KiB
    // each way) would cost ~140 KB of server memory per idle client.
    ws.max_message_size(MAX_FRAME_BYTES * 4)
        .max_frame_size(MAX_FRAME_BYTES * 4)
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .on_upgrade(move |socket| connection(socket, shared))
}

/// Whether a browser page from `origin` may open `/ws`: the server's own origin (the scheme
/// and the `Host` it was reached by) and the listed ones may; any other may not, so a page on
/// some web site cannot use a server on the visitor's machine or network. Native clients send
/// no Origin and are not asked.
pub(crate) fn origin_allowed(origin: &str, host: Option<&str>, allowed: &[String]) -> bool {
    let origin = origin.trim_end_matches('/');
    if allowed
        .iter()
        .any(|listed| listed.trim_end_matches('/').eq_ignore_ascii_case(origin))
    {
        return true;
    }
    let Some(host) = host else {
        return false;
    };
    ["http://", "https://"].iter().any(|scheme| {
        origin
            .strip_prefix(scheme)
            .is_some_and(|rest| rest.eq_ignore_ascii_case(host))
    })
}

struct TokenBucket {
    tokens: f64,
    last: tokio::time::Instant,
    rate: RateLimit,
    over: u32,
}

impl TokenBucket {
    fn new(rate: RateLimit) -> Self {
        Self {
            tokens: rate.burst,
            last: tokio::time::Instant::now(),
            rate,
            over: 0,
        }
    }

    fn take(&mut self) -> bool {
        let now = tokio::time::Instant::now();
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate.per_second).min(self.rate.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            // Good behaviour slowly forgives past bursts: only a sustained flood is closed.
            self.over = self.over.saturating_sub(1);
            true
        } else {
            self.over += 1;
            false
        }
    }
}

/// Just the request id of a frame.
#[derive(Deserialize)]
struct FrameId {
    id: Option<u64>,
}

async fn connection(socket: WebSocket, shared: Arc<Shared>) {
    let conn = shared.new_conn_id();
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::channel::<Outgoing>(OUTGOING_QUEUE);
    let kill = Arc::new(tokio::sync::Notify::new());
    let stop_writer = Arc::new(tokio::sync::Notify::new());
    shared.writers().insert(
        conn,
        Writer {
            queue: tx.clone(),
            kill: kill.clone(),
            stop_writer: stop_writer.clone(),
        },
    );
    shared.with_hub(|hub| hub.connect(conn));
    let writer = tokio::spawn(async move {
        let mut stopped = false;
        loop {
            let item = tokio::select! {
                item = rx.recv() => item,
                () = stop_writer.notified() => {
                    stopped = true;
                    None
                }
            };
            let Some(item) = item else {
                break;
            };
            let result = match item {
                Outgoing::Text(text) => {
                    tracing::trace!(conn, frame = %text, "frame out");
                    tokio::select! {
                        result = sink.send(Message::Text(text.into())) => result,
                        () = stop_writer.notified() => {
                            stopped = true;
                            break;
                        }
                    }
                }
                Outgoing::Close(code, reason) => {
                    let close = Message::Close(Some(CloseFrame {
                        code,
                        reason: reason.into(),
                    }));
                    let _ = tokio::time::timeout(WRITER_GRACE, sink.send(close)).await;
                    break;
                }
            };
            if result.is_err() {
                break;
            }
        }
        if stopped {
            // Whatever is still queued is dropped with the receiver.
            let close = Message::Close(Some(CloseFrame {
                code: 1008,
                reason: "not reading its frames".into(),
            }));
            let _ = tokio::time::timeout(WRITER_GRACE, sink.send(close)).await;
        }
        let _ = tokio::time::timeout(WRITER_GRACE, sink.close()).await;
    });
    let close = |code: u16, reason: &str| {
        let _ = tx.try_send(Outgoing::Close(code, reason.to_owned()));
    };
    let login_deadline = tokio::time::Instant::now() + shared.login_timeout;
    let mut bucket = TokenBucket::new(shared.rate);
    // Whether we closed the connection (then we drain what the client still sends, so that
    // the socket closes cleanly instead of resetting and losing our last frames).
    let mut we_closed = false;
    loop {
        let logged_in = shared.hub().is_logged_in(conn);
        let idle_deadline = tokio::time::Instant::now() + shared.idle_timeout;
        let message = tokio::select! {
            message = stream.next() => message,
            () = kill.notified() => break,
            () = tokio::time::sleep_until(idle_deadline) => {
                close(1001, "idle: no frame in time (send ping)");
                we_closed = true;
                break;
            }
            () = tokio::time::sleep_until(login_deadline), if !logged_in => {
                close(1008, "login timeout");
                we_closed = true;
                break;
            }
        };
        let text = match message {
            None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Binary(_))) => {
                if !bucket.take() {
                    if bucket.over > shared.rate.close_after {
                        close(1008, "rate limit exceeded");
                        we_closed = true;
                        break;
                    }
                    continue;
                }
                shared.with_hub(|hub| {
                    hub.reject_malformed(
                        conn,
                        None,
                        "binary frames are not supported; send JSON text".into(),
                    );
                });
                continue;
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
        };
        if text.len() > MAX_FRAME_BYTES {
            close(1009, "frame too large");
            we_closed = true;
            break;
        }
        if !bucket.take() {
            if bucket.over > shared.rate.close_after {
                close(1008, "rate limit exceeded");
                we_closed = true;
                break;
            }
            // Not processed; answered, so that a client waiting for it does not hang.
            let id = serde_json::from_str::<FrameId>(text.as_str())
                .ok()
                .and_then(|f| f.id);
            let frame = huddle_protocol::ServerFrame::error(
                id,
                ErrorCode::ApiError,
                "rate limit exceeded: slow down",
            );
            if let Ok(text) = serde_json::to_string(&frame) {
                let _ = tx.try_send(Outgoing::Text(text));
            }
            continue;
        }
        tracing::trace!(conn, frame = %text.as_str(), "frame in");
        match serde_json::from_str::<ClientFrame>(text.as_str()) {
            Ok(frame) => match shared.cluster.get() {
                Some(cluster) => crate::cluster::handle_frame(cluster, &shared, conn, frame).await,
                None => shared.with_hub(|hub| hub.handle(conn, frame, now_ms())),
            },
            Err(err) => {
                let id = serde_json::from_str::<serde_json::Value>(text.as_str())
                    .ok()
                    .and_then(|v| v.get("id").and_then(serde_json::Value::as_u64));
                shared.with_hub(|hub| {
                    hub.reject_malformed(conn, id, format!("malformed request: {err}"))
                });
            }
        }
    }
    shared.writers().remove(&conn);
    shared.with_hub(|hub| hub.disconnect(conn, now_ms()));
    if let Some(cluster) = shared.cluster.get() {
        cluster.detached(conn);
    }
    drop(tx);
    if we_closed {
        // Lingering close: read and discard until the client closes (or 2 s pass).
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(Ok(message)) = stream.next().await {
                if matches!(message, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }
    // A writer still stuck on a socket nobody reads is aborted: its frames and the socket go.
    let abort = writer.abort_handle();
    if tokio::time::timeout(WRITER_GRACE * 5, writer)
        .await
        .is_err()
    {
        abort.abort();
    }
}

/// An admin API error body.
fn api_error(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Response {
    (
        status,
        Json(huddle_protocol::ErrorBody {
            code,
            message: message.into(),
        }),
    )
        .into_response()
}

fn check_api_key(shared: &Shared, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let Some(key) = &shared.api_key else {
        return Err(Box::new(api_error(
            StatusCode::FORBIDDEN,
            ErrorCode::ApiError,
            "the admin API is disabled (start the server with --api-key)",
        )));
    };
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if given != Some(key.as_str()) {
        return Err(Box::new(api_error(
            StatusCode::UNAUTHORIZED,
            ErrorCode::ApiError,
            "wrong or missing API key",
        )));
    }
    Ok(())
}

/// Body of `PUT /api/users/{uid}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutUser {
    name: String,
    #[serde(default)]
    avatar: Option<String>,
    #[serde(default)]
    auto_busy: Option<bool>,
}

async fn put_user(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(uid): Path<String>,
    body: Result<Json<PutUser>, axum::extract::rejection::JsonRejection>,
) -> Response {
    if let Err(denied) = check_api_key(&shared, &headers) {
        return *denied;
    }
    if !huddle_protocol::messages::is_valid_uid(&uid) {
        return api_error(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidArgument,
            "invalid uid",
        );
    }
    let Ok(Json(body)) = body else {
        return api_error(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidArgument,
            "body must be {\"name\": …}",
        );
    };
    let user = User {
        uid,
        name: body.name,
        avatar: body.avatar,
    };
    match shared.with_hub(|hub| hub.store().upsert_user(&user, body.auto_busy)) {
        Ok(()) => Json(user).into_response(),
        Err(err) => api_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::ApiError,
            err.to_string(),
        ),
    }
}

async fn post_auth_token(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(uid): Path<String>,
) -> Response {
    if let Err(denied) = check_api_key(&shared, &headers) {
        return *denied;
    }
    let result = shared.with_hub(|hub| match hub.store().user(&uid) {
        Ok(Some(_)) => hub.issue_auth_token(&uid, now_ms()).map(Some),
        Ok(None) => Ok(None),
        Err(err) => Err(err.into()),
    });
    match result {
        Ok(Some(token)) => {
            Json(serde_json::json!({ "uid": uid, "auth_token": token })).into_response()
        }
        Ok(None) => api_error(
            StatusCode::NOT_FOUND,
            ErrorCode::ApiError,
            format!("unknown user `{uid}`"),
        ),
        Err(err) => api_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::ApiError,
            err.to_string(),
        ),
    }
}

/// Body of `PUT /api/groups/{guid}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutGroup {
    name: String,
    members: Vec<String>,
}

async fn put_group(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(guid): Path<String>,
    body: Result<Json<PutGroup>, axum::extract::rejection::JsonRejection>,
) -> Response {
    if let Err(denied) = check_api_key(&shared, &headers) {
        return *denied;
    }
    let Ok(Json(body)) = body else {
        return api_error(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidArgument,
            "body must be {\"name\": …, \"members\": [uid, …]}",
        );
    };
    if !huddle_protocol::messages::is_valid_uid(&guid)
        || !body
            .members
            .iter()
            .all(|m| huddle_protocol::messages::is_valid_uid(m))
    {
        return api_error(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidArgument,
            "invalid guid or member uid",
        );
    }
    match shared.with_hub(|hub| hub.store().upsert_group(&guid, &body.name, &body.members)) {
        Ok(()) => {
            Json(serde_json::json!({ "guid": guid, "name": body.name, "members": body.members }))
                .into_response()
        }
        Err(err) => api_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::ApiError,
            err.to_string(),
        ),
    }
}

async fn get_call_logs(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    query: Result<Query<CallLogQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if let Err(denied) = check_api_key(&shared, &headers) {
        return *denied;
    }
    let Ok(Query(query)) = query else {
        return api_error(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidArgument,
            "bad call log filters",
        );
    };
    match shared.with_hub(|hub| hub.store().list_calls(None, &query)) {
        Ok((logs, total)) => {
            Json(serde_json::json!({ "logs": logs, "total": total })).into_response()
        }
        Err(err) => api_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::ApiError,
            err.to_string(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::origin_allowed;

    /// The server's own origin and listed ones may open `/ws`; any other page may not.
    #[test]
    fn only_the_servers_own_and_listed_origins_may_connect() {
        let listed = vec!["https://app.example.org".to_owned()];
        let host = Some("10.0.0.1:7878");
        assert!(origin_allowed("http://10.0.0.1:7878", host, &[]));
        assert!(origin_allowed("https://10.0.0.1:7878/", host, &[]));
        assert!(origin_allowed("https://app.example.org", host, &listed));
        assert!(!origin_allowed("https://evil.example", host, &listed));
        assert!(!origin_allowed("http://10.0.0.1:7879", host, &[]));
        assert!(!origin_allowed("null", host, &[]));
        assert!(!origin_allowed("http://10.0.0.1:7878", None, &[]));
    }
}
