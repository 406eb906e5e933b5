//! SFU mode: calls above a size go through Janus Gateway's VideoRoom, which the Huddle
//! server drives as its only client. Clients never see Janus: they keep speaking Huddle's
//! protocol, to two pseudo-peers ([`SFU_PUBLISH_PEER`], [`SFU_SUBSCRIBE_PEER`]).
//!
//! ```text
//!  Hub ── SfuCommand ──▶ SfuRouter task ── one RoomTask per session ──▶ Janus (WebSocket API)
//!   ▲                      (places the room on the least-loaded instance)        │
//!   └──────────── SfuNews (signals for a participant, failures) ◀────────────────┘
//! ```
//!
//! Per session, the room task keeps a VideoRoom (H.264 42e01f, Opus, a room secret) and,
//! per participant, two handles:
//! - **publisher**: the client's offer to `sfu:publish` becomes `joinandconfigure` (later
//!   offers: `configure`); Janus's answer and candidates go back `from` `sfu:publish`.
//! - **subscriber**: once anyone else publishes, a subscriber handle `join`s with every
//!   other feed; Janus's offer goes to the client `from` `sfu:subscribe`, labelled so that
//!   each track's `msid` is `huddle-<kind> <kind>-<uid>` ([`label_subscriber_offer`]); the client's
//!   answer becomes `start`. New feeds and new streams are added with `update` (one
//!   renegotiation at a time: changes wait for the answer to the offer that is out).
//! - **video wishes**: a client's `video_wanted` for a participant pauses or resumes that
//!   participant's camera stream on its subscriber handle (`configure` `send`), and its
//!   bitrate cap picks which of the participant's simulcast layers is forwarded
//!   (`configure` `substream`, [`SimulcastLayer::for_bitrate_cap`]). Only what changed is
//!   sent, one `configure` per subscriber ([`wishes_to_configure`]).
//!
//! The room task takes the hub's commands in batches and settles each batch in steps
//! ([`Room::settle`]): Janus requests for different participants go out together, since one
//! after another they made a call of twelve wait seconds for its feeds.
//!
//! A room that cannot be placed on any instance is reported ([`SfuNews::RoomFailed`]); the
//! hub then keeps (or puts back) the call on the mesh.

pub mod janus;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use futures_util::future::join_all;
use huddle_protocol::{PeerSignal, SimulcastLayer};
pub use huddle_protocol::{SFU_PUBLISH_PEER, SFU_SUBSCRIBE_PEER};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use janus::{JanusConnection, JanusError};

/// Where the SFU runs and when calls use it.
#[derive(Clone, Debug, Default)]
pub struct SfuConfig {
    /// Janus instances (`ws://host:8188`), tried in order of load.
    pub janus_urls: Vec<String>,
    /// Janus's `api_secret`, if it has one.
    pub api_secret: Option<String>,
    /// Report each room's state to the hub ([`SfuNews::RoomState`], at most every
    /// [`ROOM_STATE_EVERY`]), for another node of a cluster to adopt it; off for a server
    /// alone, where nobody would.
    pub report_room_state: bool,
}

/// How often a room's changed state is reported at most: serialized after every Janus event,
/// it slowed a call of twelve's start by seconds on two cores.
pub const ROOM_STATE_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// Which of a participant's two SFU connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SfuLeg {
    /// Ours to the SFU: we offer.
    Publish,
    /// Everyone else's from the SFU: it offers.
    Subscribe,
}

impl SfuLeg {
    /// The pseudo-peer uid clients signal to and from.
    pub fn peer(self) -> &'static str {
        match self {
            Self::Publish => SFU_PUBLISH_PEER,
            Self::Subscribe => SFU_SUBSCRIBE_PEER,
        }
    }

    /// The leg a pseudo-peer uid names.
    pub fn of_peer(uid: &str) -> Option<Self> {
        match uid {
            SFU_PUBLISH_PEER => Some(Self::Publish),
            SFU_SUBSCRIBE_PEER => Some(Self::Subscribe),
            _ => None,
        }
    }
}

/// What the hub asks of the SFU.
#[derive(Clone, Debug, PartialEq)]
pub enum SfuCommand {
    /// Create the session's room (on the least-loaded instance).
    OpenRoom {
        /// The session.
        session_id: String,
    },
    /// A participant's signal to one of its SFU legs.
    Signal {
        /// The session.
        session_id: String,
        /// Whose.
        uid: String,
        /// Which leg.
        leg: SfuLeg,
        /// The signal.
        signal: PeerSignal,
    },
    /// `subscriber` wants (or not) `publisher`'s camera.
    WantVideo {
        /// The session.
        session_id: String,
        /// Who receives.
        subscriber: String,
        /// Whose video.
        publisher: String,
        /// Stop forwarding it.
        paused: bool,
        /// Which of its simulcast layers to forward.
        layer: SimulcastLayer,
    },
    /// A participant left: their handles go.
    Leave {
        /// The session.
        session_id: String,
        /// Who.
        uid: String,
    },
    /// The session ended: the room goes.
    CloseRoom {
        /// The session.
        session_id: String,
    },
    /// Take over the room another node drove (it died): claim its Janus session and carry
    /// on from `state` ([`SfuNews::RoomState`]), the media never stopping.
    AdoptRoom {
        /// The session.
        session_id: String,
        /// The room as its node last reported it.
        state: Value,
    },
}

/// What the SFU tells the hub.
#[derive(Clone, Debug, PartialEq)]
pub enum SfuNews {
    /// A signal for a participant from one of its legs.
    Signal {
        /// The session.
        session_id: String,
        /// For whom.
        uid: String,
        /// From which leg.
        leg: SfuLeg,
        /// The signal.
        signal: PeerSignal,
    },
    /// The room could not be created anywhere.
    RoomFailed {
        /// The session.
        session_id: String,
        /// Why (the last instance's error).
        error: JanusError,
    },
    /// The room's state changed: where it is in Janus and every participant's handles,
    /// streams and wishes (kept with the session, for another node to adopt the room).
    RoomState {
        /// The session.
        session_id: String,
        /// The state (JSON of the room task's own).
        state: Value,
    },
    /// One participant's leg failed (their media through the SFU is broken).
    LegFailed {
        /// The session.
        session_id: String,
        /// Whose.
        uid: String,
        /// Which.
        leg: SfuLeg,
        /// Why.
        error: JanusError,
    },
}

/// Sends commands to the SFU's tasks.
#[derive(Clone)]
pub struct SfuRouter {
    commands: mpsc::UnboundedSender<SfuCommand>,
}

impl SfuRouter {
    /// Starts the router on the current tokio runtime; `news` is called for everything the
    /// SFU has to tell the hub.
    pub fn start(config: SfuConfig, news: impl Fn(SfuNews) + Send + Sync + 'static) -> Self {
        let (commands, receiver) = mpsc::unbounded_channel();
        tokio::spawn(route_commands(config, receiver, Arc::new(news)));
        Self { commands }
    }

    /// Queues a command (never blocks).
    pub fn send(&self, command: SfuCommand) {
        let _ = self.commands.send(command);
    }
}

type NewsSink = Arc<dyn Fn(SfuNews) + Send + Sync>;

/// One Janus instance: its connection (made when first needed, remade when lost) and the
/// rooms placed on it.
struct Instance {
    url: String,
    connection: Option<Arc<JanusConnection>>,
    rooms: usize,
}

impl Instance {
    async fn connection(
        &mut self,
        api_secret: &Option<String>,
    ) -> Result<Arc<JanusConnection>, JanusError> {
        if let Some(connection) = &self.connection
            && connection.is_alive()
        {
            return Ok(connection.clone());
        }
        self.connection = None;
        let connection = JanusConnection::connect(&self.url, api_secret.clone()).await?;
        self.connection = Some(connection.clone());
        Ok(connection)
    }
}

/// The router: opens rooms on the least-loaded instance and hands each session's commands
/// to its room task.
async fn route_commands(
    config: SfuConfig,
    mut commands: mpsc::UnboundedReceiver<SfuCommand>,
    news: NewsSink,
) {
    let mut instances: Vec<Instance> = config
        .janus_urls
        .iter()
        .map(|url| Instance {
            url: url.clone(),
            connection: None,
            rooms: 0,
        })
        .collect();
    let mut rooms: HashMap<String, (usize, mpsc::UnboundedSender<SfuCommand>)> = HashMap::new();
    // Janus sessions claimed from nodes that died, by id: every room of one is adopted on the
    // one connection that claimed it.
    let mut claimed: HashMap<u64, Arc<JanusConnection>> = HashMap::new();
    while let Some(command) = commands.recv().await {
        match command {
            SfuCommand::AdoptRoom { session_id, state } => {
                if rooms.contains_key(&session_id) {
                    continue;
                }
                match adopt_room(&config, &mut claimed, &session_id, state).await {
                    Ok((url, room, janus_events)) => {
                        let index = instances.iter().position(|i| i.url == url).unwrap_or(0);
                        if let Some(instance) = instances.get_mut(index) {
                            instance.rooms += 1;
                        }
                        tracing::info!(
                            "sfu: session {session_id} adopted on {url} (room {})",
                            room.room_id
                        );
                        let (sender, receiver) = mpsc::unbounded_channel();
                        let reports = config.report_room_state;
                        tokio::spawn(room.run(receiver, janus_events, news.clone(), reports));
                        rooms.insert(session_id, (index, sender));
                    }
                    Err(error) => news(SfuNews::RoomFailed { session_id, error }),
                }
            }
            SfuCommand::OpenRoom { session_id } => {
                if rooms.contains_key(&session_id) {
                    continue;
                }
                let mut order: Vec<usize> = (0..instances.len()).collect();
                order.sort_by_key(|&i| instances[i].rooms);
                let mut last_error = JanusError::Unreachable {
                    url: String::new(),
                    reason: "no Janus instance configured".into(),
                };
                let mut placed = None;
                for index in order {
                    match instances[index].connection(&config.api_secret).await {
                        Ok(connection) => match Room::create(connection, &session_id).await {
                            Ok(room) => {
                                placed = Some((index, room));
                                break;
                            }
                            Err(err) => last_error = err,
                        },
                        Err(err) => {
                            tracing::warn!("sfu: {err}");
                            last_error = err;
                        }
                    }
                }
                match placed {
                    Some((index, (room, janus_events))) => {
                        instances[index].rooms += 1;
                        tracing::info!(
                            "sfu: session {session_id} on {} (room {})",
                            instances[index].url,
                            room.room_id
                        );
                        let (sender, receiver) = mpsc::unbounded_channel();
                        let reports = config.report_room_state;
                        tokio::spawn(room.run(receiver, janus_events, news.clone(), reports));
                        rooms.insert(session_id, (index, sender));
                    }
                    None => news(SfuNews::RoomFailed {
                        session_id,
                        error: last_error,
                    }),
                }
            }
            SfuCommand::CloseRoom { session_id } => {
                if let Some((index, sender)) = rooms.remove(&session_id) {
                    instances[index].rooms = instances[index].rooms.saturating_sub(1);
                    let _ = sender.send(SfuCommand::CloseRoom { session_id });
                }
            }
            SfuCommand::Signal { ref session_id, .. }
            | SfuCommand::WantVideo { ref session_id, .. }
            | SfuCommand::Leave { ref session_id, .. } => {
                if let Some((_, sender)) = rooms.get(session_id) {
                    let _ = sender.send(command);
                }
            }
        }
    }
}

/// Claims the Janus session of a room another node drove (once per Janus session) and
/// rebuilds the room from `state`.
async fn adopt_room(
    config: &SfuConfig,
    claimed: &mut HashMap<u64, Arc<JanusConnection>>,
    session_id: &str,
    state: Value,
) -> Result<(String, Room, mpsc::UnboundedReceiver<TaggedEvent>), JanusError> {
    let state: RoomState = serde_json::from_value(state).map_err(|err| JanusError::Malformed {
        request: "adopt".into(),
        reason: format!("unreadable room state: {err}"),
    })?;
    let janus = match claimed.get(&state.janus_session) {
        Some(janus) if janus.is_alive() => janus.clone(),
        _ => {
            let janus =
                JanusConnection::claim(&state.url, config.api_secret.clone(), state.janus_session)
                    .await?;
            claimed.insert(state.janus_session, janus.clone());
            janus
        }
    };
    let url = state.url.clone();
    let (room, events) = Room::adopt(janus, session_id, state);
    Ok((url, room, events))
}

/// What a published stream carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum StreamKind {
    /// The camera (`huddle-video`).
    Camera,
    /// The microphone (`huddle-audio`).
    Audio,
    /// The screen share (`huddle-screen`).
    Screen,
}

impl StreamKind {
    /// The stream id Huddle clients read.
    pub fn stream_id(self) -> &'static str {
        match self {
            Self::Camera => "huddle-video",
            Self::Audio => "huddle-audio",
            Self::Screen => "huddle-screen",
        }
    }

    /// The `msid` of `uid`'s stream of this kind as subscribers see it: the stream id, and a
    /// track id unique in the connection (`video-alice`, `audio-alice`, `screen-alice`).
    pub fn msid(self, uid: &str) -> String {
        let kind = &self.stream_id()["huddle-".len()..];
        format!("{} {kind}-{uid}", self.stream_id())
    }
}

/// An SDP's media sections: (media, mid, msid stream id).
fn media_sections(sdp: &str) -> Vec<(String, Option<String>, Option<String>)> {
    let mut sections: Vec<(String, Option<String>, Option<String>)> = Vec::new();
    for line in sdp.lines() {
        let line = line.trim_end();
        if let Some(media) = line.strip_prefix("m=") {
            let kind = media.split_whitespace().next().unwrap_or_default();
            sections.push((kind.to_owned(), None, None));
        } else if let Some(section) = sections.last_mut() {
            if let Some(mid) = line.strip_prefix("a=mid:") {
                section.1 = Some(mid.to_owned());
            } else if let Some(msid) = line.strip_prefix("a=msid:") {
                section.2 = msid.split_whitespace().next().map(str::to_owned);
            }
        }
    }
    sections
}

/// What each mid of a publisher's offer carries: audio lines are its voice, a video line
/// whose stream id is `huddle-screen` its screen, and the first other video line its camera
/// (a later one, from a client without Huddle's ids, its screen).
pub fn published_kinds(offer: &str) -> BTreeMap<String, StreamKind> {
    let mut kinds = BTreeMap::new();
    let mut camera_seen = false;
    for (media, mid, stream) in media_sections(offer) {
        let Some(mid) = mid else { continue };
        let kind = match media.as_str() {
            "audio" => StreamKind::Audio,
            "video" if stream.as_deref() == Some("huddle-screen") => StreamKind::Screen,
            "video" if !camera_seen => {
                camera_seen = true;
                StreamKind::Camera
            }
            "video" => StreamKind::Screen,
            _ => continue,
        };
        kinds.insert(mid, kind);
    }
    kinds
}

/// Rewrites a subscriber offer so that each labelled media section's `msid` (and `a=ssrc …
/// msid:`) reads `huddle-<kind> <kind>-<uid>` ([`StreamKind::msid`]): Huddle clients (and browsers) learn from it whose
/// track it is and what it carries. Sections without a label are left alone.
pub fn label_subscriber_offer(sdp: &str, labels: &HashMap<String, (String, StreamKind)>) -> String {
    let mut out = String::with_capacity(sdp.len() + 64 * labels.len());
    // Sections are rewritten once their mid is known: buffer each section's lines.
    let mut section: Vec<String> = Vec::new();
    let flush = |section: &mut Vec<String>, out: &mut String| {
        let mid = section
            .iter()
            .find_map(|l| l.strip_prefix("a=mid:").map(str::to_owned));
        let label = mid.and_then(|mid| labels.get(&mid));
        let mut wrote_msid = false;
        for line in section.drain(..) {
            match label {
                Some((uid, kind)) if line.starts_with("a=msid:") => {
                    out.push_str(&format!("a=msid:{}\r\n", kind.msid(uid)));
                    wrote_msid = true;
                }
                Some((uid, kind)) if line.starts_with("a=ssrc:") && line.contains(" msid:") => {
                    let ssrc = line.split_whitespace().next().unwrap_or_default();
                    out.push_str(&format!("{ssrc} msid:{}\r\n", kind.msid(uid)));
                }
                Some((uid, kind)) if line.starts_with("a=mid:") && !wrote_msid => {
                    out.push_str(&line);
                    out.push_str("\r\n");
                    out.push_str(&format!("a=msid:{}\r\n", kind.msid(uid)));
                    wrote_msid = true;
                }
                _ => {
                    out.push_str(&line);
                    out.push_str("\r\n");
                }
            }
        }
    };
    for line in sdp.lines() {
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            continue;
        }
        if line.starts_with("m=") {
            flush(&mut section, &mut out);
        }
        if line.starts_with("m=") || !section.is_empty() {
            section.push(line.to_owned());
        } else {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    flush(&mut section, &mut out);
    out
}

/// One participant in a room.
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct RoomMember {
    /// Publisher handle, once they offered.
    publisher: Option<u64>,
    /// Their feed id in the room, once published.
    feed: Option<u64>,
    /// What each of their published mids carries.
    published: BTreeMap<String, StreamKind>,
    /// Their publishing connection is up: others may subscribe to their feed.
    live: bool,
    /// Subscriber handle, once anyone else published.
    subscriber: Option<u64>,
    /// Our offer to them is out, their answer not yet in.
    awaiting_answer: bool,
    /// (feed, mid) streams they receive, and the subscriber-side mid of each.
    #[serde(with = "pairs")]
    receiving: HashMap<(u64, String), String>,
    /// Streams to add once the offer that is out is answered.
    to_subscribe: Vec<(u64, String)>,
    /// What they asked of each publisher's camera: a layer, or paused (`None`); a publisher
    /// they asked nothing of is forwarded its whole picture.
    wishes: HashMap<String, Option<SimulcastLayer>>,
    /// What Janus was last told of each camera stream they receive, by (feed, mid): the
    /// subscriber-side mid it was told for, forwarding on, and the substream. A wish that
    /// would tell the same again is not sent.
    #[serde(with = "pairs")]
    configured: HashMap<(u64, String), (String, bool, u8)>,
    /// The layers of their own camera last said to be wanted (`layers_wanted`).
    layers_told: Vec<SimulcastLayer>,
}

/// A map with keys JSON cannot name (tuples), as a list of pairs.
mod pairs {
    use std::collections::HashMap;
    use std::hash::Hash;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<K: Serialize, V: Serialize, S: Serializer>(
        map: &HashMap<K, V>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(map.iter())
    }

    pub fn deserialize<'de, K, V, D>(deserializer: D) -> Result<HashMap<K, V>, D::Error>
    where
        K: Deserialize<'de> + Eq + Hash,
        V: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        Vec::<(K, V)>::deserialize(deserializer).map(|pairs| pairs.into_iter().collect())
    }
}

/// A room as another node needs it to adopt it: where it is in Janus (instance, Janus
/// session, room, its secret and admin handle) and every member's handles and streams.
#[derive(serde::Serialize, serde::Deserialize)]
struct RoomState {
    url: String,
    janus_session: u64,
    room_id: u64,
    secret: String,
    admin: u64,
    members: BTreeMap<String, RoomMember>,
}

/// The simulcast layers of `publisher`'s camera that anyone of `members` receives, highest
/// first: the whole picture always (Janus forwards it to a subscriber that asked nothing),
/// and each layer someone asked for.
fn layers_wanted(members: &BTreeMap<String, RoomMember>, publisher: &str) -> Vec<SimulcastLayer> {
    SimulcastLayer::HIGHEST_FIRST
        .into_iter()
        .filter(|layer| {
            *layer == SimulcastLayer::High
                || members.iter().any(|(uid, member)| {
                    uid != publisher && member.wishes.get(publisher) == Some(&Some(*layer))
                })
        })
        .collect()
}

impl RoomMember {
    /// Whether they receive (or are about to) this (feed, mid) stream.
    fn receives(&self, stream: &(u64, String)) -> bool {
        self.receiving.contains_key(stream) || self.to_subscribe.contains(stream)
    }
}

/// The `configure` that brings Janus to `subscriber`'s wishes for the camera streams its
/// subscription has, if any differ from what Janus was told: (streams, what each is now).
fn wishes_to_configure(
    members: &BTreeMap<String, RoomMember>,
    subscriber: &str,
) -> ConfigureStreams {
    let Some(member) = members.get(subscriber) else {
        return Vec::new();
    };
    let mut changed = Vec::new();
    for (publisher, wish) in &member.wishes {
        let Some(publishing) = members.get(publisher) else {
            continue;
        };
        let Some(feed) = publishing.feed else {
            continue;
        };
        let (send, substream) = match wish {
            Some(layer) => (true, layer.substream()),
            None => (false, SimulcastLayer::High.substream()),
        };
        let camera_mids = publishing
            .published
            .iter()
            .filter(|(_, kind)| **kind == StreamKind::Camera);
        for (feed_mid, _) in camera_mids {
            let stream = (feed, feed_mid.clone());
            let Some(mid) = member.receiving.get(&stream) else {
                continue;
            };
            let now = (mid.clone(), send, substream);
            if member.configured.get(&stream) != Some(&now) {
                changed.push((stream, now));
            }
        }
    }
    changed
}

/// Camera streams to `configure` on a subscriber handle: each (feed, mid) with its
/// subscriber-side mid, forwarding on, and substream.
type ConfigureStreams = Vec<((u64, String), (String, bool, u8))>;

/// A session's VideoRoom and its participants' handles.
struct Room {
    janus: Arc<JanusConnection>,
    session_id: String,
    room_id: u64,
    secret: String,
    /// The handle that created the room (and destroys it).
    admin: u64,
    members: BTreeMap<String, RoomMember>,
    /// Every handle's events, tagged with (uid, leg), into [`Room::run`].
    events: mpsc::UnboundedSender<TaggedEvent>,
    /// The state last reported ([`SfuNews::RoomState`]).
    reported: Option<Value>,
}

/// A Janus event on one participant's leg.
type TaggedEvent = (String, SfuLeg, Value);

/// Most publishers in one room.
const MAX_PUBLISHERS: u32 = 100;

fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        // Only the room number: unguessability rests on the room secret below.
        return std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
    }
    u64::from_le_bytes(bytes) >> 12
}

/// What one batch of commands asks of a room, gathered to be settled together.
#[derive(Default)]
struct Pending {
    /// Offers to publish: (uid, sdp).
    offers: Vec<(String, String)>,
    /// Answers to subscription offers: (uid, sdp).
    answers: Vec<(String, String)>,
    /// Clients' candidates: (uid, leg, candidate).
    candidates: Vec<(String, SfuLeg, PeerSignal)>,
    /// Who changed their video wishes.
    wishing: Vec<String>,
}

/// Sends an offer to publish (`body`: `joinandconfigure` or `configure`) on `handle`, or on
/// a handle attached now if `None`: the new handle (with its events), and Janus's answer.
async fn request_publication(
    janus: &JanusConnection,
    handle: Option<u64>,
    body: Value,
    sdp: String,
) -> (
    Option<(u64, mpsc::UnboundedReceiver<Value>)>,
    Result<janus::PluginAnswer, JanusError>,
) {
    let (handle, attached) = match handle {
        Some(handle) => (handle, None),
        None => match janus.attach_videoroom().await {
            Ok((handle, events)) => (handle, Some((handle, events))),
            Err(err) => return (None, Err(err)),
        },
    };
    let offer = json!({"type": "offer", "sdp": sdp});
    (attached, janus.message(handle, body, Some(offer)).await)
}

/// A new subscriber handle for `handle` `None`, joined to `streams` of `room`, or an
/// `update` adding them to `handle`: the handle if it is new (with its events), and Janus's
/// answer (which carries its offer).
async fn request_subscription(
    janus: &JanusConnection,
    room: u64,
    handle: Option<u64>,
    streams: &[(u64, String)],
) -> Result<
    (
        Option<(u64, mpsc::UnboundedReceiver<Value>)>,
        janus::PluginAnswer,
    ),
    JanusError,
> {
    let list: Vec<Value> = streams
        .iter()
        .map(|(feed, mid)| json!({"feed": feed, "mid": mid}))
        .collect();
    if let Some(handle) = handle {
        let update = json!({"request": "update", "subscribe": list});
        return Ok((None, janus.message(handle, update, None).await?));
    }
    let (handle, events) = janus.attach_videoroom().await?;
    let join = json!({"request": "join", "ptype": "subscriber", "room": room, "streams": list});
    match janus.message(handle, join, None).await {
        Ok(answer) => Ok((Some((handle, events)), answer)),
        Err(err) => {
            janus.detach(handle).await;
            Err(err)
        }
    }
}

impl Room {
    /// Creates the VideoRoom on `janus`; its handles' events arrive on the receiver.
    async fn create(
        janus: Arc<JanusConnection>,
        session_id: &str,
    ) -> Result<(Self, mpsc::UnboundedReceiver<TaggedEvent>), JanusError> {
        let (admin, _) = janus.attach_videoroom().await?;
        let room_id = random_u64().max(1);
        let mut secret_bytes = [0u8; 16];
        getrandom::fill(&mut secret_bytes).map_err(|err| JanusError::Malformed {
            request: "create".into(),
            reason: format!("no randomness for the room secret: {err}"),
        })?;
        let secret: String = secret_bytes.iter().map(|b| format!("{b:02x}")).collect();
        janus
            .message(
                admin,
                json!({
                    "request": "create",
                    "room": room_id,
                    "description": session_id,
                    "secret": secret,
                    "is_private": true,
                    "publishers": MAX_PUBLISHERS,
                    "videocodec": "h264",
                    "h264_profile": "42e01f",
                    "audiocodec": "opus",
                    "audiolevel_ext": true,
                    "transport_wide_cc_ext": true,
                    "notify_joining": false,
                }),
                None,
            )
            .await?;
        let (events, janus_events) = mpsc::unbounded_channel();
        let room = Self {
            janus,
            session_id: session_id.to_owned(),
            room_id,
            secret,
            admin,
            members: BTreeMap::new(),
            events,
            reported: None,
        };
        Ok((room, janus_events))
    }

    /// The room of `state`, on `janus` (a connection that claimed the room's Janus session):
    /// every member's handles are followed again.
    fn adopt(
        janus: Arc<JanusConnection>,
        session_id: &str,
        state: RoomState,
    ) -> (Self, mpsc::UnboundedReceiver<TaggedEvent>) {
        let (events, janus_events) = mpsc::unbounded_channel();
        let room = Self {
            janus,
            session_id: session_id.to_owned(),
            room_id: state.room_id,
            secret: state.secret,
            admin: state.admin,
            members: state.members,
            events,
            reported: None,
        };
        // The admin handle's events are of no interest; following it keeps them apart.
        drop(room.janus.follow(room.admin));
        for (uid, member) in &room.members {
            if let Some(handle) = member.publisher {
                room.follow(uid, SfuLeg::Publish, room.janus.follow(handle));
            }
            if let Some(handle) = member.subscriber {
                room.follow(uid, SfuLeg::Subscribe, room.janus.follow(handle));
            }
        }
        (room, janus_events)
    }

    /// Tells the hub the room's state if it changed since last told.
    fn report_state(&mut self, news: &NewsSink) {
        let state = RoomState {
            url: self.janus.url().to_owned(),
            janus_session: self.janus.session_id(),
            room_id: self.room_id,
            secret: self.secret.clone(),
            admin: self.admin,
            members: std::mem::take(&mut self.members),
        };
        let value = serde_json::to_value(&state);
        self.members = state.members;
        let Ok(value) = value else {
            return;
        };
        if self.reported.as_ref() != Some(&value) {
            self.reported = Some(value.clone());
            news(SfuNews::RoomState {
                session_id: self.session_id.clone(),
                state: value,
            });
        }
    }

    /// Applies commands and Janus's events in order until the room is closed.
    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<SfuCommand>,
        mut janus_events: mpsc::UnboundedReceiver<TaggedEvent>,
        news: NewsSink,
        report_state: bool,
    ) {
        let mut report_timer = tokio::time::interval(ROOM_STATE_EVERY);
        report_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = report_timer.tick(), if report_state => {
                    self.report_state(&news);
                }
                command = commands.recv() => {
                    let Some(command) = command else { break };
                    let mut batch = vec![command];
                    while let Ok(command) = commands.try_recv() {
                        batch.push(command);
                    }
                    if !self.apply_batch(batch, &news).await {
                        break;
                    }
                }
                Some(event) = janus_events.recv() => {
                    let mut events = vec![event];
                    while let Ok(event) = janus_events.try_recv() {
                        events.push(event);
                    }
                    self.on_janus_events(events, &news).await;
                }
            }
        }
        self.close().await;
    }

    async fn close(&mut self) {
        let uids: Vec<String> = self.members.keys().cloned().collect();
        for uid in uids {
            self.detach(&uid).await;
        }
        let _ = self
            .janus
            .message(
                self.admin,
                json!({"request": "destroy", "room": self.room_id, "secret": self.secret}),
                None,
            )
            .await;
        self.janus.detach(self.admin).await;
    }

    /// Forwards a handle's events into the room's event stream, tagged.
    fn follow(&self, uid: &str, leg: SfuLeg, mut events: mpsc::UnboundedReceiver<Value>) {
        let (tagged, uid) = (self.events.clone(), uid.to_owned());
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                if tagged.send((uid.clone(), leg, event)).is_err() {
                    break;
                }
            }
        });
    }

    fn tell(&self, news: &NewsSink, uid: &str, leg: SfuLeg, signal: PeerSignal) {
        news(SfuNews::Signal {
            session_id: self.session_id.clone(),
            uid: uid.to_owned(),
            leg,
            signal,
        });
    }

    fn failed(&self, news: &NewsSink, uid: &str, leg: SfuLeg, error: JanusError) {
        tracing::warn!("sfu: {} {uid} {leg:?}: {error}", self.session_id);
        news(SfuNews::LegFailed {
            session_id: self.session_id.clone(),
            uid: uid.to_owned(),
            leg,
            error,
        });
    }

    /// Applies what the hub asked since the room last looked. Janus requests for different
    /// participants go out together rather than one after another: in a call of twelve that
    /// starts at once, a publisher's arrival is eleven subscription updates, each answered by
    /// a `start`, and every grid re-asks the layer of each tile; awaited one by one, these
    /// kept later publishers waiting seconds for their feeds to be forwarded. So the batch
    /// is gathered first (offers to publish, answers to subscription offers, candidates,
    /// video wishes) and then settled in steps ([`Room::settle`]); a participant's second
    /// offer or answer in one batch, and a departure, settle what came before them first.
    /// False once the room is to close.
    async fn apply_batch(&mut self, batch: Vec<SfuCommand>, news: &NewsSink) -> bool {
        let mut pending = Pending::default();
        for command in batch {
            match command {
                SfuCommand::CloseRoom { .. } => {
                    self.settle(pending, news).await;
                    return false;
                }
                SfuCommand::OpenRoom { .. } | SfuCommand::AdoptRoom { .. } => {}
                SfuCommand::WantVideo {
                    subscriber,
                    publisher,
                    paused,
                    layer,
                    ..
                } => {
                    self.record_wish(&subscriber, &publisher, paused, layer, news);
                    pending.wishing.push(subscriber);
                }
                SfuCommand::Leave { uid, .. } => {
                    self.settle(std::mem::take(&mut pending), news).await;
                    self.leave(&uid, news).await;
                }
                SfuCommand::Signal {
                    uid, leg, signal, ..
                } => match (leg, signal) {
                    (SfuLeg::Publish, PeerSignal::Offer { sdp }) => {
                        if pending.offers.iter().any(|(u, _)| *u == uid) {
                            self.settle(std::mem::take(&mut pending), news).await;
                        }
                        pending.offers.push((uid, sdp));
                    }
                    (SfuLeg::Subscribe, PeerSignal::Answer { sdp }) => {
                        if pending.answers.iter().any(|(u, _)| *u == uid) {
                            self.settle(std::mem::take(&mut pending), news).await;
                        }
                        pending.answers.push((uid, sdp));
                    }
                    (leg, candidate @ PeerSignal::Candidate { .. }) => {
                        pending.candidates.push((uid, leg, candidate));
                    }
                    // Answers to the publisher and offers to the subscriber come from Janus,
                    // never from a client; video wishes are for participants, not legs.
                    _ => {}
                },
            }
        }
        self.settle(pending, news).await;
        true
    }

    /// Settles a gathered batch: publications (their handles exist for the candidates that
    /// follow), answers to subscription offers, candidates, the video wishes of whoever
    /// wished or now receives new streams, and last the subscriptions that waited for an
    /// answer.
    async fn settle(&mut self, pending: Pending, news: &NewsSink) {
        self.publish(pending.offers, news).await;
        let answered = self.start_subscriptions(pending.answers, news).await;
        for (uid, leg, signal) in pending.candidates {
            self.trickle(&uid, leg, signal);
        }
        let mut configuring = pending.wishing;
        configuring.extend(answered.iter().cloned());
        configuring.sort();
        configuring.dedup();
        self.configure_wishes(configuring, news).await;
        self.flush_subscriptions(answered, news).await;
    }

    /// A client's candidate (or end of candidates) for one of its legs, to Janus.
    fn trickle(&self, uid: &str, leg: SfuLeg, signal: PeerSignal) {
        let PeerSignal::Candidate {
            candidate,
            sdp_mid,
            sdp_mline_index,
            ..
        } = signal
        else {
            return;
        };
        let member = self.members.get(uid);
        let handle = match leg {
            SfuLeg::Publish => member.and_then(|m| m.publisher),
            SfuLeg::Subscribe => member.and_then(|m| m.subscriber),
        };
        let Some(handle) = handle else {
            return;
        };
        let candidate = match candidate {
            Some(candidate) => json!({
                "candidate": candidate,
                "sdpMid": sdp_mid,
                "sdpMLineIndex": sdp_mline_index,
            }),
            None => json!({"completed": true}),
        };
        self.janus.trickle(handle, candidate);
    }

    /// Publishers' offers, each `(uid, sdp)`: join the room (or renegotiate) and answer;
    /// the streams of a publisher that is already up (a renegotiation) go to everyone now.
    async fn publish(&mut self, offers: Vec<(String, String)>, news: &NewsSink) {
        let janus = &self.janus;
        let mut requests = Vec::new();
        for (uid, sdp) in offers {
            let kinds = published_kinds(&sdp);
            tracing::debug!("sfu: {uid} offers to publish {kinds:?}");
            let member = self.members.get(&uid);
            let handle = member.and_then(|m| m.publisher);
            let joined = handle.is_some() && member.and_then(|m| m.feed).is_some();
            let descriptions: Vec<Value> = kinds
                .iter()
                .map(|(mid, kind)| json!({"mid": mid, "description": kind.stream_id()}))
                .collect();
            let body = if joined {
                json!({"request": "configure", "descriptions": descriptions})
            } else {
                json!({
                    "request": "joinandconfigure",
                    "ptype": "publisher",
                    "room": self.room_id,
                    "display": uid,
                    "descriptions": descriptions,
                })
            };
            requests.push(async move {
                let (attached, answer) = request_publication(janus, handle, body, sdp).await;
                (uid, kinds, attached, answer)
            });
        }
        let mut renegotiated = Vec::new();
        for (uid, kinds, attached, answer) in join_all(requests).await {
            if let Some((handle, events)) = attached {
                self.follow(&uid, SfuLeg::Publish, events);
                self.members.entry(uid.clone()).or_default().publisher = Some(handle);
            }
            match answer.and_then(|answer| self.accept_publication(&uid, kinds, answer, news)) {
                Ok(true) => renegotiated.push(uid),
                Ok(false) => {}
                Err(err) => self.failed(news, &uid, SfuLeg::Publish, err),
            }
        }
        if !renegotiated.is_empty() {
            for uid in &renegotiated {
                self.queue_fan_out(uid);
            }
            self.flush_subscriptions(self.members.keys().cloned().collect(), news)
                .await;
        }
    }

    /// Janus answered `uid`'s offer to publish `kinds`: note its feed and streams and send
    /// the answer on. True if the publication was already up (new streams to fan out).
    fn accept_publication(
        &mut self,
        uid: &str,
        kinds: BTreeMap<String, StreamKind>,
        answer: janus::PluginAnswer,
        news: &NewsSink,
    ) -> Result<bool, JanusError> {
        let answer_sdp = answer
            .jsep
            .as_ref()
            .and_then(|j| j["sdp"].as_str())
            .ok_or_else(|| JanusError::Malformed {
                request: "joinandconfigure".into(),
                reason: "no SDP answer".into(),
            })?
            .to_owned();
        let member = self.members.entry(uid.to_owned()).or_default();
        if let Some(feed) = answer.data["id"].as_u64() {
            member.feed = Some(feed);
        }
        member.published = kinds;
        if member.feed.is_none() {
            return Err(JanusError::Malformed {
                request: "joinandconfigure".into(),
                reason: "no feed id".into(),
            });
        }
        let live = member.live;
        self.tell(
            news,
            uid,
            SfuLeg::Publish,
            PeerSignal::Answer { sdp: answer_sdp },
        );
        Ok(live)
    }

    /// `uid`'s publishing connection is up (`webrtcup`): Janus lets others subscribe to a
    /// feed only from now on, so its streams are queued for everyone (and everyone's for it)
    /// for the next [`Room::flush_subscriptions`]. False if `uid` is gone.
    fn publisher_up(&mut self, uid: &str, news: &NewsSink) -> bool {
        let Some(member) = self.members.get_mut(uid) else {
            tracing::debug!("sfu: {uid}'s publication is up, but they are gone");
            return false;
        };
        tracing::debug!("sfu: {uid}'s publication (feed {:?}) is up", member.feed);
        member.live = true;
        self.tell_layers_wanted(uid, news);
        self.queue_fan_out(uid);
        true
    }

    /// Everyone else is to receive `uid`'s streams they lack, and `uid` every live feed's,
    /// at the next [`Room::flush_subscriptions`].
    fn queue_fan_out(&mut self, uid: &str) {
        let Some(feed) = self.members.get(uid).and_then(|m| m.feed) else {
            return;
        };
        let mids: Vec<String> = self.members[uid].published.keys().cloned().collect();
        let others: Vec<String> = self.members.keys().filter(|u| *u != uid).cloned().collect();
        for other in &others {
            let wanted: Vec<(u64, String)> = mids
                .iter()
                .map(|mid| (feed, mid.clone()))
                .filter(|stream| !self.members[other].receives(stream))
                .collect();
            self.queue_subscriptions(other, wanted);
        }
        let theirs: Vec<(u64, String)> = others
            .iter()
            .filter_map(|other| {
                let member = &self.members[other];
                member
                    .feed
                    .filter(|_| member.live)
                    .map(|feed| member.published.keys().map(move |mid| (feed, mid.clone())))
            })
            .flatten()
            .filter(|stream| !self.members[uid].receives(stream))
            .collect();
        self.queue_subscriptions(uid, theirs);
    }

    /// Adds `streams` to what `uid` is to receive, at the next
    /// [`Room::flush_subscriptions`].
    fn queue_subscriptions(&mut self, uid: &str, streams: Vec<(u64, String)>) {
        if let Some(member) = self.members.get_mut(uid) {
            member.to_subscribe.extend(streams);
        }
    }

    /// Subscribes each of `uids` to what waits for it, unless an offer to it is out (then
    /// after its answer): a new subscriber handle (`join`) or an `update`, and forwards
    /// Janus's offers. The requests for different participants go to Janus together: one
    /// after the other, a publisher's arrival in a call of twelve took eleven round trips,
    /// and the next publisher's waited behind them (seconds in all, with Janus busy).
    async fn flush_subscriptions(&mut self, uids: Vec<String>, news: &NewsSink) {
        let (janus, room) = (&self.janus, self.room_id);
        let mut requests = Vec::new();
        for uid in uids {
            let Some(member) = self.members.get_mut(&uid) else {
                continue;
            };
            if member.awaiting_answer || member.to_subscribe.is_empty() {
                continue;
            }
            let streams = std::mem::take(&mut member.to_subscribe);
            tracing::debug!("sfu: {uid} subscribes to {streams:?}");
            let handle = member.subscriber;
            requests.push(async move {
                let result = request_subscription(janus, room, handle, &streams).await;
                (uid, result)
            });
        }
        for (uid, result) in join_all(requests).await {
            match result {
                Ok((joined, answer)) => {
                    if let Some((handle, events)) = joined {
                        self.follow(&uid, SfuLeg::Subscribe, events);
                        if let Some(member) = self.members.get_mut(&uid) {
                            member.subscriber = Some(handle);
                        }
                    }
                    self.on_subscriber_offer(&uid, &answer.data, answer.jsep.as_ref(), news);
                }
                Err(err) => self.failed(news, &uid, SfuLeg::Subscribe, err),
            }
        }
    }

    /// Janus offered (a new subscription, an update, or a publisher gone): learn which
    /// subscriber mid carries which stream, label the offer and send it on.
    fn on_subscriber_offer(
        &mut self,
        uid: &str,
        data: &Value,
        jsep: Option<&Value>,
        news: &NewsSink,
    ) {
        if let Some(streams) = data["streams"].as_array() {
            let mut receiving = HashMap::new();
            for stream in streams {
                if let (Some(feed), Some(feed_mid), Some(mid)) = (
                    stream["feed_id"].as_u64(),
                    stream["feed_mid"].as_str(),
                    stream["mid"].as_str(),
                ) && stream["active"].as_bool() != Some(false)
                {
                    receiving.insert((feed, feed_mid.to_owned()), mid.to_owned());
                }
            }
            if let Some(member) = self.members.get_mut(uid) {
                member
                    .configured
                    .retain(|stream, (mid, ..)| receiving.get(stream) == Some(mid));
                member.receiving = receiving;
            }
        }
        let Some(sdp) = jsep
            .filter(|j| j["type"] == "offer")
            .and_then(|j| j["sdp"].as_str())
        else {
            return;
        };
        let labels = self.labels_for(uid);
        tracing::debug!("sfu: offer for {uid}: {labels:?}\n{sdp}");
        if let Some(member) = self.members.get_mut(uid) {
            member.awaiting_answer = true;
        }
        self.tell(
            news,
            uid,
            SfuLeg::Subscribe,
            PeerSignal::Offer {
                sdp: label_subscriber_offer(sdp, &labels),
            },
        );
    }

    /// Subscriber mid → (publisher uid, kind) for what `uid` receives.
    fn labels_for(&self, uid: &str) -> HashMap<String, (String, StreamKind)> {
        let mut labels = HashMap::new();
        let Some(member) = self.members.get(uid) else {
            return labels;
        };
        for ((feed, feed_mid), mid) in &member.receiving {
            let publisher = self.members.iter().find(|(_, m)| m.feed == Some(*feed));
            if let Some((publisher_uid, publisher)) = publisher
                && let Some(kind) = publisher.published.get(feed_mid)
            {
                labels.insert(mid.clone(), (publisher_uid.clone(), *kind));
            }
        }
        labels
    }

    /// Clients answered our offers, each `(uid, sdp)`: start (or resume) forwarding. Returns
    /// who answered: whether Janus took the answer or not, no offer to them is out any more
    /// (Janus waits for no answer either), so what waits to be subscribed for them can go.
    async fn start_subscriptions(
        &mut self,
        answers: Vec<(String, String)>,
        news: &NewsSink,
    ) -> Vec<String> {
        let janus = &self.janus;
        let mut requests = Vec::new();
        for (uid, sdp) in answers {
            let Some(handle) = self.members.get(&uid).and_then(|m| m.subscriber) else {
                continue;
            };
            tracing::debug!("sfu: {uid} answered its subscription's offer");
            requests.push(async move {
                let start = json!({"request": "start"});
                let answer = json!({"type": "answer", "sdp": sdp});
                let started = janus.message(handle, start, Some(answer)).await;
                (uid, started)
            });
        }
        let mut answered = Vec::new();
        for (uid, started) in join_all(requests).await {
            if let Some(member) = self.members.get_mut(&uid) {
                member.awaiting_answer = false;
            }
            if let Err(err) = started {
                self.failed(news, &uid, SfuLeg::Subscribe, err);
            }
            answered.push(uid);
        }
        answered
    }

    /// Records what `subscriber` wants of `publisher`'s camera: paused, or a simulcast layer
    /// (Janus switches at the layer's next keyframe; a publisher without simulcast has only
    /// the one). [`Room::configure_wishes`] tells Janus.
    fn record_wish(
        &mut self,
        subscriber: &str,
        publisher: &str,
        paused: bool,
        layer: SimulcastLayer,
        news: &NewsSink,
    ) {
        if let Some(member) = self.members.get_mut(subscriber) {
            member
                .wishes
                .insert(publisher.to_owned(), (!paused).then_some(layer));
        }
        self.tell_layers_wanted(publisher, news);
    }

    /// Tells Janus, in one `configure` per subscriber of `subscribers`, what changed in its
    /// wishes for the streams it receives (nothing if nothing did). A refusal is logged and
    /// the leg goes on: the next change tries again.
    async fn configure_wishes(&mut self, subscribers: Vec<String>, news: &NewsSink) {
        let janus = &self.janus;
        let mut requests = Vec::new();
        for subscriber in subscribers {
            let changed = wishes_to_configure(&self.members, &subscriber);
            let Some(handle) = self.members.get(&subscriber).and_then(|m| m.subscriber) else {
                continue;
            };
            if changed.is_empty() {
                continue;
            }
            let streams: Vec<Value> = changed
                .iter()
                .map(|(_, (mid, send, substream))| {
                    json!({"mid": mid, "send": send, "substream": substream})
                })
                .collect();
            requests.push(async move {
                let request = json!({"request": "configure", "streams": streams});
                let result = janus.message(handle, request, None).await;
                (subscriber, changed, result)
            });
        }
        for (subscriber, changed, result) in join_all(requests).await {
            match result {
                Ok(_) => {
                    if let Some(member) = self.members.get_mut(&subscriber) {
                        member.configured.extend(changed);
                    }
                }
                Err(JanusError::Refused { code, reason, .. }) => {
                    // A stream whose publisher just left (its mid is gone before the update
                    // that says so): the wishes stay, the connection is fine.
                    tracing::debug!(
                        "sfu: {} {subscriber}: Janus refused video wishes: {code} {reason}",
                        self.session_id
                    );
                }
                Err(err) => self.failed(news, &subscriber, SfuLeg::Subscribe, err),
            }
        }
    }

    /// Tells `publisher` which of its layers anyone receives, if that changed (and once it
    /// publishes).
    fn tell_layers_wanted(&mut self, publisher: &str, news: &NewsSink) {
        let layers = layers_wanted(&self.members, publisher);
        let Some(member) = self.members.get_mut(publisher) else {
            return;
        };
        if member.publisher.is_none() || member.layers_told == layers {
            return;
        }
        member.layers_told = layers.clone();
        self.tell(
            news,
            publisher,
            SfuLeg::Publish,
            PeerSignal::LayersWanted { layers },
        );
    }

    /// `uid` is gone: detach both handles (Janus tells the others' subscriptions), and the
    /// layers only they asked for are no longer wanted.
    async fn leave(&mut self, uid: &str, news: &NewsSink) {
        let Some(member) = self.detach(uid).await else {
            return;
        };
        for publisher in member.wishes.keys() {
            self.tell_layers_wanted(publisher, news);
        }
    }

    /// Detaches both of `uid`'s handles; what the room knew of them.
    async fn detach(&mut self, uid: &str) -> Option<RoomMember> {
        let member = self.members.remove(uid)?;
        for handle in [member.publisher, member.subscriber].into_iter().flatten() {
            self.janus.detach(handle).await;
        }
        Some(member)
    }

    /// Janus's events since the room last looked, in order, then one round of subscriptions
    /// for the publications they brought up. Taken one per turn of the room's loop, events
    /// waited behind the commands' Janus requests: in a call of twelve starting at once,
    /// Janus sends hundreds of events (a `media` per stream, a `publishers` to everyone per
    /// publisher, candidates), and a publisher's `webrtcup` was handled up to 12 s after
    /// Janus sent it, so that nobody received that publisher meanwhile.
    async fn on_janus_events(&mut self, events: Vec<TaggedEvent>, news: &NewsSink) {
        let mut went_live = false;
        for (uid, leg, event) in events {
            went_live |= self.on_janus_event(&uid, leg, event, news);
        }
        if went_live {
            self.flush_subscriptions(self.members.keys().cloned().collect(), news)
                .await;
        }
    }

    /// An event on one of `uid`'s handles; true if it brought a publication up (its
    /// subscriptions are queued, see [`Room::publisher_up`]).
    fn on_janus_event(&mut self, uid: &str, leg: SfuLeg, event: Value, news: &NewsSink) -> bool {
        if event["janus"] != "trickle" {
            tracing::debug!(
                "sfu: {uid} {leg:?}: {} {} (jsep: {})",
                event["janus"],
                event["plugindata"]["data"],
                event["jsep"]["type"]
            );
        }
        match event["janus"].as_str() {
            Some("trickle") => {
                let candidate = &event["candidate"];
                let signal = if candidate["completed"] == true {
                    PeerSignal::Candidate {
                        candidate: None,
                        sdp_mid: None,
                        sdp_mline_index: None,
                        username_fragment: None,
                    }
                } else {
                    PeerSignal::Candidate {
                        candidate: candidate["candidate"].as_str().map(str::to_owned),
                        sdp_mid: candidate["sdpMid"].as_str().map(str::to_owned),
                        sdp_mline_index: candidate["sdpMLineIndex"]
                            .as_u64()
                            .and_then(|i| u16::try_from(i).ok()),
                        username_fragment: None,
                    }
                };
                self.tell(news, uid, leg, signal);
            }
            Some("webrtcup") if leg == SfuLeg::Publish => {
                return self.publisher_up(uid, news);
            }
            Some("event") if leg == SfuLeg::Subscribe => {
                let data = event["plugindata"]["data"].clone();
                self.on_subscriber_offer(uid, &data, event.get("jsep"), news);
            }
            Some("hangup") => {
                tracing::info!(
                    "sfu: {} {uid} {leg:?}: Janus hung up ({})",
                    self.session_id,
                    event["reason"].as_str().unwrap_or_default()
                );
            }
            _ => {}
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A publisher's wanted layers are the whole picture plus what anyone else asked of it:
    /// nothing asked (or only pauses) leaves the whole picture alone; a small tile adds the
    /// quarter, a medium one the half; wishes about other publishers, and its own, do not
    /// count.
    #[test]
    fn wanted_layers_are_the_whole_picture_and_what_receivers_asked() {
        let wishing = |wishes: &[(&str, Option<SimulcastLayer>)]| RoomMember {
            wishes: wishes
                .iter()
                .map(|(publisher, wish)| (publisher.to_string(), *wish))
                .collect(),
            ..RoomMember::default()
        };
        let mut members = BTreeMap::new();
        members.insert("alice".to_owned(), wishing(&[("bob", None)]));
        members.insert(
            "bob".to_owned(),
            wishing(&[("carol", Some(SimulcastLayer::Low))]),
        );
        members.insert(
            "carol".to_owned(),
            wishing(&[("carol", Some(SimulcastLayer::Medium))]),
        );
        assert_eq!(layers_wanted(&members, "bob"), [SimulcastLayer::High]);
        assert_eq!(
            layers_wanted(&members, "carol"),
            [SimulcastLayer::High, SimulcastLayer::Low]
        );
        members.insert(
            "dave".to_owned(),
            wishing(&[("carol", Some(SimulcastLayer::Medium))]),
        );
        assert_eq!(
            layers_wanted(&members, "carol"),
            [
                SimulcastLayer::High,
                SimulcastLayer::Medium,
                SimulcastLayer::Low
            ]
        );
    }

    const PUBLISHER_OFFER: &str = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 102\r\na=mid:0\r\na=msid:huddle-video video\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:1\r\na=msid:huddle-audio audio\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 102\r\na=mid:2\r\na=msid:huddle-screen screen\r\n";

    /// Video wishes reach Janus only where they change something: a subscriber's wish for a
    /// camera stream it receives is to be configured (on its subscriber-side mid, paused
    /// as `send: false`), the same wish again once Janus was told is not, a stream not yet
    /// in the subscription waits, and a wish about a publisher that is gone is dropped.
    #[test]
    fn only_changed_wishes_are_configured() {
        let publisher = |feed: u64| RoomMember {
            feed: Some(feed),
            published: BTreeMap::from([
                ("0".to_owned(), StreamKind::Camera),
                ("1".to_owned(), StreamKind::Audio),
            ]),
            ..RoomMember::default()
        };
        let subscriber = RoomMember {
            receiving: HashMap::from([
                ((10, "0".to_owned()), "3".to_owned()),
                ((10, "1".to_owned()), "4".to_owned()),
                ((20, "0".to_owned()), "5".to_owned()),
            ]),
            wishes: HashMap::from([
                ("p1".to_owned(), Some(SimulcastLayer::Medium)),
                ("p2".to_owned(), None),
                ("p3".to_owned(), Some(SimulcastLayer::Low)),
                ("gone".to_owned(), Some(SimulcastLayer::Low)),
            ]),
            ..RoomMember::default()
        };
        let mut members = BTreeMap::from([
            ("p1".to_owned(), publisher(10)),
            ("p2".to_owned(), publisher(20)),
            ("p3".to_owned(), publisher(30)),
            ("me".to_owned(), subscriber),
        ]);
        let mut changed = wishes_to_configure(&members, "me");
        changed.sort();
        assert_eq!(
            changed,
            vec![
                ((10, "0".to_owned()), ("3".to_owned(), true, 1)),
                ((20, "0".to_owned()), ("5".to_owned(), false, 2)),
            ]
        );
        let me = members.get_mut("me").expect("member");
        me.configured.extend(changed);
        assert_eq!(wishes_to_configure(&members, "me"), vec![]);
        let me = members.get_mut("me").expect("member");
        me.wishes
            .insert("p1".to_owned(), Some(SimulcastLayer::High));
        assert_eq!(
            wishes_to_configure(&members, "me"),
            vec![((10, "0".to_owned()), ("3".to_owned(), true, 2))]
        );
    }

    /// A publisher's mids are read as camera, voice and screen from its stream ids; a
    /// browser's unlabelled second video line is its screen.
    #[test]
    fn published_streams_are_told_apart_by_stream_id_then_position() {
        let kinds = published_kinds(PUBLISHER_OFFER);
        assert_eq!(kinds["0"], StreamKind::Camera);
        assert_eq!(kinds["1"], StreamKind::Audio);
        assert_eq!(kinds["2"], StreamKind::Screen);
        let browser = "m=video 9 X 96\r\na=mid:a\r\na=msid:{x} {y}\r\n\
                       m=video 9 X 96\r\na=mid:b\r\na=msid:{z} {w}\r\n";
        let kinds = published_kinds(browser);
        assert_eq!(kinds["a"], StreamKind::Camera);
        assert_eq!(kinds["b"], StreamKind::Screen);
    }

    /// Janus's subscriber offer gets Huddle's labels: each known mid's msid (and ssrc msid)
    /// names the kind and the publisher; a section without msid gets one; unknown mids stay.
    #[test]
    fn subscriber_offers_are_labelled_with_kind_and_publisher() {
        let offer = "v=0\r\ns=-\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 102\r\na=mid:v0\r\na=msid:janus janusv0\r\n\
            a=ssrc:11 cname:janus\r\na=ssrc:11 msid:janus janusv0\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:a1\r\na=sendonly\r\n\
            m=video 0 UDP/TLS/RTP/SAVPF 102\r\na=mid:x\r\na=msid:janus janusx\r\n";
        let labels = HashMap::from([
            ("v0".to_owned(), ("alice".to_owned(), StreamKind::Camera)),
            ("a1".to_owned(), ("bob".to_owned(), StreamKind::Audio)),
        ]);
        let labelled = label_subscriber_offer(offer, &labels);
        assert!(
            labelled.contains("a=mid:v0\r\na=msid:huddle-video video-alice\r\n"),
            "{labelled}"
        );
        assert!(
            labelled.contains("a=ssrc:11 msid:huddle-video video-alice\r\n"),
            "{labelled}"
        );
        assert!(labelled.contains("a=ssrc:11 cname:janus\r\n"));
        assert!(
            labelled.contains("a=mid:a1\r\na=msid:huddle-audio audio-bob\r\na=sendonly\r\n"),
            "{labelled}"
        );
        assert!(labelled.contains("a=mid:x\r\na=msid:janus janusx\r\n"));
        assert_eq!(media_sections(&labelled).len(), 3);
        assert!(labelled.starts_with("v=0\r\ns=-\r\nm=video"));
    }
}
