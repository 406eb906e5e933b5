//! Voice processing on the microphone path: our echo canceller ([`crate::echo_canceller`]),
//! then WebRTC's own AudioProcessing module (the `webrtc-audio-processing` crate, built
//! against Debian's `libwebrtc-audio-processing`) for the rest, clean every microphone frame
//! before its level is measured and it is encoded.
//!
//! ```text
//! mixer ─▶ output (speakers or null sink) ── what was played, mono ─▶ far-end queue
//!                                              (bulk delay, one frame per microphone frame)
//!                                                                         │
//! microphone 20 ms ─▶ 2 × 10 ms ─▶ echo canceller (linear filter, residual suppressor) ─▶
//!   input volume ─▶ AudioProcessing: high-pass ─▶ noise suppressor ─▶ gain control ─▶
//!   level (speaking, RFC 6464) ─▶ Opus
//! ```
//!
//! - **Far end.** The echo canceller's reference is exactly what the output pulled from the
//!   mixer (after the route gains and pans, at the output's clock), handed over by
//!   [`Mixer::listen_played`](crate::mixer::Mixer::listen_played) and fed in before each
//!   capture frame. The canceller takes one 10 ms far-end frame per microphone frame
//!   (`FarEndQueue`), so the echo keeps its place in its filter however the output hands the
//!   far end over.
//! - **Delay.** The time between playing a sample and hearing it back (device buffers, the
//!   room) is unknown to us. The canceller's filter spans 160 ms; beyond 130 ms, a bulk delay
//!   found from the two signals' energy envelopes holds the far end back so that the rest is
//!   within its reach (`scripts/audio-check-grid`: 28–52 dB of ERLE from 20 to 300 ms at
//!   gains 0.3–0.8).
//! - **Why our own canceller.** Debian's AudioProcessing 0.3 has WebRTC's older AEC, whose
//!   suppressor took much of the near-end talker along with the echo: 0.72 of it was left in
//!   double talk (`audio-check`), against 0.90 now, at the same level as without echo. AEC3,
//!   which does better, is not packaged for Debian 12. The module's own AEC is therefore
//!   off.
//! - **When.** Only a real microphone sent as mono voice is processed: never the synthetic
//!   tone (it has no room and no echo), never a stereo "music" send, and each stage can be
//!   turned off in [`VoiceProcessing`].
//! - [`VoiceProcessor`] holds one canceller and one AudioProcessing instance;
//!   [`crate::voice_check`] measures them on a generated scene (`huddle audio-check`).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use webrtc_audio_processing as apm;

use crate::audio::FRAME_SAMPLES;
use crate::echo_canceller::EchoCanceller;

/// Samples in one 10 ms processing frame at 48 kHz.
pub const PROCESSING_FRAME: usize = apm::NUM_SAMPLES_PER_FRAME as usize;

/// Which stages clean the microphone. All on by default, as in every call product.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoiceProcessing {
    /// Remove the far end's voices coming back from our speakers (acoustic echo).
    pub echo_cancellation: bool,
    /// Remove stationary noise (fans, hum, hiss).
    pub noise_suppression: bool,
    /// Bring a quiet or loud talker to a steady level.
    pub gain_control: bool,
}

impl Default for VoiceProcessing {
    fn default() -> Self {
        Self {
            echo_cancellation: true,
            noise_suppression: true,
            gain_control: true,
        }
    }
}

impl VoiceProcessing {
    /// Every stage off: the microphone is sent as captured.
    pub const OFF: Self = Self {
        echo_cancellation: false,
        noise_suppression: false,
        gain_control: false,
    };

    /// Whether any stage is on.
    pub fn any(self) -> bool {
        self.echo_cancellation || self.noise_suppression || self.gain_control
    }

    /// The AudioProcessing configuration of these stages.
    fn config(self) -> apm::Config {
        apm::Config {
            // Echo is cancelled before the module, by `EchoCanceller`: the module's own AEC
            // (the older one, in Debian's 0.3) kept 0.72 of the near end in double talk.
            echo_cancellation: None,
            noise_suppression: self.noise_suppression.then_some(apm::NoiseSuppression {
                suppression_level: apm::NoiseSuppressionLevel::High,
            }),
            voice_detection: None,
            gain_control: self.gain_control.then_some(apm::GainControl {
                mode: apm::GainControlMode::AdaptiveDigital,
                target_level_dbfs: TARGET_PEAK_DBFS,
                compression_gain_db: MAX_GAIN_DB,
                enable_limiter: true,
            }),
            enable_transient_suppressor: false,
            enable_high_pass_filter: true,
        }
    }
}

/// Gain control's target peak level, in dB below full scale.
const TARGET_PEAK_DBFS: i32 = 3;
/// The most the digital compression stage may add, in dB.
const MAX_GAIN_DB: i32 = 12;

/// Where the input volume puts speech after processing, dBFS (RMS of voiced frames).
pub const SPEECH_TARGET_DBFS: f32 = -20.0;
/// The input volume's range above unity, dB.
const MAX_INPUT_GAIN_DB: f32 = 24.0;
/// How fast the input volume moves while someone speaks off target, dB per 10 ms frame
/// (3 dB a second).
const INPUT_GAIN_STEP_DB: f32 = 0.03;
/// A processed frame louder than this (dBFS RMS) is taken as speech by the input volume.
const VOICED_DBFS: f32 = -50.0;
/// How far the speech level may sit from the target before the volume moves, dB.
const INPUT_GAIN_DEADBAND_DB: f32 = 2.0;

/// The canceller's filter spans 160 ms of echo path after the far end it was given: the
/// direct path up to 130 ms and a tail after it. Sound cards and rooms can take longer, so
/// the bulk of the delay is found here, from the 10 ms energy
/// envelopes of the far end and the microphone (the lag of their best correlation), and the
/// far end is held back by all of it but [`DELAY_LEFT_TO_CANCELLER`].
#[derive(Debug)]
struct BulkDelay {
    /// Log energy of the last far-end and microphone frames, newest last.
    far: VecDeque<f32>,
    near: VecDeque<f32>,
    frames_to_next_estimate: u32,
    /// Far-end frames held back now.
    held_frames: usize,
    /// Whether an estimate has been believed yet.
    found: bool,
}

/// Frames of envelope kept (3.5 s).
const DELAY_HISTORY: usize = 350;
/// Most frames compared per estimate (3 s).
const DELAY_WINDOW: usize = 300;
/// Fewest frames compared per estimate (0.5 s).
const MIN_DELAY_WINDOW: usize = 50;
/// The shortest range of delays an estimate looks over, in 10 ms frames (0.5 s).
const MIN_DELAY_RANGE: usize = 50;
/// Longest delay looked for, in 10 ms frames (500 ms).
const MAX_BULK_DELAY: usize = 50;
/// Delays the canceller's filter covers itself, in 10 ms frames (130 ms, with 30 ms of tail
/// after them): nothing is held back.
const CANCELLER_REACH: usize = 13;
/// What is left for the canceller to find when the far end is held back, in 10 ms frames.
const DELAY_LEFT_TO_CANCELLER: usize = 6;
/// The envelope correlation an estimate needs to be believed.
const DELAY_CONFIDENCE: f32 = 0.6;

impl Default for BulkDelay {
    fn default() -> Self {
        Self {
            far: VecDeque::with_capacity(DELAY_HISTORY + 1),
            near: VecDeque::with_capacity(DELAY_HISTORY + 1),
            frames_to_next_estimate: 0,
            held_frames: 0,
            found: false,
        }
    }
}

impl BulkDelay {
    fn push(envelope: &mut VecDeque<f32>, power: f32) {
        envelope.push_back(10.0 * (power + 1e-10).log10());
        if envelope.len() > DELAY_HISTORY {
            envelope.pop_front();
        }
    }

    fn far_frame(&mut self, power: f32) {
        Self::push(&mut self.far, power);
    }

    /// Takes a microphone frame's power and now and then re-estimates the delay (every
    /// quarter second until one is found, then every second). True when the far end is to be
    /// held back by a different amount.
    fn near_frame(&mut self, power: f32) -> bool {
        Self::push(&mut self.near, power);
        if self.frames_to_next_estimate > 0 {
            self.frames_to_next_estimate -= 1;
            return false;
        }
        self.frames_to_next_estimate = if self.found { 100 } else { 25 };
        let Some(delay) = self.estimate() else {
            return false;
        };
        self.found = true;
        // Within the canceller's reach, nothing is held back; once holding, a shorter delay
        // only shortens the hold (so an estimate wavering at the edge does not flap).
        if self.held_frames == 0 && delay <= CANCELLER_REACH {
            return false;
        }
        let wanted = delay.saturating_sub(DELAY_LEFT_TO_CANCELLER);
        // Small moves are the canceller's own business; every move makes it re-adapt.
        if wanted.abs_diff(self.held_frames) < 3 {
            return false;
        }
        tracing::debug!(delay, wanted, "echo bulk delay, in 10 ms frames");
        self.held_frames = wanted;
        true
    }

    /// The lag (frames) at which the microphone's envelope best follows the far end's, when
    /// the far end varied and the match is good.
    fn estimate(&self) -> Option<usize> {
        // Early on, a shorter window and a shorter range of lags: the far end's history must
        // cover both.
        let longest = MAX_BULK_DELAY.min(self.far.len().saturating_sub(MIN_DELAY_WINDOW));
        let window = self
            .near
            .len()
            .min(DELAY_WINDOW)
            .min(self.far.len() - longest);
        if window < MIN_DELAY_WINDOW || longest < MIN_DELAY_RANGE {
            return None;
        }
        let near: Vec<f32> = self.near.iter().rev().take(window).copied().collect();
        let far: Vec<f32> = self.far.iter().rev().copied().collect();
        let (mut best, mut best_correlation) = (0, f32::MIN);
        for lag in 0..=longest {
            // A flat stretch of far end at this lag tells nothing about it.
            let Some(correlation) = pearson(&near, &far[lag..lag + window]) else {
                continue;
            };
            if correlation > best_correlation {
                (best, best_correlation) = (lag, correlation);
            }
        }
        (best_correlation >= DELAY_CONFIDENCE).then_some(best)
    }
}

/// Pearson correlation of two series of the same length; `None` when either is flat (a
/// silent far end tells nothing).
fn pearson(a: &[f32], b: &[f32]) -> Option<f32> {
    let n = a.len() as f32;
    let (mean_a, mean_b) = (a.iter().sum::<f32>() / n, b.iter().sum::<f32>() / n);
    let (mut cross, mut var_a, mut var_b) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        let (dx, dy) = (x - mean_a, y - mean_b);
        cross += dx * dy;
        var_a += dx * dx;
        var_b += dy * dy;
    }
    (var_a > 1.0 && var_b > 1.0).then(|| cross / (var_a * var_b).sqrt())
}

fn mean_power(frame: &[f32]) -> f32 {
    frame.iter().map(|s| s * s).sum::<f32>() / frame.len().max(1) as f32
}

/// Far-end power (per 10 ms frame) above which the far end counts as playing: −60 dBFS.
const FAR_END_AUDIBLE_POWER: f32 = 1e-6;
/// How long the input volume holds after the far end last played, in 10 ms frames (the
/// echo path's delay and tail).
const FAR_END_HOLD_FRAMES: u32 = 50;

/// The microphone volume. Debian's AudioProcessing 0.3 always runs WebRTC's "experimental"
/// AGC (AgcManagerDirect), which adds at most 12 dB digitally and expects the host to turn
/// the device's analog volume as it recommends; the crate cannot read that recommendation.
/// This is that volume, applied digitally before the module: while someone speaks, the
/// smoothed level of its output is steered toward [`SPEECH_TARGET_DBFS`] by a few
/// dB a second, between unity and +24 dB, and it holds while the far end plays or has just
/// played (its echo must never turn the volume up). The module's own gain and limiter still
/// act on top.
#[derive(Debug, Default)]
struct InputVolume {
    gain_db: f32,
    /// Smoothed voiced output level, dBFS (`None` until the first voiced frame).
    speech_dbfs: Option<f32>,
}

impl InputVolume {
    fn apply(&self, frame: &mut [f32]) {
        let gain = 10f32.powf(self.gain_db / 20.0);
        for sample in frame {
            // The module would saturate anyway; clipping here keeps it out of its filters.
            *sample = (*sample * gain).clamp(-1.0, 1.0);
        }
    }

    /// Follows one processed frame: frames above [`VOICED_DBFS`] count as someone speaking
    /// (noise suppression has taken the room's noise down by then).
    fn follow(&mut self, processed: &[f32]) {
        let level = 10.0 * mean_power(processed).max(1e-12).log10();
        if !level.is_finite() || level < VOICED_DBFS {
            return;
        }
        // About a second of voiced frames.
        let smoothed = match self.speech_dbfs {
            Some(previous) => previous + (level - previous) * 0.01,
            None => level,
        };
        self.speech_dbfs = Some(smoothed);
        if smoothed < SPEECH_TARGET_DBFS - INPUT_GAIN_DEADBAND_DB {
            self.gain_db = (self.gain_db + INPUT_GAIN_STEP_DB).min(MAX_INPUT_GAIN_DB);
        } else if smoothed > SPEECH_TARGET_DBFS + INPUT_GAIN_DEADBAND_DB {
            self.gain_db = (self.gain_db - INPUT_GAIN_STEP_DB).max(0.0);
        }
    }
}

/// The processing could not be set up or run.
#[derive(Debug, thiserror::Error)]
#[error("voice processing: {0}")]
pub struct VoiceError(String);

impl VoiceError {
    /// An error saying `what`.
    pub fn new(what: impl Into<String>) -> Self {
        VoiceError(what.into())
    }
}

impl From<apm::Error> for VoiceError {
    fn from(err: apm::Error) -> Self {
        VoiceError(format!("{err:?}"))
    }
}

/// One microphone's processing: its echo canceller and AudioProcessing instance (mono
/// capture, mono far end, 48 kHz).
pub struct VoiceProcessor {
    processor: apm::Processor,
    /// The microphone volume, when gain control is on.
    input_volume: Option<InputVolume>,
    /// Far-end samples waiting to fill a 10 ms frame.
    far_end_pending: Vec<f32>,
    /// Capture frames left before the far end counts as quiet again (the input volume holds
    /// while it plays, so that echo never turns it up).
    far_end_recent: u32,
    /// Finds the echo's bulk delay.
    bulk_delay: BulkDelay,
    /// The last far-end frames, to fill a new hold from.
    far_end_history: VecDeque<Vec<f32>>,
    /// A 10 ms frame being processed.
    frame: Vec<f32>,
    /// The echo canceller, when echo cancellation is on.
    echo_canceller: Option<EchoCanceller>,
    /// Far-end frames played and not yet given to the echo canceller.
    far_end_queue: FarEndQueue,
}

/// The far-end frames between the output and the echo canceller. The canceller takes one per
/// microphone frame, so that the echo keeps its place in its filter; the queue holds the bulk
/// delay's frames, then those not yet taken. How many those are (the lag) is kept small:
///
/// - **Start.** What was played before the first microphone frame is dropped.
/// - **Late far end.** When the frame for a microphone frame has not come yet, the canceller
///   gets none and moves its echo one block earlier; the frame waits for the next one (the
///   lag grows by one).
/// - **Catching up.** When at least [`FAR_END_SPARE`] frames stayed waiting for a whole
///   second, the canceller takes two at once and moves its echo one block later.
#[derive(Default)]
struct FarEndQueue {
    frames: VecDeque<Vec<f32>>,
    /// Whether the first microphone frame has come.
    started: bool,
    /// The fewest frames waiting beyond the hold in this second, and the microphone frames
    /// of the second so far.
    fewest_waiting: usize,
    frames_this_second: u32,
}

/// Frames left waiting beyond the hold for a second before the canceller catches up.
const FAR_END_SPARE: usize = 2;
/// Most far-end frames kept beyond the hold (500 ms); beyond, the oldest go.
const MAX_FAR_END_WAITING: usize = 50;

impl FarEndQueue {
    fn push(&mut self, frame: &[f32], held: usize) {
        self.frames.push_back(frame.to_vec());
        if self.frames.len() > held + MAX_FAR_END_WAITING {
            self.frames.pop_front();
        }
    }

    /// The frames held back by a new hold of `held`: the last ones played.
    fn refill(&mut self, history: &VecDeque<Vec<f32>>, held: usize) {
        let held = held.min(history.len());
        self.frames = history.range(history.len() - held..).cloned().collect();
        self.fewest_waiting = usize::MAX;
        self.frames_this_second = 0;
    }

    /// The far-end frames that go with the next microphone frame: one, or none when it has
    /// not come yet, or two when catching up.
    fn take(&mut self, held: usize) -> Vec<Vec<f32>> {
        if !self.started {
            self.started = true;
            while self.frames.len() > held + 1 {
                self.frames.pop_front();
            }
            self.fewest_waiting = usize::MAX;
        }
        let waiting = self.frames.len().saturating_sub(held);
        self.fewest_waiting = self.fewest_waiting.min(waiting);
        self.frames_this_second += 1;
        let mut wanted = waiting.min(1);
        if self.frames_this_second >= 100 {
            if self.fewest_waiting >= FAR_END_SPARE && waiting >= 2 {
                wanted = 2;
            }
            self.fewest_waiting = usize::MAX;
            self.frames_this_second = 0;
        }
        self.frames.drain(..wanted).collect()
    }
}

impl VoiceProcessor {
    /// A processor running the stages of `stages`.
    pub fn new(stages: VoiceProcessing) -> Result<Self, VoiceError> {
        let mut processor = apm::Processor::new(&apm::InitializationConfig {
            num_capture_channels: 1,
            num_render_channels: 1,
            // Not "off": the wrapper only ever sets it on, and Debian's 0.3 has it on by
            // default (see `InputVolume`).
            enable_experimental_agc: false,
            enable_intelligibility_enhancer: false,
        })?;
        processor.set_config(stages.config());
        Ok(Self {
            processor,
            input_volume: stages.gain_control.then(InputVolume::default),
            far_end_pending: Vec::with_capacity(PROCESSING_FRAME * 4),
            far_end_recent: 0,
            bulk_delay: BulkDelay::default(),
            far_end_history: VecDeque::with_capacity(MAX_BULK_DELAY + 1),
            frame: vec![0.0; PROCESSING_FRAME],
            echo_canceller: stages.echo_cancellation.then(EchoCanceller::new),
            far_end_queue: FarEndQueue::default(),
        })
    }

    /// Takes what was played (mono, 48 kHz, −1..1, any length) as the echo reference.
    pub fn far_end(&mut self, played: &[f32]) -> Result<(), VoiceError> {
        self.far_end_pending.extend_from_slice(played);
        let whole = self.far_end_pending.len() / PROCESSING_FRAME * PROCESSING_FRAME;
        for chunk in self.far_end_pending[..whole].chunks_exact(PROCESSING_FRAME) {
            let power = mean_power(chunk);
            if power > FAR_END_AUDIBLE_POWER {
                self.far_end_recent = FAR_END_HOLD_FRAMES;
            }
            // The bulk delay, its history and the queue only serve the echo canceller.
            if self.echo_canceller.is_some() {
                self.bulk_delay.far_frame(power);
                self.far_end_history.push_back(chunk.to_vec());
                if self.far_end_history.len() > MAX_BULK_DELAY {
                    self.far_end_history.pop_front();
                }
                self.far_end_queue.push(chunk, self.bulk_delay.held_frames);
            }
        }
        self.far_end_pending.drain(..whole);
        Ok(())
    }

    /// Cleans one 10 ms microphone frame in place (mono, 48 kHz, −1..1).
    pub fn process_frame(&mut self, frame: &mut [f32]) -> Result<(), VoiceError> {
        if let Some(canceller) = &mut self.echo_canceller {
            let hold_changed = self.bulk_delay.near_frame(mean_power(frame));
            let held = self.bulk_delay.held_frames;
            if hold_changed {
                // The echo moved in the far end the canceller gets: it learns it again. The
                // frames of the new hold, already played, wait their turn.
                canceller.reset();
                self.far_end_queue.refill(&self.far_end_history, held);
            }
            let far = self.far_end_queue.take(held);
            canceller.process(&far, frame);
        }
        if let Some(volume) = &self.input_volume {
            volume.apply(frame);
        }
        self.processor.process_capture_frame(frame)?;
        self.far_end_recent = self.far_end_recent.saturating_sub(1);
        if let Some(volume) = &mut self.input_volume
            && self.far_end_recent == 0
        {
            volume.follow(frame);
        }
        Ok(())
    }

    /// Cleans one 20 ms microphone frame in place (mono 16-bit, [`FRAME_SAMPLES`] samples).
    pub fn near_end(&mut self, samples: &mut [i16]) -> Result<(), VoiceError> {
        debug_assert_eq!(samples.len(), FRAME_SAMPLES);
        let scale = f32::from(i16::MAX);
        for chunk in samples.chunks_exact_mut(PROCESSING_FRAME) {
            for (out, sample) in self.frame.iter_mut().zip(chunk.iter()) {
                *out = f32::from(*sample) / scale;
            }
            let mut frame = std::mem::take(&mut self.frame);
            let processed = self.process_frame(&mut frame);
            self.frame = frame;
            processed?;
            for (sample, processed) in chunk.iter_mut().zip(&self.frame) {
                *sample = crate::audio::sample_to_i16(*processed);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(frequency: f32, amplitude: f32, samples: usize) -> Vec<f32> {
        (0..samples)
            .map(|n| amplitude * (std::f32::consts::TAU * frequency * n as f32 / 48_000.0).sin())
            .collect()
    }

    /// The far-end queue gives the canceller one frame per microphone frame: it drops what
    /// was played before the first microphone frame, gives none when the frame has not come
    /// yet (the next one then takes it), and with two frames left waiting for a whole second
    /// catches up by giving two at once, once.
    #[test]
    fn the_far_end_queue_keeps_one_frame_per_microphone_frame() {
        let frame = |n: usize| vec![n as f32; PROCESSING_FRAME];
        let mut queue = FarEndQueue::default();
        for n in 0..30 {
            queue.push(&frame(n), 0);
        }
        let first = queue.take(0);
        assert_eq!(first, vec![frame(29)], "the backlog is dropped");
        assert!(queue.take(0).is_empty(), "frame 30 has not come yet");
        queue.push(&frame(30), 0);
        queue.push(&frame(31), 0);
        assert_eq!(queue.take(0), vec![frame(30)], "the late frame comes next");
        // From here two frames stay waiting: one comes per microphone frame.
        queue.push(&frame(32), 0);
        let mut caught_up = 0;
        for next in 33..283 {
            let taken = queue.take(0);
            assert!(!taken.is_empty());
            if taken.len() == 2 {
                caught_up += 1;
            }
            queue.push(&frame(next), 0);
        }
        assert_eq!(caught_up, 1, "one catch-up, then one frame is left waiting");
        assert_eq!(queue.frames.len(), 1);
    }

    /// `far` heard `delay` samples late at half level.
    fn half_level_echo(far: &[f32], delay: usize) -> Vec<f32> {
        (0..far.len())
            .map(|n| {
                if n >= delay {
                    0.5 * far[n - delay]
                } else {
                    0.0
                }
            })
            .collect()
    }

    fn power(samples: &[f32]) -> f64 {
        samples.iter().map(|s| f64::from(*s).powi(2)).sum::<f64>() / samples.len() as f64
    }

    /// With every stage off the microphone passes through (the high-pass filter aside, which
    /// leaves a 1 kHz tone alone); with echo cancellation on, a microphone hearing only a
    /// delayed, attenuated copy of what was played is brought down by more than 20 dB once
    /// the canceller has converged.
    #[test]
    fn echo_of_the_far_end_is_removed() {
        let seconds = 6;
        let far = tone(1000.0, 0.3, 48_000 * seconds);
        let echo = half_level_echo(&far, 48 * 80); // 80 ms
        let run = |stages: VoiceProcessing| {
            let mut processor = VoiceProcessor::new(stages).expect("processor");
            let mut out = Vec::with_capacity(echo.len());
            for (played, heard) in far
                .chunks_exact(PROCESSING_FRAME)
                .zip(echo.chunks_exact(PROCESSING_FRAME))
            {
                processor.far_end(played).expect("far end");
                let mut frame = heard.to_vec();
                processor.process_frame(&mut frame).expect("capture");
                out.extend_from_slice(&frame);
            }
            out
        };
        let last_second = echo.len() - 48_000..;
        let passed = run(VoiceProcessing::OFF);
        let unchanged = power(&passed[last_second.clone()]) / power(&echo[last_second.clone()]);
        assert!((0.8..1.2).contains(&unchanged), "pass-through: {unchanged}");
        let cancelled = run(VoiceProcessing {
            echo_cancellation: true,
            ..VoiceProcessing::OFF
        });
        let erle_db =
            10.0 * (power(&echo[last_second.clone()]) / power(&cancelled[last_second])).log10();
        assert!(erle_db > 20.0, "echo reduced by {erle_db:.1} dB");
    }

    /// Words of noise: 300 ms bursts with 100 ms pauses, the same every run for a `seed`.
    fn words(samples: usize, seed: u64) -> Vec<f32> {
        let mut state = 0x2545_f491_4f6c_dd1d_u64 ^ seed;
        (0..samples)
            .map(|n| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let sample = 0.2 * ((state >> 11) as f32 / (1u64 << 53) as f32 - 0.5);
                if n % 19_200 < 14_400 { sample } else { 0.0 }
            })
            .collect()
    }

    /// The far end as an output hands it over: in 40 ms chunks, the first half of each after
    /// the microphone frames it goes with (and what was played before the microphone opened,
    /// 2 s of it, all at once). The canceller still lines the two up and learns the echo
    /// (100 ms late): over 4–6 s of echo alone it is at least 30 dB down, and a near-end
    /// talker over it in the last 2 s comes through at least 0.9 correlated (a canceller that
    /// had not learnt the path could only suppress, near end and all).
    #[test]
    fn a_far_end_that_comes_late_and_in_bursts_is_cancelled() {
        let far = words(48_000 * 10, 1);
        let echo = half_level_echo(&far, 4_800); // 100 ms
        let near: Vec<f32> = words(48_000 * 2, 2).iter().map(|s| 0.5 * s).collect();
        let talk = 48_000 * 8;
        let mut microphone = echo.clone();
        for (sample, near) in microphone[talk..].iter_mut().zip(&near) {
            *sample += near;
        }
        let mut processor = VoiceProcessor::new(VoiceProcessing {
            echo_cancellation: true,
            ..VoiceProcessing::OFF
        })
        .expect("processor");
        let start = 48_000 * 2;
        processor.far_end(&far[..start]).expect("far end");
        // The output is one block late: it starts with a block of silence.
        let mut out = vec![0.0; start - PROCESSING_FRAME];
        let frames = (far.len() - start) / PROCESSING_FRAME;
        for frame in 0..frames {
            let at = start + frame * PROCESSING_FRAME;
            let mut heard = microphone[at..at + PROCESSING_FRAME].to_vec();
            processor.process_frame(&mut heard).expect("capture");
            out.extend_from_slice(&heard);
            if frame % 4 == 1 {
                let chunk = start + (frame - 1) * PROCESSING_FRAME;
                processor
                    .far_end(&far[chunk..chunk + 4 * PROCESSING_FRAME])
                    .expect("far end");
            }
        }
        let alone = 48_000 * 4..48_000 * 6;
        let erle_db = 10.0 * (power(&echo[alone.clone()]) / power(&out[alone])).log10();
        // The AudioProcessing module adds a few milliseconds: the best lag up to 30 ms.
        let kept = (0..1_440)
            .map(|lag| {
                let heard = &out[talk + lag..];
                let near = &near[..heard.len()];
                let cross: f64 = heard
                    .iter()
                    .zip(near)
                    .map(|(a, b)| f64::from(*a) * f64::from(*b))
                    .sum();
                cross / (power(heard) * power(near)).sqrt() / heard.len() as f64
            })
            .fold(f64::MIN, f64::max);
        assert!(kept >= 0.9, "near end kept {kept:.3}");
        assert!(erle_db >= 30.0, "echo reduced by {erle_db:.1} dB");
    }
}
