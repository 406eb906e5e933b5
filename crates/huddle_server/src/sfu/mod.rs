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
//!   (`configure` `substream`, [`SimulcastLayer::for_bitrate_cap`]).
//!
//! A room that cannot be placed on any instance is reported ([`SfuNews::RoomFailed`]); the
//! hub then keeps (or puts back) the call on the mesh.

pub mod janus;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

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
}

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
    while let Some(command) = commands.recv().await {
        match command {
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
                        tokio::spawn(room.run(receiver, janus_events, news.clone()));
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

/// What a published stream carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
#[derive(Default)]
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
    receiving: HashMap<(u64, String), String>,
    /// Streams to add once the offer that is out is answered.
    to_subscribe: Vec<(u64, String)>,
    /// What they asked of each publisher's camera: a layer, or paused (`None`); a publisher
    /// they asked nothing of is forwarded its whole picture.
    wishes: HashMap<String, Option<SimulcastLayer>>,
    /// The layers of their own camera last said to be wanted (`layers_wanted`).
    layers_told: Vec<SimulcastLayer>,
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
        };
        Ok((room, janus_events))
    }

    /// Applies commands and Janus's events in order until the room is closed.
    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<SfuCommand>,
        mut janus_events: mpsc::UnboundedReceiver<TaggedEvent>,
        news: NewsSink,
    ) {
        loop {
            tokio::select! {
                command = commands.recv() => {
                    let Some(command) = command else { break };
                    if matches!(command, SfuCommand::CloseRoom { .. }) {
                        break;
                    }
                    self.apply(command, &news).await;
                }
                Some((uid, leg, event)) = janus_events.recv() => {
                    self.on_janus_event(&uid, leg, event, &news).await;
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

    async fn apply(&mut self, command: SfuCommand, news: &NewsSink) {
        match command {
            SfuCommand::Signal {
                uid, leg, signal, ..
            } => {
                if let Err(err) = self.on_signal(&uid, leg, signal, news).await {
                    self.failed(news, &uid, leg, err);
                }
            }
            SfuCommand::WantVideo {
                subscriber,
                publisher,
                paused,
                layer,
                ..
            } => {
                if let Err(err) = self
                    .want_video(&subscriber, &publisher, paused, layer, news)
                    .await
                {
                    self.failed(news, &subscriber, SfuLeg::Subscribe, err);
                }
            }
            SfuCommand::Leave { uid, .. } => {
                self.leave(&uid, news).await;
            }
            SfuCommand::OpenRoom { .. } | SfuCommand::CloseRoom { .. } => {}
        }
    }

    async fn on_signal(
        &mut self,
        uid: &str,
        leg: SfuLeg,
        signal: PeerSignal,
        news: &NewsSink,
    ) -> Result<(), JanusError> {
        match (leg, signal) {
            (SfuLeg::Publish, PeerSignal::Offer { sdp }) => self.publish(uid, sdp, news).await,
            (SfuLeg::Subscribe, PeerSignal::Answer { sdp }) => {
                self.start_subscription(uid, sdp, news).await
            }
            (
                leg,
                PeerSignal::Candidate {
                    candidate,
                    sdp_mid,
                    sdp_mline_index,
                    ..
                },
            ) => {
                let member = self.members.get(uid);
                let handle = match leg {
                    SfuLeg::Publish => member.and_then(|m| m.publisher),
                    SfuLeg::Subscribe => member.and_then(|m| m.subscriber),
                };
                if let Some(handle) = handle {
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
                Ok(())
            }
            // Answers to the publisher and offers to the subscriber come from Janus, never
            // from a client; video wishes are for participants, not legs.
            _ => Ok(()),
        }
    }

    /// A publisher's offer: join the room (or renegotiate), answer, then bring its streams
    /// to everyone else.
    async fn publish(&mut self, uid: &str, sdp: String, news: &NewsSink) -> Result<(), JanusError> {
        let kinds = published_kinds(&sdp);
        let existing = self.members.get(uid).and_then(|m| m.publisher);
        let handle = match existing {
            Some(handle) => handle,
            None => {
                let (handle, events) = self.janus.attach_videoroom().await?;
                self.follow(uid, SfuLeg::Publish, events);
                self.members.entry(uid.to_owned()).or_default().publisher = Some(handle);
                handle
            }
        };
        let descriptions: Vec<Value> = kinds
            .iter()
            .map(|(mid, kind)| json!({"mid": mid, "description": kind.stream_id()}))
            .collect();
        let body = if existing.is_some() && self.members[uid].feed.is_some() {
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
        let answer = self
            .janus
            .message(handle, body, Some(json!({"type": "offer", "sdp": sdp})))
            .await?;
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
        if live {
            // A renegotiation (new streams): bring them to everyone now.
            self.fan_out(uid, news).await;
        }
        Ok(())
    }

    /// `uid`'s publishing connection is up (`webrtcup`): Janus lets others subscribe to a
    /// feed only from now on.
    async fn publisher_up(&mut self, uid: &str, news: &NewsSink) {
        let Some(member) = self.members.get_mut(uid) else {
            return;
        };
        member.live = true;
        self.tell_layers_wanted(uid, news);
        self.fan_out(uid, news).await;
    }

    /// Everyone else receives `uid`'s streams they lack; `uid` receives every live feed's.
    async fn fan_out(&mut self, uid: &str, news: &NewsSink) {
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
            self.subscribe(other, wanted, news).await;
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
        self.subscribe(uid, theirs, news).await;
    }

    /// Adds `streams` to what `uid` receives: a new subscriber handle, or an `update` — now,
    /// or after the answer to the offer that is out.
    async fn subscribe(&mut self, uid: &str, streams: Vec<(u64, String)>, news: &NewsSink) {
        if streams.is_empty() {
            return;
        }
        let Some(member) = self.members.get_mut(uid) else {
            return;
        };
        member.to_subscribe.extend(streams);
        if member.awaiting_answer {
            return;
        }
        if let Err(err) = self.flush_subscriptions(uid, news).await {
            self.failed(news, uid, SfuLeg::Subscribe, err);
        }
    }

    /// Sends what waits to be subscribed for `uid`, and forwards Janus's offer.
    async fn flush_subscriptions(&mut self, uid: &str, news: &NewsSink) -> Result<(), JanusError> {
        let Some(member) = self.members.get_mut(uid) else {
            return Ok(());
        };
        let streams = std::mem::take(&mut member.to_subscribe);
        if streams.is_empty() {
            return Ok(());
        }
        let list: Vec<Value> = streams
            .iter()
            .map(|(feed, mid)| json!({"feed": feed, "mid": mid}))
            .collect();
        let answer = match member.subscriber {
            Some(handle) => {
                self.janus
                    .message(
                        handle,
                        json!({"request": "update", "subscribe": list}),
                        None,
                    )
                    .await?
            }
            None => {
                let (handle, events) = self.janus.attach_videoroom().await?;
                let joined = self
                    .janus
                    .message(
                        handle,
                        json!({
                            "request": "join",
                            "ptype": "subscriber",
                            "room": self.room_id,
                            "streams": list,
                        }),
                        None,
                    )
                    .await;
                match joined {
                    Ok(answer) => {
                        self.follow(uid, SfuLeg::Subscribe, events);
                        if let Some(member) = self.members.get_mut(uid) {
                            member.subscriber = Some(handle);
                        }
                        answer
                    }
                    Err(err) => {
                        self.janus.detach(handle).await;
                        return Err(err);
                    }
                }
            }
        };
        self.on_subscriber_offer(uid, &answer.data, answer.jsep.as_ref(), news);
        Ok(())
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

    /// The client answered our offer: start (or resume) forwarding, then send what waited.
    async fn start_subscription(
        &mut self,
        uid: &str,
        sdp: String,
        news: &NewsSink,
    ) -> Result<(), JanusError> {
        let Some(handle) = self.members.get(uid).and_then(|m| m.subscriber) else {
            return Ok(());
        };
        self.janus
            .message(
                handle,
                json!({"request": "start"}),
                Some(json!({"type": "answer", "sdp": sdp})),
            )
            .await?;
        if let Some(member) = self.members.get_mut(uid) {
            member.awaiting_answer = false;
        }
        self.flush_subscriptions(uid, news).await
    }

    /// Pauses or resumes `publisher`'s camera for `subscriber`, and picks the simulcast layer
    /// forwarded (Janus switches at the layer's next keyframe; a publisher without simulcast
    /// has only the one).
    async fn want_video(
        &mut self,
        subscriber: &str,
        publisher: &str,
        paused: bool,
        layer: SimulcastLayer,
        news: &NewsSink,
    ) -> Result<(), JanusError> {
        if let Some(member) = self.members.get_mut(subscriber) {
            member
                .wishes
                .insert(publisher.to_owned(), (!paused).then_some(layer));
        }
        self.tell_layers_wanted(publisher, news);
        let Some(feed) = self.members.get(publisher).and_then(|m| m.feed) else {
            return Ok(());
        };
        let camera_mids: Vec<String> = self.members[publisher]
            .published
            .iter()
            .filter(|(_, kind)| **kind == StreamKind::Camera)
            .map(|(mid, _)| mid.clone())
            .collect();
        let Some(member) = self.members.get(subscriber) else {
            return Ok(());
        };
        let Some(handle) = member.subscriber else {
            return Ok(());
        };
        let streams: Vec<Value> = camera_mids
            .iter()
            .filter_map(|feed_mid| member.receiving.get(&(feed, feed_mid.clone())))
            .map(|mid| json!({"mid": mid, "send": !paused, "substream": layer.substream()}))
            .collect();
        if streams.is_empty() {
            return Ok(());
        }
        self.janus
            .message(
                handle,
                json!({"request": "configure", "streams": streams}),
                None,
            )
            .await?;
        Ok(())
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

    /// An event on one of `uid`'s handles.
    async fn on_janus_event(&mut self, uid: &str, leg: SfuLeg, event: Value, news: &NewsSink) {
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
                self.publisher_up(uid, news).await;
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
