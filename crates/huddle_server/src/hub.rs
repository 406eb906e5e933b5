//! The server's brain: identity, the ringing flow, sessions and relaying, as a state machine.
//!
//! [`Hub`] never touches a socket and never reads the clock: the network layer feeds it
//! connections, frames and the time ([`Hub::connect`], [`Hub::handle`], [`Hub::disconnect`],
//! [`Hub::tick`]) and sends what it queues ([`Hub::drain`]: frames to connections, closes).
//! Tests drive it directly, with made-up times. Durable facts (users, tokens, call logs) go
//! to the [`Store`] as they happen.
//!
//! - **Ringing**: `initiate_call` rings the receiver (every online member of a group),
//!   auto-rejecting with `busy` a receiver already in a call; `accept_call`,
//!   `reject_call` (`rejected`/`busy`, or `cancelled` by the caller), `end_call`; a call
//!   nobody answers becomes `unanswered` after its timeout.
//! - **Sessions**: `join_session` needs a call token for that session and user; peers'
//!   signals are relayed to one participant, state changes to all. A 1:1 session ends when
//!   either side leaves, a group session when the last leaves; someone alone for the idle
//!   timeout is timed out. A participant whose connection drops keeps their place for a
//!   grace period, so a reconnecting client can join again and carry on.

use std::collections::HashMap;

use huddle_protocol::messages::{is_valid_session_id, is_valid_uid};
use huddle_protocol::{
    Call, CallLogQuery, CallStatus, CallType, ClientFrame, ErrorCode, MediaRoute, PROTOCOL_VERSION,
    PeerSignal, Presence, ReceiverType, Reply, Request, ServerEvent, ServerFrame, SessionEndReason,
    SessionParticipant, SimulcastLayer, StateChange, User,
};

use crate::ice::IceServersConfig;
use crate::sfu::{SfuCommand, SfuLeg, SfuNews};
use crate::store::{NewCallLog, Store, StoreError};
use crate::token::{self, CallClaims, TokenError};

/// Identifies one client connection.
pub type ConnId = u64;

/// What the network layer must do.
#[derive(Clone, Debug, PartialEq)]
pub enum Out {
    /// Send a frame to a connection.
    Send(ConnId, ServerFrame),
    /// Close a connection with a WebSocket close code and reason.
    Close(ConnId, u16, String),
    /// Ask the SFU (Janus) for something (only with [`HubConfig::sfu_above`] set).
    Sfu(SfuCommand),
}

/// Tunables of the hub.
#[derive(Clone, Debug)]
pub struct HubConfig {
    /// Log in by uid alone, creating the user.
    pub dev_login: bool,
    /// Default ringing timeout.
    pub ring_timeout_ms: u64,
    /// Longest ringing timeout a client may ask for.
    pub max_ring_timeout_ms: u64,
    /// Call token lifetime.
    pub token_ttl_secs: u64,
    /// How long a participant whose connection dropped keeps their place.
    pub reconnect_grace_ms: u64,
    /// Default idle timeout (alone in a session).
    pub idle_timeout_ms: u64,
    /// With dev login: every user who logs in by uid joins this group (guid), so that
    /// everyone on a development or embedded server sees everyone as a contact.
    pub dev_lobby: Option<String>,
    /// STUN and TURN servers handed out with each `join_session` answer.
    pub ice: IceServersConfig,
    /// With an SFU: sessions with more participants than this go through it (0: every
    /// session), and go back to a mesh once down to half of it or fewer (a call of five
    /// with the default 4 moves to the SFU, and back when two are left); `None`: every
    /// session is a mesh.
    pub sfu_above: Option<usize>,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            dev_login: false,
            ring_timeout_ms: 45_000,
            max_ring_timeout_ms: 600_000,
            token_ttl_secs: 3_600,
            reconnect_grace_ms: 15_000,
            idle_timeout_ms: 180_000,
            dev_lobby: None,
            sfu_above: None,
            ice: IceServersConfig {
                turn_credential_ttl_secs: crate::ice::DEFAULT_TURN_CREDENTIAL_TTL_SECS,
                ..IceServersConfig::default()
            },
        }
    }
}

/// A refused request: a stable code and a reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubError {
    /// Stable code.
    pub code: ErrorCode,
    /// Why.
    pub message: String,
}

impl HubError {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl From<StoreError> for HubError {
    fn from(err: StoreError) -> Self {
        tracing::error!("{err}");
        HubError::new(ErrorCode::ApiError, "the server could not store the change")
    }
}

impl From<RandomnessError> for HubError {
    fn from(err: RandomnessError) -> Self {
        tracing::error!("{err}");
        HubError::new(
            ErrorCode::ApiError,
            "the server has no randomness to make an unguessable id",
        )
    }
}

impl From<InternalError> for HubError {
    fn from(err: InternalError) -> Self {
        match err {
            InternalError::Store(err) => err.into(),
            InternalError::Randomness(err) => err.into(),
        }
    }
}

/// The operating system gave no random bytes. The hub never falls back on anything weaker
/// (a clock, a counter) for its secret, auth tokens or session ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("no randomness from the operating system: {0}")]
pub struct RandomnessError(getrandom::Error);

/// A failure of the server itself rather than a refused request: starting the hub
/// ([`Hub::new`]) or issuing an auth token ([`Hub::issue_auth_token`]).
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum InternalError {
    /// The store failed (reading or keeping the token secret, recording an auth token).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No randomness for a new secret or auth token.
    #[error(transparent)]
    Randomness(#[from] RandomnessError),
}

type HubResult<T> = Result<T, HubError>;

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct LiveCall {
    call: Call,
    /// Receivers still ringing.
    ringing: Vec<String>,
    /// Receivers who accepted.
    accepted: Vec<String>,
    /// Who left its session while others stayed (a group call goes on without them).
    left: Vec<String>,
    deadline_ms: u64,
}

impl LiveCall {
    /// Whether `uid` is part of this call: its caller or someone who accepted (who may
    /// join its session, and join it again after leaving).
    fn involves(&self, uid: &str) -> bool {
        self.call.initiator.uid == uid || self.accepted.iter().any(|u| u == uid)
    }

    /// Whether this call keeps `uid` from another: part of it and not gone from its session
    /// (a group call that others stay in goes on without them).
    fn holds(&self, uid: &str) -> bool {
        self.involves(uid) && !self.left.iter().any(|u| u == uid)
    }
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Member {
    info: SessionParticipant,
    /// This node's connection (a snapshot carries where it is in its own list, see
    /// [`replica::SessionSnapshot`]).
    #[serde(skip)]
    conn: Option<ConnId>,
    gone_since: Option<u64>,
    /// Peer signals that arrived while they were reconnecting, delivered when they rejoin.
    held_signals: Vec<ServerEvent>,
    /// The mirrored connection they were on when its node was given up for gone: if that
    /// node comes back with it (Redis was away, not the node), they are on it again.
    #[serde(skip)]
    lost_conn: Option<ConnId>,
}

/// Most peer signals held for a reconnecting participant.
const MAX_HELD_SIGNALS: usize = 64;

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Session {
    /// Mesh, or through the SFU (a session only moves to the SFU, and back to the mesh
    /// only if the SFU fails).
    route: MediaRoute,
    /// The SFU could not place this session's room: it stays a mesh.
    sfu_failed: bool,
    /// The session went through the SFU and is back on the mesh: from then on its members'
    /// signals to the SFU's pseudo-peers (the last ones raced `media_route_changed`) are
    /// dropped as stale rather than refused.
    left_sfu: bool,
    one_to_one: bool,
    members: Vec<Member>,
    idle_timeout_ms: u64,
    alone_since: Option<u64>,
    /// Through the SFU: its room as last reported ([`SfuNews::RoomState`]), for another node
    /// of a cluster to adopt it if this one dies.
    #[serde(default)]
    sfu_room: Option<serde_json::Value>,
}

impl Session {
    fn member(&self, uid: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.info.uid == uid)
    }

    fn member_mut(&mut self, uid: &str) -> Option<&mut Member> {
        self.members.iter_mut().find(|m| m.info.uid == uid)
    }

    fn participants(&self) -> Vec<SessionParticipant> {
        self.members.iter().map(|m| m.info.clone()).collect()
    }
}

/// Finished calls remembered to answer late requests with the right code.
const FINISHED_MEMORY: usize = 50_000;

/// How often the hub notes in the store that the server is alive.
const LAST_ALIVE_EVERY_MS: u64 = 1_000;

/// The server state machine.
pub struct Hub {
    store: Store,
    secret: Vec<u8>,
    config: HubConfig,
    conns: HashMap<ConnId, Option<String>>,
    online: HashMap<String, Vec<ConnId>>,
    calls: HashMap<String, LiveCall>,
    finished: HashMap<String, CallStatus>,
    /// When the store last heard that the server is alive (see [`Store::set_last_alive`]).
    last_alive_written: u64,
    finished_order: std::collections::VecDeque<String>,
    sessions: HashMap<String, Session>,
    out: Vec<Out>,
    /// Events that follow the reply to the request being handled.
    after_reply: Vec<Out>,
    /// Connections of other nodes of a cluster, mirrored here (see [`replica`]).
    remote_conns: std::collections::HashSet<ConnId>,
    /// Users other nodes hold in their calls, by node (see [`Hub::set_remote_held`]).
    remote_held: HashMap<String, std::collections::HashSet<String>>,
}

/// `bytes` random bytes from the operating system, as lowercase hex. There is no weaker
/// fallback: what it makes (the token-signing secret, auth tokens, session ids) must not be
/// guessable.
fn random_hex(bytes: usize) -> Result<String, RandomnessError> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(RandomnessError)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// Both arguments present (`INVALID_ARGUMENT_EXCEPTION`) and the session id well formed
/// (`ERR_INVALID_SESSION_ID`).
fn check_session_arguments(session_id: &str, token: &str, token_name: &str) -> HubResult<()> {
    if session_id.is_empty() || token.is_empty() {
        return Err(HubError::new(
            ErrorCode::InvalidArgument,
            format!("session_id and {token_name} are both required"),
        ));
    }
    if !is_valid_session_id(session_id) {
        return Err(HubError::new(
            ErrorCode::InvalidSessionId,
            "malformed session id",
        ));
    }
    Ok(())
}

impl Hub {
    /// A hub over `store` (which also keeps the token-signing secret).
    ///
    /// The first start on a store makes the secret from the operating system's randomness;
    /// without randomness it fails ([`InternalError::Randomness`]) rather than make a weaker
    /// one. Later starts reuse the stored secret.
    pub fn new(store: Store, config: HubConfig) -> Result<Self, InternalError> {
        Self::with_fresh_secret(store, config, || random_hex(32))
    }

    /// [`Hub::new`], making a missing secret with `fresh_secret`.
    fn with_fresh_secret(
        store: Store,
        config: HubConfig,
        fresh_secret: impl FnOnce() -> Result<String, RandomnessError>,
    ) -> Result<Self, InternalError> {
        let secret = store.token_secret(|| {
            fresh_secret()
                .map(String::into_bytes)
                .map_err(InternalError::from)
        })?;
        Ok(Self {
            store,
            secret,
            config,
            conns: HashMap::new(),
            online: HashMap::new(),
            calls: HashMap::new(),
            finished: HashMap::new(),
            last_alive_written: 0,
            finished_order: Default::default(),
            sessions: HashMap::new(),
            out: Vec::new(),
            after_reply: Vec::new(),
            remote_conns: Default::default(),
            remote_held: HashMap::new(),
        })
    }

    /// The store, for the admin API.
    pub fn store(&mut self) -> &mut Store {
        &mut self.store
    }

    /// Takes what must be sent.
    pub fn drain(&mut self) -> Vec<Out> {
        std::mem::take(&mut self.out)
    }

    /// Number of open connections.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Issues a new auth token for `uid` (admin API, dev login).
    pub fn issue_auth_token(&mut self, uid: &str, now_ms: u64) -> Result<String, InternalError> {
        let token = random_hex(24)?;
        self.store.add_auth_token(&token, uid, now_ms)?;
        Ok(token)
    }

    /// A new connection.
    pub fn connect(&mut self, conn: ConnId) {
        self.conns.insert(conn, None);
    }

    /// Whether the connection has logged in.
    pub fn is_logged_in(&self, conn: ConnId) -> bool {
        self.conns.get(&conn).is_some_and(Option::is_some)
    }

    fn send_to_user(&mut self, uid: &str, event: ServerEvent) {
        if let Some(conns) = self.online.get(uid) {
            for conn in conns {
                self.after_reply
                    .push(Out::Send(*conn, ServerFrame::event(event.clone())));
            }
        }
    }

    /// `uid` answered a call on `conn` (accepted, or declined): their other connections (other
    /// devices) stop ringing, with `incoming_call_cancelled` carrying the answer as the call's
    /// status (`ongoing`: accepted elsewhere; `rejected`/`busy`: declined elsewhere).
    fn answered_elsewhere(&mut self, uid: &str, conn: ConnId, answer: &HubResult<Reply>) {
        let Ok(Reply::Call { call }) = answer else {
            return;
        };
        let others: Vec<ConnId> = self
            .online
            .get(uid)
            .map(|conns| conns.iter().copied().filter(|c| *c != conn).collect())
            .unwrap_or_default();
        for other in others {
            self.send_to_conn(
                other,
                ServerEvent::IncomingCallCancelled { call: call.clone() },
            );
        }
    }

    /// Calls that rang `uid` while they were away ring on their new connection `conn`.
    fn ring_pending_calls(&mut self, conn: ConnId, uid: &str) {
        let pending: Vec<Call> = self
            .calls
            .values()
            .filter(|c| c.ringing.iter().any(|r| r == uid))
            .map(|c| c.call.clone())
            .collect();
        for call in pending {
            self.send_to_conn(conn, ServerEvent::IncomingCallReceived { call });
        }
    }

    fn send_to_conn(&mut self, conn: ConnId, event: ServerEvent) {
        self.after_reply
            .push(Out::Send(conn, ServerFrame::event(event)));
    }

    fn flush_after_reply(&mut self) {
        let events = std::mem::take(&mut self.after_reply);
        self.out.extend(events);
    }

    /// A connection closed (or dropped).
    pub fn disconnect(&mut self, conn: ConnId, now_ms: u64) {
        let Some(Some(uid)) = self.conns.remove(&conn) else {
            return;
        };
        let last = match self.online.get_mut(&uid) {
            Some(conns) => {
                conns.retain(|c| *c != conn);
                conns.is_empty()
            }
            None => false,
        };
        if last {
            self.online.remove(&uid);
            self.announce_presence(&uid, false);
        }
        for session in self.sessions.values_mut() {
            if let Some(member) = session.members.iter_mut().find(|m| m.conn == Some(conn)) {
                member.conn = None;
                member.gone_since = Some(now_ms);
            }
        }
        self.flush_after_reply();
    }

    fn announce_presence(&mut self, uid: &str, online: bool) {
        let Ok(Some(user)) = self.store.user(uid) else {
            return;
        };
        let contacts = self.store.contacts(uid).unwrap_or_default();
        for contact in contacts {
            self.send_to_user(
                &contact.uid,
                ServerEvent::Presence(Presence {
                    user: user.clone(),
                    online,
                }),
            );
        }
    }

    /// Handles one frame from a connection.
    pub fn handle(&mut self, conn: ConnId, frame: ClientFrame, now_ms: u64) {
        let id = frame.id;
        let result = if frame.v != PROTOCOL_VERSION {
            Err(HubError::new(
                ErrorCode::ApiError,
                format!(
                    "unsupported protocol version {} (this server speaks {PROTOCOL_VERSION})",
                    frame.v
                ),
            ))
        } else {
            self.dispatch(conn, frame.request, now_ms)
        };
        let answer = match result {
            Ok(reply) => ServerFrame::reply(id, reply),
            Err(err) => {
                self.after_reply.clear();
                ServerFrame::error(id, err.code, err.message)
            }
        };
        self.out.push(Out::Send(conn, answer));
        self.flush_after_reply();
    }

    /// Answers a frame that could not be parsed.
    pub fn reject_malformed(&mut self, conn: ConnId, id: Option<u64>, reason: String) {
        self.out.push(Out::Send(
            conn,
            ServerFrame::error(id, ErrorCode::InvalidArgument, reason),
        ));
    }

    fn dispatch(&mut self, conn: ConnId, request: Request, now: u64) -> HubResult<Reply> {
        if let Request::Login {
            uid,
            auth_token,
            name,
        } = request
        {
            return self.login(conn, uid, auth_token, name, now);
        }
        if let Request::Ping {} = request {
            return Ok(Reply::Pong);
        }
        let me = self
            .conns
            .get(&conn)
            .cloned()
            .flatten()
            .ok_or_else(|| HubError::new(ErrorCode::UserNotLoggedIn, "log in first"))?;
        match request {
            Request::Login { .. } | Request::Ping {} => unreachable!("handled above"),
            Request::InitiateCall {
                receiver_id,
                receiver_type,
                call_type,
                timeout_secs,
            } => self.initiate_call(
                &me,
                receiver_id,
                receiver_type,
                call_type,
                timeout_secs,
                now,
            ),
            Request::AcceptCall { session_id } => {
                let answer = self.accept_call(&me, &session_id, now);
                self.answered_elsewhere(&me, conn, &answer);
                answer
            }
            Request::RejectCall { session_id, status } => {
                let answer = self.reject_call(&me, &session_id, status, now);
                if status != CallStatus::Cancelled {
                    self.answered_elsewhere(&me, conn, &answer);
                }
                answer
            }
            Request::EndCall { session_id } => self.end_call(&me, &session_id, now),
            Request::GenerateToken {
                session_id,
                auth_token,
            } => self.generate_token(&me, &session_id, &auth_token, now),
            Request::JoinSession {
                session_id,
                call_token,
                idle_timeout_secs,
                audio_muted,
                video_paused,
            } => self.join_session(
                conn,
                &me,
                &session_id,
                &call_token,
                idle_timeout_secs,
                (audio_muted, video_paused),
                now,
            ),
            Request::LeaveSession { session_id } => {
                self.session_of(&me, &session_id)?;
                self.leave(&session_id, &me, now);
                Ok(Reply::Ok)
            }
            Request::Signal {
                session_id,
                to,
                signal,
            } => self.relay_signal(&me, &session_id, &to, signal),
            Request::State { session_id, change } => self.change_state(&me, &session_id, change),
            Request::ListCallLogs { query } => self.list_call_logs(&me, &query),
        }
    }

    fn login(
        &mut self,
        conn: ConnId,
        uid: String,
        auth_token: Option<String>,
        name: Option<String>,
        now: u64,
    ) -> HubResult<Reply> {
        if self.is_logged_in(conn) {
            return Err(HubError::new(
                ErrorCode::ApiError,
                "already logged in on this connection",
            ));
        }
        if !is_valid_uid(&uid) {
            return Err(HubError::new(
                ErrorCode::InvalidArgument,
                "uid must be 1-64 characters of A-Z a-z 0-9 . _ @ -",
            ));
        }
        let (user, token) = match auth_token {
            Some(token) => {
                if self.store.auth_token_owner(&token)?.as_deref() != Some(uid.as_str()) {
                    return Err(HubError::new(
                        ErrorCode::ApiError,
                        "invalid auth token for this uid",
                    ));
                }
                let user = self
                    .store
                    .user(&uid)?
                    .ok_or_else(|| HubError::new(ErrorCode::ApiError, "unknown user"))?;
                (user, token)
            }
            None if self.config.dev_login => {
                let user = match self.store.user(&uid)? {
                    Some(user) => user,
                    None => {
                        let user = User {
                            uid: uid.clone(),
                            name: name.unwrap_or_else(|| uid.clone()),
                            avatar: None,
                        };
                        self.store.upsert_user(&user, None)?;
                        user
                    }
                };
                if let Some(lobby) = &self.config.dev_lobby {
                    self.store.add_group_member(lobby, "Lobby", &uid)?;
                }
                // Dev login lets anyone be anyone: a token proves nothing more here, so the
                // user's newest one is reused rather than a row added per login.
                let token = match self.store.latest_auth_token(&uid)? {
                    Some(token) => token,
                    None => self.issue_auth_token(&uid, now)?,
                };
                (user, token)
            }
            None => {
                return Err(HubError::new(
                    ErrorCode::ApiError,
                    "an auth token is required (dev login is off)",
                ));
            }
        };
        self.conns.insert(conn, Some(uid.clone()));
        let conns = self.online.entry(uid.clone()).or_default();
        conns.push(conn);
        if conns.len() == 1 {
            self.announce_presence(&uid, true);
        }
        self.ring_pending_calls(conn, &uid);
        let contacts = self
            .store
            .contacts(&uid)?
            .into_iter()
            .map(|user| {
                let online = self.online.contains_key(&user.uid);
                Presence { user, online }
            })
            .collect();
        let groups = self.store.groups_of(&uid)?;
        Ok(Reply::LoggedIn {
            user,
            auth_token: token,
            contacts,
            groups,
        })
    }

    /// Whether `uid` is in a call: ringing out, in an ongoing call, or in a session.
    fn in_call(&self, uid: &str) -> bool {
        self.calls.values().any(|c| c.holds(uid))
            || self.sessions.values().any(|s| s.member(uid).is_some())
            || self.remote_held.values().any(|held| held.contains(uid))
    }

    fn initiate_call(
        &mut self,
        me: &str,
        receiver: String,
        receiver_type: ReceiverType,
        call_type: CallType,
        timeout_secs: Option<u32>,
        now: u64,
    ) -> HubResult<Reply> {
        if !is_valid_uid(&receiver) {
            return Err(HubError::new(
                ErrorCode::InvalidArgument,
                "invalid receiver id",
            ));
        }
        if receiver_type == ReceiverType::User && receiver == me {
            return Err(HubError::new(
                ErrorCode::CallingSelf,
                "you cannot call yourself",
            ));
        }
        if self
            .calls
            .values()
            .any(|c| c.call.initiator.uid == me && c.call.status == CallStatus::Initiated)
        {
            return Err(HubError::new(
                ErrorCode::CallAlreadyInitiated,
                "you already placed a call that is ringing",
            ));
        }
        if self.in_call(me) {
            return Err(HubError::new(
                ErrorCode::CallInProgress,
                "you are already in a call",
            ));
        }
        let receivers: Vec<String> = match receiver_type {
            ReceiverType::User => {
                if self.store.user(&receiver)?.is_none() {
                    return Err(HubError::new(
                        ErrorCode::ApiError,
                        format!("unknown user `{receiver}`"),
                    ));
                }
                vec![receiver.clone()]
            }
            ReceiverType::Group => {
                let members = self.store.group_members(&receiver)?.ok_or_else(|| {
                    HubError::new(ErrorCode::ApiError, format!("unknown group `{receiver}`"))
                })?;
                if !members.iter().any(|m| m == me) {
                    return Err(HubError::new(
                        ErrorCode::ApiError,
                        "you are not a member of this group",
                    ));
                }
                members.into_iter().filter(|m| m != me).collect()
            }
        };
        let initiator = self
            .store
            .user(me)?
            .ok_or_else(|| HubError::new(ErrorCode::UserNotLoggedIn, "unknown user"))?;
        let session_id = format!("call-{}", random_hex(12)?);
        let mut call = Call {
            session_id: session_id.clone(),
            status: CallStatus::Initiated,
            call_type,
            receiver_type,
            initiator,
            receiver: receiver.clone(),
            initiated_at: now,
        };
        self.store.insert_call(&NewCallLog {
            session_id: &session_id,
            call_type,
            status: CallStatus::Initiated,
            receiver_type,
            initiator: me,
            receiver: &receiver,
            initiated_at: now,
        })?;
        let timeout_ms = timeout_secs
            .map(|s| u64::from(s.max(1)) * 1000)
            .unwrap_or(self.config.ring_timeout_ms)
            .min(self.config.max_ring_timeout_ms);
        let mut ringing = Vec::new();
        for uid in receivers {
            let busy = self.in_call(&uid) && self.store.auto_busy(&uid)?;
            if busy && receiver_type == ReceiverType::User {
                call.status = CallStatus::Busy;
                self.remember_finished(&session_id, CallStatus::Busy);
                self.store
                    .set_call_status(&session_id, CallStatus::Busy, now)?;
                let reply_call = Call {
                    status: CallStatus::Initiated,
                    ..call.clone()
                };
                self.send_to_user(me, ServerEvent::OutgoingCallRejected { call });
                return Ok(Reply::Call { call: reply_call });
            }
            if !busy {
                ringing.push(uid);
            }
        }
        for uid in &ringing {
            self.send_to_user(
                uid,
                ServerEvent::IncomingCallReceived { call: call.clone() },
            );
        }
        self.calls.insert(
            session_id,
            LiveCall {
                call: call.clone(),
                ringing,
                accepted: Vec::new(),
                left: Vec::new(),
                deadline_ms: now + timeout_ms,
            },
        );
        Ok(Reply::Call { call })
    }

    fn remember_finished(&mut self, session_id: &str, status: CallStatus) {
        if self
            .finished
            .insert(session_id.to_owned(), status)
            .is_none()
        {
            self.finished_order.push_back(session_id.to_owned());
            while self.finished_order.len() > FINISHED_MEMORY {
                if let Some(old) = self.finished_order.pop_front() {
                    self.finished.remove(&old);
                }
            }
        }
    }

    /// How a ringing-flow call that is not live any more ended: remembered since it ended,
    /// or (after a restart, or once forgotten) from its log. `None` for a live call or an id
    /// no ringing-flow call ever had.
    fn ended_ringing_call(&self, session_id: &str) -> HubResult<Option<CallStatus>> {
        if self.calls.contains_key(session_id) {
            return Ok(None);
        }
        if let Some(status) = self.finished.get(session_id) {
            return Ok(Some(*status));
        }
        Ok(self.store.ringing_call_status(session_id)?)
    }

    /// The error for acting on a call that is not live.
    fn not_live(&self, session_id: &str) -> HubError {
        if !is_valid_session_id(session_id) {
            return HubError::new(ErrorCode::InvalidSessionId, "malformed session id");
        }
        let status = self
            .finished
            .get(session_id)
            .copied()
            .or_else(|| self.store.ringing_call_status(session_id).ok().flatten());
        call_over(status)
    }

    fn live_call(&mut self, session_id: &str) -> HubResult<&mut LiveCall> {
        if !self.calls.contains_key(session_id) {
            return Err(self.not_live(session_id));
        }
        self.calls
            .get_mut(session_id)
            .ok_or_else(|| HubError::new(ErrorCode::CallNotFound, "no such call"))
    }

    fn accept_call(&mut self, me: &str, session_id: &str, now: u64) -> HubResult<Reply> {
        let live = self.live_call(session_id)?;
        if live.accepted.iter().any(|u| u == me) {
            return Err(HubError::new(
                ErrorCode::CallAlreadyJoined,
                "you already accepted this call",
            ));
        }
        if !live.ringing.iter().any(|u| u == me) {
            return Err(HubError::new(
                ErrorCode::CallNotFound,
                "this call is not ringing for you",
            ));
        }
        let call = self.mark_accepted(session_id, me, now)?;
        Ok(Reply::Call { call })
    }

    /// `me` accepts a live call that rings for them: the call goes on, the log says so, the
    /// caller hears `outgoing_call_accepted`. Returns the call.
    fn mark_accepted(&mut self, session_id: &str, me: &str, now: u64) -> HubResult<Call> {
        let live = self
            .calls
            .get_mut(session_id)
            .ok_or_else(|| HubError::new(ErrorCode::CallNotFound, "no such call"))?;
        live.ringing.retain(|u| u != me);
        live.accepted.push(me.to_owned());
        live.call.status = CallStatus::Ongoing;
        let call = live.call.clone();
        self.store
            .set_call_status(session_id, CallStatus::Ongoing, now)?;
        self.send_to_user(
            &call.initiator.uid,
            ServerEvent::OutgoingCallAccepted {
                call: call.clone(),
                by: me.to_owned(),
            },
        );
        Ok(call)
    }

    /// A call that will never be answered (rejected, cancelled, unanswered): the caller may
    /// already be waiting in its session, which ends too.
    fn close_waiting_session(&mut self, session_id: &str) {
        if let Some(session) = self.sessions.remove(session_id) {
            for conn in session.members.iter().filter_map(|m| m.conn) {
                self.send_to_conn(
                    conn,
                    ServerEvent::SessionEnded {
                        session_id: session_id.to_owned(),
                        reason: SessionEndReason::Ended,
                    },
                );
            }
        }
    }

    /// Removes a live call with a final status, logging it.
    fn finish_call(&mut self, session_id: &str, status: CallStatus, now: u64) -> Option<LiveCall> {
        let mut live = self.calls.remove(session_id)?;
        live.call.status = status;
        self.remember_finished(session_id, status);
        if let Err(err) = self.store.set_call_status(session_id, status, now) {
            tracing::error!("{err}");
        }
        Some(live)
    }

    fn reject_call(
        &mut self,
        me: &str,
        session_id: &str,
        status: CallStatus,
        now: u64,
    ) -> HubResult<Reply> {
        let live = self.live_call(session_id)?;
        match status {
            CallStatus::Cancelled => {
                if live.call.initiator.uid != me {
                    return Err(HubError::new(
                        ErrorCode::CallNotFound,
                        "only the caller can cancel",
                    ));
                }
                if live.call.status != CallStatus::Initiated {
                    return Err(HubError::new(
                        ErrorCode::CallInProgress,
                        "the call was already accepted: end it instead",
                    ));
                }
                let Some(live) = self.finish_call(session_id, CallStatus::Cancelled, now) else {
                    return Err(self.not_live(session_id));
                };
                self.close_waiting_session(session_id);
                for uid in &live.ringing {
                    self.send_to_user(
                        uid,
                        ServerEvent::IncomingCallCancelled {
                            call: live.call.clone(),
                        },
                    );
                }
                Ok(Reply::Call { call: live.call })
            }
            CallStatus::Rejected | CallStatus::Busy => {
                if !live.ringing.iter().any(|u| u == me) {
                    return Err(HubError::new(
                        ErrorCode::CallNotFound,
                        "this call is not ringing for you",
                    ));
                }
                live.ringing.retain(|u| u != me);
                let group = live.call.receiver_type == ReceiverType::Group;
                let everyone_declined = live.ringing.is_empty() && live.accepted.is_empty();
                let mut call = live.call.clone();
                if !group || everyone_declined {
                    let final_status = if group { CallStatus::Rejected } else { status };
                    if let Some(live) = self.finish_call(session_id, final_status, now) {
                        self.close_waiting_session(session_id);
                        call = live.call;
                        self.send_to_user(
                            &call.initiator.uid,
                            ServerEvent::OutgoingCallRejected { call: call.clone() },
                        );
                    }
                }
                call.status = status;
                Ok(Reply::Call { call })
            }
            other => Err(HubError::new(
                ErrorCode::InvalidArgument,
                format!("reject status must be rejected, busy or cancelled, not {other:?}"),
            )),
        }
    }

    fn end_call(&mut self, me: &str, session_id: &str, now: u64) -> HubResult<Reply> {
        let live = self.live_call(session_id)?;
        if !live.involves(me) {
            return Err(HubError::new(
                ErrorCode::CallNotFound,
                "you are not in this call",
            ));
        }
        if live.call.status == CallStatus::Initiated {
            return self.reject_call(me, session_id, CallStatus::Cancelled, now);
        }
        self.end_session_and_call(session_id, Some(me), SessionEndReason::Ended, now);
        let call = Call {
            status: CallStatus::Ended,
            ..self.finished_call_stub(session_id)
        };
        Ok(Reply::Call { call })
    }

    fn finished_call_stub(&self, session_id: &str) -> Call {
        Call {
            session_id: session_id.to_owned(),
            status: self
                .finished
                .get(session_id)
                .copied()
                .unwrap_or(CallStatus::Ended),
            call_type: CallType::Video,
            receiver_type: ReceiverType::User,
            initiator: User {
                uid: String::new(),
                name: String::new(),
                avatar: None,
            },
            receiver: String::new(),
            initiated_at: 0,
        }
    }

    /// Ends a session (telling its members why) and its live call (telling everyone involved
    /// but `ender` with `call_ended`).
    fn end_session_and_call(
        &mut self,
        session_id: &str,
        ender: Option<&str>,
        reason: SessionEndReason,
        now: u64,
    ) {
        if let Some(session) = self.sessions.remove(session_id) {
            if session.route == MediaRoute::Sfu {
                self.after_reply.push(Out::Sfu(SfuCommand::CloseRoom {
                    session_id: session_id.to_owned(),
                }));
            }
            for member in session.members {
                if Some(member.info.uid.as_str()) == ender {
                    continue;
                }
                if let Some(conn) = member.conn {
                    self.send_to_conn(
                        conn,
                        ServerEvent::SessionEnded {
                            session_id: session_id.to_owned(),
                            reason,
                        },
                    );
                }
            }
        }
        match self.finish_call(session_id, CallStatus::Ended, now) {
            Some(live) => {
                let mut told: Vec<String> = Vec::new();
                let involved =
                    std::iter::once(live.call.initiator.uid.clone()).chain(live.accepted.clone());
                for uid in involved {
                    if Some(uid.as_str()) != ender && !told.contains(&uid) {
                        self.send_to_user(
                            &uid,
                            ServerEvent::CallEnded {
                                call: live.call.clone(),
                            },
                        );
                        told.push(uid);
                    }
                }
                for uid in &live.ringing {
                    self.send_to_user(
                        uid,
                        ServerEvent::IncomingCallCancelled {
                            call: live.call.clone(),
                        },
                    );
                }
            }
            None => {
                // A direct session (no ringing): close its log entry.
                if let Err(err) = self
                    .store
                    .set_call_status(session_id, CallStatus::Ended, now)
                {
                    tracing::error!("{err}");
                }
            }
        }
    }

    fn generate_token(
        &mut self,
        me: &str,
        session_id: &str,
        auth_token: &str,
        now: u64,
    ) -> HubResult<Reply> {
        check_session_arguments(session_id, auth_token, "auth_token")?;
        if self.store.auth_token_owner(auth_token)?.as_deref() != Some(me) {
            return Err(HubError::new(ErrorCode::ApiError, "invalid auth token"));
        }
        // A ringing-flow call that is over stays closed, across restarts too: its id never
        // becomes a direct session.
        if let Some(status) = self.ended_ringing_call(session_id)? {
            return Err(call_over(Some(status)));
        }
        let iat = now / 1000;
        let claims = CallClaims {
            iss: "huddle".into(),
            sub: me.to_owned(),
            sid: session_id.to_owned(),
            iat,
            exp: iat + self.config.token_ttl_secs,
        };
        Ok(Reply::Token {
            call_token: token::sign(&claims, &self.secret),
            expires_at: claims.exp * 1000,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn join_session(
        &mut self,
        conn: ConnId,
        me: &str,
        session_id: &str,
        call_token: &str,
        idle_timeout_secs: Option<u32>,
        (audio_muted, video_paused): (bool, bool),
        now: u64,
    ) -> HubResult<Reply> {
        check_session_arguments(session_id, call_token, "call_token")?;
        let claims =
            token::verify(call_token, &self.secret, now / 1000).map_err(|err| match err {
                TokenError::InvalidSignature => {
                    HubError::new(ErrorCode::TokenInvalidSignature, err.to_string())
                }
                TokenError::Expired { .. } => HubError::new(ErrorCode::ApiError, err.to_string()),
            })?;
        if claims.sid != session_id {
            return Err(HubError::new(
                ErrorCode::ApiError,
                "the call token is for another session",
            ));
        }
        if claims.sub != me {
            return Err(HubError::new(
                ErrorCode::ApiError,
                "the call token belongs to another user",
            ));
        }
        // Rejoining after a dropped connection keeps the place.
        if let Some(member) = self
            .sessions
            .get_mut(session_id)
            .and_then(|s| s.member_mut(me))
        {
            match member.conn {
                Some(current) if current == conn => {
                    return Err(HubError::new(
                        ErrorCode::CallAlreadyJoined,
                        "you already joined this session",
                    ));
                }
                // The same user on a new connection (the old one may be half-open after a
                // network change): the new one takes the place, the old one is closed.
                Some(old) => {
                    self.out
                        .push(Out::Close(old, 1000, "replaced by a new connection".into()))
                }
                None => {}
            }
            member.conn = Some(conn);
            member.gone_since = None;
            let held = std::mem::take(&mut member.held_signals);
            for event in held {
                self.after_reply
                    .push(Out::Send(conn, ServerFrame::event(event)));
            }
            let session = &self.sessions[session_id];
            return Ok(Reply::Joined {
                session_id: session_id.to_owned(),
                participants: session.participants(),
                one_to_one: session.one_to_one,
                ice_servers: self.config.ice.for_user(me, now),
                media_route: session.route,
            });
        }
        if self
            .sessions
            .iter()
            .any(|(id, s)| id != session_id && s.member(me).is_some())
        {
            return Err(HubError::new(
                ErrorCode::CallInProgress,
                "you are in another session",
            ));
        }
        if let Some(status) = self.ended_ringing_call(session_id)? {
            return Err(call_over(Some(status)));
        }
        let one_to_one = match self.calls.get_mut(session_id) {
            Some(live) => {
                if live.ringing.iter().any(|u| u == me)
                    && live.call.receiver_type == ReceiverType::Group
                {
                    // Joining a ringing group call accepts it.
                    self.mark_accepted(session_id, me, now)?;
                }
                let live = &self.calls[session_id];
                if !live.involves(me) {
                    return Err(HubError::new(
                        ErrorCode::ApiError,
                        "you are not part of this call",
                    ));
                }
                live.call.receiver_type == ReceiverType::User
            }
            None => {
                // A direct session: anyone holding a token for it meets here.
                self.store.insert_call(&NewCallLog {
                    session_id,
                    call_type: CallType::Video,
                    status: CallStatus::Ongoing,
                    receiver_type: ReceiverType::Group,
                    initiator: me,
                    receiver: "",
                    initiated_at: now,
                })?;
                false
            }
        };
        let user = self.store.user(me)?.unwrap_or(User {
            uid: me.to_owned(),
            name: me.to_owned(),
            avatar: None,
        });
        let info = SessionParticipant {
            uid: me.to_owned(),
            name: user.name,
            avatar: user.avatar,
            audio_muted,
            video_paused,
            hand_raised: false,
            screen_sharing: false,
        };
        let idle_timeout_ms = idle_timeout_secs
            .map(|s| u64::from(s.max(1)) * 1000)
            .unwrap_or(self.config.idle_timeout_ms);
        let session = self
            .sessions
            .entry(session_id.to_owned())
            .or_insert_with(|| Session {
                route: MediaRoute::Mesh,
                sfu_failed: false,
                left_sfu: false,
                one_to_one,
                members: Vec::new(),
                idle_timeout_ms,
                alone_since: None,
                sfu_room: None,
            });
        let others: Vec<ConnId> = session.members.iter().filter_map(|m| m.conn).collect();
        session.members.push(Member {
            info: info.clone(),
            conn: Some(conn),
            gone_since: None,
            held_signals: Vec::new(),
            lost_conn: None,
        });
        session.alone_since = (session.members.len() == 1).then_some(now);
        let participants = session.participants();
        let to_sfu = session.route == MediaRoute::Mesh
            && !session.sfu_failed
            && self
                .config
                .sfu_above
                .is_some_and(|above| session.members.len() > above);
        if to_sfu {
            session.route = MediaRoute::Sfu;
        }
        let media_route = session.route;
        if to_sfu {
            self.after_reply.push(Out::Sfu(SfuCommand::OpenRoom {
                session_id: session_id.to_owned(),
            }));
        }
        for other in others {
            self.send_to_conn(
                other,
                ServerEvent::ParticipantJoined {
                    session_id: session_id.to_owned(),
                    participant: info.clone(),
                },
            );
            if to_sfu {
                self.send_to_conn(
                    other,
                    ServerEvent::MediaRouteChanged {
                        session_id: session_id.to_owned(),
                        route: MediaRoute::Sfu,
                    },
                );
            }
        }
        if let Some(live) = self.calls.get_mut(session_id) {
            // Back in the call they had left.
            live.left.retain(|u| u != me);
        }
        self.store.add_participant(session_id, me, now)?;
        Ok(Reply::Joined {
            session_id: session_id.to_owned(),
            participants,
            one_to_one,
            ice_servers: self.config.ice.for_user(me, now),
            media_route,
        })
    }

    fn session_of(&self, me: &str, session_id: &str) -> HubResult<&Session> {
        self.sessions
            .get(session_id)
            .filter(|s| s.member(me).is_some())
            .ok_or_else(|| {
                if is_valid_session_id(session_id) {
                    HubError::new(ErrorCode::CallNotFound, "you are not in this session")
                } else {
                    HubError::new(ErrorCode::InvalidSessionId, "malformed session id")
                }
            })
    }

    /// `uid` leaves the session: the others are told; a 1:1 session ends, a group session
    /// ends with its last member.
    fn leave(&mut self, session_id: &str, uid: &str, now: u64) {
        let Some(session) = self.sessions.get_mut(session_id) else {
            return;
        };
        session.members.retain(|m| m.info.uid != uid);
        if session.route == MediaRoute::Sfu {
            self.after_reply.push(Out::Sfu(SfuCommand::Leave {
                session_id: session_id.to_owned(),
                uid: uid.to_owned(),
            }));
        }
        if let Some(live) = self.calls.get_mut(session_id)
            && !live.left.iter().any(|u| u == uid)
        {
            live.left.push(uid.to_owned());
        }
        let Some(session) = self.sessions.get_mut(session_id) else {
            return;
        };
        let remaining: Vec<ConnId> = session.members.iter().filter_map(|m| m.conn).collect();
        let one_to_one = session.one_to_one;
        let empty = session.members.is_empty();
        session.alone_since = (session.members.len() == 1).then_some(now);
        // Down to half the threshold or fewer (and not ending): back to a mesh, the room goes.
        let to_mesh = !(one_to_one || empty)
            && session.route == MediaRoute::Sfu
            && self
                .config
                .sfu_above
                .is_some_and(|above| session.members.len() <= above / 2);
        if to_mesh {
            tracing::info!(
                "sfu: session {session_id} back to the mesh ({} left)",
                session.members.len()
            );
            session.route = MediaRoute::Mesh;
            session.left_sfu = true;
            session.sfu_room = None;
            self.after_reply.push(Out::Sfu(SfuCommand::CloseRoom {
                session_id: session_id.to_owned(),
            }));
        }
        for conn in remaining {
            self.send_to_conn(
                conn,
                ServerEvent::ParticipantLeft {
                    session_id: session_id.to_owned(),
                    uid: uid.to_owned(),
                },
            );
            if to_mesh {
                self.send_to_conn(
                    conn,
                    ServerEvent::MediaRouteChanged {
                        session_id: session_id.to_owned(),
                        route: MediaRoute::Mesh,
                    },
                );
            }
        }
        if one_to_one || empty {
            self.end_session_and_call(session_id, Some(uid), SessionEndReason::Ended, now);
        }
    }

    fn relay_signal(
        &mut self,
        me: &str,
        session_id: &str,
        to: &str,
        signal: PeerSignal,
    ) -> HubResult<Reply> {
        let session = self.session_of(me, session_id)?;
        if session.route == MediaRoute::Sfu {
            let to_member = session.member(to).is_some();
            if let Some(leg) = SfuLeg::of_peer(to) {
                self.after_reply.push(Out::Sfu(SfuCommand::Signal {
                    session_id: session_id.to_owned(),
                    uid: me.to_owned(),
                    leg,
                    signal,
                }));
                return Ok(Reply::Ok);
            }
            if let PeerSignal::VideoWanted {
                paused,
                max_bitrate_bps,
            } = signal
                && to_member
            {
                // The SFU forwards (or not) their camera to us, in the simulcast layer our
                // bitrate cap asks for; they keep sending every layer.
                self.after_reply.push(Out::Sfu(SfuCommand::WantVideo {
                    session_id: session_id.to_owned(),
                    subscriber: me.to_owned(),
                    publisher: to.to_owned(),
                    paused,
                    layer: SimulcastLayer::for_bitrate_cap(max_bitrate_bps),
                }));
                return Ok(Reply::Ok);
            }
        }
        let session = self.session_of(me, session_id)?;
        if matches!(signal, PeerSignal::VideoWanted { .. }) && session.member(to).is_none() {
            // A video wish for someone who just left (sent before the asker heard): stale.
            return Ok(Reply::Ok);
        }
        if session.left_sfu && SfuLeg::of_peer(to).is_some() {
            // For the SFU the session just left (sent before the member heard): stale.
            return Ok(Reply::Ok);
        }
        let target = session.member(to).ok_or_else(|| {
            HubError::new(
                ErrorCode::InvalidArgument,
                format!("no participant `{to}` in this session"),
            )
        })?;
        let target = target.conn;
        let event = ServerEvent::Signal {
            session_id: session_id.to_owned(),
            from: me.to_owned(),
            signal,
        };
        self.deliver_signal(session_id, to, target, event);
        Ok(Reply::Ok)
    }

    /// Sends a signal event to `to`'s connection, or holds it while they reconnect (an
    /// offer is sent only once).
    fn deliver_signal(
        &mut self,
        session_id: &str,
        to: &str,
        conn: Option<ConnId>,
        event: ServerEvent,
    ) {
        match conn {
            Some(conn) => self.send_to_conn(conn, event),
            None => {
                if let Some(member) = self
                    .sessions
                    .get_mut(session_id)
                    .and_then(|s| s.member_mut(to))
                    && member.held_signals.len() < MAX_HELD_SIGNALS
                {
                    member.held_signals.push(event);
                }
            }
        }
    }

    /// What the SFU reports: its signals go to their participant; a room that could not be
    /// placed sends the session back to the mesh (the call goes on); a failed leg is logged
    /// (the client's own connection state shows the failure).
    pub fn handle_sfu_news(&mut self, news: SfuNews) {
        match news {
            SfuNews::Signal {
                session_id,
                uid,
                leg,
                signal,
            } => {
                // A room being closed (the session went back to the mesh) may still speak.
                let Some(member) = self
                    .sessions
                    .get(&session_id)
                    .filter(|s| s.route == MediaRoute::Sfu)
                    .and_then(|s| s.member(&uid))
                else {
                    return;
                };
                let conn = member.conn;
                let event = ServerEvent::Signal {
                    session_id: session_id.clone(),
                    from: leg.peer().to_owned(),
                    signal,
                };
                self.deliver_signal(&session_id, &uid, conn, event);
            }
            SfuNews::RoomFailed { session_id, error } => {
                tracing::warn!("sfu: session {session_id} stays a mesh: {error}");
                let Some(session) = self.sessions.get_mut(&session_id) else {
                    return;
                };
                if session.route != MediaRoute::Sfu {
                    return;
                }
                session.route = MediaRoute::Mesh;
                session.sfu_failed = true;
                session.left_sfu = true;
                session.sfu_room = None;
                let conns: Vec<ConnId> = session.members.iter().filter_map(|m| m.conn).collect();
                for conn in conns {
                    self.send_to_conn(
                        conn,
                        ServerEvent::MediaRouteChanged {
                            session_id: session_id.clone(),
                            route: MediaRoute::Mesh,
                        },
                    );
                }
            }
            SfuNews::RoomState { session_id, state } => {
                if let Some(session) = self
                    .sessions
                    .get_mut(&session_id)
                    .filter(|s| s.route == MediaRoute::Sfu)
                {
                    session.sfu_room = Some(state);
                }
            }
            SfuNews::LegFailed {
                session_id,
                uid,
                leg,
                error,
            } => {
                tracing::warn!("sfu: session {session_id}: {uid}'s {leg:?} leg failed: {error}");
            }
        }
        self.flush_after_reply();
    }

    /// The media route of a session (`None` if there is no such session).
    pub fn media_route(&self, session_id: &str) -> Option<MediaRoute> {
        self.sessions.get(session_id).map(|s| s.route)
    }

    fn change_state(
        &mut self,
        me: &str,
        session_id: &str,
        change: StateChange,
    ) -> HubResult<Reply> {
        self.session_of(me, session_id)?;
        if change == StateChange::Recording(true) {
            self.store.set_has_recording(session_id)?;
        }
        let Some(session) = self.sessions.get_mut(session_id) else {
            return Err(HubError::new(ErrorCode::CallNotFound, "no such session"));
        };
        if let Some(member) = session.member_mut(me) {
            match &change {
                StateChange::AudioMuted(v) => member.info.audio_muted = *v,
                StateChange::VideoPaused(v) => member.info.video_paused = *v,
                StateChange::HandRaised(v) => member.info.hand_raised = *v,
                StateChange::ScreenSharing(v) => member.info.screen_sharing = *v,
                StateChange::Recording(_) | StateChange::SwitchedToVideo(_) => {}
            }
        }
        let others: Vec<ConnId> = session
            .members
            .iter()
            .filter(|m| m.info.uid != me)
            .filter_map(|m| m.conn)
            .collect();
        for conn in others {
            self.send_to_conn(
                conn,
                ServerEvent::ParticipantState {
                    session_id: session_id.to_owned(),
                    uid: me.to_owned(),
                    change: change.clone(),
                },
            );
        }
        Ok(Reply::Ok)
    }

    fn list_call_logs(&mut self, me: &str, query: &CallLogQuery) -> HubResult<Reply> {
        let (logs, total) = self.store.list_calls(Some(me), query)?;
        Ok(Reply::CallLogs { logs, total })
    }

    /// Advances time: unanswered calls, dropped participants past their grace, lonely
    /// participants past their idle timeout.
    pub fn tick(&mut self, now: u64) {
        if now >= self.last_alive_written + LAST_ALIVE_EVERY_MS {
            self.last_alive_written = now;
            if let Err(err) = self.store.set_last_alive(now) {
                tracing::warn!("cannot note the server alive: {err}");
            }
        }
        let unanswered: Vec<String> = self
            .calls
            .iter()
            .filter(|(_, c)| c.call.status == CallStatus::Initiated && c.deadline_ms <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for session_id in unanswered {
            if let Some(live) = self.finish_call(&session_id, CallStatus::Unanswered, now) {
                self.send_to_user(
                    &live.call.initiator.uid,
                    ServerEvent::OutgoingCallRejected {
                        call: live.call.clone(),
                    },
                );
                for uid in &live.ringing {
                    self.send_to_user(
                        uid,
                        ServerEvent::IncomingCallCancelled {
                            call: live.call.clone(),
                        },
                    );
                }
                // The caller may be waiting in the session alone: it ends too.
                self.close_waiting_session(&session_id);
            }
        }
        let grace = self.config.reconnect_grace_ms;
        let gone: Vec<(String, String)> = self
            .sessions
            .iter()
            .flat_map(|(id, s)| {
                s.members
                    .iter()
                    .filter(|m| m.gone_since.is_some_and(|t| t + grace <= now))
                    .map(|m| (id.clone(), m.info.uid.clone()))
            })
            .collect();
        for (session_id, uid) in gone {
            self.leave(&session_id, &uid, now);
        }
        let lonely: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, s)| {
                s.members.len() == 1 && s.alone_since.is_some_and(|t| t + s.idle_timeout_ms <= now)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for session_id in lonely {
            self.end_session_and_call(&session_id, None, SessionEndReason::Timeout, now);
        }
        self.flush_after_reply();
    }

    /// Ends everything for a shutdown: sessions and live calls end with a reason, logs are
    /// closed, every connection is told and closed (1001).
    pub fn shutdown(&mut self, now: u64) {
        let sessions: Vec<String> = self.sessions.keys().cloned().collect();
        for session_id in sessions {
            self.end_session_and_call(&session_id, None, SessionEndReason::ServerShutdown, now);
        }
        let calls: Vec<String> = self.calls.keys().cloned().collect();
        for session_id in calls {
            let ringing = self
                .calls
                .get(&session_id)
                .is_some_and(|c| c.call.status == CallStatus::Initiated);
            if ringing {
                if let Some(live) = self.finish_call(&session_id, CallStatus::Cancelled, now) {
                    for uid in &live.ringing {
                        self.send_to_user(
                            uid,
                            ServerEvent::IncomingCallCancelled {
                                call: live.call.clone(),
                            },
                        );
                    }
                    self.send_to_user(
                        &live.call.initiator.uid,
                        ServerEvent::OutgoingCallRejected {
                            call: live.call.clone(),
                        },
                    );
                }
            } else {
                self.end_session_and_call(&session_id, None, SessionEndReason::ServerShutdown, now);
            }
        }
        if let Err(err) = self.store.end_open_calls(now) {
            tracing::error!("{err}");
        }
        self.flush_after_reply();
        let conns: Vec<ConnId> = self.conns.keys().copied().collect();
        for conn in conns {
            self.out
                .push(Out::Close(conn, 1001, "server shutting down".into()));
        }
    }
}

/// The error for a call that is over, by how it ended (`None`: no such call).
fn call_over(status: Option<CallStatus>) -> HubError {
    match status {
        Some(CallStatus::Cancelled) => {
            HubError::new(ErrorCode::CallCancelled, "the call was cancelled")
        }
        Some(CallStatus::Rejected) => {
            HubError::new(ErrorCode::CallRejected, "the call was rejected")
        }
        Some(CallStatus::Busy) => HubError::new(ErrorCode::CallBusy, "the receiver was busy"),
        Some(_) => HubError::new(ErrorCode::CallEnded, "the call has ended"),
        None => HubError::new(ErrorCode::CallNotFound, "no such call"),
    }
}

mod replica;
pub use replica::{NodeConn, SessionSnapshot};

#[cfg(test)]
mod tests;
