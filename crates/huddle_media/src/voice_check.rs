//! `huddle audio-check`: the voice processing ([`crate::voice`]) measured on a scene, the way
//! WebRTC's `audioproc_f` does, with no devices.
//!
//! ```text
//! far-end speech ─┬────────────────────────────────────────────▶ far end (what we played)
//!                 └▶ echo path (delay, gain, decaying tail) ─┐
//! near-end speech (double talk from NEAR_START) ─────────────┼▶ microphone ─▶ processing ─▶ out
//! stationary room noise ─────────────────────────────────────┘
//! ```
//!
//! Three runs, each on its own scene, and a timing:
//!
//! 1. **Echo** (every stage on, as a call runs): echo return loss enhancement over the far-end
//!    only part after convergence, the time to converge, and how much of the near-end talker
//!    survives double talk (correlation of the output with the clean near end).
//! 2. **Noise** (noise suppression alone): a talker with stationary noise at 5 dB SNR; the SNR
//!    gain from speech-active and speech-free stretches of the output.
//! 3. **Gain** (gain control alone): a talker at −40 dBFS; the output's active speech level.
//! 4. **CPU**: microseconds per 10 ms frame of the whole chain, next to encoding the same
//!    audio with Opus (the bare cost of sending it at all).
//!
//! The speech is two espeak-ng clips committed under `assets/speech/` (or WAV files given on
//! the command line), resampled to 48 kHz with rubato.

use std::time::Instant;

use serde::Serialize;

use crate::audio::SAMPLE_RATE;
use crate::voice::{PROCESSING_FRAME, VoiceError, VoiceProcessing, VoiceProcessor};

/// The far-end talker (its voice comes back as echo).
const FAR_CLIP: &[u8] = include_bytes!("../assets/speech/far.wav");
/// The near-end talker.
const NEAR_CLIP: &[u8] = include_bytes!("../assets/speech/near.wav");

/// When the near-end talker starts (double talk from here), in seconds.
const NEAR_START_S: f32 = 7.0;
/// ERLE is measured over the far-end-only part from here on, in seconds.
const ERLE_FROM_S: f32 = 3.0;
/// ERLE a 500 ms window must keep, from the convergence time on.
const CONVERGED_ERLE_DB: f64 = 20.0;
const SAMPLES_PER_MS: usize = SAMPLE_RATE as usize / 1000;

/// How the microphone hears the speakers.
#[derive(Clone, Debug, Serialize)]
pub struct EchoPath {
    /// The direct path's delay, ms.
    pub delay_ms: u32,
    /// The direct path's gain.
    pub gain: f32,
    /// Reflections after it: (ms after the direct path, gain).
    pub tail: Vec<(u32, f32)>,
}

impl Default for EchoPath {
    /// 100 ms, gain 0.5, and reflections decaying over 16 ms.
    fn default() -> Self {
        Self {
            delay_ms: 100,
            gain: 0.5,
            tail: vec![(2, 0.25), (5, 0.12), (9, 0.06), (16, 0.03)],
        }
    }
}

/// What the check runs on.
#[derive(Clone, Debug, Default)]
pub struct CheckScene {
    /// The far-end talker (WAV file; `None`: the committed clip).
    pub far_wav: Option<std::path::PathBuf>,
    /// The near-end talker (WAV file; `None`: the committed clip).
    pub near_wav: Option<std::path::PathBuf>,
    /// The echo path.
    pub echo: EchoPath,
}

/// The figures, with the scene's levels they were measured at.
#[derive(Clone, Debug, Serialize)]
pub struct CheckFigures {
    /// Echo return loss enhancement over the far-end-only part after convergence, dB: a lower
    /// bound, as what is left includes the room noise after suppression.
    pub erle_db: f64,
    /// From when the echo first reaches the microphone to the end of the first 500 ms window
    /// after which every window with echo in the far-end-only part keeps ≥ 20 dB of ERLE, ms;
    /// `None`: it never did.
    pub convergence_ms: Option<u32>,
    /// Correlation of the output with the clean near-end talker during double talk.
    pub double_talk_correlation: f64,
    /// The same correlation for the unprocessed microphone (near end plus echo): what the
    /// processing starts from.
    pub double_talk_correlation_unprocessed: f64,
    /// How loud the near end comes through double talk, against the same processing with no
    /// echo in the room and echo cancellation off, dB (the correlation alone cannot tell a
    /// near end turned down: it ignores level).
    pub double_talk_level_db: f64,
    /// How late the output is against the microphone (the lag that lines it up with the
    /// near end), ms.
    pub processing_delay_ms: f64,
    /// SNR after noise suppression minus SNR before, dB.
    pub ns_snr_gain_db: f64,
    /// The speech SNR going into noise suppression, dB.
    pub ns_input_snr_db: f64,
    /// A talker at `agc_input_dbfs` after gain control (active speech level), dBFS.
    pub agc_output_dbfs: f64,
    /// The quiet talker's level going into gain control, dBFS.
    pub agc_input_dbfs: f64,
    /// The whole chain (far end and microphone), µs per 10 ms of mono 48 kHz.
    pub cpu_us_per_10ms: f64,
    /// Encoding the same audio with Opus (32 kbit/s voice), µs per 10 ms: the bare cost.
    pub opus_encode_us_per_10ms: f64,
    /// The echo path of the scene.
    pub echo_path: EchoPath,
}

/// Figure targets of the voice issue (dB, ms, dBFS).
pub mod targets {
    /// ERLE at least this, dB.
    pub const ERLE_DB: f64 = 25.0;
    /// Converged within this, ms.
    pub const CONVERGENCE_MS: u32 = 2_000;
    /// Near end kept at least this well during double talk.
    pub const DOUBLE_TALK_CORRELATION: f64 = 0.9;
    /// ...and at least this loud, against no echo at all, dB (ours: the correlation target
    /// would otherwise pass a canceller that turns the near end down while the far end plays).
    pub const DOUBLE_TALK_LEVEL_DB: f64 = -3.0;
    /// Noise suppression gains at least this, dB.
    pub const NS_SNR_GAIN_DB: f64 = 10.0;
    /// Gain control brings a −40 dBFS talker to this ± [`AGC_TOLERANCE_DB`].
    pub const AGC_OUTPUT_DBFS: f64 = -20.0;
    /// See [`AGC_OUTPUT_DBFS`].
    pub const AGC_TOLERANCE_DB: f64 = 5.0;
}

impl CheckFigures {
    /// The figures that miss their target, in words (empty: all met).
    pub fn misses(&self) -> Vec<String> {
        let mut misses = Vec::new();
        if self.erle_db < targets::ERLE_DB {
            misses.push(format!(
                "ERLE {:.1} dB < {} dB",
                self.erle_db,
                targets::ERLE_DB
            ));
        }
        match self.convergence_ms {
            Some(ms) if ms <= targets::CONVERGENCE_MS => {}
            Some(ms) => misses.push(format!(
                "convergence {ms} ms > {} ms",
                targets::CONVERGENCE_MS
            )),
            None => misses.push("the echo canceller never converged".to_owned()),
        }
        if self.double_talk_correlation < targets::DOUBLE_TALK_CORRELATION {
            misses.push(format!(
                "double-talk correlation {:.3} < {}",
                self.double_talk_correlation,
                targets::DOUBLE_TALK_CORRELATION
            ));
        }
        if self.double_talk_level_db < targets::DOUBLE_TALK_LEVEL_DB {
            misses.push(format!(
                "double-talk level {:.1} dB < {} dB",
                self.double_talk_level_db,
                targets::DOUBLE_TALK_LEVEL_DB
            ));
        }
        if self.ns_snr_gain_db < targets::NS_SNR_GAIN_DB {
            misses.push(format!(
                "noise suppression {:.1} dB < {} dB",
                self.ns_snr_gain_db,
                targets::NS_SNR_GAIN_DB
            ));
        }
        if (self.agc_output_dbfs - targets::AGC_OUTPUT_DBFS).abs() > targets::AGC_TOLERANCE_DB {
            misses.push(format!(
                "gain control output {:.1} dBFS, not {} ± {} dBFS",
                self.agc_output_dbfs,
                targets::AGC_OUTPUT_DBFS,
                targets::AGC_TOLERANCE_DB
            ));
        }
        misses
    }
}

/// Runs the check.
pub fn run(scene: &CheckScene) -> Result<CheckFigures, VoiceError> {
    let far = match &scene.far_wav {
        Some(path) => read_wav_file(path)?,
        None => decode_wav(FAR_CLIP)?,
    };
    let near = match &scene.near_wav {
        Some(path) => read_wav_file(path)?,
        None => decode_wav(NEAR_CLIP)?,
    };
    let echo = echo_run(&far, &near, &scene.echo, VoiceProcessing::default())?;
    let (ns_snr_gain_db, ns_input_snr_db) = noise_run(&far)?;
    let (agc_output_dbfs, agc_input_dbfs) = gain_run(&far)?;
    Ok(CheckFigures {
        erle_db: echo.erle_db,
        convergence_ms: echo.convergence_ms,
        double_talk_correlation: echo.double_talk_correlation,
        processing_delay_ms: echo.processing_delay_ms,
        double_talk_correlation_unprocessed: echo.unprocessed_correlation,
        double_talk_level_db: echo.double_talk_level_db,
        ns_snr_gain_db,
        ns_input_snr_db,
        agc_output_dbfs,
        agc_input_dbfs,
        cpu_us_per_10ms: echo.cpu_us_per_10ms,
        opus_encode_us_per_10ms: opus_cost_per_10ms(&echo.microphone)?,
        echo_path: scene.echo.clone(),
    })
}

struct EchoFigures {
    double_talk_level_db: f64,
    erle_db: f64,
    convergence_ms: Option<u32>,
    double_talk_correlation: f64,
    processing_delay_ms: f64,
    unprocessed_correlation: f64,
    cpu_us_per_10ms: f64,
    microphone: Vec<f32>,
}

/// Far end at −20 dBFS through `path`, the near end at −26 dBFS from [`NEAR_START_S`], room
/// noise at −60 dBFS; every stage on.
fn echo_run(
    far: &[f32],
    near: &[f32],
    path: &EchoPath,
    stages: VoiceProcessing,
) -> Result<EchoFigures, VoiceError> {
    if far.len() < seconds(NEAR_START_S) {
        return Err(VoiceError::new(format!(
            "the far end talks {:.1} s: it needs at least {NEAR_START_S} s",
            far.len() as f64 / f64::from(SAMPLE_RATE)
        )));
    }
    let far = at_level(far, -20.0);
    let near_start = seconds(NEAR_START_S);
    let length = far.len().max(near_start + near.len());
    let mut played = far.clone();
    played.resize(length, 0.0);
    let echo = through(&played, path);
    let mut clean_near = vec![0.0; length];
    for (slot, sample) in clean_near[near_start..]
        .iter_mut()
        .zip(at_level(near, -26.0))
    {
        *slot = sample;
    }
    let noise = noise(length, -60.0, 1);
    let microphone: Vec<f32> = (0..length)
        .map(|n| echo[n] + clean_near[n] + noise[n])
        .collect();

    let started = Instant::now();
    let out = process(stages, &played, &microphone)?;
    let frames = length / PROCESSING_FRAME;
    let cpu_us_per_10ms = started.elapsed().as_secs_f64() * 1e6 / frames as f64;

    // ERLE per 100 ms block of the far-end-only part, where there is echo to remove.
    let block = seconds(0.1);
    let echo_blocks: Vec<(f64, f64)> = (0..near_start / block)
        .map(|b| {
            let range = b * block..(b + 1) * block;
            (power(&echo[range.clone()]), power(&out[range]))
        })
        .collect();
    let audible = |(echo_power, _): &(f64, f64)| *echo_power > db_to_power(-50.0);
    let erle = |blocks: &[(f64, f64)]| {
        let (echo_sum, out_sum) = blocks
            .iter()
            .filter(|b| audible(b))
            .fold((0.0, 0.0), |(e, o), (be, bo)| (e + be, o + bo));
        10.0 * (echo_sum / out_sum.max(1e-20)).log10()
    };
    let erle_db = erle(&echo_blocks[seconds(ERLE_FROM_S) / block..]);
    // Converged: every 500 ms window with echo in it from here on keeps the ERLE.
    let windows: Vec<&[(f64, f64)]> = echo_blocks.windows(5).collect();
    let first_converged = (0..windows.len())
        .find(|&start| {
            windows[start..]
                .iter()
                .filter(|w| w.iter().any(audible))
                .all(|w| erle(w) >= CONVERGED_ERLE_DB)
        })
        .filter(|&start| start < windows.len());
    let far_starts = far.iter().position(|s| s.abs() > 1e-3).unwrap_or(0) + path_delay(path);
    let convergence_ms = first_converged.map(|start| {
        ((start * block + 5 * block).saturating_sub(far_starts) / SAMPLES_PER_MS) as u32
    });

    // Double talk: where the near end talks and the far end's echo is at the microphone,
    // the output against the clean near end.
    let active_near = active_frames(&clean_near);
    let echo_present = active_frames(&echo);
    let both: Vec<usize> = (0..active_near.len())
        .filter(|&f| active_near[f] && echo_present[f])
        .collect();
    if both.is_empty() {
        return Err(VoiceError::new(format!(
            "the scene has no double talk: the far end must still talk {NEAR_START_S} s in"
        )));
    }
    let (double_talk_correlation, delay) = best_correlation(&out, &clean_near, &both);
    let (unprocessed_correlation, _) = best_correlation(&microphone, &clean_near, &both);
    // How loud the near end comes through double talk: against the same processing with no
    // echo in the room and echo cancellation off (what noise suppression and gain control
    // alone make of the near end).
    let echo_free: Vec<f32> = (0..length).map(|n| clean_near[n] + noise[n]).collect();
    let reference = process(
        VoiceProcessing {
            echo_cancellation: false,
            ..stages
        },
        &played,
        &echo_free,
    )?;
    let double_talk_level_db =
        power_db(mean_frame_power(&out, &both)) - power_db(mean_frame_power(&reference, &both));
    Ok(EchoFigures {
        double_talk_level_db,
        erle_db,
        convergence_ms,
        double_talk_correlation,
        processing_delay_ms: delay as f64 / SAMPLES_PER_MS as f64,
        unprocessed_correlation,
        cpu_us_per_10ms,
        microphone,
    })
}

/// A talker at −26 dBFS with stationary noise 5 dB under it; noise suppression alone.
/// Returns the SNR gain and the input SNR.
fn noise_run(talker: &[f32]) -> Result<(f64, f64), VoiceError> {
    let speech = at_level(talker, -26.0);
    let noise = noise(speech.len(), -31.0, 2);
    let noisy: Vec<f32> = speech.iter().zip(&noise).map(|(s, n)| s + n).collect();
    let stages = VoiceProcessing {
        noise_suppression: true,
        ..VoiceProcessing::OFF
    };
    let out = process(stages, &vec![0.0; noisy.len()], &noisy)?;
    let active = active_frames(&speech);
    let skip = seconds(1.0) / PROCESSING_FRAME; // the suppressor learns the noise
    let input_snr = snr_db(&noisy, &active, skip);
    Ok((snr_db(&out, &active, skip) - input_snr, input_snr))
}

/// A talker at −40 dBFS; gain control alone. Returns the output's and the input's active
/// speech level.
fn gain_run(talker: &[f32]) -> Result<(f64, f64), VoiceError> {
    let quiet = at_level(talker, -40.0);
    let stages = VoiceProcessing {
        gain_control: true,
        ..VoiceProcessing::OFF
    };
    let out = process(stages, &vec![0.0; quiet.len()], &quiet)?;
    let active = active_frames(&quiet);
    let skip = seconds(3.0) / PROCESSING_FRAME; // the gain settles
    let level = |signal: &[f32]| {
        let frames: Vec<usize> = (skip..active.len()).filter(|&f| active[f]).collect();
        power_db(mean_frame_power(signal, &frames))
    };
    Ok((level(&out), level(&quiet)))
}

/// Runs `microphone` through a processor with `stages`, feeding `played` as the far end frame
/// by frame just before the microphone frame of the same time.
fn process(
    stages: VoiceProcessing,
    played: &[f32],
    microphone: &[f32],
) -> Result<Vec<f32>, VoiceError> {
    let mut processor = VoiceProcessor::new(stages)?;
    let mut out = Vec::with_capacity(microphone.len());
    for (far, mic) in played
        .chunks_exact(PROCESSING_FRAME)
        .zip(microphone.chunks_exact(PROCESSING_FRAME))
    {
        processor.far_end(far)?;
        let mut frame = mic.to_vec();
        processor.process_frame(&mut frame)?;
        out.extend_from_slice(&frame);
    }
    Ok(out)
}

/// What Opus (mono voice, 32 kbit/s) costs per 10 ms on `audio`.
fn opus_cost_per_10ms(audio: &[f32]) -> Result<f64, VoiceError> {
    let mut encoder =
        crate::audio::OpusEncoder::new(32_000).map_err(|e| VoiceError::new(e.to_string()))?;
    let samples: Vec<i16> = audio
        .iter()
        .map(|s| crate::audio::sample_to_i16(*s))
        .collect();
    let frames = samples.chunks_exact(crate::audio::FRAME_SAMPLES);
    let count = frames.len();
    let started = Instant::now();
    for frame in frames {
        encoder
            .encode(frame)
            .map_err(|e| VoiceError::new(e.to_string()))?;
    }
    Ok(started.elapsed().as_secs_f64() * 1e6 / (2 * count.max(1)) as f64)
}

fn path_delay(path: &EchoPath) -> usize {
    path.delay_ms as usize * SAMPLES_PER_MS
}

/// `signal` as heard through `path`.
fn through(signal: &[f32], path: &EchoPath) -> Vec<f32> {
    let delay = path_delay(path);
    let taps: Vec<(usize, f32)> = std::iter::once((delay, path.gain))
        .chain(
            path.tail
                .iter()
                .map(|(ms, gain)| (delay + *ms as usize * SAMPLES_PER_MS, *gain)),
        )
        .collect();
    (0..signal.len())
        .map(|n| {
            taps.iter()
                .filter(|(lag, _)| n >= *lag)
                .map(|(lag, gain)| gain * signal[n - lag])
                .sum()
        })
        .collect()
}

fn seconds(s: f32) -> usize {
    (s * SAMPLE_RATE as f32) as usize
}

fn power(samples: &[f32]) -> f64 {
    samples.iter().map(|s| f64::from(*s).powi(2)).sum::<f64>() / samples.len().max(1) as f64
}

fn db_to_power(db: f64) -> f64 {
    10f64.powf(db / 10.0)
}

fn power_db(power: f64) -> f64 {
    10.0 * power.max(1e-20).log10()
}

/// The mean power of the 10 ms `frames` of `signal`.
fn mean_frame_power(signal: &[f32], frames: &[usize]) -> f64 {
    frames
        .iter()
        .map(|&f| power(&signal[f * PROCESSING_FRAME..(f + 1) * PROCESSING_FRAME]))
        .sum::<f64>()
        / frames.len().max(1) as f64
}

/// Which 10 ms frames of a clean talker hold speech: within 30 dB of its loudest frame.
fn active_frames(clean: &[f32]) -> Vec<bool> {
    let powers: Vec<f64> = clean.chunks_exact(PROCESSING_FRAME).map(power).collect();
    let loudest = powers.iter().copied().fold(0.0, f64::max);
    powers
        .iter()
        .map(|p| loudest > 0.0 && *p > loudest * db_to_power(-30.0))
        .collect()
}

/// `clean` scaled so its active speech level is `dbfs`.
fn at_level(clean: &[f32], dbfs: f64) -> Vec<f32> {
    let active = active_frames(clean);
    let frames: Vec<usize> = (0..active.len()).filter(|&f| active[f]).collect();
    let level = mean_frame_power(clean, &frames);
    let gain = (db_to_power(dbfs) / level.max(1e-20)).sqrt() as f32;
    clean.iter().map(|s| s * gain).collect()
}

/// Speech SNR of `signal` from the frames after `skip`: speech-active frames hold speech and
/// noise, the others noise alone.
fn snr_db(signal: &[f32], active: &[bool], skip: usize) -> f64 {
    let (speech, quiet): (Vec<usize>, Vec<usize>) = (skip..active.len()).partition(|&f| active[f]);
    let noise = mean_frame_power(signal, &quiet);
    let speech_and_noise = mean_frame_power(signal, &speech);
    power_db((speech_and_noise - noise).max(1e-20) / noise.max(1e-20))
}

/// Correlation of `out`, `lag` samples late, with `reference` over the 10 ms `frames`.
fn correlation_at(out: &[f32], reference: &[f32], frames: &[usize], lag: isize) -> f64 {
    let (mut cross, mut out_power, mut ref_power) = (0.0f64, 0.0f64, 0.0f64);
    for &frame in frames {
        let start = frame * PROCESSING_FRAME;
        for (n, r) in (start..).zip(&reference[start..start + PROCESSING_FRAME]) {
            let m = n as isize + lag;
            if m < 0 || m as usize >= out.len() {
                continue;
            }
            let (o, r) = (f64::from(out[m as usize]), f64::from(*r));
            cross += o * r;
            out_power += o * o;
            ref_power += r * r;
        }
    }
    cross / (out_power * ref_power).sqrt().max(1e-20)
}

/// The correlation of `out` with `reference` over the 10 ms `frames` at the processing's
/// delay, and that delay in samples: the lag (up to 50 ms) that best lines up the first 50
/// of the frames.
fn best_correlation(out: &[f32], reference: &[f32], frames: &[usize]) -> (f64, isize) {
    let probe = &frames[..frames.len().min(50)];
    let max_lag = 5 * PROCESSING_FRAME as isize;
    let lag = (-max_lag..=max_lag)
        .map(|lag| (lag, correlation_at(out, reference, probe, lag)))
        .fold(
            (0, f64::MIN),
            |best, next| if next.1 > best.1 { next } else { best },
        )
        .0;
    (correlation_at(out, reference, frames, lag), lag)
}

/// Stationary white noise at `dbfs` (RMS), the same every run for a `seed`.
fn noise(length: usize, dbfs: f64, seed: u64) -> Vec<f32> {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64 ^ seed;
    let mut uniform = move || {
        // xorshift64*
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    };
    let rms = db_to_power(dbfs).sqrt();
    (0..length)
        .map(|_| {
            // Box–Muller: a Gaussian sample.
            let (u1, u2) = (uniform().max(1e-12), uniform());
            ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos() * rms) as f32
        })
        .collect()
}

fn read_wav_file(path: &std::path::Path) -> Result<Vec<f32>, VoiceError> {
    let bytes = std::fs::read(path)
        .map_err(|e| VoiceError::new(format!("cannot read {}: {e}", path.display())))?;
    decode_wav(&bytes)
}

/// A WAV file (16-bit or float, any rate, any channels) as mono 48 kHz −1..1: the first
/// channel, resampled with rubato's FFT resampler.
pub fn decode_wav(bytes: &[u8]) -> Result<Vec<f32>, VoiceError> {
    let reader = hound::WavReader::new(std::io::Cursor::new(bytes))
        .map_err(|e| VoiceError::new(format!("not a WAV file: {e}")))?;
    let spec = reader.spec();
    let channels = usize::from(spec.channels.max(1));
    let interleaved: Vec<f32> = match spec.sample_format {
        hound::SampleFormat::Float => reader
            .into_samples::<f32>()
            .collect::<Result<_, _>>()
            .map_err(|e| VoiceError::new(format!("WAV: {e}")))?,
        hound::SampleFormat::Int => {
            let scale = (1u64 << (spec.bits_per_sample.max(1) - 1)) as f32;
            reader
                .into_samples::<i32>()
                .map(|s| s.map(|s| s as f32 / scale))
                .collect::<Result<_, _>>()
                .map_err(|e| VoiceError::new(format!("WAV: {e}")))?
        }
    };
    let mono: Vec<f32> = interleaved.iter().step_by(channels).copied().collect();
    crate::devices::resample_to_48k(&mono, spec.sample_rate)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On the committed scene the processing meets every target of the voice issue: ERLE,
    /// convergence, the near end kept in double talk, noise suppression and gain control.
    /// The figures come from the processing: the same scene with every stage off has no ERLE
    /// to speak of.
    #[test]
    fn the_processing_meets_its_targets() {
        let figures = run(&CheckScene::default()).expect("check");
        eprintln!("{figures:#?}");
        assert!(figures.misses().is_empty(), "{figures:#?}");
        let far = at_level(&decode_wav(FAR_CLIP).expect("clip"), -20.0);
        let echo = through(&far, &EchoPath::default());
        let out = process(VoiceProcessing::OFF, &far, &echo).expect("pass-through");
        let range = seconds(ERLE_FROM_S)..seconds(NEAR_START_S);
        let erle_off = 10.0 * (power(&echo[range.clone()]) / power(&out[range])).log10();
        assert!(
            erle_off.abs() < 1.0,
            "no processing, no ERLE: {erle_off:.1} dB"
        );
    }

    /// Echo paths from 20 to 300 ms, weak and strong, are all cancelled by ≥ 25 dB within
    /// 2 s, and each keeps more of the near end in double talk than the raw microphone does,
    /// at least 0.85 (the strongest echo, 60 ms at 0.8, is 4 dB louder than the near end): the
    /// filter spans up to 130 ms itself, and the bulk delay holds the far end back for longer
    /// ones.
    #[test]
    fn echo_paths_from_20_to_300_ms_are_cancelled() {
        let far = decode_wav(FAR_CLIP).expect("clip");
        let near = decode_wav(NEAR_CLIP).expect("clip");
        for (delay_ms, gain) in [(20, 0.5), (60, 0.8), (140, 0.5), (200, 0.3), (300, 0.5)] {
            let path = EchoPath {
                delay_ms,
                gain,
                ..EchoPath::default()
            };
            let figures =
                echo_run(&far, &near, &path, VoiceProcessing::default()).expect("echo run");
            assert!(
                figures.erle_db >= targets::ERLE_DB
                    && figures
                        .convergence_ms
                        .is_some_and(|ms| ms <= targets::CONVERGENCE_MS),
                "{delay_ms} ms at {gain}: {:.1} dB, converged in {:?} ms",
                figures.erle_db,
                figures.convergence_ms
            );
            assert!(
                figures.double_talk_correlation >= 0.85
                    && figures.double_talk_correlation > figures.unprocessed_correlation,
                "{delay_ms} ms at {gain}: double talk {:.3}, raw {:.3}",
                figures.double_talk_correlation,
                figures.unprocessed_correlation
            );
        }
    }

    /// A far end too short for the scene is a clear error, not a figure from nothing.
    #[test]
    fn a_short_far_end_is_an_error() {
        let far = decode_wav(FAR_CLIP).expect("clip");
        let near = decode_wav(NEAR_CLIP).expect("clip");
        let short = &far[..seconds(4.0)];
        let err = echo_run(
            short,
            &near,
            &EchoPath::default(),
            VoiceProcessing::default(),
        )
        .err()
        .expect("an error");
        assert!(err.to_string().contains("needs at least"), "{err}");
    }

    /// A WAV file at 22,050 Hz comes out at 48 kHz with its length kept (within a frame);
    /// something that is not a WAV file is a typed error.
    #[test]
    fn clips_are_read_and_resampled() {
        let far = decode_wav(FAR_CLIP).expect("clip");
        let seconds_long = far.len() as f64 / 48_000.0;
        assert!((12.8..13.1).contains(&seconds_long), "{seconds_long} s");
        assert!(decode_wav(b"RIFF but not really").is_err());
    }
}
