//! A call's media: one local source encoded once, sent to every peer; one [`Peer`] per remote
//! participant.
//!
//! ```text
//!                 ┌─ video thread (fps): camera/pattern → I420 → H.264 ─┐
//! MediaSession ───┤                                                     ├─▶ every Peer's tracks
//!                 └─ audio task (20 ms): microphone/tone → Opus ────────┘
//!   commands (add/remove peer, signal) ─▶ actor task (in order) ─▶ Peer negotiation
//!   PeerEvents (signals out, state, errors) ─▶ crossbeam channel ─▶ caller
//!   remote pictures ─▶ decode thread per track ─▶ newest-wins slot ─▶ take_video_frames()
//!   remote voices ─▶ the loudest few (large calls) ─▶ Opus ─▶ mixer ─▶ output
//!   figures ─▶ probe ─▶ stats()
//! ```
//!
//! Codec work never runs on the async runtime's workers, which only do IO and timers: the
//! camera encoder has its own thread (so has the screen share's), each remote video track its
//! own decode thread. Opus (well under a millisecond per 20 ms frame) stays on the tasks.
//!
//! Muting stops sending audio packets (not only a flag in the UI); pausing stops video;
//! `video_enabled` is off for audio-only calls until they switch to video. A keyframe request
//! from any receiver makes the next encoded frame an IDR. Receivers tell senders how much
//! video they want (adaptive receive): a peer that paused us gets no video, nothing is encoded
//! when nobody watches, and the bitrate follows the largest wish (and congestion control). Everything stops when the session
//! is dropped or [`MediaSession::close`]d. Received voices are mixed (per-source gains) and
//! pulled every 20 ms by the output (the timer-paced [`NullSink`] where there is no device).
//! While [`MediaSession::start_recording`] runs, every encoded frame we send and every frame
//! we receive (as received) also goes to the [`crate::recording`] writer; a write failure
//! stops it with [`PeerEvent::RecordingFailed`] and the call goes on.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use huddle_protocol::{
    MediaRoute, PeerSignal, SFU_PUBLISH_PEER, SFU_SUBSCRIBE_PEER, SimulcastLayer,
};
use tokio::sync::mpsc;

use crate::audio::{FRAME_SAMPLES, OpusEncoder, ToneSource, tone_frequency_for};
use crate::camera::{CameraCapture, CameraError};
use crate::devices;
use crate::frames::{VideoFrame, VideoSlots};
use crate::mixer::{MixStats, Mixer, NullSink, SharedMixer, StereoGain};
use crate::peer::{
    LossInjection, MediaCounters, Peer, PeerContext, PeerEvent, PeerRole, PeerSetup, RecordingTap,
    recorder_of,
};
use crate::probe::{MediaProbe, ProbeSnapshot, wall_clock_ms};
use crate::recording::{Recording, RecordingError, RecordingSummary, TrackSummary};
use crate::screen::ScreenSource;
use crate::synthetic::{FrameStamp, TestPattern};
use crate::video::{EncoderSettings, H264Encoder, I420Frame, ResolutionScaler};

/// How long each STUN/TURN server of a session has to answer its check.
const ICE_SERVER_CHECK_WAIT: Duration = Duration::from_secs(3);

/// What a session sends and how it connects.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// Our uid (decides who offers, and the tone).
    pub local_uid: String,
    /// Synthetic video to send.
    pub video: EncoderSettings,
    /// Interfaces to gather ICE candidates on, STUN/TURN servers, mDNS.
    pub ice: crate::ice::IceConfig,
    /// Microphone to send (a real device id); `None` or a synthetic id sends the tone.
    pub audio_input: Option<String>,
    /// Output to play the mix on (a real device id); `None` or synthetic uses the null sink.
    pub audio_output: Option<String>,
    /// Camera to send (`camera:<n>`); `None` or a synthetic id sends the test pattern.
    pub video_input: Option<String>,
    /// Send stereo Opus (the microphone's first two channels; the synthetic tone puts a
    /// second tone, 1.5 × the first, on the right). Receiving handles both always.
    pub stereo_audio: bool,
    /// Measure what arrives (tests, bots, benchmarks): read synthetic stamps for latency and
    /// find tones, off the caller's thread (see [`crate::probe`]). Counting is always on.
    pub measure: bool,
    /// The synthetic voice talks in turns (`None`: the tone never stops).
    pub talk_pattern: Option<crate::speech::TalkPattern>,
    /// Which stages clean a real microphone sent as mono voice ([`crate::voice`]).
    pub voice_processing: crate::voice::VoiceProcessing,
    /// How many remote voices are decoded: all of them up to a number, beyond it only the
    /// loudest few talkers ([`crate::speech::LoudestVoices`]).
    pub voice_decode_limit: crate::speech::VoiceDecodeLimit,
}

impl SessionConfig {
    /// Synthetic 1280×720 at 30 fps on loopback.
    pub fn loopback(local_uid: impl Into<String>) -> Self {
        Self {
            local_uid: local_uid.into(),
            video: EncoderSettings::hd(),
            ice: crate::ice::IceConfig::loopback(),
            audio_input: None,
            audio_output: None,
            video_input: None,
            stereo_audio: false,
            measure: false,
            talk_pattern: None,
            voice_processing: crate::voice::VoiceProcessing::default(),
            voice_decode_limit: crate::speech::VoiceDecodeLimit::default(),
        }
    }
}

/// Switches the senders read on every frame.
#[derive(Debug)]
struct SendSwitches {
    audio_muted: AtomicBool,
    video_paused: AtomicBool,
    video_enabled: AtomicBool,
    keyframe_wanted: Arc<AtomicBool>,
    screen_keyframe_wanted: Arc<AtomicBool>,
    closed: Arc<AtomicBool>,
    /// Congestion control's target for our video (the lowest over all peers), bits/s; 0 = none yet.
    target_bitrate: std::sync::atomic::AtomicU32,
}

enum Command {
    /// Mesh (a connection per participant) or SFU (one publishing, one receiving).
    SetRoute(MediaRoute),
    AddPeer(String),
    RemovePeer(String),
    Signal {
        from: String,
        signal: PeerSignal,
    },
    /// The call switched to video: every connection gets the camera track (renegotiated
    /// here, one at a time with the signals, so offers never cross).
    EnableVideo,
    /// Every second: restart ICE on the connections we offer that have been down a while.
    RestartDownConnections,
    Close,
}

/// The session's connections by remote uid. A plain mutex: it is held only to look up,
/// insert, remove or copy out peers, never across an `.await`.
#[derive(Clone, Default)]
struct Peers(Arc<std::sync::Mutex<HashMap<String, Arc<Peer>>>>);

impl Peers {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Peer>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every peer now.
    fn all(&self) -> Vec<Arc<Peer>> {
        self.lock().values().cloned().collect()
    }

    fn get(&self, uid: &str) -> Option<Arc<Peer>> {
        self.lock().get(uid).cloned()
    }
}

/// The media of one call.
pub struct MediaSession {
    commands: mpsc::UnboundedSender<Command>,
    mixer: SharedMixer,
    peers: Peers,
    signals_out: Sender<PeerEvent>,
    video_wanted_sent: std::sync::Mutex<HashMap<String, ((bool, u32), Instant)>>,
    events: Receiver<PeerEvent>,
    switches: Arc<SendSwitches>,
    context: Arc<PeerContext>,
    recording: std::sync::Mutex<Option<Recording>>,
    local_uid: String,
    runtime: tokio::runtime::Handle,
    /// Set to stop the running screen share's thread.
    screen_share: std::sync::Mutex<Option<Arc<AtomicBool>>>,
    /// The devices in use (switchable during the call).
    io: DeviceIo,
    /// Our own picture for the self-view.
    preview: SharedPreview,
}

/// The session's devices. Each runs until its own stop flag is set, so one can be replaced
/// during the call while the others go on. Audio devices: the old one is stopped and its
/// thread joined (so an exclusive device is free again) before the new one opens, on the
/// audio worker. Cameras: the old capture is told to stop and the new open retries for a
/// moment while the device is released. Choosing the device in use again changes nothing
/// (unless it had failed: then it is tried again).
struct DeviceIo {
    /// Audio device changes, applied in order by the audio worker thread (opening a device
    /// can take a while; the caller — often the Bevy main thread — never waits for it).
    audio: Sender<AudioCommand>,
    /// Set on close: the worker skips whatever is still queued.
    closing: Arc<AtomicBool>,
    /// The microphone's 20 ms frames; `None` sends the tone.
    microphone: SharedMicrophone,
    /// The chosen camera, opened by the video sender only while video is on.
    camera: SharedCamera,
}

/// A change for the audio worker.
enum AudioCommand {
    Output(Option<String>),
    Input(Option<String>),
    Close,
}

/// The audio worker's side: the running output and input, replaced on request.
struct AudioWorker {
    stereo_audio: bool,
    runtime: tokio::runtime::Handle,
    mixer: SharedMixer,
    microphone: SharedMicrophone,
    events: Sender<PeerEvent>,
    output: RunningDevice,
    input: RunningDevice,
}

type SharedMicrophone = Arc<std::sync::Mutex<Option<Receiver<Vec<i16>>>>>;
type SharedCamera = Arc<std::sync::Mutex<CameraState>>;

/// An audio device in use: its id, and how to stop it.
#[derive(Default)]
struct RunningDevice {
    started: bool,
    id: Option<String>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RunningDevice {
    /// Whether `id` is what already runs.
    fn is(&self, id: Option<&str>) -> bool {
        self.started && self.id.as_deref() == id
    }

    /// Stops it and waits until its thread has let the device go.
    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The camera: which one is chosen, and its capture while video is on.
#[derive(Default)]
struct CameraState {
    /// The chosen camera (`None`: the test pattern).
    selected: Option<String>,
    /// Its capture, while video is on.
    capture: Option<CameraCapture>,
    /// An open under way (on its own thread).
    opening: Option<Receiver<Result<CameraCapture, CameraError>>>,
    /// The chosen camera failed to open: not retried until chosen again or video comes
    /// back on.
    failed: bool,
    /// Video was on at the last sync.
    was_on: bool,
}

impl CameraState {
    /// Opens the chosen camera while `video_on`, closes it otherwise (the camera light goes
    /// off with the video). Opening happens on its own thread; a failure is reported once,
    /// and tried again when video comes back on or the camera is chosen again.
    fn sync(&mut self, video_on: bool, video: EncoderSettings, failed: impl FnOnce(CameraError)) {
        let turned_on = video_on && !self.was_on;
        self.was_on = video_on;
        if turned_on {
            self.failed = false;
        }
        // An open under way finishes even while video is off (it may hold the device):
        // its result is kept only if video is on.
        if let Some(opening) = &self.opening {
            match opening.try_recv() {
                Ok(Ok(capture)) => {
                    self.opening = None;
                    if video_on {
                        self.capture = Some(capture);
                    }
                }
                Ok(Err(err)) => {
                    self.opening = None;
                    if video_on {
                        self.failed = true;
                        failed(err);
                    }
                }
                Err(crossbeam_channel::TryRecvError::Empty) => {}
                Err(crossbeam_channel::TryRecvError::Disconnected) => self.opening = None,
            }
        }
        let Some(id) = self.selected.clone().filter(|_| video_on) else {
            self.capture = None;
            return;
        };
        if self.capture.is_some() || self.failed || self.opening.is_some() {
            return;
        }
        let (done, opening) = crossbeam_channel::bounded(1);
        let fps = video.fps.round() as u32;
        let spawned = std::thread::Builder::new()
            .name("huddle-camera-open".into())
            .spawn(move || {
                // A camera just closed (a switch) may need a moment to be free again.
                let mut result = CameraCapture::open(&id, video.width, video.height, fps);
                for _ in 0..3 {
                    if result.is_ok() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                    result = CameraCapture::open(&id, video.width, video.height, fps);
                }
                let _ = done.send(result);
            });
        if spawned.is_ok() {
            self.opening = Some(opening);
        }
    }

    /// A camera is chosen and may still come (opening, or not yet opened): send nothing
    /// rather than the test pattern meanwhile.
    fn awaiting_camera(&self) -> bool {
        self.selected.is_some() && !self.failed && self.capture.is_none()
    }
}

/// What we send, for our own tile (self-view): the newest picture, at most 15 a second.
#[derive(Clone, Default)]
struct SharedPreview {
    wanted: Arc<AtomicBool>,
    newest: Arc<std::sync::Mutex<Option<crate::peer::DecodedVideo>>>,
    last: Arc<std::sync::Mutex<Option<Instant>>>,
}

impl SharedPreview {
    /// Keeps a copy of this picture unless one was kept less than 66 ms ago.
    fn offer(&self, width: u32, height: u32, rgba: &[u8]) {
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|at| now.duration_since(at) < Duration::from_millis(66)) {
            return;
        }
        *last = Some(now);
        let mut newest = self.newest.lock().unwrap_or_else(|p| p.into_inner());
        // Reuse the buffer the reader has not taken yet.
        let mut pixels = newest.take().map(|f| f.rgba).unwrap_or_default();
        pixels.clear();
        pixels.extend_from_slice(rgba);
        *newest = Some(crate::peer::DecodedVideo {
            width,
            height,
            rgba: pixels,
            stamp: None,
            encoded: bytes::Bytes::new(),
        });
    }
}

/// A real (not synthetic) device id.
fn real_device(id: Option<&str>) -> Option<&str> {
    id.filter(|id| !devices::is_synthetic(id))
}

impl AudioWorker {
    /// Applies changes in order until told to close (or the session is gone), then stops
    /// both devices.
    fn run(mut self, commands: Receiver<AudioCommand>, closing: Arc<AtomicBool>) {
        while let Ok(command) = commands.recv() {
            if closing.load(Ordering::Relaxed) {
                break;
            }
            match command {
                AudioCommand::Output(id) => self.set_output(id.as_deref()),
                AudioCommand::Input(id) => self.set_input(id.as_deref()),
                AudioCommand::Close => break,
            }
        }
        self.output.stop();
        self.input.stop();
    }

    fn failed(&self, kind: crate::DeviceKind, id: Option<&str>, reason: String) {
        let _ = self.events.send(PeerEvent::DeviceFailed {
            kind,
            id: id.unwrap_or_default().to_owned(),
            reason,
        });
    }

    /// Plays the mix on `id` (`None`/synthetic: the timer-paced null sink). A device that
    /// fails to open leaves the null sink playing and is reported.
    fn set_output(&mut self, id: Option<&str>) {
        if self.output.is(id) {
            return;
        }
        self.output.stop();
        let stop = Arc::new(AtomicBool::new(false));
        let (thread, running) = match real_device(id) {
            Some(device) => match devices::start_output(device, self.mixer.clone(), stop.clone()) {
                Ok(thread) => (Some(thread), id),
                Err(err) => {
                    let reason = format!("{err}; playing on the null sink");
                    self.failed(crate::DeviceKind::AudioOutput, id, reason);
                    // What runs is the null sink: choosing the device again retries it.
                    (None, None)
                }
            },
            None => (None, id),
        };
        if thread.is_none() {
            NullSink::start(&self.runtime, self.mixer.clone(), stop.clone());
        }
        self.output = RunningDevice {
            started: true,
            id: running.map(str::to_owned),
            stop,
            thread,
        };
    }

    /// Sends microphone `id` (`None`/synthetic: the tone). A device that fails to open
    /// leaves the tone and is reported.
    fn set_input(&mut self, id: Option<&str>) {
        if self.input.is(id) {
            return;
        }
        self.input.stop();
        let stop = Arc::new(AtomicBool::new(false));
        let (microphone, thread, running) = match real_device(id) {
            Some(device) => {
                let (tx, rx) = crossbeam_channel::bounded(16);
                match devices::start_input(device, tx, stop.clone(), self.stereo_audio) {
                    Ok(thread) => (Some(rx), Some(thread), id),
                    Err(err) => {
                        let reason = format!("{err}; sending the synthetic tone");
                        self.failed(crate::DeviceKind::AudioInput, id, reason);
                        // What runs is the tone: choosing the device again retries it.
                        (None, None, None)
                    }
                }
            }
            None => (None, None, id),
        };
        *self.microphone.lock().unwrap_or_else(|p| p.into_inner()) = microphone;
        self.input = RunningDevice {
            started: true,
            id: running.map(str::to_owned),
            stop,
            thread,
        };
    }
}

impl DeviceIo {
    /// Starts the audio worker with the null sink and the tone.
    fn start(
        runtime: &tokio::runtime::Handle,
        mixer: SharedMixer,
        stereo_audio: bool,
        events: Sender<PeerEvent>,
    ) -> Self {
        let microphone: SharedMicrophone = Arc::new(std::sync::Mutex::new(None));
        let (audio, commands) = crossbeam_channel::unbounded();
        let worker = AudioWorker {
            stereo_audio,
            runtime: runtime.clone(),
            mixer,
            microphone: microphone.clone(),
            events,
            output: RunningDevice::default(),
            input: RunningDevice::default(),
        };
        let closing = Arc::new(AtomicBool::new(false));
        let worker_closing = closing.clone();
        // Detached: it ends by itself on close (or when the session is gone).
        let _ = std::thread::Builder::new()
            .name("huddle-audio-devices".into())
            .spawn(move || worker.run(commands, worker_closing));
        Self {
            audio,
            closing,
            microphone,
            camera: Arc::new(std::sync::Mutex::new(CameraState::default())),
        }
    }

    /// Plays the mix on `id` from now on (applied by the audio worker).
    fn set_output(&self, id: Option<&str>) {
        let _ = self.audio.send(AudioCommand::Output(id.map(str::to_owned)));
    }

    /// Sends microphone `id` from now on (applied by the audio worker).
    fn set_input(&self, id: Option<&str>) {
        let _ = self.audio.send(AudioCommand::Input(id.map(str::to_owned)));
    }

    /// Sends camera `id` from now on (`None`/synthetic: the test pattern). It opens when
    /// video is on (a failure arrives as `PeerEvent::DeviceFailed`); a malformed id is an
    /// error at once.
    fn set_camera(&self, id: Option<&str>) -> Result<(), CameraError> {
        let id = real_device(id);
        if let Some(id) = id
            && !id.starts_with(crate::camera::CAMERA_PREFIX)
        {
            return Err(CameraError {
                id: id.to_owned(),
                reason: format!(
                    "not a camera id (expected `{}<n>`)",
                    crate::camera::CAMERA_PREFIX
                ),
            });
        }
        let mut camera = self.camera.lock().unwrap_or_else(|p| p.into_inner());
        if camera.selected.as_deref() == id && !camera.failed {
            return Ok(());
        }
        if camera.selected.as_deref() != id {
            // An open of the previous camera is of no use any more.
            camera.opening = None;
        }
        camera.selected = id.map(str::to_owned);
        camera.capture = None;
        camera.failed = false;
        Ok(())
    }

    /// Stops every device without waiting: the audio worker skips changes still queued and
    /// stops the running devices on its own thread (an open in progress may take it up to
    /// 3 s; the caller does not wait for that).
    fn close(&self) {
        self.closing.store(true, Ordering::Relaxed);
        let _ = self.audio.send(AudioCommand::Close);
        *self.camera.lock().unwrap_or_else(|p| p.into_inner()) = CameraState::default();
    }
}

impl MediaSession {
    /// Starts the session's tasks on `runtime`.
    pub fn start(runtime: &tokio::runtime::Handle, config: SessionConfig) -> Self {
        let (events_tx, events) = crossbeam_channel::unbounded();
        let (commands, command_rx) = mpsc::unbounded_channel();
        let switches = Arc::new(SendSwitches {
            audio_muted: AtomicBool::new(false),
            video_paused: AtomicBool::new(false),
            video_enabled: AtomicBool::new(true),
            keyframe_wanted: Arc::new(AtomicBool::new(false)),
            screen_keyframe_wanted: Arc::new(AtomicBool::new(false)),
            closed: Arc::new(AtomicBool::new(false)),
            target_bitrate: std::sync::atomic::AtomicU32::new(0),
        });
        let peers = Peers::default();
        let mut mixer = Mixer::default();
        mixer.set_voice_decode_limit(config.voice_decode_limit);
        let mixer: SharedMixer = Arc::new(std::sync::Mutex::new(mixer));
        let context = Arc::new(PeerContext {
            events: events_tx.clone(),
            frames: VideoSlots::default(),
            probe: MediaProbe::start(config.measure, switches.closed.clone()),
            mixer: mixer.clone(),
            recording: Arc::new(std::sync::Mutex::new(None)),
            counters: Arc::new(MediaCounters::default()),
            keyframe_wanted: switches.keyframe_wanted.clone(),
            screen_keyframe_wanted: switches.screen_keyframe_wanted.clone(),
            smaller_layers_keyframe_wanted: Arc::new([
                AtomicBool::new(false),
                AtomicBool::new(false),
            ]),
            smaller_layers_wanted: Arc::new([AtomicBool::new(true), AtomicBool::new(true)]),
            loss: Arc::new(LossInjection::default()),
        });
        let io = DeviceIo::start(
            runtime,
            mixer.clone(),
            config.stereo_audio,
            events_tx.clone(),
        );
        io.set_output(config.audio_output.as_deref());
        io.set_input(config.audio_input.as_deref());
        if let Err(err) = io.set_camera(config.video_input.as_deref()) {
            let _ = events_tx.send(PeerEvent::DeviceFailed {
                kind: crate::DeviceKind::VideoInput,
                id: err.id,
                reason: format!("{}; sending the test pattern", err.reason),
            });
        }
        let tone_hz = tone_frequency_for(&config.local_uid);
        runtime.spawn(run_actor(
            config.clone(),
            command_rx,
            peers.clone(),
            switches.clone(),
            context.clone(),
        ));
        let preview = SharedPreview::default();
        let video = VideoSendLoop {
            config: config.clone(),
            runtime: runtime.clone(),
            camera: io.camera.clone(),
            preview: preview.clone(),
            peers: peers.clone(),
            switches: switches.clone(),
            context: context.clone(),
        };
        let spawned = std::thread::Builder::new()
            .name("huddle-video-send".into())
            .spawn(move || video.run());
        if let Err(err) = spawned {
            let _ = events_tx.send(PeerEvent::Error {
                uid: config.local_uid.clone(),
                reason: format!("cannot start the video sender: {err}"),
            });
        }
        let played = crate::mixer::lock(&mixer).listen_played();
        runtime.spawn(send_audio(
            (
                config.local_uid.clone(),
                tone_hz,
                config.stereo_audio,
                config.talk_pattern,
            ),
            (io.microphone.clone(), config.voice_processing, played),
            peers.clone(),
            switches.clone(),
            context.clone(),
        ));
        if !config.ice.servers.is_empty() {
            let (servers, events) = (config.ice.servers.clone(), events_tx.clone());
            runtime.spawn(async move {
                for problem in crate::ice::check_servers(&servers, ICE_SERVER_CHECK_WAIT).await {
                    let _ = events.send(PeerEvent::IceServerProblem(problem));
                }
            });
        }
        runtime.spawn(measure_links(
            peers.clone(),
            switches.clone(),
            events_tx.clone(),
            commands.clone(),
        ));
        Self {
            commands,
            mixer,
            peers,
            signals_out: events_tx,
            video_wanted_sent: std::sync::Mutex::new(HashMap::new()),
            events,
            switches,
            context,
            recording: std::sync::Mutex::new(None),
            local_uid: config.local_uid,
            runtime: runtime.clone(),
            screen_share: std::sync::Mutex::new(None),
            io,
            preview,
        }
    }

    /// Keep copies of what we send for a self-view (off by default: a copy of each picture,
    /// at most 15 a second); take them with [`Self::take_local_preview`].
    pub fn set_local_preview(&self, on: bool) {
        self.preview.wanted.store(on, Ordering::Relaxed);
    }

    /// The newest picture we sent (camera or pattern) since the last call, for the self-view.
    pub fn take_local_preview(&self) -> Option<crate::peer::DecodedVideo> {
        self.preview
            .newest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// Plays the call on this output device from now on (`None` or a synthetic id: the
    /// null sink). The device opens on the session's audio worker, so this never waits; if
    /// it cannot be opened the null sink plays and `PeerEvent::DeviceFailed` says why.
    pub fn set_audio_output(&self, device: Option<&str>) {
        self.io.set_output(device);
    }

    /// Sends this microphone from now on (`None` or a synthetic id: the tone). The device
    /// opens on the session's audio worker, so this never waits; if it cannot be opened the
    /// tone is sent and `PeerEvent::DeviceFailed` says why.
    pub fn set_audio_input(&self, device: Option<&str>) {
        self.io.set_input(device);
    }

    /// Sends this camera from now on (`None` or a synthetic id: the test pattern). It is
    /// opened only while video is on (an audio-only or paused call keeps it off); if it cannot
    /// be opened the pattern is sent and `PeerEvent::DeviceFailed` says why. An id without
    /// the `camera:` prefix is an error at once; other bad ids fail when opened.
    pub fn set_video_input(&self, device: Option<&str>) -> Result<(), CameraError> {
        self.io.set_camera(device)
    }

    /// Test hook (feature `test-utils`): from now on the "microphone" is the 20 ms frames
    /// (mono, 960 samples) sent on the returned channel, as if a device delivered them.
    #[cfg(feature = "test-utils")]
    pub fn use_test_microphone(&self) -> Sender<Vec<i16>> {
        let (frames_tx, frames) = crossbeam_channel::bounded(8);
        *self.io.microphone.lock().unwrap_or_else(|p| p.into_inner()) = Some(frames);
        frames_tx
    }

    /// Test hook (feature `test-utils`): every chunk the output plays from now on (mono,
    /// 48 kHz, −1..1), as a speaker would send it into the room.
    #[cfg(feature = "test-utils")]
    pub fn listen_played(&self) -> Receiver<Vec<f32>> {
        crate::mixer::lock(&self.mixer).listen_played()
    }

    /// Whether a real microphone is being sent (else the tone).
    pub fn has_microphone(&self) -> bool {
        self.io
            .microphone
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// The camera being sent, if one is open (else the test pattern).
    pub fn camera_id(&self) -> Option<String> {
        self.io
            .camera
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .capture
            .as_ref()
            .map(|c| c.id().to_owned())
    }

    /// Starts sharing `source` (the desktop, a game view) on every peer's screen track, at
    /// `bitrate_bps`. A share already running is replaced. When the source fails, the share
    /// ends with [`PeerEvent::ScreenShareEnded`].
    pub fn start_screen_share(&self, source: Box<dyn ScreenSource>, bitrate_bps: u32) {
        let stop = Arc::new(AtomicBool::new(false));
        if let Some(previous) = self
            .screen_share
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .replace(stop.clone())
        {
            previous.store(true, Ordering::Relaxed);
        }
        let share = ScreenShareLoop {
            local_uid: self.local_uid.clone(),
            runtime: self.runtime.clone(),
            peers: self.peers.clone(),
            switches: self.switches.clone(),
            counters: self.context.counters.clone(),
            events: self.signals_out.clone(),
            recording: self.context.recording.clone(),
            stop,
            bitrate_bps,
        };
        let spawned = std::thread::Builder::new()
            .name("huddle-screen-share".into())
            .spawn(move || share.run(source));
        if let Err(err) = spawned {
            let _ = self.signals_out.send(PeerEvent::ScreenShareEnded {
                reason: format!("cannot start the screen share thread: {err}"),
            });
        }
    }

    /// Stops the screen share, if one runs.
    pub fn stop_screen_share(&self) {
        if let Some(stop) = self
            .screen_share
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            stop.store(true, Ordering::Relaxed);
        }
    }

    /// Whether a screen share runs.
    pub fn is_screen_sharing(&self) -> bool {
        self.screen_share
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(|stop| !stop.load(Ordering::Relaxed))
    }

    /// Starts recording the call into `path` (a Matroska file): our own video and audio and
    /// every remote participant's, as sent and received. Already recording: nothing changes.
    pub fn start_recording(&self, path: &std::path::Path) -> Result<(), RecordingError> {
        let mut slot = self.recording.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_some() {
            return Ok(());
        }
        let failures = self.signals_out.clone();
        let tap = self.context.recording.clone();
        let recording = Recording::start(path, &self.local_uid, move |err| {
            if let Ok(mut tap) = tap.lock() {
                *tap = None;
            }
            let _ = failures.send(PeerEvent::RecordingFailed { reason: err });
        })?;
        *self
            .context
            .recording
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(recording.recorder());
        // The next frame we send must be decodable on its own: the file starts with it.
        self.switches.keyframe_wanted.store(true, Ordering::Relaxed);
        *slot = Some(recording);
        Ok(())
    }

    /// Stops recording and finishes the file (`None` if not recording).
    pub fn stop_recording(&self) -> Option<Result<RecordingSummary, RecordingError>> {
        *self
            .context
            .recording
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = None;
        let recording = self
            .recording
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()?;
        Some(recording.stop())
    }

    /// The tracks of the running recording (empty if none).
    pub fn recording_tracks(&self) -> Vec<TrackSummary> {
        self.recording
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(Recording::tracks)
            .unwrap_or_default()
    }

    /// Whether a recording is running.
    pub fn is_recording(&self) -> bool {
        recorder_of(&self.context.recording).is_some()
    }

    /// How the media travels: a connection per remote participant (the default), or two
    /// connections to the server's SFU. Switching closes the old connections and opens the
    /// new ones; the participants added stay.
    pub fn set_route(&self, route: MediaRoute) {
        let _ = self.commands.send(Command::SetRoute(route));
    }

    /// A remote participant: on the mesh, connects to them (the smaller uid offers); through
    /// the SFU, their tracks arrive on the SFU's connection.
    pub fn add_peer(&self, remote_uid: &str) {
        let _ = self.commands.send(Command::AddPeer(remote_uid.to_owned()));
    }

    /// Disconnects from a remote participant (closing its connection).
    pub fn remove_peer(&self, remote_uid: &str) {
        let _ = self
            .commands
            .send(Command::RemovePeer(remote_uid.to_owned()));
    }

    /// A signal from `from`, relayed by the server.
    pub fn handle_signal(&self, from: &str, signal: PeerSignal) {
        let _ = self.commands.send(Command::Signal {
            from: from.to_owned(),
            signal,
        });
    }

    /// What the peers reported since the last call (never blocks).
    pub fn events(&self) -> &Receiver<PeerEvent> {
        &self.events
    }

    /// Stops or resumes sending audio.
    pub fn set_audio_muted(&self, muted: bool) {
        self.switches.audio_muted.store(muted, Ordering::Relaxed);
    }

    /// Stops or resumes sending video.
    pub fn set_video_paused(&self, paused: bool) {
        self.switches.video_paused.store(paused, Ordering::Relaxed);
    }

    /// Enables video (off for audio-only calls until they switch to video). Call it before
    /// adding peers for an audio-only call: their connections then carry no camera track.
    /// Enabling it later renegotiates every connection to add the camera track.
    pub fn set_video_enabled(&self, enabled: bool) {
        let was = self.switches.video_enabled.swap(enabled, Ordering::Relaxed);
        if enabled {
            self.switches.keyframe_wanted.store(true, Ordering::Relaxed);
        }
        if enabled && !was {
            let _ = self.commands.send(Command::EnableVideo);
        }
    }

    /// Whether our camera track is negotiated with `uid` (false in an audio-only call until
    /// it switches to video and the renegotiation is done). Never waits on the runtime.
    pub fn has_video_track_to(&self, uid: &str) -> bool {
        self.peers.get(uid).is_some_and(|p| p.video_attached())
    }

    /// Counters of what was sent.
    pub fn counters(&self) -> &MediaCounters {
        &self.context.counters
    }

    /// The newest decoded picture of every remote video track (camera and screen) since the
    /// last call; pictures that a newer one replaced meanwhile are only counted.
    pub fn take_video_frames(&self) -> Vec<VideoFrame> {
        self.context.frames.take_all()
    }

    /// Pictures of `uid`'s camera replaced before they were taken (the reader was slower than
    /// their video).
    pub fn video_frames_replaced(&self, uid: &str) -> u64 {
        self.context
            .frames
            .replaced(uid, crate::frames::VideoTrackKind::Camera)
    }

    /// Receive statistics per remote participant (see [`crate::probe`]).
    pub fn stats(&self) -> ProbeSnapshot {
        self.context.probe.snapshot()
    }

    /// Sets the gains of `uid`'s voice in the mix (volume, local mute, spatial pan).
    pub fn set_gain(&self, uid: &str, gain: StereoGain) {
        crate::mixer::lock(&self.mixer).set_gain(uid, gain);
    }

    /// Adaptive receive: tells `uid` how much of their video we want (paused while they are
    /// off screen, a bitrate cap while shown small; 0 = no cap). Sent when it changes, and
    /// again every two seconds (a wish sent before the connection existed would be lost).
    pub fn want_video_from(&self, uid: &str, paused: bool, max_bitrate_bps: u32) {
        let mut sent = self
            .video_wanted_sent
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if let Some((wish, at)) = sent.get(uid)
            && *wish == (paused, max_bitrate_bps)
            && now.duration_since(*at) < Duration::from_secs(2)
        {
            return;
        }
        sent.insert(uid.to_owned(), ((paused, max_bitrate_bps), now));
        let _ = self.signals_out.send(PeerEvent::Signal {
            to: uid.to_owned(),
            signal: PeerSignal::VideoWanted {
                paused,
                max_bitrate_bps,
            },
        });
    }

    /// Video frames sent to `uid` so far (`None` if there is no such peer).
    pub fn video_frames_sent_to(&self, uid: &str) -> Option<u64> {
        self.peers.get(uid).map(|p| p.video_frames_written())
    }

    /// What `uid` asked of our video: (paused, bitrate cap); `None` if there is no such peer.
    pub fn video_wanted_by(&self, uid: &str) -> Option<(bool, u32)> {
        self.peers.get(uid).map(|p| p.video_wanted())
    }

    /// Decode `uid`'s voice or not (proximity culling: a voice out of earshot costs nothing).
    pub fn set_audio_decoding(&self, uid: &str, decode: bool) {
        crate::mixer::lock(&self.mixer).set_wanted(uid, decode);
    }

    /// What the output mix did lately (frames mixed, levels, underruns).
    pub fn mix_stats(&self) -> MixStats {
        crate::mixer::lock(&self.mixer).stats().clone()
    }

    /// Test hook: drop this share (per mille) of incoming video RTP packets.
    #[cfg(feature = "test-utils")]
    pub fn inject_video_loss(&self, per_mille: u32) {
        self.context
            .loss
            .video_drop_per_mille
            .store(per_mille.min(1000), Ordering::Relaxed);
    }

    /// Congestion control's current target for our video, in bits per second (the lowest over
    /// all peers; 0 until measured). The encoder follows it, capped at the configured bitrate.
    pub fn target_bitrate_bps(&self) -> u32 {
        self.switches.target_bitrate.load(Ordering::Relaxed)
    }

    /// Stops sending and closes every peer connection.
    pub fn close(&self) {
        self.switches.closed.store(true, Ordering::Relaxed);
        self.io.close();
        self.stop_screen_share();
        let _ = self.stop_recording();
        let _ = self.commands.send(Command::Close);
    }
}

impl Drop for MediaSession {
    fn drop(&mut self) {
        self.close();
    }
}

/// The session's actor: peer commands and signals, applied one at a time, in order.
async fn run_actor(
    config: SessionConfig,
    mut commands: mpsc::UnboundedReceiver<Command>,
    peers: Peers,
    switches: Arc<SendSwitches>,
    context: Arc<PeerContext>,
) {
    let events = &context.events;
    let setup = |remote: &str, role: PeerRole| PeerSetup {
        role,
        local_uid: config.local_uid.clone(),
        remote_uid: remote.to_owned(),
        ice: config.ice.clone(),
        video: switches.video_enabled.load(Ordering::Relaxed),
    };
    let report = |uid: &str, reason: String| {
        let _ = events.send(PeerEvent::Error {
            uid: uid.to_owned(),
            reason,
        });
    };
    // Builds the connection to `remote` and registers it.
    let create = |remote: &str, role: PeerRole| {
        let (setup, peers, context) = (setup(remote, role), peers.clone(), context.clone());
        async move {
            let peer = Peer::create(&setup, context).await?;
            peers.lock().insert(setup.remote_uid.clone(), peer.clone());
            Ok::<_, crate::peer::PeerError>(peer)
        }
    };
    // Connects and starts (the offering side offers now).
    let connect = |remote: String, role: PeerRole| {
        let create = &create;
        let report = &report;
        async move {
            match create(&remote, role).await {
                Ok(peer) => {
                    if let Err(err) = peer.start().await {
                        report(&remote, err.to_string());
                    }
                }
                Err(err) => report(&remote, err.to_string()),
            }
        }
    };
    let mut route = MediaRoute::Mesh;
    // Remote participants, whatever the route.
    let mut members: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    while let Some(command) = commands.recv().await {
        match command {
            Command::SetRoute(next) => {
                if next == route {
                    continue;
                }
                route = next;
                // The old connections go; what they delivered is delivered again by the new.
                let old: Vec<Arc<Peer>> = peers.lock().drain().map(|(_, p)| p).collect();
                for peer in old {
                    peer.close().await;
                }
                match route {
                    MediaRoute::Sfu => {
                        connect(SFU_PUBLISH_PEER.to_owned(), PeerRole::SfuPublisher).await;
                    }
                    MediaRoute::Mesh => {
                        for uid in members.clone() {
                            connect(uid, PeerRole::Mesh).await;
                        }
                    }
                }
            }
            Command::AddPeer(uid) => {
                if uid == config.local_uid {
                    continue;
                }
                context.probe.welcome(&uid);
                members.insert(uid.clone());
                if route == MediaRoute::Mesh && !peers.lock().contains_key(&uid) {
                    connect(uid, PeerRole::Mesh).await;
                }
            }
            Command::RemovePeer(uid) => {
                members.remove(&uid);
                let removed = peers.lock().remove(&uid);
                crate::mixer::lock(&context.mixer).remove(&uid);
                context.frames.remove(&uid);
                context.probe.remove(&uid);
                if let Some(peer) = removed {
                    peer.close().await;
                }
            }
            Command::Signal { from, signal } => {
                let role = match from.as_str() {
                    SFU_PUBLISH_PEER => PeerRole::SfuPublisher,
                    SFU_SUBSCRIBE_PEER => PeerRole::SfuSubscriber,
                    _ => PeerRole::Mesh,
                };
                let on_route = match route {
                    MediaRoute::Mesh => role == PeerRole::Mesh,
                    MediaRoute::Sfu => role != PeerRole::Mesh,
                };
                if !on_route {
                    // Left over from the route we left.
                    continue;
                }
                let existing = peers.get(&from);
                // A fresh offer for a peer we already have, with another DTLS certificate,
                // means they started over (their app restarted, or they rebuilt the link):
                // replace the old connection. The same certificate with new ICE credentials
                // is an ICE restart, applied to the same connection.
                let existing = match existing {
                    Some(old)
                        if matches!(&signal, PeerSignal::Offer { sdp } if !old.continues_connection(sdp).await)
                            && !old.is_offerer()
                            && old.has_remote_description().await =>
                    {
                        peers.lock().remove(&from);
                        old.close().await;
                        None
                    }
                    other => other,
                };
                let peer = match existing {
                    Some(peer) => peer,
                    None if !matches!(signal, PeerSignal::Offer { .. })
                        || role == PeerRole::SfuPublisher =>
                    {
                        // Only an offer starts a connection; anything else for a peer we do
                        // not know (yet, or any more) is stale.
                        continue;
                    }
                    None => {
                        // An offer may arrive before we were told about its sender.
                        match create(&from, role).await {
                            Ok(peer) => peer,
                            Err(err) => {
                                report(&from, err.to_string());
                                continue;
                            }
                        }
                    }
                };
                if let Err(err) = peer.handle_signal(signal).await {
                    report(&from, format!("bad signal: {err}"));
                }
            }
            Command::RestartDownConnections => {
                for peer in peers.all() {
                    if let Err(err) = peer.restart_ice_if_down().await {
                        report(peer.remote_uid(), format!("ICE restart: {err}"));
                    }
                }
            }
            Command::EnableVideo => {
                let targets: Vec<Arc<Peer>> = peers.all();
                for peer in targets {
                    if let Err(err) = peer.enable_video().await {
                        report(peer.remote_uid(), format!("adding video: {err}"));
                    }
                }
            }
            Command::Close => break,
        }
    }
    let all: Vec<Arc<Peer>> = peers.lock().drain().map(|(_, p)| p).collect();
    for peer in all {
        peer.close().await;
    }
}

/// Every second: round-trip time and packet loss of each peer's link.
async fn measure_links(
    peers: Peers,
    switches: Arc<SendSwitches>,
    events: Sender<PeerEvent>,
    actor: mpsc::UnboundedSender<Command>,
) {
    let mut previous: HashMap<String, (u64, u64)> = HashMap::new();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    while !switches.closed.load(Ordering::Relaxed) {
        ticker.tick().await;
        let _ = actor.send(Command::RestartDownConnections);
        let current: Vec<Arc<Peer>> = peers.all();
        let mut lowest_target: Option<f64> = None;
        for peer in current {
            let crate::peer::LinkTotals {
                rtt_ms,
                packets_received: received,
                packets_lost: lost,
                target_bitrate_bps: target,
                path,
            } = peer.link_totals().await;
            if let Some(target) = target
                && peer.role() != PeerRole::SfuSubscriber
            {
                lowest_target = Some(lowest_target.map_or(target, |t| t.min(target)));
            }
            let uid = peer.remote_uid().to_owned();
            let (last_received, last_lost) = previous
                .insert(uid.clone(), (received, lost))
                .unwrap_or((0, 0));
            let (got, missed) = (
                received.saturating_sub(last_received),
                lost.saturating_sub(last_lost),
            );
            if got + missed == 0 {
                continue;
            }
            let loss = missed as f32 / (got + missed) as f32;
            if events
                .send(PeerEvent::Quality {
                    uid,
                    rtt_ms,
                    loss,
                    path,
                })
                .is_err()
            {
                return;
            }
        }
        if let Some(target) = lowest_target {
            switches
                .target_bitrate
                .store(target as u32, Ordering::Relaxed);
        }
    }
}

/// Sends our video every frame period: the camera's newest frame when a camera is in use
/// (nothing new → nothing sent), else the test pattern. The encoder is rebuilt when the
/// picture's size changes (a camera with another resolution).
///
/// It runs on its own thread (`huddle-video-send`): capture conversion and H.264 encoding
/// never occupy the async runtime; writing the encoded frame to the peers' tracks is handed to
/// the runtime.
struct VideoSendLoop {
    config: SessionConfig,
    runtime: tokio::runtime::Handle,
    camera: SharedCamera,
    preview: SharedPreview,
    peers: Peers,
    switches: Arc<SendSwitches>,
    context: Arc<PeerContext>,
}

impl VideoSendLoop {
    fn run(self) {
        let Self {
            config,
            runtime,
            camera,
            preview,
            peers,
            switches,
            context,
        } = self;
        let (events, recording, counters) =
            (&context.events, &context.recording, &context.counters);
        let settings = config.video;
        let pattern = TestPattern::new(settings.width, settings.height, &config.local_uid);
        let report = |reason: String| {
            let _ = events.send(PeerEvent::Error {
                uid: config.local_uid.clone(),
                reason,
            });
        };
        let mut whole: Option<I420Frame> = None;
        let mut scaled = ScaledPicture::default();
        let mut smaller_layers = SmallerLayers::default();
        let period = Duration::from_secs_f32(1.0 / settings.fps.max(1.0));
        let mut next_tick = Instant::now();
        let mut rgba = Vec::new();
        let mut number = 0u32;
        // RTP time advances by the real time between frames sent (a camera slower than the
        // ticker, or frames skipped, must not slow the receiver's clock).
        let mut last_sent: Option<Instant> = None;
        while !switches.closed.load(Ordering::Relaxed) {
            // One frame period per turn; a late turn skips the missed ticks (no burst).
            let now = Instant::now();
            if next_tick > now {
                std::thread::sleep(next_tick - now);
            }
            next_tick = (next_tick + period).max(Instant::now());
            let video_on = !switches.video_paused.load(Ordering::Relaxed)
                && switches.video_enabled.load(Ordering::Relaxed);
            camera
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .sync(video_on, settings, |err| {
                    let _ = events.send(PeerEvent::DeviceFailed {
                        kind: crate::DeviceKind::VideoInput,
                        id: err.id,
                        reason: err.reason,
                    });
                });
            if !video_on {
                continue;
            }
            let targets: Vec<Arc<Peer>> = peers.all();
            // Adaptive receive: encode for those who watch, at the most any of them wants.
            let watching: Vec<u32> = targets
                .iter()
                .map(|p| p.video_wanted())
                .filter(|(paused, _)| !paused)
                .map(|(_, cap)| if cap == 0 { settings.bitrate_bps } else { cap })
                .collect();
            let recorder = recorder_of(recording);
            let show_preview = preview.wanted.load(Ordering::Relaxed);
            if watching.is_empty() && recorder.is_none() && !show_preview {
                continue;
            }
            let wanted_bitrate = watching
                .iter()
                .copied()
                .max()
                .unwrap_or(settings.bitrate_bps);
            let (width, height) = {
                let mut camera = camera.lock().unwrap_or_else(|p| p.into_inner());
                match camera.capture.as_ref() {
                    Some(capture) => match (capture.take_newest(), capture.failure()) {
                        (Some(picture), _) => {
                            let size = crate::screen::crop_to_even(
                                picture.width,
                                picture.height,
                                picture.rgba,
                                &mut rgba,
                            );
                            match size {
                                Some(size) => size,
                                None => continue,
                            }
                        }
                        (None, Some(failure)) => {
                            let _ = events.send(PeerEvent::DeviceFailed {
                                kind: crate::DeviceKind::VideoInput,
                                id: capture.id().to_owned(),
                                reason: format!("stopped ({failure}); sending the test pattern"),
                            });
                            camera.capture = None;
                            camera.failed = true;
                            continue;
                        }
                        (None, None) => continue,
                    },
                    None if camera.awaiting_camera() => continue,
                    None => {
                        number += 1;
                        pattern.render_rgba(
                            FrameStamp {
                                frame: number,
                                capture_ms: wall_clock_ms(),
                            },
                            &mut rgba,
                        );
                        (settings.width, settings.height)
                    }
                }
            };
            if show_preview {
                preview.offer(width, height, &rgba);
            }
            if watching.is_empty() && recorder.is_none() {
                continue;
            }
            if whole
                .as_ref()
                .is_none_or(|frame| (frame.width(), frame.height()) != (width, height))
            {
                match I420Frame::new(width, height) {
                    Ok(frame) => whole = Some(frame),
                    Err(err) => {
                        report(format!("video frame at {width}×{height}: {err}"));
                        whole = None;
                        continue;
                    }
                }
            }
            let Some(frame) = whole.as_mut() else {
                continue;
            };
            if frame.fill_from_rgba(&rgba).is_err() {
                continue;
            }
            let frame = &*frame;
            // Publishing to the SFU, the camera also goes out at half and a quarter of its size.
            let simulcast = targets.iter().any(|peer| peer.sends_simulcast());
            let congestion = switches.target_bitrate.load(Ordering::Relaxed);
            let congestion = match (congestion, simulcast) {
                (0, _) => settings.bitrate_bps,
                (target, false) => video_share_of(target),
                (target, true) => {
                    whole_layer_share_of(video_share_of(target), &context.smaller_layers_wanted)
                }
            };
            // Never above what we were configured for, what the link carries, or what the
            // receivers want; the encoder rebuilds only on big moves.
            let whole_bps = congestion.min(settings.bitrate_bps).min(wanted_bitrate);
            // Short of bits, the picture shrinks rather than the frame rate (with simulcast,
            // the receivers pick smaller layers instead).
            let sent_settings = EncoderSettings {
                width,
                height,
                ..settings
            };
            let encoded = scaled.encode(
                frame,
                (sent_settings, whole_bps),
                simulcast,
                switches.keyframe_wanted.swap(false, Ordering::Relaxed),
            );
            let (encoded, (sent_width, sent_height)) = match encoded {
                Ok(Some(encoded)) => encoded,
                Ok(None) => continue,
                Err(err) => {
                    report(format!("video encoder for {width}×{height}: {err}"));
                    continue;
                }
            };
            let smaller = if simulcast {
                smaller_layers
                    .encode(
                        frame,
                        (settings, whole_bps),
                        &context.smaller_layers_keyframe_wanted,
                        &context.smaller_layers_wanted,
                    )
                    .unwrap_or_else(|err| {
                        report(format!("simulcast layers of {width}×{height}: {err}"));
                        Vec::new()
                    })
            } else {
                Vec::new()
            };
            if let Some(recorder) = &recorder {
                recorder.video(&config.local_uid, &encoded.data, sent_width, sent_height);
            }
            let now = Instant::now();
            let duration = last_sent.map_or(period, |at| {
                now.duration_since(at)
                    .clamp(Duration::from_millis(1), Duration::from_secs(1))
            });
            last_sent = Some(now);
            let sent = runtime.block_on(async {
                let mut sent = false;
                for peer in &targets {
                    sent |= peer.write_video(&encoded, duration).await;
                    if peer.sends_simulcast() {
                        for (index, (layer, frame)) in &smaller {
                            if peer.write_video_layer(*layer, frame, duration).await {
                                counters.smaller_layer_frames_sent[*index]
                                    .fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                }
                sent
            });
            if sent {
                counters.video_frames_sent.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Sends 20 ms of audio every 20 ms: the microphone's frames when there is one, cleaned by
/// the voice processing (echo of what was `played`, noise, gain; mono voice only), else the
/// tone (in turns, with a talk pattern); each packet carries its level and voice flag, and our
/// own speaking is told from the same level (never while muted).
async fn send_audio(
    (local_uid, tone_hz, stereo, talk_pattern): (
        String,
        f32,
        bool,
        Option<crate::speech::TalkPattern>,
    ),
    (microphone, stages, played): (
        SharedMicrophone,
        crate::voice::VoiceProcessing,
        Receiver<Vec<f32>>,
    ),
    peers: Peers,
    switches: Arc<SendSwitches>,
    context: Arc<PeerContext>,
) {
    let (counters, recording) = (&context.counters, &context.recording);
    let (bitrate, channels) = if stereo { (64_000, 2) } else { (32_000, 1) };
    let Ok(mut encoder) = OpusEncoder::with_channels(bitrate, stereo) else {
        return;
    };
    let mut tone = ToneSource::new(tone_hz);
    let mut right_tone = ToneSource::new(crate::audio::right_tone_frequency(tone_hz));
    let mut samples = vec![0i16; FRAME_SAMPLES * channels];
    let mut left = vec![0i16; FRAME_SAMPLES];
    let mut right = vec![0i16; FRAME_SAMPLES];
    let mut ticker = tokio::time::interval(Duration::from_millis(20));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut speaking = crate::speech::SpeakingDetector::default();
    // Someone talking into a muted real microphone gets a hint, once per stretch of talk.
    let mut talking_while_muted = crate::speech::SpeakingDetector::default();
    let mut processing = VoiceStage::new(&local_uid, stages, stereo);
    while !switches.closed.load(Ordering::Relaxed) {
        ticker.tick().await;
        let microphone = microphone.lock().unwrap_or_else(|p| p.into_inner()).clone();
        // Whether a microphone frame came in this tick (a late one leaves silence).
        let mut captured = false;
        match &microphone {
            Some(frames) => {
                // If the microphone runs a little fast, skip to the newest frames so latency
                // never builds up past 80 ms (a skip also moves the echo canceller's delay, so
                // a little jitter is let through).
                while frames.len() > MICROPHONE_BACKLOG {
                    let _ = frames.try_recv();
                }
                match frames.try_recv() {
                    Ok(frame) if frame.len() == samples.len() => {
                        samples.copy_from_slice(&frame);
                        captured = true;
                    }
                    _ => samples.fill(0),
                }
            }
            None if stereo => {
                tone.fill(&mut left);
                right_tone.fill(&mut right);
                for (pair, (l, r)) in samples.chunks_exact_mut(2).zip(left.iter().zip(&right)) {
                    pair[0] = *l;
                    pair[1] = *r;
                }
            }
            None => tone.fill(&mut samples),
        }
        if microphone.is_none()
            && talk_pattern.is_some_and(|pattern| !pattern.talking(started.elapsed()))
        {
            samples.fill(0);
        }
        let source = match (&microphone, captured) {
            (None, _) => CaptureSource::Synthetic,
            (Some(_), true) => CaptureSource::Microphone,
            (Some(_), false) => CaptureSource::MicrophoneLate,
        };
        processing.clean(source, &played, &mut samples, &context.events);
        let level = crate::speech::AudioLevel::of(&samples);
        let muted = switches.audio_muted.load(Ordering::Relaxed);
        if let Some(now) = speaking.frame(started.elapsed(), level.voice && !muted) {
            let _ = context.events.send(PeerEvent::Speaking {
                uid: local_uid.clone(),
                speaking: now,
            });
        }
        let voice_while_muted = level.voice && muted && microphone.is_some();
        if talking_while_muted.frame(started.elapsed(), voice_while_muted) == Some(true) {
            let _ = context.events.send(PeerEvent::TalkingWhileMuted);
        }
        if muted {
            continue;
        }
        let targets: Vec<Arc<Peer>> = peers.all();
        let recorder = recorder_of(recording);
        if targets.is_empty() && recorder.is_none() {
            continue;
        }
        let Ok(packet) = encoder.encode(&samples) else {
            continue;
        };
        if let Some(recorder) = &recorder {
            recorder.audio(&local_uid, &packet);
        }
        let mut sent = false;
        for peer in &targets {
            sent |= peer.write_audio(&packet, level).await;
        }
        if sent {
            counters.audio_frames_sent.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The camera's encoder and the picture it encodes: the whole picture, or the whole halved
/// as many times as [`ResolutionScaler`] says for the rate (never while sending simulcast).
/// The encoder is made again at each change of size, which starts with a keyframe.
#[derive(Default)]
struct ScaledPicture {
    scaler: ResolutionScaler,
    /// The whole picture halved once, twice: as many as the current halvings need.
    halves: Vec<I420Frame>,
    encoder: Option<((u32, u32), H264Encoder)>,
}

impl ScaledPicture {
    /// Encodes `whole` (configured as `settings`, its size) at `bitrate_bps`, shrunk when the
    /// rate is short and `simulcast` is off; a keyframe when `keyframe` is set. The frame comes
    /// with the size it was encoded at; `None` when the encoder skipped it.
    fn encode(
        &mut self,
        whole: &I420Frame,
        (settings, bitrate_bps): (EncoderSettings, u32),
        simulcast: bool,
        keyframe: bool,
    ) -> Result<Option<(crate::video::EncodedFrame, (u32, u32))>, crate::video::VideoError> {
        let halvings = if simulcast {
            0
        } else {
            self.scaler
                .halvings_for(Instant::now(), settings, bitrate_bps)
        } as usize;
        self.halves.truncate(halvings);
        for index in 0..halvings {
            let source = if index == 0 {
                whole
            } else {
                &self.halves[index - 1]
            };
            let Some((width, height)) = source.halved_size() else {
                break;
            };
            if self
                .halves
                .get(index)
                .is_none_or(|half| (half.width(), half.height()) != (width, height))
            {
                self.halves.truncate(index);
                self.halves.push(I420Frame::new(width, height)?);
            }
            let (above, rest) = self.halves.split_at_mut(index);
            above
                .last()
                .map_or(whole, |half| half)
                .halve_into(&mut rest[0])?;
        }
        let picture = self.halves.last().unwrap_or(whole);
        let size = (picture.width(), picture.height());
        let encoder = match &mut self.encoder {
            Some((built, encoder)) if *built == size => encoder,
            slot => {
                let sized = EncoderSettings {
                    width: size.0,
                    height: size.1,
                    ..settings
                };
                &mut slot.insert((size, H264Encoder::new(sized)?)).1
            }
        };
        if keyframe {
            encoder.request_keyframe();
        }
        let _ = encoder.set_bitrate(bitrate_bps);
        Ok(encoder.encode(picture)?.map(|frame| (frame, size)))
    }
}

/// Each smaller simulcast layer's bitrate, as a share of the whole picture's (a quarter of
/// the pixels at a bit more than a quarter of the rate; a sixteenth at a tenth).
const SMALLER_LAYER_SHARES: [(SimulcastLayer, f32); 2] =
    [(SimulcastLayer::Medium, 0.28), (SimulcastLayer::Low, 0.1)];

/// The whole picture's part of what the camera may send when it also sends the smaller
/// layers that are `wanted` (medium, low).
fn whole_layer_share_of(video_bps: u32, wanted: &[AtomicBool; 2]) -> u32 {
    let all: f32 = 1.0
        + SMALLER_LAYER_SHARES
            .iter()
            .zip(wanted)
            .filter(|(_, wanted)| wanted.load(Ordering::Relaxed))
            .map(|((_, share), _)| share)
            .sum::<f32>();
    (video_bps as f32 / all) as u32
}

/// The encoders of the camera's smaller simulcast layers (half and a quarter of the picture,
/// each halved from the one above), made when a publishing connection to the SFU first needs
/// them and again when the picture's size changes. A picture too small to halve has fewer. A
/// layer nobody receives is halved (the next one is made from it) but not encoded; it starts
/// again with a keyframe.
#[derive(Default)]
struct SmallerLayers {
    coders: Vec<(SimulcastLayer, H264Encoder, I420Frame)>,
    /// Which layers were left out last time.
    left_out: [bool; 2],
}

impl SmallerLayers {
    /// Encodes `whole` (encoded with `settings` at `whole_bps`) at each smaller layer that is
    /// `wanted`, at its share of `whole_bps`; a layer whose `keyframe_wanted` flag is set
    /// (medium, low) makes a keyframe. Each frame comes with its layer's index (0 medium,
    /// 1 low).
    fn encode(
        &mut self,
        whole: &I420Frame,
        (settings, whole_bps): (EncoderSettings, u32),
        keyframe_wanted: &[AtomicBool; 2],
        wanted: &[AtomicBool; 2],
    ) -> Result<Vec<(usize, (SimulcastLayer, crate::video::EncodedFrame))>, crate::video::VideoError>
    {
        let mut sizes = Vec::new();
        let mut size = whole.halved_size();
        for _ in SMALLER_LAYER_SHARES {
            let Some((width, height)) = size else { break };
            sizes.push((width, height));
            size = crate::video::halved_size(width, height);
        }
        let built: Vec<(u32, u32)> = self
            .coders
            .iter()
            .map(|(_, _, frame)| (frame.width(), frame.height()))
            .collect();
        if built != sizes {
            self.coders.clear();
            for ((width, height), (layer, share)) in sizes.into_iter().zip(SMALLER_LAYER_SHARES) {
                let layer_settings = EncoderSettings {
                    width,
                    height,
                    bitrate_bps: (settings.bitrate_bps as f32 * share) as u32,
                    ..settings
                };
                self.coders.push((
                    layer,
                    H264Encoder::new(layer_settings)?,
                    I420Frame::new(width, height)?,
                ));
            }
        }
        let mut encoded = Vec::new();
        for index in 0..self.coders.len() {
            let (above, rest) = self.coders.split_at_mut(index);
            let source = above.last().map_or(whole, |(_, _, frame)| frame);
            let (layer, encoder, frame) = &mut rest[0];
            source.halve_into(frame)?;
            if !wanted[index].load(Ordering::Relaxed) {
                self.left_out[index] = true;
                continue;
            }
            let resumed = std::mem::take(&mut self.left_out[index]);
            if keyframe_wanted[index].swap(false, Ordering::Relaxed) || resumed {
                encoder.request_keyframe();
            }
            let share = SMALLER_LAYER_SHARES[index].1;
            let _ = encoder.set_bitrate((whole_bps as f32 * share) as u32);
            if let Some(frame) = encoder.encode(frame)? {
                encoded.push((index, (*layer, frame)));
            }
        }
        Ok(encoded)
    }
}

/// What the camera may use of congestion control's target, which is for everything sent:
/// the pacer releases packets at that target, so video at all of it plus the voice, packet
/// headers and retransmissions queued without end (under a 250 kbit/s cap, frames arrived
/// 0.3-0.6 s late and were given up from the third second). The voice (32 kbit/s mono
/// Opus), the headers of its 50 packets a second and of video's, and retransmissions get
/// [`NON_VIDEO_BPS`] and a tenth of the rest. (A stereo send, 64 kbit/s, and a screen share
/// are not counted apart: they eat into that tenth.)
fn video_share_of(target_bps: u32) -> u32 {
    (target_bps.saturating_sub(NON_VIDEO_BPS) / 10 * 9).max(crate::video::MIN_BITRATE_BPS)
}

/// Bits per second of a call that are not the camera's: see [`video_share_of`].
const NON_VIDEO_BPS: u32 = 70_000;

/// Microphone frames (20 ms) that may wait for the audio sender before the oldest are skipped.
const MICROPHONE_BACKLOG: usize = 4;

/// Where the audio sender's frame came from this tick.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CaptureSource {
    /// The tone (no microphone).
    Synthetic,
    /// A frame from the microphone.
    Microphone,
    /// A microphone is open but its frame has not come yet (silence is sent).
    MicrophoneLate,
}

/// The voice processing of the audio sender: a [`crate::voice::VoiceProcessor`] while a real
/// microphone is sent as mono voice, none otherwise (the tone, stereo sends, every stage off).
struct VoiceStage {
    local_uid: String,
    stages: crate::voice::VoiceProcessing,
    wanted: bool,
    processor: Option<crate::voice::VoiceProcessor>,
    /// Set once the processing failed: the microphone is then sent as captured.
    failed: bool,
}

impl VoiceStage {
    fn new(local_uid: &str, stages: crate::voice::VoiceProcessing, stereo: bool) -> Self {
        Self {
            local_uid: local_uid.to_owned(),
            stages,
            wanted: stages.any() && !stereo,
            processor: None,
            failed: false,
        }
    }

    /// Feeds what was played since the last frame to the echo canceller, then cleans the
    /// 20 ms microphone frame in `samples` when it comes from a real microphone. A failure is
    /// reported once and the microphone goes on unprocessed.
    fn clean(
        &mut self,
        source: CaptureSource,
        played: &Receiver<Vec<f32>>,
        samples: &mut [i16],
        events: &Sender<PeerEvent>,
    ) {
        if source == CaptureSource::MicrophoneLate {
            // The frame is only late: it comes next tick, and what was played waits for it,
            // so the canceller's two streams stay in step.
            return;
        }
        if !(self.wanted && source == CaptureSource::Microphone) || self.failed {
            // The reference only matters while processing; a new microphone starts afresh.
            self.processor = None;
            while played.try_recv().is_ok() {}
            return;
        }
        let result = (|| {
            let processor = match &mut self.processor {
                Some(processor) => processor,
                None => self
                    .processor
                    .insert(crate::voice::VoiceProcessor::new(self.stages)?),
            };
            for chunk in played.try_iter() {
                processor.far_end(&chunk)?;
            }
            processor.near_end(samples)
        })();
        if let Err(err) = result {
            self.failed = true;
            self.processor = None;
            let _ = events.send(PeerEvent::Error {
                uid: self.local_uid.clone(),
                reason: format!("{err}; sending the microphone unprocessed"),
            });
        }
    }
}

/// The screen share's thread: capture → I420 → H.264 (its own encoder, sized by the source)
/// → every peer's screen track, paced at the source's frame rate.
struct ScreenShareLoop {
    local_uid: String,
    runtime: tokio::runtime::Handle,
    peers: Peers,
    switches: Arc<SendSwitches>,
    counters: Arc<MediaCounters>,
    events: Sender<PeerEvent>,
    recording: RecordingTap,
    stop: Arc<AtomicBool>,
    bitrate_bps: u32,
}

impl ScreenShareLoop {
    fn run(self, mut source: Box<dyn ScreenSource>) {
        let fps = source.fps().clamp(1.0, 60.0);
        let period = Duration::from_secs_f32(1.0 / fps);
        let mut rgba = Vec::new();
        let mut coder: Option<(H264Encoder, I420Frame)> = None;
        let mut next = Instant::now();
        let ended = |reason: String| {
            let _ = self.events.send(PeerEvent::ScreenShareEnded { reason });
        };
        let running =
            || !self.stop.load(Ordering::Relaxed) && !self.switches.closed.load(Ordering::Relaxed);
        while running() {
            let (width, height) = match source.next_frame(&mut rgba) {
                Ok(Some(size)) => size,
                Ok(None) => continue,
                Err(err) => {
                    if running() {
                        ended(err.to_string());
                    }
                    break;
                }
            };
            if !running() {
                break;
            }
            if coder
                .as_ref()
                .is_none_or(|(_, frame)| (frame.width(), frame.height()) != (width, height))
            {
                let settings = EncoderSettings {
                    width,
                    height,
                    fps,
                    bitrate_bps: self.bitrate_bps,
                    keyframe_interval: (fps * 4.0) as u32,
                };
                match (H264Encoder::new(settings), I420Frame::new(width, height)) {
                    (Ok(encoder), Ok(frame)) => coder = Some((encoder, frame)),
                    (Err(err), _) | (_, Err(err)) => {
                        ended(format!("{}: {err}", source.describe()));
                        break;
                    }
                }
            }
            let Some((encoder, frame)) = coder.as_mut() else {
                break;
            };
            if frame.fill_from_rgba(&rgba).is_err() {
                continue;
            }
            if self
                .switches
                .screen_keyframe_wanted
                .swap(false, Ordering::Relaxed)
            {
                encoder.request_keyframe();
            }
            if let Ok(Some(encoded)) = encoder.encode(frame) {
                if let Some(recorder) = recorder_of(&self.recording) {
                    let name = crate::peer::screen_track_name(&self.local_uid);
                    recorder.video(&name, &encoded.data, width, height);
                }
                let peers = self.peers.clone();
                let sent = self.runtime.block_on(async move {
                    let targets: Vec<Arc<Peer>> = peers.all();
                    let mut sent = false;
                    for peer in targets {
                        sent |= peer.write_screen(&encoded, period).await;
                    }
                    sent
                });
                if sent {
                    self.counters
                        .screen_frames_sent
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
            next += period;
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            } else {
                next = now;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The voice processing cleans only a real microphone sent as mono voice: the synthetic
    /// tone, a stereo send and a session with every stage off pass sample for sample, and
    /// what was played is drained either way; a late microphone frame leaves both alone; a
    /// mono microphone's DC offset is taken out by the processing's high-pass filter.
    #[test]
    fn voice_processing_cleans_only_a_mono_microphone() {
        let (events, _events_rx) = crossbeam_channel::unbounded();
        let (speaker, played) = crossbeam_channel::unbounded();
        let offset = vec![4_000i16; FRAME_SAMPLES];
        let run = |stage: &mut VoiceStage, source: CaptureSource| {
            let mut samples = offset.clone();
            for _ in 0..50 {
                let _ = speaker.send(vec![0.0f32; FRAME_SAMPLES]);
                samples.copy_from_slice(&offset);
                stage.clean(source, &played, &mut samples, &events);
            }
            assert!(played.is_empty(), "what was played is drained");
            samples
        };
        let stages = crate::voice::VoiceProcessing::default();
        let (tone, microphone) = (CaptureSource::Synthetic, CaptureSource::Microphone);
        assert_eq!(run(&mut VoiceStage::new("a", stages, false), tone), offset);
        assert_eq!(
            run(&mut VoiceStage::new("a", stages, true), microphone),
            offset
        );
        let off = crate::voice::VoiceProcessing::OFF;
        assert_eq!(
            run(&mut VoiceStage::new("a", off, false), microphone),
            offset
        );
        // A late microphone frame: the silence sent meanwhile is left alone, and what was
        // played waits for the frame.
        let mut stage = VoiceStage::new("a", stages, false);
        let _ = speaker.send(vec![0.0f32; FRAME_SAMPLES]);
        let mut silence = vec![0i16; FRAME_SAMPLES];
        stage.clean(
            CaptureSource::MicrophoneLate,
            &played,
            &mut silence,
            &events,
        );
        assert_eq!(played.len(), 1, "what was played waits");
        while played.try_recv().is_ok() {}
        let cleaned = run(&mut VoiceStage::new("a", stages, false), microphone);
        let mean = cleaned.iter().map(|s| f64::from(*s)).sum::<f64>() / cleaned.len() as f64;
        assert!(
            mean.abs() < 400.0,
            "the offset is filtered out: mean {mean}"
        );
    }
}
