//! Media statistics of a call ([`MediaStats`], on the call entity), refreshed from the media
//! session's probe a few times a second (the counting happens off the main thread, in
//! `huddle_media::probe`), and the connection quality each link's loss and round-trip time
//! give.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bevy::prelude::*;
use huddle_media::probe::RemoteStats;

use super::CallMediaSession;
use crate::call::model::{CallMedia, ConnectionQuality};

/// How often [`MediaStats`] is refreshed from the session.
pub const STATS_REFRESH: Duration = Duration::from_millis(100);

/// What was received from one remote participant.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RemoteMediaStats {
    /// Video frames decoded.
    pub video_frames_decoded: u64,
    /// Decoded pictures a newer one replaced before the tile showed them.
    pub video_frames_replaced: u64,
    /// Frame number of the last decoded frame (measuring only: from the synthetic stamp).
    pub last_frame_number: Option<u32>,
    /// Size of the last frame.
    pub video_size: UVec2,
    /// Measuring: pictures after a stamped one whose stamp could not be read (broken).
    pub video_frames_unstamped: u64,
    /// Decoded frames per second over the last second.
    pub video_fps: f32,
    /// Capture → decoded latency of the stamped frames, in milliseconds (measuring only; a
    /// picture without a stamp adds nothing).
    pub video_latency_ms: Vec<u32>,
    /// Audio frames decoded (20 ms each).
    pub audio_frames_decoded: u64,
    /// Of which concealed (lost).
    pub audio_frames_concealed: u64,
    /// Of which recovered from in-band FEC.
    pub audio_frames_recovered: u64,
    /// Audio frames the measuring queue had no room for.
    pub audio_frames_dropped: u64,
    /// Audio packets received but not decoded: out of earshot, or not among the loudest few
    /// talkers of a call above the decode limit.
    pub audio_frames_skipped: u64,
    /// Tone heard over the last second (measuring only).
    pub audio_tone_hz: Option<f32>,
    /// Tone heard on the right channel of a stereo stream (measuring only).
    pub audio_right_tone_hz: Option<f32>,
    /// Channels of their audio stream (1 mono, 2 stereo; 0 before any audio).
    pub audio_channels: u8,
    /// Round-trip time of the link, in milliseconds.
    pub rtt_ms: Option<f64>,
    /// Share of packets lost over the last second.
    pub loss: f32,
    /// The candidate pair carrying the media (host, srflx, prflx or relay; udp or tcp).
    pub ice: Option<huddle_media::ice::CandidatePath>,
    /// ICE restarts we made on the connection (it was down for a while).
    pub ice_restarts: u32,
}

impl RemoteMediaStats {
    /// Takes the probe's figures, keeping the link's (which come from quality events).
    fn update_from(&mut self, probe: &RemoteStats, replaced: u64) {
        *self = Self {
            video_frames_decoded: probe.video_frames_decoded,
            video_frames_replaced: replaced,
            last_frame_number: probe.last_frame_number,
            video_size: UVec2::new(probe.video_size.0, probe.video_size.1),
            video_frames_unstamped: probe.video_frames_unstamped,
            video_fps: probe.video_fps,
            video_latency_ms: probe.video_latency_ms.clone(),
            audio_frames_decoded: probe.audio_frames_decoded,
            audio_frames_concealed: probe.audio_frames_concealed,
            audio_frames_recovered: probe.audio_frames_recovered,
            audio_frames_dropped: probe.audio_frames_dropped,
            audio_frames_skipped: probe.audio_frames_skipped,
            audio_tone_hz: probe.audio_tone_hz,
            audio_right_tone_hz: probe.audio_right_tone_hz,
            audio_channels: probe.audio_channels,
            rtt_ms: self.rtt_ms,
            loss: self.loss,
            ice: self.ice.take(),
            ice_restarts: self.ice_restarts,
        };
    }
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
    /// The output mix: frames played.
    pub output_frames: u64,
    /// RMS of the last mixed frame, left and right, 0..=1.
    pub output_rms: (f32, f32),
    /// When it was last refreshed.
    pub(super) refreshed: Option<Instant>,
}

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

/// Copies each session's figures into its call's [`MediaStats`], every [`STATS_REFRESH`].
pub(crate) fn refresh_media_stats(
    mut calls: Query<(&CallMediaSession, &CallMedia, &mut MediaStats)>,
) {
    let now = Instant::now();
    for (media, call_media, mut stats) in &mut calls {
        if stats
            .refreshed
            .is_some_and(|at| now.duration_since(at) < STATS_REFRESH)
        {
            continue;
        }
        stats.refreshed = Some(now);
        let figures = media.session.stats();
        stats
            .remotes
            .retain(|uid, _| figures.remotes.contains_key(uid));
        for (uid, remote) in &figures.remotes {
            let replaced = media.session.video_frames_replaced(uid);
            stats
                .remotes
                .entry(uid.clone())
                .or_default()
                .update_from(remote, replaced);
        }
        let first = if call_media.audio_only {
            figures.first_audio
        } else {
            figures.first_video
        };
        if stats.first_remote_media.is_none() {
            stats.first_remote_media = first;
        }
        let mix = media.session.mix_stats();
        stats.output_frames = mix.frames;
        stats.output_rms = mix.rms;
    }
}
