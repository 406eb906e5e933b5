//! The ringtone: it plays while an incoming call rings ([`RingingScreens::incoming`]) and
//! stops when the call is accepted, rejected, cancelled or unanswered.
//!
//! The clip is `assets/ringtone.wav` (built into the crate, so a game needs no asset file;
//! [`RingtoneSettings::from_wav`] takes another 48 kHz 16-bit WAV). It plays on the selected
//! speaker, or on a paced null output where there is none (`huddle_media::ringtone`).

use std::sync::Arc;

use bevy::prelude::*;
use bevy_huddle::call::devices::{DeviceKind, MediaDevices};
use huddle_media::ringtone::{Ringtone, RingtoneError, parse_wav};

use crate::ringing::RingingScreens;

/// The default ringtone, `assets/ringtone.wav` (440 + 480 Hz, 0.8 s on, 0.4 s off).
pub const DEFAULT_RINGTONE_WAV: &[u8] = include_bytes!("../../../assets/ringtone.wav");

/// Whether and what to ring.
#[derive(Resource, Clone, Debug)]
pub struct RingtoneSettings {
    /// Ring for incoming calls.
    pub enabled: bool,
    /// The clip, 48 kHz mono.
    pub clip: Arc<[i16]>,
}

impl RingtoneSettings {
    /// Rings with this WAV clip (16-bit PCM, 48 kHz, mono or stereo).
    pub fn from_wav(bytes: &[u8]) -> Result<Self, RingtoneError> {
        Ok(Self {
            enabled: true,
            clip: parse_wav(bytes)?.into(),
        })
    }
}

impl Default for RingtoneSettings {
    fn default() -> Self {
        Self::from_wav(DEFAULT_RINGTONE_WAV).unwrap_or(Self {
            enabled: false,
            clip: Arc::from([]),
        })
    }
}

/// The ringtone playing now, if any.
#[derive(Resource, Default)]
pub struct RingtonePlayer(Option<Ringtone>);

impl RingtonePlayer {
    /// Whether it rings.
    pub fn is_playing(&self) -> bool {
        self.0.is_some()
    }

    /// The playing ringtone (frames played, level), if any.
    pub fn ringtone(&self) -> Option<&Ringtone> {
        self.0.as_ref()
    }
}

/// Starts the ringtone when an incoming call shows and stops it when it goes.
pub(crate) fn ring_while_incoming(
    screens: Res<RingingScreens>,
    settings: Res<RingtoneSettings>,
    devices: Option<Res<MediaDevices>>,
    mut player: ResMut<RingtonePlayer>,
) {
    let ring = settings.enabled && !settings.clip.is_empty() && screens.incoming.is_some();
    match (ring, player.0.is_some()) {
        (true, false) => {
            let speaker = devices
                .as_deref()
                .and_then(|d| d.selected(DeviceKind::AudioOutput))
                .map(|d| d.id.clone());
            player.0 = Some(Ringtone::start(settings.clip.clone(), speaker.as_deref()));
        }
        (false, true) => player.0 = None,
        _ => {}
    }
}
