//! Messages of the client ↔ server WebSocket protocol (version [`PROTOCOL_VERSION`]).
//!
//! Every frame is one JSON object. Client frames are [`ClientFrame`]s: an optional request
//! `id` and a [`Request`] (tagged by `"type"`). The server answers each request that carried
//! an `id` with a [`ServerFrame`] whose `re` is that id, holding a [`Reply`] (success) or an
//! error; it also pushes [`ServerEvent`]s (no `re`) as things happen. See `docs/protocol.md`
//! for every message with an example.
//!
//! [`PROTOCOL_VERSION`]: crate::PROTOCOL_VERSION

use serde::{Deserialize, Serialize};

use crate::{CallStatus, CallType, ErrorCode, ReceiverType};

/// Largest frame the server accepts, in bytes (larger frames close the socket with 1009).
pub const MAX_FRAME_BYTES: usize = 64 * 1024;

/// A user as the server knows them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// User id.
    pub uid: String,
    /// Display name.
    pub name: String,
    /// Avatar URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar: Option<String>,
}

/// A STUN or TURN server for media, shaped like a browser's `RTCIceServer`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    /// `stun:host:port`, `turn:host:port?transport=udp|tcp`.
    pub urls: Vec<String>,
    /// TURN user name (`EXPIRY:UID` in the TURN REST scheme).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// TURN password (`base64(HMAC-SHA1(secret, username))`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// A call of the ringing flow (reference `Call` object).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Call {
    /// The session id participants meet in.
    pub session_id: String,
    /// Where the call is in its life.
    pub status: CallStatus,
    /// Audio or video.
    pub call_type: CallType,
    /// A user or a group.
    pub receiver_type: ReceiverType,
    /// Who placed it.
    pub initiator: User,
    /// The uid or guid it was placed to.
    pub receiver: String,
    /// When it was placed, in milliseconds since the Unix epoch.
    pub initiated_at: u64,
}

/// One participant of a session.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionParticipant {
    /// User id.
    pub uid: String,
    /// Display name.
    pub name: String,
    /// Avatar URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar: Option<String>,
    /// Microphone muted.
    #[serde(default)]
    pub audio_muted: bool,
    /// Camera paused.
    #[serde(default)]
    pub video_paused: bool,
    /// Hand raised.
    #[serde(default)]
    pub hand_raised: bool,
    /// Sharing their screen.
    #[serde(default)]
    pub screen_sharing: bool,
}

/// How a session's media travels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaRoute {
    /// Full mesh: one connection per remote participant, signals relayed between them.
    #[default]
    Mesh,
    /// Through the server's SFU: one connection that publishes ours (we offer to
    /// [`SFU_PUBLISH_PEER`]) and one that receives everyone else's (the server offers from
    /// [`SFU_SUBSCRIBE_PEER`]); a received track's `msid` is `huddle-<kind> <kind>-<uid>`
    /// (`huddle-video video-alice`).
    Sfu,
}

/// One of the three pictures a publisher sends of its camera through the SFU (simulcast), each
/// by its own encoder: the whole picture, half its width and height, and a quarter. Each
/// receiver gets one of them per publisher, picked by the server from the receiver's
/// `video_wanted` bitrate cap ([`SimulcastLayer::for_bitrate_cap`]). In a mesh nobody sends
/// layers: the cap sets the sender's bitrate instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SimulcastLayer {
    /// A quarter of the picture's width and height.
    Low,
    /// Half of its width and height.
    Medium,
    /// The whole picture.
    High,
}

impl SimulcastLayer {
    /// The layers in the order of the offer's `a=rid` lines: highest first (Janus's default
    /// `rid_order`).
    pub const HIGHEST_FIRST: [SimulcastLayer; 3] = [Self::High, Self::Medium, Self::Low];

    /// The layer's RTP stream id (`a=rid`, and the `rtp-stream-id` header extension).
    pub fn rid(self) -> &'static str {
        match self {
            Self::High => "h",
            Self::Medium => "m",
            Self::Low => "l",
        }
    }

    /// How much smaller than the whole picture the layer is, in each dimension.
    pub fn scale_down(self) -> u32 {
        match self {
            Self::High => 1,
            Self::Medium => 2,
            Self::Low => 4,
        }
    }

    /// Janus's substream number (0 the lowest).
    pub fn substream(self) -> u8 {
        match self {
            Self::Low => 0,
            Self::Medium => 1,
            Self::High => 2,
        }
    }

    /// The layer a `video_wanted` bitrate cap asks for: no cap (0) or 1.5 Mbit/s and more the
    /// whole picture; from 500 kbit/s the half; below, the quarter. (The app asks 250 kbit/s
    /// for a small tile such as Spotlight's strip, 800 kbit/s for a medium one, no cap for a
    /// large one.)
    pub fn for_bitrate_cap(max_bitrate_bps: u32) -> Self {
        match max_bitrate_bps {
            0 | 1_500_000.. => Self::High,
            500_000.. => Self::Medium,
            _ => Self::Low,
        }
    }
}

/// The SFU's publishing side, as a peer: `signal` to it (our offer, candidates) and get its
/// answer and candidates `from` it. Never a user's uid (`:` is not allowed in uids).
pub const SFU_PUBLISH_PEER: &str = "sfu:publish";

/// The SFU's receiving side, as a peer: it offers (again whenever people come and go) and we
/// answer.
pub const SFU_SUBSCRIBE_PEER: &str = "sfu:subscribe";

/// What peers exchange to set up media, relayed verbatim to one participant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PeerSignal {
    /// An SDP offer.
    Offer {
        /// The SDP.
        sdp: String,
    },
    /// An SDP answer.
    Answer {
        /// The SDP.
        sdp: String,
    },
    /// A trickled ICE candidate, sent as soon as it is gathered; `None` (or `null`) candidate:
    /// end of candidates. The field names of a browser's `RTCIceCandidate.toJSON()`
    /// (`sdpMid`, `sdpMLineIndex`, `usernameFragment`) are accepted too.
    Candidate {
        /// The candidate line (`candidate:…`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        candidate: Option<String>,
        /// Media stream id.
        #[serde(default, alias = "sdpMid", skip_serializing_if = "Option::is_none")]
        sdp_mid: Option<String>,
        /// Media line index.
        #[serde(
            default,
            alias = "sdpMLineIndex",
            skip_serializing_if = "Option::is_none"
        )]
        sdp_mline_index: Option<u16>,
        /// The ICE user fragment the candidate belongs to (tells candidates of an ICE restart
        /// from the previous generation's).
        #[serde(
            default,
            alias = "usernameFragment",
            skip_serializing_if = "Option::is_none"
        )]
        username_fragment: Option<String>,
    },
    /// How much of the sender's video the receiver wants (adaptive receive): none while the
    /// sender is off screen, a capped bitrate while it is shown small.
    VideoWanted {
        /// Stop sending video to me.
        paused: bool,
        /// At most this many bits per second (0: no cap).
        max_bitrate_bps: u32,
    },
    /// The answering side wants its camera negotiated (an audio-only call switched to video):
    /// the offering side sends a new offer with a video track.
    RenegotiationWanted,
    /// From `sfu:publish`: which of our camera's simulcast layers anyone in the session
    /// receives (the whole picture always: it is what the SFU forwards until told otherwise).
    /// The others need not be encoded; they are again once someone's tile asks for them.
    LayersWanted {
        /// The layers wanted, in any order.
        layers: Vec<SimulcastLayer>,
    },
}

/// A change a participant announces to everyone in the session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum StateChange {
    /// Microphone muted or unmuted.
    AudioMuted(bool),
    /// Camera paused or resumed.
    VideoPaused(bool),
    /// Hand raised or lowered.
    HandRaised(bool),
    /// Screen share started or stopped.
    ScreenSharing(bool),
    /// Recording started or stopped.
    Recording(bool),
    /// The call switched to video (the value is the responder's uid, or empty).
    SwitchedToVideo(String),
}

/// Why a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionEndReason {
    /// The other side of a 1:1 call left, or someone ended the call.
    Ended,
    /// Alone for the idle timeout.
    Timeout,
    /// The server is shutting down.
    ServerShutdown,
}

/// Filters and page for listing call logs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CallLogQuery {
    /// Only calls of this type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call_type: Option<CallType>,
    /// Only calls with this status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<CallStatus>,
    /// Only calls in this direction (relative to the asking user).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direction: Option<CallDirection>,
    /// Only calls with this user (as initiator, receiver or participant).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// Only calls to this group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guid: Option<String>,
    /// Only calls that were (or were not) recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub has_recording: Option<bool>,
    /// Page number, from 1.
    pub page: u32,
    /// Entries per page (1..=100; 0 means 20).
    pub per_page: u32,
}

/// Direction of a call relative to a user.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallDirection {
    /// They placed it.
    Outgoing,
    /// They received it.
    Incoming,
}

/// One call in the call log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallLog {
    /// Session id.
    pub session_id: String,
    /// Audio or video.
    pub call_type: CallType,
    /// Final (or current) status.
    pub status: CallStatus,
    /// User or group.
    pub receiver_type: ReceiverType,
    /// Who placed it.
    pub initiator: String,
    /// uid or guid it was placed to.
    pub receiver: String,
    /// Direction relative to the asking user (absent for admin listings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<CallDirection>,
    /// Placed at (ms since the Unix epoch).
    pub initiated_at: u64,
    /// First join (ms), if anyone joined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<u64>,
    /// End (ms), once over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<u64>,
    /// Seconds between start and end.
    pub duration_secs: u64,
    /// uids who joined the session.
    pub participants: Vec<String>,
    /// Whether anyone recorded it.
    pub has_recording: bool,
}

/// A request from a client.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Log in: with an auth token, or (dev login) with the uid alone. Must come first.
    Login {
        /// User id.
        uid: String,
        /// Auth token issued through the admin API (absent for dev login).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        auth_token: Option<String>,
        /// Display name to use when dev login creates the user.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    /// Place a call to a user or a group.
    InitiateCall {
        /// uid or guid.
        receiver_id: String,
        /// User or group.
        receiver_type: ReceiverType,
        /// Audio or video.
        call_type: CallType,
        /// Ringing timeout in seconds (default 45).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_secs: Option<u32>,
    },
    /// Accept an incoming call.
    AcceptCall {
        /// The call.
        session_id: String,
    },
    /// Reject (`rejected`, `busy`) an incoming call, or cancel (`cancelled`) an outgoing one.
    RejectCall {
        /// The call.
        session_id: String,
        /// `rejected`, `busy` or `cancelled`.
        status: CallStatus,
    },
    /// End a call for everyone.
    EndCall {
        /// The call.
        session_id: String,
    },
    /// Get a call token for a session.
    GenerateToken {
        /// The session.
        session_id: String,
        /// The caller's auth token (in dev login, any non-empty string).
        auth_token: String,
    },
    /// Join a session with a call token.
    JoinSession {
        /// The session.
        session_id: String,
        /// A call token from `generate_token`.
        call_token: String,
        /// Seconds alone before the session times out (default 180).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        idle_timeout_secs: Option<u32>,
        /// Join muted.
        #[serde(default)]
        audio_muted: bool,
        /// Join with video paused.
        #[serde(default)]
        video_paused: bool,
    },
    /// Leave a session.
    LeaveSession {
        /// The session.
        session_id: String,
    },
    /// Relay a WebRTC signal to one participant.
    Signal {
        /// The session.
        session_id: String,
        /// uid of the participant it is for.
        to: String,
        /// The signal.
        signal: PeerSignal,
    },
    /// Announce a state change to the session.
    State {
        /// The session.
        session_id: String,
        /// The change.
        change: StateChange,
    },
    /// List the caller's call logs.
    ListCallLogs {
        /// Filters and page.
        #[serde(default)]
        query: CallLogQuery,
    },
    /// Keep-alive; answered with `pong`.
    /// (A struct variant, so that unknown fields are refused here as everywhere.)
    Ping {},
}

/// A frame from a client.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClientFrame {
    /// Protocol version (must be 1).
    pub v: u32,
    /// Request id, echoed in the answer as `re`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    /// The request.
    #[serde(flatten)]
    pub request: Request,
}

/// A successful answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Reply {
    /// Logged in.
    LoggedIn {
        /// Who.
        user: User,
        /// The auth token to use with `generate_token` (issued by dev login, or echoed).
        auth_token: String,
        /// Users who share a group with them, and whether they are online.
        contacts: Vec<Presence>,
        /// The groups they belong to.
        #[serde(default)]
        groups: Vec<GroupInfo>,
    },
    /// The call after the operation.
    Call {
        /// The call.
        call: Call,
    },
    /// A call token.
    Token {
        /// The signed token.
        call_token: String,
        /// Expiry, ms since the Unix epoch.
        expires_at: u64,
    },
    /// Joined a session.
    Joined {
        /// The session.
        session_id: String,
        /// Everyone in it, including the caller.
        participants: Vec<SessionParticipant>,
        /// Whether it is a 1:1 call.
        one_to_one: bool,
        /// STUN and TURN servers for this session's media, with this participant's own
        /// short-lived TURN credentials (empty: host candidates only, e.g. on a LAN).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        ice_servers: Vec<IceServer>,
        /// How the session's media travels now (`mesh` when absent).
        #[serde(default, skip_serializing_if = "is_mesh")]
        media_route: MediaRoute,
    },
    /// Call logs, newest first.
    CallLogs {
        /// This page.
        logs: Vec<CallLog>,
        /// Matching entries in all pages.
        total: u64,
    },
    /// Done, nothing to return.
    Ok,
    /// Answer to `ping`.
    Pong,
}

/// A group and its members.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupInfo {
    /// Group id (what group calls ring).
    pub guid: String,
    /// Display name.
    pub name: String,
    /// Member uids.
    pub members: Vec<String>,
}

/// Whether a contact is online.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presence {
    /// Who.
    pub user: User,
    /// Online now.
    pub online: bool,
}

/// What the server pushes as it happens.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerEvent {
    /// Someone is calling you.
    IncomingCallReceived {
        /// The call.
        call: Call,
    },
    /// Your call was accepted.
    OutgoingCallAccepted {
        /// The call (status `ongoing`).
        call: Call,
        /// uid of who accepted.
        by: String,
    },
    /// Your call was rejected, busy or unanswered (the status says which).
    OutgoingCallRejected {
        /// The call.
        call: Call,
    },
    /// The call ringing for you was cancelled or went unanswered (the status says which).
    IncomingCallCancelled {
        /// The call.
        call: Call,
    },
    /// A call you were part of ended (reference `CallEndedMessageReceived`).
    CallEnded {
        /// The call (status `ended`).
        call: Call,
    },
    /// Someone joined a session you are in.
    ParticipantJoined {
        /// The session.
        session_id: String,
        /// Who.
        participant: SessionParticipant,
    },
    /// Someone left a session you are in.
    ParticipantLeft {
        /// The session.
        session_id: String,
        /// Who.
        uid: String,
    },
    /// A session you were in ended.
    SessionEnded {
        /// The session.
        session_id: String,
        /// Why.
        reason: SessionEndReason,
    },
    /// A participant's signal for you.
    Signal {
        /// The session.
        session_id: String,
        /// uid of the sender.
        from: String,
        /// The signal.
        signal: PeerSignal,
    },
    /// The session's media moved (a call that grew past the server's SFU threshold goes
    /// through the SFU; an SFU that failed sends it back to the mesh): close the old
    /// connections and open the new ones. The call, its participants and its log go on.
    MediaRouteChanged {
        /// The session.
        session_id: String,
        /// The route from now on.
        route: MediaRoute,
    },
    /// A participant's state changed.
    ParticipantState {
        /// The session.
        session_id: String,
        /// Whose.
        uid: String,
        /// What changed.
        change: StateChange,
    },
    /// A contact came online or went offline.
    Presence(Presence),
}

/// An error answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Stable code.
    pub code: ErrorCode,
    /// Human-readable reason.
    pub message: String,
}

/// What the server sends in a frame.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ServerPayload {
    /// An error answer (`"type":"error"`).
    Error {
        /// Always `"error"`.
        #[serde(rename = "type")]
        kind: ErrorTag,
        /// The error.
        error: ErrorBody,
    },
    /// A successful answer.
    Reply(Reply),
    /// A pushed event.
    Event(ServerEvent),
}

/// The `"error"` tag of error frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorTag {
    /// `"error"`.
    Error,
}

/// A frame from the server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServerFrame {
    /// Protocol version.
    pub v: u32,
    /// The request id this answers, absent for events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub re: Option<u64>,
    /// Answer or event.
    #[serde(flatten)]
    pub payload: ServerPayload,
}

impl ServerFrame {
    /// A success answer to request `re`.
    pub fn reply(re: Option<u64>, reply: Reply) -> Self {
        Self {
            v: crate::PROTOCOL_VERSION,
            re,
            payload: ServerPayload::Reply(reply),
        }
    }

    /// An error answer to request `re`.
    pub fn error(re: Option<u64>, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            v: crate::PROTOCOL_VERSION,
            re,
            payload: ServerPayload::Error {
                kind: ErrorTag::Error,
                error: ErrorBody {
                    code,
                    message: message.into(),
                },
            },
        }
    }

    /// A pushed event.
    pub fn event(event: ServerEvent) -> Self {
        Self {
            v: crate::PROTOCOL_VERSION,
            re: None,
            payload: ServerPayload::Event(event),
        }
    }
}

/// Session ids: 1..=128 characters from `[A-Za-z0-9._:-]`.
pub fn is_valid_session_id(session_id: &str) -> bool {
    (1..=128).contains(&session_id.len())
        && session_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
}

fn is_mesh(route: &MediaRoute) -> bool {
    *route == MediaRoute::Mesh
}

/// User and group ids: 1..=64 characters from `[A-Za-z0-9._@-]`.
pub fn is_valid_uid(uid: &str) -> bool {
    (1..=64).contains(&uid.len())
        && uid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._@-".contains(&b))
}
