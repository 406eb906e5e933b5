//! The echo canceller of the microphone path ([`crate::voice`]): a linear filter that learns
//! the room's echo path from what was played and subtracts its estimate, then a suppressor
//! for what the filter left. Its structure follows Speex's MDF (the linear part) and WebRTC's
//! AEC3 (a suppressor that leans on the linear part): the near-end talker is kept during
//! double talk, where the older AEC of Debian's AudioProcessing 0.3 suppressed much of it.
//!
//! ```text
//! far end, one 10 ms block per microphone block
//!   └▶ FFT of [previous, current] ─▶ the last PARTITIONS spectra
//!        ├▶ foreground filter ─▶ echo estimate ─▶ microphone − estimate ─┐
//!        └▶ background filter ─▶ its error ─▶ its update (step: Speex)   │
//!             (the foreground takes the background when it does better)  │
//!   suppressor: 20 ms sine windows, 10 ms hop ◀──────────────────────────┘
//!     per bin: residual echo = estimate ÷ the filter's ERLE there (or all of the error,
//!     in a block of echo alone) ─▶ gain = 1 − 8 · residual ÷ error ─▶ out (one block late)
//! ```
//!
//! - **Linear filter** ([`LinearEchoCanceller`]). A partitioned-block frequency-domain
//!   adaptive filter (overlap-save, 10 ms blocks, 20 ms FFTs, [`PARTITIONS`] partitions: 160 ms
//!   of echo path). One partition's coefficients are constrained back to a linear convolution
//!   each block, in turn.
//! - **Double talk in the filter.** Only the background filter adapts. Its step follows Speex:
//!   in proportion to the share of its error that is echo it has not yet removed (the leak,
//!   from how the error's power follows the echo estimate's), so near-end speech, which the
//!   estimate does not explain, slows it down. The foreground, whose estimate is subtracted,
//!   takes the background's coefficients only when the background cancels significantly more
//!   ([`FilterChoice`]); a background that drifted is put back. The near-end talker is
//!   therefore not learnt as echo.
//! - **Suppressor** ([`ResidualEchoSuppressor`]). Per bin, the echo left is the filter's
//!   estimate divided by the filter's ERLE in that bin, learnt from blocks of echo alone.
//!   Blocks are told apart by how much error is left against what the filter usually leaves:
//!   the near end talking makes it far more, and such a block, and 100 ms after it, count as
//!   double talk. In a block of echo alone everything left is echo and is taken down to
//!   −40 dB; in double talk only bins where the echo left is a fair part of the error are.
//!   Until the filter brings the echo down by 20 dB, every bin is suppressed while the far
//!   end plays and is heard (half duplex at the very start of a call); a far end that the
//!   microphone does not hear (headphones) is never suppressed for.
//! - **Alignment.** The canceller takes exactly one far-end block per microphone block, so
//!   the echo stays at one place in the filter however the two streams arrive; the caller
//!   (`VoiceProcessor`) queues the far end and holds back long delays (`BulkDelay`).

use std::collections::VecDeque;
use std::sync::Arc;

use realfft::num_complex::Complex32;
use realfft::{ComplexToReal, RealFftPlanner, RealToComplex};

use crate::audio::SAMPLE_RATE;
use crate::voice::PROCESSING_FRAME;

/// Samples per block: one 10 ms processing frame.
const BLOCK: usize = PROCESSING_FRAME;
/// The FFT length (two blocks, for overlap-save).
const FFT_LEN: usize = 2 * BLOCK;
/// Frequency bins of a real FFT of [`FFT_LEN`].
const BINS: usize = BLOCK + 1;
/// Filter partitions of one block each: the filter spans 160 ms of echo path, the delays
/// `BulkDelay` leaves to it (up to 130 ms) and a tail after them.
pub const PARTITIONS: usize = 16;
/// Added to a bin's far-end power before dividing by it (about −80 dBFS in unnormalised FFT
/// units), so that silent bins do not blow the step up.
const POWER_FLOOR: f32 = FFT_LEN as f32 * 1e-8;
/// A far-end block quieter than this (mean power, −60 dBFS) counts as silence.
const AUDIBLE_FAR_POWER: f32 = 1e-6;
/// The background's initial step, before it counts as adapted (Speex's: with 0.5 or 1.0 it
/// learnt faster on `audio-check`'s scene, but diverged at first on a loud echo, so that
/// the suppressor stayed half duplex into the double talk).
const INITIAL_STEP: f32 = 0.25;
/// The leak above which the filter counts as adapted, once it has had enough far end.
const ADAPTED_LEAK: f32 = 0.03;
/// The least leak believed (the estimate's floor).
const MIN_LEAK: f32 = 0.005;

/// One filter: [`PARTITIONS`] frequency responses of [`BINS`] bins.
#[derive(Clone)]
struct PartitionedFilter {
    partitions: Vec<Vec<Complex32>>,
}

impl PartitionedFilter {
    fn zero() -> Self {
        Self {
            partitions: vec![vec![Complex32::default(); BINS]; PARTITIONS],
        }
    }

    /// The echo spectrum this filter predicts from the far-end spectra (newest first).
    fn predict(&self, far: &VecDeque<Vec<Complex32>>, out: &mut [Complex32]) {
        out.fill(Complex32::default());
        for (weights, spectrum) in self.partitions.iter().zip(far) {
            for ((out, w), x) in out.iter_mut().zip(weights).zip(spectrum) {
                *out += w * x;
            }
        }
    }
}

/// The two spectral transforms and their buffers.
struct Transforms {
    forward: Arc<dyn RealToComplex<f32>>,
    inverse: Arc<dyn ComplexToReal<f32>>,
    time: Vec<f32>,
    spectrum: Vec<Complex32>,
    scratch: Vec<Complex32>,
}

impl Transforms {
    fn new() -> Self {
        let mut planner = RealFftPlanner::<f32>::new();
        let forward = planner.plan_fft_forward(FFT_LEN);
        let inverse = planner.plan_fft_inverse(FFT_LEN);
        let scratch_len = forward.get_scratch_len().max(inverse.get_scratch_len());
        Self {
            time: forward.make_input_vec(),
            spectrum: forward.make_output_vec(),
            scratch: vec![Complex32::default(); scratch_len],
            forward,
            inverse,
        }
    }

    /// `self.time` → `self.spectrum`.
    fn forward(&mut self) {
        // The buffers have the planned lengths, so the transform cannot fail.
        let _ = self.forward.process_with_scratch(
            &mut self.time,
            &mut self.spectrum,
            &mut self.scratch,
        );
    }

    /// `spectrum` → `self.time`, scaled back (realfft does not normalise).
    fn inverse(&mut self, spectrum: &[Complex32]) {
        self.spectrum.copy_from_slice(spectrum);
        // A real signal's spectrum has no imaginary part at 0 Hz and at Nyquist.
        self.spectrum[0].im = 0.0;
        self.spectrum[BINS - 1].im = 0.0;
        let _ = self.inverse.process_with_scratch(
            &mut self.spectrum,
            &mut self.time,
            &mut self.scratch,
        );
        let scale = 1.0 / FFT_LEN as f32;
        for sample in &mut self.time {
            *sample *= scale;
        }
    }
}

/// Which filter the output uses, decided as Speex's MDF does: the foreground takes the
/// background when the background cancelled significantly more, given how much the two
/// estimates differ, over this block or over two smoothed spans; the background goes back to
/// the foreground when it did significantly worse.
#[derive(Default)]
struct FilterChoice {
    short_mean: f32,
    long_mean: f32,
    short_variance: f32,
    long_variance: f32,
}

/// What [`FilterChoice`] decided for one block.
#[derive(Debug, PartialEq)]
enum Choice {
    AdoptBackground,
    ResetBackground,
    Keep,
}

impl FilterChoice {
    /// `foreground` and `background`: the two errors' energies this block; `difference`: the
    /// energy of the difference of the two echo estimates.
    fn decide(&mut self, foreground: f32, background: f32, difference: f32) -> Choice {
        let gain = foreground - background;
        let spread = foreground * difference;
        self.short_mean = 0.6 * self.short_mean + 0.4 * gain;
        self.long_mean = 0.85 * self.long_mean + 0.15 * gain;
        self.short_variance = 0.36 * self.short_variance + 0.16 * spread;
        self.long_variance = 0.7225 * self.long_variance + 0.0225 * spread;
        let signed_square = |x: f32| x * x.abs();
        if signed_square(gain) > spread
            || signed_square(self.short_mean) > 0.5 * self.short_variance
            || signed_square(self.long_mean) > 0.25 * self.long_variance
        {
            *self = Self::default();
            return Choice::AdoptBackground;
        }
        if -signed_square(gain) > 4.0 * spread
            || -signed_square(self.short_mean) > 4.0 * self.short_variance
            || -signed_square(self.long_mean) > 4.0 * self.long_variance
        {
            *self = Self::default();
            return Choice::ResetBackground;
        }
        Choice::Keep
    }
}

/// Block energies the step control needs (time domain, one block).
struct BlockEnergies {
    far: f32,
    error: f32,
    estimate: f32,
    error_estimate: f32,
}

/// How fast the background learns, per bin, as Speex's MDF sets it: in proportion to the
/// share of the error that is echo it has not yet removed (the residual-to-error ratio, from
/// how the error's power follows the echo estimate's). Near-end speech is error that the
/// estimate does not explain, so the step falls while someone talks into the microphone.
struct StepControl {
    /// Smoothed far-end power per bin (one block).
    far_power: Vec<f32>,
    /// Smoothed error and echo-estimate power per bin, and their smoothed covariation.
    error_mean: Vec<f32>,
    estimate_mean: Vec<f32>,
    covariation: f32,
    estimate_variation: f32,
    /// Whether the filter has adapted once (before, the step follows the far end's level).
    adapted: bool,
    /// The initial steps summed, until the filter counts as adapted.
    adapted_sum: f32,
    /// The step per bin for this block, divided by the far end's power.
    steps: Vec<f32>,
}

impl StepControl {
    fn new() -> Self {
        Self {
            far_power: vec![0.0; BINS],
            error_mean: vec![0.0; BINS],
            estimate_mean: vec![0.0; BINS],
            covariation: 0.0,
            estimate_variation: 1.0,
            adapted: false,
            adapted_sum: 0.0,
            steps: vec![0.0; BINS],
        }
    }

    /// Sets `self.steps` from this block's far-end, error and estimate spectra.
    fn update(
        &mut self,
        far: &[Complex32],
        error: &[Complex32],
        estimate: &[Complex32],
        energies: &BlockEnergies,
    ) {
        let smoothing = 0.35 / PARTITIONS as f32;
        for (power, x) in self.far_power.iter_mut().zip(far) {
            *power = (1.0 - smoothing) * *power + smoothing * x.norm_sqr();
        }
        // How the error's power moves with the estimate's, bin by bin: the echo leaking
        // through the filter.
        let block_seconds = BLOCK as f32 / SAMPLE_RATE as f32;
        let (mut covariation, mut estimate_variation) = (0.0, 0.0);
        for (((error_mean, estimate_mean), e), y) in self
            .error_mean
            .iter_mut()
            .zip(&mut self.estimate_mean)
            .zip(error)
            .zip(estimate)
        {
            let (e, y) = (e.norm_sqr(), y.norm_sqr());
            covariation += (e - *error_mean) * (y - *estimate_mean);
            estimate_variation += (y - *estimate_mean).powi(2);
            *error_mean += block_seconds * (e - *error_mean);
            *estimate_mean += block_seconds * (y - *estimate_mean);
        }
        let error_energy = energies.error.max(1e-12);
        let rate =
            (2.0 * block_seconds * energies.estimate / error_energy).min(0.5 * block_seconds);
        self.covariation += rate * (covariation - self.covariation);
        self.estimate_variation = (self.estimate_variation
            + rate * (estimate_variation - self.estimate_variation))
            .max(1e-12);
        self.covariation = self.covariation.max(MIN_LEAK * self.estimate_variation);
        let leak = (self.covariation / self.estimate_variation).min(1.0);
        // Residual echo against the error, at least what the estimate explains of it.
        let explained =
            energies.error_estimate.powi(2) / (1e-12 + energies.error * energies.estimate);
        let residual_to_error = ((1e-4 * energies.far + 3.0 * leak * energies.estimate)
            / error_energy)
            .max(explained)
            .min(0.5);
        if !self.adapted && self.adapted_sum > PARTITIONS as f32 && leak > ADAPTED_LEAK {
            self.adapted = true;
        }
        if self.adapted {
            for (((step, e), y), power) in self
                .steps
                .iter_mut()
                .zip(error)
                .zip(estimate)
                .zip(&self.far_power)
            {
                let e = e.norm_sqr() + POWER_FLOOR;
                let r = (leak * y.norm_sqr()).min(0.5 * e);
                let r = 0.7 * r + 0.3 * residual_to_error * e;
                *step = r / (e * (power + POWER_FLOOR));
            }
        } else {
            let rate = if energies.far > AUDIBLE_FAR_POWER * BLOCK as f32 {
                INITIAL_STEP * energies.far.min(energies.error) / error_energy
            } else {
                0.0
            };
            self.adapted_sum += rate;
            for (step, power) in self.steps.iter_mut().zip(&self.far_power) {
                *step = rate / (power + POWER_FLOOR);
            }
        }
    }
}

/// The linear echo canceller of one microphone (mono, 48 kHz, 10 ms blocks).
pub struct LinearEchoCanceller {
    transforms: Transforms,
    /// Spectra of [previous block, block] of the far end, newest first, [`PARTITIONS`] long.
    far_spectra: VecDeque<Vec<Complex32>>,
    /// The last far-end block, and its energy.
    previous_far: Vec<f32>,
    far_energy: f32,
    foreground: PartitionedFilter,
    background: PartitionedFilter,
    choice: FilterChoice,
    steps: StepControl,
    /// How the step is shared out among the partitions (by the size of their coefficients:
    /// the echo's direct path learns fastest).
    proportions: Vec<f32>,
    /// The partition whose coefficients are constrained next.
    next_constrained: usize,
    /// The foreground's echo estimate for the last block, in time.
    foreground_echo: Vec<f32>,
    background_echo: Vec<f32>,
    background_error: Vec<f32>,
    foreground_spectrum: Vec<Complex32>,
    background_spectrum: Vec<Complex32>,
    error_spectrum: Vec<Complex32>,
}

impl Default for LinearEchoCanceller {
    fn default() -> Self {
        Self::new()
    }
}

impl LinearEchoCanceller {
    /// A canceller that has learnt nothing yet (it passes the microphone through).
    pub fn new() -> Self {
        // At first, earlier partitions get more (an echo path decays).
        let decay = (-2.4 / PARTITIONS as f32).exp();
        let proportions: Vec<f32> = (0..PARTITIONS).map(|p| decay.powi(p as i32)).collect();
        let sum: f32 = proportions.iter().sum();
        Self {
            transforms: Transforms::new(),
            far_spectra: (0..PARTITIONS)
                .map(|_| vec![Complex32::default(); BINS])
                .collect(),
            previous_far: vec![0.0; BLOCK],
            far_energy: 0.0,
            foreground: PartitionedFilter::zero(),
            background: PartitionedFilter::zero(),
            choice: FilterChoice::default(),
            steps: StepControl::new(),
            proportions: proportions.iter().map(|p| 0.99 * p / sum).collect(),
            next_constrained: 0,
            foreground_echo: vec![0.0; BLOCK],
            background_echo: vec![0.0; BLOCK],
            background_error: vec![0.0; BLOCK],
            foreground_spectrum: vec![Complex32::default(); BINS],
            background_spectrum: vec![Complex32::default(); BINS],
            error_spectrum: vec![Complex32::default(); BINS],
        }
    }

    /// Takes the far-end block that goes with the next microphone block.
    pub fn far_block(&mut self, block: &[f32]) {
        debug_assert_eq!(block.len(), BLOCK);
        let transforms = &mut self.transforms;
        transforms.time[..BLOCK].copy_from_slice(&self.previous_far);
        transforms.time[BLOCK..].copy_from_slice(block);
        self.previous_far.copy_from_slice(block);
        self.far_energy = block.iter().map(|s| s * s).sum();
        transforms.forward();
        // The oldest spectrum's buffer takes the newest.
        self.far_spectra.rotate_right(1);
        self.far_spectra[0].copy_from_slice(&transforms.spectrum);
    }

    /// Moves the learnt echo path by `blocks` (later when positive): the far end given to the
    /// filter moved against the microphone by as much.
    pub fn shift_echo(&mut self, blocks: isize) {
        let shift = blocks.unsigned_abs().min(PARTITIONS);
        for filter in [&mut self.foreground, &mut self.background] {
            let partitions = &mut filter.partitions;
            if blocks > 0 {
                partitions.rotate_right(shift);
                partitions[..shift]
                    .iter_mut()
                    .for_each(|p| p.fill(Complex32::default()));
            } else if blocks < 0 {
                partitions.rotate_left(shift);
                partitions[PARTITIONS - shift..]
                    .iter_mut()
                    .for_each(|p| p.fill(Complex32::default()));
            }
        }
    }

    /// The last far-end block's energy (sum of squares).
    pub fn far_energy(&self) -> f32 {
        self.far_energy
    }

    /// The foreground's echo estimate for the last block (what was subtracted).
    pub fn echo_estimate(&self) -> &[f32] {
        &self.foreground_echo
    }

    /// Subtracts the echo estimate from one 10 ms microphone block, in place, and learns.
    pub fn cancel(&mut self, microphone: &mut [f32]) {
        debug_assert_eq!(microphone.len(), BLOCK);
        self.background
            .predict(&self.far_spectra, &mut self.background_spectrum);
        self.transforms.inverse(&self.background_spectrum);
        self.background_echo
            .copy_from_slice(&self.transforms.time[BLOCK..]);
        self.foreground
            .predict(&self.far_spectra, &mut self.foreground_spectrum);
        self.transforms.inverse(&self.foreground_spectrum);
        self.foreground_echo
            .copy_from_slice(&self.transforms.time[BLOCK..]);
        let (mut foreground_energy, mut background_energy, mut difference) = (0.0, 0.0, 0.0);
        let (mut estimate_energy, mut error_estimate) = (0.0, 0.0);
        for (((mic, fg), bg), bg_error) in microphone
            .iter_mut()
            .zip(&self.foreground_echo)
            .zip(&self.background_echo)
            .zip(&mut self.background_error)
        {
            *bg_error = *mic - bg;
            background_energy += *bg_error * *bg_error;
            estimate_energy += bg * bg;
            error_estimate += *bg_error * bg;
            difference += (fg - bg) * (fg - bg);
            *mic -= fg;
            foreground_energy += *mic * *mic;
        }
        match self
            .choice
            .decide(foreground_energy, background_energy, difference + 1e-9)
        {
            Choice::AdoptBackground => self.foreground.clone_from(&self.background),
            Choice::ResetBackground => {
                self.background.clone_from(&self.foreground);
                return;
            }
            Choice::Keep => {}
        }
        self.adapt_background(&BlockEnergies {
            far: self.far_energy,
            error: background_energy,
            estimate: estimate_energy,
            error_estimate,
        });
    }

    /// One step of the background filter on its own error, then one partition's
    /// coefficients constrained.
    fn adapt_background(&mut self, energies: &BlockEnergies) {
        let transforms = &mut self.transforms;
        transforms.time[..BLOCK].fill(0.0);
        transforms.time[BLOCK..].copy_from_slice(&self.background_error);
        transforms.forward();
        self.error_spectrum.copy_from_slice(&transforms.spectrum);
        self.steps.update(
            &self.far_spectra[0],
            &self.error_spectrum,
            &self.background_spectrum,
            energies,
        );
        for ((weights, far), proportion) in self
            .background
            .partitions
            .iter_mut()
            .zip(&self.far_spectra)
            .zip(&self.proportions)
        {
            for (((w, x), e), step) in weights
                .iter_mut()
                .zip(far)
                .zip(&self.error_spectrum)
                .zip(&self.steps.steps)
            {
                *w += x.conj() * e * (*step * proportion);
            }
        }
        // Constrain one partition: its impulse response keeps only its first block.
        let weights = &mut self.background.partitions[self.next_constrained];
        transforms.inverse(weights);
        transforms.time[BLOCK..].fill(0.0);
        transforms.forward();
        weights.copy_from_slice(&transforms.spectrum);
        self.next_constrained = (self.next_constrained + 1) % PARTITIONS;
        self.share_step();
    }

    /// Shares the step among the partitions by the size of their coefficients, with a
    /// tenth of the largest for every one (Speex's proportionate update).
    fn share_step(&mut self) {
        for (proportion, weights) in self.proportions.iter_mut().zip(&self.background.partitions) {
            *proportion = (1.0 + weights.iter().map(|w| w.norm_sqr()).sum::<f32>()).sqrt();
        }
        let largest = self.proportions.iter().copied().fold(0.0, f32::max);
        for proportion in &mut self.proportions {
            *proportion += 0.1 * largest;
        }
        let sum: f32 = self.proportions.iter().sum();
        for proportion in &mut self.proportions {
            *proportion = 0.99 * *proportion / sum;
        }
    }
}

/// Residual echo is over-estimated by this much before it is taken from a bin.
const OVERSUBTRACTION: f32 = 8.0;
/// The least a bin's gain may be (−40 dB).
const SUPPRESSION_FLOOR: f32 = 0.01;
/// The filter counts as having learnt the path once it brings the echo down this much
/// (20 dB); until then the suppressor works half duplex while the far end plays.
const CONVERGED_ERLE: f32 = 100.0;
/// The most ERLE believed for a bin (40 dB).
const MAX_ERLE: f32 = 1e4;
/// How fast the ERLE estimates follow a block of echo alone (geometric smoothing).
const ERLE_SMOOTHING: f32 = 0.1;
/// A block whose error is more than this many times (6 dB) what the filter usually leaves is
/// taken as the near end talking...
const NEAR_END_MARGIN: f32 = 4.0;
/// ...where "usually" is at most this much ERLE (12 dB): a filter meeting a sound it has not
/// learnt yet often does worse than its best.
const NEAR_END_ERLE_CAP: f32 = 16.0;
/// Blocks after the near end was last heard that still count as double talk (100 ms: the
/// quieter ends of its words).
const NEAR_END_HANGOVER: u32 = 10;
/// The far end counts as heard at the microphone once the filter's echo estimate holds this
/// share of the microphone's power (−13 dB), smoothed over about 100 ms of far end playing.
const ECHO_HEARD_SHARE: f32 = 0.05;
/// Smoothing of those two powers, per block.
const ECHO_SHARE_SMOOTHING: f32 = 0.9;

/// Suppresses the echo the linear filter left, bin by bin, in a short-time spectrum (20 ms
/// sine windows, 10 ms hop: the output is one block late). See the module's docs.
pub struct ResidualEchoSuppressor {
    transforms: Transforms,
    window: Vec<f32>,
    previous_microphone: Vec<f32>,
    previous_error: Vec<f32>,
    previous_echo: Vec<f32>,
    overlap: Vec<f32>,
    microphone_spectrum: Vec<Complex32>,
    echo_spectrum: Vec<Complex32>,
    error_spectrum: Vec<Complex32>,
    /// Smoothed power of the echo estimate and of the error, per bin.
    echo_power: Vec<f32>,
    error_power: Vec<f32>,
    /// How far the linear filter brings the echo down, per bin and over all bins, learnt in
    /// blocks of echo alone (geometric means).
    erle: Vec<f32>,
    broadband_erle: f32,
    /// Whether the linear filter has once brought the echo down by [`CONVERGED_ERLE`].
    converged: bool,
    /// Blocks left during which the far end counts as playing (the filter's span).
    far_playing: u32,
    /// Blocks left during which double talk is assumed.
    near_hangover: u32,
    /// Smoothed power of the echo estimate and of the microphone while the far end plays.
    echo_share: (f32, f32),
}

impl Default for ResidualEchoSuppressor {
    fn default() -> Self {
        Self::new()
    }
}

impl ResidualEchoSuppressor {
    /// A suppressor that has seen nothing.
    pub fn new() -> Self {
        let window = (0..FFT_LEN)
            .map(|n| (std::f32::consts::PI * (n as f32 + 0.5) / FFT_LEN as f32).sin())
            .collect();
        Self {
            transforms: Transforms::new(),
            window,
            previous_microphone: vec![0.0; BLOCK],
            previous_error: vec![0.0; BLOCK],
            previous_echo: vec![0.0; BLOCK],
            overlap: vec![0.0; BLOCK],
            microphone_spectrum: vec![Complex32::default(); BINS],
            echo_spectrum: vec![Complex32::default(); BINS],
            error_spectrum: vec![Complex32::default(); BINS],
            echo_power: vec![0.0; BINS],
            error_power: vec![0.0; BINS],
            erle: vec![1.0; BINS],
            broadband_erle: 1.0,
            converged: false,
            far_playing: 0,
            near_hangover: 0,
            echo_share: (0.0, 0.0),
        }
    }

    /// The windowed spectrum of [`previous`, `current`] into `out`; `current` becomes the
    /// next `previous`.
    fn analyse(
        transforms: &mut Transforms,
        window: &[f32],
        previous: &mut [f32],
        current: &[f32],
        out: &mut [Complex32],
    ) {
        for ((slot, sample), w) in transforms
            .time
            .iter_mut()
            .zip(previous.iter().chain(current))
            .zip(window)
        {
            *slot = sample * w;
        }
        previous.copy_from_slice(current);
        transforms.forward();
        out.copy_from_slice(&transforms.spectrum);
    }

    /// Suppresses what is left of the echo in `error`, the linear canceller's output for the
    /// block whose microphone was `microphone`, echo estimate `echo` and far-end energy
    /// `far_energy`; in place, one block late.
    pub fn suppress(
        &mut self,
        microphone: &[f32],
        echo: &[f32],
        error: &mut [f32],
        far_energy: f32,
    ) {
        if far_energy > AUDIBLE_FAR_POWER * BLOCK as f32 {
            self.far_playing = PARTITIONS as u32;
        } else {
            self.far_playing = self.far_playing.saturating_sub(1);
        }
        let far_playing = self.far_playing > 0;
        let transforms = &mut self.transforms;
        Self::analyse(
            transforms,
            &self.window,
            &mut self.previous_microphone,
            microphone,
            &mut self.microphone_spectrum,
        );
        Self::analyse(
            transforms,
            &self.window,
            &mut self.previous_echo,
            echo,
            &mut self.echo_spectrum,
        );
        Self::analyse(
            transforms,
            &self.window,
            &mut self.previous_error,
            error,
            &mut self.error_spectrum,
        );
        let (mut echo_sum, mut error_sum) = (0.0, 0.0);
        for ((echo_power, error_power), (e, y)) in self
            .echo_power
            .iter_mut()
            .zip(&mut self.error_power)
            .zip(self.error_spectrum.iter().zip(&self.echo_spectrum))
        {
            *echo_power = 0.5 * *echo_power + 0.5 * y.norm_sqr();
            *error_power = 0.5 * *error_power + 0.5 * e.norm_sqr();
            echo_sum += *echo_power;
            error_sum += *error_power;
        }
        let echo_alone = self.echo_alone(far_playing, echo_sum, error_sum);
        if far_playing {
            let microphone_sum: f32 = self.microphone_spectrum.iter().map(|d| d.norm_sqr()).sum();
            self.echo_share.0 += (1.0 - ECHO_SHARE_SMOOTHING) * (echo_sum - self.echo_share.0);
            self.echo_share.1 +=
                (1.0 - ECHO_SHARE_SMOOTHING) * (microphone_sum - self.echo_share.1);
        }
        // Half duplex only where the far end is heard at all: with headphones the filter finds
        // no echo, and the near end must not be cut whenever the far end talks.
        let echo_heard = self.echo_share.0 > ECHO_HEARD_SHARE * self.echo_share.1;
        if echo_alone {
            let block_erle = (echo_sum / (error_sum + 1e-12)).clamp(1.0, MAX_ERLE);
            self.broadband_erle = geometric_step(self.broadband_erle, block_erle);
            self.converged |= self.broadband_erle > CONVERGED_ERLE;
        }
        for ((((erle, echo_power), error_power), e), d) in self
            .erle
            .iter_mut()
            .zip(&self.echo_power)
            .zip(&self.error_power)
            .zip(&mut self.error_spectrum)
            .zip(&self.microphone_spectrum)
        {
            if echo_alone && *echo_power > 1e-9 {
                let ratio = (*echo_power / (*error_power + 1e-12)).clamp(1.0, MAX_ERLE);
                *erle = geometric_step(*erle, ratio);
            }
            let residual = if echo_alone {
                e.norm_sqr()
            } else if self.converged || !echo_heard {
                *echo_power / *erle
            } else if far_playing {
                d.norm_sqr().max(e.norm_sqr())
            } else {
                0.0
            };
            let gain =
                (1.0 - OVERSUBTRACTION * residual / e.norm_sqr().max(1e-12)).max(SUPPRESSION_FLOOR);
            *e *= gain;
        }
        self.synthesise(error);
    }

    /// Whether this block holds echo alone: the far end plays, the error is no more than the
    /// filter usually leaves, and no near end was heard in the last [`NEAR_END_HANGOVER`]
    /// blocks.
    fn echo_alone(&mut self, far_playing: bool, echo_sum: f32, error_sum: f32) -> bool {
        if !far_playing {
            self.near_hangover = self.near_hangover.saturating_sub(1);
            return false;
        }
        let usually_left = echo_sum / self.broadband_erle.min(NEAR_END_ERLE_CAP);
        if error_sum > NEAR_END_MARGIN * usually_left {
            self.near_hangover = NEAR_END_HANGOVER;
            return false;
        }
        self.near_hangover = self.near_hangover.saturating_sub(1);
        self.near_hangover == 0
    }

    /// The suppressed spectrum back in time, windowed and overlapped with the last block's
    /// second half, into `out`.
    fn synthesise(&mut self, out: &mut [f32]) {
        self.transforms.inverse(&self.error_spectrum);
        let (first, second) = self.transforms.time.split_at(BLOCK);
        let (first_window, second_window) = self.window.split_at(BLOCK);
        for (((out, overlap), sample), w) in out
            .iter_mut()
            .zip(&mut self.overlap)
            .zip(first)
            .zip(first_window)
        {
            *out = *overlap + sample * w;
        }
        for ((overlap, sample), w) in self.overlap.iter_mut().zip(second).zip(second_window) {
            *overlap = sample * w;
        }
    }
}

/// One step of geometric smoothing of `estimate` toward `observed`.
fn geometric_step(estimate: f32, observed: f32) -> f32 {
    (estimate.ln() + ERLE_SMOOTHING * (observed.ln() - estimate.ln())).exp()
}

/// The whole canceller: the linear filter, then the residual suppressor.
pub struct EchoCanceller {
    linear: LinearEchoCanceller,
    suppressor: ResidualEchoSuppressor,
    microphone: Vec<f32>,
}

impl Default for EchoCanceller {
    fn default() -> Self {
        Self::new()
    }
}

impl EchoCanceller {
    /// A canceller that has learnt nothing.
    pub fn new() -> Self {
        Self {
            linear: LinearEchoCanceller::new(),
            suppressor: ResidualEchoSuppressor::new(),
            microphone: vec![0.0; BLOCK],
        }
    }

    /// Forgets the echo path (the far end moved against the microphone).
    pub fn reset(&mut self) {
        *self = Self::new();
    }

    /// Cancels the echo in `microphone`, in place, given the far-end blocks that came with
    /// it: normally one. None means the far end is late (the echo is now a block earlier
    /// against what the canceller has), two that it catches up (a block later): the filter
    /// moves its echo path to match. The output is one block late (the suppressor's
    /// overlap).
    pub fn process(&mut self, far: &[Vec<f32>], microphone: &mut [f32]) {
        for block in far {
            self.linear.far_block(block);
        }
        self.linear.shift_echo(far.len() as isize - 1);
        self.microphone.copy_from_slice(microphone);
        self.linear.cancel(microphone);
        self.suppressor.suppress(
            &self.microphone,
            self.linear.echo_estimate(),
            microphone,
            self.linear.far_energy(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// White noise, the same every run for a `seed`.
    fn noise(seed: u64, amplitude: f32, length: usize) -> Vec<f32> {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64 ^ seed;
        (0..length)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                amplitude * ((state >> 11) as f32 / (1u64 << 53) as f32 - 0.5)
            })
            .collect()
    }

    /// A room: 50 ms at half level, a reflection 4 ms later at 0.2.
    fn room(far: &[f32]) -> Vec<f32> {
        let taps = [(2_400, 0.5), (2_592, 0.2)];
        (0..far.len())
            .map(|n| {
                taps.iter()
                    .filter(|(lag, _)| n >= *lag)
                    .map(|(lag, gain)| gain * far[n - lag])
                    .sum()
            })
            .collect()
    }

    fn energy(samples: &[f32]) -> f32 {
        samples.iter().map(|s| s * s).sum()
    }

    fn correlation(a: &[f32], b: &[f32]) -> f32 {
        let cross: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        cross / (energy(a) * energy(b)).sqrt()
    }

    /// Runs the linear filter over `far` and `microphone`, block by block.
    fn linear_run(filter: &mut LinearEchoCanceller, far: &[f32], microphone: &[f32]) -> Vec<f32> {
        let mut out = Vec::with_capacity(microphone.len());
        for (far, microphone) in far.chunks_exact(BLOCK).zip(microphone.chunks_exact(BLOCK)) {
            filter.far_block(far);
            let mut block = microphone.to_vec();
            filter.cancel(&mut block);
            out.extend_from_slice(&block);
        }
        out
    }

    /// The linear filter learns a room from white noise: it passes the microphone through
    /// before it has learnt anything, and after 3 s the echo is at least 25 dB down (28 dB
    /// measured).
    #[test]
    fn the_linear_filter_learns_the_echo_path() {
        let far = noise(1, 0.2, 48_000 * 4);
        let echo = room(&far);
        let mut filter = LinearEchoCanceller::new();
        let out = linear_run(&mut filter, &far, &echo);
        let first = 2_400..2_400 + BLOCK;
        assert_eq!(out[first.clone()], echo[first], "nothing learnt yet");
        let last = 48_000 * 3..;
        let erle = 10.0 * (energy(&echo[last.clone()]) / energy(&out[last])).log10();
        assert!(erle >= 25.0, "echo down {erle:.1} dB");
    }

    /// Double talk does not teach the filter the near end: after 3 s of echo alone, 2 s of a
    /// near-end talker at the echo's level leave the filter's output at least 0.99 correlated
    /// with the near end, and echo alone afterwards is still at least 25 dB down.
    #[test]
    fn double_talk_leaves_the_linear_filter_alone() {
        let far = noise(2, 0.2, 48_000 * 6);
        let echo = room(&far);
        let near = noise(3, 0.12, 48_000 * 2);
        let talk = 48_000 * 3..48_000 * 5;
        let mut microphone = echo.clone();
        for (sample, near) in microphone[talk.clone()].iter_mut().zip(&near) {
            *sample += near;
        }
        let mut filter = LinearEchoCanceller::new();
        let out = linear_run(&mut filter, &far, &microphone);
        let kept = correlation(&out[talk.clone()], &near);
        assert!(kept >= 0.99, "near end kept {kept:.3}");
        let after = 48_000 * 5 + 4_800..;
        let erle = 10.0 * (energy(&echo[after.clone()]) / energy(&out[after])).log10();
        assert!(erle >= 25.0, "echo down {erle:.1} dB after the double talk");
    }

    /// When the far end given to the filter moves by a block against the microphone, moving
    /// the learnt echo path with it keeps the echo cancelled (at least 20 dB in the next
    /// 100 ms); left where it was, the filter cancels next to nothing there.
    #[test]
    fn moving_the_echo_path_follows_the_far_end() {
        let far = noise(6, 0.2, 48_000 * 5);
        let echo = room(&far);
        let learnt = 48_000 * 4;
        let mut moved = LinearEchoCanceller::new();
        linear_run(&mut moved, &far[..learnt], &echo[..learnt]);
        let mut left = LinearEchoCanceller::new();
        linear_run(&mut left, &far[..learnt], &echo[..learnt]);
        // The far end's next block is late: the microphone block goes without it.
        let mut gap = echo[learnt..learnt + BLOCK].to_vec();
        moved.shift_echo(-1);
        moved.cancel(&mut gap);
        left.cancel(&mut echo[learnt..learnt + BLOCK].to_vec());
        // From here on the far end runs a block behind the microphone.
        let after = learnt + BLOCK..learnt + 11 * BLOCK;
        let far_late = &far[learnt..learnt + 10 * BLOCK];
        let erle = |filter: &mut LinearEchoCanceller| {
            let out = linear_run(filter, far_late, &echo[after.clone()]);
            10.0 * (energy(&echo[after.clone()]) / energy(&out)).log10()
        };
        let (moved_erle, left_erle) = (erle(&mut moved), erle(&mut left));
        assert!(moved_erle >= 20.0, "moved: {moved_erle:.1} dB");
        assert!(left_erle < 10.0, "left: {left_erle:.1} dB");
    }

    /// With headphones the microphone does not hear the far end: a near-end talker over a
    /// far end that plays all along comes through whole from the start (at least 0.99
    /// correlated, within 1 dB), not cut as echo would be before the filter has learnt it.
    #[test]
    fn a_far_end_the_microphone_does_not_hear_is_not_suppressed() {
        let far = noise(7, 0.2, 48_000 * 3);
        let near = noise(8, 0.1, 48_000 * 3);
        let mut canceller = EchoCanceller::new();
        let mut out = Vec::with_capacity(near.len());
        for (far, microphone) in far.chunks_exact(BLOCK).zip(near.chunks_exact(BLOCK)) {
            let mut block = microphone.to_vec();
            canceller.process(&[far.to_vec()], &mut block);
            out.extend_from_slice(&block);
        }
        let heard = &out[2 * BLOCK..];
        let near = &near[BLOCK..BLOCK + heard.len()];
        let kept = correlation(heard, near);
        let level = 10.0 * (energy(heard) / energy(near)).log10();
        assert!(kept >= 0.99, "near end kept {kept:.3}");
        assert!(level.abs() <= 1.0, "near end level {level:.1} dB");
    }

    /// The whole canceller on speech-like bursts: while the far end talks alone its echo is
    /// taken at least 40 dB down (the suppressor on top of the filter), and a near-end talker
    /// over it comes through at least 0.95 correlated and within 2 dB of its level. The
    /// output is one block late.
    #[test]
    fn the_canceller_takes_the_echo_and_keeps_the_near_end() {
        let length = 48_000 * 8;
        // Bursts of 300 ms with 100 ms pauses, like words.
        let far: Vec<f32> = noise(4, 0.2, length)
            .iter()
            .enumerate()
            .map(|(n, s)| if n % 19_200 < 14_400 { *s } else { 0.0 })
            .collect();
        let echo = room(&far);
        let near = noise(5, 0.12, 48_000 * 2);
        let talk = 48_000 * 5..48_000 * 7;
        let mut microphone = echo.clone();
        for (sample, near) in microphone[talk.clone()].iter_mut().zip(&near) {
            *sample += near;
        }
        let mut canceller = EchoCanceller::new();
        let mut out = Vec::with_capacity(length);
        for (far, microphone) in far.chunks_exact(BLOCK).zip(microphone.chunks_exact(BLOCK)) {
            let mut block = microphone.to_vec();
            canceller.process(&[far.to_vec()], &mut block);
            out.extend_from_slice(&block);
        }
        let out = &out[BLOCK..];
        let alone = 48_000 * 3..48_000 * 5;
        let erle = 10.0 * (energy(&echo[alone.clone()]) / energy(&out[alone])).log10();
        assert!(erle >= 40.0, "echo down {erle:.1} dB");
        let heard = &out[talk.start..talk.end - BLOCK];
        let near = &near[..heard.len()];
        let kept = correlation(heard, near);
        let level = 10.0 * (energy(heard) / energy(near)).log10();
        assert!(kept >= 0.95, "near end kept {kept:.3}");
        assert!(level.abs() <= 2.0, "near end level {level:.1} dB");
    }
}
