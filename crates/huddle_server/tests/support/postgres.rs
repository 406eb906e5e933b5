//! A PostgreSQL server of the test's own: `initdb` and `postgres` from Debian's
//! `postgresql`, run as the `postgres` user (PostgreSQL refuses root) in a directory of its
//! own, listening only on a Unix socket there; stopped and removed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A PostgreSQL server of the test's own.
pub struct Postgres {
    dir: PathBuf,
    server: Child,
}

impl Postgres {
    /// Makes a cluster in a fresh directory and starts its server.
    pub fn start(name: &str) -> Self {
        let uid = Command::new("id").arg("-u").output().expect("id runs");
        assert!(
            String::from_utf8_lossy(&uid.stdout).trim() == "0",
            "the PostgreSQL tests run as root (scripts/test does): they start PostgreSQL as \
             the postgres user"
        );
        let bin = postgres_bin();
        let dir = std::env::temp_dir().join(format!("huddle-pg-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("directory");
        let status = Command::new("chown")
            .args(["postgres:postgres", dir.to_str().expect("utf-8 path")])
            .status()
            .expect("chown runs");
        assert!(status.success(), "chown postgres {dir:?}");
        let data = dir.join("data");
        let initdb = as_postgres(&bin.join("initdb"))
            .args([
                "-D",
                data.to_str().expect("path"),
                "-U",
                "huddle",
                "-A",
                "trust",
            ])
            .args(["--no-sync", "-E", "UTF8"])
            .output()
            .expect("initdb runs");
        assert!(
            initdb.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&initdb.stderr)
        );
        let server = as_postgres(&bin.join("postgres"))
            .args(["-D", data.to_str().expect("path")])
            .args(["-k", dir.to_str().expect("path")])
            .args(["-c", "listen_addresses=", "-c", "fsync=off"])
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(
                    std::env::temp_dir()
                        .join(format!("huddle-pg-{}-{name}.log", std::process::id())),
                )
                .map(Stdio::from)
                .unwrap_or_else(|_| Stdio::null()),
            )
            .spawn()
            .expect("postgres starts");
        let postgres = Self { dir, server };
        let socket = postgres.dir.join(".s.PGSQL.5432");
        let started = Instant::now();
        while !socket.exists() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "PostgreSQL did not open {socket:?} within 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        postgres
    }

    /// The `--db` URL of its `postgres` database (the socket directory percent-encoded as
    /// the host).
    pub fn url(&self) -> String {
        let host = self.dir.to_str().expect("path").replace('/', "%2F");
        format!("postgresql://huddle@{host}:5432/postgres")
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // SIGQUIT: immediate shutdown; its backends follow the postmaster out.
        let quit = Command::new("kill")
            .args(["-QUIT", &self.server.id().to_string()])
            .status();
        if !quit.is_ok_and(|status| status.success()) {
            let _ = self.server.kill();
        }
        let _ = self.server.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Debian's PostgreSQL binaries (`/usr/lib/postgresql/<version>/bin`).
fn postgres_bin() -> PathBuf {
    let versions = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed (scripts/setup installs postgresql)");
    versions
        .filter_map(Result::ok)
        .map(|entry| entry.path().join("bin"))
        .find(|bin| bin.join("initdb").exists())
        .expect("an initdb under /usr/lib/postgresql")
}

/// `program`, to be run as the `postgres` user (directly, so that its pid is the server's).
fn as_postgres(program: &Path) -> Command {
    use std::os::unix::process::CommandExt;
    let id = |flag: &str| {
        let out = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .expect("id runs");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<u32>()
            .expect("a postgres user (Debian's postgresql package makes it)")
    };
    let mut command = Command::new(program);
    command.uid(id("-u")).gid(id("-g")).current_dir("/");
    command
}
