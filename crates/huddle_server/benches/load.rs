//! Load generator for the signaling server, on loopback, bounded in time.
//!
//! 1. Starts the server in a child process (this same binary, `HUDDLE_LOAD_SERVER=1`), so its
//!    memory can be read from `/proc/PID/status` apart from the clients'.
//! 2. Connects and logs in `CLIENTS` WebSocket clients (default 1,000), and reports the
//!    server's resident memory per connected client.
//! 3. Pairs them up; each pair sets up calls back to back for `SECONDS` (default 10):
//!    initiate → incoming → accept → accepted → both generate a token and join → both
//!    joined; then the caller ends the call. Reports setups/s and setup latency p50/p99.
//!
//! Run: `cargo bench -p huddle_server --bench load` (env `CLIENTS`, `SECONDS` to change).
#![allow(missing_docs)]

#[path = "support/client.rs"]
mod client;
use client::{Client, login};

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use huddle_protocol::{CallType, ReceiverType, Reply, Request, ServerEvent};
use huddle_server::{ConnectionLimits, HubConfig, RateLimit, ServerConfig};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// 1,000 clients need more than the usual 1,024 descriptors per process.
#[allow(unsafe_code)]
fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain libc calls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max.min(65_536);
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn main() {
    raise_fd_limit();
    if std::env::var_os("HUDDLE_LOAD_SERVER").is_some() {
        run_server();
        return;
    }
    let clients = env_or("CLIENTS", 1_000).max(2) & !1;
    let seconds = env_or("SECONDS", 10);
    let mut child = Command::new(std::env::current_exe().expect("exe"))
        .env("HUDDLE_LOAD_SERVER", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("server process");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("address");
    let addr: SocketAddr = line.trim().parse().expect("address line");
    let pid = child.id();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let idle_rss = rss_kib(pid);
        let started = Instant::now();
        let mut sockets = Vec::with_capacity(clients as usize);
        for i in 0..clients {
            sockets.push(login(addr, &format!("user{i}")).await);
        }
        let connect_secs = started.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let connected_rss = rss_kib(pid);
        let per_client = (connected_rss.saturating_sub(idle_rss)) as f64 * 1024.0 / clients as f64;
        println!("clients connected and logged in: {clients} in {connect_secs:.2} s");
        println!("server RSS: idle {idle_rss} KiB, with {clients} clients {connected_rss} KiB");
        println!("server memory per connected client: {per_client:.0} bytes");

        let deadline = Instant::now() + Duration::from_secs(seconds);
        let mut tasks = Vec::new();
        let mut iter = sockets.into_iter().enumerate();
        while let (Some((_, a)), Some((j, b))) = (iter.next(), iter.next()) {
            tasks.push(tokio::spawn(pair(a, b, format!("user{j}"), deadline)));
        }
        let mut latencies: Vec<Duration> = Vec::new();
        let mut failures = 0u64;
        for task in tasks {
            let (lat, failed) = task.await.expect("pair task");
            latencies.extend(lat);
            failures += failed;
        }
        latencies.sort();
        let n = latencies.len();
        let pct = |p: f64| latencies.get(((n as f64 * p) as usize).min(n.saturating_sub(1))).copied().unwrap_or_default();
        println!(
            "call setups (initiate -> accepted -> both joined): {n} in {seconds} s = {:.0}/s with {} pairs, {failures} failed",
            n as f64 / seconds as f64,
            clients / 2
        );
        println!(
            "setup latency: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            pct(0.50).as_secs_f64() * 1e3,
            pct(0.99).as_secs_f64() * 1e3,
            latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3
        );
        println!("server RSS after the run: {} KiB", rss_kib(pid));
    });
    drop(child.stdin.take());
    let _ = child.kill();
    let _ = child.wait();
}

fn run_server() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        // The load generator is not a flood: the per-connection rate limit is lifted.
        let config = ServerConfig {
            hub: HubConfig {
                dev_login: true,
                ..HubConfig::default()
            },
            rate: RateLimit {
                burst: 1e9,
                per_second: 1e9,
                close_after: u32::MAX,
            },
            // Every client comes from 127.0.0.1: the per-address cap (256) would refuse most.
            limits: ConnectionLimits {
                max_per_address: 65_536,
                max_connections: 65_536,
                ..ConnectionLimits::default()
            },
            ..ServerConfig::default()
        };
        let server = huddle_server::bind(config).await.expect("bind");
        println!("{}", server.local_addr());
        let stdin_closed = async {
            let _ = tokio::task::spawn_blocking(|| {
                let mut sink = String::new();
                let _ = std::io::stdin().read_line(&mut sink);
            })
            .await;
        };
        server.serve_until(stdin_closed).await.expect("serve");
    });
}

/// One caller/callee pair setting up calls back to back until the deadline.
async fn pair(
    mut a: Client,
    mut b: Client,
    b_uid: String,
    deadline: Instant,
) -> (Vec<Duration>, u64) {
    let mut latencies = Vec::new();
    let mut failures = 0;
    while Instant::now() < deadline {
        let started = Instant::now();
        let Some(Reply::Call { call }) = a
            .request(Request::InitiateCall {
                receiver_id: b_uid.clone(),
                receiver_type: ReceiverType::User,
                call_type: CallType::Video,
                timeout_secs: None,
            })
            .await
        else {
            failures += 1;
            continue;
        };
        let sid = call.session_id;
        let ok = async {
            b.event(|e| matches!(e, ServerEvent::IncomingCallReceived { .. }))
                .await?;
            b.request(Request::AcceptCall {
                session_id: sid.clone(),
            })
            .await?;
            a.event(|e| matches!(e, ServerEvent::OutgoingCallAccepted { .. }))
                .await?;
            a.join(&sid).await?;
            b.join(&sid).await?;
            Some(())
        }
        .await;
        match ok {
            Some(()) => latencies.push(started.elapsed()),
            None => failures += 1,
        }
        a.request(Request::EndCall { session_id: sid }).await;
    }
    (latencies, failures)
}
