//! Whole-stack recording test with real processes: an in-process server on 127.0.0.1 and
//! `huddle bot` processes calling each other over real WebRTC. One caller records its call
//! with `--record` and hangs up normally; another is killed (SIGKILL) mid-recording. ffprobe
//! (Debian's ffmpeg, installed by `scripts/setup`) reads both files.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Starts a server (dev login, in-memory database) on a free loopback port.
fn start_server(runtime: &tokio::runtime::Runtime) -> String {
    let config = huddle_server::ServerConfig {
        hub: huddle_server::HubConfig {
            dev_login: true,
            ..huddle_server::HubConfig::default()
        },
        ..huddle_server::ServerConfig::default()
    };
    let server = runtime
        .block_on(huddle_server::bind(config))
        .expect("server binds");
    let url = format!("ws://{}/ws", server.local_addr());
    runtime.spawn(async move {
        let _ = server.serve_until(std::future::pending()).await;
    });
    url
}

fn bot(server: &str, uid: &str, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_huddle"))
        .args(["bot", "--server", server, "--uid", uid])
        .args(["--width", "320", "--height", "180", "--kbps", "400"])
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("huddle bot starts")
}

/// ffprobe's streams as (title, codec, frames decoded), sorted, and the duration in seconds.
fn ffprobe(path: &Path) -> (Vec<(String, String, u64)>, f64) {
    huddle_media::recording::ffprobe(path).unwrap_or_else(|err| panic!("{err}"))
}

fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("bot did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Alice calls Bob and records 4 s of the call with `--record`: the file has one H.264 and
/// one Opus track for each of them (named by uid), lasts the 4 s she stayed (±0.5 s), its
/// frames decode, and her stats say what it holds. Carol records her call with Dave and is
/// killed with SIGKILL mid-call: her file is still readable, with the video and audio
/// written up to about a second before the kill.
#[test]
fn bot_records_its_call_and_a_killed_recording_stays_readable() {
    let _serial = crate::one_media_test_at_a_time();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let server = start_server(&runtime);
    let dir: PathBuf =
        std::env::temp_dir().join(format!("huddle-bot-recording-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let (finished, killed, stats) = (
        dir.join("alice.mkv"),
        dir.join("carol.mkv"),
        dir.join("alice.json"),
    );
    let mut bob = bot(&server, "bob", &["--answer", "--seconds", "30"]);
    let mut dave = bot(&server, "dave", &["--answer", "--seconds", "30"]);
    std::thread::sleep(Duration::from_millis(500));
    let mut alice = bot(
        &server,
        "alice",
        &[
            "--call",
            "bob",
            "--seconds",
            "4",
            "--record",
            finished.to_str().expect("utf-8"),
            "--stats-json",
            stats.to_str().expect("utf-8"),
        ],
    );
    let mut carol = bot(
        &server,
        "carol",
        &[
            "--call",
            "dave",
            "--seconds",
            "60",
            "--record",
            killed.to_str().expect("utf-8"),
        ],
    );
    let status = wait_exit(&mut alice, Duration::from_secs(60));
    assert!(status.success(), "alice: {status}");
    // Carol has been recording about as long as Alice: kill her without warning.
    carol.kill().expect("SIGKILL");
    let _ = carol.wait();
    for other in [&mut bob, &mut dave] {
        let _ = other.kill();
        let _ = other.wait();
    }

    let stats: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&stats).expect("stats")).expect("json");
    assert_eq!(stats["errors"], serde_json::json!([]), "{stats}");
    let recorded_ms = stats["recording"]["duration_ms"]
        .as_f64()
        .expect("recording in stats");
    let (streams, duration) = ffprobe(&finished);
    let kinds: Vec<(&str, &str)> = streams
        .iter()
        .map(|(t, c, _)| (t.as_str(), c.as_str()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("alice", "h264"),
            ("alice", "opus"),
            ("bob", "h264"),
            ("bob", "opus")
        ],
        "{streams:?}"
    );
    assert!(
        (duration - 4.0).abs() <= 0.5,
        "4 s in the call, the file lasts {duration:.2} s"
    );
    assert!((recorded_ms / 1000.0 - duration).abs() <= 0.1);
    for (who, codec, frames) in &streams {
        let least = if codec == "h264" { 60 } else { 120 };
        assert!(*frames >= least, "{who} {codec}: {frames} frames");
    }

    let (streams, duration) = ffprobe(&killed);
    assert!(
        streams
            .iter()
            .filter(|(_, codec, frames)| codec == "h264" && *frames > 0)
            .count()
            == 2,
        "the killed recording still has both videos: {streams:?}"
    );
    assert!(
        duration >= 2.0,
        "the killed recording keeps what was written: {duration:.2} s"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
