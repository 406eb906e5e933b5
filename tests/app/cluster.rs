//! Real media across a cluster: two `huddle server` nodes sharing a Redis and a PostgreSQL of
//! the test's own (crates/huddle_server/tests/support), and `huddle bot` processes on
//! different nodes calling each other over real WebRTC. Everything on loopback or Unix
//! sockets, stopped when the test ends, failed or not.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use huddle_protocol::{CallLogQuery, CallStatus};

#[path = "../../crates/huddle_server/tests/support/node.rs"]
mod node;
#[path = "../../crates/huddle_server/tests/support/postgres.rs"]
pub(crate) mod postgres_server;
#[allow(dead_code)] // its restart is for the server's own cluster tests
#[path = "../../crates/huddle_server/tests/support/redis.rs"]
pub(crate) mod redis_server;

use node::Node;
use postgres_server::Postgres;
use redis_server::Redis;

/// A bot on `server` that falls back to `fallback`, killed on drop.
struct Bot(Child);

impl Bot {
    fn start(server: &str, fallback: &str, uid: &str, stats: &Path, extra: &[&str]) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_huddle"))
            .args(["bot", "--server", server, "--fallback-server", fallback])
            .args(["--uid", uid, "--stats-json"])
            .arg(stats)
            .args([
                "--width", "320", "--height", "180", "--fps", "15", "--kbps", "300",
            ])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("huddle bot starts");
        Self(child)
    }

    /// Waits for it to finish on its own (within `limit`).
    fn finish(&mut self, limit: Duration) -> std::process::ExitStatus {
        exit_within(&mut self.0, limit)
            .unwrap_or_else(|| panic!("bot did not finish within {limit:?}"))
    }
}

/// `child`'s exit status once it exits, or `None` if it is still running after `limit`.
fn exit_within(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for Bot {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn stats(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).expect("stats JSON")
}

/// Frames decoded from `from` in each second of the call.
fn frames_per_second(stats: &serde_json::Value, from: &str) -> Vec<u64> {
    stats["remotes"][from]["video_frames_per_second"]
        .as_array()
        .unwrap_or_else(|| panic!("no video from {from}: {stats}"))
        .iter()
        .map(|n| n.as_u64().unwrap_or(0))
        .collect()
}

/// Alice (node a, falling back to node b) calls Bob (node b). Node a is killed (SIGKILL) 5 s
/// into the call: Alice's signalling comes back through node b, which takes the session over,
/// while their media (a mesh, peer to peer) never stops: every second of the call has
/// pictures both ways. The call ends normally afterwards, with one log entry.
#[test]
fn a_call_goes_on_when_a_node_is_killed() {
    let _serial = crate::one_media_test_at_a_time();
    const CLUSTER: &str = "app-kill";
    let server = [env!("CARGO_BIN_EXE_huddle"), "server"];
    let postgres = Postgres::start(CLUSTER);
    let redis = Redis::start(CLUSTER);
    let mut node_a = Node::start(&server, CLUSTER, "a", &postgres.url(), &redis.url());
    let node_b = Node::start(&server, CLUSTER, "b", &postgres.url(), &redis.url());
    let dir: PathBuf =
        std::env::temp_dir().join(format!("huddle-app-cluster-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let (alice_stats, bob_stats) = (dir.join("alice.json"), dir.join("bob.json"));

    let mut bob = Bot::start(
        &node_b.ws_url(),
        &node_a.ws_url(),
        "bob",
        &bob_stats,
        &["--answer", "--seconds", "30"],
    );
    // Bob is known on node a before Alice calls him.
    let started = Instant::now();
    while !node_a.log().contains("(bob) mirrored") {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "bob never logged in"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut alice = Bot::start(
        &node_a.ws_url(),
        &node_b.ws_url(),
        "alice",
        &alice_stats,
        &["--call", "bob", "--video", "--seconds", "14"],
    );
    // Mid-call: the kill's moment does not matter, only that pictures flowed before and
    // after it (the call lasts 14 s from a set-up of well under a second here).
    std::thread::sleep(Duration::from_secs(6));
    node_a.kill();

    assert!(
        alice.finish(Duration::from_secs(60)).success(),
        "alice's bot failed"
    );
    assert!(
        bob.finish(Duration::from_secs(60)).success(),
        "bob's bot failed"
    );
    assert!(
        node_b.log().contains("takes session"),
        "node b took the session over: {}",
        node_b.log()
    );
    let (alice_stats, bob_stats) = (stats(&alice_stats), stats(&bob_stats));
    for (stats, from) in [(&alice_stats, "bob"), (&bob_stats, "alice")] {
        let per_second = frames_per_second(stats, from);
        let first = per_second.iter().position(|&n| n > 0).expect("pictures");
        let last = per_second.iter().rposition(|&n| n > 0).expect("pictures");
        let during = &per_second[first..=last];
        eprintln!("pictures from {from} per second: {per_second:?}");
        assert!(
            during.len() >= 12 && during.iter().all(|&n| n >= 5),
            "pictures from {from} every second of the call: {per_second:?}"
        );
    }

    let store = huddle_server::store::Store::open(Path::new(&postgres.url())).expect("database");
    let (logs, _) = store
        .list_calls(Some("alice"), &CallLogQuery::default())
        .expect("call logs");
    assert_eq!(logs.len(), 1, "{logs:?}");
    assert_eq!(logs[0].status, CallStatus::Ended, "{logs:?}");
    let mut participants = logs[0].participants.clone();
    participants.sort();
    assert_eq!(participants, ["alice", "bob"]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `scripts/cluster --check`, as a developer runs it, with this build's binary: the script
/// starts two Janus, Redis, PostgreSQL (as the postgres user) and two Huddle nodes on
/// loopback, places a bot call from one node to a user on the other, and exits 0 only if each
/// side decoded 20 pictures or more of the other. Afterwards nothing it started is left
/// running. Its ports are moved (`HUDDLE_CLUSTER_PORT`) off the defaults a developer's own
/// cluster may hold.
#[test]
fn the_development_cluster_script_carries_a_call_across_its_nodes() {
    crate::net_lab::require_root();
    let _serial = crate::one_media_test_at_a_time();
    let base = "17878";
    let mut script = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/cluster"))
        .arg("--check")
        .env("HUDDLE_BIN", env!("CARGO_BIN_EXE_huddle"))
        .env("HUDDLE_CLUSTER_PORT", base)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("scripts/cluster starts");
    // The script bounds itself (20 s waits for each part, bots that give up after 20 s);
    // this only keeps a broken script from hanging the suite. SIGTERM, not SIGKILL: the
    // script then stops what it started.
    if exit_within(&mut script, Duration::from_secs(180)).is_none() {
        let _ = Command::new("kill").arg(script.id().to_string()).status();
    }
    let output = script.wait_with_output().expect("script output");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(
        output.status.success(),
        "scripts/cluster --check failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    for side in ["alice (node 0) received bob", "bob (node 1) received alice"] {
        assert!(stdout.contains(side), "{side}:\n{stdout}\n{stderr}");
    }
    assert!(stderr.contains("cluster stopped"), "{stderr}");
    let left = Command::new("pgrep")
        .args(["-f", &format!("127.0.0.1:{base}|huddle-cluster")])
        .output()
        .expect("pgrep");
    assert!(
        left.stdout.is_empty(),
        "left running: {}",
        String::from_utf8_lossy(&left.stdout)
    );
}
