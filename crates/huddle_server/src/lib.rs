//! Huddle's signaling and identity server: `huddle server` (embedded in the app, or
//! standalone) and the slim `huddle-server` binary. No Bevy here.
//!
//! ```text
//!  WebSocket /ws ──▶ net (limits, parsing) ──▶ Hub (state machine) ──▶ Store (SQLite)
//!  HTTP /api/... ─┘                                   │
//!                                  frames to clients ◀┘   (+ a 100 ms tick for timeouts)
//! ```
//!
//! - [`hub`]: identity, the ringing flow, call tokens, sessions and relaying, as a state
//!   machine fed with frames and the time.
//! - [`store`]: users, groups, auth tokens, the token secret and call logs, durably.
//! - [`token`]: HS256 call tokens.
//! - `net`: the axum WebSocket endpoint, the admin API and `/healthz`.
//! - [`web`]: the browser client, served at `/`.
//!
//! Start one with [`bind`] then [`Server::serve`] (until Ctrl-C/SIGTERM) or
//! [`Server::serve_until`]; bind to port 0 in tests and read [`Server::local_addr`].

mod accept;
pub mod cluster;
pub mod hub;
pub mod ice;
mod net;
pub mod sfu;
pub mod store;
pub mod tls;
pub mod token;
pub mod web;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use accept::ConnectionLimits;
pub use hub::{Hub, HubConfig};
pub use net::{RateLimit, now_ms};
use store::Store;

/// Everything a server needs to start.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// SQLite file or PostgreSQL URL ([`store::Store::open`]); `None` keeps everything in
    /// memory (tests, the embedded demo).
    pub db: Option<PathBuf>,
    /// Admin API key; `None` disables the admin API.
    pub api_key: Option<String>,
    /// Hub tunables (dev login, timeouts).
    pub hub: HubConfig,
    /// Time a connection has to log in.
    pub login_timeout: Duration,
    /// A connection that sends nothing (not even a `ping`) for this long is closed (1001).
    pub idle_timeout: Duration,
    /// Flood protection.
    pub rate: RateLimit,
    /// Groups created (or replaced) at start-up, e.g. the embedded server's demo group.
    pub groups: Vec<huddle_protocol::GroupInfo>,
    /// Terminate TLS with this certificate and key (`wss://`); `None` serves plain HTTP.
    pub tls: Option<tls::TlsFiles>,
    /// Browser origins, besides the server's own, allowed to open `/ws`.
    pub allowed_origins: Vec<String>,
    /// Connection caps and the header-read timeout.
    pub limits: ConnectionLimits,
    /// Janus instances for large calls (`hub.sfu_above` decides which calls use them).
    pub sfu: Option<sfu::SfuConfig>,
    /// Run as one node of several sharing Redis (and a PostgreSQL `db`); `None`: alone.
    pub cluster: Option<cluster::ClusterConfig>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            db: None,
            api_key: None,
            hub: HubConfig::default(),
            login_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            rate: RateLimit::default(),
            groups: Vec::new(),
            tls: None,
            allowed_origins: Vec::new(),
            limits: ConnectionLimits::default(),
            sfu: None,
            cluster: None,
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The database could not be opened.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// The database has no token-signing secret yet, and the operating system gave no
    /// randomness to make one.
    #[error("cannot make the token-signing secret: {0}")]
    Randomness(#[from] hub::RandomnessError),
    /// The address could not be bound, or serving failed.
    #[error("network: {0}")]
    Io(#[from] std::io::Error),
    /// The TLS certificate or key could not be used.
    #[error("TLS: {0}")]
    Tls(#[from] tls::TlsError),
    /// The cluster's Redis could not be reached.
    #[error(transparent)]
    Cluster(#[from] cluster::ClusterError),
}

impl From<hub::InternalError> for ServerError {
    fn from(err: hub::InternalError) -> Self {
        match err {
            hub::InternalError::Store(err) => Self::Store(err),
            hub::InternalError::Randomness(err) => Self::Randomness(err),
        }
    }
}

/// A bound server, ready to serve.
pub struct Server {
    listener: tokio::net::TcpListener,
    shared: Arc<net::Shared>,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: ConnectionLimits,
}

/// Opens the database and binds the address.
pub async fn bind(config: ServerConfig) -> Result<Server, ServerError> {
    let mut store = match &config.db {
        Some(path) => Store::open(path)?,
        None => Store::in_memory()?,
    };
    for group in &config.groups {
        store.upsert_group(&group.guid, &group.name, &group.members)?;
    }
    // Calls left open by a crash or kill are over: they end when the server was last seen
    // alive (noted about once a second), not now. In a cluster, open calls belong to the
    // other nodes (or are taken over by them): they stay open.
    if config.cluster.is_none() {
        let now = now_ms();
        let closed_at = store.last_alive()?.map_or(now, |alive| alive.min(now));
        let closed = store.end_open_calls(closed_at)?;
        if closed > 0 {
            tracing::info!("closed {closed} call log entries left open by the last run");
        }
    }
    let tls = config.tls.as_ref().map(tls::server_config).transpose()?;
    let mut hub_config = config.hub.clone();
    if config
        .sfu
        .as_ref()
        .is_none_or(|sfu| sfu.janus_urls.is_empty())
    {
        hub_config.sfu_above = None;
    }
    let hub = Hub::new(store, hub_config)?;
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let shared = Arc::new(net::Shared::new(
        hub,
        config.api_key,
        (config.login_timeout, config.idle_timeout),
        config.rate,
        config.allowed_origins,
    ));
    if let Some(mut sfu) = config.sfu.filter(|sfu| !sfu.janus_urls.is_empty()) {
        // A node of a cluster keeps its rooms' state with their sessions, for adoption.
        sfu.report_room_state |= config.cluster.is_some();
        shared.start_sfu(sfu);
    }
    if let Some(cluster) = config.cluster {
        let cluster = cluster::Cluster::start(cluster, &shared).await?;
        let _ = shared.cluster.set(cluster);
    }
    Ok(Server {
        listener,
        shared,
        tls,
        limits: config.limits,
    })
}

impl Server {
    /// The bound address (useful after binding port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Serves until Ctrl-C or SIGTERM, then shuts down gracefully.
    pub async fn serve(self) -> Result<(), ServerError> {
        self.serve_until(shutdown_signal()).await
    }

    /// Serves until `shutdown` completes; then every call ends with a reason, logs are
    /// closed, and every client is told and disconnected.
    pub async fn serve_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let addr = self.local_addr();
        tracing::info!(
            "huddle server listening on {}",
            accept::describe(addr, self.tls.is_some())
        );
        let shared = self.shared.clone();
        let timer = tokio::spawn(net::run_timer(shared.clone()));
        let on_shutdown = async move {
            shutdown.await;
            tracing::info!("shutting down: ending calls");
            shared.begin_shutdown();
            if let Some(cluster) = shared.cluster.get() {
                cluster.leave().await;
            }
            // Give writers a moment to send the goodbyes.
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let router = net::router(self.shared);
        accept::serve(self.listener, self.tls, router, self.limits, on_shutdown).await;
        timer.abort();
        tracing::info!("huddle server stopped");
        Ok(())
    }
}

/// Completes on Ctrl-C or (on Unix) SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

/// Command-line options shared by `huddle server` and `huddle-server`.
#[derive(Clone, Debug, clap::Args)]
pub struct ServerArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7878")]
    pub listen: SocketAddr,
    /// SQLite database file (created if missing), or a PostgreSQL URL
    /// (`postgres://user@host/db`).
    #[arg(long, default_value = "huddle.db")]
    pub db: PathBuf,
    /// Admin API key (enables the admin API).
    #[arg(long, env = "HUDDLE_API_KEY")]
    pub api_key: Option<String>,
    /// Let clients log in by uid alone (development).
    #[arg(long)]
    pub dev_login: bool,
    /// With --dev-login: put every user who logs in into this group, so that everyone sees
    /// everyone as a contact.
    #[arg(long, requires = "dev_login")]
    pub dev_lobby: Option<String>,
    /// A STUN (or TURN without credentials) server for clients' media, repeatable, e.g.
    /// `stun:stun.example.org:3478`.
    #[arg(long = "ice-server", value_name = "URL", value_parser = ice::parse_ice_url)]
    pub ice_servers: Vec<String>,
    /// A TURN server handed out with per-user credentials (needs --turn-secret), repeatable,
    /// e.g. `turn:10.0.0.1:3478?transport=udp` and `turn:10.0.0.1:3478?transport=tcp`.
    #[arg(long = "turn-url", value_name = "URL", value_parser = ice::parse_turn_url, requires = "turn_secret")]
    pub turn_urls: Vec<String>,
    /// coturn's `static-auth-secret` (`use-auth-secret`): TURN credentials are derived from it.
    #[arg(long, env = "HUDDLE_TURN_SECRET", hide_env_values = true)]
    pub turn_secret: Option<String>,
    /// Lifetime of the TURN credentials handed out, in seconds.
    #[arg(long, default_value_t = ice::DEFAULT_TURN_CREDENTIAL_TTL_SECS)]
    pub turn_ttl_secs: u64,
    /// Serve `wss://` and `https://` with this certificate chain (PEM; needs --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// A browser origin allowed to open `/ws` besides the server's own, repeatable, e.g.
    /// `https://app.example.org`.
    #[arg(long = "allowed-origin", value_name = "ORIGIN")]
    pub allowed_origins: Vec<String>,
    /// Connections open at once (HTTP and WebSocket); more are closed at once. Keep it under
    /// the process's open-file limit.
    #[arg(long, default_value_t = ConnectionLimits::default().max_connections)]
    pub max_connections: usize,
    /// Connections open at once from one IP address.
    #[arg(long, default_value_t = ConnectionLimits::default().max_per_address)]
    pub max_connections_per_address: usize,
    /// A Janus instance (its WebSocket API, e.g. `ws://127.0.0.1:8188`) for calls that go
    /// through the SFU, repeatable: each room goes to the least-loaded one that answers.
    #[arg(long = "janus", value_name = "URL")]
    pub janus: Vec<String>,
    /// Janus's `api_secret`.
    #[arg(long, env = "HUDDLE_JANUS_API_SECRET", hide_env_values = true)]
    pub janus_api_secret: Option<String>,
    /// With --janus: calls with more participants than this go through Janus (0: every
    /// call); smaller calls stay a mesh, a call that grows past it moves to Janus, and one
    /// that shrinks to half of it or fewer moves back to a mesh.
    #[arg(long, default_value_t = 4)]
    pub sfu_above: usize,
    /// Run as one node of a cluster sharing this Redis (`redis://host:port/` or
    /// `redis+unix:///path`): presence, ringing and sessions are shared with the other nodes;
    /// give them all the same PostgreSQL `--db`.
    #[arg(long, value_name = "URL")]
    pub redis: Option<String>,
    /// This node's id in the cluster (default: a random one).
    #[arg(long, requires = "redis")]
    pub node_id: Option<String>,
}

impl From<ServerArgs> for ServerConfig {
    fn from(args: ServerArgs) -> Self {
        Self {
            listen: args.listen,
            db: Some(args.db),
            api_key: args.api_key,
            hub: HubConfig {
                dev_login: args.dev_login,
                dev_lobby: args.dev_lobby,
                ice: ice::IceServersConfig {
                    urls: args.ice_servers,
                    turn_urls: args.turn_urls,
                    turn_secret: args.turn_secret,
                    turn_credential_ttl_secs: args.turn_ttl_secs,
                },
                sfu_above: Some(args.sfu_above),
                ..HubConfig::default()
            },
            sfu: Some(sfu::SfuConfig {
                janus_urls: args.janus,
                api_secret: args.janus_api_secret,
                report_room_state: false,
            }),
            tls: args
                .tls_cert
                .zip(args.tls_key)
                .map(|(cert, key)| tls::TlsFiles { cert, key }),
            allowed_origins: args.allowed_origins,
            cluster: args.redis.map(|redis_url| cluster::ClusterConfig {
                redis_url,
                node_id: args.node_id.unwrap_or_else(cluster::random_node_id),
            }),
            limits: ConnectionLimits {
                max_connections: args.max_connections,
                max_per_address: args.max_connections_per_address,
                ..ConnectionLimits::default()
            },
            ..ServerConfig::default()
        }
    }
}

/// Runs a server from command-line options until Ctrl-C/SIGTERM (logs to stderr).
pub fn run_from_args(args: ServerArgs) -> Result<(), ServerError> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move { bind(args.into()).await?.serve().await })
}
