//! One server process of a cluster (`huddle-server`, or `huddle server`): started with `--redis` and a shared `--db` on
//! 127.0.0.1 port 0 (its log says which port it got), killed on drop. Its log is kept in the
//! temp directory when the test fails.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Node {
    pub name: String,
    pub addr: std::net::SocketAddr,
    log: PathBuf,
    process: Option<Child>,
}

impl Node {
    /// Starts node `name` of the test's cluster `cluster` (dev login, everyone in the `lobby`
    /// group) on `db` and `redis`, running `server` (the program, and its arguments before the
    /// server's own).
    pub fn start(server: &[&str], cluster: &str, name: &str, db: &str, redis: &str) -> Self {
        let log = std::env::temp_dir().join(format!(
            "huddle-cluster-{}-{cluster}-{name}.log",
            std::process::id()
        ));
        let process = Command::new(server[0])
            .args(&server[1..])
            .args(["--listen", "127.0.0.1:0", "--db", db, "--redis", redis])
            .args(["--node-id", name, "--dev-login", "--dev-lobby", "lobby"])
            .env(
                "RUST_LOG",
                "info,huddle_server::cluster=debug,huddle_server::hub=debug",
            )
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(&log)
                    .map(Stdio::from)
                    .expect("log file"),
            )
            .spawn()
            .expect("huddle-server starts");
        let started = Instant::now();
        let addr = loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(addr) = text
                .lines()
                .find_map(|line| line.split("listening on ").nth(1))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|addr| addr.parse().ok())
            {
                break addr;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "node {name} did not start within 20 s: {text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        Self {
            name: name.to_owned(),
            addr,
            log,
            process: Some(process),
        }
    }

    /// Its WebSocket URL.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Kills it (SIGKILL: no goodbye to Redis, the clients or the database).
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = process.kill();
            let _ = process.wait();
        }
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("node {} log kept: {}", self.name, self.log.display());
        } else {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}
