//! The call as ECS data.
//!
//! ```text
//! Call ──CallParticipants──▶ Participant ──ParticipantTiles──▶ VideoTile (bevy_ui node)
//!                                        └─ParticipantRoutes─▶ AudioRoute
//! ```
//!
//! - The **call** entity carries [`Call`] (session id and settings, the request component a
//!   user spawns), [`CallState`], [`CallLayout`] (mode, pin, dominant speaker, floating tile
//!   position), [`CallMedia`] (audio mode, recording, PIP, audio-only) and [`CallViewport`].
//! - Each **participant** has [`Participant`] (identity), [`ParticipantState`] (muted, paused,
//!   speaking, hand raised, connection quality) and [`ParticipantOf`] its call; the local
//!   user's participant is marked [`LocalParticipant`].
//! - Each participant owns one **video tile** ([`VideoTile`], [`TileLayout`],
//!   [`TileInteraction`]) through [`TileOf`], and one **audio route** ([`AudioRoute`]) through
//!   [`RouteOf`]. Despawning a participant despawns its tile and route; despawning the call
//!   despawns its participants.

use bevy::picking::hover::Hovered;
use bevy::prelude::*;
use huddle_protocol::CallType;

use crate::call::route::RouteGain;
use crate::call::session::AloneFor;
use crate::call::settings::{AudioMode, CallSettings, LayoutMode};

/// The request component of a call: spawn it (with a session id and settings) and the plugin
/// validates the settings, marks it the active call and attaches the rest.
#[derive(Component, Clone, Debug)]
#[require(
    CallState,
    CallLayout,
    CallMedia,
    CallViewport,
    CallParticipants,
    AloneFor
)]
pub struct Call {
    /// The session id that participants meet in.
    pub session_id: String,
    /// How the call looks and starts.
    pub settings: CallSettings,
    /// Whether this is a group call (a 1:1 call ends for both when either side leaves).
    pub is_group: bool,
}

impl Call {
    /// A 1:1 call in `session_id` with `settings`.
    pub fn new(session_id: impl Into<String>, settings: CallSettings) -> Self {
        Self {
            session_id: session_id.into(),
            settings,
            is_group: false,
        }
    }

    /// The same call, as a group call.
    pub fn group(mut self) -> Self {
        self.is_group = true;
        self
    }

    /// Audio or video, from the settings.
    pub fn call_type(&self) -> CallType {
        if self.settings.audio_only {
            CallType::Audio
        } else {
            CallType::Video
        }
    }
}

/// Which way a ringing call goes (the wire's type: outgoing = we placed it).
pub use huddle_protocol::CallDirection;

/// Why a call ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndReason {
    /// The local user ended it.
    LocalHangUp,
    /// The other side of a 1:1 call ended it (or the server ended the session).
    RemoteHangUp,
    /// Alone in the call for `idle_timeout`.
    SessionTimeout,
    /// The receiver rejected it.
    Rejected,
    /// The receiver was busy.
    Busy,
    /// The caller cancelled it.
    Cancelled,
    /// Nobody answered in time.
    Unanswered,
    /// The connection to the server was lost for good.
    ConnectionLost,
    /// The server shut down.
    ServerShutdown,
    /// The call could not start or went on no further (invalid settings, a refused token,
    /// no connection).
    Failed {
        /// The reference error code.
        code: huddle_protocol::ErrorCode,
        /// What happened.
        message: String,
    },
}

impl EndReason {
    /// A call that failed with this error.
    pub fn failed(error: &super::error::HuddleError) -> Self {
        EndReason::Failed {
            code: error.code(),
            message: error.to_string(),
        }
    }
}

/// Where a call is in its life.
#[derive(Component, Clone, Debug, Default, PartialEq, Eq)]
pub enum CallState {
    /// Spawned, nothing sent yet.
    #[default]
    Idle,
    /// Ringing (before anyone joined the session).
    Ringing {
        /// Placed by us or received.
        direction: CallDirection,
    },
    /// Joining the session (token sent, waiting for the participant list).
    Joining,
    /// In the session with media flowing.
    InCall,
    /// Over.
    Ended {
        /// Why.
        reason: EndReason,
    },
}

impl CallState {
    /// Whether the call is over.
    pub fn is_ended(&self) -> bool {
        matches!(self, CallState::Ended { .. })
    }
}

/// Layout state of a call: mode, pin, dominant speaker, floating tile position.
#[derive(Component, Clone, Debug, Default, PartialEq)]
pub struct CallLayout {
    /// The current layout mode (starts as `settings.mode`).
    pub mode: LayoutMode,
    /// The pinned participant, if any: always the main tile in Spotlight and Single.
    pub pinned: Option<Entity>,
    /// The loudest remote participant lately, if any.
    pub dominant_speaker: Option<Entity>,
    /// Top-left of the floating local tile in Spotlight, once the user dragged it.
    pub floating_position: Option<Vec2>,
}

/// Media state of the call as a whole.
#[derive(Component, Clone, Debug, Default, PartialEq)]
pub struct CallMedia {
    /// Current audio route.
    pub audio_mode: AudioMode,
    /// Whether (and by whom) the call is being recorded.
    pub recording_by: Option<String>,
    /// Picture-in-picture is on.
    pub pip: bool,
    /// The call carries no video (until switched to video).
    pub audio_only: bool,
    /// The Bevy camera whose picture our screen share sends instead of the desktop
    /// (`share_camera`); cleared when the share stops.
    pub shared_camera: Option<Entity>,
}

/// The size of the area the call's tiles are laid out in, in logical pixels.
///
/// Set from the target UI node or the primary window when there is one; set it directly in a
/// headless app.
#[derive(Component, Clone, Copy, Debug, PartialEq)]
pub struct CallViewport {
    /// Width and height.
    pub size: Vec2,
}

impl Default for CallViewport {
    fn default() -> Self {
        Self {
            size: Vec2::new(1280.0, 720.0),
        }
    }
}

/// Where the call's tiles render: the UI node to parent them under. Without it, tiles are
/// root UI nodes (or simply data, in a headless app).
#[derive(Component, Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallTarget(pub Entity);

/// The call a participant belongs to.
#[derive(Component, Clone, Copy, Debug, PartialEq, Eq)]
#[relationship(relationship_target = CallParticipants)]
pub struct ParticipantOf(pub Entity);

/// The participants of a call, in join order.
#[derive(Component, Clone, Debug, Default, PartialEq, Eq)]
#[relationship_target(relationship = ParticipantOf, linked_spawn)]
pub struct CallParticipants(Vec<Entity>);

/// Who a participant is.
#[derive(Component, Clone, Debug, PartialEq, Eq)]
#[require(ParticipantState)]
pub struct Participant {
    /// User id.
    pub uid: String,
    /// Display name.
    pub name: String,
    /// Avatar picture URL, if any.
    pub avatar: Option<String>,
    /// Order of arrival in the call (larger is later).
    pub joined_seq: u64,
}

impl Participant {
    /// Up to two initials of the display name (or uid), for the avatar placeholder.
    pub fn initials(&self) -> String {
        initials(&self.name, &self.uid)
    }
}

/// Up to two initials (upper case) of `name`'s first words, or of `id` when the name is
/// blank: what avatars show, in tiles and in the app's lists alike.
pub fn initials(name: &str, id: &str) -> String {
    let source = if name.trim().is_empty() { id } else { name };
    source
        .split_whitespace()
        .filter_map(|word| word.chars().next())
        .take(2)
        .flat_map(char::to_uppercase)
        .collect()
}

/// Marks the local user's participant.
#[derive(Component, Clone, Copy, Debug, Default)]
pub struct LocalParticipant;

/// Network quality of a participant, from loss and round-trip time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Reflect)]
pub enum ConnectionQuality {
    /// Not measured yet.
    #[default]
    Unknown,
    /// No noticeable loss or delay.
    Excellent,
    /// Some loss or delay.
    Good,
    /// Noticeable loss or delay.
    Poor,
    /// Barely usable.
    Bad,
}

/// What a participant is doing.
#[derive(Component, Clone, Debug, Default, PartialEq, Eq)]
pub struct ParticipantState {
    /// Microphone muted.
    pub audio_muted: bool,
    /// Camera paused (the tile shows the avatar).
    pub video_paused: bool,
    /// Currently speaking.
    pub speaking: bool,
    /// Hand raised.
    pub hand_raised: bool,
    /// Sharing their screen.
    pub screen_sharing: bool,
    /// Network quality.
    pub connection_quality: ConnectionQuality,
    /// How the media to and from them travels, once ICE has chosen (remote participants).
    pub media_path: Option<MediaPath>,
}

/// The ICE candidate pair carrying a participant's media, as WebRTC statistics name it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MediaPath {
    /// Our side: `host`, `srflx`, `prflx` or `relay` (through a TURN server).
    pub local_candidate_type: String,
    /// Their side.
    pub remote_candidate_type: String,
    /// `udp` or `tcp` (for a relay, to the TURN server).
    pub protocol: String,
}

impl std::fmt::Display for MediaPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ↔ {} over {}",
            self.local_candidate_type, self.remote_candidate_type, self.protocol
        )
    }
}

/// The participant a video tile shows.
#[derive(Component, Clone, Copy, Debug, PartialEq, Eq)]
#[relationship(relationship_target = ParticipantTiles)]
pub struct TileOf(pub Entity);

/// The tiles of a participant.
#[derive(Component, Clone, Debug, Default, PartialEq, Eq)]
#[relationship_target(relationship = TileOf, linked_spawn)]
pub struct ParticipantTiles(Vec<Entity>);

/// A participant's video: the `Image` frames land in, and what is known about them.
#[derive(Component, Clone, Debug)]
#[require(TileLayout, TileInteraction, Hovered)]
pub struct VideoTile {
    /// The image remote frames are written into (one per participant).
    pub image: Handle<Image>,
    /// Size of the last frame; zero until video arrives.
    pub frame_size: UVec2,
}

impl VideoTile {
    /// Whether any video frame has arrived.
    pub fn has_video(&self) -> bool {
        self.frame_size.x > 0 && self.frame_size.y > 0
    }

    /// Width / height of the video, if known.
    pub fn aspect(&self) -> Option<f32> {
        self.has_video()
            .then(|| self.frame_size.x as f32 / self.frame_size.y as f32)
    }
}

/// Marks a participant's screen-share tile: a second [`VideoTile`] of theirs, showing the
/// screen they share (spotlighted while it lasts), beside their camera tile.
#[derive(Component, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScreenShareTile;

/// The part a tile plays in the current layout.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Reflect)]
pub enum TileRole {
    /// Not shown.
    #[default]
    Hidden,
    /// A cell of the grid.
    Grid,
    /// The main (large) tile.
    Main,
    /// A tile in the Spotlight strip.
    Strip,
    /// The floating local preview in Spotlight.
    Floating,
}

/// Where a tile is: computed by the layout, applied to the tile's UI node.
#[derive(Component, Clone, Copy, Debug, Default, PartialEq)]
pub struct TileLayout {
    /// The tile's cell in viewport coordinates (logical pixels, origin top-left).
    pub rect: Rect,
    /// Where the picture is drawn inside the viewport (smaller than `rect` with Contain).
    pub content: Rect,
    /// Which part of the picture is shown, in 0..1 texture coordinates (cropped with Cover).
    pub uv: Rect,
    /// Drawing order: larger is on top.
    pub z: i32,
    /// The part it plays.
    pub role: TileRole,
}

impl TileLayout {
    /// Whether the tile is shown.
    pub fn visible(&self) -> bool {
        self.role != TileRole::Hidden
    }
}

/// Pointer state of a tile.
#[derive(Component, Clone, Copy, Debug, Default, PartialEq)]
pub struct TileInteraction {
    /// A pointer is over it.
    pub hovered: bool,
    /// It is being dragged; holds the floating position when the drag started.
    pub drag_origin: Option<Vec2>,
}

/// The participant an audio route plays.
#[derive(Component, Clone, Copy, Debug, PartialEq, Eq)]
#[relationship(relationship_target = ParticipantRoutes)]
pub struct RouteOf(pub Entity);

/// The audio routes of a participant.
#[derive(Component, Clone, Debug, Default, PartialEq, Eq)]
#[relationship_target(relationship = RouteOf, linked_spawn)]
pub struct ParticipantRoutes(Vec<Entity>);

/// How one participant's voice reaches an output device; its [`RouteGain`] is what the mixer
/// applies.
#[derive(Component, Clone, Debug, PartialEq)]
#[require(RouteGain)]
pub struct AudioRoute {
    /// Output device id; `None` follows the selected output device.
    pub output_device: Option<String>,
    /// Local playback volume, 0..=1.
    pub volume: f32,
    /// Muted locally (only for us; the participant is not told).
    pub local_mute: bool,
    /// Position of the voice in the world, for spatial panning; `None` is non-spatial.
    pub position: Option<Vec3>,
}

impl Default for AudioRoute {
    fn default() -> Self {
        Self {
            output_device: None,
            volume: 1.0,
            local_mute: false,
            position: None,
        }
    }
}

/// The call that in-call actions apply to (the reference SDK has one active call at a time).
#[derive(Resource, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ActiveCall(pub Option<Entity>);

/// Counter for [`Participant::joined_seq`].
#[derive(Resource, Debug, Default)]
pub(crate) struct JoinSequence(pub u64);

impl JoinSequence {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 += 1;
        self.0
    }
}
