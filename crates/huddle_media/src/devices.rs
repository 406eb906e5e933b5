//! Real audio devices through cpal (ALSA on Linux) and cameras (see [`crate::camera`]), next
//! to the synthetic stand-ins.
//!
//! - [`enumerate`]: the synthetic devices plus every cpal input and output (ALSA's `null`
//!   device is left out: it is not paced and would spin a core).
//! - [`start_output`]: plays the mix on a device from its own thread (cpal streams are not
//!   `Send` everywhere); the audio callback pulls from the mixer with `try_lock`, so it never
//!   waits on another thread. A device that cannot run at 48 kHz stereo is fed through a
//!   [`PlaybackConverter`] (rubato).
//! - [`start_input`]: captures a microphone into 20 ms frames at 48 kHz: at its own rate and
//!   channel count, converted by a [`CaptureConverter`] (rubato resamples a 44.1 kHz device).
//!
//! Devices can be listed and still fail when opened (cpal always lists ALSA's `default`, even
//! without a sound card): starting then returns an error and the caller falls back to the
//! synthetic source or the null sink.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};

use crate::audio::{FRAME_SAMPLES, SAMPLE_RATE};
use crate::mixer::SharedMixer;
use crate::{DeviceInfo, DeviceKind, DeviceLists};

/// Prefix of synthetic device ids.
pub const SYNTHETIC_PREFIX: &str = "synthetic:";

/// Whether a device id names a synthetic device.
pub fn is_synthetic(id: &str) -> bool {
    id.starts_with(SYNTHETIC_PREFIX)
}

fn real(kind: DeviceKind, name: String) -> DeviceInfo {
    DeviceInfo {
        id: name.clone(),
        label: name,
        kind,
        synthetic: false,
    }
}

/// Real devices first (a user with a microphone expects it), then the synthetic ones.
pub fn enumerate() -> DeviceLists {
    let synthetic = DeviceLists::synthetic();
    let host = cpal::default_host();
    let names = |devices: Result<_, _>| -> Vec<String> {
        match devices {
            Ok(devices) => {
                let devices: Box<dyn Iterator<Item = cpal::Device>> = Box::new(devices);
                devices
                    .filter_map(|d| d.name().ok())
                    .filter(|name| name != "null")
                    .collect()
            }
            Err(_) => Vec::new(),
        }
    };
    let inputs = names(
        host.input_devices()
            .map(|d| Box::new(d) as Box<dyn Iterator<Item = cpal::Device>>),
    );
    let outputs = names(
        host.output_devices()
            .map(|d| Box::new(d) as Box<dyn Iterator<Item = cpal::Device>>),
    );
    DeviceLists {
        audio_inputs: inputs
            .into_iter()
            .map(|n| real(DeviceKind::AudioInput, n))
            .chain(synthetic.audio_inputs)
            .collect(),
        audio_outputs: outputs
            .into_iter()
            .map(|n| real(DeviceKind::AudioOutput, n))
            .chain(synthetic.audio_outputs)
            .collect(),
        // Cameras: V4L2 ones (nokhwa), then the synthetic ones.
        video_inputs: crate::camera::list_cameras()
            .into_iter()
            .chain(synthetic.video_inputs)
            .collect(),
    }
}

/// Builds a cpal stream for device `name` on its own thread (streams are not `Send`
/// everywhere), starts it and keeps it playing until `stop` is set; returns once it is
/// playing (with the thread, which ends within 20 ms of `stop` and releases the device), or
/// why it could not open or start.
fn run_stream(
    thread_name: String,
    name: String,
    stop: Arc<AtomicBool>,
    build: impl FnOnce() -> Result<Result<cpal::Stream, cpal::BuildStreamError>, String>
    + Send
    + 'static,
) -> Result<std::thread::JoinHandle<()>, String> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
    let started = move || -> Result<cpal::Stream, String> {
        let stream = build()?.map_err(|e| format!("cannot open `{name}`: {e}"))?;
        stream
            .play()
            .map_err(|e| format!("cannot start `{name}`: {e}"))?;
        Ok(stream)
    };
    let thread = std::thread::Builder::new()
        .name(thread_name)
        .spawn(move || match started() {
            Ok(stream) => {
                let _ = ready_tx.send(Ok(()));
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                drop(stream);
            }
            Err(err) => {
                let _ = ready_tx.send(Err(err));
            }
        })
        .map_err(|e| e.to_string())?;
    ready_rx
        .recv_timeout(Duration::from_secs(3))
        .map_err(|_| "the audio device did not start in time".to_owned())??;
    Ok(thread)
}

/// The device called `name` among `devices` (cpal's input or output list).
fn find_device<I: Iterator<Item = cpal::Device>>(
    devices: Result<I, cpal::DevicesError>,
    kind: &str,
    name: &str,
) -> Result<cpal::Device, String> {
    devices
        .map_err(|e| e.to_string())?
        .find(|d| d.name().is_ok_and(|n| n == name))
        .ok_or_else(|| format!("no {kind} device `{name}`"))
}

/// Plays the mix on the output device named `name` until `stop` is set. A device that runs
/// at 48 kHz stereo (its default, or offered) gets the mix straight into its buffer; any
/// other rate or channel count goes through a [`PlaybackConverter`].
pub fn start_output(
    name: &str,
    mixer: SharedMixer,
    stop: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<()>, String> {
    let name = name.to_owned();
    run_stream(format!("audio out {name}"), name.clone(), stop, move || {
        let host = cpal::default_host();
        let device = find_device(host.output_devices(), "output", &name)?;
        let native = device.supported_output_configs().is_ok_and(|mut configs| {
            configs.any(|c| {
                c.channels() == 2
                    && (c.min_sample_rate().0..=c.max_sample_rate().0).contains(&SAMPLE_RATE)
            })
        });
        if native {
            let config = cpal::StreamConfig {
                channels: 2,
                sample_rate: cpal::SampleRate(SAMPLE_RATE),
                buffer_size: cpal::BufferSize::Default,
            };
            return Ok(device.build_output_stream(
                &config,
                // Mixed straight into the device's buffer (interleaved stereo).
                move |data: &mut [f32], _| match mixer.try_lock() {
                    Ok(mut mixer) => mixer.mix(data, data.len() / 2),
                    Err(_) => data.fill(0.0),
                },
                |err| tracing::warn!("audio output: {err}"),
                None,
            ));
        }
        let default = device
            .default_output_config()
            .map_err(|e| format!("`{name}` has no output configuration: {e}"))?;
        let (rate, channels) = (default.sample_rate().0, default.channels().max(1));
        let mut converter = PlaybackConverter::new(rate, channels)?;
        let config = cpal::StreamConfig {
            channels,
            sample_rate: cpal::SampleRate(rate),
            buffer_size: cpal::BufferSize::Default,
        };
        Ok(device.build_output_stream(
            &config,
            move |data: &mut [f32], _| converter.fill(data, &mixer),
            |err| tracing::warn!("audio output: {err}"),
            None,
        ))
    })
}

/// Plays the 48 kHz stereo mix on a device at another rate or channel count: the mix is
/// pulled 10 ms at a time, resampled with rubato's FFT resampler, and spread over the
/// device's channels (mono: the mean of left and right; more than two: left, right, then
/// silence).
pub struct PlaybackConverter {
    device_channels: usize,
    resampler: Option<rubato::Fft<f32>>,
    mixed: Vec<f32>,
    /// Device-rate samples, interleaved in the device's channels, waiting to be played.
    ready: std::collections::VecDeque<f32>,
}

impl PlaybackConverter {
    /// A converter for a device at `rate` Hz with `channels` channels.
    pub fn new(rate: u32, channels: u16) -> Result<Self, String> {
        let resampler = if rate == SAMPLE_RATE {
            None
        } else {
            Some(fft_resampler(SAMPLE_RATE, rate, MIX_CHUNK, 2)?)
        };
        Ok(Self {
            device_channels: usize::from(channels.max(1)),
            resampler,
            mixed: vec![0.0; MIX_CHUNK * 2],
            ready: std::collections::VecDeque::new(),
        })
    }

    /// Fills a device buffer (interleaved in the device's channels) from `mixer`; a mixer
    /// busy elsewhere plays silence rather than wait.
    pub fn fill(&mut self, data: &mut [f32], mixer: &SharedMixer) {
        while self.ready.len() < data.len() {
            // As many frames as the resampler takes next (10 ms, rounded to its ratio).
            let frames = self.resampler.as_ref().map_or(MIX_CHUNK, |r| {
                use rubato::Resampler;
                r.input_frames_next()
            });
            self.mixed.resize(frames * 2, 0.0);
            match mixer.try_lock() {
                Ok(mut mixer) => mixer.mix(&mut self.mixed, frames),
                Err(_) => self.mixed.fill(0.0),
            }
            self.convert_chunk();
        }
        let wanted = data.len();
        for (slot, sample) in data.iter_mut().zip(self.ready.drain(..wanted)) {
            *slot = sample;
        }
    }

    /// Resamples the mixed chunk and spreads it over the device's channels.
    fn convert_chunk(&mut self) {
        let stereo: Vec<f32> = match &mut self.resampler {
            None => self.mixed.clone(),
            Some(resampler) => {
                use rubato::Resampler;
                let frames = self.mixed.len() / 2;
                let input = rubato::audioadapter_buffers::direct::InterleavedSlice::new(
                    &self.mixed,
                    2,
                    frames,
                );
                match input.map(|input| resampler.process(&input, None)) {
                    Ok(Ok(output)) => output.take_data(),
                    _ => vec![0.0; resampler.output_frames_next() * 2],
                }
            }
        };
        for pair in stereo.chunks_exact(2) {
            match self.device_channels {
                1 => self.ready.push_back(0.5 * (pair[0] + pair[1])),
                channels => {
                    self.ready.extend(pair);
                    self.ready.extend(std::iter::repeat_n(0.0, channels - 2));
                }
            }
        }
    }
}

/// Frames of mix pulled at a time for a [`PlaybackConverter`] (10 ms at 48 kHz).
const MIX_CHUNK: usize = 480;

/// Captures the input device named `name` into 20 ms frames at 48 kHz sent on `frames`
/// (mono, or interleaved stereo with `stereo`), until `stop` is set. The device runs at its
/// own default rate and channel count; a [`CaptureConverter`] does the rest.
pub fn start_input(
    name: &str,
    frames: crossbeam_channel::Sender<Vec<i16>>,
    stop: Arc<AtomicBool>,
    stereo: bool,
) -> Result<std::thread::JoinHandle<()>, String> {
    let name = name.to_owned();
    run_stream(format!("audio in {name}"), name.clone(), stop, move || {
        let host = cpal::default_host();
        let device = find_device(host.input_devices(), "input", &name)?;
        let default = device
            .default_input_config()
            .map_err(|e| format!("`{name}` has no input configuration: {e}"))?;
        let channels = default.channels().max(1);
        let rate = default.sample_rate().0;
        let config = cpal::StreamConfig {
            channels,
            sample_rate: cpal::SampleRate(rate),
            buffer_size: cpal::BufferSize::Default,
        };
        let mut converter = CaptureConverter::new(rate, channels, stereo)?;
        Ok(device.build_input_stream(
            &config,
            move |data: &[f32], _| {
                converter.push(data, |frame| {
                    let _ = frames.try_send(frame);
                });
            },
            |err| tracing::warn!("audio input: {err}"),
            None,
        ))
    })
}

/// Turns a capture device's samples (interleaved f32 at its own rate and channel count) into
/// 20 ms frames of 48 kHz 16-bit audio: mono sends channel 0; stereo sends channels 0 and 1
/// (a mono device on both). Another rate than 48 kHz goes through rubato's FFT resampler,
/// 10 ms of input at a time.
pub struct CaptureConverter {
    device_channels: usize,
    picked: Vec<usize>,
    resampler: Option<rubato::Fft<f32>>,
    /// Input per picked channel waiting for the resampler's next chunk.
    waiting: Vec<Vec<f32>>,
    /// 48 kHz output, interleaved, waiting to fill a frame.
    pending: Vec<i16>,
}

impl CaptureConverter {
    /// A converter for a device at `rate` Hz with `channels` channels.
    pub fn new(rate: u32, channels: u16, stereo: bool) -> Result<Self, String> {
        let device_channels = usize::from(channels.max(1));
        let picked: Vec<usize> = match (stereo, device_channels) {
            (false, _) => vec![0],
            (true, 1) => vec![0, 0],
            (true, _) => vec![0, 1],
        };
        let resampler = if rate == SAMPLE_RATE {
            None
        } else {
            // 10 ms of input at a time.
            let chunk = (rate as usize / 100).max(1);
            Some(fft_resampler(rate, SAMPLE_RATE, chunk, picked.len())?)
        };
        Ok(Self {
            device_channels,
            waiting: vec![Vec::new(); picked.len()],
            pending: Vec::with_capacity(FRAME_SAMPLES * picked.len() * 2),
            picked,
            resampler,
        })
    }

    /// Takes one buffer from the device; calls `frame` with every 20 ms frame completed.
    pub fn push(&mut self, data: &[f32], mut frame: impl FnMut(Vec<i16>)) {
        let to_i16 = crate::audio::sample_to_i16;
        match &mut self.resampler {
            None => {
                for device_frame in data.chunks_exact(self.device_channels) {
                    for &channel in &self.picked {
                        self.pending.push(to_i16(device_frame[channel]));
                    }
                }
            }
            Some(resampler) => {
                use rubato::Resampler;
                for device_frame in data.chunks_exact(self.device_channels) {
                    for (waiting, &channel) in self.waiting.iter_mut().zip(&self.picked) {
                        waiting.push(device_frame[channel]);
                    }
                }
                loop {
                    let needed = resampler.input_frames_next();
                    if self.waiting[0].len() < needed {
                        break;
                    }
                    let chunk: Vec<Vec<f32>> = self
                        .waiting
                        .iter_mut()
                        .map(|w| w.drain(..needed).collect())
                        .collect();
                    let Ok(input) =
                        rubato::audioadapter_buffers::direct::SequentialSliceOfVecs::new(
                            &chunk,
                            chunk.len(),
                            needed,
                        )
                    else {
                        break;
                    };
                    match resampler.process(&input, None) {
                        Ok(output) => self
                            .pending
                            .extend(output.take_data().into_iter().map(to_i16)),
                        Err(err) => {
                            tracing::warn!("audio input: resampling: {err}");
                            break;
                        }
                    }
                }
            }
        }
        let frame_len = FRAME_SAMPLES * self.picked.len();
        while self.pending.len() >= frame_len {
            frame(self.pending.drain(..frame_len).collect());
        }
    }
}

/// Rubato's FFT resampler from `from` Hz to `to` Hz, taking `chunk` frames of `channels`
/// channels at a time.
fn fft_resampler(
    from: u32,
    to: u32,
    chunk: usize,
    channels: usize,
) -> Result<rubato::Fft<f32>, String> {
    rubato::Fft::<f32>::new(
        from as usize,
        to as usize,
        chunk,
        channels,
        rubato::FixedSync::Input,
    )
    .map_err(|e| format!("cannot resample {from} Hz to {to} Hz: {e}"))
}

/// A whole mono clip at `rate` Hz resampled to 48 kHz (rubato's FFT resampler, delay trimmed).
pub fn resample_to_48k(mono: &[f32], rate: u32) -> Result<Vec<f32>, crate::voice::VoiceError> {
    use rubato::Resampler;
    if rate == SAMPLE_RATE {
        return Ok(mono.to_vec());
    }
    let failed = |e: &dyn std::fmt::Display| {
        crate::voice::VoiceError::new(format!("cannot resample {rate} Hz: {e}"))
    };
    let mut resampler = fft_resampler(rate, SAMPLE_RATE, 1024, 1).map_err(|e| failed(&e))?;
    let clip = [mono.to_vec()];
    let input =
        rubato::audioadapter_buffers::direct::SequentialSliceOfVecs::new(&clip, 1, mono.len())
            .map_err(|e| failed(&e))?;
    Ok(resampler
        .process_all(&input, mono.len(), None)
        .map_err(|e| failed(&e))?
        .take_data())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Enumeration always offers the synthetic devices, never ALSA's unpaced `null` device,
    /// and labels real devices as real.
    #[test]
    fn enumeration_has_synthetic_devices_and_no_null_sink() {
        let lists = enumerate();
        for kind in [
            DeviceKind::AudioInput,
            DeviceKind::AudioOutput,
            DeviceKind::VideoInput,
        ] {
            let list = lists.of_kind(kind);
            assert!(
                list.iter().any(|d| d.synthetic),
                "{kind}: a synthetic stand-in"
            );
            assert!(list.iter().all(|d| d.id != "null"));
            assert!(list.iter().all(|d| d.synthetic == is_synthetic(&d.id)));
        }
    }

    /// A 44.1 kHz stereo device is resampled, not refused: a 1 kHz tone on the left and a
    /// 1.5 kHz one on the right come out as 20 ms frames at 48 kHz with the same tones, mono
    /// (the left) or stereo (both); a 48 kHz mono device passes straight through.
    #[test]
    fn a_44_1_khz_stereo_device_is_resampled() {
        let device_rate = 44_100.0;
        let device: Vec<f32> = (0..44_100)
            .flat_map(|n| {
                let t = n as f32 / device_rate;
                [
                    0.3 * (std::f32::consts::TAU * 1000.0 * t).sin(),
                    0.3 * (std::f32::consts::TAU * 1500.0 * t).sin(),
                ]
            })
            .collect();
        for stereo in [false, true] {
            let mut converter = CaptureConverter::new(44_100, 2, stereo).expect("converter");
            let mut frames = Vec::new();
            // Device buffers of an odd size, as a sound card delivers them.
            for buffer in device.chunks(2 * 441 + 14) {
                converter.push(buffer, |frame| frames.push(frame));
            }
            let channels = if stereo { 2 } else { 1 };
            assert!(frames.iter().all(|f| f.len() == FRAME_SAMPLES * channels));
            assert!(
                (48..=50).contains(&frames.len()),
                "{} frames in 1 s",
                frames.len()
            );
            let samples: Vec<i16> = frames[5..].concat();
            let left: Vec<i16> = samples.iter().step_by(channels).copied().collect();
            let heard = crate::audio::detect_tone(&left).expect("a tone");
            assert!((heard - 1000.0).abs() < 2.0, "left at {heard} Hz");
            if stereo {
                let right: Vec<i16> = samples.iter().skip(1).step_by(2).copied().collect();
                let heard = crate::audio::detect_tone(&right).expect("a tone");
                assert!((heard - 1500.0).abs() < 2.0, "right at {heard} Hz");
            }
        }
        let mut straight = CaptureConverter::new(48_000, 1, false).expect("converter");
        let mut frames = Vec::new();
        straight.push(&vec![0.5; FRAME_SAMPLES * 3], |frame| frames.push(frame));
        assert_eq!(frames.len(), 3);
        assert!(
            frames
                .iter()
                .flatten()
                .all(|s| *s == (0.5 * 32767.0) as i16)
        );
    }

    /// A 44.1 kHz mono speaker gets the mix resampled: a 1 kHz tone in the mixer comes out
    /// at 1 kHz (measured at the device's rate), 44,100 samples a second, pulled in odd-sized
    /// buffers; a 48 kHz four-channel device gets left and right, then silence.
    #[test]
    fn a_44_1_khz_mono_speaker_plays_the_mix() {
        let mixer: SharedMixer = Default::default();
        let mut tone = crate::audio::ToneSource::new(1000.0);
        // The voice arrives as the device plays it: 448 device samples are 487.6 at 48 kHz.
        let mut samples = vec![0i16; 488];
        let mut converter = PlaybackConverter::new(44_100, 1).expect("converter");
        let mut played = Vec::new();
        for _ in 0..90 {
            tone.fill(&mut samples);
            crate::mixer::lock(&mixer).push("bob", &samples);
            let mut buffer = vec![0.0f32; 441 + 7];
            converter.fill(&mut buffer, &mixer);
            played.extend(buffer);
        }
        let heard: Vec<i16> = played[4_410..36_000]
            .iter()
            .map(|s| (s * 32767.0) as i16)
            .collect();
        // detect_tone counts at 48 kHz: scale to the device's rate.
        let hz = crate::audio::detect_tone(&heard).expect("a tone") * 44_100.0 / 48_000.0;
        assert!((hz - 1000.0).abs() < 3.0, "{hz} Hz");

        let mut four = PlaybackConverter::new(48_000, 4).expect("converter");
        let mut samples = vec![0i16; FRAME_SAMPLES * 8];
        tone.fill(&mut samples);
        crate::mixer::lock(&mixer).push("bob", &samples);
        let mut buffer = vec![0.0f32; 4 * 960];
        for _ in 0..4 {
            four.fill(&mut buffer, &mixer);
        }
        assert!(buffer.chunks_exact(4).any(|f| f[0] != 0.0 && f[1] != 0.0));
        assert!(buffer.chunks_exact(4).all(|f| f[2] == 0.0 && f[3] == 0.0));
    }

    /// Opening a device that does not exist is an error, not a panic or a hang.
    #[test]
    fn missing_devices_are_errors() {
        let mixer: SharedMixer = Default::default();
        let stop = Arc::new(AtomicBool::new(false));
        assert!(start_output("no such speaker", mixer, stop.clone()).is_err());
        let (tx, _rx) = crossbeam_channel::bounded(4);
        assert!(start_input("no such microphone", tx, stop.clone(), false).is_err());
        stop.store(true, Ordering::Relaxed);
    }
}
