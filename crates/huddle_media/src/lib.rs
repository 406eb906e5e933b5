//! Huddle's media layer, independent of Bevy.
//!
//! ```text
//! camera / pattern ─▶ H.264 (video thread) ─┐
//! microphone / tone ─▶ Opus (audio task) ───┴─▶ session: encode once, send to every peer
//! peer (WebRTC: DTLS-SRTP, NACK, GCC, PLI) ◀─────┘
//!   └─ remote video track ─▶ (bounded packet queue) ─▶ decode thread: reassembly ─▶ H.264
//!        ─▶ RGBA ─▶ newest-wins slot (frames) ─▶ MediaSession::take_video_frames
//!   └─ remote audio track ─▶ Opus decode (concealment) ─▶ mixer (per-voice gains) ─▶ cpal / null sink
//!   both ─▶ probe (counts; stamps and tones when measuring, on its own thread) ─▶ stats()
//!   encoded frames sent and received (as they are) ─▶ recording ─▶ Matroska file
//! ```
//!
//! The async runtime only does IO and timers; codec work has its own threads. Test hooks
//! (induced loss, the recording reader, ffprobe) exist only with the `test-utils` feature.
//!
//! - [`synthetic`]: the test pattern carrying its frame number and capture time.
//! - [`video`], [`audio`]: codecs, colour conversion, the tone and its detector.
//! - [`peer`]: one WebRTC connection per remote participant; [`session`]: a call's media.
//! - [`congestion`]: the chain around GCC, with a pacer at 2.5 × its target.
//! - [`frames`]: newest-wins slots of decoded pictures; [`probe`]: receive statistics.
//! - [`mixer`]: jitter buffers, gains, outputs; [`devices`]: cpal microphones and speakers.
//! - [`voice`]: echo cancellation, noise suppression and gain control of the microphone
//!   (WebRTC's AudioProcessing); [`voice_check`]: its figures on a generated scene.
//! - [`recording`]: the call recorded as received into one Matroska file.
//! - [`screen`]: screen-share sources (the X11 desktop, frames pushed by the app).
//! - [`DeviceKind`], [`DeviceInfo`], [`DeviceLists`]: the device vocabulary.

pub mod audio;
pub mod camera;
pub mod congestion;
pub mod devices;
pub mod echo_canceller;
pub mod frames;
pub mod ice;
pub mod mixer;
pub mod peer;
pub mod probe;
pub mod recording;
pub mod ringtone;
pub mod screen;
pub mod session;
pub mod speech;
pub mod synthetic;
pub mod video;
pub mod voice;
pub mod voice_check;

use std::fmt;

use serde::{Deserialize, Serialize};

/// The kind of a media device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    /// A microphone.
    AudioInput,
    /// Speakers or headphones.
    AudioOutput,
    /// A camera.
    VideoInput,
}

impl fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DeviceKind::AudioInput => "audio input",
            DeviceKind::AudioOutput => "audio output",
            DeviceKind::VideoInput => "video input",
        })
    }
}

/// One media device as listed to the user.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DeviceInfo {
    /// Stable id used to select the device.
    pub id: String,
    /// Human-readable name.
    pub label: String,
    /// Its kind.
    pub kind: DeviceKind,
    /// Whether it is synthetic (a test pattern, a tone, a timer-paced null sink).
    pub synthetic: bool,
}

impl DeviceInfo {
    /// A synthetic device.
    pub fn synthetic(kind: DeviceKind, id: &str, label: &str) -> Self {
        Self {
            id: id.to_owned(),
            label: label.to_owned(),
            kind,
            synthetic: true,
        }
    }
}

/// The device lists of all kinds, as last enumerated.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceLists {
    /// Microphones.
    pub audio_inputs: Vec<DeviceInfo>,
    /// Speakers and headphones.
    pub audio_outputs: Vec<DeviceInfo>,
    /// Cameras.
    pub video_inputs: Vec<DeviceInfo>,
}

impl DeviceLists {
    /// The synthetic stand-ins used where no real device exists: a tone, a timer-paced null
    /// sink, and two test-pattern cameras (so that switching cameras has somewhere to go).
    pub fn synthetic() -> Self {
        Self {
            audio_inputs: vec![DeviceInfo::synthetic(
                DeviceKind::AudioInput,
                "synthetic:tone",
                "Synthetic tone",
            )],
            audio_outputs: vec![DeviceInfo::synthetic(
                DeviceKind::AudioOutput,
                "synthetic:null-sink",
                "Null sink (timer-paced)",
            )],
            video_inputs: vec![
                DeviceInfo::synthetic(
                    DeviceKind::VideoInput,
                    "synthetic:pattern-front",
                    "Test pattern (front)",
                ),
                DeviceInfo::synthetic(
                    DeviceKind::VideoInput,
                    "synthetic:pattern-back",
                    "Test pattern (back)",
                ),
            ],
        }
    }

    /// The list of one kind.
    pub fn of_kind(&self, kind: DeviceKind) -> &[DeviceInfo] {
        match kind {
            DeviceKind::AudioInput => &self.audio_inputs,
            DeviceKind::AudioOutput => &self.audio_outputs,
            DeviceKind::VideoInput => &self.video_inputs,
        }
    }
}
