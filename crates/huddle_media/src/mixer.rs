//! Audio out: remote voices are jitter-buffered per participant, mixed with per-route gains
//! (volume, local mute, and left/right gains for spatial panning), and pulled by an output
//! every 20 ms: a real device where one is present, else the [`NullSink`], paced by a timer
//! (never ALSA's `null` device, which is not paced and spins a core).
//!
//! - **Jitter buffer**: a source starts playing once 40 ms are buffered; an underrun plays
//!   silence (counted) and re-primes; more than 200 ms buffered drops the oldest samples, so
//!   latency never piles up.
//! - **Gains** move to their target over one 20 ms frame (a linear ramp), so volume and pan
//!   changes never click.
//! - **Mono and stereo voices**: a mono voice goes to both channels, a stereo one keeps its
//!   left and right; each channel then takes its gain (pan, volume).
//! - **What was played** goes, as mono, to every listener ([`Mixer::listen_played`]): the
//!   echo canceller's far-end reference ([`crate::voice`]).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::audio::{FRAME_SAMPLES, SAMPLE_RATE};

/// Sample frames (one per channel pair) buffered before a source starts playing (40 ms).
const PRIME_SAMPLES: usize = FRAME_SAMPLES * 2;
/// Most sample frames buffered per source (200 ms); beyond, the oldest are dropped.
const MAX_BUFFERED: usize = FRAME_SAMPLES * 10;

/// Left and right gain of one source.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StereoGain {
    /// Left channel gain, 0..=1 (or more to amplify).
    pub left: f32,
    /// Right channel gain.
    pub right: f32,
}

impl StereoGain {
    /// The same gain on both channels.
    pub fn mono(gain: f32) -> Self {
        Self {
            left: gain,
            right: gain,
        }
    }
}

#[derive(Debug)]
struct Source {
    /// Left/right sample pairs.
    queue: VecDeque<[i16; 2]>,
    gain: StereoGain,
    target: StereoGain,
    playing: bool,
    underruns: u64,
    dropped_samples: u64,
}

/// What the mixer did lately.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MixStats {
    /// Frames (20 ms) mixed.
    pub frames: u64,
    /// RMS of the last frame, left and right, 0..=1.
    pub rms: (f32, f32),
    /// Underruns per source so far.
    pub underruns: HashMap<String, u64>,
}

/// The mixer of one call's remote voices.
#[derive(Debug, Default)]
pub struct Mixer {
    sources: HashMap<String, Source>,
    stats: MixStats,
    /// Voices not worth decoding (out of earshot); their packets are dropped undecoded.
    culled: std::collections::HashSet<String>,
    /// In a large call, the few loudest talkers: the only voices decoded.
    loudest: crate::speech::LoudestVoices,
    /// Listeners of what the output played (mono), such as the echo canceller.
    played: Vec<crossbeam_channel::Sender<Vec<f32>>>,
}

/// Chunks of played audio a listener may fall behind by before chunks are dropped for it
/// (two seconds of the null sink's 20 ms chunks; less with a device's smaller buffers).
const PLAYED_BACKLOG: usize = 100;

impl Mixer {
    /// Adds decoded samples (mono, 48 kHz) from `uid`.
    pub fn push(&mut self, uid: &str, samples: &[i16]) {
        self.push_pairs(uid, samples.iter().map(|&s| [s, s]));
    }

    /// Adds decoded stereo samples (interleaved left/right, 48 kHz) from `uid`.
    pub fn push_stereo(&mut self, uid: &str, interleaved: &[i16]) {
        self.push_pairs(
            uid,
            interleaved.chunks_exact(2).map(|pair| [pair[0], pair[1]]),
        );
    }

    fn push_pairs(&mut self, uid: &str, pairs: impl Iterator<Item = [i16; 2]>) {
        let source = self
            .sources
            .entry(uid.to_owned())
            .or_insert_with(|| Source {
                queue: VecDeque::new(),
                gain: StereoGain::mono(1.0),
                target: StereoGain::mono(1.0),
                playing: false,
                underruns: 0,
                dropped_samples: 0,
            });
        source.queue.extend(pairs);
        if source.queue.len() > MAX_BUFFERED {
            let excess = source.queue.len() - MAX_BUFFERED;
            source.queue.drain(..excess);
            source.dropped_samples += excess as u64;
        }
    }

    /// Sets the gains of `uid`'s voice (reached over the next frame).
    pub fn set_gain(&mut self, uid: &str, gain: StereoGain) {
        if let Some(source) = self.sources.get_mut(uid) {
            source.target = gain;
        } else {
            self.sources.insert(
                uid.to_owned(),
                Source {
                    queue: VecDeque::new(),
                    gain,
                    target: gain,
                    playing: false,
                    underruns: 0,
                    dropped_samples: 0,
                },
            );
        }
    }

    /// Whether `uid`'s voice should be decoded: false when culled for distance, or when the
    /// call has more voices than the decode limit and `uid` is not among the loudest talkers.
    pub fn wants(&self, uid: &str) -> bool {
        !self.culled.contains(uid) && self.loudest.decodes(uid)
    }

    /// A packet of `uid`'s voice arrived at `now` with its RFC 6464 level (−dBov) and voice
    /// flag (see [`crate::speech::LoudestVoices`]).
    pub fn heard(&mut self, uid: &str, level: u8, voice: bool, now: std::time::Instant) {
        // A voice out of earshot is not decoded anyway: it must not take a loudest place.
        let (level, voice) = if self.culled.contains(uid) {
            (127, false)
        } else {
            (level, voice)
        };
        self.loudest.heard(uid, level, voice, now);
    }

    /// How many voices are decoded in a large call.
    pub fn set_voice_decode_limit(&mut self, limit: crate::speech::VoiceDecodeLimit) {
        self.loudest.set_limit(limit);
    }

    /// Forgets `uid`'s voice stream (it ended) in the choice of the loudest talkers.
    pub fn forget_voice(&mut self, uid: &str) {
        self.loudest.forget(uid);
    }

    /// Stops (or resumes) decoding `uid`'s voice; a culled voice's buffer is emptied.
    pub fn set_wanted(&mut self, uid: &str, wanted: bool) {
        if wanted {
            self.culled.remove(uid);
        } else if self.culled.insert(uid.to_owned())
            && let Some(source) = self.sources.get_mut(uid)
        {
            source.queue.clear();
            source.playing = false;
        }
    }

    /// From now on, every mixed chunk as played (mono: the mean of left and right, 48 kHz,
    /// −1..1) is sent on the returned channel. A listener [`PLAYED_BACKLOG`] chunks behind
    /// loses chunks; one that is dropped is forgotten. (An output that finds the mixer locked
    /// plays silence and tells no listener: rare, and it shifts the echo canceller by that
    /// buffer.)
    pub fn listen_played(&mut self) -> crossbeam_channel::Receiver<Vec<f32>> {
        let (listener, played) = crossbeam_channel::bounded(PLAYED_BACKLOG);
        self.played.push(listener);
        played
    }

    /// Forgets a source (the participant left).
    pub fn remove(&mut self, uid: &str) {
        self.sources.remove(uid);
        self.loudest.forget(uid);
    }

    /// Mixes `frames` stereo frames into `out` (interleaved L/R, `frames * 2` floats).
    pub fn mix(&mut self, out: &mut [f32], frames: usize) {
        let out = &mut out[..frames * 2];
        out.fill(0.0);
        for (uid, source) in &mut self.sources {
            if !source.playing {
                if source.queue.len() >= PRIME_SAMPLES {
                    source.playing = true;
                } else {
                    continue;
                }
            }
            if source.queue.len() < frames {
                source.playing = false;
                source.underruns += 1;
                self.stats.underruns.insert(uid.clone(), source.underruns);
                continue;
            }
            let (from, to) = (source.gain, source.target);
            for (i, [l, r]) in source.queue.drain(..frames).enumerate() {
                let t = (i + 1) as f32 / frames as f32;
                let left = from.left + (to.left - from.left) * t;
                let right = from.right + (to.right - from.right) * t;
                let scale = f32::from(i16::MAX);
                out[2 * i] += f32::from(l) / scale * left;
                out[2 * i + 1] += f32::from(r) / scale * right;
            }
            source.gain = to;
        }
        let mut sums = (0.0f64, 0.0f64);
        for pair in out.chunks_exact_mut(2) {
            pair[0] = pair[0].clamp(-1.0, 1.0);
            pair[1] = pair[1].clamp(-1.0, 1.0);
            sums.0 += f64::from(pair[0]) * f64::from(pair[0]);
            sums.1 += f64::from(pair[1]) * f64::from(pair[1]);
        }
        if !self.played.is_empty() {
            let mono: Vec<f32> = out.chunks_exact(2).map(|p| 0.5 * (p[0] + p[1])).collect();
            self.played.retain(|listener| {
                !matches!(
                    listener.try_send(mono.clone()),
                    Err(crossbeam_channel::TrySendError::Disconnected(_))
                )
            });
        }
        let n = frames.max(1) as f64;
        self.stats.rms = ((sums.0 / n).sqrt() as f32, (sums.1 / n).sqrt() as f32);
        self.stats.frames += 1;
    }

    /// What the mixer did lately.
    pub fn stats(&self) -> &MixStats {
        &self.stats
    }
}

/// A mixer shared between the receivers (pushing), the ECS (setting gains) and the output.
pub type SharedMixer = Arc<Mutex<Mixer>>;

/// Locks a shared mixer, surviving a poisoned lock (a panic elsewhere must not silence audio).
pub fn lock(mixer: &SharedMixer) -> std::sync::MutexGuard<'_, Mixer> {
    mixer
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// An output that plays nothing, pulling a mixed frame every 20 ms from a tokio timer.
pub struct NullSink;

impl NullSink {
    /// Pulls from `mixer` every 20 ms until `stop` is set.
    pub fn start(
        runtime: &tokio::runtime::Handle,
        mixer: SharedMixer,
        stop: Arc<std::sync::atomic::AtomicBool>,
    ) {
        runtime.spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_millis(20));
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut out = vec![0.0f32; FRAME_SAMPLES * 2];
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                ticker.tick().await;
                lock(&mixer).mix(&mut out, FRAME_SAMPLES);
            }
        });
    }
}

/// The output rate of the mix.
pub const OUTPUT_RATE: u32 = SAMPLE_RATE;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::ToneSource;

    fn tone_frames(frequency: f32, frames: usize) -> Vec<i16> {
        let mut tone = ToneSource::new(frequency);
        let mut samples = vec![0i16; FRAME_SAMPLES * frames];
        tone.fill(&mut samples);
        samples
    }

    /// A source plays once 40 ms are buffered, at its gain; a muted (zero-gain) source is
    /// silent; half volume halves the level; a pan to the left leaves the right silent.
    #[test]
    fn gains_volume_mute_and_pan() {
        let mut mixer = Mixer::default();
        let mut out = vec![0.0; FRAME_SAMPLES * 2];
        mixer.push("bob", &tone_frames(440.0, 1));
        mixer.mix(&mut out, FRAME_SAMPLES);
        assert_eq!(mixer.stats().rms, (0.0, 0.0), "not primed yet");
        mixer.push("bob", &tone_frames(440.0, 10));
        mixer.mix(&mut out, FRAME_SAMPLES);
        let full = mixer.stats().rms.0;
        assert!(full > 0.15, "a 0.3 amplitude sine has RMS ~0.21: {full}");

        mixer.set_gain("bob", StereoGain::mono(0.5));
        mixer.mix(&mut out, FRAME_SAMPLES); // ramp
        mixer.mix(&mut out, FRAME_SAMPLES);
        let half = mixer.stats().rms.0;
        assert!(
            (half / full - 0.5).abs() < 0.05,
            "half volume: {half} vs {full}"
        );

        mixer.set_gain(
            "bob",
            StereoGain {
                left: 1.0,
                right: 0.0,
            },
        );
        mixer.mix(&mut out, FRAME_SAMPLES);
        mixer.mix(&mut out, FRAME_SAMPLES);
        let (left, right) = mixer.stats().rms;
        assert!(left > 0.15 && right < 1e-6, "panned left: {left} {right}");

        mixer.set_gain("bob", StereoGain::mono(0.0));
        mixer.mix(&mut out, FRAME_SAMPLES);
        mixer.mix(&mut out, FRAME_SAMPLES);
        assert_eq!(mixer.stats().rms, (0.0, 0.0), "muted");
    }

    /// Gain changes ramp over a frame: no sample-to-sample jump bigger than the signal's own.
    #[test]
    fn gain_changes_do_not_click() {
        let mut mixer = Mixer::default();
        let mut out = vec![0.0; FRAME_SAMPLES * 2];
        mixer.push("bob", &tone_frames(200.0, 10));
        mixer.mix(&mut out, FRAME_SAMPLES);
        mixer.set_gain("bob", StereoGain::mono(0.0));
        let last = out[out.len() - 2];
        mixer.mix(&mut out, FRAME_SAMPLES);
        let max_step = 0.3 * std::f32::consts::TAU * 200.0 / 48_000.0 * 1.5;
        assert!(
            (out[0] - last).abs() < max_step,
            "first sample continues smoothly"
        );
        assert!(
            out.chunks_exact(2)
                .zip(out.chunks_exact(2).skip(1))
                .all(|(a, b)| (a[0] - b[0]).abs() < max_step)
        );
    }

    /// Underruns play silence and are counted; an overfull buffer drops its oldest samples.
    #[test]
    fn underrun_and_overflow() {
        let mut mixer = Mixer::default();
        let mut out = vec![0.0; FRAME_SAMPLES * 2];
        mixer.push("bob", &tone_frames(440.0, 3));
        for _ in 0..4 {
            mixer.mix(&mut out, FRAME_SAMPLES);
        }
        assert_eq!(mixer.stats().underruns.get("bob"), Some(&1));
        mixer.push("bob", &tone_frames(440.0, 30));
        assert!(mixer.sources["bob"].queue.len() <= MAX_BUFFERED);
    }

    /// In a large call a voice out of earshot takes none of the loudest places: with room
    /// for one talker, a far talker shouting first leaves the place to a near one, who is
    /// decoded; the far one is not, either way.
    #[test]
    fn a_voice_out_of_earshot_takes_no_loudest_place() {
        let mut mixer = Mixer::default();
        mixer.set_voice_decode_limit(crate::speech::VoiceDecodeLimit {
            decode_all_up_to: 1,
            loudest: 1,
        });
        mixer.set_wanted("far", false);
        let now = std::time::Instant::now();
        mixer.heard("far", 3, true, now);
        mixer.heard("near", 30, true, now);
        assert!(mixer.wants("near"));
        assert!(!mixer.wants("far"));
    }
}
