//! What lets several servers share their calls (the Redis side is `crate::cluster`).
//!
//! - **Mirrored connections.** Every node mirrors the logged-in connections of the other
//!   nodes into its hub ([`Hub::attach_remote`]), so ringing, presence and "answered
//!   elsewhere" reach a user wherever they are connected: what the hub queues for a mirrored
//!   connection is carried to its node. Attaching and detaching a mirror announces nothing
//!   (the user's own node does that), except when a whole node is gone ([`Hub::detach_remote`]
//!   with `node_gone`), which nobody else can announce.
//! - **Held users.** Who is in a call on another node ([`Hub::set_remote_held`]) makes a
//!   receiver busy here too.
//! - **Session snapshots.** The node that owns a session (where its call was placed, or where
//!   its first member joined) keeps a [`SessionSnapshot`] of it in Redis; when that node dies,
//!   the next node asked about the session restores it ([`Hub::restore_session`]) and carries
//!   on: members connected elsewhere stay in, members of the dead node have the reconnect
//!   grace to come back.

use std::collections::HashSet;

use huddle_protocol::{MediaRoute, ServerEvent, ServerFrame};
use serde::{Deserialize, Serialize};

use super::{ConnId, Hub, LiveCall, Out, Session};

/// A connection somewhere in the cluster: the node, and its id there.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeConn {
    /// The node's id.
    pub node: String,
    /// The connection's id on that node.
    pub conn: ConnId,
}

/// Everything the hub knows about one session (its ringing-flow call and its members), with
/// each member's connection named cluster-wide.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SessionSnapshot {
    call: Option<LiveCall>,
    session: Option<Session>,
    /// Each member's connection, in member order (`None`: reconnecting).
    member_conns: Vec<Option<NodeConn>>,
}

impl SessionSnapshot {
    /// Each member's connection, in member order (`None`: reconnecting).
    pub fn member_conns(&self) -> &[Option<NodeConn>] {
        &self.member_conns
    }

    /// The users this session holds (in its call and not gone, or members).
    pub fn held_users(&self) -> Vec<String> {
        held_users(self.call.iter(), self.session.iter())
    }
}

/// The users `calls` and `sessions` hold (in a call and not gone from it, or members),
/// sorted, once each.
fn held_users<'a>(
    calls: impl Iterator<Item = &'a LiveCall>,
    sessions: impl Iterator<Item = &'a Session>,
) -> Vec<String> {
    let mut users: Vec<String> = Vec::new();
    for live in calls {
        users.extend(
            std::iter::once(&live.call.initiator.uid)
                .chain(&live.accepted)
                .filter(|uid| live.holds(uid))
                .cloned(),
        );
    }
    for session in sessions {
        users.extend(session.members.iter().map(|m| m.info.uid.clone()));
    }
    users.sort();
    users.dedup();
    users
}

impl Hub {
    /// The user logged in on `conn`, if any.
    pub fn uid_of(&self, conn: ConnId) -> Option<&str> {
        self.conns.get(&conn).and_then(|uid| uid.as_deref())
    }

    /// Whether `conn` mirrors another node's connection.
    pub fn is_remote(&self, conn: ConnId) -> bool {
        self.remote_conns.contains(&conn)
    }

    /// Mirrors another node's connection, logged in as `uid` (announces nothing). A mirror
    /// that comes back (its node was given up for gone while Redis was away) puts its members
    /// back on it, with the signals held for them meanwhile.
    pub fn attach_remote(&mut self, conn: ConnId, uid: &str) {
        self.remote_conns.insert(conn);
        self.conns.insert(conn, Some(uid.to_owned()));
        let conns = self.online.entry(uid.to_owned()).or_default();
        if !conns.contains(&conn) {
            conns.push(conn);
        }
        for session in self.sessions.values_mut() {
            for member in &mut session.members {
                if member.conn.is_none() && member.lost_conn == Some(conn) {
                    member.conn = Some(conn);
                    member.gone_since = None;
                    member.lost_conn = None;
                    for event in std::mem::take(&mut member.held_signals) {
                        self.out.push(Out::Send(conn, ServerFrame::event(event)));
                    }
                }
            }
        }
    }

    /// Another node's user just logged in on mirrored `conn`: calls of this node ringing them
    /// ring there too (as they do on a login here).
    pub fn logged_in_remotely(&mut self, conn: ConnId) {
        if let Some(uid) = self.uid_of(conn).map(str::to_owned) {
            self.ring_pending_calls(conn, &uid);
            self.flush_after_reply();
        }
    }

    /// A mirrored connection closed: members on it here start their reconnect grace. When
    /// its whole node is gone (`node_gone`), users left with no connection anywhere are
    /// announced offline to this node's own connections (each surviving node tells its own).
    pub fn detach_remote(&mut self, conn: ConnId, now: u64, node_gone: bool) {
        if !self.remote_conns.remove(&conn) {
            return;
        }
        let Some(Some(uid)) = self.conns.remove(&conn) else {
            return;
        };
        let last = self.online.get_mut(&uid).is_some_and(|conns| {
            conns.retain(|c| *c != conn);
            conns.is_empty()
        });
        if last {
            self.online.remove(&uid);
            if node_gone {
                self.announce_presence(&uid, false);
                let remote = &self.remote_conns;
                self.after_reply
                    .retain(|out| !matches!(out, Out::Send(conn, _) if remote.contains(conn)));
            }
        }
        for session in self.sessions.values_mut() {
            if let Some(member) = session.members.iter_mut().find(|m| m.conn == Some(conn)) {
                member.conn = None;
                member.gone_since = Some(now);
                member.lost_conn = node_gone.then_some(conn);
            }
        }
        self.flush_after_reply();
    }

    /// The users `node` holds in its calls (replacing what it said before; empty forgets it).
    pub fn set_remote_held(&mut self, node: &str, users: impl IntoIterator<Item = String>) {
        let users: HashSet<String> = users.into_iter().collect();
        if users.is_empty() {
            self.remote_held.remove(node);
        } else {
            self.remote_held.insert(node.to_owned(), users);
        }
    }

    /// Whether this hub holds `session_id` (a ringing or ongoing call, or a session).
    pub fn holds_session(&self, session_id: &str) -> bool {
        self.calls.contains_key(session_id) || self.sessions.contains_key(session_id)
    }

    /// The sessions this hub holds (ringing, ongoing, or with members), sorted.
    pub fn session_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .calls
            .keys()
            .chain(self.sessions.keys())
            .cloned()
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }

    /// The users this hub's own calls and sessions hold, sorted.
    pub fn held_users(&self) -> Vec<String> {
        held_users(self.calls.values(), self.sessions.values())
    }

    /// A cheap digest of what a takeover most needs of a session (its call's status and who
    /// rings, accepted or left; its route; each member, their connection, state flags and
    /// held signals), to publish such a change at once rather than at the next periodic
    /// snapshot. `None` if this hub does not hold the session.
    pub fn session_digest(&self, session_id: &str) -> Option<u64> {
        use std::hash::{Hash, Hasher};
        let call = self.calls.get(session_id);
        let session = self.sessions.get(session_id);
        if call.is_none() && session.is_none() {
            return None;
        }
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        if let Some(live) = call {
            (live.call.status, &live.ringing, &live.accepted, &live.left).hash(&mut hasher);
        }
        if let Some(session) = session {
            session.route.hash(&mut hasher);
            for member in &session.members {
                let info = &member.info;
                (
                    &info.uid,
                    member.conn,
                    member.gone_since,
                    member.held_signals.len(),
                )
                    .hash(&mut hasher);
                (
                    info.audio_muted,
                    info.video_paused,
                    info.hand_raised,
                    info.screen_sharing,
                )
                    .hash(&mut hasher);
            }
        }
        Some(hasher.finish())
    }

    /// A snapshot of one session, naming each member's connection with `name_conn` (`None`
    /// if this hub does not hold the session).
    pub fn snapshot_session(
        &self,
        session_id: &str,
        name_conn: impl Fn(ConnId) -> Option<NodeConn>,
    ) -> Option<SessionSnapshot> {
        let call = self.calls.get(session_id).cloned();
        let session = self.sessions.get(session_id).cloned();
        if call.is_none() && session.is_none() {
            return None;
        }
        let member_conns = session
            .iter()
            .flat_map(|s| &s.members)
            .map(|m| m.conn.and_then(&name_conn))
            .collect();
        Some(SessionSnapshot {
            call,
            session,
            member_conns,
        })
    }

    /// Takes over a session from its snapshot (its owner is gone). `find_conn` gives this
    /// hub's id for a connection still open somewhere (its own, or a mirror); members whose
    /// connection is gone start their reconnect grace now. A session through the SFU has its
    /// room adopted ([`crate::sfu::SfuCommand::AdoptRoom`]: the media never stops); without
    /// a reported room it goes on as a mesh, and its members are told.
    pub fn restore_session(
        &mut self,
        session_id: &str,
        snapshot: SessionSnapshot,
        find_conn: impl Fn(&NodeConn) -> Option<ConnId>,
        now: u64,
    ) {
        if let Some(call) = snapshot.call {
            self.calls.insert(session_id.to_owned(), call);
        }
        let Some(mut session) = snapshot.session else {
            return;
        };
        for (member, conn) in session.members.iter_mut().zip(&snapshot.member_conns) {
            member.conn = conn.as_ref().and_then(&find_conn);
            if member.conn.is_none() && member.gone_since.is_none() {
                member.gone_since = Some(now);
            }
        }
        if session.route == MediaRoute::Sfu
            && let Some(state) = session.sfu_room.clone()
        {
            // Its room is adopted here: the media through Janus goes on.
            self.out.push(Out::Sfu(crate::sfu::SfuCommand::AdoptRoom {
                session_id: session_id.to_owned(),
                state,
            }));
        } else if session.route == MediaRoute::Sfu {
            session.route = MediaRoute::Mesh;
            session.left_sfu = true;
            session.sfu_failed = true;
            for conn in session.members.iter().filter_map(|m| m.conn) {
                self.out.push(Out::Send(
                    conn,
                    ServerFrame::event(ServerEvent::MediaRouteChanged {
                        session_id: session_id.to_owned(),
                        route: MediaRoute::Mesh,
                    }),
                ));
            }
        }
        self.sessions.insert(session_id.to_owned(), session);
    }

    /// Drops a session another node has taken over (this node lost Redis for longer than
    /// its lease): nothing is told or stored, the other node carries it on.
    pub fn forget_session(&mut self, session_id: &str) {
        self.calls.remove(session_id);
        self.sessions.remove(session_id);
    }

    /// Shutting down one node of a cluster: its calls are not ended (another node takes them
    /// over as their members reconnect there); only its own connections are closed (1001).
    pub fn shutdown_node(&mut self) {
        let own: Vec<ConnId> = self
            .conns
            .keys()
            .copied()
            .filter(|conn| !self.remote_conns.contains(conn))
            .collect();
        for conn in own {
            self.out
                .push(Out::Close(conn, 1001, "server shutting down".into()));
        }
    }
}
