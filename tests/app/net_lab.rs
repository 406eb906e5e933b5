//! The network lab: `huddle bot`s on hosts made of Linux network namespaces, calling each
//! other through a standalone `huddle server` and a real coturn on a third host.
//!
//! Every case builds its own hosts (a name prefix of its own, so cases never share
//! anything), runs the processes inside them with `ip netns exec`, and asserts on the bots'
//! `--stats-json`. [`Lab`]'s `Drop` kills the processes and deletes the namespaces, so a
//! failing case cleans up too; what a killed run left behind is swept by the next. Needs
//! root (CI runs as root); `scripts/setup` installs iproute2, nftables and coturn.
//!
//! ```text
//!            "public" 10.77.0.0/24 (a bridge in its own namespace)
//!     ┌──────────────┬──────────────────┬──────────────────────────┐
//!   server 10.77.0.1      LAN host 10.77.0.1x      NAT 10.77.0.2x ── host 192.168.x.2
//!   (huddle server +                                (nftables masquerade, optionally
//!    coturn :3478)                                   fully-random, optionally no UDP)
//! ```
//!
//! The kernel has no netem: loss is an nftables `numgen random` drop, a bandwidth cap is a
//! `tc tbf` qdisc, an outage is a drop-everything table added and deleted.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

pub(crate) const SERVER_IP: &str = "10.77.0.1";
/// The public network's gateway to "elsewhere" (the bridge's own address; it forwards
/// nothing).
const INTERNET_GATEWAY: &str = "10.77.0.254";
const TURN_SECRET: &str = "lab-turn-secret";

/// Runs a command; panics with its output if it fails.
fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("{program} {args:?}: {err}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Loads an nftables ruleset into a namespace.
pub(crate) fn nft(namespace: &str, ruleset: &str) {
    let mut child = Command::new("ip")
        .args(["netns", "exec", namespace, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nft starts");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(ruleset.as_bytes())
        .expect("ruleset written");
    let output = child.wait_with_output().expect("nft runs");
    assert!(
        output.status.success(),
        "nft in {namespace}: {}\n{ruleset}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// How a host reaches the public network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Uplink {
    /// On the public network itself.
    Lan,
    /// Behind an endpoint-independent NAT ("full cone": port-preserving masquerade, and
    /// whatever arrives on a mapped port goes to the host, from anyone). Plain Linux
    /// masquerade filters by address and port, and two of them punching holes towards each
    /// other collide in conntrack and move ports: that is (c)'s case, not this one.
    Nat,
    /// Behind a symmetric NAT (`masquerade random,fully-random`).
    SymmetricNat,
    /// Behind a symmetric NAT that forwards no UDP at all.
    NatWithoutUdp,
}

/// One case's hosts and processes.
pub(crate) struct Lab {
    prefix: String,
    namespaces: Vec<String>,
    children: Vec<Child>,
    /// How many of `children` are servers (started before the bots).
    servers: usize,
    pub(crate) dir: PathBuf,
    hosts: u32,
    /// Frames per second the bots send.
    pub(crate) fps: u32,
    /// Their video bitrate, kbps.
    pub(crate) kbps: u32,
    /// Their video size.
    pub(crate) size: (u32, u32),
    /// `ws` or `wss`.
    scheme: &'static str,
}

impl Lab {
    /// The public network and the server host (no processes yet).
    pub(crate) fn new(case: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        sweep_namespaces_of_dead_runs();
        let prefix = format!("hl{}x{id}", std::process::id() % 100_000);
        let dir = std::env::temp_dir().join(format!("huddle-lab-{prefix}-{case}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("lab dir");
        let mut lab = Self {
            prefix,
            namespaces: Vec::new(),
            children: Vec::new(),
            servers: 0,
            dir,
            hosts: 0,
            fps: 15,
            kbps: 300,
            size: (320, 180),
            scheme: "ws",
        };
        let public = lab.namespace("pub");
        lab.in_ns(&public, &["ip", "link", "add", "br0", "type", "bridge"]);
        lab.in_ns(&public, &["ip", "link", "set", "br0", "up"]);
        let server = lab.namespace("srv");
        lab.attach_public(&server, &format!("{SERVER_IP}/24"));
        // The rest of the internet, as the server sees it: a gateway that takes anything and
        // delivers nothing (it does not forward). Without a route, coturn's relay got
        // "network unreachable" sending a peer's checks to a private host candidate it had
        // permitted, and closed that allocation within 0.2 s of the call's start.
        lab.in_ns(
            &public,
            &[
                "ip",
                "addr",
                "add",
                &format!("{INTERNET_GATEWAY}/24"),
                "dev",
                "br0",
            ],
        );
        lab.in_ns(
            &server,
            &["ip", "route", "add", "default", "via", INTERNET_GATEWAY],
        );
        lab
    }

    pub(crate) fn ns(&self, role: &str) -> String {
        format!("{}{role}", self.prefix)
    }

    /// A new namespace with `lo` up.
    fn namespace(&mut self, role: &str) -> String {
        let name = self.ns(role);
        run("ip", &["netns", "add", &name]);
        self.namespaces.push(name.clone());
        self.in_ns(&name, &["ip", "link", "set", "lo", "up"]);
        name
    }

    pub(crate) fn in_ns(&self, namespace: &str, command: &[&str]) -> String {
        let mut args = vec!["netns", "exec", namespace];
        args.extend_from_slice(command);
        run("ip", &args)
    }

    /// A veth pair between two namespaces, named `a_name` in `a` and `b_name` in `b`.
    fn link(&mut self, (a, a_name): (&str, &str), (b, b_name): (&str, &str)) {
        self.hosts += 1;
        // Names in the root namespace must be unique there and at most 15 characters.
        let (tmp_a, tmp_b) = (
            format!("{}a{}", self.prefix, self.hosts),
            format!("{}b{}", self.prefix, self.hosts),
        );
        run(
            "ip",
            &[
                "link", "add", &tmp_a, "type", "veth", "peer", "name", &tmp_b,
            ],
        );
        run("ip", &["link", "set", &tmp_a, "netns", a]);
        run("ip", &["link", "set", &tmp_b, "netns", b]);
        self.in_ns(a, &["ip", "link", "set", &tmp_a, "name", a_name]);
        self.in_ns(b, &["ip", "link", "set", &tmp_b, "name", b_name]);
        self.in_ns(a, &["ip", "link", "set", a_name, "up"]);
        self.in_ns(b, &["ip", "link", "set", b_name, "up"]);
    }

    /// Plugs `namespace` into the public bridge as `eth0` with `address`.
    fn attach_public(&mut self, namespace: &str, address: &str) {
        let public = self.ns("pub");
        let port = format!("p{}", self.hosts + 1);
        self.link((namespace, "eth0"), (&public, &port));
        self.in_ns(&public, &["ip", "link", "set", &port, "master", "br0"]);
        self.in_ns(namespace, &["ip", "addr", "add", address, "dev", "eth0"]);
    }

    /// Plugs this machine's own (root) namespace into the public bridge with `address`, for a
    /// program that cannot run inside a namespace (Chromium behind its chromedriver, which the
    /// test drives over loopback). Its veth goes with the public namespace.
    pub(crate) fn attach_root(&mut self, address: &str) {
        let public = self.ns("pub");
        self.hosts += 1;
        let (root_end, bridge_end) = (
            format!("{}r{}", self.prefix, self.hosts),
            format!("{}q{}", self.prefix, self.hosts),
        );
        run(
            "ip",
            &[
                "link",
                "add",
                &root_end,
                "type",
                "veth",
                "peer",
                "name",
                &bridge_end,
            ],
        );
        run("ip", &["link", "set", &bridge_end, "netns", &public]);
        self.in_ns(
            &public,
            &["ip", "link", "set", &bridge_end, "master", "br0"],
        );
        self.in_ns(&public, &["ip", "link", "set", &bridge_end, "up"]);
        run("ip", &["addr", "add", address, "dev", &root_end]);
        run("ip", &["link", "set", &root_end, "up"]);
    }

    /// A host named `role` (`a`, `b`), reaching the public network through `uplink`.
    /// Returns its namespace.
    pub(crate) fn host(&mut self, role: &str, number: u8, uplink: Uplink) -> String {
        let host = self.namespace(role);
        if uplink == Uplink::Lan {
            self.attach_public(&host, &format!("10.77.0.{}/24", 10 + number));
            return host;
        }
        let nat = self.namespace(&format!("n{role}"));
        self.attach_public(&nat, &format!("10.77.0.{}/24", 20 + number));
        self.link((&nat, "lan0"), (&host, "eth0"));
        let inside = format!("192.168.{number}");
        self.in_ns(
            &nat,
            &[
                "ip",
                "addr",
                "add",
                &format!("{inside}.1/24"),
                "dev",
                "lan0",
            ],
        );
        self.in_ns(
            &host,
            &[
                "ip",
                "addr",
                "add",
                &format!("{inside}.2/24"),
                "dev",
                "eth0",
            ],
        );
        self.in_ns(
            &host,
            &[
                "ip",
                "route",
                "add",
                "default",
                "via",
                &format!("{inside}.1"),
            ],
        );
        self.in_ns(&nat, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        let masquerade = match uplink {
            Uplink::Nat => "masquerade",
            _ => "masquerade random,fully-random",
        };
        let forward = if uplink == Uplink::NatWithoutUdp {
            "meta l4proto udp drop"
        } else {
            ""
        };
        let inbound = if uplink == Uplink::Nat {
            format!("iifname \"eth0\" meta l4proto udp dnat to {inside}.2")
        } else {
            String::new()
        };
        nft(
            &nat,
            &format!(
                "table ip lab {{
                    chain prerouting {{
                        type nat hook prerouting priority -100;
                        {inbound}
                    }}
                    chain postrouting {{
                        type nat hook postrouting priority 100;
                        oifname \"eth0\" {masquerade};
                    }}
                    chain forward {{
                        type filter hook forward priority 0;
                        {forward}
                    }}
                }}"
            ),
        );
        host
    }

    /// Starts a process inside `namespace`, its output in the lab directory.
    pub(crate) fn spawn(&mut self, namespace: &str, log: &str, command: &[&str]) {
        let log = std::fs::File::create(self.dir.join(log)).expect("log file");
        let child = Command::new("ip")
            .args(["netns", "exec", namespace])
            .args(command)
            // HUDDLE_LAB_LOG=info (or a filter) shows the WebRTC stack's progress.
            .env(
                "RUST_LOG",
                std::env::var("HUDDLE_LAB_LOG").unwrap_or_else(|_| {
                    "warn,huddle_server::sfu=info,huddle_server::hub=info,huddle_server::cluster=debug"
                        .into()
                }),
            )
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("process starts");
        self.children.push(child);
    }

    /// coturn on the server host (UDP and TCP on 3478, shared-secret credentials), and the
    /// huddle server handing it out with `server_args`; waits until both listen.
    pub(crate) fn start_servers(&mut self, server_args: &[&str]) {
        let server = self.ns("srv");
        let huddle = env!("CARGO_BIN_EXE_huddle");
        let db = self.dir.join("huddle.db");
        let db = db.to_str().expect("utf-8 path").to_owned();
        let listen = format!("{SERVER_IP}:7878");
        let mut command = vec![
            huddle,
            "server",
            "--listen",
            &listen,
            "--db",
            &db,
            "--dev-login",
        ];
        command.extend_from_slice(server_args);
        self.spawn(&server, "server.log", &command);
        let turn_log = self.dir.join("coturn.log");
        let turn_log = turn_log.to_str().expect("utf-8 path").to_owned();
        let secret = format!("--static-auth-secret={TURN_SECRET}");
        self.spawn(
            &server,
            "coturn.out",
            &[
                "turnserver",
                "-n",
                "--listening-ip",
                SERVER_IP,
                "--relay-ip",
                SERVER_IP,
                "--listening-port",
                "3478",
                "--use-auth-secret",
                &secret,
                "--realm",
                "huddle.lab",
                "--no-tls",
                "--no-dtls",
                "--no-cli",
                "--no-multicast-peers",
                "--log-file",
                &turn_log,
                "--simple-log",
                "--pidfile",
                "/dev/null",
            ],
        );
        self.servers += 2;
        self.wait_for_port(&server, 7878);
        self.wait_for_port(&server, 3478);
    }

    /// Two huddle server nodes of one cluster on the server host, `a` on port 7878 and `b` on
    /// 7879, sharing the PostgreSQL `db` and the Redis `redis` (Unix sockets, which namespaces
    /// do not separate), with `server_args`; waits until both listen. Their logs are
    /// `server-a.log` and `server-b.log`.
    pub(crate) fn start_cluster(&mut self, db: &str, redis: &str, server_args: &[&str]) {
        let server = self.ns("srv");
        let huddle = env!("CARGO_BIN_EXE_huddle");
        for (node, port) in [("a", 7878u16), ("b", 7879)] {
            let listen = format!("{SERVER_IP}:{port}");
            let mut command = vec![
                huddle,
                "server",
                "--listen",
                &listen,
                "--db",
                db,
                "--redis",
                redis,
                "--node-id",
                node,
                "--dev-login",
            ];
            command.extend_from_slice(server_args);
            self.spawn(&server, &format!("server-{node}.log"), &command);
            self.servers += 1;
            self.wait_for_port(&server, port);
        }
    }

    /// A file of the lab's directory (a process's log), as text so far.
    pub(crate) fn read_log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }

    /// Waits (at most 10 s) until something in `namespace` listens on TCP `port` of the
    /// server address.
    pub(crate) fn wait_for_port(&self, namespace: &str, port: u16) {
        let ready = format!(
            "for i in $(seq 100); do (echo > /dev/tcp/{SERVER_IP}/{port}) 2>/dev/null && exit 0; \
             sleep 0.1; done; exit 1"
        );
        self.in_ns(namespace, &["bash", "-c", &ready]);
    }

    /// A Janus Gateway (VideoRoom, WebSocket API on 8188) on the server host, configured by
    /// `scripts/janus-config` like the development cluster's; waits until it listens.
    /// Start it before [`Self::start_servers`] points the huddle server at it.
    pub(crate) fn start_janus(&mut self) {
        let server = self.ns("srv");
        let config = self.dir.join("janus");
        let config = config.to_str().expect("utf-8 path").to_owned();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/janus-config");
        run(script, &[&config, "8188", "20000-20999"]);
        let file = format!("{config}/janus.jcfg");
        self.spawn(&server, "janus.log", &["janus", "-F", &config, "-C", &file]);
        self.servers += 1;
        self.wait_for_port(&server, 8188);
    }

    /// The process id of the `index`th process started (servers first, then bots).
    pub(crate) fn child_pid(&self, index: usize) -> u32 {
        self.children[index].id()
    }

    /// How many processes were started.
    pub(crate) fn child_count(&self) -> usize {
        self.children.len()
    }

    /// The statistics a bot wrote when it finished.
    pub(crate) fn stats_of(&self, uid: &str) -> Value {
        let path = self.dir.join(format!("{uid}.json"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|err| {
            panic!("{}: {err}; logs in {}", path.display(), self.dir.display())
        });
        serde_json::from_str(&text).expect("stats JSON")
    }

    /// Waits for the bots (the processes started after the servers) to exit, at most
    /// `limit`.
    pub(crate) fn wait_for_bots(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        for child in self.children.iter_mut().skip(self.servers) {
            loop {
                if child.try_wait().expect("wait").is_some() {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "bots still running after {limit:?}; logs in {}",
                    self.dir.display()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// Starts a bot in `namespace` with the lab's video settings, for `seconds`.
    pub(crate) fn bot(&mut self, namespace: &str, uid: &str, seconds: u32, role: &[&str]) {
        self.bot_on(namespace, uid, seconds, (7878, None), role);
    }

    /// [`Self::bot`] on the server port `ports.0`, falling back to the port `ports.1` (another
    /// node of a cluster, see [`Self::start_cluster`]).
    pub(crate) fn bot_on(
        &mut self,
        namespace: &str,
        uid: &str,
        seconds: u32,
        ports: (u16, Option<u16>),
        role: &[&str],
    ) {
        let huddle = env!("CARGO_BIN_EXE_huddle");
        let server = format!("{}://{SERVER_IP}:{}/ws", self.scheme, ports.0);
        let fallback = ports
            .1
            .map(|port| format!("{}://{SERVER_IP}:{port}/ws", self.scheme));
        let stats = self.dir.join(format!("{uid}.json"));
        let stats = stats.to_str().expect("utf-8 path").to_owned();
        let seconds = seconds.to_string();
        let fps = self.fps.to_string();
        let kbps = self.kbps.to_string();
        let (width, height) = (self.size.0.to_string(), self.size.1.to_string());
        let mut command = vec![
            huddle,
            "bot",
            "--server",
            &server,
            "--uid",
            uid,
            "--width",
            &width,
            "--height",
            &height,
            "--fps",
            &fps,
            "--kbps",
            &kbps,
            "--seconds",
            &seconds,
            "--wait",
            "30",
            "--stats-json",
            &stats,
        ];
        if let Some(fallback) = &fallback {
            command.extend_from_slice(&["--fallback-server", fallback]);
        }
        command.extend_from_slice(role);
        self.spawn(namespace, &format!("{uid}.log"), &command);
    }

    /// Waits for the bots to exit, at most `limit`; returns alice's and bob's statistics.
    fn bot_stats(&mut self, limit: Duration) -> (Value, Value) {
        self.wait_for_bots(limit);
        (self.stats_of("alice"), self.stats_of("bob"))
    }

    /// A call of `seconds` between alice (on `a`, calling) and bob (on `b`, answering).
    fn call(&mut self, a: &str, b: &str, seconds: u32) {
        self.bot(b, "bob", seconds, &["--answer"]);
        std::thread::sleep(Duration::from_millis(300));
        self.bot(a, "alice", seconds, &["--call", "bob"]);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Deleting a namespace kills nothing, but its processes are gone above; its veths go
        // with it.
        for namespace in self.namespaces.iter().rev() {
            let _ = Command::new("ip")
                .args(["netns", "del", namespace])
                .status();
        }
        // Kept when the test failed, or with HUDDLE_LAB_KEEP set, for its logs.
        if !std::thread::panicking() && std::env::var_os("HUDDLE_LAB_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Deletes the namespaces a killed test run left behind (`Drop` never ran): lab namespaces
/// are named `hl<pid>x<n><role>`, and a pid with no process any more is a dead run's.
fn sweep_namespaces_of_dead_runs() {
    let Ok(list) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&list.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(pid) = name
            .strip_prefix("hl")
            .and_then(|rest| rest.split_once('x'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let alive = std::path::Path::new(&format!("/proc/{pid}")).exists();
        if !alive && pid != std::process::id() % 100_000 {
            // Its processes (coturn, the server, bots) outlived it too.
            if let Ok(pids) = Command::new("ip").args(["netns", "pids", name]).output() {
                for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            }
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

/// The statistics alice has of bob (or bob of alice).
pub(crate) fn remote<'a>(stats: &'a Value, of: &str) -> &'a Value {
    &stats["remotes"][of]
}

fn candidate_types(stats: &Value, of: &str) -> (String, String, String) {
    let ice = &remote(stats, of)["ice"];
    let field = |name: &str| ice[name].as_str().unwrap_or("none").to_owned();
    (
        field("local_candidate_type"),
        field("remote_candidate_type"),
        field("protocol"),
    )
}

/// Video and audio arrived both ways: frames at `min_fps` or more, the other's tone heard.
fn assert_media_both_ways(alice: &Value, bob: &Value, min_fps: f64) {
    for (stats, of) in [(alice, "bob"), (bob, "alice")] {
        let remote = remote(stats, of);
        let fps = remote["video_fps"].as_f64().unwrap_or(0.0);
        assert!(fps >= min_fps, "{of}'s video at {fps} fps: {stats:#}");
        assert!(
            remote["audio_tone_hz"].as_f64().is_some(),
            "{of}'s tone not heard: {stats:#}"
        );
        assert_eq!(stats["errors"], Value::Array(vec![]), "errors: {stats:#}");
    }
}

/// The lab needs root for namespaces.
pub(crate) fn require_root() {
    assert!(
        run("id", &["-u"]).trim() == "0",
        "the network lab needs root (network namespaces); CI runs as root"
    );
}

/// (a) Two hosts on one subnet, the server on a third: the media goes straight between
/// them, a `host` pair on each side, over UDP.
#[test]
fn lab_lan_hosts_use_a_host_pair() {
    require_root();
    let _serial = crate::one_media_test_at_a_time();
    let mut lab = Lab::new("lan");
    let (a, b) = (lab.host("a", 1, Uplink::Lan), lab.host("b", 2, Uplink::Lan));
    lab.start_servers(&[]);
    lab.call(&a, &b, 5);
    let (alice, bob) = lab.bot_stats(Duration::from_secs(60));
    assert_media_both_ways(&alice, &bob, 10.0);
    for (stats, of) in [(&alice, "bob"), (&bob, "alice")] {
        assert_eq!(
            candidate_types(stats, of),
            ("host".into(), "host".into(), "udp".into()),
            "{stats:#}"
        );
    }
}

/// (b) Both hosts behind endpoint-independent NATs, coturn as STUN only: each learns its
/// public mapping (server-reflexive), the checks punch through both NATs, and the media
/// flows directly: a server-reflexive (or, learned from checks, peer-reflexive) remote on
/// each side, never a relay.
#[test]
fn lab_behind_cone_nats_uses_a_server_reflexive_pair() {
    require_root();
    let _serial = crate::one_media_test_at_a_time();
    let mut lab = Lab::new("cone");
    let (a, b) = (lab.host("a", 1, Uplink::Nat), lab.host("b", 2, Uplink::Nat));
    let stun = format!("stun:{SERVER_IP}:3478");
    lab.start_servers(&["--ice-server", &stun]);
    lab.call(&a, &b, 5);
    let (alice, bob) = lab.bot_stats(Duration::from_secs(60));
    assert_media_both_ways(&alice, &bob, 10.0);
    for (stats, of) in [(&alice, "bob"), (&bob, "alice")] {
        let (local, remote, protocol) = candidate_types(stats, of);
        assert!(
            local != "relay" && matches!(remote.as_str(), "srflx" | "prflx"),
            "{local} ↔ {remote}: {stats:#}"
        );
        assert_eq!(protocol, "udp");
    }
}

/// (c) Both hosts behind symmetric NATs (a new port for every destination): no direct
/// path can work, so the media goes through coturn, whose TURN URL and secret only the
/// server knows: each bot gets its own credentials in the join answer and uses a `relay`
/// candidate over UDP.
#[test]
fn lab_behind_symmetric_nats_relays_through_turn_over_udp() {
    require_root();
    let _serial = crate::one_media_test_at_a_time();
    let mut lab = Lab::new("symmetric");
    let (a, b) = (
        lab.host("a", 1, Uplink::SymmetricNat),
        lab.host("b", 2, Uplink::SymmetricNat),
    );
    let turn = format!("turn:{SERVER_IP}:3478?transport=udp");
    lab.start_servers(&["--turn-url", &turn, "--turn-secret", TURN_SECRET]);
    lab.call(&a, &b, 6);
    let (alice, bob) = lab.bot_stats(Duration::from_secs(60));
    assert_media_both_ways(&alice, &bob, 10.0);
    for (stats, of) in [(&alice, "bob"), (&bob, "alice")] {
        let (local, remote, protocol) = candidate_types(stats, of);
        assert!(
            local == "relay" || remote == "relay",
            "{local} ↔ {remote}: {stats:#}"
        );
        assert_eq!(protocol, "udp", "{stats:#}");
    }
}

/// (d) Both hosts behind symmetric NATs that forward no UDP at all: neither a direct path nor
/// a relay reached over UDP can work, so each bot reaches coturn over TCP (the server hands
/// out `turn:…?transport=tcp` with each bot's own credentials) and the media flows through a
/// `relay` candidate whose leg to the TURN server is TCP.
#[test]
fn lab_without_udp_relays_through_turn_over_tcp() {
    require_root();
    let _serial = crate::one_media_test_at_a_time();
    let mut lab = Lab::new("no-udp");
    let (a, b) = (
        lab.host("a", 1, Uplink::NatWithoutUdp),
        lab.host("b", 2, Uplink::NatWithoutUdp),
    );
    let turn = format!("turn:{SERVER_IP}:3478?transport=tcp");
    lab.start_servers(&["--turn-url", &turn, "--turn-secret", TURN_SECRET]);
    lab.call(&a, &b, 6);
    let (mut alice, mut bob) = lab.bot_stats(Duration::from_secs(60));
    // The STUN URL the server derives from the TURN one is reached over UDP: no answer here,
    // reported as such, and nothing else may go wrong.
    for stats in [&mut alice, &mut bob] {
        let errors = stats["errors"].as_array_mut().expect("errors");
        errors.retain(|error| {
            let error = error.as_str().unwrap_or_default();
            !(error.contains(&format!("stun:{SERVER_IP}:3478")) && error.contains("no answer"))
        });
    }
    assert_media_both_ways(&alice, &bob, 10.0);
    for (stats, of) in [(&alice, "bob"), (&bob, "alice")] {
        let (local, remote, protocol) = candidate_types(stats, of);
        assert_eq!(local, "relay", "{local} ↔ {remote}: {stats:#}");
        assert_eq!(protocol, "tcp", "{stats:#}");
    }
}

/// (e) 10 % random loss each way on the LAN: NACK and keyframe requests keep the picture
/// whole (no decoded picture with a broken stamp) at 20 fps or more of the 30 sent, and
/// Opus conceals at most 5 % of the audio.
#[test]
fn lab_ten_percent_loss_keeps_pictures_whole() {
    require_root();
    let _serial = crate::one_media_test_at_a_time();
    let mut lab = Lab::new("loss");
    lab.fps = 30;
    let (a, b) = (lab.host("a", 1, Uplink::Lan), lab.host("b", 2, Uplink::Lan));
    for host in [&a, &b] {
        nft(
            host,
            "table inet lab {
                chain input {
                    type filter hook input priority 0;
                    iifname \"eth0\" meta l4proto udp numgen random mod 100 < 10 drop;
                }
            }",
        );
    }
    lab.start_servers(&[]);
    lab.call(&a, &b, 8);
    let (alice, bob) = lab.bot_stats(Duration::from_secs(60));
    for (stats, of) in [(&alice, "bob"), (&bob, "alice")] {
        let remote = remote(stats, of);
        eprintln!(
            "10 % loss: {of}'s video at {} fps, {} concealed, {} recovered by FEC",
            remote["video_fps"], remote["audio_concealed_ratio"], remote["audio_recovered_ratio"]
        );
    }
    assert_media_both_ways(&alice, &bob, 20.0);
    for (stats, of) in [(&alice, "bob"), (&bob, "alice")] {
        let remote = remote(stats, of);
        assert_eq!(remote["video_frames_unstamped"], 0, "{stats:#}");
        let concealed = remote["audio_concealed_ratio"].as_f64().unwrap_or(1.0);
        assert!(concealed <= 0.05, "{of}: {concealed} concealed: {stats:#}");
    }
}

/// Cuts everything on alice's host (both ways, signaling included) for `outage` from
/// 5 s into a call of `seconds`; returns both bots' statistics and, for each side, the video
/// per second it saw of the other. The lab comes back too, so that its logs stay if a later
/// assertion fails.
fn call_through_an_outage(case: &str, outage: Duration, seconds: u32) -> (Lab, Value, Value) {
    let mut lab = Lab::new(case);
    let (a, b) = (lab.host("a", 1, Uplink::Lan), lab.host("b", 2, Uplink::Lan));
    lab.start_servers(&[]);
    lab.call(&a, &b, seconds);
    std::thread::sleep(Duration::from_secs(5));
    nft(
        &a,
        "table inet outage {
            chain input { type filter hook input priority 0; iifname \"eth0\" drop; }
            chain output { type filter hook output priority 0; oifname \"eth0\" drop; }
        }",
    );
    std::thread::sleep(outage);
    lab.in_ns(&a, &["nft", "delete", "table", "inet", "outage"]);
    let (alice, bob) = lab.bot_stats(Duration::from_secs(u64::from(seconds) + 60));
    for (stats, of) in [(&alice, "bob"), (&bob, "alice")] {
        eprintln!(
            "{outage:?} outage: {of}'s video per second {}, target {}",
            remote(stats, of)["video_frames_per_second"],
            stats["sent"]["video_target_bps_per_second"]
        );
    }
    assert_eq!(alice["session_id"], bob["session_id"]);
    assert_eq!(alice["errors"], Value::Array(vec![]), "{alice:#}");
    assert_eq!(bob["errors"], Value::Array(vec![]), "{bob:#}");
    (lab, alice, bob)
}

/// Each side's video per second of the other; asserts the outage shows as a run of silent
/// seconds of about `outage_secs`, that video is back within `back_within_secs` of the
/// restore and stays at 10 fps or more, and that the call lasted its whole length.
pub(crate) fn assert_recovered(
    stats: &Value,
    of: &str,
    (outage_secs, back_within_secs): (usize, usize),
    seconds: usize,
) {
    let per_second: Vec<u64> = remote(stats, of)["video_frames_per_second"]
        .as_array()
        .expect("timeline")
        .iter()
        .map(|v| v.as_u64().unwrap_or(0))
        .collect();
    let first_silent = per_second
        .iter()
        .position(|&n| n == 0)
        .unwrap_or_else(|| panic!("no outage seen: {per_second:?}"));
    let back = per_second[first_silent..]
        .iter()
        .position(|&n| n > 0)
        .map(|i| first_silent + i)
        .unwrap_or_else(|| panic!("video never came back: {per_second:?}"));
    let silent = back - first_silent;
    assert!(
        (outage_secs - 1..=outage_secs + back_within_secs).contains(&silent),
        "{silent} silent seconds for a {outage_secs} s outage (≤ {back_within_secs} s to come \
         back): {per_second:?}"
    );
    assert!(
        per_second.len() + 1 >= seconds,
        "the call ended early: {per_second:?}"
    );
    // Every whole second after it at 10 fps or more (the first one back and the last one,
    // cut by the hang-up, are partial): the restore must not set off a storm that stalls
    // the video again.
    let after = &per_second
        [(back + 1).min(per_second.len())..per_second.len().saturating_sub(1).max(back + 1)];
    assert!(
        after.iter().all(|&n| n >= 10),
        "not back to 10 fps and more: {per_second:?}"
    );
}

/// (g) A 5 s total outage on alice's host in mid-call: video stops, comes back within 2 s
/// of the restore, and it is the same call: nothing ended, no errors.
#[test]
fn lab_five_second_outage_recovers_the_same_call() {
    require_root();
    let _serial = crate::one_media_test_at_a_time();
    let (_lab, alice, bob) = call_through_an_outage("outage", Duration::from_secs(5), 16);
    assert_recovered(&alice, "bob", (5, 2), 16);
    assert_recovered(&bob, "alice", (5, 2), 16);
}

/// (h) A 15 s total outage: the offering side (alice, the smaller uid) restarts ICE every
/// 3 s while the connection is down, and checks its signaling socket, which reconnects
/// (TCP's backed-off retransmissions would hold the answer for many seconds). Once the
/// network is back a restart gets through, video returns within 6 s, and it is the same
/// call.
#[test]
fn lab_fifteen_second_outage_survives_through_ice_restart() {
    require_root();
    let _serial = crate::one_media_test_at_a_time();
    let (_lab, alice, bob) = call_through_an_outage("long-outage", Duration::from_secs(15), 30);
    assert_recovered(&alice, "bob", (15, 6), 30);
    assert_recovered(&bob, "alice", (15, 6), 30);
    let restarts = remote(&alice, "bob")["ice_restarts"].as_u64().unwrap_or(0);
    assert!(restarts >= 1, "alice never restarted ICE: {alice:#}");
}

/// (f) A bandwidth cap each way on the LAN (tbf on both hosts) below what the bots send:
/// congestion control brings its target under the cap within 5 s, video keeps at least
/// 10 fps, and at most 2 % of the audio is concealed. The issue asks for 500 kbit/s, but the
/// synthetic pattern compresses so well that even 1280×720 at 30 fps needs only about
/// 440 kbit/s (measured with `tc -s`), so 500 kbit/s never binds: the cap is 250 kbit/s.
/// (What makes it pass: `congestion::FullLinkBound` bounds GCC to what a full link
/// carries, `congestion::NackResendGuard` keeps retransmissions from filling it, and
/// `video::ResolutionScaler` sends 320×180 at the full frame rate at the floor.)
#[test]
fn lab_bandwidth_cap_brings_the_target_under_it() {
    require_root();
    let _serial = crate::one_media_test_at_a_time();
    let mut lab = Lab::new("cap");
    (lab.kbps, lab.fps, lab.size) = (2500, 30, (1280, 720));
    let (a, b) = (lab.host("a", 1, Uplink::Lan), lab.host("b", 2, Uplink::Lan));
    for host in [&a, &b] {
        lab.in_ns(
            host,
            &[
                "tc", "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", "250kbit", "burst",
                "16kb", "latency", "100ms",
            ],
        );
    }
    lab.start_servers(&[]);
    lab.call(&a, &b, 10);
    let (alice, bob) = lab.bot_stats(Duration::from_secs(60));
    for (stats, of) in [(&alice, "bob"), (&bob, "alice")] {
        let remote = remote(stats, of);
        eprintln!(
            "250 kbit/s cap: target per second {}, {of}'s video at {} fps (latency {}), {} \
             of the audio concealed",
            stats["sent"]["video_target_bps_per_second"],
            remote["video_fps"],
            remote["video_latency_ms"],
            remote["audio_concealed_ratio"]
        );
    }
    assert_media_both_ways(&alice, &bob, 10.0);
    for (stats, of) in [(&alice, "bob"), (&bob, "alice")] {
        let targets: Vec<u64> = stats["sent"]["video_target_bps_per_second"]
            .as_array()
            .expect("targets")
            .iter()
            .map(|v| v.as_u64().unwrap_or(0))
            .collect();
        assert!(
            targets.iter().take(5).any(|&bps| bps > 0 && bps < 250_000),
            "target not under the 250 kbit/s cap within 5 s: {targets:?}"
        );
        let concealed = remote(stats, of)["audio_concealed_ratio"]
            .as_f64()
            .unwrap_or(1.0);
        assert!(concealed <= 0.02, "{of}: {concealed} concealed: {stats:#}");
    }
}

/// Bad STUN/TURN servers are typed errors and the call goes on: a STUN server nobody runs
/// and a TURN server that refuses the credentials (the huddle server's secret is not
/// coturn's) each give every bot an `ICE server` error, and the LAN call still carries video
/// and audio both ways over its host pair.
#[test]
fn lab_refused_turn_and_unreachable_stun_are_errors_and_the_call_goes_on() {
    require_root();
    let _serial = crate::one_media_test_at_a_time();
    let mut lab = Lab::new("bad-servers");
    let (a, b) = (lab.host("a", 1, Uplink::Lan), lab.host("b", 2, Uplink::Lan));
    let turn = format!("turn:{SERVER_IP}:3478?transport=udp");
    lab.start_servers(&[
        "--ice-server",
        "stun:10.77.0.99:3478",
        "--turn-url",
        &turn,
        "--turn-secret",
        "not-the-coturn-secret",
    ]);
    lab.call(&a, &b, 6);
    let (alice, bob) = lab.bot_stats(Duration::from_secs(60));
    for (stats, of) in [(&alice, "bob"), (&bob, "alice")] {
        let errors: Vec<&str> = stats["errors"]
            .as_array()
            .expect("errors")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(
            errors.iter().any(|e| e.contains("ICE server")
                && e.contains("stun:10.77.0.99:3478")
                && e.contains("no answer")),
            "{errors:?}"
        );
        assert!(
            errors
                .iter()
                .any(|e| e.contains(&turn) && e.contains("TURN allocation refused")),
            "{errors:?}"
        );
        let remote = remote(stats, of);
        assert!(
            remote["video_fps"].as_f64().unwrap_or(0.0) >= 10.0,
            "{stats:#}"
        );
        assert!(remote["audio_tone_hz"].as_f64().is_some(), "{stats:#}");
        assert_eq!(
            candidate_types(stats, of),
            ("host".into(), "host".into(), "udp".into())
        );
    }
}

/// `wss://` end to end: a standalone server terminating TLS with a certificate for its
/// address (made here by a CA of our own), and bots that trust that CA through `--ca-file`
/// log in, call and get media both ways.
#[test]
fn lab_call_over_wss_with_a_private_ca() {
    require_root();
    let _serial = crate::one_media_test_at_a_time();
    let mut lab = Lab::new("wss");
    let (a, b) = (lab.host("a", 1, Uplink::Lan), lab.host("b", 2, Uplink::Lan));
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("CA");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec![SERVER_IP.to_owned()])
        .expect("parameters")
        .signed_by(&key, &issuer)
        .expect("certificate");
    let path = |name: &str| lab.dir.join(name).to_str().expect("utf-8").to_owned();
    let (ca_file, cert_file, key_file) = (path("ca.pem"), path("cert.pem"), path("key.pem"));
    std::fs::write(&ca_file, ca.pem()).expect("write");
    std::fs::write(&cert_file, cert.pem()).expect("write");
    std::fs::write(&key_file, key.serialize_pem()).expect("write");
    lab.start_servers(&["--tls-cert", &cert_file, "--tls-key", &key_file]);
    lab.scheme = "wss";
    lab.bot(&b, "bob", 5, &["--answer", "--ca-file", &ca_file]);
    std::thread::sleep(Duration::from_millis(300));
    lab.bot(&a, "alice", 5, &["--call", "bob", "--ca-file", &ca_file]);
    let (alice, bob) = lab.bot_stats(Duration::from_secs(60));
    assert_media_both_ways(&alice, &bob, 10.0);
}
