//! Two media sessions on 127.0.0.1 exchanging real WebRTC (DTLS-SRTP) H.264 video and Opus
//! audio, with signals passed directly between them (the server just relays these).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use huddle_media::audio::tone_frequency_for;
use huddle_media::frames::VideoTrackKind;
use huddle_media::peer::PeerEvent;
use huddle_media::session::{MediaSession, SessionConfig};
use huddle_media::video::EncoderSettings;

/// What one side received from the other.
#[derive(Default)]
struct Received {
    connected: bool,
    /// Frame numbers of the camera pictures taken (newest-wins: some may be skipped).
    frames: Vec<u32>,
    size: (u32, u32),
    /// From the session's probe: audio frames decoded, their channels and tones.
    audio_frames: u64,
    audio_channels: u8,
    tone: Option<f32>,
    right_tone: Option<f32>,
    screen_frames: u64,
    last_screen: Option<huddle_media::peer::DecodedVideo>,
    /// Speaking changes told to this session, in order, with when they came.
    speaking: Vec<(String, bool, Instant)>,
    /// "Talking while muted" hints.
    talking_while_muted: usize,
    /// Loudness reports told to this session, in order.
    loudness: Vec<(String, f32)>,
}

fn config(uid: &str) -> SessionConfig {
    SessionConfig {
        video: EncoderSettings {
            width: 320,
            height: 180,
            fps: 30.0,
            bitrate_bps: 400_000,
            keyframe_interval: 60,
        },
        measure: true,
        ..SessionConfig::loopback(uid)
    }
}

/// The tests run one at a time: one of them counts the process's open sockets, which the
/// others' connections would change under it.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn media_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt")
}

/// Alice's and Bob's sessions, told about each other.
fn alice_and_bob(runtime: &tokio::runtime::Runtime) -> (MediaSession, MediaSession) {
    let alice = MediaSession::start(runtime.handle(), config("alice"));
    let bob = MediaSession::start(runtime.handle(), config("bob"));
    alice.add_peer("bob");
    bob.add_peer("alice");
    (alice, bob)
}

/// Pumps events between two sessions (relaying signals) for `duration` or until `done`.
fn pump(
    sessions: &[(&str, &MediaSession)],
    received: &mut HashMap<String, Received>,
    duration: Duration,
    mut done: impl FnMut(&HashMap<String, Received>) -> bool,
) {
    let deadline = Instant::now() + duration;
    while Instant::now() < deadline && !done(received) {
        for (me, session) in sessions {
            while let Ok(event) = session.events().try_recv() {
                match event {
                    PeerEvent::Signal { to, signal } => {
                        if let Some((_, target)) = sessions.iter().find(|(uid, _)| *uid == to) {
                            target.handle_signal(me, signal);
                        }
                    }
                    PeerEvent::Connected { .. } => {
                        received.entry(me.to_string()).or_default().connected = true
                    }
                    PeerEvent::Error { uid, reason } => panic!("{me} about {uid}: {reason}"),
                    PeerEvent::DeviceFailed { id, reason, .. } => panic!("{me}: {id}: {reason}"),
                    PeerEvent::RecordingFailed { reason } => panic!("{me}: {reason}"),
                    PeerEvent::ScreenShareEnded { reason } => panic!("{me}: {reason}"),
                    PeerEvent::Speaking { uid, speaking } => received
                        .entry(me.to_string())
                        .or_default()
                        .speaking
                        .push((uid, speaking, Instant::now())),
                    PeerEvent::TalkingWhileMuted => {
                        received
                            .entry(me.to_string())
                            .or_default()
                            .talking_while_muted += 1
                    }
                    PeerEvent::Loudness { uid, dbov } => received
                        .entry(me.to_string())
                        .or_default()
                        .loudness
                        .push((uid, dbov)),
                    PeerEvent::Disconnected { .. }
                    | PeerEvent::Quality { .. }
                    | PeerEvent::IceRestarted { .. }
                    | PeerEvent::IceServerProblem(_) => {}
                }
            }
            let r = received.entry(me.to_string()).or_default();
            for taken in session.take_video_frames() {
                let frame = taken.frame;
                match taken.track {
                    VideoTrackKind::Camera => {
                        r.size = (frame.width, frame.height);
                        if let Some(stamp) = frame.stamp {
                            r.frames.push(stamp.frame);
                        }
                    }
                    VideoTrackKind::Screen => {
                        r.screen_frames += 1;
                        r.last_screen = Some(frame);
                    }
                }
            }
            if let Some(remote) = session.stats().remotes.values().next() {
                r.audio_frames = remote.audio_frames_decoded;
                r.audio_channels = remote.audio_channels;
                r.tone = remote.audio_tone_hz;
                r.right_tone = remote.audio_right_tone_hz;
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Stereo Opus: Alice sends the stereo synthetic microphone (her tone on the left, 1.5 × it
/// on the right); Bob decodes two channels and hears each tone on its own side, and his
/// mixer's output has both. Bob sends mono, which Alice receives as mono (no right channel).
#[test]
fn stereo_audio_keeps_its_channels() {
    let _serial = one_at_a_time();
    use huddle_media::audio::{right_tone_frequency, tone_frequency_for};
    let runtime = media_runtime();
    let alice = MediaSession::start(
        runtime.handle(),
        SessionConfig {
            stereo_audio: true,
            ..config("alice")
        },
    );
    let bob = MediaSession::start(runtime.handle(), config("bob"));
    alice.add_peer("bob");
    bob.add_peer("alice");
    let mut received = HashMap::new();
    pump(
        &[("alice", &alice), ("bob", &bob)],
        &mut received,
        Duration::from_secs(20),
        |r| {
            // Two seconds of audio: the tones are measured in the steady state, not over the
            // encoder's first frames.
            r.get("bob").is_some_and(|b| {
                b.audio_frames >= 100 && b.tone.is_some() && b.right_tone.is_some()
            }) && r
                .get("alice")
                .is_some_and(|a| a.audio_frames >= 100 && a.tone.is_some())
        },
    );
    let at_bob = &received["bob"];
    assert_eq!(at_bob.audio_channels, 2, "bob got stereo audio");
    let left = at_bob.tone.expect("left tone");
    let right = at_bob.right_tone.expect("right tone");
    let sent = tone_frequency_for("alice");
    assert!((left - sent).abs() < 3.0, "left {left} Hz, sent {sent}");
    assert!(
        (right - right_tone_frequency(sent)).abs() < 3.0,
        "right {right} Hz, sent {}",
        right_tone_frequency(sent)
    );
    let at_alice = &received["alice"];
    assert_eq!(at_alice.audio_channels, 1, "bob's mono stays mono");
    assert_eq!(
        at_alice.right_tone, None,
        "a mono stream has no right channel"
    );
    assert!(bob.mix_stats().rms.0 > 0.01 && bob.mix_stats().rms.1 > 0.01);
}

/// Sockets this process has open (from /proc/self/fd).
fn open_sockets() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|fds| {
            fds.filter_map(Result::ok)
                .filter(|fd| {
                    std::fs::read_link(fd.path())
                        .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"))
                })
                .count()
        })
        .unwrap_or(0)
}

/// Alice and Bob connect; each decodes the other's pattern with increasing frame numbers at
/// 320×180, and hears the other's tone; congestion control sets a target bitrate. Muting stops audio packets (the sender's counter
/// stalls, the receiver gets nothing new); unmuting resumes them. Removing a peer and closing
/// the sessions releases every socket the connections opened and ends every task they spawned.
#[test]
fn two_sessions_exchange_video_and_audio_and_mute_stops_packets() {
    let _serial = one_at_a_time();
    let runtime = media_runtime();
    let sockets_before = open_sockets();
    let tasks_before = runtime.metrics().num_alive_tasks();
    let (alice, bob) = alice_and_bob(&runtime);
    let sessions = [("alice", &alice), ("bob", &bob)];
    let mut received: HashMap<String, Received> = HashMap::new();
    pump(&sessions, &mut received, Duration::from_secs(20), |r| {
        ["alice", "bob"].iter().all(|u| {
            r.get(*u)
                .is_some_and(|x| x.frames.len() >= 30 && x.audio_frames >= 100 && x.tone.is_some())
        })
    });
    for (me, other) in [("alice", "bob"), ("bob", "alice")] {
        let r = received
            .get(me)
            .unwrap_or_else(|| panic!("{me} received nothing"));
        assert!(r.connected, "{me} connected");
        assert!(
            r.frames.len() >= 30,
            "{me} decoded {} frames",
            r.frames.len()
        );
        assert!(
            r.frames.windows(2).all(|w| w[1] > w[0]),
            "{me}: frame numbers increase: {:?}",
            r.frames
        );
        assert_eq!(r.size, (320, 180));
        let heard = r.tone.expect("a tone");
        let expected = tone_frequency_for(other);
        assert!(
            (heard - expected).abs() < 3.0,
            "{me} heard {heard} Hz, {other} plays {expected} Hz"
        );
    }

    // Congestion control measured the link and set a target the encoder follows.
    pump(&sessions, &mut received, Duration::from_secs(3), |_| {
        alice.target_bitrate_bps() > 0
    });
    assert!(
        alice.target_bitrate_bps() > 100_000,
        "GCC target: {} bps",
        alice.target_bitrate_bps()
    );

    alice.set_audio_muted(true);
    pump(&sessions, &mut received, Duration::from_millis(300), |_| {
        false
    });
    let sent_at_mute = alice
        .counters()
        .audio_frames_sent
        .load(std::sync::atomic::Ordering::Relaxed);
    let heard_at_mute = received["bob"].audio_frames;
    pump(&sessions, &mut received, Duration::from_millis(600), |_| {
        false
    });
    assert_eq!(
        alice
            .counters()
            .audio_frames_sent
            .load(std::sync::atomic::Ordering::Relaxed),
        sent_at_mute,
        "muted: nothing sent"
    );
    assert!(
        received["bob"].audio_frames - heard_at_mute <= 2,
        "muted: nothing received"
    );
    alice.set_audio_muted(false);
    pump(&sessions, &mut received, Duration::from_secs(5), |r| {
        r["bob"].audio_frames > heard_at_mute + 20
    });
    assert!(
        received["bob"].audio_frames > heard_at_mute + 20,
        "unmuted: audio flows again"
    );
    assert!(
        open_sockets() > sockets_before,
        "the peers opened UDP sockets"
    );
    assert!(
        runtime.metrics().num_alive_tasks() > tasks_before,
        "the sessions run tasks"
    );

    // Bob leaves alice's session: his connection is torn down; closing both releases every
    // socket the peers opened.
    alice.remove_peer("bob");
    pump(&sessions, &mut received, Duration::from_millis(500), |_| {
        false
    });
    alice.close();
    bob.close();
    let deadline = Instant::now() + Duration::from_secs(5);
    while open_sockets() > sockets_before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        open_sockets() <= sockets_before,
        "sockets leaked: {} > {sockets_before}",
        open_sockets()
    );
    // Every task the sessions and their connections spawned ends too.
    let alive = || runtime.metrics().num_alive_tasks();
    drop((alice, bob));
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive() > tasks_before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(alive(), tasks_before, "tokio tasks leaked");
}

fn ffprobe(path: &std::path::Path) -> (Vec<(String, String, u64)>, f64) {
    huddle_media::recording::ffprobe(path).unwrap_or_else(|err| panic!("{err}"))
}

/// Alice records her call with Bob; Carol joins mid-recording. ffprobe reads the finished
/// file as one H.264 and one Opus track per participant (named by uid, Carol's included),
/// with the duration the recording lasted (±0.5 s) and frames that decode; ffmpeg decodes
/// the whole file without an error. A copy taken mid-way (what killing the app leaves on
/// disk) is readable too.
#[test]
fn recording_writes_a_playable_matroska_file() {
    let _serial = one_at_a_time();
    let runtime = media_runtime();
    let dir = std::env::temp_dir().join(format!("huddle-recording-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let path = dir.join("call.mkv");
    let alice = MediaSession::start(runtime.handle(), config("alice"));
    let bob = MediaSession::start(runtime.handle(), config("bob"));
    let carol = MediaSession::start(runtime.handle(), config("carol"));
    alice.add_peer("bob");
    bob.add_peer("alice");
    let sessions = [("alice", &alice), ("bob", &bob), ("carol", &carol)];
    let mut received: HashMap<String, Received> = HashMap::new();
    pump(&sessions, &mut received, Duration::from_secs(20), |r| {
        r.get("alice").is_some_and(|x| x.frames.len() >= 10)
    });
    alice.start_recording(&path).expect("recording starts");
    let started = Instant::now();
    pump(
        &sessions,
        &mut received,
        Duration::from_millis(1500),
        |_| false,
    );
    for (a, b) in [
        ("alice", "carol"),
        ("bob", "carol"),
        ("carol", "alice"),
        ("carol", "bob"),
    ] {
        if let Some((_, session)) = sessions.iter().find(|(u, _)| *u == a) {
            session.add_peer(b);
        }
    }
    pump(
        &sessions,
        &mut received,
        Duration::from_millis(2000),
        |_| false,
    );
    let snapshot = dir.join("killed.mkv");
    std::fs::copy(&path, &snapshot).expect("copy mid-way");
    pump(
        &sessions,
        &mut received,
        Duration::from_millis(1500),
        |_| false,
    );
    let summary = alice
        .stop_recording()
        .expect("was recording")
        .expect("finished");
    let lasted = started.elapsed().as_secs_f64();
    assert!(!alice.is_recording());

    let (found, duration) = ffprobe(&path);
    let kinds: Vec<(&str, &str)> = found
        .iter()
        .map(|(p, c, _)| (p.as_str(), c.as_str()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("alice", "h264"),
            ("alice", "opus"),
            ("bob", "h264"),
            ("bob", "opus"),
            ("carol", "h264"),
            ("carol", "opus"),
        ],
        "{found:?}"
    );
    assert!(
        (duration - lasted).abs() <= 0.5,
        "file lasts {duration:.2} s, the recording {lasted:.2} s"
    );
    assert!(
        (summary.duration_ms as f64 / 1000.0 - duration).abs() <= 0.1,
        "{summary:?} vs {duration}"
    );
    for (participant, codec, frames) in &found {
        // 5 s of 30 fps video and 50 packets/s of audio (Carol for about 3 s of it).
        let least = match (participant.as_str(), codec.as_str()) {
            ("carol", "h264") => 40,
            ("carol", _) => 80,
            (_, "h264") => 90,
            _ => 150,
        };
        assert!(
            *frames >= least,
            "{participant} {codec}: {frames} frames decoded"
        );
    }
    let decode = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(&path)
        .args(["-f", "null", "-"])
        .output()
        .expect("ffmpeg");
    assert!(decode.status.success());
    assert_eq!(
        String::from_utf8_lossy(&decode.stderr),
        "",
        "ffmpeg decodes the recording without an error"
    );

    let (killed, killed_duration) = ffprobe(&snapshot);
    assert!(
        killed
            .iter()
            .filter(|(_, c, n)| c == "h264" && *n > 0)
            .count()
            >= 2,
        "the cut file still plays video: {killed:?}"
    );
    assert!(killed_duration >= 2.0, "cut file: {killed_duration} s");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Alice shares the screen of a private Xvfb showing four coloured quadrants: Bob receives
/// her screen share as frames on their own track (her camera video keeps arriving beside
/// it), 640×360, with each quadrant's colour where it is on the screen. Stopping the share
/// stops the frames. A display that does not exist is a typed error.
#[test]
fn desktop_screen_share_reaches_the_other_side() {
    let _serial = one_at_a_time();
    use huddle_media::screen::test_display::{QUADRANTS, VirtualDisplay};
    use huddle_media::screen::{ScreenSource, X11Screen};
    let display = VirtualDisplay::start();
    let _window = display.paint_quadrants();
    let mut direct = X11Screen::open(Some(&display.name), 10.0).expect("capture opens");
    let mut captured = Vec::new();
    assert_eq!(
        direct.next_frame(&mut captured).expect("frame"),
        Some((640, 360))
    );
    assert_eq!(&captured[..4], &[255, 0, 0, 255], "top-left pixel is red");

    let runtime = media_runtime();
    let (alice, bob) = alice_and_bob(&runtime);
    let sessions = [("alice", &alice), ("bob", &bob)];
    let mut received: HashMap<String, Received> = HashMap::new();
    pump(&sessions, &mut received, Duration::from_secs(20), |r| {
        r.get("bob").is_some_and(|x| x.frames.len() >= 5)
    });
    alice.start_screen_share(
        Box::new(X11Screen::open(Some(&display.name), 10.0).expect("capture")),
        1_000_000,
    );
    assert!(alice.is_screen_sharing());
    let camera_before = received["bob"].frames.len();
    pump(&sessions, &mut received, Duration::from_secs(20), |r| {
        r["bob"].screen_frames >= 10
    });
    let bob_got = &received["bob"];
    assert!(
        bob_got.screen_frames >= 10,
        "{} screen frames",
        bob_got.screen_frames
    );
    assert!(
        bob_got.frames.len() > camera_before + 10,
        "camera video continues beside the share"
    );
    let frame = bob_got.last_screen.as_ref().expect("a screen frame");
    assert_eq!((frame.width, frame.height), (640, 360));
    for (i, expected) in QUADRANTS.iter().enumerate() {
        let (x, y) = (160 + (i % 2) * 320, 90 + (i / 2) * 180);
        let at = (y * 640 + x) * 4;
        let got = &frame.rgba[at..at + 3];
        assert!(
            got.iter().zip(expected).all(|(g, e)| g.abs_diff(*e) <= 40),
            "quadrant {i}: got {got:?}, the screen shows {expected:?}"
        );
    }

    alice.stop_screen_share();
    assert!(!alice.is_screen_sharing());
    pump(&sessions, &mut received, Duration::from_millis(500), |_| {
        false
    });
    let after_stop = received["bob"].screen_frames;
    pump(&sessions, &mut received, Duration::from_millis(800), |_| {
        false
    });
    assert!(
        received["bob"].screen_frames <= after_stop + 1,
        "no screen frames after the share stopped"
    );
}

/// Speaking travels in the audio packets' RFC 6464 level extension: alice's synthetic voice
/// talks 1 s in every 3 s; bob is told alice speaks, then stops, then speaks again, each
/// within the hysteresis (on within 300 ms of speech, off 1 s after it), and alice is told
/// the same about herself from her own level, and hears how loud she is while she speaks.
/// Bob's own tone never stops, so he speaks throughout, and muting him ends his speaking for
/// both.
#[test]
fn speaking_follows_the_talk_pattern() {
    let _serial = one_at_a_time();
    let runtime = media_runtime();
    let pattern = huddle_media::speech::TalkPattern {
        on: Duration::from_secs(1),
        off: Duration::from_secs(2),
        offset: Duration::ZERO,
    };
    let alice = MediaSession::start(
        runtime.handle(),
        SessionConfig {
            talk_pattern: Some(pattern),
            ..config("alice")
        },
    );
    let bob = MediaSession::start(runtime.handle(), config("bob"));
    alice.add_peer("bob");
    bob.add_peer("alice");
    let mut received = HashMap::new();
    let changes = |received: &HashMap<String, Received>, me: &str, about: &str| -> Vec<bool> {
        received
            .get(me)
            .map(|r| {
                r.speaking
                    .iter()
                    .filter(|(uid, ..)| uid == about)
                    .map(|(_, speaking, _)| *speaking)
                    .collect()
            })
            .unwrap_or_default()
    };
    pump(
        &[("alice", &alice), ("bob", &bob)],
        &mut received,
        Duration::from_secs(20),
        |r| changes(r, "bob", "alice").len() >= 3,
    );
    assert_eq!(changes(&received, "bob", "alice")[..3], [true, false, true]);
    assert_eq!(
        changes(&received, "alice", "alice")[..3],
        [true, false, true]
    );
    // On for about 1 s of talk plus the 1 s hangover, off for the rest of the 3 s cycle.
    let at: Vec<Instant> = received["bob"]
        .speaking
        .iter()
        .filter(|(uid, ..)| uid == "alice")
        .map(|(.., at)| *at)
        .collect();
    let (on_for, off_for) = (at[1] - at[0], at[2] - at[1]);
    assert!(
        (Duration::from_millis(1500)..Duration::from_millis(2600)).contains(&on_for),
        "speaking lasted {on_for:?}"
    );
    assert!(
        (Duration::from_millis(400)..Duration::from_millis(1500)).contains(&off_for),
        "silence lasted {off_for:?}"
    );
    assert_eq!(
        changes(&received, "alice", "bob"),
        [true],
        "bob's tone never stops"
    );
    // While alice speaks, bob hears how loud she is, four times a second: her tone at a
    // third of full scale is about −13.5 dBov.
    let alice_loudness: Vec<f32> = received["bob"]
        .loudness
        .iter()
        .filter(|(uid, _)| uid == "alice")
        .map(|(_, dbov)| *dbov)
        .collect();
    assert!(alice_loudness.len() >= 6, "{alice_loudness:?}");
    assert!(
        alice_loudness
            .iter()
            .all(|dbov| (-17.0..-10.0).contains(dbov)),
        "{alice_loudness:?}"
    );

    bob.set_audio_muted(true);
    pump(
        &[("alice", &alice), ("bob", &bob)],
        &mut received,
        Duration::from_secs(5),
        |r| changes(r, "alice", "bob").len() >= 2 && changes(r, "bob", "bob").len() >= 2,
    );
    assert_eq!(
        changes(&received, "alice", "bob"),
        [true, false],
        "muted: silent for alice"
    );
    assert_eq!(
        changes(&received, "bob", "bob"),
        [true, false],
        "muted: not speaking"
    );
}

/// A muted talker gets one "talking while muted" hint per stretch of talk into a real
/// microphone (here a test microphone delivering a loud sine), none while only silence comes
/// in, and none while unmuted (then they are speaking instead).
#[test]
fn talking_into_a_muted_microphone_is_hinted() {
    let _serial = one_at_a_time();
    let runtime = media_runtime();
    let (alice, bob) = alice_and_bob(&runtime);
    let mut received = HashMap::new();
    // Connected first: the session's audio worker sets up its devices as it starts.
    pump(
        &[("alice", &alice), ("bob", &bob)],
        &mut received,
        Duration::from_secs(10),
        |r| {
            r.get("alice").is_some_and(|a| a.connected) && r.get("bob").is_some_and(|b| b.connected)
        },
    );
    let microphone = alice.use_test_microphone();
    assert!(alice.has_microphone());
    let loud: Vec<i16> = (0..960)
        .map(|i| (8000.0 * (i as f32 * 0.05).sin()) as i16)
        .collect();
    let silent = vec![0i16; 960];
    // 20 ms frames for `duration`, pumping the sessions meanwhile.
    let feed = |frame: &Vec<i16>, duration: Duration, received: &mut HashMap<String, Received>| {
        let end = Instant::now() + duration;
        while Instant::now() < end {
            let _ = microphone.try_send(frame.clone());
            pump(
                &[("alice", &alice), ("bob", &bob)],
                received,
                Duration::from_millis(20),
                |_| false,
            );
        }
    };
    let hints = |r: &HashMap<String, Received>| r.get("alice").map_or(0, |a| a.talking_while_muted);
    alice.set_audio_muted(true);
    feed(&silent, Duration::from_millis(600), &mut received);
    assert_eq!(hints(&received), 0, "silence is not talk");
    feed(&loud, Duration::from_millis(800), &mut received);
    assert_eq!(hints(&received), 1, "talking while muted");
    feed(&loud, Duration::from_millis(600), &mut received);
    assert_eq!(hints(&received), 1, "once per stretch of talk");
    feed(&silent, Duration::from_millis(1500), &mut received);
    feed(&loud, Duration::from_millis(600), &mut received);
    assert_eq!(hints(&received), 2, "a new stretch, a new hint");
    alice.set_audio_muted(false);
    feed(&silent, Duration::from_millis(1500), &mut received);
    feed(&loud, Duration::from_millis(600), &mut received);
    assert_eq!(hints(&received), 2, "unmuted: no hint");
    assert!(
        received["alice"]
            .speaking
            .iter()
            .any(|(uid, speaking, _)| uid == "alice" && *speaking),
        "unmuted talk is speaking"
    );
}

/// The power of `frequency` in `samples` (48 kHz), by the Goertzel algorithm, normalised so a
/// sine of amplitude A gives A²/2 whatever the length.
fn tone_power(samples: &[f32], frequency: f32) -> f64 {
    let w = std::f64::consts::TAU * f64::from(frequency) / 48_000.0;
    let coefficient = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for sample in samples {
        let s0 = f64::from(*sample) + coefficient * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - coefficient * s1 * s2;
    2.0 * power / (samples.len() as f64).powi(2)
}

/// Echo cancellation in a call: Alice's "microphone" hears only what her speakers played
/// (Bob's tone), 100 ms late at half level with a short tail, sample-locked to the output as
/// a real room would be. With the voice processing on (the default), Bob's own tone comes
/// back to him at least 25 dB below the echo Alice's microphone picked up; with it off, it
/// comes back at the echo's level (within 3 dB), which shows the measure can fail.
#[test]
fn the_far_end_does_not_hear_itself() {
    let _serial = one_at_a_time();
    let bob_tone = tone_frequency_for("bob");
    let mut drops = Vec::new();
    for stages in [
        huddle_media::voice::VoiceProcessing::default(),
        huddle_media::voice::VoiceProcessing::OFF,
    ] {
        let runtime = media_runtime();
        let alice = MediaSession::start(
            runtime.handle(),
            SessionConfig {
                voice_processing: stages,
                ..config("alice")
            },
        );
        let bob = MediaSession::start(runtime.handle(), config("bob"));
        alice.add_peer("bob");
        bob.add_peer("alice");
        let mut received = HashMap::new();
        let sessions = [("alice", &alice), ("bob", &bob)];
        pump(&sessions, &mut received, Duration::from_secs(10), |r| {
            r.get("alice").is_some_and(|a| a.connected) && r.get("bob").is_some_and(|b| b.connected)
        });
        let microphone = alice.use_test_microphone();
        let played = alice.listen_played();
        let returned = bob.listen_played();
        // The room: 100 ms, gain 0.5, reflections at +3 ms (0.2) and +8 ms (0.1).
        let taps = [(4_800usize, 0.5f32), (4_944, 0.2), (5_184, 0.1)];
        let mut speaker: Vec<f32> = vec![0.0; 6_000];
        let (mut heard, mut came_back) = (Vec::new(), Vec::new());
        let end = Instant::now() + Duration::from_secs(8);
        while Instant::now() < end {
            pump(&sessions, &mut received, Duration::from_millis(10), |_| {
                false
            });
            for chunk in played.try_iter() {
                for sample in chunk {
                    speaker.push(sample);
                    let now = speaker.len() - 1;
                    heard.push(
                        taps.iter()
                            .map(|(lag, g)| g * speaker[now - lag])
                            .sum::<f32>(),
                    );
                }
                while heard.len() >= 960 {
                    let frame: Vec<i16> = heard
                        .drain(..960)
                        .map(|s| (s * f32::from(i16::MAX)) as i16)
                        .collect();
                    let _ = microphone.try_send(frame);
                }
            }
            came_back.extend(returned.try_iter().flatten());
        }
        // The last two seconds of each: the echo as the microphone got it, and what Bob got back.
        let last = |s: &[f32]| s[s.len().saturating_sub(96_000)..].to_vec();
        let tail = last(&speaker);
        let echo: Vec<f32> = (5_184..tail.len())
            .map(|n| taps.iter().map(|(lag, g)| g * tail[n - lag]).sum())
            .collect();
        let echo_power = tone_power(&echo, bob_tone);
        let back_power = tone_power(&last(&came_back), bob_tone);
        assert!(
            echo_power > 1e-3,
            "Alice's speakers played Bob: {echo_power}"
        );
        drops.push(10.0 * (echo_power / back_power.max(1e-20)).log10());
        alice.close();
        bob.close();
    }
    eprintln!(
        "Bob's tone back to Bob: {:.1} dB under the echo with processing, {:.1} dB without",
        drops[0], drops[1]
    );
    assert!(
        drops[0] >= 25.0,
        "with processing: only {:.1} dB down",
        drops[0]
    );
    assert!(
        drops[1].abs() < 3.0,
        "without processing: {:.1} dB",
        drops[1]
    );
}

/// Audio at scale: in a call with more voices than the decode limit, only the loudest talkers
/// are decoded. Alice's limit is "every voice up to 2, beyond that the loudest 1"; bob and
/// carol talk in turns (3 s each) and dave never talks. Over 7 s alice decodes bob and carol
/// each for their turns but never both at once (together at most 60 % of their packets), and
/// none of dave's; bob, with the default limit (every voice up to 20), decodes dave throughout,
/// which shows the measure can fail.
#[test]
fn a_large_call_decodes_only_the_loudest_talkers() {
    let _serial = one_at_a_time();
    let runtime = media_runtime();
    let turns = |offset: u64| huddle_media::speech::TalkPattern {
        on: Duration::from_secs(3),
        off: Duration::from_secs(3),
        offset: Duration::from_secs(offset),
    };
    let quiet = huddle_media::speech::TalkPattern {
        on: Duration::ZERO,
        off: Duration::from_secs(1),
        offset: Duration::ZERO,
    };
    let small_video = |uid: &str| SessionConfig {
        video: EncoderSettings {
            fps: 10.0,
            ..config(uid).video
        },
        ..config(uid)
    };
    let alice = MediaSession::start(
        runtime.handle(),
        SessionConfig {
            voice_decode_limit: huddle_media::speech::VoiceDecodeLimit {
                decode_all_up_to: 2,
                loudest: 1,
            },
            ..small_video("alice")
        },
    );
    let bob = MediaSession::start(
        runtime.handle(),
        SessionConfig {
            talk_pattern: Some(turns(0)),
            ..small_video("bob")
        },
    );
    let carol = MediaSession::start(
        runtime.handle(),
        SessionConfig {
            talk_pattern: Some(turns(3)),
            ..small_video("carol")
        },
    );
    let dave = MediaSession::start(
        runtime.handle(),
        SessionConfig {
            talk_pattern: Some(quiet),
            ..small_video("dave")
        },
    );
    let sessions = [
        ("alice", &alice),
        ("bob", &bob),
        ("carol", &carol),
        ("dave", &dave),
    ];
    for (me, session) in &sessions {
        for (other, _) in &sessions {
            if other != me {
                session.add_peer(other);
            }
        }
    }
    // Every voice reaches alice and bob (decoded or not).
    let heard_everyone = |session: &MediaSession| {
        let stats = session.stats();
        stats.remotes.len() == 3
            && stats
                .remotes
                .values()
                .all(|r| r.audio_frames_decoded + r.audio_frames_skipped > 50)
    };
    let mut received = HashMap::new();
    pump(&sessions, &mut received, Duration::from_secs(20), |_| {
        heard_everyone(&alice) && heard_everyone(&bob)
    });
    assert!(heard_everyone(&alice), "alice: {:?}", alice.stats().remotes);
    assert!(heard_everyone(&bob), "bob: {:?}", bob.stats().remotes);
    let (alice_before, bob_before) = (alice.stats(), bob.stats());
    pump(&sessions, &mut received, Duration::from_secs(7), |_| false);
    let (alice_after, bob_after) = (alice.stats(), bob.stats());
    // (decoded, skipped) in the window.
    let window = |before: &huddle_media::probe::ProbeSnapshot,
                  after: &huddle_media::probe::ProbeSnapshot,
                  uid: &str| {
        let (b, a) = (&before.remotes[uid], &after.remotes[uid]);
        (
            a.audio_frames_decoded - b.audio_frames_decoded,
            a.audio_frames_skipped - b.audio_frames_skipped,
        )
    };
    let (bob_decoded, bob_skipped) = window(&alice_before, &alice_after, "bob");
    let (carol_decoded, carol_skipped) = window(&alice_before, &alice_after, "carol");
    let (dave_decoded, dave_skipped) = window(&alice_before, &alice_after, "dave");
    let figures = format!(
        "alice: bob {bob_decoded}/{bob_skipped}, carol {carol_decoded}/{carol_skipped}, \
         dave {dave_decoded}/{dave_skipped} (decoded/skipped)"
    );
    assert!(bob_decoded >= 100 && carol_decoded >= 100, "{figures}");
    let talkers_received = bob_decoded + bob_skipped + carol_decoded + carol_skipped;
    assert!(
        (bob_decoded + carol_decoded) as f64 <= 0.6 * talkers_received as f64,
        "{figures}"
    );
    assert_eq!(dave_decoded, 0, "{figures}");
    assert!(dave_skipped >= 250, "{figures}");
    let (dave_at_bob, skipped_at_bob) = window(&bob_before, &bob_after, "dave");
    assert!(
        dave_at_bob >= 250,
        "bob decoded {dave_at_bob} of dave's frames"
    );
    assert_eq!(skipped_at_bob, 0);
}
