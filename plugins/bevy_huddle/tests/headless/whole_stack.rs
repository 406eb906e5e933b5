//! Whole-stack tests: a real server on 127.0.0.1:0 in-process and headless Bevy apps as
//! clients, each with its own `ServerConnection`: ringing, tokens, sessions, state relayed
//! between apps, a connection dropped mid-call, a server that goes away, and forged tokens.

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bevy::prelude::*;
use bevy_huddle::HuddleRuntime;
use bevy_huddle::net::connection::ConnectionLink;
use bevy_huddle::prelude::*;
use huddle_client::Backoff;
use huddle_protocol::{CallStatus, CallType, ReceiverType};
use huddle_server::{HubConfig, ServerConfig};
use tokio::sync::oneshot;

use crate::harness::*;

/// Every ringing event an observer saw.
#[derive(Resource, Default)]
pub(crate) struct RingingLog(Vec<RingingEvent>);

/// An in-process server on its own tokio runtime.
pub(crate) struct Stack {
    runtime: tokio::runtime::Runtime,
    url: String,
    stop: Option<oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<()>>,
}

impl Stack {
    pub(crate) fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let config = ServerConfig {
            hub: HubConfig {
                dev_login: true,
                ..HubConfig::default()
            },
            ..ServerConfig::default()
        };
        let server = runtime.block_on(huddle_server::bind(config)).expect("bind");
        let url = format!("ws://{}/ws", server.local_addr());
        let (stop, stopped) = oneshot::channel::<()>();
        let done = runtime.spawn(async move {
            let _ = server
                .serve_until(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        Self {
            runtime,
            url,
            stop: Some(stop),
            done: Some(done),
        }
    }

    pub(crate) fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(done) = self.done.take() {
            let _ = self.runtime.block_on(done);
        }
    }

    /// A headless app logged in as `uid`.
    pub(crate) fn user(&self, uid: &str, backoff: Backoff) -> App {
        let mut app = app();
        self.connect(&mut app, uid, backoff);
        app
    }

    /// Logs `app` (which has Huddle's plugins) in as `uid`.
    pub(crate) fn connect(&self, app: &mut App, uid: &str, backoff: Backoff) {
        app.insert_resource(HuddleRuntime::from(self.runtime.handle().clone()))
            .init_resource::<RingingLog>()
            .add_observer(|event: On<RingingEvent>, mut log: ResMut<RingingLog>| {
                log.0.push(event.event().clone())
            });
        app.world_mut()
            .spawn(ServerConnection::dev(self.url.clone(), uid).with_backoff(backoff));
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.stop();
    }
}

pub(crate) fn fast_backoff() -> Backoff {
    Backoff {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(200),
        give_up_after: Duration::from_secs(1),
    }
}

/// Updates every app until `done` holds (real time: the network is real), or fails after 10 s.
pub(crate) fn pump(apps: &mut [&mut App], what: &str, done: impl FnMut(&mut [&mut App]) -> bool) {
    pump_for(apps, what, Duration::from_secs(10), done);
}

/// [`pump`] with its own time limit.
pub(crate) fn pump_for(
    apps: &mut [&mut App],
    what: &str,
    limit: Duration,
    mut done: impl FnMut(&mut [&mut App]) -> bool,
) {
    let deadline = Instant::now() + limit;
    loop {
        for app in apps.iter_mut() {
            app.update();
        }
        if done(apps) {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

pub(crate) fn status(app: &mut App) -> ConnectionStatus {
    let mut q = app.world_mut().query::<&ConnectionStatus>();
    q.iter(app.world()).next().cloned().expect("connection")
}

pub(crate) fn online(app: &mut App) -> bool {
    matches!(status(app), ConnectionStatus::Online { .. })
}

pub(crate) fn ringing(app: &App) -> &[RingingEvent] {
    &app.world().resource::<RingingLog>().0
}

pub(crate) fn find_ringing<T>(app: &App, f: impl Fn(&RingingEvent) -> Option<T>) -> Option<T> {
    ringing(app).iter().find_map(f)
}

pub(crate) fn active_call(app: &App) -> Option<Entity> {
    app.world().resource::<ActiveCall>().0
}

pub(crate) fn call_state(app: &App) -> Option<CallState> {
    active_call(app).and_then(|c| app.world().get::<CallState>(c).cloned())
}

pub(crate) fn members(app: &App) -> usize {
    active_call(app)
        .and_then(|c| app.world().get::<CallParticipants>(c))
        .map_or(0, |m| m.len())
}

/// Asks the server for a call token for `session_id` and waits for it.
pub(crate) fn token_for(app: &mut App, session_id: &str) -> String {
    app.world_mut().write_message(RingingAction::GenerateToken {
        session_id: session_id.into(),
    });
    let mut token = String::new();
    pump(&mut [app], "a call token", |apps| {
        find_ringing(apps[0], |e| match e {
            RingingEvent::TokenGenerated {
                session_id: sid,
                call_token,
            } if sid == session_id => Some(call_token.clone()),
            _ => None,
        })
        .map(|t| token = t)
        .is_some()
    });
    token
}

/// Rings bob from alice, bob accepts, both get tokens and start the session; returns the
/// session id once both apps are in the call with two participants.
pub(crate) fn call_and_join(alice: &mut App, bob: &mut App) -> String {
    call_and_join_with(alice, bob, CallSettings::default())
}

/// [`call_and_join`] with these call settings on both sides.
pub(crate) fn call_and_join_with(alice: &mut App, bob: &mut App, settings: CallSettings) -> String {
    pump(&mut [alice, bob], "login", |apps| {
        apps.iter_mut().all(|a| online(a))
    });
    alice
        .world_mut()
        .write_message(RingingAction::InitiateCall {
            receiver_id: "bob".into(),
            receiver_type: ReceiverType::User,
            call_type: CallType::Video,
            timeout_secs: None,
        });
    let mut session_id = String::new();
    pump(&mut [alice, bob], "bob's phone to ring", |apps| {
        find_ringing(apps[1], |e| match e {
            RingingEvent::IncomingCallReceived { call } => Some(call.session_id.clone()),
            _ => None,
        })
        .map(|sid| session_id = sid)
        .is_some()
    });
    pump(&mut [alice, bob], "alice's call to be placed", |apps| {
        find_ringing(apps[0], |e| {
            matches!(e, RingingEvent::CallInitiated { .. }).then_some(())
        })
        .is_some()
    });
    bob.world_mut().write_message(RingingAction::AcceptCall {
        session_id: session_id.clone(),
    });
    pump(&mut [alice, bob], "alice to hear the accept", |apps| {
        find_ringing(apps[0], |e| {
            matches!(e, RingingEvent::OutgoingCallAccepted { by, .. } if by == "bob").then_some(())
        })
        .is_some()
    });
    for app in [&mut *alice, &mut *bob] {
        app.world_mut().write_message(RingingAction::GenerateToken {
            session_id: session_id.clone(),
        });
    }
    pump(&mut [alice, bob], "tokens", |apps| {
        apps.iter().all(|a| {
            find_ringing(a, |e| {
                matches!(e, RingingEvent::TokenGenerated { .. }).then_some(())
            })
            .is_some()
        })
    });
    for app in [&mut *alice, &mut *bob] {
        let call_token = find_ringing(app, |e| match e {
            RingingEvent::TokenGenerated { call_token, .. } => Some(call_token.clone()),
            _ => None,
        })
        .expect("token");
        app.world_mut().write_message(StartSession {
            call_token,
            settings: settings.clone(),
            target: None,
        });
    }
    pump(&mut [alice, bob], "both in the call", |apps| {
        apps.iter()
            .all(|a| call_state(a) == Some(CallState::InCall) && members(a) == 2)
    });
    session_id
}

/// Ring → accept → tokens → start session, between two headless apps through a real server;
/// a mute in one app shows in the other (`UserMuted`); ending in one ends the other's call
/// with `CallEnded`.
#[test]
fn two_apps_ring_join_mute_and_end() {
    let stack = Stack::start();
    let mut alice = stack.user("alice", Backoff::default());
    let mut bob = stack.user("bob", Backoff::default());
    call_and_join(&mut alice, &mut bob);
    let bob_call = active_call(&bob).expect("call");
    assert!(
        !bob.world().get::<Call>(bob_call).expect("call").is_group,
        "a 1:1 call"
    );
    take_events(&mut bob);

    act(&mut alice, CallAction::MuteAudio(true));
    pump(
        &mut [&mut alice, &mut bob],
        "bob to see alice muted",
        |apps| state_of(apps[1], "alice").audio_muted,
    );
    assert!(take_events(&mut bob).iter().any(|e| matches!(
        e,
        CallEvent::UserMuted { user, muted: true, muted_by, .. } if user.uid == "alice" && muted_by == "alice"
    )));

    act(&mut bob, CallAction::EndSession);
    pump(&mut [&mut alice, &mut bob], "alice's call to end", |apps| {
        call_state(apps[0]).is_some_and(|s| s.is_ended())
    });
    assert_eq!(
        call_state(&alice),
        Some(CallState::Ended {
            reason: EndReason::RemoteHangUp
        })
    );
    assert!(
        take_events(&mut alice)
            .iter()
            .any(|e| matches!(e, CallEvent::CallEnded { .. }))
    );
    assert!(
        take_events(&mut bob)
            .iter()
            .any(|e| matches!(e, CallEvent::CallEndButtonPressed { .. }))
    );

    // The call log, asked through the ECS.
    alice
        .world_mut()
        .write_message(RingingAction::ListCallLogs {
            query: Default::default(),
        });
    pump(&mut [&mut alice, &mut bob], "call logs", |apps| {
        find_ringing(apps[0], |e| {
            matches!(e, RingingEvent::CallLogs { .. }).then_some(())
        })
        .is_some()
    });
    let (logs, total) = find_ringing(&alice, |e| match e {
        RingingEvent::CallLogs { logs, total } => Some((logs.clone(), *total)),
        _ => None,
    })
    .expect("logs");
    assert_eq!(total, 1);
    assert_eq!(logs[0].status, CallStatus::Ended);
    assert_eq!(
        logs[0].participants,
        vec!["alice".to_owned(), "bob".to_owned()]
    );
}

/// Plain Rust listeners get the ringing events too, the same ones observers see.
#[test]
fn ringing_listeners_hear_the_ringing_flow() {
    let stack = Stack::start();
    let mut alice = stack.user("alice", Backoff::default());
    let mut bob = stack.user("bob", Backoff::default());
    let heard = std::sync::Arc::new(std::sync::Mutex::new(Vec::<RingingEvent>::new()));
    let sink = heard.clone();
    bob.add_ringing_listener("phone", move |event: &RingingEvent| {
        sink.lock().expect("log").push(event.clone())
    });
    pump(&mut [&mut alice, &mut bob], "login", |apps| {
        apps.iter_mut().all(|a| online(a))
    });
    alice
        .world_mut()
        .write_message(RingingAction::InitiateCall {
            receiver_id: "bob".into(),
            receiver_type: ReceiverType::User,
            call_type: CallType::Video,
            timeout_secs: None,
        });
    pump(&mut [&mut alice, &mut bob], "bob's phone to ring", |apps| {
        find_ringing(apps[1], |e| {
            matches!(e, RingingEvent::IncomingCallReceived { .. }).then_some(())
        })
        .is_some()
    });
    let heard = heard.lock().expect("log").clone();
    assert_eq!(
        heard,
        ringing(&bob).to_vec(),
        "listener and observer saw the same events"
    );
    assert!(matches!(heard[0], RingingEvent::LoggedIn { .. }));
}

/// A rejected call reaches the caller's app as `OutgoingCallRejected` with status rejected.
#[test]
fn rejected_call_reaches_the_caller() {
    let stack = Stack::start();
    let mut alice = stack.user("alice", Backoff::default());
    let mut bob = stack.user("bob", Backoff::default());
    pump(&mut [&mut alice, &mut bob], "login", |apps| {
        apps.iter_mut().all(|a| online(a))
    });
    alice
        .world_mut()
        .write_message(RingingAction::InitiateCall {
            receiver_id: "bob".into(),
            receiver_type: ReceiverType::User,
            call_type: CallType::Audio,
            timeout_secs: None,
        });
    let mut sid = String::new();
    pump(&mut [&mut alice, &mut bob], "ring", |apps| {
        find_ringing(apps[1], |e| match e {
            RingingEvent::IncomingCallReceived { call } => Some(call.session_id.clone()),
            _ => None,
        })
        .map(|s| sid = s)
        .is_some()
    });
    bob.world_mut().write_message(RingingAction::RejectCall {
        session_id: sid,
        status: CallStatus::Rejected,
    });
    pump(&mut [&mut alice, &mut bob], "rejection", |apps| {
        find_ringing(apps[0], |e| matches!(e, RingingEvent::OutgoingCallRejected { call } if call.status == CallStatus::Rejected).then_some(())).is_some()
    });
}

/// The connection drops mid-call: the app reconnects, logs in again, rejoins the session, and
/// the call carries on (state still relayed); the other side never saw anyone leave.
#[test]
fn reconnect_during_a_call_keeps_it() {
    let stack = Stack::start();
    let mut alice = stack.user("alice", fast_backoff());
    let mut bob = stack.user("bob", Backoff::default());
    call_and_join(&mut alice, &mut bob);
    take_events(&mut bob);
    let mut links = alice.world_mut().query::<&ConnectionLink>();
    links
        .iter(alice.world())
        .next()
        .expect("link")
        .drop_connection();
    pump(&mut [&mut alice, &mut bob], "alice to reconnect", |apps| {
        find_ringing(apps[0], |e| {
            matches!(
                e,
                RingingEvent::LoggedIn {
                    reconnected: true,
                    ..
                }
            )
            .then_some(())
        })
        .is_some()
            && online(apps[0])
    });
    assert!(
        find_ringing(&alice, |e| matches!(e, RingingEvent::ConnectionLost { .. })
            .then_some(()))
        .is_some()
    );
    act(&mut alice, CallAction::RaiseHand);
    pump(
        &mut [&mut alice, &mut bob],
        "bob to see alice's hand",
        |apps| state_of(apps[1], "alice").hand_raised,
    );
    assert_eq!(call_state(&alice), Some(CallState::InCall));
    assert_eq!((members(&alice), members(&bob)), (2, 2));
    assert!(
        !take_events(&mut bob)
            .iter()
            .any(|e| matches!(e, CallEvent::UserLeft { .. }))
    );
}

/// When the server shuts down, the call ends with `ServerShutdown`; with the server gone for
/// longer than the backoff allows, the client gives up with `UNKNOWN_API_ERROR`.
#[test]
fn server_gone_ends_the_call_with_connection_lost() {
    let mut stack = Stack::start();
    let mut alice = stack.user("alice", fast_backoff());
    pump(&mut [&mut alice], "login", |apps| online(apps[0]));
    let token = token_for(&mut alice, "room");
    alice.world_mut().write_message(StartSession {
        call_token: token,
        settings: CallSettings::default(),
        target: None,
    });
    pump(&mut [&mut alice], "joined", |apps| {
        call_state(apps[0]) == Some(CallState::InCall)
    });
    take_events(&mut alice);
    stack.stop();
    pump(&mut [&mut alice], "the call to end", |apps| {
        call_state(apps[0]).is_some_and(|s| s.is_ended())
    });
    let state = call_state(&alice).expect("state");
    assert!(
        matches!(
            state,
            CallState::Ended {
                reason: EndReason::ServerShutdown
            }
        ),
        "the server says why before it goes: {state:?}"
    );
    pump(&mut [&mut alice], "the client to give up", |apps| {
        matches!(status(apps[0]), ConnectionStatus::Offline { .. })
    });
    let ConnectionStatus::Offline { error } = status(&mut alice) else {
        unreachable!()
    };
    assert_eq!(error.code(), ErrorCode::UnknownApiError);
}

/// A tampered call token is refused by the server (`AUTH_ERR_TOKEN_INVALID_SIGNATURE`) and the
/// call ends as failed; an unreadable one is refused before it is sent.
#[test]
fn forged_and_garbage_tokens() {
    let stack = Stack::start();
    let mut alice = stack.user("alice", Backoff::default());
    pump(&mut [&mut alice], "login", |apps| online(apps[0]));
    let token = token_for(&mut alice, "room");
    let parts: Vec<&str> = token.split('.').collect();
    let mut claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("b64")).expect("json");
    claims["sub"] = "alice".into();
    claims["exp"] = (u32::MAX).into();
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).expect("json")),
        parts[2]
    );
    take_events(&mut alice);
    alice.world_mut().write_message(StartSession {
        call_token: forged,
        settings: CallSettings::default(),
        target: None,
    });
    pump(&mut [&mut alice], "refusal", |apps| {
        call_state(apps[0]).is_some_and(|s| s.is_ended())
    });
    assert!(
        matches!(
            call_state(&alice),
            Some(CallState::Ended {
                reason: EndReason::Failed {
                    code: ErrorCode::TokenInvalidSignature,
                    ..
                }
            })
        ),
        "{:?}",
        call_state(&alice)
    );
    assert!(error_codes(&take_events(&mut alice)).contains(&ErrorCode::TokenInvalidSignature));

    alice.world_mut().write_message(StartSession {
        call_token: "garbage".into(),
        settings: CallSettings::default(),
        target: None,
    });
    alice.update();
    alice.update();
    assert_eq!(
        error_codes(&take_events(&mut alice)),
        vec![ErrorCode::TokenInvalidSignature]
    );
}
