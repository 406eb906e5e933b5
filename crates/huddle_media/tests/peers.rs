//! Two media sessions on 127.0.0.1 exchanging real WebRTC (DTLS-SRTP) H.264 video and Opus
//! audio, with signals passed directly between them (the server just relays these).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use huddle_media::audio::{detect_tone, tone_frequency_for};
use huddle_media::peer::PeerEvent;
use huddle_media::session::{MediaSession, SessionConfig};
use huddle_media::video::EncoderSettings;

/// What one side received from the other.
#[derive(Default)]
struct Received {
    connected: bool,
    frames: Vec<u32>,
    size: (u32, u32),
    audio: Vec<i16>,
    audio_frames: u64,
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
        ..SessionConfig::loopback(uid)
    }
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
                    PeerEvent::Video { frame, .. } => {
                        let r = received.entry(me.to_string()).or_default();
                        r.size = (frame.width, frame.height);
                        if let Some(stamp) = frame.stamp {
                            r.frames.push(stamp.frame);
                        }
                    }
                    PeerEvent::Audio { samples, .. } => {
                        let r = received.entry(me.to_string()).or_default();
                        r.audio_frames += 1;
                        r.audio.extend_from_slice(&samples);
                        let keep = 48_000;
                        if r.audio.len() > keep {
                            r.audio.drain(..r.audio.len() - keep);
                        }
                    }
                    PeerEvent::Error { uid, reason } => panic!("{me} about {uid}: {reason}"),
                    PeerEvent::Disconnected { .. } | PeerEvent::Quality { .. } => {}
                }
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
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
/// the sessions releases every socket the connections opened.
#[test]
fn two_sessions_exchange_video_and_audio_and_mute_stops_packets() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    let sockets_before = open_sockets();
    let alice = MediaSession::start(runtime.handle(), config("alice"));
    let bob = MediaSession::start(runtime.handle(), config("bob"));
    alice.add_peer("bob");
    bob.add_peer("alice");
    let sessions = [("alice", &alice), ("bob", &bob)];
    let mut received: HashMap<String, Received> = HashMap::new();
    pump(&sessions, &mut received, Duration::from_secs(20), |r| {
        ["alice", "bob"].iter().all(|u| {
            r.get(*u)
                .is_some_and(|x| x.frames.len() >= 30 && x.audio_frames >= 50)
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
        let heard = detect_tone(&r.audio).expect("a tone");
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
}
