//! Real media for server-connected calls: a `huddle_media` session per call, bridged into ECS.
//!
//! - When a call that goes through a server connection is in the session (`InCall`), a
//!   [`CallMediaSession`] starts: it connects to every other participant (WebRTC, full mesh)
//!   and sends the local synthetic video and tone ([`MediaSettings`]).
//! - Joins and leaves (`UserJoined`/`UserLeft`) add and remove peers; peer signals travel
//!   through the server ([`OutboundPeerSignal`] out, `PeerSignalReceived` in).
//! - The local participant's state drives the senders: muted → no audio packets, video
//!   paused (or an audio-only call) → no video packets; `CallSwitchedToVideo` turns video on.
//! - [`drain_call_media`] (in `Receive`) takes what the peers decoded: the newest video frame
//!   of each participant — and our own sent picture, for the self-view
//!   ([`MediaSettings::local_preview`]) — goes into their tile's `Image` (the bytes are moved, not copied; the
//!   image is render-world only), its size into the layout; stats accumulate in
//!   [`MediaStats`]; each link's loss and round-trip time (measured every second) set the
//!   participant's connection quality (`ConnectionQualityChanged` when it changes).
//! - Audio routes (volume, local mute) set each voice's gain in the session's mixer, which a
//!   timer-paced output pulls every 20 ms; [`MediaStats`] has the output level.
//! - Adaptive receive: each remote's on-screen size (tile width, in-world surfaces) decides
//!   what we ask of its sender: paused while hidden, a capped bitrate while small.
//! - Recording: when the local participant turns recording on (`RecordingToggled` by us,
//!   from `start_recording` or `start_recording_on_call_start`), the session records the
//!   call into a Matroska file in [`RecordingSettings`]'s folder; turning it off (or the
//!   call ending) finishes the file (`RecordingSaved`). A file that cannot be written gives
//!   an `Error` event and turns recording off; the call goes on.
//! - Screen share: when the local participant starts sharing (`ScreenShareStarted` by us),
//!   the session captures the desktop ([`ScreenShareSettings`]: X11 display, frame rate,
//!   bitrate) onto its screen track; no display gives an `Error` event and the share is
//!   turned off again. With [`ScreenShareSettings::camera`] set (`share_camera`), a Bevy
//!   camera's picture is shared instead ([`crate::game_view`]). A remote's screen frames go
//!   into a second tile of theirs, marked [`ScreenShareTile`] (spotlighted by the layout),
//!   removed when they stop sharing.
//! - The session stops when the call ends (dropping it closes every connection).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bevy::asset::RenderAssetUsages;
use bevy::image::ToExtents;
use bevy::prelude::*;
use huddle_media::audio::detect_tone;
use huddle_media::peer::PeerEvent;
use huddle_media::session::{MediaSession, SessionConfig};
use huddle_media::video::EncoderSettings;
use huddle_protocol::PeerSignal;
use wgpu_types::{TextureDimension, TextureFormat};

use crate::connection::{HuddleRuntime, PeerSignalReceived, ViaConnection};
use crate::error::HuddleError;
use crate::events::CallEvent;
use crate::model::*;
use crate::session::{SessionChange, SessionUpdate};

/// What calls send, and where peers gather candidates.
#[derive(Resource, Clone, Debug)]
pub struct MediaSettings {
    /// Synthetic video sent by the local participant.
    pub video: EncoderSettings,
    /// UDP addresses for ICE (loopback by default: same-machine calls, tests, demos).
    pub udp_addrs: Vec<String>,
    /// Send stereo Opus (music, game audio) instead of mono voice.
    pub stereo_audio: bool,
    /// Show what we send (camera or pattern) in our own tile, up to 15 pictures a second.
    pub local_preview: bool,
}

impl Default for MediaSettings {
    fn default() -> Self {
        Self {
            video: EncoderSettings::hd(),
            udp_addrs: vec!["127.0.0.1:0".to_owned()],
            stereo_audio: false,
            local_preview: true,
        }
    }
}

/// How the local screen share captures and sends.
#[derive(Resource, Clone, Debug, PartialEq)]
pub struct ScreenShareSettings {
    /// The X11 display to capture (`None`: `$DISPLAY`).
    pub display: Option<String>,
    /// One window of it to capture (an X11 window id) instead of the whole screen.
    pub window: Option<u32>,
    /// Share this Bevy camera's picture instead of the desktop (feature `game_view`; see
    /// [`crate::game_view`]). [`CallAction::ShareCamera`](crate::actions::CallAction) sets it.
    pub camera: Option<Entity>,
    /// Frames per second.
    pub fps: f32,
    /// Encoder bitrate, bits per second.
    pub bitrate_bps: u32,
}

impl Default for ScreenShareSettings {
    fn default() -> Self {
        Self {
            display: None,
            window: None,
            camera: None,
            fps: 10.0,
            bitrate_bps: 1_500_000,
        }
    }
}

/// Newest screen-share frame of each sharer, between draining and showing.
#[derive(Resource, Default)]
pub(crate) struct PendingScreenFrames(HashMap<(Entity, String), huddle_media::peer::DecodedVideo>);

/// Where recordings go.
#[derive(Resource, Clone, Debug, PartialEq, Eq)]
pub struct RecordingSettings {
    /// The folder new recordings are written to (created if missing), as
    /// `huddle-<session>-<unix time>.mkv`.
    pub folder: std::path::PathBuf,
    /// Write exactly this file instead (the bot's `--record PATH`).
    pub file: Option<std::path::PathBuf>,
}

impl Default for RecordingSettings {
    /// `$HUDDLE_RECORDINGS`, else `~/Videos/Huddle`, else `./recordings`.
    fn default() -> Self {
        let folder = std::env::var_os("HUDDLE_RECORDINGS")
            .map(std::path::PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME")
                    .map(|home| std::path::PathBuf::from(home).join("Videos").join("Huddle"))
            })
            .unwrap_or_else(|| "recordings".into());
        Self { folder, file: None }
    }
}

impl RecordingSettings {
    /// The file a new recording of session `session_id` goes to.
    pub fn path_for(&self, session_id: &str) -> std::path::PathBuf {
        if let Some(file) = &self.file {
            return file.clone();
        }
        let safe: String = session_id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        self.folder.join(format!("huddle-{safe}-{now}.mkv"))
    }
}

/// A signal for a peer, to be relayed by the server.
#[derive(Message, Clone, Debug, PartialEq)]
pub struct OutboundPeerSignal {
    /// The call.
    pub call: Entity,
    /// Recipient uid.
    pub to: String,
    /// The signal.
    pub signal: PeerSignal,
}

/// The live media of a call.
#[derive(Component)]
pub struct CallMediaSession {
    session: MediaSession,
    local_uid: String,
}

impl CallMediaSession {
    /// The underlying session (counters, test hooks).
    pub fn session(&self) -> &MediaSession {
        &self.session
    }
}

/// What was received from one remote participant.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RemoteMediaStats {
    /// Video frames decoded.
    pub video_frames_decoded: u64,
    /// Frame number of the last decoded frame (from the synthetic stamp).
    pub last_frame_number: Option<u32>,
    /// Size of the last frame.
    pub video_size: UVec2,
    /// Decoded frames per second over the last second.
    pub video_fps: f32,
    /// Capture → decoded latency of the last stamped frames (at most 10 minutes at 30 fps),
    /// in milliseconds.
    pub video_latency_ms: Vec<u32>,
    /// Audio frames decoded (20 ms each).
    pub audio_frames_decoded: u64,
    /// Of which concealed (lost).
    pub audio_frames_concealed: u64,
    /// Tone heard over the last second.
    pub audio_tone_hz: Option<f32>,
    /// Channels of their audio stream (1 mono, 2 stereo; 0 before any audio).
    pub audio_channels: u8,
    /// Round-trip time of the link, in milliseconds.
    pub rtt_ms: Option<f64>,
    /// Share of packets lost over the last second.
    pub loss: f32,
    recent_audio: Vec<i16>,
    recent_frames: Vec<Instant>,
}

/// Media statistics of a call.
#[derive(Component, Clone, Debug, Default)]
pub struct MediaStats {
    /// Per remote uid.
    pub remotes: HashMap<String, RemoteMediaStats>,
    /// When the media session started.
    pub started: Option<Instant>,
    /// When the first remote media (video, or audio in an audio call) was decoded.
    pub first_remote_media: Option<Instant>,
    /// The output mix: frames played and the last frame's level (left, right).
    pub output_frames: u64,
    /// RMS of the last mixed frame, left and right, 0..=1.
    pub output_rms: (f32, f32),
}

/// Latency samples kept per remote participant.
const MAX_LATENCY_SAMPLES: usize = 18_000;

/// Connection quality from loss and round-trip time: excellent under 2 % loss and 150 ms,
/// good under 5 % and 300 ms, poor under 15 %, bad beyond.
pub fn quality_from(rtt_ms: Option<f64>, loss: f32) -> ConnectionQuality {
    let rtt = rtt_ms.unwrap_or(0.0);
    if loss < 0.02 && rtt < 150.0 {
        ConnectionQuality::Excellent
    } else if loss < 0.05 && rtt < 300.0 {
        ConnectionQuality::Good
    } else if loss < 0.15 {
        ConnectionQuality::Poor
    } else {
        ConnectionQuality::Bad
    }
}

fn wall_clock_ms() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u32)
        .unwrap_or(0)
}

/// Starts the media of server-connected calls once they are in the session.
pub(crate) fn start_call_media(
    calls: Query<
        (Entity, &Call, &CallState, &CallMedia, &CallParticipants),
        (With<ViaConnection>, Without<CallMediaSession>),
    >,
    participants: Query<(&Participant, Has<LocalParticipant>, &ParticipantState)>,
    runtime: Option<Res<HuddleRuntime>>,
    settings: Option<Res<MediaSettings>>,
    recordings: Option<Res<RecordingSettings>>,
    devices: Option<Res<crate::devices::MediaDevices>>,
    mut events: MessageWriter<CallEvent>,
    mut actions: MessageWriter<crate::actions::CallAction>,
    mut commands: Commands,
) {
    let Some(runtime) = runtime else {
        return;
    };
    for (call, request, state, media, members) in &calls {
        if *state != CallState::InCall {
            continue;
        }
        let people: Vec<(String, bool, ParticipantState)> = members
            .iter()
            .filter_map(|p| participants.get(p).ok())
            .map(|(who, local, state)| (who.uid.clone(), local, state.clone()))
            .collect();
        let Some((local_uid, _, local_state)) = people.iter().find(|(_, local, _)| *local).cloned()
        else {
            continue;
        };
        let settings = settings.as_deref().cloned().unwrap_or_default();
        let session = MediaSession::start(
            runtime.handle(),
            SessionConfig {
                local_uid: local_uid.clone(),
                video: settings.video,
                udp_addrs: settings.udp_addrs.clone(),
                audio_input: devices
                    .as_ref()
                    .and_then(|d| d.selected(crate::devices::DeviceKind::AudioInput))
                    .map(|d| d.id.clone()),
                audio_output: devices
                    .as_ref()
                    .and_then(|d| d.selected(crate::devices::DeviceKind::AudioOutput))
                    .map(|d| d.id.clone()),
                video_input: devices
                    .as_ref()
                    .and_then(|d| d.selected(crate::devices::DeviceKind::VideoInput))
                    .map(|d| d.id.clone()),
                stereo_audio: settings.stereo_audio,
            },
        );
        session.set_local_preview(settings.local_preview);
        session.set_audio_muted(local_state.audio_muted);
        session.set_video_paused(local_state.video_paused);
        session.set_video_enabled(!media.audio_only);
        for (uid, local, _) in &people {
            if !local {
                session.add_peer(uid);
            }
        }
        // Recording turned on before the media existed (`start_recording_on_call_start`).
        if media.recording_by.as_deref() == Some(local_uid.as_str()) {
            let recordings = recordings.as_deref().cloned().unwrap_or_default();
            let path = recordings.path_for(&request.session_id);
            begin_recording(call, &session, &path, &mut events, &mut actions);
        }
        commands.entity(call).insert((
            CallMediaSession { session, local_uid },
            MediaStats {
                started: Some(Instant::now()),
                ..default()
            },
        ));
    }
}

/// Joins and leaves add and remove peers; a switch to video turns video on.
pub(crate) fn follow_participants(
    mut events: MessageReader<CallEvent>,
    sessions: Query<&CallMediaSession>,
) {
    for event in events.read() {
        match event {
            CallEvent::UserJoined { call, user } => {
                if let Ok(media) = sessions.get(*call)
                    && user.uid != media.local_uid
                {
                    media.session.add_peer(&user.uid);
                }
            }
            CallEvent::UserLeft { call, user } => {
                if let Ok(media) = sessions.get(*call) {
                    media.session.remove_peer(&user.uid);
                }
            }
            CallEvent::CallSwitchedToVideo { call, .. } => {
                if let Ok(media) = sessions.get(*call) {
                    media.session.set_video_enabled(true);
                }
            }
            _ => {}
        }
    }
}

/// The local participant's mute and pause drive the senders.
pub(crate) fn follow_local_state(
    changed: Query<
        (&ParticipantState, &ParticipantOf),
        (With<LocalParticipant>, Changed<ParticipantState>),
    >,
    sessions: Query<&CallMediaSession>,
) {
    for (state, of) in &changed {
        if let Ok(media) = sessions.get(of.0) {
            media.session.set_audio_muted(state.audio_muted);
            media.session.set_video_paused(state.video_paused);
        }
    }
}

/// Signals from peers (relayed by the server) go to the call's session.
pub(crate) fn route_peer_signals(
    mut signals: MessageReader<PeerSignalReceived>,
    sessions: Query<&CallMediaSession>,
) {
    for PeerSignalReceived { call, from, signal } in signals.read() {
        if let Ok(media) = sessions.get(*call) {
            media.session.handle_signal(from, signal.clone());
        }
    }
}

/// Drains each call's media events: signals out, newest frames into tiles, stats.
pub(crate) fn drain_call_media(
    mut calls: Query<(
        Entity,
        &CallMediaSession,
        &mut MediaStats,
        &CallParticipants,
        &CallMedia,
    )>,
    participants: Query<(&Participant, &ParticipantTiles)>,
    tiles: Query<&VideoTile, Without<ScreenShareTile>>,
    mut screen_frames: ResMut<PendingScreenFrames>,
    mut images: Option<ResMut<Assets<Image>>>,
    mut signals: MessageWriter<OutboundPeerSignal>,
    mut updates: MessageWriter<SessionUpdate>,
    mut errors: MessageWriter<CallEvent>,
    mut actions: MessageWriter<crate::actions::CallAction>,
) {
    let now = Instant::now();
    for (call, media, mut stats, members, call_media) in &mut calls {
        let mut newest: HashMap<String, huddle_media::peer::DecodedVideo> = HashMap::new();
        // Our own picture goes into our tile like anyone's (the self-view).
        if let Some(frame) = media.session.take_local_preview() {
            newest.insert(media.local_uid.clone(), frame);
        }
        while let Ok(event) = media.session.events().try_recv() {
            match event {
                PeerEvent::Signal { to, signal } => {
                    signals.write(OutboundPeerSignal { call, to, signal });
                }
                PeerEvent::Video { uid, frame } => {
                    let remote = stats.remotes.entry(uid.clone()).or_default();
                    remote.video_frames_decoded += 1;
                    remote.video_size = UVec2::new(frame.width, frame.height);
                    remote.recent_frames.push(now);
                    if let Some(stamp) = frame.stamp {
                        remote.last_frame_number = Some(stamp.frame);
                        if remote.video_latency_ms.len() >= MAX_LATENCY_SAMPLES {
                            remote.video_latency_ms.remove(0);
                        }
                        remote
                            .video_latency_ms
                            .push(wall_clock_ms().wrapping_sub(stamp.capture_ms));
                    }
                    if !call_media.audio_only {
                        stats.first_remote_media.get_or_insert(now);
                    }
                    newest.insert(uid, frame);
                }
                PeerEvent::Audio {
                    uid,
                    samples,
                    right,
                    concealed,
                } => {
                    let remote = stats.remotes.entry(uid).or_default();
                    remote.audio_frames_decoded += 1;
                    remote.audio_channels = if right.is_some() { 2 } else { 1 };
                    if concealed {
                        remote.audio_frames_concealed += 1;
                    }
                    remote.recent_audio.extend_from_slice(&samples);
                    let keep = 48_000;
                    if remote.recent_audio.len() > keep {
                        let excess = remote.recent_audio.len() - keep;
                        remote.recent_audio.drain(..excess);
                    }
                    if call_media.audio_only {
                        stats.first_remote_media.get_or_insert(now);
                    }
                }
                PeerEvent::DeviceFailed { kind, id, reason } => {
                    errors.write(CallEvent::Error {
                        call: Some(call),
                        error: HuddleError::DeviceUnavailable { kind, id, reason },
                    });
                }
                PeerEvent::Error { uid, reason } => {
                    errors.write(CallEvent::Error {
                        call: Some(call),
                        error: HuddleError::Media { uid, reason },
                    });
                }
                PeerEvent::ScreenVideo { uid, frame } => {
                    screen_frames.0.insert((call, uid), frame);
                }
                PeerEvent::ScreenShareEnded { reason } => {
                    errors.write(CallEvent::Error {
                        call: Some(call),
                        error: HuddleError::ScreenShare(reason),
                    });
                    actions.write(crate::actions::CallAction::StopScreenShare);
                }
                PeerEvent::RecordingFailed { .. } => {
                    // Turning recording off finishes the file and reports the failure
                    // (`finish_recording`), once.
                    actions.write(crate::actions::CallAction::StopRecording);
                }
                PeerEvent::Quality { uid, rtt_ms, loss } => {
                    let remote = stats.remotes.entry(uid.clone()).or_default();
                    remote.rtt_ms = rtt_ms;
                    remote.loss = loss;
                    updates.write(SessionUpdate {
                        call,
                        change: SessionChange::ConnectionQuality {
                            uid,
                            quality: quality_from(rtt_ms, loss),
                        },
                    });
                }
                PeerEvent::Disconnected { uid, .. } => {
                    // A failed link (ICE lost after a network change) is rebuilt if they are
                    // still in the call.
                    let present = members
                        .iter()
                        .filter_map(|p| participants.get(p).ok())
                        .any(|(who, _)| who.uid == uid);
                    if present {
                        media.session.remove_peer(&uid);
                        media.session.add_peer(&uid);
                    }
                }
                PeerEvent::Connected { .. } => {}
            }
        }
        let mix = media.session.mix_stats();
        stats.output_frames = mix.frames;
        stats.output_rms = mix.rms;
        for remote in stats.remotes.values_mut() {
            remote
                .recent_frames
                .retain(|t| now.duration_since(*t) < Duration::from_secs(1));
            remote.video_fps = remote.recent_frames.len() as f32;
            if remote.recent_audio.len() >= 9_600 {
                remote.audio_tone_hz = detect_tone(&remote.recent_audio);
            }
        }
        let Some(images) = images.as_deref_mut() else {
            continue;
        };
        for (uid, frame) in newest {
            let Some((_, owned)) = members
                .iter()
                .filter_map(|p| participants.get(p).ok())
                .find(|(who, _)| who.uid == uid)
            else {
                continue;
            };
            let size = UVec2::new(frame.width, frame.height);
            // A participant has one video tile (its Image is what every surface shows): the
            // decoded pixels move into it, no copy.
            let Some(tile) = owned.iter().find_map(|t| tiles.get(t).ok()) else {
                continue;
            };
            let Some(mut image) = images.get_mut(&tile.image) else {
                continue;
            };
            if image.size() == size {
                image.data = Some(frame.rgba);
            } else {
                *image = Image::new(
                    size.to_extents(),
                    TextureDimension::D2,
                    frame.rgba,
                    TextureFormat::Rgba8UnormSrgb,
                    RenderAssetUsages::RENDER_WORLD,
                );
            }
            if tile.frame_size != size {
                updates.write(SessionUpdate {
                    call,
                    change: SessionChange::VideoFormat { uid, size },
                });
            }
        }
    }
}

/// Each route's gains (volume and local mute, or the spatial gains) go to the call's mixer;
/// voices culled for distance are not decoded at all.
pub(crate) fn apply_audio_routes(
    routes: Query<(&crate::spatial::RouteGain, &RouteOf), Changed<crate::spatial::RouteGain>>,
    new_sessions: Query<(), Added<CallMediaSession>>,
    all_routes: Query<(&crate::spatial::RouteGain, &RouteOf)>,
    participants: Query<(&Participant, &ParticipantOf)>,
    sessions: Query<&CallMediaSession>,
) {
    let apply = |gain: &crate::spatial::RouteGain, of: &RouteOf| {
        let Ok((who, call)) = participants.get(of.0) else {
            return;
        };
        if let Ok(media) = sessions.get(call.0) {
            media.session.set_gain(
                &who.uid,
                huddle_media::mixer::StereoGain {
                    left: gain.left,
                    right: gain.right,
                },
            );
            media.session.set_audio_decoding(&who.uid, !gain.culled);
        }
    };
    if new_sessions.is_empty() {
        for (gain, of) in &routes {
            apply(gain, of);
        }
    } else {
        for (gain, of) in &all_routes {
            apply(gain, of);
        }
    }
}

/// Adaptive receive: what each remote participant's video gets on our screen decides how
/// much of it we ask for — nothing while it is hidden (no tile shown, no in-world surface), a
/// capped bitrate while its tile is small, everything otherwise.
pub(crate) fn request_video_by_visibility(
    calls: Query<(&CallMediaSession, &CallParticipants, &CallMedia)>,
    participants: Query<(
        Entity,
        &Participant,
        Has<LocalParticipant>,
        &ParticipantTiles,
    )>,
    tiles: Query<&TileLayout>,
    surfaces: Query<&crate::surfaces::VideoSurface>,
) {
    for (media, members, call_media) in &calls {
        if call_media.audio_only {
            continue;
        }
        for (entity, who, local, owned) in members.iter().filter_map(|p| participants.get(p).ok()) {
            if local {
                continue;
            }
            let on_surface = surfaces.iter().any(|s| s.0 == entity);
            let widest_tile = owned
                .iter()
                .filter_map(|t| tiles.get(t).ok())
                .filter(|layout| layout.visible())
                .map(|layout| layout.rect.width())
                .fold(None, |widest: Option<f32>, w| {
                    Some(widest.map_or(w, |x| x.max(w)))
                });
            let (paused, max_bitrate_bps) = match (on_surface, widest_tile) {
                (true, _) => (false, 0),
                (false, None) => (true, 0),
                (false, Some(width)) if width < SMALL_TILE_WIDTH => (false, SMALL_TILE_BITRATE),
                (false, Some(width)) if width < MEDIUM_TILE_WIDTH => (false, MEDIUM_TILE_BITRATE),
                (false, Some(_)) => (false, 0),
            };
            media
                .session
                .want_video_from(&who.uid, paused, max_bitrate_bps);
        }
    }
}

/// Tiles narrower than this (logical px) ask for [`SMALL_TILE_BITRATE`].
pub const SMALL_TILE_WIDTH: f32 = 240.0;
/// Bitrate asked for a small tile.
pub const SMALL_TILE_BITRATE: u32 = 250_000;
/// Tiles narrower than this ask for [`MEDIUM_TILE_BITRATE`].
pub const MEDIUM_TILE_WIDTH: f32 = 520.0;
/// Bitrate asked for a medium tile.
pub const MEDIUM_TILE_BITRATE: u32 = 800_000;

/// Puts each sharer's newest screen frame into their screen-share tile, spawning the tile
/// with the first frame.
pub(crate) fn show_screen_shares(
    mut pending: ResMut<PendingScreenFrames>,
    calls: Query<&CallParticipants>,
    participants: Query<(&Participant, &ParticipantTiles)>,
    mut screen_tiles: Query<&mut VideoTile, With<ScreenShareTile>>,
    mut images: Option<ResMut<Assets<Image>>>,
    mut commands: Commands,
) {
    for ((call, uid), frame) in pending.0.drain() {
        let Some(images) = images.as_deref_mut() else {
            continue;
        };
        let Some((participant, owned)) = calls.get(call).ok().and_then(|members| {
            members
                .iter()
                .find(|p| participants.get(*p).is_ok_and(|(who, _)| who.uid == uid))
                .and_then(|p| participants.get(p).ok().map(|(_, owned)| (p, owned)))
        }) else {
            continue;
        };
        let size = UVec2::new(frame.width, frame.height);
        let picture = |rgba| {
            Image::new(
                size.to_extents(),
                TextureDimension::D2,
                rgba,
                TextureFormat::Rgba8UnormSrgb,
                RenderAssetUsages::RENDER_WORLD,
            )
        };
        let existing = owned.iter().find(|t| screen_tiles.contains(*t));
        match existing.and_then(|t| screen_tiles.get_mut(t).ok()) {
            Some(mut tile) => {
                if let Some(mut image) = images.get_mut(&tile.image) {
                    if image.size() == size {
                        image.data = Some(frame.rgba);
                    } else {
                        *image = picture(frame.rgba);
                    }
                }
                if tile.frame_size != size {
                    tile.frame_size = size;
                }
            }
            None => {
                commands.spawn((
                    ScreenShareTile,
                    TileOf(participant),
                    VideoTile {
                        image: images.add(picture(frame.rgba)),
                        frame_size: size,
                    },
                ));
            }
        }
    }
}

/// Our own `ScreenShareStarted`/`Stopped` start and stop the capture; anyone's stop removes
/// their screen-share tile.
pub(crate) fn follow_screen_shares(
    mut events: ParamSet<(MessageReader<CallEvent>, MessageWriter<CallEvent>)>,
    sessions: Query<&CallMediaSession>,
    calls: Query<&CallParticipants>,
    participants: Query<(&Participant, &ParticipantTiles)>,
    screen_tiles: Query<(), With<ScreenShareTile>>,
    settings: Option<Res<ScreenShareSettings>>,
    mut actions: MessageWriter<crate::actions::CallAction>,
    mut commands: Commands,
) {
    let changes: Vec<(Entity, String, bool)> = events
        .p0()
        .read()
        .filter_map(|event| match event {
            CallEvent::ScreenShareStarted { call, user } => Some((*call, user.uid.clone(), true)),
            CallEvent::ScreenShareStopped { call, user } => Some((*call, user.uid.clone(), false)),
            _ => None,
        })
        .collect();
    for (call, uid, started) in changes {
        let local = sessions.get(call).ok().filter(|m| m.local_uid == uid);
        match (local, started) {
            (Some(media), true) => {
                let settings = settings.as_deref().cloned().unwrap_or_default();
                let opened = match settings.camera {
                    Some(camera) => crate::game_view::open_camera_share(
                        &mut commands,
                        call,
                        camera,
                        settings.fps,
                    ),
                    None => huddle_media::screen::X11Screen::open(
                        settings.display.as_deref(),
                        settings.fps,
                    )
                    .map(
                        |screen| -> Box<dyn huddle_media::screen::ScreenSource> {
                            Box::new(match settings.window {
                                Some(window) => screen.window(window),
                                None => screen,
                            })
                        },
                    ),
                };
                match opened {
                    Ok(source) => media
                        .session
                        .start_screen_share(source, settings.bitrate_bps),
                    Err(err) => {
                        events.p1().write(CallEvent::Error {
                            call: Some(call),
                            error: HuddleError::ScreenShare(err.to_string()),
                        });
                        actions.write(crate::actions::CallAction::StopScreenShare);
                    }
                }
            }
            (Some(media), false) => {
                // Stop first: the capture thread then ends quietly when its frames stop.
                media.session.stop_screen_share();
                crate::game_view::close_camera_share(&mut commands, call);
            }
            (None, true) => {}
            (None, false) => {
                let owned = calls.get(call).ok().and_then(|members| {
                    members
                        .iter()
                        .filter_map(|p| participants.get(p).ok())
                        .find(|(who, _)| who.uid == uid)
                        .map(|(_, owned)| owned)
                });
                for tile in owned.into_iter().flat_map(|o| o.iter()) {
                    if screen_tiles.contains(tile) {
                        commands.entity(tile).despawn();
                    }
                }
            }
        }
    }
}

/// A device chosen during the call (`set_audio_input_device`, `set_audio_output_device`,
/// `set_video_input_device`, `switch_camera`) is switched to live in every running media
/// session; one that cannot be opened gives a `DeviceUnavailable` error a moment later
/// (devices open off the main thread; cameras only while video is on), and the synthetic
/// stand-in (tone, null sink, test pattern) takes its place until another is chosen.
pub(crate) fn follow_device_selection(
    mut events: ParamSet<(MessageReader<CallEvent>, MessageWriter<CallEvent>)>,
    sessions: Query<(Entity, &CallMediaSession)>,
) {
    let chosen: Vec<crate::devices::DeviceInfo> = events
        .p0()
        .read()
        .filter_map(|event| match event {
            CallEvent::MediaDeviceSelected { device, .. } => Some(device.clone()),
            _ => None,
        })
        .collect();
    for device in chosen {
        for (call, media) in &sessions {
            let id = Some(device.id.as_str());
            // Devices open off the main thread: failures come back as `DeviceFailed`.
            let switched = match device.kind {
                crate::devices::DeviceKind::AudioInput => {
                    media.session.set_audio_input(id);
                    Ok(())
                }
                crate::devices::DeviceKind::AudioOutput => {
                    media.session.set_audio_output(id);
                    Ok(())
                }
                crate::devices::DeviceKind::VideoInput => {
                    media.session.set_video_input(id).map_err(|err| err.reason)
                }
            };
            if let Err(reason) = switched {
                events.p1().write(CallEvent::Error {
                    call: Some(call),
                    error: HuddleError::DeviceUnavailable {
                        kind: device.kind,
                        id: device.id.clone(),
                        reason,
                    },
                });
            }
        }
    }
}

/// Our own `RecordingToggled` starts and stops the session's recording.
pub(crate) fn follow_recording(
    mut events: ParamSet<(MessageReader<CallEvent>, MessageWriter<CallEvent>)>,
    sessions: Query<(&CallMediaSession, &Call)>,
    settings: Option<Res<RecordingSettings>>,
    mut actions: MessageWriter<crate::actions::CallAction>,
) {
    let toggles: Vec<(Entity, bool)> = events
        .p0()
        .read()
        .filter_map(|event| match event {
            CallEvent::RecordingToggled { call, started, by } => sessions
                .get(*call)
                .ok()
                .filter(|(media, _)| media.local_uid == *by)
                .map(|_| (*call, *started)),
            _ => None,
        })
        .collect();
    for (call, started) in toggles {
        let Ok((media, request)) = sessions.get(call) else {
            continue;
        };
        if started {
            let settings = settings.as_deref().cloned().unwrap_or_default();
            let path = settings.path_for(&request.session_id);
            begin_recording(call, &media.session, &path, &mut events.p1(), &mut actions);
        } else {
            finish_recording(call, media, &mut events.p1());
        }
    }
}

/// Starts recording into `path`; a file that cannot be written is an `Error` event and turns
/// recording off again (for everyone: the action tells the peers).
fn begin_recording(
    call: Entity,
    session: &MediaSession,
    path: &std::path::Path,
    events: &mut MessageWriter<CallEvent>,
    actions: &mut MessageWriter<crate::actions::CallAction>,
) {
    if let Err(err) = session.start_recording(path) {
        events.write(CallEvent::Error {
            call: Some(call),
            error: HuddleError::Recording(err.to_string()),
        });
        actions.write(crate::actions::CallAction::StopRecording);
    }
}

/// Finishes the session's recording, if any: `RecordingSaved`, or an `Error`.
fn finish_recording(call: Entity, media: &CallMediaSession, events: &mut MessageWriter<CallEvent>) {
    match media.session.stop_recording() {
        Some(Ok(summary)) => {
            events.write(CallEvent::RecordingSaved {
                call,
                path: summary.path,
                duration_ms: summary.duration_ms,
                tracks: summary.tracks.len(),
            });
        }
        Some(Err(err)) => {
            events.write(CallEvent::Error {
                call: Some(call),
                error: HuddleError::Recording(err.to_string()),
            });
        }
        None => {}
    }
}

/// Ended calls stop their media (finishing a recording, then dropping the session, which
/// closes every connection).
pub(crate) fn stop_ended_media(
    calls: Query<(Entity, &CallState, &CallMediaSession), Changed<CallState>>,
    mut events: MessageWriter<CallEvent>,
    mut commands: Commands,
) {
    for (call, state, media) in &calls {
        if state.is_ended() {
            finish_recording(call, media, &mut events);
            commands.entity(call).remove::<CallMediaSession>();
        }
    }
}
