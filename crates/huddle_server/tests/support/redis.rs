//! A Redis server of the test's own (`redis-server` from Debian's `redis-server`), listening
//! only on a Unix socket in a directory of its own, with no persistence; stopped and removed
//! on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Redis {
    dir: PathBuf,
    server: Child,
}

impl Redis {
    /// Starts it and waits until it answers.
    pub fn start(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("huddle-redis-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("directory");
        let server = Self::spawn(&dir);
        Self { dir, server }
    }

    fn spawn(dir: &std::path::Path) -> Child {
        let socket = dir.join("redis.sock");
        let server = Command::new("redis-server")
            .args(["--port", "0", "--save", "", "--appendonly", "no"])
            .arg("--unixsocket")
            .arg(&socket)
            .args(["--unixsocketperm", "700", "--dir"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts (scripts/setup installs redis-server)");
        let started = Instant::now();
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "Redis did not answer on {socket:?} within 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    /// Kills it (SIGKILL) and starts a new, empty one on the same socket.
    pub fn restart(&mut self) {
        self.stop();
        self.server = Self::spawn(&self.dir);
    }

    /// Kills it (SIGKILL).
    pub fn stop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        let _ = std::fs::remove_file(self.dir.join("redis.sock"));
    }

    /// The `--redis` URL.
    pub fn url(&self) -> String {
        format!("redis+unix://{}", self.dir.join("redis.sock").display())
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
