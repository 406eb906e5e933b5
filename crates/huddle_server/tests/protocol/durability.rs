//! Call logs: durable across a restart with the same `--db`, listed with filters and
//! pagination; graceful shutdown ends in-flight calls with a reason and closes their logs.

use huddle_protocol::{
    CallDirection, CallLogQuery, CallStatus, CallType, ReceiverType, Reply, Request, ServerEvent,
    SessionEndReason,
};
use huddle_server::{HubConfig, ServerConfig};

use crate::harness::*;

fn config_with_db(path: &std::path::Path) -> ServerConfig {
    ServerConfig {
        db: Some(path.to_owned()),
        api_key: Some("admin-key".into()),
        hub: HubConfig {
            dev_login: true,
            ..HubConfig::default()
        },
        ..ServerConfig::default()
    }
}

async fn logs(client: &mut Client, query: CallLogQuery) -> (Vec<huddle_protocol::CallLog>, u64) {
    match client.request(Request::ListCallLogs { query }).await {
        Ok(Reply::CallLogs { logs, total }) => (logs, total),
        other => panic!("logs: {other:?}"),
    }
}

/// Calls made before a shutdown are listed after a restart on the same database file, with
/// their final statuses; an in-flight call at shutdown was ended with a reason (clients got
/// `session_ended` with `server_shutdown` and a 1001 close) and its log is closed.
#[tokio::test]
async fn logs_survive_restart_and_shutdown_ends_calls() {
    let dir = std::env::temp_dir().join(format!("huddle-db-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let db = dir.join("huddle.db");
    let _ = std::fs::remove_file(&db);

    let server = TestServer::start(config_with_db(&db)).await;
    let mut alice = Client::login(&server, "alice").await;
    let mut bob = Client::login(&server, "bob").await;
    let rejected = alice.call_user("bob").await;
    bob.event().await;
    bob.request(Request::RejectCall {
        session_id: rejected.clone(),
        status: CallStatus::Rejected,
    })
    .await
    .expect("reject");
    alice.event().await;
    let ongoing = alice.call_user("bob").await;
    bob.event().await;
    bob.request(Request::AcceptCall {
        session_id: ongoing.clone(),
    })
    .await
    .expect("accept");
    alice.event().await;
    alice.join(&ongoing).await;
    bob.join(&ongoing).await;
    server.stop().await;
    assert!(matches!(
        bob.event().await,
        ServerEvent::SessionEnded {
            reason: SessionEndReason::ServerShutdown,
            ..
        }
    ));
    assert_eq!(bob.closed().await, Closed::Code(1001));

    let server = TestServer::start(config_with_db(&db)).await;
    let mut alice = Client::login(&server, "alice").await;
    let (entries, total) = logs(&mut alice, CallLogQuery::default()).await;
    assert_eq!(total, 2);
    assert_eq!(entries[0].session_id, ongoing, "newest first");
    assert_eq!(entries[0].status, CallStatus::Ended);
    assert!(entries[0].ended_at.is_some());
    assert_eq!(
        entries[0].participants,
        vec!["alice".to_owned(), "bob".to_owned()]
    );
    assert_eq!(entries[1].session_id, rejected);
    assert_eq!(entries[1].status, CallStatus::Rejected);
    assert_eq!(entries[1].direction, Some(CallDirection::Outgoing));
    server.stop().await;
    std::fs::remove_dir_all(&dir).ok();
}

/// Filters (type, status, direction, uid, guid, has_recording) and pagination.
#[tokio::test]
async fn call_log_filters_and_pages() {
    let server = TestServer::dev().await;
    let mut alice = Client::login(&server, "alice").await;
    let mut bob = Client::login(&server, "bob").await;
    let mut carol = Client::login(&server, "carol").await;
    // alice → bob audio (rejected), bob → alice video (cancelled), alice → carol video
    // (accepted, joined, recorded, ended).
    let audio = |to: &str| Request::InitiateCall {
        receiver_id: to.into(),
        receiver_type: ReceiverType::User,
        call_type: CallType::Audio,
        timeout_secs: None,
    };
    let Ok(Reply::Call { call }) = alice.request(audio("bob")).await else {
        panic!()
    };
    bob.event().await;
    bob.request(Request::RejectCall {
        session_id: call.session_id,
        status: CallStatus::Rejected,
    })
    .await
    .expect("reject");
    alice.event().await;
    let sid = bob.call_user("alice").await;
    alice.event().await;
    bob.request(Request::RejectCall {
        session_id: sid,
        status: CallStatus::Cancelled,
    })
    .await
    .expect("cancel");
    alice.event().await;
    let sid = alice.call_user("carol").await;
    carol.event().await;
    carol
        .request(Request::AcceptCall {
            session_id: sid.clone(),
        })
        .await
        .expect("accept");
    alice.event().await;
    alice.join(&sid).await;
    carol.join(&sid).await;
    alice
        .request(Request::State {
            session_id: sid.clone(),
            change: huddle_protocol::StateChange::Recording(true),
        })
        .await
        .expect("record");
    alice
        .request(Request::EndCall {
            session_id: sid.clone(),
        })
        .await
        .expect("end");

    let q = |f: fn(&mut CallLogQuery)| {
        let mut query = CallLogQuery::default();
        f(&mut query);
        query
    };
    assert_eq!(logs(&mut alice, CallLogQuery::default()).await.1, 3);
    assert_eq!(
        logs(&mut alice, q(|q| q.call_type = Some(CallType::Audio)))
            .await
            .1,
        1
    );
    assert_eq!(
        logs(&mut alice, q(|q| q.status = Some(CallStatus::Cancelled)))
            .await
            .1,
        1
    );
    assert_eq!(
        logs(
            &mut alice,
            q(|q| q.direction = Some(CallDirection::Incoming))
        )
        .await
        .1,
        1
    );
    assert_eq!(
        logs(
            &mut alice,
            q(|q| q.direction = Some(CallDirection::Outgoing))
        )
        .await
        .1,
        2
    );
    assert_eq!(
        logs(&mut alice, q(|q| q.uid = Some("carol".into())))
            .await
            .1,
        1
    );
    let (recorded, n) = logs(&mut alice, q(|q| q.has_recording = Some(true))).await;
    assert_eq!((n, recorded[0].session_id.as_str()), (1, sid.as_str()));
    assert_eq!(
        logs(&mut bob, CallLogQuery::default()).await.1,
        2,
        "bob sees only his calls"
    );
    let (page1, total) = logs(&mut alice, q(|q| q.per_page = 2)).await;
    let (page2, _) = logs(
        &mut alice,
        q(|q| {
            q.per_page = 2;
            q.page = 2;
        }),
    )
    .await;
    assert_eq!((total, page1.len(), page2.len()), (3, 2, 1));
    assert!(
        page1
            .iter()
            .all(|a| page2.iter().all(|b| a.session_id != b.session_id))
    );
    let (status, body) = http(
        server.addr,
        "GET",
        "/api/call_logs?has_recording=true",
        Some("admin-key"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let admin: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(admin["total"], 1);
    let _ = CallType::Video;
}
