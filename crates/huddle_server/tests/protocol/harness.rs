//! A real server on 127.0.0.1 port 0 and real WebSocket clients speaking the protocol.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use huddle_protocol::{
    CallType, ClientFrame, ErrorBody, ErrorCode, ReceiverType, Reply, Request, ServerEvent,
    ServerFrame, ServerPayload,
};
use huddle_server::{HubConfig, ServerConfig};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long to wait for anything before failing.
pub const WAIT: Duration = Duration::from_secs(5);

/// A running server; dropping it (or calling `stop`) shuts it down.
pub struct TestServer {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    /// Dev login on, admin key "admin-key", in-memory db unless `config` says otherwise.
    pub async fn start(config: ServerConfig) -> Self {
        let server = huddle_server::bind(config).await.expect("bind");
        let addr = server.local_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server
                .serve_until(async move {
                    let _ = stopped.await;
                })
                .await
                .expect("serve");
        });
        Self {
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// A dev-login server with defaults.
    pub async fn dev() -> Self {
        Self::start(dev_config()).await
    }

    /// Graceful shutdown, waiting until it is done.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(WAIT, task)
                .await
                .expect("server stops in time")
                .expect("join");
        }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Dev login, admin key, fast timers.
pub fn dev_config() -> ServerConfig {
    ServerConfig {
        api_key: Some("admin-key".into()),
        hub: HubConfig {
            dev_login: true,
            ..HubConfig::default()
        },
        ..ServerConfig::default()
    }
}

/// A protocol client.
pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    events: VecDeque<ServerEvent>,
    pub uid: String,
    pub auth_token: String,
    /// The groups the login answer listed.
    pub groups: Vec<huddle_protocol::GroupInfo>,
}

/// How a connection ended.
#[derive(Debug, PartialEq)]
pub enum Closed {
    /// A close frame with this code.
    Code(u16),
    /// The stream ended without a close frame.
    Dropped,
}

impl Client {
    /// Connects without logging in.
    pub async fn connect(server: &TestServer) -> Self {
        Self::connect_url(&server.ws_url()).await
    }

    /// Connects to a WebSocket URL without logging in.
    pub async fn connect_url(url: &str) -> Self {
        let (ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true)
            .await
            .expect("connect");
        Self {
            ws,
            next_id: 0,
            events: VecDeque::new(),
            uid: String::new(),
            auth_token: String::new(),
            groups: Vec::new(),
        }
    }

    /// Connects and logs in by uid (dev login).
    pub async fn login(server: &TestServer, uid: &str) -> Self {
        Self::login_url(&server.ws_url(), uid).await
    }

    /// Connects to a WebSocket URL and logs in by uid (dev login).
    pub async fn login_url(url: &str, uid: &str) -> Self {
        let mut client = Self::connect_url(url).await;
        match client
            .request(Request::Login {
                uid: uid.into(),
                auth_token: None,
                name: None,
            })
            .await
        {
            Ok(Reply::LoggedIn {
                auth_token, groups, ..
            }) => {
                client.uid = uid.into();
                client.auth_token = auth_token;
                client.groups = groups;
            }
            other => panic!("login {uid}: {other:?}"),
        }
        client
    }

    pub async fn send_text(&mut self, text: impl Into<String>) {
        self.ws
            .send(Message::Text(text.into().into()))
            .await
            .expect("send");
    }

    /// The socket, for raw sends.
    pub fn ws_mut(&mut self) -> &mut WebSocketStream<MaybeTlsStream<TcpStream>> {
        &mut self.ws
    }

    /// Sends text, reporting a closed socket instead of panicking.
    pub async fn try_send_text(&mut self, text: &str) -> Result<(), ()> {
        self.ws
            .send(Message::Text(text.to_owned().into()))
            .await
            .map_err(|_| ())
    }

    /// The next frame of any kind, or how the connection closed; `None` on timeout.
    pub async fn next_any(&mut self) -> Option<Result<ServerFrame, Closed>> {
        self.next_frame().await
    }

    async fn next_frame(&mut self) -> Option<Result<ServerFrame, Closed>> {
        loop {
            let message = tokio::time::timeout(WAIT, self.ws.next()).await.ok()?;
            match message {
                Some(Ok(Message::Text(text))) => {
                    let frame: ServerFrame = serde_json::from_str(text.as_str())
                        .unwrap_or_else(|e| panic!("server sent unparsable frame {text}: {e}"));
                    return Some(Ok(frame));
                }
                Some(Ok(Message::Close(frame))) => {
                    return Some(Err(
                        frame.map_or(Closed::Dropped, |f| Closed::Code(u16::from(f.code)))
                    ));
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Some(Err(Closed::Dropped)),
            }
        }
    }

    /// Sends a request and waits for its answer (buffering events that arrive meanwhile).
    pub async fn request(&mut self, request: Request) -> Result<Reply, ErrorBody> {
        self.next_id += 1;
        let id = self.next_id;
        let frame = ClientFrame {
            v: 1,
            id: Some(id),
            request,
        };
        self.send_text(serde_json::to_string(&frame).expect("json"))
            .await;
        self.answer(id).await
    }

    /// Waits for the answer to request `id`.
    pub async fn answer(&mut self, id: u64) -> Result<Reply, ErrorBody> {
        loop {
            let frame = self
                .next_frame()
                .await
                .expect("an answer in time")
                .expect("connection open");
            match (frame.re, frame.payload) {
                (Some(re), ServerPayload::Reply(reply)) if re == id => return Ok(reply),
                (Some(re), ServerPayload::Error { error, .. }) if re == id => return Err(error),
                (_, ServerPayload::Event(event)) => self.events.push_back(event),
                (re, other) => panic!("unexpected frame re={re:?}: {other:?}"),
            }
        }
    }

    /// The error code of a request that must fail.
    pub async fn error_code(&mut self, request: Request) -> ErrorCode {
        match self.request(request).await {
            Err(error) => error.code,
            Ok(reply) => panic!("expected an error, got {reply:?}"),
        }
    }

    /// The next event.
    pub async fn event(&mut self) -> ServerEvent {
        if let Some(event) = self.events.pop_front() {
            return event;
        }
        let frame = self
            .next_frame()
            .await
            .expect("an event in time")
            .expect("connection open");
        match frame.payload {
            ServerPayload::Event(event) => event,
            other => panic!("expected an event, got {other:?}"),
        }
    }

    /// The next event, which must match `pred`; events before it that do not are skipped
    /// only if they are presence updates.
    pub async fn event_where(
        &mut self,
        what: &str,
        pred: impl Fn(&ServerEvent) -> bool,
    ) -> ServerEvent {
        loop {
            let event = self.event().await;
            if pred(&event) {
                return event;
            }
            assert!(
                matches!(event, ServerEvent::Presence(_)),
                "waiting for {what}, got {event:?}"
            );
        }
    }

    /// Asserts that no event other than presence arrives for `ms`.
    pub async fn no_event_for(&mut self, ms: u64) {
        self.events
            .retain(|e| !matches!(e, ServerEvent::Presence(_)));
        assert!(
            self.events.is_empty(),
            "unexpected events already received: {:?}",
            self.events
        );
        let deadline = tokio::time::Instant::now() + Duration::from_millis(ms);
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return,
                Ok(Some(Ok(Message::Text(text)))) => {
                    let frame: ServerFrame = serde_json::from_str(text.as_str()).expect("frame");
                    if !matches!(
                        frame.payload,
                        ServerPayload::Event(ServerEvent::Presence(_))
                    ) {
                        panic!("unexpected frame: {text}");
                    }
                }
                Ok(other) => panic!("unexpected: {other:?}"),
            }
        }
    }

    /// Waits for the connection to close; returns how.
    pub async fn closed(&mut self) -> Closed {
        loop {
            match self.next_frame().await {
                None => panic!("connection still open"),
                Some(Err(closed)) => return closed,
                Some(Ok(_)) => continue,
            }
        }
    }

    /// Calls `receiver` (a user), returning the session id.
    pub async fn call_user(&mut self, receiver: &str) -> String {
        match self
            .request(Request::InitiateCall {
                receiver_id: receiver.into(),
                receiver_type: ReceiverType::User,
                call_type: CallType::Video,
                timeout_secs: None,
            })
            .await
        {
            Ok(Reply::Call { call }) => call.session_id,
            other => panic!("initiate: {other:?}"),
        }
    }

    /// Gets a call token for a session.
    pub async fn token(&mut self, session_id: &str) -> String {
        let auth_token = self.auth_token.clone();
        match self
            .request(Request::GenerateToken {
                session_id: session_id.into(),
                auth_token,
            })
            .await
        {
            Ok(Reply::Token { call_token, .. }) => call_token,
            other => panic!("token: {other:?}"),
        }
    }

    /// Generates a token and joins the session; returns the participant uids.
    pub async fn join(&mut self, session_id: &str) -> Vec<String> {
        let call_token = self.token(session_id).await;
        match self.request(join_request(session_id, &call_token)).await {
            Ok(Reply::Joined { participants, .. }) => {
                participants.into_iter().map(|p| p.uid).collect()
            }
            other => panic!("join: {other:?}"),
        }
    }
}

/// A join request with defaults.
pub fn join_request(session_id: &str, call_token: &str) -> Request {
    Request::JoinSession {
        session_id: session_id.into(),
        call_token: call_token.into(),
        idle_timeout_secs: None,
        audio_muted: false,
        video_paused: false,
    }
}

/// A minimal HTTP/1.1 request on loopback; returns (status, body).
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    let body = body.unwrap_or("");
    let auth = key
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let (status, _, body) = raw_http(addr, &request).await;
    (status, body)
}

/// Sends `request` as it is and reads the whole answer: (status, head, body).
pub async fn raw_http(addr: SocketAddr, request: &str) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    tokio::time::timeout(WAIT, stream.read_to_string(&mut response))
        .await
        .expect("in time")
        .expect("read");
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    (status, head.to_owned(), body.to_owned())
}
