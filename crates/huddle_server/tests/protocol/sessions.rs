//! Sessions: joining with tokens, relaying signals to one participant and state to all,
//! 1:1 calls ending when either side leaves, direct sessions, idle timeout, and clients that
//! drop and reconnect during ringing and during a call.

use huddle_protocol::{
    CallStatus, ErrorCode, PeerSignal, Reply, Request, ServerEvent, SessionEndReason, StateChange,
};
use huddle_server::{HubConfig, ServerConfig};

use crate::harness::*;

/// Alice and Bob in an accepted call, both joined. Returns the session id.
async fn call_in_progress(alice: &mut Client, bob: &mut Client) -> String {
    let sid = alice.call_user(&bob.uid.clone()).await;
    bob.event().await;
    bob.request(Request::AcceptCall {
        session_id: sid.clone(),
    })
    .await
    .expect("accept");
    alice.event().await;
    assert_eq!(alice.join(&sid).await, vec![alice.uid.clone()]);
    assert_eq!(
        bob.join(&sid).await,
        vec![alice.uid.clone(), bob.uid.clone()]
    );
    let ServerEvent::ParticipantJoined { participant, .. } = alice.event().await else {
        panic!("joined")
    };
    assert_eq!(participant.uid, bob.uid);
    sid
}

/// SDP and ICE go to the one participant they are addressed to, verbatim; state changes go
/// to everyone else; signals to someone not in the session are refused.
#[tokio::test]
async fn relay_signals_and_state() {
    let server = TestServer::dev().await;
    let mut alice = Client::login(&server, "alice").await;
    let mut bob = Client::login(&server, "bob").await;
    let sid = call_in_progress(&mut alice, &mut bob).await;
    let offer = PeerSignal::Offer {
        sdp: "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n".into(),
    };
    alice
        .request(Request::Signal {
            session_id: sid.clone(),
            to: "bob".into(),
            signal: offer.clone(),
        })
        .await
        .expect("relay");
    let ServerEvent::Signal { from, signal, .. } = bob.event().await else {
        panic!("signal")
    };
    assert_eq!((from.as_str(), signal), ("alice", offer));
    let candidate = PeerSignal::Candidate {
        candidate: Some("candidate:1 1 UDP 2122260223 127.0.0.1 50000 typ host".into()),
        sdp_mid: Some("0".into()),
        sdp_mline_index: Some(0),
        username_fragment: Some("abcd".into()),
    };
    bob.request(Request::Signal {
        session_id: sid.clone(),
        to: "alice".into(),
        signal: candidate.clone(),
    })
    .await
    .expect("relay");
    let ServerEvent::Signal { from, signal, .. } = alice.event().await else {
        panic!("signal")
    };
    assert_eq!((from.as_str(), signal), ("bob", candidate));
    assert_eq!(
        bob.error_code(Request::Signal {
            session_id: sid.clone(),
            to: "carol".into(),
            signal: PeerSignal::Answer { sdp: String::new() }
        })
        .await,
        ErrorCode::InvalidArgument
    );
    for change in [
        StateChange::AudioMuted(true),
        StateChange::VideoPaused(true),
        StateChange::HandRaised(true),
        StateChange::ScreenSharing(true),
        StateChange::Recording(true),
        StateChange::SwitchedToVideo("alice".into()),
    ] {
        bob.request(Request::State {
            session_id: sid.clone(),
            change: change.clone(),
        })
        .await
        .expect("state");
        let ServerEvent::ParticipantState {
            uid, change: got, ..
        } = alice.event().await
        else {
            panic!("state")
        };
        assert_eq!((uid.as_str(), got), ("bob", change));
    }
    bob.no_event_for(100).await;
}

/// In a 1:1 call, the side that leaves ends it: the other gets `participant_left`, then
/// `session_ended` and `call_ended`; the call log says ended, with both participants.
#[tokio::test]
async fn one_to_one_ends_when_either_side_leaves() {
    let server = TestServer::dev().await;
    let mut alice = Client::login(&server, "alice").await;
    let mut bob = Client::login(&server, "bob").await;
    let sid = call_in_progress(&mut alice, &mut bob).await;
    bob.request(Request::LeaveSession {
        session_id: sid.clone(),
    })
    .await
    .expect("leave");
    assert!(
        matches!(alice.event().await, ServerEvent::ParticipantLeft { uid, .. } if uid == "bob")
    );
    assert!(matches!(
        alice.event().await,
        ServerEvent::SessionEnded {
            reason: SessionEndReason::Ended,
            ..
        }
    ));
    assert!(
        matches!(alice.event().await, ServerEvent::CallEnded { call } if call.status == CallStatus::Ended)
    );
    let Ok(Reply::CallLogs { logs, total }) = alice
        .request(Request::ListCallLogs {
            query: Default::default(),
        })
        .await
    else {
        panic!("logs")
    };
    assert_eq!(total, 1);
    assert_eq!(logs[0].session_id, sid);
    assert_eq!(logs[0].status, CallStatus::Ended);
    assert_eq!(
        logs[0].participants,
        vec!["alice".to_owned(), "bob".to_owned()]
    );
    assert!(logs[0].ended_at.is_some() && logs[0].started_at.is_some());
}

/// A direct session needs no ringing: any holders of tokens for the same session id meet.
/// Joining twice is refused. Someone left alone is timed out once the server's timer passes
/// the idle timeout (the shortest, 100 ms, so the test waits about one tick; the boundary
/// itself is proved without sockets by the hub's unit tests).
#[tokio::test]
async fn direct_session_and_idle_timeout() {
    let server = TestServer::dev().await;
    let mut alice = Client::login(&server, "alice").await;
    let mut bob = Client::login(&server, "bob").await;
    assert_eq!(alice.join("standup").await, vec!["alice"]);
    assert_eq!(bob.join("standup").await, vec!["alice", "bob"]);
    let token = bob.token("standup").await;
    assert_eq!(
        bob.error_code(join_request("standup", &token)).await,
        ErrorCode::CallAlreadyJoined
    );
    bob.request(Request::LeaveSession {
        session_id: "standup".into(),
    })
    .await
    .expect("leave");
    alice.event().await; // participant_joined
    assert!(matches!(
        alice.event().await,
        ServerEvent::ParticipantLeft { .. }
    ));
    alice
        .request(Request::LeaveSession {
            session_id: "standup".into(),
        })
        .await
        .expect("leave");

    let impatient = TestServer::start(ServerConfig {
        hub: HubConfig {
            dev_login: true,
            idle_timeout_ms: 100,
            ..HubConfig::default()
        },
        ..ServerConfig::default()
    })
    .await;
    let mut carol = Client::login(&impatient, "carol").await;
    let call_token = carol.token("lonely").await;
    carol
        .request(Request::JoinSession {
            session_id: "lonely".into(),
            call_token,
            idle_timeout_secs: None,
            audio_muted: true,
            video_paused: false,
        })
        .await
        .expect("join");
    let ServerEvent::SessionEnded { session_id, reason } = carol.event().await else {
        panic!("timeout")
    };
    assert_eq!(
        (session_id.as_str(), reason),
        ("lonely", SessionEndReason::Timeout)
    );
}

/// A callee whose connection drops while the call rings is rung again when they log back in,
/// and can accept.
#[tokio::test]
async fn reconnect_during_ringing() {
    let server = TestServer::dev().await;
    let mut alice = Client::login(&server, "alice").await;
    let bob = Client::login(&server, "bob").await;
    let sid = alice.call_user("bob").await;
    drop(bob);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let mut bob = Client::login(&server, "bob").await;
    let ServerEvent::IncomingCallReceived { call } = bob.event().await else {
        panic!("rung again")
    };
    assert_eq!(call.session_id, sid);
    bob.request(Request::AcceptCall { session_id: sid })
        .await
        .expect("accept after reconnect");
    assert!(matches!(
        alice.event().await,
        ServerEvent::OutgoingCallAccepted { .. }
    ));
}

/// A participant whose connection drops mid-call keeps their place: they log in again on a
/// new connection, join again, and the other side never sees them leave; state changes reach
/// them on the new connection. (That the place is kept for exactly the grace period, and no
/// longer, is proved without sockets by the hub's unit tests.)
#[tokio::test]
async fn reconnect_during_a_call() {
    let server = TestServer::dev().await;
    let mut alice = Client::login(&server, "alice").await;
    let mut bob = Client::login(&server, "bob").await;
    let sid = call_in_progress(&mut alice, &mut bob).await;
    drop(bob);
    // Let the server see the drop, so that the rejoin takes the reconnect path (rather than
    // replacing a connection it still thinks is open).
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let mut bob = Client::login(&server, "bob").await;
    assert_eq!(
        bob.join(&sid).await,
        vec!["alice", "bob"],
        "same place in the session"
    );
    alice
        .request(Request::State {
            session_id: sid.clone(),
            change: StateChange::AudioMuted(true),
        })
        .await
        .expect("state");
    assert!(matches!(
        bob.event().await,
        ServerEvent::ParticipantState { .. }
    ));
    alice.no_event_for(50).await;
}

/// A participant whose socket drops and who does not come back is removed once the server's
/// timer passes the reconnect grace (the shortest, 100 ms, so the test waits about one tick):
/// the other side of the 1:1 call gets `participant_left`, then `session_ended`.
#[tokio::test]
async fn dropped_participant_is_removed_after_the_grace() {
    let server = TestServer::start(ServerConfig {
        hub: HubConfig {
            dev_login: true,
            reconnect_grace_ms: 100,
            ..HubConfig::default()
        },
        ..ServerConfig::default()
    })
    .await;
    let mut alice = Client::login(&server, "alice").await;
    let mut bob = Client::login(&server, "bob").await;
    let sid = call_in_progress(&mut alice, &mut bob).await;
    drop(bob);
    assert!(
        matches!(alice.event().await, ServerEvent::ParticipantLeft { uid, .. } if uid == "bob")
    );
    assert!(matches!(
        alice.event().await,
        ServerEvent::SessionEnded { session_id, .. } if session_id == sid
    ));
}

/// A participant whose old connection is still open (half-open after a network change) joins
/// again from a new one: the new connection takes the place and the old one is closed. A
/// signal sent to someone in their reconnect grace is held and delivered when they rejoin.
#[tokio::test]
async fn rejoin_takes_over_and_held_signals_arrive() {
    let server = TestServer::dev().await;
    let mut alice = Client::login(&server, "alice").await;
    let mut bob = Client::login(&server, "bob").await;
    let sid = call_in_progress(&mut alice, &mut bob).await;
    let mut bob_again = Client::login(&server, "bob").await;
    assert_eq!(bob_again.join(&sid).await, vec!["alice", "bob"]);
    assert_eq!(
        bob.closed().await,
        Closed::Code(1000),
        "the old connection is replaced"
    );

    drop(bob_again);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let offer = PeerSignal::Offer {
        sdp: "v=0\r\n".into(),
    };
    alice
        .request(Request::Signal {
            session_id: sid.clone(),
            to: "bob".into(),
            signal: offer.clone(),
        })
        .await
        .expect("accepted while bob reconnects");
    let mut bob_third = Client::login(&server, "bob").await;
    bob_third.join(&sid).await;
    let ServerEvent::Signal { from, signal, .. } = bob_third.event().await else {
        panic!("held signal")
    };
    assert_eq!((from.as_str(), signal), ("alice", offer));
}

/// A caller already waiting in the session of a call that gets rejected is let go at once
/// (the session ends), instead of staying busy until the idle timeout.
#[tokio::test]
async fn rejected_call_releases_a_waiting_caller() {
    let server = TestServer::dev().await;
    let mut alice = Client::login(&server, "alice").await;
    let mut bob = Client::login(&server, "bob").await;
    let sid = alice.call_user("bob").await;
    alice.join(&sid).await;
    bob.event().await;
    bob.request(Request::RejectCall {
        session_id: sid.clone(),
        status: CallStatus::Rejected,
    })
    .await
    .expect("reject");
    let mut ended = false;
    for _ in 0..2 {
        if let ServerEvent::SessionEnded { .. } = alice.event().await {
            ended = true;
        }
    }
    assert!(ended, "alice's waiting session ended");
    let _carol = Client::login(&server, "carol").await;
    let next = alice.call_user("carol").await;
    assert!(next.starts_with("call-"), "alice is free to call again");
}
