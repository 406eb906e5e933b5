//! Several Huddle servers as one, over Redis (`huddle server --redis redis://… --db
//! postgres://…`): presence, ringing, sessions and the session → node placement are shared
//! through Redis; users, groups and call logs through the shared database.
//!
//! Each node keeps its own [`Hub`]; Redis joins them:
//!
//! 1. **Connections.** A login is broadcast on `huddle:cluster` (`attach`), a closed
//!    connection too (`detach`); every node mirrors the others' connections into its hub
//!    ([`Hub::attach_remote`]), so ringing and presence reach users on any node. What a hub
//!    queues for a mirrored connection is published to that node's channel
//!    (`huddle:to:{node}`), which writes it to the socket.
//! 2. **Sessions.** The node where a call is placed (or a direct session first joined) owns
//!    it: `huddle:session:{id}:owner` names it (a lease, refreshed every second). Requests
//!    about a session (accept, reject, end, join, leave, signal, state) that reach another node
//!    are forwarded to the owner's channel and answered from there. The owner keeps a
//!    [`SessionSnapshot`] in `huddle:session:{id}:state`: rewritten at once when who is in
//!    it (or their connection, state or held signals) changes, else within 100 ms.
//! 3. **Busy.** Each node publishes who its calls hold (`held`), so a receiver in a call on
//!    another node is busy everywhere.
//! 4. **Nodes.** `huddle:node:{id}` is a lease refreshed every second. A node whose lease is
//!    gone (killed, or cut from Redis) is dropped from the mirrors (its users go offline, its
//!    members start their reconnect grace); the first request about one of its sessions
//!    (forwarding finds nobody listening, and its lease runs out) takes the session over from
//!    its snapshot, under a lock so that only one node does; a session through the SFU has its
//!    Janus room adopted ([`crate::sfu::SfuCommand::AdoptRoom`]). A node that comes back and
//!    finds its sessions owned by another forgets them.
//! 5. **Resync.** After (re)subscribing, a node broadcasts `hello` with its connections and
//!    held users; the others replace what they had of it and answer with their own.
//!
//! Publishing goes through one task in order, so a session's owner is named before anyone
//! hears of the session, and a login is known before that connection's first forwarded
//! request.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use huddle_protocol::{ClientFrame, ErrorCode, Request, ServerFrame};
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::hub::{ConnId, Hub, NodeConn, Out, SessionSnapshot};
use crate::net::{Shared, now_ms};

/// How long a node's lease, and its sessions' owner leases, last without a refresh.
const LEASE_MS: u64 = 3_000;
/// How often leases are refreshed and other nodes' leases checked.
const REFRESH_EVERY: Duration = Duration::from_millis(1_000);
/// How long a session's snapshot outlives its owner's last refresh: time for its members to
/// come back through another node.
const SNAPSHOT_TTL_MS: u64 = 60_000;
/// How often a session's snapshot is looked at for changes its digest does not cover
/// ([`Hub::session_digest`]): serializing every session after every hub step cost a node of a
/// 12-person call 4x the CPU of a lone server.
const SNAPSHOT_EVERY: Duration = Duration::from_millis(100);
/// How long a session's owner, once read, is forwarded to without reading it again (a
/// forward that nobody hears reads it again at once).
const OWNER_CACHE_FOR: Duration = Duration::from_secs(1);
/// The broadcast channel.
const BROADCAST: &str = "huddle:cluster";

/// Where the cluster's Redis is, and who this node is.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// `redis://host:port/`, or `redis+unix:///path/to/socket`.
    pub redis_url: String,
    /// This node's id, unique in the cluster (a random one when not given).
    pub node_id: String,
}

/// Why a node could not join its cluster.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The Redis URL is malformed, or Redis cannot be reached.
    #[error("redis {url}: {source}")]
    Redis {
        /// The URL given.
        url: String,
        /// What failed.
        source: redis::RedisError,
    },
}

/// What nodes say to each other (JSON on Redis pub/sub).
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Wire {
    /// A node (re)joined: its connections and held users (replacing what others had), and a
    /// request for theirs.
    Hello {
        node: String,
        conns: Vec<(ConnId, String)>,
        held: Vec<String>,
    },
    /// The answer to `hello`, on the asker's channel.
    Sync {
        node: String,
        conns: Vec<(ConnId, String)>,
        held: Vec<String>,
    },
    /// A connection logged in.
    Attach {
        node: String,
        conn: ConnId,
        uid: String,
    },
    /// A logged-in connection closed.
    Detach { node: String, conn: ConnId },
    /// The users a node's calls hold now.
    Held { node: String, users: Vec<String> },
    /// A node's heartbeat (every second).
    Alive { node: String },
    /// A client's request about a session this node owns.
    Request {
        node: String,
        conn: ConnId,
        uid: String,
        frame: ClientFrame,
    },
    /// A frame for one of this node's connections.
    Deliver { conn: ConnId, frame: ServerFrame },
    /// Close one of this node's connections.
    Close {
        conn: ConnId,
        code: u16,
        reason: String,
    },
}

fn owner_key(session_id: &str) -> String {
    format!("huddle:session:{session_id}:owner")
}

fn snapshot_key(session_id: &str) -> String {
    format!("huddle:session:{session_id}:state")
}

fn node_key(node: &str) -> String {
    format!("huddle:node:{node}")
}

fn node_channel(node: &str) -> String {
    format!("huddle:to:{node}")
}

/// The session a request is about, if it must be handled by the session's owner; and
/// whether the request may found the session (a direct session's first join).
pub(crate) fn session_of_request(request: &Request) -> Option<(&str, bool)> {
    match request {
        Request::JoinSession { session_id, .. } => Some((session_id, true)),
        Request::AcceptCall { session_id }
        | Request::GenerateToken { session_id, .. }
        | Request::RejectCall { session_id, .. }
        | Request::EndCall { session_id }
        | Request::LeaveSession { session_id }
        | Request::Signal { session_id, .. }
        | Request::State { session_id, .. } => Some((session_id, false)),
        _ => None,
    }
}

/// One ordered batch of Redis commands, and who waits for its answer.
struct Job {
    pipe: redis::Pipeline,
    reply: Option<oneshot::Sender<redis::RedisResult<redis::Value>>>,
}

/// Connections of other nodes mirrored into this hub, both ways.
#[derive(Default)]
struct Mirror {
    by_remote: HashMap<NodeConn, ConnId>,
    by_local: HashMap<ConnId, NodeConn>,
    /// Mirrors of nodes given up for gone, kept so that a node that was only cut from Redis
    /// gets its connections back under the same ids (and its members back in their sessions).
    dormant: HashMap<NodeConn, ConnId>,
}

/// What this node last published of its own state.
#[derive(Default)]
struct Published {
    /// Owned sessions and their last snapshot written (JSON).
    sessions: HashMap<String, String>,
    /// Each owned session's digest when its snapshot was last looked at.
    digests: HashMap<String, u64>,
    /// Held users last published.
    held: Vec<String>,
    /// When snapshots were last looked at (at most every [`SNAPSHOT_EVERY`]; a new session
    /// is named at once, and the held users are published as they change).
    last_full: Option<std::time::Instant>,
}

/// Where a session request goes.
enum Route {
    /// This node owns the session (or nobody does): the local hub answers.
    Local,
    /// Published to the owner, who answers.
    Forwarded,
    /// The owner does not answer and still holds its lease.
    Unreachable(String),
}

/// How taking a session over went.
enum TakeOver {
    /// This node holds it now (restored, or it already did).
    Done,
    /// Another node is taking it over, or holds it: ask again.
    Busy,
    /// No snapshot: the session is over (or never was).
    NothingToRestore,
}

/// This node's membership of the cluster.
pub(crate) struct Cluster {
    node: String,
    redis: ConnectionManager,
    jobs: mpsc::UnboundedSender<Job>,
    mirror: Mutex<Mirror>,
    /// This node's logged-in connections (for `hello` and `sync`).
    local: Mutex<HashMap<ConnId, String>>,
    published: Mutex<Published>,
    /// The owning node of sessions this node forwarded to lately, and when it was read.
    owners: Mutex<HashMap<String, (String, tokio::time::Instant)>>,
    /// Other nodes heard of, checked for their lease, and when each was last heard.
    nodes: Mutex<HashMap<String, tokio::time::Instant>>,
    shared: Weak<Shared>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Cluster {
    /// Connects to Redis and starts the tasks (publisher, subscriber, lease refresh).
    pub(crate) async fn start(
        config: ClusterConfig,
        shared: &Arc<Shared>,
    ) -> Result<Arc<Self>, ClusterError> {
        let error = |source| ClusterError::Redis {
            url: config.redis_url.clone(),
            source,
        };
        let client = redis::Client::open(config.redis_url.as_str()).map_err(error)?;
        let redis = tokio::time::timeout(
            Duration::from_secs(10),
            ConnectionManager::new(client.clone()),
        )
        .await
        .map_err(|_| {
            error(redis::RedisError::from((
                redis::ErrorKind::IoError,
                "no answer within 10 s",
            )))
        })?
        .map_err(error)?;
        let (jobs, job_queue) = mpsc::unbounded_channel();
        let cluster = Arc::new(Self {
            node: config.node_id,
            redis: redis.clone(),
            jobs,
            mirror: Mutex::default(),
            local: Mutex::default(),
            published: Mutex::default(),
            owners: Mutex::default(),
            nodes: Mutex::default(),
            shared: Arc::downgrade(shared),
        });
        cluster.refresh_leases().await;
        tokio::spawn(run_publisher(redis, job_queue));
        tokio::spawn(run_subscriber(client, Arc::downgrade(&cluster)));
        tokio::spawn(run_refresh(Arc::downgrade(&cluster)));
        tracing::info!("cluster: node {} joined", cluster.node);
        Ok(cluster)
    }

    fn enqueue(&self, pipe: redis::Pipeline) {
        let _ = self.jobs.send(Job { pipe, reply: None });
    }

    async fn enqueue_and_wait(&self, pipe: redis::Pipeline) -> redis::RedisResult<redis::Value> {
        let (reply, answer) = oneshot::channel();
        let _ = self.jobs.send(Job {
            pipe,
            reply: Some(reply),
        });
        answer.await.unwrap_or_else(|_| {
            Err(redis::RedisError::from((
                redis::ErrorKind::IoError,
                "the publisher stopped",
            )))
        })
    }

    fn publish(&self, channel: &str, message: &Wire) {
        let Ok(payload) = serde_json::to_string(message) else {
            return;
        };
        let mut pipe = redis::pipe();
        pipe.cmd("PUBLISH").arg(channel).arg(payload).ignore();
        self.enqueue(pipe);
    }

    /// A local connection logged in as `uid`.
    pub(crate) fn attached(&self, conn: ConnId, uid: &str) {
        tracing::debug!("cluster: connection {conn} logged in as {uid}");
        lock(&self.local).insert(conn, uid.to_owned());
        self.publish(
            BROADCAST,
            &Wire::Attach {
                node: self.node.clone(),
                conn,
                uid: uid.to_owned(),
            },
        );
    }

    /// A local logged-in connection closed.
    pub(crate) fn detached(&self, conn: ConnId) {
        if lock(&self.local).remove(&conn).is_some() {
            self.publish(
                BROADCAST,
                &Wire::Detach {
                    node: self.node.clone(),
                    conn,
                },
            );
        }
    }

    /// After every hub step (hub still locked): frames for mirrored connections go to their
    /// nodes; owned sessions' leases and snapshots, and the held users, are published when
    /// they changed. Returns what is for this node's own connections.
    pub(crate) fn after_hub(&self, hub: &Hub, outs: Vec<Out>) -> Vec<Out> {
        self.publish_sessions(hub);
        let mirror = lock(&self.mirror);
        let mut local = Vec::with_capacity(outs.len());
        for out in outs {
            let remote = match &out {
                Out::Send(conn, _) | Out::Close(conn, ..) => mirror.by_local.get(conn),
                Out::Sfu(_) => None,
            };
            let Some(remote) = remote else {
                local.push(out);
                continue;
            };
            let wire = match out {
                Out::Send(_, frame) => Wire::Deliver {
                    conn: remote.conn,
                    frame,
                },
                Out::Close(_, code, reason) => Wire::Close {
                    conn: remote.conn,
                    code,
                    reason,
                },
                Out::Sfu(_) => continue,
            };
            self.publish(&node_channel(&remote.node), &wire);
        }
        local
    }

    /// Names a hub connection cluster-wide.
    fn name_conn(&self, hub: &Hub, conn: ConnId) -> Option<NodeConn> {
        if hub.is_remote(conn) {
            lock(&self.mirror).by_local.get(&conn).cloned()
        } else {
            Some(NodeConn {
                node: self.node.clone(),
                conn,
            })
        }
    }

    fn publish_sessions(&self, hub: &Hub) {
        let ids = hub.session_ids();
        let mut published = lock(&self.published);
        let full = published
            .last_full
            .is_none_or(|at| at.elapsed() >= SNAPSHOT_EVERY);
        if full {
            published.last_full = Some(std::time::Instant::now());
        }
        let mut pipe = redis::pipe();
        let mut any = false;
        for id in &ids {
            let digest = hub.session_digest(id);
            let same = digest.is_some() && published.digests.get(id) == digest.as_ref();
            if !full && same && published.sessions.contains_key(id) {
                continue;
            }
            if let Some(digest) = digest {
                published.digests.insert(id.clone(), digest);
            }
            let Some(snapshot) = hub.snapshot_session(id, |conn| self.name_conn(hub, conn)) else {
                continue;
            };
            let Ok(json) = serde_json::to_string(&snapshot) else {
                continue;
            };
            let new = !published.sessions.contains_key(id);
            if published.sessions.get(id) == Some(&json) {
                continue;
            }
            if new {
                self.lease_owner(&mut pipe, id);
            }
            pipe.cmd("SET")
                .arg(snapshot_key(id))
                .arg(&json)
                .arg("PX")
                .arg(SNAPSHOT_TTL_MS)
                .ignore();
            published.sessions.insert(id.clone(), json);
            any = true;
        }
        let gone: Vec<String> = published
            .sessions
            .keys()
            .filter(|id| ids.binary_search(id).is_err())
            .cloned()
            .collect();
        for id in gone {
            published.sessions.remove(&id);
            published.digests.remove(&id);
            pipe.cmd("DEL")
                .arg(owner_key(&id))
                .arg(snapshot_key(&id))
                .ignore();
            any = true;
        }
        let held = hub.held_users();
        if held != published.held {
            published.held = held.clone();
            if let Ok(payload) = serde_json::to_string(&Wire::Held {
                node: self.node.clone(),
                users: held,
            }) {
                pipe.cmd("PUBLISH").arg(BROADCAST).arg(payload).ignore();
                any = true;
            }
        }
        if any {
            self.enqueue(pipe);
        }
    }

    /// Decides where a client's request about `session_id` is handled, forwarding it to the
    /// owner or taking the session over when the owner is gone.
    async fn route(
        &self,
        shared: &Shared,
        session_id: &str,
        may_found: bool,
        (conn, uid, frame): (ConnId, &str, &ClientFrame),
    ) -> Route {
        // This node holds it: no need to ask (a node that lost it to a takeover forgets it
        // within a second, see `refresh_leases`).
        if shared.hub().holds_session(session_id) {
            return Route::Local;
        }
        for attempt in 0..5 {
            let mut redis = self.redis.clone();
            let cached = (attempt == 0)
                .then(|| lock(&self.owners).get(session_id).cloned())
                .flatten()
                .filter(|(_, at)| at.elapsed() < OWNER_CACHE_FOR)
                .map(|(owner, _)| owner);
            let owner: Option<String> = match cached {
                Some(owner) => Some(owner),
                None => match redis::cmd("GET")
                    .arg(owner_key(session_id))
                    .query_async(&mut redis)
                    .await
                {
                    Ok(owner) => owner,
                    Err(err) => {
                        tracing::warn!("cluster: cannot read the owner of {session_id}: {err}");
                        return Route::Local;
                    }
                },
            };
            match &owner {
                Some(owner) if *owner != self.node => {
                    lock(&self.owners).insert(
                        session_id.to_owned(),
                        (owner.clone(), tokio::time::Instant::now()),
                    );
                }
                _ => {
                    lock(&self.owners).remove(session_id);
                }
            }
            let Some(owner) = owner else {
                // Nobody holds it now: a session whose owner died (its snapshot is taken
                // over), a session that is over, or a direct session's first join (founded
                // here unless another node just did).
                match self.take_over(shared, session_id, None).await {
                    TakeOver::Done => return Route::Local,
                    TakeOver::Busy => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                    TakeOver::NothingToRestore if !may_found => return Route::Local,
                    TakeOver::NothingToRestore => {}
                }
                if self.name_owner(session_id, true).await {
                    return Route::Local;
                }
                continue;
            };
            if owner == self.node {
                return Route::Local;
            }
            let message = Wire::Request {
                node: self.node.clone(),
                conn,
                uid: uid.to_owned(),
                frame: frame.clone(),
            };
            let Ok(payload) = serde_json::to_string(&message) else {
                return Route::Local;
            };
            let mut pipe = redis::pipe();
            pipe.cmd("PUBLISH").arg(node_channel(&owner)).arg(payload);
            let listeners = match self.enqueue_and_wait(pipe).await {
                Ok(value) => redis::from_redis_value::<Vec<i64>>(&value)
                    .ok()
                    .and_then(|v| v.first().copied())
                    .unwrap_or(0),
                Err(err) => {
                    tracing::warn!("cluster: cannot forward to {owner}: {err}");
                    0
                }
            };
            if listeners > 0 {
                return Route::Forwarded;
            }
            lock(&self.owners).remove(session_id);
            // Nobody listens on the owner's channel: wait for its lease to run out (it may
            // only be reconnecting to Redis), then take the session over.
            if !self.wait_for_lease_end(&owner).await {
                return Route::Unreachable(owner);
            }
            match self.take_over(shared, session_id, Some(&owner)).await {
                TakeOver::Done | TakeOver::NothingToRestore => return Route::Local,
                TakeOver::Busy => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        Route::Local
    }

    /// Adds to `pipe`: this node owns `session_id`, for a lease.
    fn lease_owner(&self, pipe: &mut redis::Pipeline, session_id: &str) {
        pipe.cmd("SET")
            .arg(owner_key(session_id))
            .arg(&self.node)
            .arg("PX")
            .arg(LEASE_MS)
            .ignore();
    }

    /// Names this node the owner of `session_id` for a lease (with `only_if_unowned`, only if
    /// nobody is named: `NX`); whether it now is.
    async fn name_owner(&self, session_id: &str, only_if_unowned: bool) -> bool {
        let mut command = redis::cmd("SET");
        command
            .arg(owner_key(session_id))
            .arg(&self.node)
            .arg("PX")
            .arg(LEASE_MS);
        if only_if_unowned {
            command.arg("NX");
        }
        let mut redis = self.redis.clone();
        command
            .query_async::<Option<String>>(&mut redis)
            .await
            .ok()
            .flatten()
            .is_some()
    }

    /// Waits until `node` is gone: its lease ran out and it has not been heard for a lease
    /// (true); false after longer than that.
    async fn wait_for_lease_end(&self, node: &str) -> bool {
        let lease = Duration::from_millis(LEASE_MS);
        let deadline = tokio::time::Instant::now() + lease + Duration::from_millis(1_500);
        let mut redis = self.redis.clone();
        loop {
            let leased: bool = redis::cmd("EXISTS")
                .arg(node_key(node))
                .query_async(&mut redis)
                .await
                .unwrap_or(true);
            let heard_lately = lock(&self.nodes)
                .get(node)
                .is_some_and(|heard| heard.elapsed() <= lease);
            if !leased && !heard_lately {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Takes `session_id` over under a lock, from `dead` (or from nobody: its owner's
    /// lease ran out): names this node its owner and restores its snapshot into the hub.
    async fn take_over(&self, shared: &Shared, session_id: &str, dead: Option<&str>) -> TakeOver {
        let mut redis = self.redis.clone();
        let lock_key = format!("huddle:session:{session_id}:takeover");
        let won: Option<String> = redis::cmd("SET")
            .arg(&lock_key)
            .arg(&self.node)
            .arg("NX")
            .arg("PX")
            .arg(5_000)
            .query_async(&mut redis)
            .await
            .unwrap_or(None);
        if won.is_none() {
            return TakeOver::Busy;
        }
        let outcome = self.take_over_locked(shared, session_id, dead).await;
        let _: redis::RedisResult<()> = redis::cmd("DEL")
            .arg(&lock_key)
            .query_async(&mut redis)
            .await;
        outcome
    }

    async fn take_over_locked(
        &self,
        shared: &Shared,
        session_id: &str,
        dead: Option<&str>,
    ) -> TakeOver {
        let mut redis = self.redis.clone();
        let (owner, snapshot): (Option<String>, Option<String>) = match redis::pipe()
            .cmd("GET")
            .arg(owner_key(session_id))
            .cmd("GET")
            .arg(snapshot_key(session_id))
            .query_async(&mut redis)
            .await
        {
            Ok(both) => both,
            Err(err) => {
                tracing::warn!("cluster: cannot read session {session_id}: {err}");
                return TakeOver::Busy;
            }
        };
        match owner.as_deref() {
            Some(owner) if owner == self.node => return TakeOver::Done,
            // Someone else holds it (took it over meanwhile): ask again.
            Some(owner) if Some(owner) != dead => return TakeOver::Busy,
            _ => {}
        }
        let Some(snapshot) = snapshot else {
            return TakeOver::NothingToRestore;
        };
        if shared.hub().holds_session(session_id) {
            // Still here (Redis lost the owner's name, not the node): named again, as it is.
            self.name_owner(session_id, false).await;
            return TakeOver::Done;
        }
        let snapshot = match serde_json::from_str::<SessionSnapshot>(&snapshot) {
            Ok(snapshot) => snapshot,
            Err(err) => {
                tracing::error!("cluster: unreadable snapshot of {session_id}: {err}");
                return TakeOver::NothingToRestore;
            }
        };
        self.name_owner(session_id, false).await;
        tracing::info!(
            "cluster: node {} takes session {session_id} over from {}",
            self.node,
            dead.unwrap_or("a node whose lease ran out")
        );
        shared.with_hub(|hub| {
            let found: HashMap<NodeConn, Option<ConnId>> = snapshot_conns(&snapshot)
                .into_iter()
                .map(|named| {
                    let here = if named.node == self.node {
                        (hub.uid_of(named.conn).is_some() && !hub.is_remote(named.conn))
                            .then_some(named.conn)
                    } else {
                        lock(&self.mirror).by_remote.get(&named).copied()
                    };
                    (named, here)
                })
                .collect();
            hub.restore_session(
                session_id,
                snapshot,
                |named| found.get(named).copied().flatten(),
                now_ms(),
            );
        });
        TakeOver::Done
    }

    /// `node` was just heard from.
    fn heard(&self, node: &str) {
        if node != self.node {
            lock(&self.nodes).insert(node.to_owned(), tokio::time::Instant::now());
        }
    }

    /// Handles what another node published.
    fn receive(&self, shared: &Shared, wire: Wire) {
        match &wire {
            Wire::Hello { node, .. }
            | Wire::Sync { node, .. }
            | Wire::Attach { node, .. }
            | Wire::Detach { node, .. }
            | Wire::Held { node, .. }
            | Wire::Alive { node }
            | Wire::Request { node, .. } => self.heard(node),
            Wire::Deliver { .. } | Wire::Close { .. } => {}
        }
        match wire {
            Wire::Hello { node, conns, held } => {
                if node == self.node {
                    return;
                }
                self.replace_node(shared, &node, conns, held);
                let (conns, held) = self.own_state(shared);
                self.publish(
                    &node_channel(&node),
                    &Wire::Sync {
                        node: self.node.clone(),
                        conns,
                        held,
                    },
                );
            }
            Wire::Sync { node, conns, held } => self.replace_node(shared, &node, conns, held),
            Wire::Attach { node, conn, uid } if node != self.node => {
                shared.with_hub(|hub| {
                    let here = self.mirror_attach(hub, NodeConn { node, conn }, &uid);
                    hub.logged_in_remotely(here);
                });
            }
            Wire::Detach { node, conn } if node != self.node => {
                shared.with_hub(|hub| self.mirror_detach(hub, &NodeConn { node, conn }, false));
            }
            Wire::Held { node, users } if node != self.node => {
                shared.with_hub(|hub| hub.set_remote_held(&node, users));
            }
            Wire::Request {
                node,
                conn,
                uid,
                frame,
            } => {
                shared.with_hub(|hub| {
                    let here = self.mirror_attach(hub, NodeConn { node, conn }, &uid);
                    hub.handle(here, frame, now_ms());
                });
            }
            Wire::Deliver { conn, frame } => shared.deliver_local(vec![Out::Send(conn, frame)]),
            Wire::Close { conn, code, reason } => {
                shared.deliver_local(vec![Out::Close(conn, code, reason)]);
            }
            Wire::Attach { .. } | Wire::Detach { .. } | Wire::Held { .. } | Wire::Alive { .. } => {}
        }
    }

    /// This node's logged-in connections and held users.
    fn own_state(&self, shared: &Shared) -> (Vec<(ConnId, String)>, Vec<String>) {
        let held = shared.hub().held_users();
        let conns = lock(&self.local)
            .iter()
            .map(|(conn, uid)| (*conn, uid.clone()))
            .collect();
        (conns, held)
    }

    /// What `node` says it has now replaces what was mirrored of it.
    fn replace_node(
        &self,
        shared: &Shared,
        node: &str,
        conns: Vec<(ConnId, String)>,
        held: Vec<String>,
    ) {
        tracing::info!(
            "cluster: synced with node {node} ({} connections, {} users in calls)",
            conns.len(),
            held.len()
        );
        shared.with_hub(|hub| {
            let keep: HashSet<ConnId> = conns.iter().map(|(conn, _)| *conn).collect();
            let stale: Vec<NodeConn> = lock(&self.mirror)
                .by_remote
                .keys()
                .filter(|named| named.node == node && !keep.contains(&named.conn))
                .cloned()
                .collect();
            for named in stale {
                self.mirror_detach(hub, &named, false);
            }
            lock(&self.mirror)
                .dormant
                .retain(|named, _| named.node != node || keep.contains(&named.conn));
            for (conn, uid) in conns {
                self.mirror_attach(
                    hub,
                    NodeConn {
                        node: node.to_owned(),
                        conn,
                    },
                    &uid,
                );
            }
            hub.set_remote_held(node, held);
        });
    }

    /// The hub's id for another node's connection, mirroring it first if needed.
    fn mirror_attach(&self, hub: &mut Hub, named: NodeConn, uid: &str) -> ConnId {
        let mut mirror = lock(&self.mirror);
        if let Some(here) = mirror.by_remote.get(&named) {
            return *here;
        }
        let here = match mirror.dormant.remove(&named) {
            Some(here) => here,
            None => self
                .shared
                .upgrade()
                .map_or(0, |shared| shared.new_conn_id()),
        };
        tracing::debug!(
            "cluster: {}'s connection {} ({uid}) mirrored",
            named.node,
            named.conn
        );
        mirror.by_remote.insert(named.clone(), here);
        mirror.by_local.insert(here, named);
        drop(mirror);
        hub.attach_remote(here, uid);
        here
    }

    fn mirror_detach(&self, hub: &mut Hub, named: &NodeConn, node_gone: bool) {
        let here = {
            let mut mirror = lock(&self.mirror);
            let Some(here) = mirror.by_remote.remove(named) else {
                return;
            };
            mirror.by_local.remove(&here);
            if node_gone {
                mirror.dormant.insert(named.clone(), here);
            }
            here
        };
        hub.detach_remote(here, now_ms(), node_gone);
    }

    /// Refreshes this node's lease and its sessions' (forgetting sessions another node now
    /// owns), and drops nodes whose lease is gone.
    async fn refresh_leases(&self) {
        lock(&self.owners).retain(|_, (_, at)| at.elapsed() < OWNER_CACHE_FOR);
        let mut redis = self.redis.clone();
        let owned: Vec<String> = lock(&self.published).sessions.keys().cloned().collect();
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(node_key(&self.node))
            .arg(now_ms())
            .arg("PX")
            .arg(LEASE_MS)
            .ignore();
        for id in &owned {
            pipe.cmd("GET").arg(owner_key(id));
        }
        let owners: Vec<Option<String>> = match pipe.query_async(&mut redis).await {
            Ok(owners) => owners,
            Err(err) => {
                tracing::warn!("cluster: cannot refresh the leases: {err}");
                return;
            }
        };
        let mut renew = redis::pipe();
        let mut lost = Vec::new();
        for (id, owner) in owned.iter().zip(owners) {
            match owner.as_deref() {
                Some(owner) if owner != self.node => lost.push(id.clone()),
                _ => {
                    self.lease_owner(&mut renew, id);
                    renew
                        .cmd("PEXPIRE")
                        .arg(snapshot_key(id))
                        .arg(SNAPSHOT_TTL_MS)
                        .ignore();
                }
            }
        }
        let _: redis::RedisResult<()> = renew.query_async(&mut redis).await;
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        if !lost.is_empty() {
            let mut published = lock(&self.published);
            for id in &lost {
                tracing::warn!("cluster: session {id} is owned by another node now; forgetting it");
                published.sessions.remove(id);
                published.digests.remove(id);
            }
            drop(published);
            shared.with_hub(|hub| {
                for id in &lost {
                    hub.forget_session(id);
                }
            });
        }
        self.publish(
            BROADCAST,
            &Wire::Alive {
                node: self.node.clone(),
            },
        );
        let lease = Duration::from_millis(LEASE_MS);
        let quiet: Vec<String> = lock(&self.nodes)
            .iter()
            .filter(|(_, heard)| heard.elapsed() > lease)
            .map(|(node, _)| node.clone())
            .collect();
        for node in quiet {
            // Gone: not heard for a lease, and its lease ran out (both: Redis restarting
            // empty loses the lease of a node that is fine).
            let alive: bool = redis::cmd("EXISTS")
                .arg(node_key(&node))
                .query_async(&mut redis)
                .await
                .unwrap_or(true);
            if !alive {
                tracing::info!("cluster: node {node} is gone");
                lock(&self.nodes).remove(&node);
                shared.with_hub(|hub| {
                    let theirs: Vec<NodeConn> = lock(&self.mirror)
                        .by_remote
                        .keys()
                        .filter(|named| named.node == node)
                        .cloned()
                        .collect();
                    for named in theirs {
                        self.mirror_detach(hub, &named, true);
                    }
                    hub.set_remote_held(&node, Vec::new());
                });
            }
        }
    }

    /// Names this node the owner of its sessions again and rewrites their snapshots.
    fn reassert_sessions(&self) {
        let published = lock(&self.published);
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(node_key(&self.node))
            .arg(now_ms())
            .arg("PX")
            .arg(LEASE_MS)
            .ignore();
        for (id, json) in &published.sessions {
            self.lease_owner(&mut pipe, id);
            pipe.cmd("SET")
                .arg(snapshot_key(id))
                .arg(json)
                .arg("PX")
                .arg(SNAPSHOT_TTL_MS)
                .ignore();
        }
        self.enqueue(pipe);
    }

    /// Leaving the cluster on shutdown: the lease goes at once, so that the others take this
    /// node's sessions over without waiting for it to run out.
    pub(crate) async fn leave(&self) {
        let mut redis = self.redis.clone();
        let _: redis::RedisResult<()> = redis::cmd("DEL")
            .arg(node_key(&self.node))
            .query_async(&mut redis)
            .await;
    }
}

/// Every connection a snapshot names.
fn snapshot_conns(snapshot: &SessionSnapshot) -> Vec<NodeConn> {
    snapshot.member_conns().iter().flatten().cloned().collect()
}

/// Runs the queued Redis batches one at a time, in order.
async fn run_publisher(mut redis: ConnectionManager, mut jobs: mpsc::UnboundedReceiver<Job>) {
    while let Some(job) = jobs.recv().await {
        let result = job.pipe.query_async::<redis::Value>(&mut redis).await;
        match job.reply {
            Some(reply) => {
                let _ = reply.send(result);
            }
            None => {
                if let Err(err) = result {
                    tracing::warn!("cluster: a Redis batch failed: {err}");
                }
            }
        }
    }
}

/// Subscribes to the broadcast and this node's channel, says hello, and hands every message
/// to the node; resubscribes (and says hello again) after losing Redis.
async fn run_subscriber(client: redis::Client, cluster: Weak<Cluster>) {
    let mut delay = Duration::from_millis(100);
    loop {
        let Some(node) = cluster.upgrade().map(|c| c.node.clone()) else {
            return;
        };
        match client.get_async_pubsub().await {
            Ok(mut pubsub) => {
                let subscribed = async {
                    pubsub.subscribe(BROADCAST).await?;
                    pubsub.subscribe(node_channel(&node)).await
                }
                .await;
                if let Err(err) = subscribed {
                    tracing::warn!("cluster: cannot subscribe: {err}");
                } else {
                    delay = Duration::from_millis(100);
                    if let Some(cluster) = cluster.upgrade()
                        && let Some(shared) = cluster.shared.upgrade()
                    {
                        // Redis may have lost everything (a restart): the owned sessions are
                        // named again before anyone hears hello.
                        cluster.reassert_sessions();
                        let (conns, held) = cluster.own_state(&shared);
                        cluster.publish(
                            BROADCAST,
                            &Wire::Hello {
                                node: node.clone(),
                                conns,
                                held,
                            },
                        );
                    }
                    let mut messages = pubsub.on_message();
                    while let Some(message) = messages.next().await {
                        let Some(cluster) = cluster.upgrade() else {
                            return;
                        };
                        let Some(shared) = cluster.shared.upgrade() else {
                            return;
                        };
                        let Ok(payload) = message.get_payload::<String>() else {
                            continue;
                        };
                        match serde_json::from_str::<Wire>(&payload) {
                            Ok(wire) => cluster.receive(&shared, wire),
                            Err(err) => tracing::warn!("cluster: unreadable message: {err}"),
                        }
                    }
                    tracing::warn!("cluster: lost the Redis subscription; resubscribing");
                }
            }
            Err(err) => tracing::warn!("cluster: cannot reach Redis: {err}"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(500));
    }
}

/// Refreshes the leases every second while the node lives.
async fn run_refresh(cluster: Weak<Cluster>) {
    let mut interval = tokio::time::interval(REFRESH_EVERY);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Some(cluster) = cluster.upgrade() else {
            return;
        };
        cluster.refresh_leases().await;
    }
}

/// Handles one client frame on a clustered node: requests about a session another node owns
/// are forwarded to it; the rest go to the local hub. A session whose owner is unreachable
/// (its lease still held) is answered with an error.
pub(crate) async fn handle_frame(
    cluster: &Cluster,
    shared: &Shared,
    conn: ConnId,
    frame: ClientFrame,
) {
    let logged_in_as = shared.hub().uid_of(conn).map(str::to_owned);
    if let (Some(uid), Some((session_id, may_found))) =
        (&logged_in_as, session_of_request(&frame.request))
    {
        let session_id = session_id.to_owned();
        match cluster
            .route(shared, &session_id, may_found, (conn, uid, &frame))
            .await
        {
            Route::Local => {}
            Route::Forwarded => return,
            Route::Unreachable(owner) => {
                shared.deliver_local(vec![Out::Send(
                    conn,
                    ServerFrame::error(
                        frame.id,
                        ErrorCode::ApiError,
                        format!("the server holding this call ({owner}) does not answer"),
                    ),
                )]);
                return;
            }
        }
    }
    shared.with_hub(|hub| {
        hub.handle(conn, frame, now_ms());
        if logged_in_as.is_none()
            && let Some(uid) = hub.uid_of(conn)
        {
            cluster.attached(conn, uid);
        }
    });
}

/// A random node id.
pub fn random_node_id() -> String {
    let mut bytes = [0u8; 4];
    let _ = getrandom::fill(&mut bytes);
    format!(
        "node-{}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}
