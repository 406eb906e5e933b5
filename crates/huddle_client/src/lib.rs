//! Huddle's signaling client, independent of Bevy.
//!
//! [`spawn`] starts one tokio task that owns the WebSocket to the server:
//!
//! 1. connect to `ws://…/ws` or `wss://…/ws` and log in (with an auth token, or by uid in
//!    dev mode). `wss://` uses rustls with the system's roots plus [`ClientConfig::ca_file`]
//!    (for a self-hosted server's own CA); a certificate that does not verify stops the
//!    client at once with [`ClientEvent::GaveUp`] (retrying would not change it);
//! 2. forward [`ClientCommand`]s as protocol requests (with ids), and hand every answer and
//!    pushed event back as a [`ClientEvent`] on a channel the caller drains (once per frame
//!    in `bevy_huddle`);
//! 3. when the socket drops, report [`ClientEvent::Disconnected`], reconnect with
//!    exponential backoff (to the next of [`ClientConfig::url`] and
//!    [`ClientConfig::fallback_urls`] in turn: another node of a cluster), log in again (requests made meanwhile wait), and report
//!    [`ClientEvent::Connected`] again; after [`Backoff::give_up_after`] without a
//!    connection it reports [`ClientEvent::GaveUp`] and stops.
//!
//! Commands go in on a bounded tokio channel (`try_send` never blocks the caller); events
//! come out on a crossbeam channel drained with `try_recv`, so the caller never awaits.

use std::collections::VecDeque;
use std::time::Duration;

use crossbeam_channel::Sender;
use futures_util::{SinkExt, StreamExt};
use huddle_protocol::{
    ClientFrame, ErrorBody, ErrorCode, GroupInfo, PeerSignal, Presence, Reply, Request,
    ServerEvent, ServerFrame, ServerPayload, User,
};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_tungstenite::tungstenite::Message;

/// Reconnection policy.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    /// First delay after a drop.
    pub initial: Duration,
    /// Longest delay between attempts.
    pub max: Duration,
    /// Give up after this long without a connection.
    pub give_up_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(5),
            give_up_after: Duration::from_secs(30),
        }
    }
}

/// Where and who.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Server WebSocket URL, e.g. `ws://127.0.0.1:7878/ws`.
    pub url: String,
    /// Other servers of the same cluster: after a drop or a failed attempt, the client tries
    /// the next URL of `url` and these, in turn.
    pub fallback_urls: Vec<String>,
    /// User id.
    pub uid: String,
    /// Auth token from the admin API; `None` uses dev login.
    pub auth_token: Option<String>,
    /// Display name for dev login.
    pub name: Option<String>,
    /// Reconnection policy.
    pub backoff: Backoff,
    /// Extra trusted CA certificates (PEM) for `wss://`, besides the system's roots.
    pub ca_file: Option<std::path::PathBuf>,
}

/// The TLS set-up for `wss://`: the system's roots plus the certificates of `ca_file`.
pub fn tls_config(
    ca_file: Option<&std::path::Path>,
) -> Result<std::sync::Arc<rustls::ClientConfig>, TlsSetupError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        // A system certificate rustls cannot use is skipped, as browsers do.
        let _ = roots.add(cert);
    }
    if let Some(path) = ca_file {
        let error = |reason: String| TlsSetupError::CaFile {
            path: path.to_owned(),
            reason,
        };
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|err| error(err.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| error(err.to_string()))?;
        if certs.is_empty() {
            return Err(error("no certificate in it".into()));
        }
        for cert in certs {
            roots.add(cert).map_err(|err| error(err.to_string()))?;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|err| TlsSetupError::Rustls(err.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(std::sync::Arc::new(config))
}

/// Why `wss://` cannot be set up.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TlsSetupError {
    /// The extra CA file cannot be read or holds no usable certificate.
    #[error("CA file {path}: {reason}")]
    CaFile {
        /// The file.
        path: std::path::PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("TLS: {0}")]
    Rustls(String),
}

/// What the caller asks of the client task.
#[derive(Clone, Debug)]
pub enum ClientCommand {
    /// Send a request; its answer comes back as [`ClientEvent::Answer`] with this `id`.
    Request {
        /// Caller-chosen id.
        id: u64,
        /// The request.
        request: Request,
    },
    /// Drop the socket now (as a network failure would); the client reconnects. For tests.
    DropConnection,
    /// Make sure the socket still carries frames: a ping goes out, and if nothing at all
    /// comes back `within` this, the socket is taken for dead and the client reconnects at
    /// once (after a network outage, TCP's backed-off retransmissions can hold a socket's
    /// frames for many seconds; a fresh connection does not wait for them).
    CheckConnection {
        /// How long to wait for anything from the server.
        within: Duration,
    },
    /// Close and stop.
    Shutdown,
}

/// What the client task reports.
#[derive(Clone, Debug, PartialEq)]
pub enum ClientEvent {
    /// Logged in (again, after a reconnect: `reconnected` is true).
    Connected {
        /// Who we are.
        user: User,
        /// The auth token to use for `generate_token`.
        auth_token: String,
        /// Contacts and their presence.
        contacts: Vec<Presence>,
        /// The groups we belong to.
        groups: Vec<GroupInfo>,
        /// Whether this follows a drop.
        reconnected: bool,
    },
    /// The answer to a request.
    Answer {
        /// The request's id.
        id: u64,
        /// Reply or error.
        result: Result<Reply, ErrorBody>,
    },
    /// Something the server pushed.
    Event(ServerEvent),
    /// The socket dropped; reconnecting.
    Disconnected {
        /// Why.
        reason: DropReason,
    },
    /// No connection for too long (or login refused): the client stopped.
    GaveUp {
        /// The error code (`UNKNOWN_API_ERROR` when unreachable, the server's when refused).
        code: ErrorCode,
        /// Why.
        reason: String,
    },
}

/// The caller's ends of the client task's channels.
pub struct ClientHandle {
    /// Commands in.
    pub commands: mpsc::Sender<ClientCommand>,
    /// Events out.
    pub events: crossbeam_channel::Receiver<ClientEvent>,
}

impl ClientHandle {
    /// Queues a command; `false` if the task is gone or its queue is full.
    pub fn send(&self, command: ClientCommand) -> bool {
        match self.commands.try_send(command) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                tracing::warn!("signaling client queue full; command dropped");
                false
            }
            Err(TrySendError::Closed(_)) => false,
        }
    }
}

impl Drop for ClientHandle {
    fn drop(&mut self) {
        let _ = self.commands.try_send(ClientCommand::Shutdown);
    }
}

/// How often the client pings the server (the server closes sockets silent for 60 s).
const HEARTBEAT: Duration = Duration::from_secs(15);
/// Request id of heartbeat pings (their answers are not passed on).
const HEARTBEAT_ID: u64 = u64::MAX - 1;

/// Depth of the command queue.
const COMMAND_QUEUE: usize = 1024;

/// Starts the client task on `runtime`.
pub fn spawn(runtime: &tokio::runtime::Handle, config: ClientConfig) -> ClientHandle {
    let (command_tx, command_rx) = mpsc::channel(COMMAND_QUEUE);
    let (event_tx, event_rx) = crossbeam_channel::unbounded();
    runtime.spawn(run(config, command_rx, event_tx));
    ClientHandle {
        commands: command_tx,
        events: event_rx,
    }
}

/// Reads the session id (`sid`) from a call token without verifying it (only the server can);
/// `None` if it is not a call token (see [`huddle_protocol::token::read_claims`], which says
/// why and reads the other claims too).
pub fn session_id_of_token(call_token: &str) -> Option<String> {
    huddle_protocol::token::read_claims(call_token)
        .ok()
        .map(|claims| claims.sid)
}

/// Why the connection to the server dropped (or could not be made).
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DropReason {
    /// Connecting failed (refused, unreachable, a failed handshake): the transport's error.
    #[error("cannot connect: {0}")]
    ConnectFailed(String),
    /// Connecting took too long.
    #[error("connect timed out")]
    ConnectTimedOut,
    /// The server did not answer the login in time.
    #[error("login timed out")]
    LoginTimedOut,
    /// The socket closed before the login was answered.
    #[error("closed during login")]
    ClosedDuringLogin,
    /// Nothing came from the server for too long (a half-open socket).
    #[error("the server stopped answering")]
    ServerSilent,
    /// The server closed the socket.
    #[error("closed by server ({code}): {reason}")]
    ClosedByServer {
        /// The WebSocket close code (0 when the close frame had none).
        code: u16,
        /// The close frame's reason.
        reason: String,
    },
    /// Reading or writing the socket failed: the transport's error.
    #[error("socket error: {0}")]
    Transport(String),
    /// The socket ended without a close frame.
    #[error("connection closed")]
    Closed,
    /// The server's TLS certificate did not verify (unknown CA, expired, another name), or
    /// the TLS handshake failed. Not retried.
    #[error("TLS with the server failed: {0}")]
    Tls(String),
    /// The application asked to drop it (a test hook).
    #[error("dropped on request")]
    OnRequest,
}

enum SessionEnd {
    /// The socket dropped or could not connect; try again.
    Dropped(DropReason),
    /// The server refused the login: stop.
    Refused(ErrorBody),
    /// Asked to stop.
    Shutdown,
}

/// Queues `request` to be sent once the connection is back. A WebRTC offer supersedes the
/// offers and candidates still waiting for the same participant in the same session: they
/// belong to a description the other side never saw, and an ICE restart made during an
/// outage (and another one later in it) had reached the other side all at once on
/// reconnection, each with its own credentials, and cost the call seconds more of
/// renegotiation. Superseded requests are dropped unanswered.
fn queue_request(pending: &mut VecDeque<(u64, Request)>, id: u64, request: Request) {
    if let Request::Signal {
        session_id,
        to,
        signal: PeerSignal::Offer { .. },
    } = &request
    {
        pending.retain(|(_, waiting)| {
            !matches!(waiting, Request::Signal {
                session_id: s,
                to: t,
                signal: PeerSignal::Offer { .. } | PeerSignal::Candidate { .. },
            } if s == session_id && t == to)
        });
    }
    pending.push_back((id, request));
}

async fn run(
    mut config: ClientConfig,
    mut commands: mpsc::Receiver<ClientCommand>,
    events: Sender<ClientEvent>,
) {
    let mut pending: VecDeque<(u64, Request)> = VecDeque::new();
    let mut in_flight: std::collections::HashSet<u64> = std::collections::HashSet::new();
    let mut delay = config.backoff.initial;
    let mut offline_since: Option<tokio::time::Instant> = None;
    let mut connected_before = false;
    let tls = if std::iter::once(&config.url)
        .chain(&config.fallback_urls)
        .any(|url| url.starts_with("wss:"))
    {
        match tls_config(config.ca_file.as_deref()) {
            Ok(tls) => Some(tls),
            Err(err) => {
                let _ = events.send(ClientEvent::GaveUp {
                    code: ErrorCode::UnknownApiError,
                    reason: err.to_string(),
                });
                return;
            }
        }
    } else {
        None
    };
    loop {
        let outcome = connect_once(
            &mut config,
            tls.as_ref(),
            &mut commands,
            &events,
            &mut pending,
            &mut in_flight,
            connected_before,
        )
        .await;
        // Requests sent on a socket that dropped will never be answered: say so.
        for id in in_flight.drain() {
            let _ = events.send(ClientEvent::Answer {
                id,
                result: Err(ErrorBody {
                    code: ErrorCode::UnknownApiError,
                    message: "the connection dropped before the answer".into(),
                }),
            });
        }
        match outcome {
            (SessionEnd::Shutdown, _) => return,
            (SessionEnd::Dropped(reason @ DropReason::Tls(_)), _) => {
                let _ = events.send(ClientEvent::GaveUp {
                    code: ErrorCode::UnknownApiError,
                    reason: reason.to_string(),
                });
                return;
            }
            (SessionEnd::Refused(error), _) => {
                let _ = events.send(ClientEvent::GaveUp {
                    code: error.code,
                    reason: error.message,
                });
                return;
            }
            (SessionEnd::Dropped(reason), was_connected) => {
                if was_connected {
                    connected_before = true;
                    delay = config.backoff.initial;
                    offline_since = Some(tokio::time::Instant::now());
                    let _ = events.send(ClientEvent::Disconnected {
                        reason: reason.clone(),
                    });
                }
                let since = *offline_since.get_or_insert_with(tokio::time::Instant::now);
                if since.elapsed() >= config.backoff.give_up_after {
                    let _ = events.send(ClientEvent::GaveUp {
                        code: ErrorCode::UnknownApiError,
                        reason: format!("server unreachable: {reason}"),
                    });
                    return;
                }
                // Wait, but keep taking commands (queued until we are back) and a shutdown.
                let sleep = tokio::time::sleep(delay);
                tokio::pin!(sleep);
                loop {
                    tokio::select! {
                        () = &mut sleep => break,
                        command = commands.recv() => match command {
                            Some(ClientCommand::Request { id, request }) => queue_request(&mut pending, id, request),
                            Some(ClientCommand::DropConnection | ClientCommand::CheckConnection { .. }) => {}
                            Some(ClientCommand::Shutdown) | None => return,
                        },
                    }
                }
                delay = (delay * 2).min(config.backoff.max);
                next_server(&mut config);
            }
        }
    }
}

/// Moves to the next server of `url` and `fallback_urls` (a drop or a failed attempt: that
/// server may be gone while another node of its cluster is up).
fn next_server(config: &mut ClientConfig) {
    if config.fallback_urls.is_empty() {
        return;
    }
    let current = std::mem::take(&mut config.url);
    config.fallback_urls.push(current);
    config.url = config.fallback_urls.remove(0);
}

/// The TLS failure inside a connect error, if that is what it is.
fn tls_failure(err: &tokio_tungstenite::tungstenite::Error) -> Option<String> {
    use tokio_tungstenite::tungstenite::Error;
    match err {
        Error::Tls(tls) => Some(tls.to_string()),
        Error::Io(io) => io
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .map(ToString::to_string),
        _ => None,
    }
}

/// One connection: connect, log in, then pump until it drops. Returns how it ended and
/// whether it got as far as logging in.
async fn connect_once(
    config: &mut ClientConfig,
    tls: Option<&std::sync::Arc<rustls::ClientConfig>>,
    commands: &mut mpsc::Receiver<ClientCommand>,
    events: &Sender<ClientEvent>,
    pending: &mut VecDeque<(u64, Request)>,
    in_flight: &mut std::collections::HashSet<u64>,
    reconnected: bool,
) -> (SessionEnd, bool) {
    let connector = tls.map(|config| tokio_tungstenite::Connector::Rustls(config.clone()));
    let ws = match tokio::time::timeout(
        Duration::from_secs(5),
        tokio_tungstenite::connect_async_tls_with_config(&config.url, None, true, connector),
    )
    .await
    {
        Ok(Ok((ws, _))) => ws,
        Ok(Err(err)) => {
            let reason = match tls_failure(&err) {
                Some(tls) => DropReason::Tls(tls),
                None => DropReason::ConnectFailed(err.to_string()),
            };
            return (SessionEnd::Dropped(reason), false);
        }
        Err(_) => return (SessionEnd::Dropped(DropReason::ConnectTimedOut), false),
    };
    let (mut sink, mut stream) = ws.split();
    const LOGIN_ID: u64 = u64::MAX;
    let login = ClientFrame {
        v: huddle_protocol::PROTOCOL_VERSION,
        id: Some(LOGIN_ID),
        request: Request::Login {
            uid: config.uid.clone(),
            auth_token: config.auth_token.clone(),
            name: config.name.clone(),
        },
    };
    let Ok(text) = serde_json::to_string(&login) else {
        return (SessionEnd::Shutdown, false);
    };
    if let Err(err) = sink.send(Message::Text(text.into())).await {
        return (
            SessionEnd::Dropped(DropReason::Transport(err.to_string())),
            false,
        );
    }
    // Wait for the login answer.
    let logged_in = loop {
        let frame = match tokio::time::timeout(Duration::from_secs(10), stream.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => {
                serde_json::from_str::<ServerFrame>(text.as_str()).ok()
            }
            Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) => {
                return (SessionEnd::Dropped(DropReason::ClosedDuringLogin), false);
            }
            Ok(Some(Ok(_))) => None,
            Err(_) => return (SessionEnd::Dropped(DropReason::LoginTimedOut), false),
        };
        match frame {
            Some(ServerFrame {
                re: Some(LOGIN_ID),
                payload,
                ..
            }) => break payload,
            _ => continue,
        }
    };
    match logged_in {
        ServerPayload::Reply(Reply::LoggedIn {
            user,
            auth_token,
            contacts,
            groups,
        }) => {
            // A dev login logs in again by uid after a reconnect (the server may have been
            // restarted with a fresh store that does not know the token it issued).
            let _ = events.send(ClientEvent::Connected {
                user,
                auth_token,
                contacts,
                groups,
                reconnected,
            });
        }
        ServerPayload::Error { error, .. } => return (SessionEnd::Refused(error), false),
        other => {
            return (
                SessionEnd::Refused(ErrorBody {
                    code: ErrorCode::UnknownApiError,
                    message: format!("unexpected login answer: {other:?}"),
                }),
                false,
            );
        }
    }
    // Send what waited for the connection.
    while let Some((id, request)) = pending.pop_front() {
        if let Err(reason) = send_request(&mut sink, id, request.clone()).await {
            pending.push_front((id, request));
            return (SessionEnd::Dropped(reason), true);
        }
        in_flight.insert(id);
    }
    // A ping every 15 s; a server silent for 40 s is taken for gone (half-open sockets).
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.tick().await;
    let mut last_heard = tokio::time::Instant::now();
    // A `CheckConnection` in progress: nothing heard by this deadline drops the socket.
    let mut check_deadline: Option<tokio::time::Instant> = None;
    loop {
        let check_expired = async {
            match check_deadline {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = check_expired => {
                return (SessionEnd::Dropped(DropReason::ServerSilent), true);
            }
            _ = heartbeat.tick() => {
                if last_heard.elapsed() > HEARTBEAT * 8 / 3 {
                    return (SessionEnd::Dropped(DropReason::ServerSilent), true);
                }
                if let Err(reason) = send_request(&mut sink, HEARTBEAT_ID, Request::Ping {}).await {
                    return (SessionEnd::Dropped(reason), true);
                }
            }
            message = stream.next() => {
                last_heard = tokio::time::Instant::now();
                check_deadline = None;
                let text = match message {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(frame))) => {
                        let reason = frame.map_or(
                            DropReason::ClosedByServer { code: 0, reason: String::new() },
                            |f| DropReason::ClosedByServer { code: u16::from(f.code), reason: f.reason.to_string() },
                        );
                        return (SessionEnd::Dropped(reason), true);
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(err)) => return (SessionEnd::Dropped(DropReason::Transport(err.to_string())), true),
                    None => return (SessionEnd::Dropped(DropReason::Closed), true),
                };
                let Ok(frame) = serde_json::from_str::<ServerFrame>(text.as_str()) else {
                    tracing::warn!("unparsable frame from server: {text}");
                    continue;
                };
                if let Some(id) = frame.re {
                    if id == HEARTBEAT_ID {
                        continue;
                    }
                    in_flight.remove(&id);
                }
                let event = match (frame.re, frame.payload) {
                    (Some(id), ServerPayload::Reply(reply)) => ClientEvent::Answer { id, result: Ok(reply) },
                    (Some(id), ServerPayload::Error { error, .. }) => ClientEvent::Answer { id, result: Err(error) },
                    (None, ServerPayload::Event(event)) => ClientEvent::Event(event),
                    (None, ServerPayload::Error { error, .. }) => {
                        tracing::warn!("server error without a request: {} {}", error.code, error.message);
                        continue;
                    }
                    (_, other) => {
                        tracing::warn!("unexpected frame: {other:?}");
                        continue;
                    }
                };
                if events.send(event).is_err() {
                    return (SessionEnd::Shutdown, true);
                }
            }
            command = commands.recv() => match command {
                Some(ClientCommand::Request { id, request }) => {
                    if let Err(reason) = send_request(&mut sink, id, request.clone()).await {
                        queue_request(pending, id, request);
                        return (SessionEnd::Dropped(reason), true);
                    }
                    in_flight.insert(id);
                }
                Some(ClientCommand::DropConnection) => {
                    return (SessionEnd::Dropped(DropReason::OnRequest), true);
                }
                Some(ClientCommand::CheckConnection { within }) => {
                    if check_deadline.is_none() {
                        if let Err(reason) = send_request(&mut sink, HEARTBEAT_ID, Request::Ping {}).await {
                            return (SessionEnd::Dropped(reason), true);
                        }
                        check_deadline = Some(tokio::time::Instant::now() + within);
                    }
                }
                Some(ClientCommand::Shutdown) | None => {
                    let _ = sink.send(Message::Close(None)).await;
                    return (SessionEnd::Shutdown, true);
                }
            },
        }
    }
}

async fn send_request<S>(sink: &mut S, id: u64, request: Request) -> Result<(), DropReason>
where
    S: futures_util::Sink<Message> + Unpin,
    S::Error: std::fmt::Display,
{
    let frame = ClientFrame {
        v: huddle_protocol::PROTOCOL_VERSION,
        id: Some(id),
        request,
    };
    let text = serde_json::to_string(&frame).map_err(|e| DropReason::Transport(e.to_string()))?;
    sink.send(Message::Text(text.into()))
        .await
        .map_err(|e| DropReason::Transport(e.to_string()))
}

#[cfg(test)]
mod tests {
    use huddle_protocol::token::{CallTokenClaims, signing_input, with_signature};

    use super::session_id_of_token;

    /// While the connection is down, a new offer to a participant replaces the offers and
    /// candidates still waiting for that participant in that session (never seen by them),
    /// and leaves everything else in order: answers, other participants' and other
    /// sessions' signals, other requests.
    #[test]
    fn a_queued_offer_supersedes_waiting_offers_and_candidates_to_the_same_participant() {
        use std::collections::VecDeque;

        use huddle_protocol::{PeerSignal, Request};

        let signal = |session: &str, to: &str, signal: PeerSignal| Request::Signal {
            session_id: session.into(),
            to: to.into(),
            signal,
        };
        let offer = |sdp: &str| PeerSignal::Offer { sdp: sdp.into() };
        let candidate = || PeerSignal::Candidate {
            candidate: Some("candidate:1 1 udp 1 10.0.0.1 5000 typ host".into()),
            sdp_mid: Some("0".into()),
            sdp_mline_index: Some(0),
            username_fragment: None,
        };
        let mut pending = VecDeque::new();
        super::queue_request(&mut pending, 1, signal("s", "sfu", offer("first")));
        super::queue_request(&mut pending, 2, signal("s", "sfu", candidate()));
        super::queue_request(&mut pending, 3, signal("s", "bob", offer("bob's")));
        super::queue_request(&mut pending, 4, signal("t", "sfu", offer("other session")));
        let answer = PeerSignal::Answer {
            sdp: "answer".into(),
        };
        super::queue_request(&mut pending, 5, signal("s", "sfu", answer));
        super::queue_request(&mut pending, 6, Request::Ping {});
        super::queue_request(&mut pending, 7, signal("s", "sfu", offer("second")));
        super::queue_request(&mut pending, 8, signal("s", "sfu", candidate()));
        let ids: Vec<u64> = pending.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, [3, 4, 5, 6, 7, 8]);
    }

    /// The session id is read from a call token's claims (the signature is not checked);
    /// anything that is not a call token has none.
    #[test]
    fn session_id_is_read_from_a_token() {
        let claims = CallTokenClaims {
            iss: "huddle".into(),
            sub: "alice".into(),
            sid: "standup".into(),
            iat: 100,
            exp: 200,
        };
        let token = with_signature(&signing_input(&claims), b"unchecked");
        assert_eq!(session_id_of_token(&token).as_deref(), Some("standup"));
        for garbage in ["", "garbage", "a.b", "a.!!.c"] {
            assert_eq!(session_id_of_token(garbage), None, "{garbage:?}");
        }
    }
}
