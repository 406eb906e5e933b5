//! The ringing flow: accept, reject, busy, cancel, unanswered, end by either side, auto-busy,
//! group ringing, presence, and every error code that applies.

use huddle_protocol::{CallStatus, CallType, ErrorCode, ReceiverType, Reply, Request, ServerEvent};
use huddle_server::{HubConfig, ServerConfig};

use crate::harness::*;

fn reject(session_id: &str, status: CallStatus) -> Request {
    Request::RejectCall {
        session_id: session_id.into(),
        status,
    }
}

/// Alice calls Bob: Bob's phone rings with the call; Bob accepts; Alice hears it; the call is
/// `ongoing` for both.
#[tokio::test]
async fn call_accepted() {
    let server = TestServer::dev().await;
    let mut alice = Client::login(&server, "alice").await;
    let mut bob = Client::login(&server, "bob").await;
    let sid = alice.call_user("bob").await;
    let ServerEvent::IncomingCallReceived { call } = bob.event().await else {
        panic!("ring")
    };
    assert_eq!(call.session_id, sid);
    assert_eq!(call.initiator.uid, "alice");
    assert_eq!(call.status, CallStatus::Initiated);
    let Ok(Reply::Call { call }) = bob
        .request(Request::AcceptCall {
            session_id: sid.clone(),
        })
        .await
    else {
        panic!("accept")
    };
    assert_eq!(call.status, CallStatus::Ongoing);
    let ServerEvent::OutgoingCallAccepted { call, by } = alice.event().await else {
        panic!("accepted")
    };
    assert_eq!((call.status, by.as_str()), (CallStatus::Ongoing, "bob"));
}

/// Rejected and busy answers reach the caller with their status; a cancel reaches the
/// receiver; acting on those calls afterwards gives the matching error code.
#[tokio::test]
async fn rejected_busy_and_cancelled() {
    let server = TestServer::dev().await;
    let mut alice = Client::login(&server, "alice").await;
    let mut bob = Client::login(&server, "bob").await;
    for status in [CallStatus::Rejected, CallStatus::Busy] {
        let sid = alice.call_user("bob").await;
        bob.event().await;
        bob.request(reject(&sid, status)).await.expect("reject");
        let ServerEvent::OutgoingCallRejected { call } = alice.event().await else {
            panic!("rejected")
        };
        assert_eq!(call.status, status);
        let code = bob
            .error_code(Request::AcceptCall { session_id: sid })
            .await;
        let expected = if status == CallStatus::Busy {
            ErrorCode::CallBusy
        } else {
            ErrorCode::CallRejected
        };
        assert_eq!(code, expected);
    }
    let sid = alice.call_user("bob").await;
    bob.event().await;
    alice
        .request(reject(&sid, CallStatus::Cancelled))
        .await
        .expect("cancel");
    let ServerEvent::IncomingCallCancelled { call } = bob.event().await else {
        panic!("cancelled")
    };
    assert_eq!(call.status, CallStatus::Cancelled);
    assert_eq!(
        bob.error_code(Request::AcceptCall {
            session_id: sid.clone()
        })
        .await,
        ErrorCode::CallCancelled
    );
    assert_eq!(
        bob.error_code(reject(&sid, CallStatus::Ongoing)).await,
        ErrorCode::CallCancelled,
        "the call is over before the status is even looked at"
    );
}

/// A call nobody answers becomes `unanswered` once the server's timer passes its deadline
/// (the shortest ringing timeout, 100 ms, so the test waits about one tick): the caller gets
/// it as a rejection, the receiver as a cancellation, and answering afterwards is
/// `ERR_CALL_ENDED`. (The deadline itself, to the millisecond, and the requested and capped
/// timeouts are proved without sockets by the hub's unit tests.)
#[tokio::test]
async fn unanswered_after_timeout() {
    let server = TestServer::start(ServerConfig {
        hub: HubConfig {
            dev_login: true,
            ring_timeout_ms: 100,
            ..HubConfig::default()
        },
        ..ServerConfig::default()
    })
    .await;
    let mut alice = Client::login(&server, "alice").await;
    let mut bob = Client::login(&server, "bob").await;
    let Ok(Reply::Call { call }) = alice
        .request(Request::InitiateCall {
            receiver_id: "bob".into(),
            receiver_type: ReceiverType::User,
            call_type: CallType::Audio,
            timeout_secs: None,
        })
        .await
    else {
        panic!("initiate")
    };
    assert_eq!(call.call_type, CallType::Audio);
    assert!(matches!(
        bob.event().await,
        ServerEvent::IncomingCallReceived { .. }
    ));
    let ServerEvent::OutgoingCallRejected { call: caller_view } = alice.event().await else {
        panic!()
    };
    assert_eq!(caller_view.status, CallStatus::Unanswered);
    let ServerEvent::IncomingCallCancelled {
        call: receiver_view,
    } = bob.event().await
    else {
        panic!()
    };
    assert_eq!(receiver_view.status, CallStatus::Unanswered);
    assert_eq!(
        bob.error_code(Request::AcceptCall {
            session_id: call.session_id
        })
        .await,
        ErrorCode::CallEnded
    );
}

/// Either side can end an ongoing call: the other gets `call_ended`; ending again fails with
/// `ERR_CALL_ENDED`.
#[tokio::test]
async fn end_call_by_either_side() {
    let server = TestServer::dev().await;
    let mut alice = Client::login(&server, "alice").await;
    let mut bob = Client::login(&server, "bob").await;
    for (ender_is_alice, _) in [(true, ()), (false, ())] {
        let sid = alice.call_user("bob").await;
        bob.event().await;
        bob.request(Request::AcceptCall {
            session_id: sid.clone(),
        })
        .await
        .expect("accept");
        alice.event().await;
        let (ender, other) = if ender_is_alice {
            (&mut alice, &mut bob)
        } else {
            (&mut bob, &mut alice)
        };
        let Ok(Reply::Call { call }) = ender
            .request(Request::EndCall {
                session_id: sid.clone(),
            })
            .await
        else {
            panic!("end")
        };
        assert_eq!(call.status, CallStatus::Ended);
        let ServerEvent::CallEnded { call } = other.event().await else {
            panic!("call_ended")
        };
        assert_eq!(
            (call.session_id.as_str(), call.status),
            (sid.as_str(), CallStatus::Ended)
        );
        assert_eq!(
            ender.error_code(Request::EndCall { session_id: sid }).await,
            ErrorCode::CallEnded
        );
    }
}

/// A receiver already in a call is auto-rejected with `busy` and never rings.
#[tokio::test]
async fn auto_busy_when_receiver_is_in_a_call() {
    let server = TestServer::dev().await;
    let mut carol = Client::login(&server, "carol").await;
    let mut dave = Client::login(&server, "dave").await;
    let sid = carol.call_user("dave").await;
    dave.event().await;
    dave.request(Request::AcceptCall { session_id: sid })
        .await
        .expect("accept");
    let mut alice = Client::login(&server, "alice").await;
    alice.call_user("carol").await;
    let ServerEvent::OutgoingCallRejected { call } = alice.event().await else {
        panic!("busy")
    };
    assert_eq!(call.status, CallStatus::Busy);
    carol.event().await; // dave's acceptance
    carol.no_event_for(300).await;
}

/// The error codes of the ringing flow, each where it applies.
#[tokio::test]
async fn ringing_error_codes() {
    let server = TestServer::dev().await;
    let mut anon = Client::connect(&server).await;
    let code = anon
        .error_code(Request::InitiateCall {
            receiver_id: "bob".into(),
            receiver_type: ReceiverType::User,
            call_type: CallType::Video,
            timeout_secs: None,
        })
        .await;
    assert_eq!(code, ErrorCode::UserNotLoggedIn);
    assert_eq!(
        anon.error_code(Request::ListCallLogs {
            query: Default::default()
        })
        .await,
        ErrorCode::UserNotLoggedIn
    );

    let mut alice = Client::login(&server, "alice").await;
    let mut bob = Client::login(&server, "bob").await;
    let _carol = Client::login(&server, "carol").await;
    let call = |to: &str| Request::InitiateCall {
        receiver_id: to.into(),
        receiver_type: ReceiverType::User,
        call_type: CallType::Video,
        timeout_secs: None,
    };
    assert_eq!(
        alice.error_code(call("alice")).await,
        ErrorCode::CallingSelf
    );
    assert_eq!(
        alice.error_code(call("nobody-here")).await,
        ErrorCode::ApiError
    );
    assert_eq!(
        alice.error_code(call("bad id!")).await,
        ErrorCode::InvalidArgument
    );
    let sid = alice.call_user("bob").await;
    assert_eq!(
        alice.error_code(call("carol")).await,
        ErrorCode::CallAlreadyInitiated
    );
    bob.event().await;
    assert_eq!(
        alice
            .error_code(Request::AcceptCall {
                session_id: sid.clone()
            })
            .await,
        ErrorCode::CallNotFound
    );
    bob.request(Request::AcceptCall {
        session_id: sid.clone(),
    })
    .await
    .expect("accept");
    assert_eq!(
        bob.error_code(Request::AcceptCall {
            session_id: sid.clone()
        })
        .await,
        ErrorCode::CallAlreadyJoined
    );
    assert_eq!(
        alice.error_code(call("carol")).await,
        ErrorCode::CallInProgress
    );
    assert_eq!(
        bob.error_code(Request::AcceptCall {
            session_id: "call-0000".into()
        })
        .await,
        ErrorCode::CallNotFound
    );
    assert_eq!(
        bob.error_code(Request::AcceptCall {
            session_id: "no spaces/allowed".into()
        })
        .await,
        ErrorCode::InvalidSessionId
    );
    assert_eq!(
        bob.error_code(Request::RejectCall {
            session_id: sid,
            status: CallStatus::Ended
        })
        .await,
        ErrorCode::InvalidArgument
    );
}

/// A group call rings every online member but the caller; it goes on as members accept and
/// join; it ends when the last one leaves. A member who logs in while it rings is rung too.
/// Logging in lists the groups one belongs to, with their members.
#[tokio::test]
async fn three_member_group_call() {
    let server = TestServer::dev().await;
    for uid in ["alice", "bob", "carol"] {
        let body = format!(r#"{{"name":"{}"}}"#, uid.to_uppercase());
        let (status, _) = http(
            server.addr,
            "PUT",
            &format!("/api/users/{uid}"),
            Some("admin-key"),
            Some(&body),
        )
        .await;
        assert_eq!(status, 200);
    }
    let (status, _) = http(
        server.addr,
        "PUT",
        "/api/groups/team",
        Some("admin-key"),
        Some(r#"{"name":"Team","members":["alice","bob","carol"]}"#),
    )
    .await;
    assert_eq!(status, 200);
    let mut alice = Client::login(&server, "alice").await;
    let mut bob = Client::login(&server, "bob").await;
    assert_eq!(
        alice.groups,
        vec![huddle_protocol::GroupInfo {
            guid: "team".into(),
            name: "Team".into(),
            members: vec!["alice".into(), "bob".into(), "carol".into()],
        }],
        "the login answer lists alice's groups"
    );
    let Ok(Reply::Call { call }) = alice
        .request(Request::InitiateCall {
            receiver_id: "team".into(),
            receiver_type: ReceiverType::Group,
            call_type: CallType::Video,
            timeout_secs: None,
        })
        .await
    else {
        panic!("group call")
    };
    let sid = call.session_id;
    bob.event_where("ring", |e| {
        matches!(e, ServerEvent::IncomingCallReceived { .. })
    })
    .await;
    let mut carol = Client::login(&server, "carol").await;
    let ServerEvent::IncomingCallReceived { call } = carol
        .event_where("ring", |e| {
            matches!(e, ServerEvent::IncomingCallReceived { .. })
        })
        .await
    else {
        unreachable!()
    };
    assert_eq!(call.receiver_type, ReceiverType::Group);

    bob.request(Request::AcceptCall {
        session_id: sid.clone(),
    })
    .await
    .expect("bob accepts");
    alice
        .event_where(
            "accepted",
            |e| matches!(e, ServerEvent::OutgoingCallAccepted { by, .. } if by == "bob"),
        )
        .await;
    assert_eq!(alice.join(&sid).await, vec!["alice"]);
    assert_eq!(bob.join(&sid).await, vec!["alice", "bob"]);
    assert_eq!(
        carol.join(&sid).await,
        vec!["alice", "bob", "carol"],
        "joining a ringing group call accepts it"
    );
    alice.event_where("bob joined", |e| matches!(e, ServerEvent::ParticipantJoined { participant, .. } if participant.uid == "bob")).await;
    alice
        .event_where(
            "carol accepted",
            |e| matches!(e, ServerEvent::OutgoingCallAccepted { by, .. } if by == "carol"),
        )
        .await;
    alice.event_where("carol joined", |e| matches!(e, ServerEvent::ParticipantJoined { participant, .. } if participant.uid == "carol")).await;
    bob.event_where("carol joined", |e| matches!(e, ServerEvent::ParticipantJoined { participant, .. } if participant.uid == "carol")).await;

    bob.request(Request::LeaveSession {
        session_id: sid.clone(),
    })
    .await
    .expect("leave");
    alice
        .event_where(
            "bob left",
            |e| matches!(e, ServerEvent::ParticipantLeft { uid, .. } if uid == "bob"),
        )
        .await;
    carol
        .event_where(
            "bob left",
            |e| matches!(e, ServerEvent::ParticipantLeft { uid, .. } if uid == "bob"),
        )
        .await;
    alice
        .request(Request::LeaveSession {
            session_id: sid.clone(),
        })
        .await
        .expect("leave");
    carol
        .event_where(
            "alice left",
            |e| matches!(e, ServerEvent::ParticipantLeft { uid, .. } if uid == "alice"),
        )
        .await;
    carol.no_event_for(200).await;
    carol
        .request(Request::LeaveSession {
            session_id: sid.clone(),
        })
        .await
        .expect("last one leaves");
    assert_eq!(
        bob.error_code(Request::AcceptCall { session_id: sid })
            .await,
        ErrorCode::CallEnded
    );
}

/// Contacts (members of a shared group) see each other come online and go offline.
#[tokio::test]
async fn presence_is_pushed_to_contacts() {
    let server = TestServer::start(ServerConfig {
        hub: HubConfig {
            dev_login: true,
            ..HubConfig::default()
        },
        api_key: Some("admin-key".into()),
        ..ServerConfig::default()
    })
    .await;
    let mut alice = Client::login(&server, "alice").await;
    let bob = Client::login(&server, "bob").await;
    http(
        server.addr,
        "PUT",
        "/api/groups/pair",
        Some("admin-key"),
        Some(r#"{"name":"Pair","members":["alice","bob"]}"#),
    )
    .await;
    drop(bob);
    let ServerEvent::Presence(p) = alice.event().await else {
        panic!("presence")
    };
    assert_eq!((p.user.uid.as_str(), p.online), ("bob", false));
    let _bob = Client::login(&server, "bob").await;
    let ServerEvent::Presence(p) = alice.event().await else {
        panic!("presence")
    };
    assert_eq!((p.user.uid.as_str(), p.online), ("bob", true));
}

/// With a dev lobby, everyone who logs in by uid joins the lobby group: a later user lists
/// the earlier one as an online contact and the lobby among their groups, and the earlier
/// one is told the newcomer came online.
#[tokio::test]
async fn dev_lobby_makes_everyone_a_contact() {
    let mut config = dev_config();
    config.hub.dev_lobby = Some("lobby".into());
    let server = TestServer::start(config).await;
    let mut alice = Client::login(&server, "alice").await;
    let mut bob = Client::connect(&server).await;
    let Ok(Reply::LoggedIn {
        contacts, groups, ..
    }) = bob
        .request(Request::Login {
            uid: "bob".into(),
            auth_token: None,
            name: Some("Bob".into()),
        })
        .await
    else {
        panic!("bob logs in")
    };
    assert_eq!(
        contacts
            .iter()
            .map(|p| (p.user.uid.as_str(), p.online))
            .collect::<Vec<_>>(),
        vec![("alice", true)]
    );
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0].guid, "lobby");
    assert_eq!(
        groups[0].members,
        vec!["alice".to_owned(), "bob".to_owned()]
    );
    let ServerEvent::Presence(presence) = alice
        .event_where("bob online", |e| matches!(e, ServerEvent::Presence(_)))
        .await
    else {
        unreachable!()
    };
    assert_eq!((presence.user.uid.as_str(), presence.online), ("bob", true));
    assert_eq!(presence.user.name, "Bob");
}
