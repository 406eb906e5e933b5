//! Real audio devices through cpal (ALSA on Linux) and cameras (see [`crate::camera`]), next
//! to the synthetic stand-ins.
//!
//! - [`enumerate`]: the synthetic devices plus every cpal input and output (ALSA's `null`
//!   device is left out: it is not paced and would spin a core).
//! - [`start_output`]: plays the mix on a device from its own thread (cpal streams are not
//!   `Send` everywhere); the audio callback pulls from the mixer with `try_lock`, so it never
//!   waits on another thread.
//! - [`start_input`]: captures a microphone at 48 kHz into 20 ms mono frames.
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

/// Plays the mix on the output device named `name` until `stop` is set.
pub fn start_output(
    name: &str,
    mixer: SharedMixer,
    stop: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<()>, String> {
    let name = name.to_owned();
    run_stream(format!("audio out {name}"), name.clone(), stop, move || {
        let host = cpal::default_host();
        let device = find_device(host.output_devices(), "output", &name)?;
        let config = cpal::StreamConfig {
            channels: 2,
            sample_rate: cpal::SampleRate(SAMPLE_RATE),
            buffer_size: cpal::BufferSize::Default,
        };
        Ok(device.build_output_stream(
            &config,
            // Mixed straight into the device's buffer (interleaved stereo).
            move |data: &mut [f32], _| match mixer.try_lock() {
                Ok(mut mixer) => mixer.mix(data, data.len() / 2),
                Err(_) => data.fill(0.0),
            },
            |err| tracing::warn!("audio output: {err}"),
            None,
        ))
    })
}

/// Captures the input device named `name` at 48 kHz into 20 ms frames sent on `frames` (mono,
/// or interleaved stereo with `stereo`), until `stop` is set.
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
        let channels = device
            .default_input_config()
            .map(|c| c.channels())
            .unwrap_or(1)
            .max(1);
        let config = cpal::StreamConfig {
            channels,
            sample_rate: cpal::SampleRate(SAMPLE_RATE),
            buffer_size: cpal::BufferSize::Default,
        };
        // Mono sends channel 0; stereo sends channels 0 and 1 (a mono device on both).
        let picked: &[usize] = match (stereo, channels) {
            (false, _) => &[0],
            (true, 1) => &[0, 0],
            (true, _) => &[0, 1],
        };
        let frame_len = FRAME_SAMPLES * picked.len();
        let mut pending: Vec<i16> = Vec::with_capacity(frame_len);
        Ok(device.build_input_stream(
            &config,
            move |data: &[f32], _| {
                for frame in data.chunks_exact(usize::from(channels)) {
                    for &channel in picked {
                        let sample = frame[channel].clamp(-1.0, 1.0) * f32::from(i16::MAX);
                        pending.push(sample as i16);
                    }
                    if pending.len() == frame_len {
                        let _ = frames.try_send(std::mem::replace(
                            &mut pending,
                            Vec::with_capacity(frame_len),
                        ));
                    }
                }
            },
            |err| tracing::warn!("audio input: {err}"),
            None,
        ))
    })
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
