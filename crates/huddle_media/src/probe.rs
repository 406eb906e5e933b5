//! Receive statistics of a session, per remote participant, kept off the application's
//! thread.
//!
//! Counting is always on and cheap (a lock per decoded frame): video frames decoded and their
//! size and rate, pictures replaced before the application took them, audio frames decoded,
//! concealed and their channels. **Measuring** ([`SessionConfig::measure`](crate::session::SessionConfig::measure),
//! for tests, bots and benchmarks) adds what costs more:
//!
//! - each decoded picture's synthetic stamp is read on its decode thread: the frame number,
//!   and the capture → decoded latency (a picture without a stamp gives none);
//! - decoded audio crosses a bounded queue (frames that do not fit are dropped and counted)
//!   to the probe's own thread, which finds each remote's tone over the last half second.
//!
//! [`MediaProbe::snapshot`] copies the figures for whoever asks.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::audio::detect_tone;
use crate::peer::DecodedVideo;

/// Latency samples kept per remote participant (10 minutes at 30 fps).
pub const MAX_LATENCY_SAMPLES: usize = 18_000;
/// Decoded audio frames (20 ms) that may wait for the probe thread (2 s for 5 remotes).
pub const PROBE_AUDIO_QUEUE: usize = 500;
/// Audio kept per remote for tone detection: half a second at 48 kHz (a tone is found once a
/// whole window has arrived, so the start of a stream does not blur it).
const TONE_WINDOW: usize = 24_000;

/// What was received from one remote participant.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RemoteStats {
    /// Video frames decoded (camera track).
    pub video_frames_decoded: u64,
    /// Size of the last decoded frame (width, height).
    pub video_size: (u32, u32),
    /// Decoded frames per second over the last second.
    pub video_fps: f32,
    /// Measuring: the frame number of the last stamped frame.
    pub last_frame_number: Option<u32>,
    /// Measuring: pictures decoded after a stamped one whose stamp cannot be read (a broken
    /// picture: decoded from a frame with missing or damaged data).
    pub video_frames_unstamped: u64,
    /// Measuring: capture → decoded latency of the stamped frames, in milliseconds (the
    /// newest [`MAX_LATENCY_SAMPLES`]).
    pub video_latency_ms: Vec<u32>,
    /// Audio frames decoded (20 ms each).
    pub audio_frames_decoded: u64,
    /// Of which concealed (lost, made up by packet-loss concealment).
    pub audio_frames_concealed: u64,
    /// Of which recovered from the next packet's in-band FEC (lost, but rebuilt from the
    /// redundant copy a SILK or hybrid Opus packet carries).
    pub audio_frames_recovered: u64,
    /// Measuring: audio frames the probe queue had no room for.
    pub audio_frames_dropped: u64,
    /// Audio packets received but not decoded: out of earshot, or not among the loudest few
    /// talkers of a large call.
    pub audio_frames_skipped: u64,
    /// Channels of their audio stream (1 mono, 2 stereo; 0 before any audio).
    pub audio_channels: u8,
    /// Measuring: the tone heard over the last half second (the only channel, or the left one).
    pub audio_tone_hz: Option<f32>,
    /// Measuring: the tone heard on the right channel of a stereo stream.
    pub audio_right_tone_hz: Option<f32>,
    recent_frames: Vec<Instant>,
}

/// Where a decoded audio frame came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AudioFrameOrigin {
    /// Its own packet.
    Decoded,
    /// Lost; rebuilt from the in-band FEC of the packet after it.
    RecoveredByFec,
    /// Lost; made up by packet-loss concealment.
    Concealed,
}

/// Every remote's figures, and when the first remote media arrived.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProbeSnapshot {
    /// Per remote uid.
    pub remotes: HashMap<String, RemoteStats>,
    /// When the first remote video frame was decoded.
    pub first_video: Option<Instant>,
    /// When the first remote audio frame was decoded.
    pub first_audio: Option<Instant>,
}

/// One decoded audio frame on its way to the probe thread.
struct ProbeAudio {
    uid: String,
    left: Vec<i16>,
    right: Option<Vec<i16>>,
}

/// A session's receive statistics (shared by its decode threads and receive tasks).
pub struct MediaProbe {
    measuring: bool,
    figures: Mutex<ProbeSnapshot>,
    /// Who left: what still arrives of them (an SFU stream not yet renegotiated away) is not
    /// counted, so their figures do not start again from nothing.
    departed: Mutex<std::collections::HashSet<String>>,
    audio: Option<Sender<ProbeAudio>>,
    closed: Arc<AtomicBool>,
}

impl MediaProbe {
    /// A probe; with `measuring`, its thread starts (and ends once `closed` is set).
    pub fn start(measuring: bool, closed: Arc<AtomicBool>) -> Arc<Self> {
        let (audio, queue) = if measuring {
            let (tx, rx) = crossbeam_channel::bounded(PROBE_AUDIO_QUEUE);
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let probe = Arc::new(Self {
            measuring,
            figures: Mutex::new(ProbeSnapshot::default()),
            departed: Mutex::new(Default::default()),
            audio,
            closed,
        });
        if let Some(queue) = queue {
            let weak = Arc::downgrade(&probe);
            let spawned = std::thread::Builder::new()
                .name("huddle-media-probe".into())
                .spawn(move || find_tones(&queue, &weak));
            if let Err(err) = spawned {
                tracing::warn!("no media probe thread, tones will not be measured: {err}");
            }
        }
        probe
    }

    /// Whether stamps and tones are measured.
    pub fn measuring(&self) -> bool {
        self.measuring
    }

    /// Counts a decoded camera frame of `uid` (and, measuring, its stamp's latency).
    pub fn video(&self, uid: &str, frame: &DecodedVideo) {
        let now = Instant::now();
        let latency = frame
            .stamp
            .filter(|_| self.measuring)
            .map(|stamp| (stamp.frame, wall_clock_ms().wrapping_sub(stamp.capture_ms)));
        let mut figures = self.lock();
        if self.departed(uid) {
            return;
        }
        figures.first_video.get_or_insert(now);
        let remote = figures.remotes.entry(uid.to_owned()).or_default();
        remote.video_frames_decoded += 1;
        remote.video_size = (frame.width, frame.height);
        remote.recent_frames.push(now);
        remote
            .recent_frames
            .retain(|t| now.duration_since(*t) < Duration::from_secs(1));
        remote.video_fps = remote.recent_frames.len() as f32;
        if self.measuring && latency.is_none() && remote.last_frame_number.is_some() {
            remote.video_frames_unstamped += 1;
        }
        if let Some((number, latency_ms)) = latency {
            remote.last_frame_number = Some(number);
            if remote.video_latency_ms.len() >= MAX_LATENCY_SAMPLES {
                remote.video_latency_ms.remove(0);
            }
            remote.video_latency_ms.push(latency_ms);
        }
    }

    /// Counts 20 ms of decoded audio of `uid`, given as interleaved stereo (a mono stream is
    /// on both sides; `stereo` says which it was). Measuring, it queues the channels for tone
    /// detection.
    pub fn audio(&self, uid: &str, interleaved: &[i16], stereo: bool, origin: AudioFrameOrigin) {
        let mut figures = self.lock();
        if self.departed(uid) {
            return;
        }
        let dropped = match &self.audio {
            Some(queue) => {
                let left = interleaved.iter().step_by(2).copied().collect();
                let right =
                    stereo.then(|| interleaved.iter().skip(1).step_by(2).copied().collect());
                matches!(
                    queue.try_send(ProbeAudio {
                        uid: uid.to_owned(),
                        left,
                        right,
                    }),
                    Err(TrySendError::Full(_))
                )
            }
            None => false,
        };
        figures.first_audio.get_or_insert_with(Instant::now);
        let remote = figures.remotes.entry(uid.to_owned()).or_default();
        remote.audio_frames_decoded += 1;
        remote.audio_frames_concealed += u64::from(origin == AudioFrameOrigin::Concealed);
        remote.audio_frames_recovered += u64::from(origin == AudioFrameOrigin::RecoveredByFec);
        remote.audio_frames_dropped += u64::from(dropped);
        remote.audio_channels = if stereo { 2 } else { 1 };
    }

    /// Counts an audio packet of `uid` received but not decoded.
    pub fn audio_skipped(&self, uid: &str) {
        let mut figures = self.lock();
        if self.departed(uid) {
            return;
        }
        figures
            .remotes
            .entry(uid.to_owned())
            .or_default()
            .audio_frames_skipped += 1;
    }

    /// Forgets `uid` (they left); what still arrives of them is not counted until
    /// [`MediaProbe::welcome`].
    pub fn remove(&self, uid: &str) {
        // Under the figures' lock, as every count checks `departed` under it: a frame that
        // was being counted as they left cannot bring back an entry with its one frame
        // (which replaced their real figures in a bot's report). Lock order: figures, then
        // departed.
        let mut figures = self.lock();
        self.departed_lock().insert(uid.to_owned());
        figures.remotes.remove(uid);
    }

    /// `uid` is (again) a participant whose media is counted.
    pub fn welcome(&self, uid: &str) {
        self.departed_lock().remove(uid);
    }

    fn departed(&self, uid: &str) -> bool {
        self.departed_lock().contains(uid)
    }

    fn departed_lock(&self) -> MutexGuard<'_, std::collections::HashSet<String>> {
        self.departed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A copy of the figures now (frame rates as of the last frame received).
    pub fn snapshot(&self) -> ProbeSnapshot {
        let mut snapshot = self.lock().clone();
        let now = Instant::now();
        for remote in snapshot.remotes.values_mut() {
            // A stream that stopped has no rate, whatever its last second was.
            remote
                .recent_frames
                .retain(|t| now.duration_since(*t) < Duration::from_secs(1));
            remote.video_fps = remote.recent_frames.len() as f32;
        }
        snapshot
    }

    fn lock(&self) -> MutexGuard<'_, ProbeSnapshot> {
        self.figures.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The probe thread: keeps the last half second of each remote's audio and finds its tone
/// twice a second. Ends when the session closes or the probe is gone.
fn find_tones(queue: &Receiver<ProbeAudio>, probe: &std::sync::Weak<MediaProbe>) {
    /// The last second of one remote's channels, and frames since the last detection.
    #[derive(Default)]
    struct Recent {
        left: Vec<i16>,
        right: Vec<i16>,
        since_detect: u32,
    }
    let keep_last_second = |buffer: &mut Vec<i16>, new: &[i16]| {
        buffer.extend_from_slice(new);
        if buffer.len() > TONE_WINDOW {
            let excess = buffer.len() - TONE_WINDOW;
            buffer.drain(..excess);
        }
    };
    let mut recent: HashMap<String, Recent> = HashMap::new();
    loop {
        let frame = match queue.recv_timeout(Duration::from_millis(200)) {
            Ok(frame) => frame,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => match probe.upgrade() {
                Some(probe) if !probe.closed.load(Ordering::Relaxed) => continue,
                _ => return,
            },
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
        };
        let remote = recent.entry(frame.uid.clone()).or_default();
        keep_last_second(&mut remote.left, &frame.left);
        match &frame.right {
            Some(right) => keep_last_second(&mut remote.right, right),
            None => remote.right.clear(),
        }
        remote.since_detect += 1;
        // Every 25 frames (half a second), once a whole window has arrived.
        if remote.since_detect < 25 || remote.left.len() < TONE_WINDOW {
            continue;
        }
        remote.since_detect = 0;
        let left = detect_tone(&remote.left);
        let right = (remote.right.len() >= TONE_WINDOW)
            .then(|| detect_tone(&remote.right))
            .flatten();
        let Some(probe) = probe.upgrade() else {
            return;
        };
        if let Some(stats) = probe.lock().remotes.get_mut(&frame.uid) {
            stats.audio_tone_hz = left;
            stats.audio_right_tone_hz = right;
        }
    }
}

/// Milliseconds of the wall clock (wrapping), the clock synthetic stamps carry.
pub fn wall_clock_ms() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u32)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::ToneSource;

    /// What still arrives of someone who left (an SFU stream not yet renegotiated away) is
    /// not counted: their figures do not come back from nothing; once they are welcomed
    /// again (they rejoined), they are counted afresh.
    #[test]
    fn what_arrives_of_someone_who_left_is_not_counted() {
        let probe = MediaProbe::start(false, Arc::new(AtomicBool::new(false)));
        let frame = vec![0i16; 1920];
        probe.audio("bob", &frame, false, AudioFrameOrigin::Decoded);
        probe.remove("bob");
        probe.audio("bob", &frame, false, AudioFrameOrigin::Decoded);
        probe.audio_skipped("bob");
        assert!(!probe.snapshot().remotes.contains_key("bob"));
        probe.welcome("bob");
        probe.audio("bob", &frame, false, AudioFrameOrigin::Decoded);
        assert_eq!(probe.snapshot().remotes["bob"].audio_frames_decoded, 1);
    }

    /// Someone leaving while their frames are being counted on other threads (an SFU
    /// stream still arriving): once `remove` has returned and every counting call that was
    /// under way has finished, no entry of theirs is left, in any of 300 departures. (Counts
    /// that checked `departed` before taking the figures' lock brought back an entry with a
    /// frame or two, which then replaced their real figures in a bot's report.)
    #[test]
    fn a_departure_racing_the_counting_threads_leaves_no_entry() {
        use std::sync::atomic::AtomicU64;
        let probe = Arc::new(MediaProbe::start(false, Arc::new(AtomicBool::new(false))));
        let stop = Arc::new(AtomicBool::new(false));
        let rounds: Vec<Arc<AtomicU64>> = (0..2).map(|_| Arc::new(AtomicU64::new(0))).collect();
        let counters: Vec<_> = rounds
            .iter()
            .enumerate()
            .map(|(n, done)| {
                let (probe, stop, done) = (probe.clone(), stop.clone(), done.clone());
                std::thread::spawn(move || {
                    let frame = vec![0i16; 1920];
                    while !stop.load(Ordering::Relaxed) {
                        if n == 0 {
                            probe.audio("bob", &frame, false, AudioFrameOrigin::Decoded);
                        } else {
                            probe.audio_skipped("bob");
                        }
                        done.fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for departure in 0..300 {
            probe.welcome("bob");
            while !probe.snapshot().remotes.contains_key("bob") {
                std::thread::yield_now();
            }
            probe.remove("bob");
            let after: Vec<u64> = rounds.iter().map(|r| r.load(Ordering::SeqCst)).collect();
            for (round, at) in rounds.iter().zip(after) {
                while round.load(Ordering::SeqCst) < at + 2 {
                    std::thread::yield_now();
                }
            }
            assert!(
                !probe.snapshot().remotes.contains_key("bob"),
                "an entry came back after departure {departure}"
            );
        }
        stop.store(true, Ordering::Relaxed);
        for counter in counters {
            counter.join().expect("counting thread");
        }
    }

    /// Without measuring, frames are counted but no stamp is read and no tone is found; with
    /// it, a tone fed as decoded audio is found on the probe thread, and a full queue counts
    /// what it drops instead of blocking.
    #[test]
    fn counts_always_measures_only_when_asked() {
        let closed = Arc::new(AtomicBool::new(false));
        let quiet = MediaProbe::start(false, closed.clone());
        let mut tone = ToneSource::new(700.0);
        let mut mono = vec![0i16; 960];
        let mut frame = vec![0i16; 1920];
        let mut next_frame = |frame: &mut Vec<i16>| {
            tone.fill(&mut mono);
            for (pair, sample) in frame.chunks_exact_mut(2).zip(&mono) {
                pair.fill(*sample);
            }
        };
        for _ in 0..100 {
            next_frame(&mut frame);
            quiet.audio("bob", &frame, false, AudioFrameOrigin::Decoded);
        }
        let figures = quiet.snapshot();
        assert_eq!(figures.remotes["bob"].audio_frames_decoded, 100);
        assert_eq!(figures.remotes["bob"].audio_tone_hz, None);

        let measuring = MediaProbe::start(true, closed.clone());
        for _ in 0..60 {
            next_frame(&mut frame);
            measuring.audio("bob", &frame, true, AudioFrameOrigin::Decoded);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let heard = loop {
            let heard = measuring.snapshot().remotes["bob"].audio_tone_hz;
            if heard.is_some() || Instant::now() > deadline {
                break heard;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let heard = heard.expect("the probe thread finds the tone");
        assert!((heard - 700.0).abs() < 3.0, "{heard}");
        let right = measuring.snapshot().remotes["bob"].audio_right_tone_hz;
        assert!(
            right.is_some_and(|hz| (hz - 700.0).abs() < 3.0),
            "{right:?}"
        );
        assert_eq!(measuring.snapshot().remotes["bob"].audio_channels, 2);

        // A queue nobody drains: fill it, and the rest is dropped and counted.
        let (tx, _rx) = crossbeam_channel::bounded(PROBE_AUDIO_QUEUE);
        let stuck = MediaProbe {
            measuring: true,
            figures: Mutex::new(ProbeSnapshot::default()),
            departed: Mutex::new(Default::default()),
            audio: Some(tx),
            closed: closed.clone(),
        };
        for _ in 0..PROBE_AUDIO_QUEUE + 7 {
            stuck.audio("carol", &frame, false, AudioFrameOrigin::Decoded);
        }
        let carol = &stuck.snapshot().remotes["carol"];
        assert_eq!(carol.audio_frames_decoded, PROBE_AUDIO_QUEUE as u64 + 7);
        assert_eq!(carol.audio_frames_dropped, 7);
        closed.store(true, Ordering::Relaxed);
    }
}
