//! The ringtone: a short WAV clip looped on an output until stopped.
//!
//! - [`parse_wav`] reads 16-bit PCM WAV (mono or stereo; stereo is folded to mono) at
//!   48 kHz — anything else is a typed error, not a guess.
//! - [`Ringtone::start`] plays it: a feeder thread keeps the clip flowing into its own mixer
//!   (one voice, the same mixer as calls use), and the output pulls from that mixer every
//!   20 ms — a real device where one is selected and opens, else a paced null output (like
//!   the call's null sink), so the ringtone runs the same way with or without a sound card.
//!   Dropping the [`Ringtone`] stops both threads.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::audio::{FRAME_SAMPLES, SAMPLE_RATE};
use crate::mixer::{Mixer, SharedMixer, lock};

/// A WAV clip that cannot be played.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ringtone: {0}")]
pub struct RingtoneError(pub String);

/// Reads a 16-bit PCM WAV file at 48 kHz into mono samples.
pub fn parse_wav(bytes: &[u8]) -> Result<Vec<i16>, RingtoneError> {
    let bad = |why: &str| RingtoneError(why.to_owned());
    if bytes.len() < 12 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err(bad("not a RIFF/WAVE file"));
    }
    let mut at = 12;
    let mut format: Option<(u16, u16, u32, u16)> = None;
    while at + 8 <= bytes.len() {
        let id = &bytes[at..at + 4];
        let size = u32::from_le_bytes([bytes[at + 4], bytes[at + 5], bytes[at + 6], bytes[at + 7]])
            as usize;
        let body = (at + 8)
            .checked_add(size)
            .and_then(|end| bytes.get(at + 8..end))
            .ok_or_else(|| bad("a chunk runs past the end of the file"))?;
        match id {
            b"fmt " if size < 16 => return Err(bad("the format chunk is too short")),
            b"fmt " => {
                let u16_at = |i: usize| u16::from_le_bytes([body[i], body[i + 1]]);
                let rate = u32::from_le_bytes([body[4], body[5], body[6], body[7]]);
                format = Some((u16_at(0), u16_at(2), rate, u16_at(14)));
            }
            b"data" => {
                let (codec, channels, rate, bits) =
                    format.ok_or_else(|| bad("the data chunk comes before the format"))?;
                if codec != 1 || bits != 16 {
                    return Err(bad("only 16-bit PCM is supported"));
                }
                if rate != SAMPLE_RATE {
                    return Err(RingtoneError(format!(
                        "the clip is at {rate} Hz; it must be {SAMPLE_RATE} Hz"
                    )));
                }
                if !(1..=2).contains(&channels) {
                    return Err(bad("only mono or stereo clips are supported"));
                }
                let samples: Vec<i16> = body
                    .chunks_exact(2)
                    .map(|b| i16::from_le_bytes([b[0], b[1]]))
                    .collect();
                let mono = if channels == 2 {
                    samples
                        .chunks_exact(2)
                        .map(|p| ((i32::from(p[0]) + i32::from(p[1])) / 2) as i16)
                        .collect()
                } else {
                    samples
                };
                if mono.is_empty() {
                    return Err(bad("the clip is empty"));
                }
                return Ok(mono);
            }
            _ => {}
        }
        // Chunks are padded to an even size.
        at = at.saturating_add(8 + size + (size & 1));
    }
    Err(bad("no data chunk"))
}

/// A ringtone playing until dropped.
pub struct Ringtone {
    stop: Arc<AtomicBool>,
    mixer: SharedMixer,
    pushed: Arc<AtomicU64>,
    on_device: bool,
    /// The feeder and the device's thread, joined on drop (the speaker is free after).
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Ringtone {
    /// Loops `clip` (48 kHz mono) on output device `output` (`None`, a synthetic id or a
    /// device that does not open: a paced null output). An empty clip plays nothing.
    pub fn start(clip: Arc<[i16]>, output: Option<&str>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let mixer: SharedMixer = Arc::new(std::sync::Mutex::new(Mixer::default()));
        let pushed = Arc::new(AtomicU64::new(0));
        let mut threads = Vec::new();
        if clip.is_empty() {
            // Nothing to play.
            stop.store(true, Ordering::Relaxed);
        }
        let device = output
            .filter(|id| !crate::devices::is_synthetic(id) && !clip.is_empty())
            .and_then(|device| {
                crate::devices::start_output(device, mixer.clone(), stop.clone()).ok()
            });
        let on_device = device.is_some();
        threads.extend(device);
        let clip_is_empty = clip.is_empty();
        let feeder = {
            let (stop, mixer, pushed) = (stop.clone(), mixer.clone(), pushed.clone());
            move || {
                let mut position = 0usize;
                let mut frame = vec![0i16; FRAME_SAMPLES];
                let period = Duration::from_millis(20);
                let mut next = Instant::now();
                // Null output: pull the mix ourselves at the device's pace.
                let mut pulled = vec![0.0f32; FRAME_SAMPLES * 2];
                // Two frames ahead of the output: the mixer's jitter buffer starts a voice
                // once 40 ms are queued.
                let mut lead = 2;
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..=lead {
                        for sample in frame.iter_mut() {
                            *sample = clip[position];
                            position = (position + 1) % clip.len();
                        }
                        lock(&mixer).push("ringtone", &frame);
                        pushed.fetch_add(1, Ordering::Relaxed);
                    }
                    lead = 0;
                    if !on_device {
                        lock(&mixer).mix(&mut pulled, FRAME_SAMPLES);
                    }
                    next += period;
                    std::thread::sleep(next.saturating_duration_since(Instant::now()));
                }
            }
        };
        if !clip_is_empty {
            match std::thread::Builder::new()
                .name("huddle-ringtone".into())
                .spawn(feeder)
            {
                Ok(thread) => threads.push(thread),
                Err(_) => stop.store(true, Ordering::Relaxed),
            }
        }
        Self {
            stop,
            mixer,
            pushed,
            on_device,
            threads,
        }
    }

    /// 20 ms frames of the clip played so far (mixed by the output).
    pub fn frames_played(&self) -> u64 {
        lock(&self.mixer).stats().frames
    }

    /// 20 ms frames of the clip fed so far.
    pub fn frames_fed(&self) -> u64 {
        self.pushed.load(Ordering::Relaxed)
    }

    /// Whether it plays on a real device (else on the null output).
    pub fn on_device(&self) -> bool {
        self.on_device
    }

    /// The level of the last mixed frame (RMS, 0..=1), left and right.
    pub fn level(&self) -> (f32, f32) {
        lock(&self.mixer).stats().rms
    }
}

impl Drop for Ringtone {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn wav(channels: u16, rate: u32, bits: u16, samples: &[i16]) -> Vec<u8> {
        let data: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
        let mut out = Vec::new();
        out.extend_from_slice(b"RIFF");
        out.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
        out.extend_from_slice(b"WAVEfmt ");
        out.extend_from_slice(&16u32.to_le_bytes());
        out.extend_from_slice(&1u16.to_le_bytes());
        out.extend_from_slice(&channels.to_le_bytes());
        out.extend_from_slice(&rate.to_le_bytes());
        out.extend_from_slice(&(rate * u32::from(channels) * 2).to_le_bytes());
        out.extend_from_slice(&(channels * 2).to_le_bytes());
        out.extend_from_slice(&bits.to_le_bytes());
        out.extend_from_slice(b"data");
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(&data);
        out
    }

    /// Mono clips read back as written; stereo folds to mono; other rates, sample sizes,
    /// truncated files, short format chunks, chunk sizes past the end and non-WAV bytes are
    /// typed errors; an empty clip plays nothing.
    #[test]
    fn wav_clips_parse_or_are_refused() {
        assert_eq!(
            parse_wav(&wav(1, 48_000, 16, &[1, -2, 300])).expect("mono"),
            vec![1, -2, 300]
        );
        assert_eq!(
            parse_wav(&wav(2, 48_000, 16, &[100, 200, -50, -150])).expect("stereo"),
            vec![150, -100]
        );
        assert!(
            parse_wav(&wav(1, 44_100, 16, &[1]))
                .unwrap_err()
                .0
                .contains("44100")
        );
        assert!(parse_wav(&wav(1, 48_000, 8, &[1])).is_err());
        let whole = wav(1, 48_000, 16, &[1, 2, 3, 4]);
        assert!(parse_wav(&whole[..whole.len() - 3]).is_err());
        assert!(parse_wav(b"not a wav at all").is_err());
        assert!(parse_wav(&wav(1, 48_000, 16, &[])).is_err());
        let mut short_format = wav(1, 48_000, 16, &[1]);
        short_format[16] = 8; // the format chunk says it is 8 bytes long
        assert!(parse_wav(&short_format).is_err());
        let mut huge_chunk = wav(1, 48_000, 16, &[1]);
        huge_chunk[40..44].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse_wav(&huge_chunk).is_err(), "a chunk size past the end");
        let silent = Ringtone::start(Arc::from([]), None);
        assert_eq!(silent.frames_fed(), 0, "an empty clip plays nothing");
    }

    /// With no device the ringtone plays on the paced null output: frames are fed and mixed
    /// at about 50 a second with sound in them, and dropping it stops the feeding.
    #[test]
    fn ringtone_plays_on_the_null_output_until_dropped() {
        let clip: Arc<[i16]> = (0..9_600)
            .map(|i| ((i as f32 * 0.06).sin() * 8_000.0) as i16)
            .collect();
        let ringtone = Ringtone::start(clip, None);
        assert!(!ringtone.on_device());
        std::thread::sleep(Duration::from_millis(400));
        let played = ringtone.frames_played();
        assert!((10..=30).contains(&played), "{played} frames in 0.4 s");
        assert!(ringtone.level().0 > 0.01, "sound in the mix");
        let stop = ringtone.stop.clone();
        let pushed = ringtone.pushed.clone();
        drop(ringtone);
        assert!(stop.load(Ordering::Relaxed));
        std::thread::sleep(Duration::from_millis(60));
        let after = pushed.load(Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(pushed.load(Ordering::Relaxed), after, "stopped");
    }
}
