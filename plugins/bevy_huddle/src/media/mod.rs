//! Real media for relayed calls: a `huddle_media` session per call, bridged into ECS. It
//! imports the call model and the runtime, never `net/`: whatever relays the call's signals
//! ([`RelayedBy`](crate::call::signal::RelayedBy)) carries its WebRTC negotiation.
//!
//! - [`lifecycle`] (`HuddleSystems::Media`): when a relayed call is in the session (`InCall`),
//!   a [`CallMediaSession`] starts; it connects to every other participant (WebRTC, full
//!   mesh) and sends the local camera or test pattern and microphone or tone
//!   ([`MediaSettings`]). Joins and leaves add and remove peers; the local participant's mute
//!   and pause drive the senders; `CallSwitchedToVideo` turns video on; each audio route's
//!   [`RouteGain`](crate::call::route::RouteGain) sets that voice's gain in the session's
//!   mixer; each remote's [`VideoDemand`](crate::call::demand::VideoDemand) is asked of their
//!   sender. The session stops when the call ends (dropping it closes every connection).
//! - [`drain`] (`HuddleSystems::Receive`): what the sessions produced — peer signals out,
//!   errors, link quality (→ `ConnectionQualityChanged`), statistics ([`stats`]), and the
//!   newest decoded picture of each participant, our own included (the self-view,
//!   [`MediaSettings::local_preview`]), moved into their tile's `Image`.
//! - [`recording`], [`share`] (desktop or game-view screen share, [`game_view`]) and
//!   [`devices`] (live device switching, the real device watcher).

pub mod devices;
pub mod drain;
pub mod game_view;
pub mod lifecycle;
pub mod recording;
pub mod share;
pub mod stats;

use bevy::prelude::*;
use huddle_media::session::MediaSession;
use huddle_media::video::EncoderSettings;

use crate::HuddleSystems;
pub use devices::DeviceWatcherPlugin;
pub use recording::RecordingSettings;
pub use share::ScreenShareSettings;
pub use stats::{MediaStats, RemoteMediaStats, quality_from};

/// Real media (WebRTC, H.264, Opus) for relayed calls.
pub struct CallMediaPlugin;

impl Plugin for CallMediaPlugin {
    fn build(&self, app: &mut App) {
        app.init_resource::<MediaSettings>()
            .init_resource::<RecordingSettings>()
            .init_resource::<ScreenShareSettings>()
            .init_resource::<share::PendingScreenFrames>()
            .add_systems(
                PreUpdate,
                (
                    drain::drain_media_events,
                    drain::show_video_frames,
                    stats::refresh_media_stats,
                )
                    .in_set(HuddleSystems::Receive),
            )
            .add_systems(
                Update,
                (
                    lifecycle::start_call_media,
                    lifecycle::follow_participants,
                    lifecycle::follow_media_route,
                    lifecycle::follow_local_state,
                    lifecycle::route_peer_signals,
                    lifecycle::apply_audio_routes,
                    lifecycle::apply_video_demand,
                    recording::follow_recording,
                    devices::follow_device_selection,
                    share::follow_screen_shares,
                    share::show_screen_shares,
                    lifecycle::stop_ended_media,
                )
                    .chain()
                    .in_set(HuddleSystems::Media),
            );
        #[cfg(feature = "game_view")]
        app.add_systems(Last, game_view::capture_camera_shares);
    }
}

/// What calls send, and where peers gather candidates.
#[derive(Resource, Clone, Debug)]
pub struct MediaSettings {
    /// Synthetic video sent by the local participant.
    pub video: EncoderSettings,
    /// Local UDP addresses to gather ICE candidates on. By default every interface that is
    /// up, IPv4 and IPv6, loopback included ([`huddle_media::ice::all_interfaces`]); a
    /// wildcard such as `0.0.0.0:0` means every interface of its family.
    pub bind_addrs: Vec<String>,
    /// Use mDNS (`.local` candidates, as browsers send). Off by default; when on and the host
    /// cannot join the multicast group, the call goes on without it.
    pub multicast_dns: bool,
    /// Send stereo Opus (music, game audio) instead of mono voice.
    pub stereo_audio: bool,
    /// Show what we send (camera or pattern) in our own tile, up to 15 pictures a second.
    pub local_preview: bool,
    /// Measure what arrives (tests, bots, benchmarks): latency from synthetic stamps and
    /// tones, off the main thread ([`MediaStats`]); counting is always on.
    pub measure: bool,
    /// The synthetic voice (no microphone) talks in turns; `None`: its tone never stops.
    pub talk_pattern: Option<huddle_media::speech::TalkPattern>,
    /// Which stages clean a real microphone (echo cancellation, noise suppression, gain
    /// control; all on by default). Never applied to the synthetic tone or a stereo send.
    pub voice_processing: huddle_media::voice::VoiceProcessing,
    /// How many remote voices are decoded: every one up to 20; in a larger call only the 3
    /// loudest talkers (chosen from the audio levels the packets carry, without decoding).
    pub voice_decode_limit: huddle_media::speech::VoiceDecodeLimit,
}

impl Default for MediaSettings {
    fn default() -> Self {
        Self {
            video: EncoderSettings::hd(),
            bind_addrs: huddle_media::ice::all_interfaces(),
            multicast_dns: false,
            stereo_audio: false,
            local_preview: true,
            measure: false,
            talk_pattern: None,
            voice_processing: huddle_media::voice::VoiceProcessing::default(),
            voice_decode_limit: huddle_media::speech::VoiceDecodeLimit::default(),
        }
    }
}

/// The live media of a call.
#[derive(Component)]
pub struct CallMediaSession {
    pub(crate) session: MediaSession,
    pub(crate) local_uid: String,
}

impl CallMediaSession {
    /// The underlying session (counters, test hooks).
    pub fn session(&self) -> &MediaSession {
        &self.session
    }
}
