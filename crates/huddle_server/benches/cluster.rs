//! What a cluster costs a call's signalling: the time from one participant sending a peer
//! signal to the other receiving it, relayed by
//! 1. a server alone (the bare cost),
//! 2. one node of a two-node cluster, both participants on it (adds the owner lookup in
//!    Redis, and the session's snapshot),
//! 3. two nodes, the participants on different ones (adds forwarding through Redis pub/sub to
//!    the owning node and the delivery back).
//!
//! Everything in this process on loopback, with a Redis of its own on a Unix socket and a
//! shared SQLite file; prints one JSON line per case with p50/p99 in µs and the ratio of the
//! p50 to the bare cost's.
//!
//! Run: `cargo bench -p huddle_server --bench cluster` (env `SIGNALS`, default 2000).
#![allow(missing_docs)]

#[path = "support/client.rs"]
mod client;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use client::login;
use huddle_protocol::{CallType, PeerSignal, ReceiverType, Reply, Request, ServerEvent};
use huddle_server::cluster::ClusterConfig;
use huddle_server::{HubConfig, RateLimit, ServerConfig};

/// A Redis of the bench's own, killed on drop.
struct Redis(Child, std::path::PathBuf);

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

fn start_redis(dir: &Path) -> Redis {
    let socket = dir.join("redis.sock");
    let child = Command::new("redis-server")
        .args(["--port", "0", "--save", "", "--appendonly", "no"])
        .arg("--unixsocket")
        .arg(&socket)
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server (scripts/setup installs it)");
    let started = Instant::now();
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        assert!(started.elapsed() < Duration::from_secs(10), "no Redis");
        std::thread::sleep(Duration::from_millis(20));
    }
    Redis(child, dir.to_owned())
}

async fn start_server(db: &Path, cluster: Option<ClusterConfig>) -> SocketAddr {
    let config = ServerConfig {
        db: Some(db.to_owned()),
        hub: HubConfig {
            dev_login: true,
            dev_lobby: Some("lobby".into()),
            ..HubConfig::default()
        },
        rate: RateLimit {
            burst: 1e9,
            per_second: 1e9,
            close_after: u32::MAX,
        },
        cluster,
        ..ServerConfig::default()
    };
    let server = huddle_server::bind(config).await.expect("bind");
    let addr = server.local_addr();
    tokio::spawn(async move {
        let _ = server.serve_until(std::future::pending()).await;
    });
    addr
}

/// alice (at `a`) calls bob (at `b`), both join; then `count` signals from alice to bob, each
/// timed from its sending to bob's receiving it. Returns the times in µs, sorted.
async fn signal_times(a: SocketAddr, b: SocketAddr, tag: &str, count: usize) -> Vec<u64> {
    let (alice, bob) = (format!("alice-{tag}"), format!("bob-{tag}"));
    let mut caller = login(a, &alice).await;
    let mut callee = login(b, &bob).await;
    // The other node hears of bob's login through Redis: ring until it does.
    let session_id = loop {
        match caller
            .request(Request::InitiateCall {
                receiver_id: bob.clone(),
                receiver_type: ReceiverType::User,
                call_type: CallType::Audio,
                timeout_secs: None,
            })
            .await
        {
            Some(Reply::Call { call }) => {
                let rung = tokio::time::timeout(
                    Duration::from_millis(500),
                    callee.event(|e| matches!(e, ServerEvent::IncomingCallReceived { .. })),
                )
                .await;
                if rung.is_ok() {
                    break call.session_id;
                }
                let _ = caller
                    .request(Request::RejectCall {
                        session_id: call.session_id,
                        status: huddle_protocol::CallStatus::Cancelled,
                    })
                    .await;
            }
            other => panic!("initiate: {other:?}"),
        }
    };
    callee
        .request(Request::AcceptCall {
            session_id: session_id.clone(),
        })
        .await
        .expect("accept");
    caller.join(&session_id).await.expect("alice joins");
    callee.join(&session_id).await.expect("bob joins");
    let mut times = Vec::with_capacity(count);
    for n in 0..count {
        let sent = Instant::now();
        let id = caller
            .send(Request::Signal {
                session_id: session_id.clone(),
                to: bob.clone(),
                signal: PeerSignal::Offer {
                    sdp: format!("v=0 {n}"),
                },
            })
            .await;
        callee
            .event(|e| matches!(e, ServerEvent::Signal { .. }))
            .await
            .expect("bob gets the signal");
        times.push(sent.elapsed().as_micros() as u64);
        caller.answer(id).await.expect("relayed");
    }
    times.sort_unstable();
    times
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let count: usize = std::env::var("SIGNALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let dir = std::env::temp_dir().join(format!("huddle-bench-cluster-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let redis = start_redis(&dir);
    let redis_url = format!("redis+unix://{}", dir.join("redis.sock").display());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let alone = start_server(&dir.join("alone.db"), None).await;
        let node = |id: &str| ClusterConfig {
            redis_url: redis_url.clone(),
            node_id: id.into(),
        };
        let shared = dir.join("cluster.db");
        let node_a = start_server(&shared, Some(node("a"))).await;
        let node_b = start_server(&shared, Some(node("b"))).await;
        let mut bare = 0;
        for (case, a, b) in [
            ("alone", alone, alone),
            ("one_node_of_a_cluster", node_a, node_a),
            ("across_two_nodes", node_a, node_b),
        ] {
            let times = signal_times(a, b, case, count).await;
            let p50 = percentile(&times, 0.5);
            if bare == 0 {
                bare = p50;
            }
            println!(
                "{{\"case\": \"{case}\", \"signals\": {count}, \"p50_us\": {p50}, \"p99_us\": {}, \"ratio_to_alone\": {:.2}}}",
                percentile(&times, 0.99),
                p50 as f64 / bare as f64
            );
        }
    });
    drop(runtime);
    drop(redis);
}
