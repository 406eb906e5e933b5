//! Several Huddle servers as one (`--redis` and a shared PostgreSQL `--db`): real
//! `huddle-server` processes, a Redis and a PostgreSQL of the test's own (all on loopback or
//! Unix sockets, all stopped when the test ends, failed or not), and protocol clients.

use std::time::{Duration, Instant};

use huddle_protocol::{
    CallLogQuery, CallStatus, ErrorCode, PeerSignal, Reply, Request, ServerEvent, StateChange,
};

#[allow(dead_code)]
#[path = "protocol/harness.rs"]
mod harness;
#[path = "support/node.rs"]
mod node;
#[path = "support/postgres.rs"]
mod postgres_server;
#[path = "support/redis.rs"]
mod redis_server;

use harness::{Client, join_request};
use node::Node;
use postgres_server::Postgres;
use redis_server::Redis;

/// The server program.
const SERVER: &[&str] = &[env!("CARGO_BIN_EXE_huddle-server")];

/// Waits until `node` mirrors a connection of `uid` from another node (its log says so).
fn wait_mirrored(node: &Node, uid: &str) {
    let started = Instant::now();
    let needle = format!("({uid}) mirrored");
    while !node.log().contains(&needle) {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "node {} never mirrored {uid}",
            node.name
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The call logs `client` sees, newest first.
async fn call_logs(client: &mut Client) -> Vec<huddle_protocol::CallLog> {
    match client
        .request(Request::ListCallLogs {
            query: CallLogQuery::default(),
        })
        .await
    {
        Ok(Reply::CallLogs { logs, .. }) => logs,
        other => panic!("call logs: {other:?}"),
    }
}

fn offer(sdp: &str) -> PeerSignal {
    PeerSignal::Offer { sdp: sdp.into() }
}

/// A signal from `from` reaches `to` (each on its own node), with the session and sender.
async fn signal_reaches(from: &mut Client, to: &mut Client, session_id: &str, sdp: &str) {
    let sent = from
        .request(Request::Signal {
            session_id: session_id.into(),
            to: to.uid.clone(),
            signal: offer(sdp),
        })
        .await;
    assert_eq!(sent, Ok(Reply::Ok), "{} signals {}", from.uid, to.uid);
    let event = to
        .event_where("the signal", |e| matches!(e, ServerEvent::Signal { .. }))
        .await;
    assert_eq!(
        event,
        ServerEvent::Signal {
            session_id: session_id.into(),
            from: from.uid.clone(),
            signal: offer(sdp),
        }
    );
}

/// `caller` calls `callee`, who is rung and accepts; returns the session.
async fn ring_and_accept(caller: &mut Client, callee: &mut Client) -> String {
    let session_id = caller.call_user(&callee.uid).await;
    callee
        .event_where("the ring", |e| {
            matches!(e, ServerEvent::IncomingCallReceived { .. })
        })
        .await;
    callee
        .request(Request::AcceptCall {
            session_id: session_id.clone(),
        })
        .await
        .expect("accept");
    session_id
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Users on two nodes see each other online, ring each other, and hold a call whose
/// requests cross nodes both ways (accept, join, signals, state, end); a third user calling
/// someone in that call from the other node gets `busy`; forged and foreign call tokens are
/// refused by the owning node; both users read the same call logs from the shared database.
#[test]
fn ringing_and_a_call_across_two_nodes() {
    const CLUSTER: &str = "call";
    let postgres = Postgres::start(CLUSTER);
    let redis = Redis::start(CLUSTER);
    let node_a = Node::start(SERVER, CLUSTER, "a", &postgres.url(), &redis.url());
    let node_b = Node::start(SERVER, CLUSTER, "b", &postgres.url(), &redis.url());
    runtime().block_on(async {
        let mut alice = Client::login_url(&node_a.ws_url(), "alice").await;
        wait_mirrored(&node_b, "alice");
        let mut bob = Client::login_url(&node_b.ws_url(), "bob").await;
        wait_mirrored(&node_a, "bob");
        let mut dave = Client::login_url(&node_b.ws_url(), "dave").await;
        wait_mirrored(&node_a, "dave");

        // Presence crosses nodes: alice (node a) hears bob (node b) come online.
        alice
            .event_where("bob online", |e| {
                matches!(e, ServerEvent::Presence(p) if p.user.uid == "bob" && p.online)
            })
            .await;

        // alice (a) rings bob (b).
        let session_id = alice.call_user("bob").await;
        let ring = bob
            .event_where("the ring", |e| {
                matches!(e, ServerEvent::IncomingCallReceived { .. })
            })
            .await;
        assert!(
            matches!(&ring, ServerEvent::IncomingCallReceived { call } if call.session_id == session_id && call.initiator.uid == "alice"),
            "{ring:?}"
        );

        // dave (b) calls alice, who is in a call placed on node a: busy.
        match dave
            .request(Request::InitiateCall {
                receiver_id: "alice".into(),
                receiver_type: huddle_protocol::ReceiverType::User,
                call_type: huddle_protocol::CallType::Audio,
                timeout_secs: None,
            })
            .await
        {
            Ok(Reply::Call { .. }) => {}
            other => panic!("dave's call: {other:?}"),
        }
        let rejected = dave
            .event_where("busy", |e| {
                matches!(e, ServerEvent::OutgoingCallRejected { .. })
            })
            .await;
        assert!(
            matches!(&rejected, ServerEvent::OutgoingCallRejected { call } if call.status == CallStatus::Busy),
            "{rejected:?}"
        );

        // bob accepts on node b; node a owns the call and tells alice.
        match bob
            .request(Request::AcceptCall {
                session_id: session_id.clone(),
            })
            .await
        {
            Ok(Reply::Call { call }) => assert_eq!(call.status, CallStatus::Ongoing),
            other => panic!("accept: {other:?}"),
        }
        alice
            .event_where("accepted", |e| {
                matches!(e, ServerEvent::OutgoingCallAccepted { by, .. } if by == "bob")
            })
            .await;

        // Tokens: a forged one and alice's are refused to bob, by the owning node.
        let alices_token = alice.token(&session_id).await;
        let mut forged = alices_token.clone().into_bytes();
        let last = forged.len() - 1;
        forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(forged).expect("ascii");
        assert_eq!(
            bob.error_code(join_request(&session_id, &forged)).await,
            ErrorCode::TokenInvalidSignature
        );
        let foreign = bob.request(join_request(&session_id, &alices_token)).await;
        assert!(
            matches!(&foreign, Err(e) if e.message.contains("another user")),
            "{foreign:?}"
        );

        assert_eq!(alice.join(&session_id).await, ["alice"]);
        assert_eq!(bob.join(&session_id).await, ["alice", "bob"]);
        alice
            .event_where("bob joined", |e| {
                matches!(e, ServerEvent::ParticipantJoined { participant, .. } if participant.uid == "bob")
            })
            .await;

        signal_reaches(&mut alice, &mut bob, &session_id, "offer from a to b").await;
        signal_reaches(&mut bob, &mut alice, &session_id, "offer from b to a").await;

        let state = bob
            .request(Request::State {
                session_id: session_id.clone(),
                change: StateChange::AudioMuted(true),
            })
            .await;
        assert_eq!(state, Ok(Reply::Ok));
        let muted = alice
            .event_where("bob muted", |e| {
                matches!(e, ServerEvent::ParticipantState { .. })
            })
            .await;
        assert_eq!(
            muted,
            ServerEvent::ParticipantState {
                session_id: session_id.clone(),
                uid: "bob".into(),
                change: StateChange::AudioMuted(true),
            }
        );

        // bob ends it on node b; alice hears on node a.
        match bob
            .request(Request::EndCall {
                session_id: session_id.clone(),
            })
            .await
        {
            Ok(Reply::Call { call }) => assert_eq!(call.status, CallStatus::Ended),
            other => panic!("end: {other:?}"),
        }
        alice
            .event_where("session ended", |e| {
                matches!(e, ServerEvent::SessionEnded { .. })
            })
            .await;
        alice
            .event_where("call ended", |e| matches!(e, ServerEvent::CallEnded { .. }))
            .await;

        let alices_logs = call_logs(&mut alice).await;
        let bobs_logs = call_logs(&mut bob).await;
        let call = alices_logs
            .iter()
            .find(|log| log.session_id == session_id)
            .expect("alice's log of the call");
        assert_eq!(call.status, CallStatus::Ended);
        assert_eq!(call.participants, ["alice", "bob"]);
        assert!(call.started_at.is_some() && call.ended_at.is_some(), "{call:?}");
        let bobs = bobs_logs
            .iter()
            .find(|log| log.session_id == session_id)
            .expect("bob's log of the call");
        assert_eq!(
            (bobs.status, &bobs.participants, bobs.started_at, bobs.ended_at),
            (call.status, &call.participants, call.started_at, call.ended_at)
        );
        assert!(
            alices_logs
                .iter()
                .any(|log| log.initiator == "dave" && log.status == CallStatus::Busy),
            "dave's busy call in alice's logs: {alices_logs:?}"
        );
    });
}

/// A node killed mid-call: the users on the other node see its users go offline; a user of
/// the killed node comes back through the other node, rejoins the same session (taken over
/// from its snapshot in Redis) and signals the other participant both ways; the call then
/// ends with one log entry, as on one node.
#[test]
fn a_killed_node_hands_its_calls_to_the_other() {
    const CLUSTER: &str = "kill";
    let postgres = Postgres::start(CLUSTER);
    let redis = Redis::start(CLUSTER);
    let mut node_a = Node::start(SERVER, CLUSTER, "a", &postgres.url(), &redis.url());
    let node_b = Node::start(SERVER, CLUSTER, "b", &postgres.url(), &redis.url());
    runtime().block_on(async {
        let mut alice = Client::login_url(&node_a.ws_url(), "alice").await;
        wait_mirrored(&node_b, "alice");
        let mut bob = Client::login_url(&node_b.ws_url(), "bob").await;
        wait_mirrored(&node_a, "bob");

        let session_id = ring_and_accept(&mut alice, &mut bob).await;
        alice.join(&session_id).await;
        assert_eq!(bob.join(&session_id).await, ["alice", "bob"]);
        signal_reaches(&mut alice, &mut bob, &session_id, "before the kill").await;

        node_a.kill();
        let killed_at = Instant::now();
        assert_eq!(alice.closed().await, harness::Closed::Dropped);
        // Node b sees node a's lease run out: alice is offline for bob.
        bob.event_where(
            "alice offline",
            |e| matches!(e, ServerEvent::Presence(p) if p.user.uid == "alice" && !p.online),
        )
        .await;
        let noticed = killed_at.elapsed();
        assert!(
            noticed < Duration::from_secs(5),
            "noticed after {noticed:?}"
        );

        // alice comes back through node b and rejoins the same session.
        let mut alice = Client::login_url(&node_b.ws_url(), "alice").await;
        let token = alice.token(&session_id).await;
        match alice.request(join_request(&session_id, &token)).await {
            Ok(Reply::Joined { participants, .. }) => {
                let uids: Vec<String> = participants.into_iter().map(|p| p.uid).collect();
                assert_eq!(uids, ["alice", "bob"]);
            }
            other => panic!("rejoin: {other:?}"),
        }
        assert!(
            node_b.log().contains("takes session"),
            "node b took the session over"
        );
        bob.event_where(
            "alice online",
            |e| matches!(e, ServerEvent::Presence(p) if p.user.uid == "alice" && p.online),
        )
        .await;
        signal_reaches(&mut alice, &mut bob, &session_id, "after the kill").await;
        signal_reaches(&mut bob, &mut alice, &session_id, "answer after the kill").await;

        // alice leaves: the 1:1 session ends for bob, and its one log entry closes.
        alice
            .request(Request::LeaveSession {
                session_id: session_id.clone(),
            })
            .await
            .expect("leave");
        bob.event_where(
            "alice left",
            |e| matches!(e, ServerEvent::ParticipantLeft { uid, .. } if uid == "alice"),
        )
        .await;
        bob.event_where("session ended", |e| {
            matches!(e, ServerEvent::SessionEnded { .. })
        })
        .await;
        let logs = call_logs(&mut bob).await;
        let entries: Vec<_> = logs.iter().filter(|l| l.session_id == session_id).collect();
        assert_eq!(entries.len(), 1, "{logs:?}");
        let entry = entries[0];
        assert_eq!(entry.status, CallStatus::Ended);
        assert_eq!(entry.participants, ["alice", "bob"]);
        assert!(entry.ended_at.is_some(), "{entry:?}");
    });
}

/// Waits until `node`'s log says it synced with another node `times` times (hello and sync
/// after each subscription to Redis).
fn wait_synced(node: &Node, times: usize) {
    let started = Instant::now();
    while node.log().matches("cluster: synced with node").count() < times {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "node {} synced fewer than {times} times: {}",
            node.name,
            node.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Redis restarts empty (SIGKILL, then a new one on the same socket): both nodes resubscribe,
/// name their sessions again and resync their connections, so a call that was going on goes
/// on (signals still cross nodes), and a user who logged in while Redis was down is rung
/// from the other node.
#[test]
fn nodes_resync_after_redis_restarts() {
    const CLUSTER: &str = "resync";
    let postgres = Postgres::start(CLUSTER);
    let mut redis = Redis::start(CLUSTER);
    let node_a = Node::start(SERVER, CLUSTER, "a", &postgres.url(), &redis.url());
    let node_b = Node::start(SERVER, CLUSTER, "b", &postgres.url(), &redis.url());
    wait_synced(&node_a, 1);
    wait_synced(&node_b, 1);
    runtime().block_on(async {
        let mut alice = Client::login_url(&node_a.ws_url(), "alice").await;
        wait_mirrored(&node_b, "alice");
        let mut bob = Client::login_url(&node_b.ws_url(), "bob").await;
        wait_mirrored(&node_a, "bob");
        let session_id = ring_and_accept(&mut alice, &mut bob).await;
        alice
            .event_where("accepted", |e| {
                matches!(e, ServerEvent::OutgoingCallAccepted { .. })
            })
            .await;
        alice.join(&session_id).await;
        bob.join(&session_id).await;
        alice
            .event_where("bob joined", |e| {
                matches!(e, ServerEvent::ParticipantJoined { .. })
            })
            .await;

        redis.stop();
        // Logged in while Redis is down: node a cannot hear of it yet.
        let mut carol = Client::login_url(&node_b.ws_url(), "carol").await;
        redis.restart();
        wait_synced(&node_a, 2);
        wait_synced(&node_b, 2);

        signal_reaches(&mut bob, &mut alice, &session_id, "after the restart").await;
        signal_reaches(
            &mut alice,
            &mut bob,
            &session_id,
            "answer after the restart",
        )
        .await;

        wait_mirrored(&node_a, "carol");
        let mut dave = Client::login_url(&node_a.ws_url(), "dave").await;
        let call = dave.call_user("carol").await;
        let ring = carol
            .event_where("dave's ring", |e| {
                matches!(e, ServerEvent::IncomingCallReceived { .. })
            })
            .await;
        assert!(
            matches!(&ring, ServerEvent::IncomingCallReceived { call: c } if c.session_id == call),
            "{ring:?}"
        );
    });
}
