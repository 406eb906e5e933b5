//! Sans-IO tests of the [`Hub`]: a hub over an in-memory [`Store`], driven with frames and
//! made-up times (never the clock, never a socket, never a sleep). Each test asserts on what
//! the hub queued ([`Hub::drain`]) and on the call logs in its store.
//!
//! The socket-level tests in `tests/protocol/` keep one test per timeout path, to prove that
//! [`Hub::tick`] is driven by real time; the boundaries (nothing one millisecond before, the
//! right frames at the deadline) are proved here.

use huddle_protocol::{
    Call, CallLog, CallLogQuery, CallStatus, CallType, ClientFrame, ErrorBody, ErrorCode,
    PeerSignal, ReceiverType, Reply, Request, ServerEvent, ServerFrame, ServerPayload,
    SessionEndReason, SimulcastLayer, StateChange,
};

use super::{ConnId, Hub, HubConfig, InternalError, Out, RandomnessError};
use crate::sfu::{SFU_PUBLISH_PEER, SFU_SUBSCRIBE_PEER, SfuCommand, SfuLeg, SfuNews};
use crate::store::{Store, StoreError};

/// A made-up "now" (2023-11-14T22:13:20Z) in ms since the epoch: a whole second, so that
/// call tokens (which count whole seconds) expire exactly on a millisecond boundary.
const T0: u64 = 1_700_000_000_000;

const ALICE: ConnId = 1;
const BOB: ConnId = 2;
const CAROL: ConnId = 3;
/// Bob's second connection, after his first one dropped.
const BOB_AGAIN: ConnId = 4;

/// A hub with dev login over an in-memory store, and the auth tokens of who logged in.
struct Harness {
    hub: Hub,
    next_id: u64,
    auth_tokens: std::collections::HashMap<ConnId, String>,
}

impl Harness {
    fn new(config: HubConfig) -> Self {
        Self::with_store(Store::in_memory().expect("in-memory store"), config)
    }

    /// A hub over `store` (a file, to test restarts).
    fn with_store(store: Store, config: HubConfig) -> Self {
        let hub = Hub::new(
            store,
            HubConfig {
                dev_login: true,
                ..config
            },
        )
        .expect("hub");
        Self {
            hub,
            next_id: 0,
            auth_tokens: Default::default(),
        }
    }

    /// Sends `request` on `conn` at `now`; returns its answer and everything else queued.
    fn request(
        &mut self,
        conn: ConnId,
        request: Request,
        now: u64,
    ) -> (Result<Reply, ErrorBody>, Vec<Out>) {
        self.next_id += 1;
        let id = self.next_id;
        let frame = ClientFrame {
            v: huddle_protocol::PROTOCOL_VERSION,
            id: Some(id),
            request,
        };
        self.hub.handle(conn, frame, now);
        let mut outs = self.hub.drain();
        let position = outs
            .iter()
            .position(|out| matches!(out, Out::Send(c, f) if *c == conn && f.re == Some(id)))
            .expect("the request is answered");
        let Out::Send(_, answer) = outs.remove(position) else {
            unreachable!("found above")
        };
        let answer = match answer.payload {
            ServerPayload::Reply(reply) => Ok(reply),
            ServerPayload::Error { error, .. } => Err(error),
            ServerPayload::Event(event) => panic!("an event as an answer: {event:?}"),
        };
        (answer, outs)
    }

    /// [`Self::request`] that must succeed; what else was queued is dropped.
    fn ok(&mut self, conn: ConnId, request: Request, now: u64) -> Reply {
        match self.request(conn, request, now).0 {
            Ok(reply) => reply,
            Err(error) => panic!("refused: {error:?}"),
        }
    }

    /// The error code of a request that must fail.
    fn error_code(&mut self, conn: ConnId, request: Request, now: u64) -> ErrorCode {
        match self.request(conn, request, now).0 {
            Ok(reply) => panic!("expected an error, got {reply:?}"),
            Err(error) => error.code,
        }
    }

    /// Connects `conn` and logs `uid` in (dev login).
    fn login(&mut self, conn: ConnId, uid: &str, now: u64) {
        self.hub.connect(conn);
        let Reply::LoggedIn { auth_token, .. } = self.ok(
            conn,
            Request::Login {
                uid: uid.into(),
                auth_token: None,
                name: None,
            },
            now,
        ) else {
            panic!("login")
        };
        self.auth_tokens.insert(conn, auth_token);
    }

    /// `conn` calls user `receiver`; returns the call as placed.
    fn call(&mut self, conn: ConnId, receiver: &str, timeout_secs: Option<u32>, now: u64) -> Call {
        let request = Request::InitiateCall {
            receiver_id: receiver.into(),
            receiver_type: ReceiverType::User,
            call_type: CallType::Video,
            timeout_secs,
        };
        match self.ok(conn, request, now) {
            Reply::Call { call } => call,
            other => panic!("initiate: {other:?}"),
        }
    }

    /// A call token for `conn` and `session_id`.
    fn token(&mut self, conn: ConnId, session_id: &str, now: u64) -> String {
        let auth_token = self.auth_tokens[&conn].clone();
        let request = Request::GenerateToken {
            session_id: session_id.into(),
            auth_token,
        };
        match self.ok(conn, request, now) {
            Reply::Token { call_token, .. } => call_token,
            other => panic!("token: {other:?}"),
        }
    }

    /// `conn` gets a token and joins `session_id`; returns the answer and what else was queued.
    fn join(
        &mut self,
        conn: ConnId,
        session_id: &str,
        idle_timeout_secs: Option<u32>,
        now: u64,
    ) -> (Result<Reply, ErrorBody>, Vec<Out>) {
        let call_token = self.token(conn, session_id, now);
        self.request(conn, join(session_id, &call_token, idle_timeout_secs), now)
    }

    /// Alice calls Bob at `T0`, Bob accepts at `T0 + 1 s`, both join at `T0 + 2 s`. Returns
    /// the call (as placed).
    fn call_in_progress(&mut self) -> Call {
        self.login(ALICE, "alice", T0);
        self.login(BOB, "bob", T0);
        let call = self.call(ALICE, "bob", None, T0);
        let sid = call.session_id.clone();
        self.ok(BOB, accept(&sid), T0 + 1_000);
        self.join(ALICE, &sid, None, T0 + 2_000)
            .0
            .expect("alice joins");
        self.join(BOB, &sid, None, T0 + 2_000).0.expect("bob joins");
        self.hub.drain();
        call
    }

    /// Advances time to `now`; returns what the hub queued.
    fn tick(&mut self, now: u64) -> Vec<Out> {
        self.hub.tick(now);
        self.hub.drain()
    }

    /// Every call log, newest first (as the admin API lists them).
    fn call_logs(&mut self) -> Vec<CallLog> {
        self.hub
            .store()
            .list_calls(None, &CallLogQuery::default())
            .expect("list calls")
            .0
    }

    /// The call log of `session_id`.
    fn call_log(&mut self, session_id: &str) -> CallLog {
        self.call_logs()
            .into_iter()
            .find(|log| log.session_id == session_id)
            .expect("logged")
    }
}

fn join(session_id: &str, call_token: &str, idle_timeout_secs: Option<u32>) -> Request {
    Request::JoinSession {
        session_id: session_id.into(),
        call_token: call_token.into(),
        idle_timeout_secs,
        audio_muted: false,
        video_paused: false,
    }
}

fn accept(session_id: &str) -> Request {
    Request::AcceptCall {
        session_id: session_id.into(),
    }
}

/// The frame pushing `event` to `conn`.
fn event(conn: ConnId, event: ServerEvent) -> Out {
    Out::Send(conn, ServerFrame::event(event))
}

fn with_status(call: &Call, status: CallStatus) -> Call {
    Call {
        status,
        ..call.clone()
    }
}

fn uids(reply: Reply) -> Vec<String> {
    match reply {
        Reply::Joined { participants, .. } => participants.into_iter().map(|p| p.uid).collect(),
        other => panic!("expected joined, got {other:?}"),
    }
}

/// A call nobody answers rings until its deadline (the default ringing timeout) and not a
/// millisecond longer: then the caller gets `outgoing_call_rejected` and the callee
/// `incoming_call_cancelled`, both with status `unanswered`; the call log says `unanswered`,
/// ended at the deadline; the timeout fires once; answering afterwards is `ERR_CALL_ENDED`.
#[test]
fn unanswered_call_times_out_at_the_ringing_timeout() {
    let mut h = Harness::new(HubConfig::default());
    let ring = HubConfig::default().ring_timeout_ms;
    h.login(ALICE, "alice", T0);
    h.login(BOB, "bob", T0);
    let call = h.call(ALICE, "bob", None, T0);

    assert_eq!(h.tick(T0 + ring - 1), vec![], "still ringing 1 ms before");
    assert_eq!(h.call_log(&call.session_id).status, CallStatus::Initiated);

    let unanswered = with_status(&call, CallStatus::Unanswered);
    assert_eq!(
        h.tick(T0 + ring),
        vec![
            event(
                ALICE,
                ServerEvent::OutgoingCallRejected {
                    call: unanswered.clone()
                }
            ),
            event(BOB, ServerEvent::IncomingCallCancelled { call: unanswered }),
        ]
    );
    let log = h.call_log(&call.session_id);
    assert_eq!(log.status, CallStatus::Unanswered);
    assert_eq!((log.started_at, log.ended_at), (None, Some(T0 + ring)));

    assert_eq!(h.tick(T0 + 2 * ring), vec![], "the timeout fires once");
    assert_eq!(
        h.error_code(BOB, accept(&call.session_id), T0 + 2 * ring),
        ErrorCode::CallEnded
    );
}

/// A caller already waiting in the session of a call nobody answers is let go when the
/// ringing times out: besides `outgoing_call_rejected` they get `session_ended` (`ended`), and
/// can place another call at once.
#[test]
fn unanswered_call_ends_the_session_its_caller_waits_in() {
    let mut h = Harness::new(HubConfig::default());
    let ring = HubConfig::default().ring_timeout_ms;
    h.login(ALICE, "alice", T0);
    h.login(BOB, "bob", T0);
    h.login(CAROL, "carol", T0);
    let call = h.call(ALICE, "bob", None, T0);
    let (joined, _) = h.join(ALICE, &call.session_id, None, T0 + 1_000);
    assert_eq!(uids(joined.expect("the caller joins")), vec!["alice"]);

    let unanswered = with_status(&call, CallStatus::Unanswered);
    assert_eq!(
        h.tick(T0 + ring),
        vec![
            event(
                ALICE,
                ServerEvent::OutgoingCallRejected {
                    call: unanswered.clone()
                }
            ),
            event(BOB, ServerEvent::IncomingCallCancelled { call: unanswered }),
            event(
                ALICE,
                ServerEvent::SessionEnded {
                    session_id: call.session_id.clone(),
                    reason: SessionEndReason::Ended,
                }
            ),
        ]
    );
    let log = h.call_log(&call.session_id);
    assert_eq!(log.status, CallStatus::Unanswered);
    assert_eq!(log.participants, vec!["alice"]);
    h.call(ALICE, "carol", None, T0 + ring);
}

/// The ringing timeout a caller asks for (`timeout_secs`) is used when it is under the
/// server's `max_ring_timeout_ms`, and capped to it when it is over: each call times out
/// exactly at its own deadline.
#[test]
fn requested_ring_timeout_is_used_and_capped_by_the_maximum() {
    let mut h = Harness::new(HubConfig {
        max_ring_timeout_ms: 30_000,
        ..HubConfig::default()
    });
    h.login(ALICE, "alice", T0);
    h.login(BOB, "bob", T0);

    // Asked for 10 minutes: capped to 30 s.
    let call = h.call(ALICE, "bob", Some(600), T0);
    assert_eq!(h.tick(T0 + 29_999), vec![]);
    let outs = h.tick(T0 + 30_000);
    assert!(
        outs.contains(&event(
            ALICE,
            ServerEvent::OutgoingCallRejected {
                call: with_status(&call, CallStatus::Unanswered)
            }
        )),
        "{outs:?}"
    );

    // Asked for 5 s (under both the default and the maximum): 5 s it is.
    let start = T0 + 60_000;
    let call = h.call(ALICE, "bob", Some(5), start);
    assert_eq!(h.tick(start + 4_999), vec![]);
    let outs = h.tick(start + 5_000);
    assert!(
        outs.contains(&event(
            BOB,
            ServerEvent::IncomingCallCancelled {
                call: with_status(&call, CallStatus::Unanswered)
            }
        )),
        "{outs:?}"
    );
    assert_eq!(h.call_log(&call.session_id).ended_at, Some(start + 5_000));
}

/// An accepted call is never timed out by the ringing timeout: long past the deadline the
/// hub queues nothing, the log stays `ongoing`, and the call can still be ended.
#[test]
fn accepted_call_is_not_timed_out() {
    let mut h = Harness::new(HubConfig::default());
    let ring = HubConfig::default().ring_timeout_ms;
    h.login(ALICE, "alice", T0);
    h.login(BOB, "bob", T0);
    let call = h.call(ALICE, "bob", None, T0);
    let (accepted, outs) = h.request(BOB, accept(&call.session_id), T0 + ring - 1);
    accepted.expect("accepted in time");
    let ongoing = with_status(&call, CallStatus::Ongoing);
    assert_eq!(
        outs,
        vec![event(
            ALICE,
            ServerEvent::OutgoingCallAccepted {
                call: ongoing.clone(),
                by: "bob".into()
            }
        )]
    );

    for later in [T0 + ring, T0 + 2 * ring, T0 + 100 * ring] {
        assert_eq!(h.tick(later), vec![], "at {later}");
    }
    let log = h.call_log(&call.session_id);
    assert_eq!((log.status, log.ended_at), (CallStatus::Ongoing, None));

    let end = Request::EndCall {
        session_id: call.session_id.clone(),
    };
    let (ended, outs) = h.request(BOB, end, T0 + 100 * ring);
    ended.expect("end");
    assert_eq!(
        outs,
        vec![event(
            ALICE,
            ServerEvent::CallEnded {
                call: with_status(&call, CallStatus::Ended)
            }
        )]
    );
    assert_eq!(h.call_log(&call.session_id).status, CallStatus::Ended);
}

/// Someone alone in a session for the idle timeout (the server's default) is timed out, and
/// not a millisecond before: they get `session_ended` with reason `timeout`, and the log of
/// the (direct) session is closed then.
#[test]
fn alone_for_the_idle_timeout_is_timed_out() {
    let mut h = Harness::new(HubConfig::default());
    let idle = HubConfig::default().idle_timeout_ms;
    h.login(ALICE, "alice", T0);
    let (joined, _) = h.join(ALICE, "standup", None, T0);
    assert_eq!(uids(joined.expect("join")), vec!["alice"]);

    assert_eq!(h.tick(T0 + idle - 1), vec![], "not 1 ms before");
    assert_eq!(
        h.tick(T0 + idle),
        vec![event(
            ALICE,
            ServerEvent::SessionEnded {
                session_id: "standup".into(),
                reason: SessionEndReason::Timeout,
            }
        )]
    );
    let log = h.call_log("standup");
    assert_eq!(log.status, CallStatus::Ended);
    assert_eq!(log.ended_at, Some(T0 + idle));
    assert_eq!(h.tick(T0 + 2 * idle), vec![], "the timeout fires once");
}

/// The idle timeout a joiner asks for (`idle_timeout_secs`) replaces the server's default for
/// that session.
#[test]
fn requested_idle_timeout_replaces_the_default() {
    let mut h = Harness::new(HubConfig::default());
    h.login(ALICE, "alice", T0);
    h.join(ALICE, "standup", Some(60), T0).0.expect("join");
    assert_eq!(h.tick(T0 + 59_999), vec![]);
    assert_eq!(
        h.tick(T0 + 60_000),
        vec![event(
            ALICE,
            ServerEvent::SessionEnded {
                session_id: "standup".into(),
                reason: SessionEndReason::Timeout,
            }
        )]
    );
}

/// Two in a session are never idle, however long; the idle clock starts when one is left
/// alone (when the other leaves), not when the session began.
#[test]
fn idle_clock_starts_when_someone_is_left_alone() {
    let mut h = Harness::new(HubConfig::default());
    let idle = HubConfig::default().idle_timeout_ms;
    h.login(ALICE, "alice", T0);
    h.login(BOB, "bob", T0);
    h.join(ALICE, "standup", None, T0).0.expect("alice joins");
    h.join(BOB, "standup", None, T0 + 1_000)
        .0
        .expect("bob joins");
    h.hub.drain();
    assert_eq!(h.tick(T0 + 10 * idle), vec![], "two are never idle");

    let left = T0 + 10 * idle;
    let leave = Request::LeaveSession {
        session_id: "standup".into(),
    };
    let (answer, outs) = h.request(BOB, leave, left);
    answer.expect("leave");
    assert_eq!(
        outs,
        vec![event(
            ALICE,
            ServerEvent::ParticipantLeft {
                session_id: "standup".into(),
                uid: "bob".into(),
            }
        )]
    );
    assert_eq!(h.tick(left + idle - 1), vec![]);
    assert_eq!(
        h.tick(left + idle),
        vec![event(
            ALICE,
            ServerEvent::SessionEnded {
                session_id: "standup".into(),
                reason: SessionEndReason::Timeout,
            }
        )]
    );
}

/// A participant whose connection drops keeps their place for the reconnect grace: the
/// others are told nothing; a signal sent to them meanwhile is held; they log in again on a
/// new connection and join again within the grace, find themselves in the same place (no
/// `participant_joined` for the others), get the held signal, and receive state changes on
/// the new connection. Nothing happens when the grace would have run out.
#[test]
fn dropped_participant_can_rejoin_within_the_grace() {
    let grace = HubConfig::default().reconnect_grace_ms;
    let mut h = Harness::new(HubConfig::default());
    let call = h.call_in_progress();
    let sid = call.session_id.clone();

    let dropped = T0 + 10_000;
    h.hub.disconnect(BOB, dropped);
    assert_eq!(h.hub.drain(), vec![], "nobody is told of the drop");
    assert_eq!(h.tick(dropped + grace - 1), vec![]);

    let offer = PeerSignal::Offer { sdp: "v=0".into() };
    let signal = Request::Signal {
        session_id: sid.clone(),
        to: "bob".into(),
        signal: offer.clone(),
    };
    let (answer, outs) = h.request(ALICE, signal, dropped + 1_000);
    assert_eq!(answer, Ok(Reply::Ok));
    assert_eq!(outs, vec![], "held while bob is away");

    let back = dropped + grace - 1;
    h.login(BOB_AGAIN, "bob", back);
    h.hub.drain();
    let (joined, outs) = h.join(BOB_AGAIN, &sid, None, back);
    assert_eq!(
        uids(joined.expect("rejoin")),
        vec!["alice", "bob"],
        "same place in the session"
    );
    assert_eq!(
        outs,
        vec![event(
            BOB_AGAIN,
            ServerEvent::Signal {
                session_id: sid.clone(),
                from: "alice".into(),
                signal: offer,
            }
        )],
        "only the held signal, and nothing to alice"
    );

    assert_eq!(h.tick(dropped + grace), vec![]);
    assert_eq!(h.tick(dropped + 10 * grace), vec![]);
    let change = Request::State {
        session_id: sid.clone(),
        change: StateChange::AudioMuted(true),
    };
    let (answer, outs) = h.request(ALICE, change, dropped + 10 * grace);
    assert_eq!(answer, Ok(Reply::Ok));
    assert_eq!(
        outs,
        vec![event(
            BOB_AGAIN,
            ServerEvent::ParticipantState {
                session_id: sid.clone(),
                uid: "alice".into(),
                change: StateChange::AudioMuted(true),
            }
        )]
    );
    assert_eq!(h.call_log(&sid).status, CallStatus::Ongoing);
}

/// A participant of a 1:1 call whose connection drops and who does not come back is removed
/// when the reconnect grace runs out, not a millisecond before: the other side gets
/// `participant_left`, `session_ended` (`ended`) and `call_ended`; the log says `ended` at
/// that time, with both participants; the session cannot be joined again.
#[test]
fn dropped_participant_is_removed_after_the_grace() {
    let grace = 2_000;
    let mut h = Harness::new(HubConfig {
        reconnect_grace_ms: grace,
        ..HubConfig::default()
    });
    let call = h.call_in_progress();
    let sid = call.session_id.clone();

    let dropped = T0 + 10_000;
    h.hub.disconnect(BOB, dropped);
    assert_eq!(h.tick(dropped + grace - 1), vec![]);
    assert_eq!(
        h.tick(dropped + grace),
        vec![
            event(
                ALICE,
                ServerEvent::ParticipantLeft {
                    session_id: sid.clone(),
                    uid: "bob".into(),
                }
            ),
            event(
                ALICE,
                ServerEvent::SessionEnded {
                    session_id: sid.clone(),
                    reason: SessionEndReason::Ended,
                }
            ),
            event(
                ALICE,
                ServerEvent::CallEnded {
                    call: with_status(&call, CallStatus::Ended),
                }
            ),
        ]
    );
    let log = h.call_log(&sid);
    assert_eq!(log.status, CallStatus::Ended);
    assert_eq!(log.ended_at, Some(dropped + grace));
    assert_eq!(log.participants, vec!["alice", "bob"]);

    h.login(BOB_AGAIN, "bob", dropped + grace + 1);
    let auth_token = h.auth_tokens[&BOB_AGAIN].clone();
    assert_eq!(
        h.error_code(
            BOB_AGAIN,
            Request::GenerateToken {
                session_id: sid.clone(),
                auth_token,
            },
            dropped + grace + 1
        ),
        ErrorCode::CallEnded,
        "no token for a call that is over"
    );
}

/// In a group session, a participant who dropped and did not come back within the grace is
/// removed and everyone left is told (`participant_left`); the session goes on for them.
#[test]
fn dropped_participant_of_a_group_session_is_removed_and_the_others_told() {
    let grace = HubConfig::default().reconnect_grace_ms;
    let mut h = Harness::new(HubConfig::default());
    for (conn, uid) in [(ALICE, "alice"), (BOB, "bob"), (CAROL, "carol")] {
        h.login(conn, uid, T0);
        h.join(conn, "standup", None, T0).0.expect("join");
    }
    h.hub.drain();

    let dropped = T0 + 5_000;
    h.hub.disconnect(CAROL, dropped);
    assert_eq!(h.tick(dropped + grace - 1), vec![]);
    let left = ServerEvent::ParticipantLeft {
        session_id: "standup".into(),
        uid: "carol".into(),
    };
    assert_eq!(
        h.tick(dropped + grace),
        vec![event(ALICE, left.clone()), event(BOB, left)]
    );
    assert_eq!(h.call_log("standup").status, CallStatus::Ongoing);
    let change = Request::State {
        session_id: "standup".into(),
        change: StateChange::HandRaised(true),
    };
    assert_eq!(h.request(ALICE, change, dropped + grace).0, Ok(Reply::Ok));
}

/// A call token is good until its lifetime (`token_ttl_secs`) runs out, and refused from that
/// moment (`API_ERROR`, "expired").
#[test]
fn call_token_expires_after_its_lifetime() {
    let mut h = Harness::new(HubConfig {
        token_ttl_secs: 60,
        ..HubConfig::default()
    });
    h.login(ALICE, "alice", T0);
    h.login(BOB, "bob", T0);
    let alices = h.token(ALICE, "standup", T0);
    let bobs = h.token(BOB, "standup", T0);
    let (joined, _) = h.request(ALICE, join("standup", &alices, None), T0 + 59_999);
    joined.expect("still valid 1 ms before");
    let (refused, _) = h.request(BOB, join("standup", &bobs, None), T0 + 60_000);
    let error = refused.expect_err("expired");
    assert_eq!(error.code, ErrorCode::ApiError);
    assert!(error.message.contains("expired"), "{}", error.message);
}

/// Without randomness from the operating system, a hub on a store with no token-signing
/// secret yet refuses to start (no weaker secret is made); a store that already has a secret
/// starts without needing randomness, and keeps that secret.
#[test]
fn no_randomness_no_new_secret() {
    let no_randomness = || Err(RandomnessError(getrandom::Error::UNSUPPORTED));
    let fresh = Store::in_memory().expect("store");
    let refused = Hub::with_fresh_secret(fresh, HubConfig::default(), no_randomness);
    assert!(
        matches!(refused, Err(InternalError::Randomness(_))),
        "a first start needs randomness"
    );

    let store = Store::in_memory().expect("store");
    let kept = store
        .token_secret(|| Ok::<_, StoreError>(b"kept".to_vec()))
        .expect("secret");
    let hub = Hub::with_fresh_secret(store, HubConfig::default(), no_randomness)
        .unwrap_or_else(|err| panic!("a later start needs none: {err}"));
    assert_eq!(hub.secret, kept);
}

/// A store whose secret could not be made stores nothing: the next attempt makes and keeps
/// one.
#[test]
fn failed_secret_is_not_stored() {
    let store = Store::in_memory().expect("store");
    let failed: Result<Vec<u8>, InternalError> = store.token_secret(|| {
        Err(InternalError::Randomness(RandomnessError(
            getrandom::Error::UNSUPPORTED,
        )))
    });
    assert!(failed.is_err());
    let made = store
        .token_secret(|| Ok::<_, StoreError>(b"second".to_vec()))
        .expect("secret");
    assert_eq!(made, b"second");
    let again = store
        .token_secret(|| Ok::<_, StoreError>(b"third".to_vec()))
        .expect("secret");
    assert_eq!(again, b"second", "kept");
}

/// Leaving a group call that others stay in frees the one who left (issue 15, defect 2):
/// alice rings the lobby, bob and carol accept and all three join; alice leaves while bob
/// and carol stay. She can then place another call (not `ERROR_CALL_IN_PROGRESS`), the
/// group call goes on for the others, and bob, still in it, is still taken (busy to her new
/// call). Joining the group call again makes her taken again.
#[test]
fn leaving_a_group_call_others_stay_in_frees_the_leaver() {
    let mut h = Harness::new(HubConfig {
        dev_lobby: Some("lobby".into()),
        ..HubConfig::default()
    });
    const DAVE: ConnId = 5;
    for (conn, uid) in [
        (ALICE, "alice"),
        (BOB, "bob"),
        (CAROL, "carol"),
        (DAVE, "dave"),
    ] {
        h.login(conn, uid, T0);
    }
    let group_call = match h.ok(
        ALICE,
        Request::InitiateCall {
            receiver_id: "lobby".into(),
            receiver_type: ReceiverType::Group,
            call_type: CallType::Video,
            timeout_secs: None,
        },
        T0,
    ) {
        Reply::Call { call } => call,
        other => panic!("initiate: {other:?}"),
    };
    let sid = group_call.session_id.clone();
    h.ok(BOB, accept(&sid), T0 + 1_000);
    h.ok(CAROL, accept(&sid), T0 + 1_000);
    for conn in [ALICE, BOB, CAROL] {
        h.join(conn, &sid, None, T0 + 2_000).0.expect("join");
    }
    h.hub.drain();

    let left = T0 + 4_000;
    h.ok(
        ALICE,
        Request::LeaveSession {
            session_id: sid.clone(),
        },
        left,
    );
    assert_eq!(h.call_log(&sid).status, CallStatus::Ongoing, "it goes on");

    // Alice is free: a call to dave rings him.
    let to_dave = h.call(ALICE, "dave", None, left + 1_000);
    assert_eq!(to_dave.status, CallStatus::Initiated);
    h.ok(
        ALICE,
        Request::RejectCall {
            session_id: to_dave.session_id.clone(),
            status: CallStatus::Cancelled,
        },
        left + 1_500,
    );
    // Bob is still in the group call: he is the one who is busy, not her.
    let (answer, _) = h.request(
        ALICE,
        Request::InitiateCall {
            receiver_id: "bob".into(),
            receiver_type: ReceiverType::User,
            call_type: CallType::Audio,
            timeout_secs: None,
        },
        left + 2_000,
    );
    assert_ne!(
        answer.as_ref().err().map(|e| e.code),
        Some(ErrorCode::CallInProgress),
        "{answer:?}"
    );
    if let Ok(Reply::Call { call }) = &answer
        && call.status == CallStatus::Initiated
    {
        // Unless bob's auto-busy already ended it, cancel it, so that only the group call
        // is left (an already-ended call answers `ERR_CALL_BUSY`, which is fine here).
        let _ = h.request(
            ALICE,
            Request::RejectCall {
                session_id: call.session_id.clone(),
                status: CallStatus::Cancelled,
            },
            left + 2_500,
        );
    }

    // Back in the group call, she is taken again.
    h.join(ALICE, &sid, None, left + 3_000).0.expect("rejoin");
    assert_eq!(
        h.error_code(
            ALICE,
            Request::InitiateCall {
                receiver_id: "dave".into(),
                receiver_type: ReceiverType::User,
                call_type: CallType::Video,
                timeout_secs: None,
            },
            left + 4_000,
        ),
        ErrorCode::CallInProgress
    );
}

/// The same user on two devices (issue 14, defect 5): both ring; when bob accepts on one, the
/// other gets `incoming_call_cancelled` with the call `ongoing` (answered elsewhere) and the
/// caller gets `outgoing_call_accepted`; when he declines a second call on the other device,
/// the first gets `incoming_call_cancelled` with status `rejected`.
#[test]
fn answering_on_one_device_stops_the_others_ringing() {
    let mut h = Harness::new(HubConfig::default());
    h.login(ALICE, "alice", T0);
    h.login(BOB, "bob", T0);
    h.login(BOB_AGAIN, "bob", T0);
    h.hub.drain();
    let first = h.call(ALICE, "bob", None, T0);
    let (answer, outs) = h.request(BOB, accept(&first.session_id), T0 + 1_000);
    let Ok(Reply::Call { call: accepted }) = answer else {
        panic!("accept: {answer:?}")
    };
    assert_eq!(accepted.status, CallStatus::Ongoing);
    assert!(
        outs.contains(&event(
            BOB_AGAIN,
            ServerEvent::IncomingCallCancelled {
                call: accepted.clone()
            }
        )),
        "bob's other device stops ringing: {outs:?}"
    );
    assert!(
        !outs
            .iter()
            .any(|out| matches!(out, Out::Send(BOB, frame) if frame.re.is_none())),
        "the device that answered is not told it was cancelled: {outs:?}"
    );
    assert!(outs.iter().any(|out| matches!(
        out,
        Out::Send(
            ALICE,
            ServerFrame {
                payload: ServerPayload::Event(ServerEvent::OutgoingCallAccepted { .. }),
                ..
            }
        )
    )));
    h.ok(
        ALICE,
        Request::EndCall {
            session_id: first.session_id.clone(),
        },
        T0 + 2_000,
    );
    h.hub.drain();

    let second = h.call(ALICE, "bob", None, T0 + 3_000);
    let (answer, outs) = h.request(
        BOB_AGAIN,
        Request::RejectCall {
            session_id: second.session_id.clone(),
            status: CallStatus::Rejected,
        },
        T0 + 4_000,
    );
    let Ok(Reply::Call { call: rejected }) = answer else {
        panic!("reject: {answer:?}")
    };
    assert_eq!(rejected.status, CallStatus::Rejected);
    assert!(
        outs.contains(&event(
            BOB,
            ServerEvent::IncomingCallCancelled { call: rejected }
        )),
        "{outs:?}"
    );
}

/// Dev logins reuse the user's auth token (issue 14, defect 7): 300 logins of one uid leave
/// one stored token, every login gets the same one, and it still works for `generate_token`.
#[test]
fn dev_logins_reuse_the_auth_token() {
    let mut h = Harness::new(HubConfig::default());
    h.login(ALICE, "alice", T0);
    let first = h.auth_tokens[&ALICE].clone();
    for i in 1..300u64 {
        h.hub.disconnect(ALICE, T0 + i);
        h.login(ALICE, "alice", T0 + i);
        assert_eq!(h.auth_tokens[&ALICE], first, "login {i}");
    }
    assert_eq!(h.hub.store().auth_token_count("alice").expect("count"), 1);
    h.token(ALICE, "room", T0 + 1_000);
}

/// Every `join_session` answer carries the configured ICE servers, and the TURN entry has
/// credentials of that participant's own, expiring one lifetime after the join.
#[test]
fn joined_answers_carry_each_participants_own_turn_credentials() {
    let mut h = Harness::new(HubConfig {
        ice: crate::ice::IceServersConfig {
            urls: vec!["stun:10.0.0.1:3478".into()],
            turn_urls: vec![
                "turn:10.0.0.1:3478?transport=udp".into(),
                "turn:10.0.0.1:3478?transport=tcp".into(),
            ],
            turn_secret: Some("north".into()),
            turn_credential_ttl_secs: 600,
        },
        ..HubConfig::default()
    });
    h.login(ALICE, "alice", T0);
    h.login(BOB, "bob", T0);
    let sid = h.call(ALICE, "bob", None, T0).session_id;
    h.ok(BOB, accept(&sid), T0 + 1_000);
    let (alice, _) = h.join(ALICE, &sid, None, T0 + 2_000);
    let (bob, _) = h.join(BOB, &sid, None, T0 + 3_000);
    let servers = |reply: Result<Reply, ErrorBody>| match reply {
        Ok(Reply::Joined { ice_servers, .. }) => ice_servers,
        other => panic!("join: {other:?}"),
    };
    let (alice, bob) = (servers(alice), servers(bob));
    assert_eq!(
        alice[0].urls,
        ["stun:10.0.0.1:3478"],
        "STUN, and the TURN host once"
    );
    assert_eq!(alice[0].credential, None);
    assert_eq!(alice[1].urls.len(), 2);
    let expiry = (T0 + 2_000) / 1000 + 600;
    assert_eq!(
        alice[1].username.as_deref(),
        Some(format!("{expiry}:alice").as_str())
    );
    assert_eq!(
        alice[1].credential,
        Some(crate::ice::turn_credentials("north", "alice", expiry).1)
    );
    assert_eq!(
        bob[1].username.as_deref(),
        Some(format!("{}:bob", expiry + 1).as_str())
    );
    assert_ne!(alice[1].credential, bob[1].credential);
}

/// A database file that goes when the test ends.
struct DbFile(std::path::PathBuf);

impl DbFile {
    fn new(name: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("huddle-hub-{name}-{}.db", std::process::id()));
        let _ = std::fs::remove_file(&path);
        Self(path)
    }

    fn open(&self) -> Store {
        Store::open(&self.0).expect("store")
    }
}

impl Drop for DbFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// After a kill and a restart on the same database, the ids of old ringing-flow calls stay
/// closed: the caller cannot rejoin an answered call with her old token, an outsider gets no
/// token for it (and so never appears in its log), and a call that was still ringing, closed
/// as `cancelled` at the restart, cannot be joined and so never gains a start after its end.
#[test]
fn restart_keeps_ended_calls_closed() {
    let db = DbFile::new("restart");
    let mut h = Harness::with_store(db.open(), HubConfig::default());
    let answered = h.call_in_progress();
    let old_token = h.token(ALICE, &answered.session_id, T0 + 2_500);
    const DAVE: ConnId = 5;
    h.login(CAROL, "carol", T0);
    h.login(DAVE, "dave", T0);
    let ringing = h.call(CAROL, "dave", None, T0 + 3_000);
    drop(h); // kill -9: nothing is closed in an orderly way

    let store = db.open();
    store.end_open_calls(T0 + 10_000).expect("close open calls");
    let mut h = Harness::with_store(store, HubConfig::default());
    h.login(ALICE, "alice", T0 + 11_000);
    assert_eq!(
        h.error_code(
            ALICE,
            join(&answered.session_id, &old_token, None),
            T0 + 11_000
        ),
        ErrorCode::CallEnded
    );
    const EVE: ConnId = 9;
    h.login(EVE, "eve", T0 + 11_000);
    let eve_token = h.auth_tokens[&EVE].clone();
    assert_eq!(
        h.error_code(
            EVE,
            Request::GenerateToken {
                session_id: answered.session_id.clone(),
                auth_token: eve_token,
            },
            T0 + 11_000
        ),
        ErrorCode::CallEnded
    );
    h.login(CAROL, "carol", T0 + 11_000);
    let carol_token = h.auth_tokens[&CAROL].clone();
    assert_eq!(
        h.error_code(
            CAROL,
            Request::GenerateToken {
                session_id: ringing.session_id.clone(),
                auth_token: carol_token,
            },
            T0 + 11_000
        ),
        ErrorCode::CallCancelled
    );
    let answered_log = h.call_log(&answered.session_id);
    assert_eq!(answered_log.participants, vec!["alice", "bob"]);
    let ringing_log = h.call_log(&ringing.session_id);
    assert_eq!(ringing_log.status, CallStatus::Cancelled);
    assert_eq!(ringing_log.started_at, None);
}

/// The hub notes once a second that the server is alive; a restart closes the calls a kill
/// left open at that time (about when the server died), not at the restart: a 2 s call
/// followed by 5 s of downtime lasts 2 s in its log.
#[test]
fn calls_left_open_by_a_kill_end_when_the_server_was_last_alive() {
    let db = DbFile::new("last-alive");
    let mut h = Harness::with_store(db.open(), HubConfig::default());
    let call = h.call_in_progress(); // joined at T0 + 2 s
    for second in 2..=4 {
        h.tick(T0 + second * 1_000);
    }
    drop(h); // killed just after T0 + 4 s

    let store = db.open();
    let last_alive = store.last_alive().expect("read").expect("noted");
    assert_eq!(last_alive, T0 + 4_000);
    store.end_open_calls(last_alive).expect("close");
    let mut h = Harness::with_store(store, HubConfig::default());
    h.login(ALICE, "alice", T0 + 9_000);
    let log = h.call_log(&call.session_id);
    assert_eq!(log.status, CallStatus::Ended);
    assert_eq!(log.started_at, Some(T0 + 2_000));
    assert_eq!(log.ended_at, Some(T0 + 4_000));
}

/// A direct session id used for two meetings logs two rows: alice and bob meet in `room`
/// and leave; later alice and carol meet there. Each row has its own participants, start and
/// end, and carol's history shows only her meeting.
#[test]
fn a_direct_session_id_used_twice_logs_each_meeting() {
    let mut h = Harness::new(HubConfig::default());
    for (conn, uid) in [(ALICE, "alice"), (BOB, "bob"), (CAROL, "carol")] {
        h.login(conn, uid, T0);
    }
    h.join(ALICE, "room", None, T0).0.expect("alice joins");
    h.join(BOB, "room", None, T0 + 1_000).0.expect("bob joins");
    for conn in [ALICE, BOB] {
        h.ok(
            conn,
            Request::LeaveSession {
                session_id: "room".into(),
            },
            T0 + 10_000,
        );
    }
    h.join(ALICE, "room", None, T0 + 60_000)
        .0
        .expect("alice again");
    h.join(CAROL, "room", None, T0 + 61_000)
        .0
        .expect("carol joins");
    for conn in [ALICE, CAROL] {
        h.ok(
            conn,
            Request::LeaveSession {
                session_id: "room".into(),
            },
            T0 + 70_000,
        );
    }
    let rooms: Vec<CallLog> = h
        .call_logs()
        .into_iter()
        .filter(|log| log.session_id == "room")
        .collect();
    assert_eq!(rooms.len(), 2, "{rooms:?}");
    let (second, first) = (&rooms[0], &rooms[1]); // newest first
    assert_eq!(first.participants, vec!["alice", "bob"]);
    assert_eq!(
        (first.started_at, first.ended_at),
        (Some(T0), Some(T0 + 10_000))
    );
    assert_eq!(second.participants, vec!["alice", "carol"]);
    assert_eq!(
        (second.started_at, second.ended_at),
        (Some(T0 + 60_000), Some(T0 + 70_000))
    );
    let carols = h
        .hub
        .store()
        .list_calls(Some("carol"), &CallLogQuery::default())
        .expect("list")
        .0;
    assert_eq!(carols.len(), 1);
    assert_eq!(carols[0].participants, vec!["alice", "carol"]);
}

/// A database from before per-meeting log rows (call logs keyed by session id) opens as
/// the new schema with its calls and participants intact, and takes new meetings.
#[test]
fn version_1_call_logs_are_migrated() {
    let db = DbFile::new("v1");
    {
        let old = rusqlite::Connection::open(&db.0).expect("open");
        old.execute_batch(
            "CREATE TABLE call_logs (
                session_id TEXT PRIMARY KEY, call_type TEXT NOT NULL, status TEXT NOT NULL,
                receiver_type TEXT NOT NULL, initiator TEXT NOT NULL, receiver TEXT NOT NULL,
                initiated_at INTEGER NOT NULL, started_at INTEGER, ended_at INTEGER,
                has_recording INTEGER NOT NULL DEFAULT 0);
             CREATE INDEX call_logs_initiator ON call_logs(initiator);
             CREATE INDEX call_logs_receiver ON call_logs(receiver);
             CREATE TABLE call_participants (
                session_id TEXT NOT NULL REFERENCES call_logs(session_id) ON DELETE CASCADE,
                uid TEXT NOT NULL, joined_at INTEGER NOT NULL, PRIMARY KEY (session_id, uid));
             INSERT INTO call_logs VALUES
                ('call-1', 'video', 'ended', 'user', 'alice', 'bob', 1000, 2000, 9000, 1),
                ('room', 'video', 'ended', 'group', 'carol', '', 3000, 3000, 5000, 0);
             INSERT INTO call_participants VALUES
                ('call-1', 'alice', 2000), ('call-1', 'bob', 2100), ('room', 'carol', 3000);",
        )
        .expect("version 1 database");
    }
    let mut h = Harness::with_store(db.open(), HubConfig::default());
    let old = h.call_log("call-1");
    assert_eq!(old.participants, vec!["alice", "bob"]);
    assert_eq!((old.started_at, old.ended_at), (Some(2000), Some(9000)));
    assert!(old.has_recording);
    h.login(CAROL, "carol", T0);
    h.join(CAROL, "room", None, T0)
        .0
        .expect("a new meeting in room");
    let rooms = h
        .call_logs()
        .into_iter()
        .filter(|log| log.session_id == "room")
        .count();
    assert_eq!(rooms, 2);
}

/// The errors the doc now lists for these requests are the ones the server sends:
/// `reject_call` with `cancelled` on a call already accepted is `ERROR_CALL_IN_PROGRESS`;
/// `leave_session` after the session ended is `ERR_CALL_NOT_FOUND`; and `initiate_call` to a
/// user who is not a contact is allowed (any user of the server can be called), while an
/// unknown uid is `API_ERROR`.
#[test]
fn documented_errors_of_reject_leave_and_initiate() {
    let mut h = Harness::new(HubConfig::default());
    let call = h.call_in_progress();
    assert_eq!(
        h.error_code(
            ALICE,
            Request::RejectCall {
                session_id: call.session_id.clone(),
                status: CallStatus::Cancelled,
            },
            T0 + 3_000
        ),
        ErrorCode::CallInProgress
    );
    h.ok(
        BOB,
        Request::LeaveSession {
            session_id: call.session_id.clone(),
        },
        T0 + 4_000,
    );
    assert_eq!(
        h.error_code(
            ALICE,
            Request::LeaveSession {
                session_id: call.session_id.clone(),
            },
            T0 + 5_000
        ),
        ErrorCode::CallNotFound
    );
    assert_eq!(
        h.error_code(
            ALICE,
            Request::InitiateCall {
                receiver_id: "nobody".into(),
                receiver_type: ReceiverType::User,
                call_type: CallType::Audio,
                timeout_secs: None,
            },
            T0 + 6_000
        ),
        ErrorCode::ApiError
    );
    // carol shares no group with alice: not a contact, and still callable.
    h.login(CAROL, "carol", T0 + 6_000);
    let to_carol = h.call(ALICE, "carol", None, T0 + 6_000);
    assert_eq!(to_carol.status, CallStatus::Initiated);
}

/// A hub whose sessions go through the SFU above `above` participants.
fn sfu_harness(above: usize) -> Harness {
    Harness::new(HubConfig {
        sfu_above: Some(above),
        ..HubConfig::default()
    })
}

/// The route of a `joined` answer.
fn route_of(reply: &Result<Reply, ErrorBody>) -> huddle_protocol::MediaRoute {
    match reply {
        Ok(Reply::Joined { media_route, .. }) => *media_route,
        other => panic!("expected joined, got {other:?}"),
    }
}

fn signal(session_id: &str, to: &str, signal: PeerSignal) -> Request {
    Request::Signal {
        session_id: session_id.into(),
        to: to.into(),
        signal,
    }
}

/// With the SFU threshold at 2, a direct session is a mesh for two and moves to the SFU when
/// the third joins: the room is opened once, the third is told `sfu` in its answer and the
/// two already in get `media_route_changed`; nobody leaves the call.
#[test]
fn a_session_growing_past_the_threshold_moves_to_the_sfu_once() {
    use huddle_protocol::MediaRoute;
    let mut h = sfu_harness(2);
    for (conn, uid) in [(ALICE, "alice"), (BOB, "bob"), (CAROL, "carol")] {
        h.login(conn, uid, T0);
    }
    let (first, outs) = h.join(ALICE, "big", None, T0);
    assert_eq!(route_of(&first), MediaRoute::Mesh);
    assert!(!outs.iter().any(|o| matches!(o, Out::Sfu(_))), "{outs:?}");
    let (second, _) = h.join(BOB, "big", None, T0);
    assert_eq!(route_of(&second), MediaRoute::Mesh);
    let (third, outs) = h.join(CAROL, "big", None, T0);
    assert_eq!(route_of(&third), MediaRoute::Sfu);
    let opened: Vec<&Out> = outs.iter().filter(|o| matches!(o, Out::Sfu(_))).collect();
    assert_eq!(
        opened,
        vec![&Out::Sfu(SfuCommand::OpenRoom {
            session_id: "big".into()
        })]
    );
    for conn in [ALICE, BOB] {
        assert!(
            outs.contains(&event(
                conn,
                ServerEvent::MediaRouteChanged {
                    session_id: "big".into(),
                    route: MediaRoute::Sfu,
                }
            )),
            "{conn} told: {outs:?}"
        );
    }
    assert_eq!(h.hub.media_route("big"), Some(MediaRoute::Sfu));
    // A fourth joins the SFU session as it is: no second room.
    let dave: ConnId = 5;
    h.login(dave, "dave", T0);
    let (fourth, outs) = h.join(dave, "big", None, T0);
    assert_eq!(route_of(&fourth), MediaRoute::Sfu);
    assert!(
        !outs
            .iter()
            .any(|o| matches!(o, Out::Sfu(SfuCommand::OpenRoom { .. })))
    );
}

/// With the SFU threshold at 4, a session of five goes through the SFU; as people leave it
/// stays there down to three (no flapping at the threshold), and when two are left it goes
/// back to a mesh: the room is closed once and both are told `mesh`; their last signals to
/// the SFU, raced with that news, are dropped. Growing past the threshold again opens a new
/// room.
#[test]
fn a_session_shrinking_to_half_the_threshold_goes_back_to_the_mesh() {
    use huddle_protocol::MediaRoute;
    let mut h = sfu_harness(4);
    let people: Vec<(ConnId, String)> = (0..5u64).map(|n| (100 + n, format!("p{n}"))).collect();
    for (conn, uid) in &people {
        h.login(*conn, uid, T0);
        h.join(*conn, "shrink", None, T0).0.expect("joined");
    }
    assert_eq!(h.hub.media_route("shrink"), Some(MediaRoute::Sfu));
    let leave = || Request::LeaveSession {
        session_id: "shrink".into(),
    };
    for (conn, _) in &people[..2] {
        let (_, outs) = h.request(*conn, leave(), T0);
        assert!(
            !outs
                .iter()
                .any(|o| matches!(o, Out::Sfu(SfuCommand::CloseRoom { .. }))),
            "{outs:?}"
        );
    }
    assert_eq!(h.hub.media_route("shrink"), Some(MediaRoute::Sfu));
    let (_, outs) = h.request(people[2].0, leave(), T0);
    assert_eq!(h.hub.media_route("shrink"), Some(MediaRoute::Mesh));
    let closes = outs
        .iter()
        .filter(|o| matches!(o, Out::Sfu(SfuCommand::CloseRoom { .. })))
        .count();
    assert_eq!(closes, 1, "{outs:?}");
    for (conn, _) in &people[3..] {
        assert!(
            outs.contains(&event(
                *conn,
                ServerEvent::MediaRouteChanged {
                    session_id: "shrink".into(),
                    route: MediaRoute::Mesh,
                }
            )),
            "{conn} told: {outs:?}"
        );
    }
    // A candidate to the SFU sent before p3 heard of the move is stale, not an error; one to
    // a stranger still is.
    let candidate = PeerSignal::Candidate {
        candidate: Some("candidate:1 1 UDP 1 10.0.0.1 9 typ host".into()),
        sdp_mid: Some("0".into()),
        sdp_mline_index: Some(0),
        username_fragment: None,
    };
    let (late, outs) = h.request(
        people[3].0,
        signal("shrink", SFU_SUBSCRIBE_PEER, candidate.clone()),
        T0,
    );
    assert_eq!(late, Ok(Reply::Ok));
    assert!(outs.is_empty(), "{outs:?}");
    let (stranger, _) = h.request(people[3].0, signal("shrink", "nobody", candidate), T0);
    assert!(stranger.is_err());
    // Growing again past the threshold opens a new room.
    for n in 5..8u64 {
        let (conn, uid) = (100 + n, format!("p{n}"));
        h.login(conn, &uid, T0);
        h.join(conn, "shrink", None, T0).0.expect("joined");
    }
    assert_eq!(h.hub.media_route("shrink"), Some(MediaRoute::Sfu));
}

/// In an SFU session, signals to the pseudo-peers go to the SFU (tagged with the sender and
/// leg), a `video_wanted` for a participant becomes a pause of their stream for the asker
/// (not a relay to them), the SFU's signals reach their participant `from` the leg, and a
/// leave and the end tell the SFU.
#[test]
fn sfu_sessions_route_signals_through_the_sfu() {
    let mut h = sfu_harness(0);
    h.login(ALICE, "alice", T0);
    h.login(BOB, "bob", T0);
    h.join(ALICE, "room", None, T0).0.expect("joined");
    h.join(BOB, "room", None, T0).0.expect("joined");
    let offer = PeerSignal::Offer { sdp: "v=0".into() };
    let (answer, outs) = h.request(ALICE, signal("room", SFU_PUBLISH_PEER, offer.clone()), T0);
    assert_eq!(answer, Ok(Reply::Ok));
    assert_eq!(
        outs,
        vec![Out::Sfu(SfuCommand::Signal {
            session_id: "room".into(),
            uid: "alice".into(),
            leg: SfuLeg::Publish,
            signal: offer,
        })]
    );
    let wish = PeerSignal::VideoWanted {
        paused: true,
        max_bitrate_bps: 0,
    };
    let (_, outs) = h.request(BOB, signal("room", "alice", wish), T0);
    assert_eq!(
        outs,
        vec![Out::Sfu(SfuCommand::WantVideo {
            session_id: "room".into(),
            subscriber: "bob".into(),
            publisher: "alice".into(),
            paused: true,
            layer: SimulcastLayer::High,
        })]
    );
    let from_janus = PeerSignal::Answer {
        sdp: "v=0 janus".into(),
    };
    h.hub.handle_sfu_news(SfuNews::Signal {
        session_id: "room".into(),
        uid: "alice".into(),
        leg: SfuLeg::Publish,
        signal: from_janus.clone(),
    });
    assert_eq!(
        h.hub.drain(),
        vec![event(
            ALICE,
            ServerEvent::Signal {
                session_id: "room".into(),
                from: SFU_PUBLISH_PEER.into(),
                signal: from_janus,
            }
        )]
    );
    // News for someone not in the session goes nowhere.
    h.hub.handle_sfu_news(SfuNews::Signal {
        session_id: "room".into(),
        uid: "mallory".into(),
        leg: SfuLeg::Subscribe,
        signal: PeerSignal::Answer { sdp: "x".into() },
    });
    assert!(h.hub.drain().is_empty());
    let (_, outs) = h.request(
        BOB,
        Request::LeaveSession {
            session_id: "room".into(),
        },
        T0,
    );
    assert!(outs.contains(&Out::Sfu(SfuCommand::Leave {
        session_id: "room".into(),
        uid: "bob".into()
    })));
    let (_, outs) = h.request(
        ALICE,
        Request::LeaveSession {
            session_id: "room".into(),
        },
        T0,
    );
    assert!(outs.contains(&Out::Sfu(SfuCommand::CloseRoom {
        session_id: "room".into()
    })));
}

/// A room the SFU could not place anywhere sends the session back to the mesh: everyone in
/// it is told, later joiners are answered `mesh`, and the call goes on.
#[test]
fn a_room_the_sfu_cannot_place_keeps_the_call_on_the_mesh() {
    use huddle_protocol::MediaRoute;
    let mut h = sfu_harness(0);
    h.login(ALICE, "alice", T0);
    let (first, _) = h.join(ALICE, "room", None, T0);
    assert_eq!(route_of(&first), MediaRoute::Sfu);
    h.hub.handle_sfu_news(SfuNews::RoomFailed {
        session_id: "room".into(),
        error: crate::sfu::janus::JanusError::Unreachable {
            url: "ws://10.0.0.9:8188".into(),
            reason: "connection refused".into(),
        },
    });
    assert_eq!(
        h.hub.drain(),
        vec![event(
            ALICE,
            ServerEvent::MediaRouteChanged {
                session_id: "room".into(),
                route: MediaRoute::Mesh,
            }
        )]
    );
    h.login(BOB, "bob", T0);
    let (second, _) = h.join(BOB, "room", None, T0);
    assert_eq!(route_of(&second), MediaRoute::Mesh);
    // Signals between them are relayed peer to peer again.
    let (answer, outs) = h.request(
        BOB,
        signal("room", "alice", PeerSignal::Offer { sdp: "o".into() }),
        T0,
    );
    assert_eq!(answer, Ok(Reply::Ok));
    assert!(matches!(&outs[..], [Out::Send(ALICE, _)]), "{outs:?}");
}

/// A forged call token is refused in SFU mode as anywhere, and the SFU hears nothing of it;
/// a pseudo-peer signal from someone outside the session is refused too.
#[test]
fn forged_tokens_and_outsiders_never_reach_the_sfu() {
    let mut h = sfu_harness(0);
    h.login(ALICE, "alice", T0);
    h.login(BOB, "bob", T0);
    h.join(ALICE, "room", None, T0).0.expect("joined");
    let token = h.token(BOB, "room", T0);
    let mut forged = token.clone();
    forged.pop();
    forged.push(if token.ends_with('A') { 'B' } else { 'A' });
    let (answer, outs) = h.request(BOB, join("room", &forged, None), T0);
    assert_eq!(
        answer.map_err(|e| e.code),
        Err(ErrorCode::TokenInvalidSignature)
    );
    assert!(!outs.iter().any(|o| matches!(o, Out::Sfu(_))), "{outs:?}");
    let offer = PeerSignal::Offer { sdp: "v=0".into() };
    let (answer, outs) = h.request(BOB, signal("room", SFU_PUBLISH_PEER, offer), T0);
    assert_eq!(answer.map_err(|e| e.code), Err(ErrorCode::CallNotFound));
    assert!(outs.is_empty(), "{outs:?}");
}

// --- Several nodes (hub/replica.rs): mirrored connections, held users, snapshots ---

/// A connection of another node, mirrored into the hub under test.
const BOB_ON_NODE_B: ConnId = 20;
/// Another user's connection on node B.
const DAVE_ON_NODE_B: ConnId = 21;

fn lobby_config() -> HubConfig {
    HubConfig {
        dev_lobby: Some("lobby".into()),
        ..HubConfig::default()
    }
}

/// Presence of `uid` (online or not) pushed to `conn`.
fn presence_to(outs: &[Out], conn: ConnId, uid: &str, online: bool) -> bool {
    outs.iter().any(|out| {
        matches!(out, Out::Send(c, frame) if *c == conn && matches!(
            &frame.payload,
            ServerPayload::Event(ServerEvent::Presence(p)) if p.user.uid == uid && p.online == online
        ))
    })
}

/// Mirroring another node's connections announces nothing; a mirror detached by its node says nothing (its node told everyone), while
/// one whose whole node is gone is announced offline to this node's own connections only.
#[test]
fn mirrored_connections_are_rung_and_a_gone_node_is_announced_locally() {
    let mut h = Harness::new(lobby_config());
    h.login(ALICE, "alice", T0);
    h.login(CAROL, "carol", T0);
    // bob and dave log in on node B; their node made the users (a shared database).
    h.login(BOB, "bob", T0);
    h.login(DAVE_ON_NODE_B, "dave", T0);
    h.hub.disconnect(BOB, T0);
    h.hub.disconnect(DAVE_ON_NODE_B, T0);
    h.hub.drain();
    h.hub.attach_remote(BOB_ON_NODE_B, "bob");
    h.hub.attach_remote(DAVE_ON_NODE_B, "dave");
    assert!(h.hub.drain().is_empty(), "attaching announces nothing");
    assert!(h.hub.is_remote(BOB_ON_NODE_B) && !h.hub.is_remote(ALICE));

    let call = h.call(ALICE, "bob", None, T0);
    assert_eq!(
        h.hub.held_users(),
        ["alice"],
        "a caller is held while it rings"
    );
    h.hub.detach_remote(DAVE_ON_NODE_B, T0 + 1, false);
    assert!(h.hub.drain().is_empty(), "dave's own node announced him");
    h.hub.detach_remote(BOB_ON_NODE_B, T0 + 2, true);
    let outs = h.hub.drain();
    assert!(presence_to(&outs, ALICE, "bob", false), "{outs:?}");
    assert!(presence_to(&outs, CAROL, "bob", false), "{outs:?}");
    assert_eq!(outs.len(), 2, "only this node's own connections: {outs:?}");
    assert!(h.hub.session_ids().contains(&call.session_id));
}

/// The ring of a call placed here goes to the callee's mirrored connection.
#[test]
fn a_call_rings_a_user_connected_to_another_node() {
    let mut h = Harness::new(lobby_config());
    h.login(ALICE, "alice", T0);
    h.login(BOB, "bob", T0);
    h.hub.disconnect(BOB, T0);
    h.hub.drain();
    h.hub.attach_remote(BOB_ON_NODE_B, "bob");
    let request = Request::InitiateCall {
        receiver_id: "bob".into(),
        receiver_type: ReceiverType::User,
        call_type: CallType::Video,
        timeout_secs: None,
    };
    let (answer, outs) = h.request(ALICE, request, T0);
    let Ok(Reply::Call { call }) = answer else {
        panic!("{answer:?}")
    };
    assert_eq!(
        outs,
        [event(
            BOB_ON_NODE_B,
            ServerEvent::IncomingCallReceived { call }
        )]
    );
}

/// A user another node holds in a call is busy here too; once that node lets go, they ring.
#[test]
fn a_user_held_by_another_node_is_busy() {
    let mut h = Harness::new(lobby_config());
    h.login(ALICE, "alice", T0);
    h.login(BOB, "bob", T0);
    h.hub.set_remote_held("node-b", ["bob".to_owned()]);
    let busy = h.call(ALICE, "bob", None, T0);
    assert_eq!(h.call_log(&busy.session_id).status, CallStatus::Busy);
    h.hub.set_remote_held("node-b", Vec::new());
    let rings = h.call(ALICE, "bob", None, T0 + 1_000);
    assert_eq!(h.call_log(&rings.session_id).status, CallStatus::Initiated);
}

/// A session's snapshot, restored on another node's hub (same database) after its owner
/// died: the member connected to the surviving node stays in; the member of the dead node
/// rejoins with a new token on a new connection and is back in the same session (nobody is
/// told they left); signals flow; leaving ends it with one log entry, as on one node.
#[test]
fn a_restored_snapshot_carries_the_session_on_another_hub() {
    let db = DbFile::new("replica");
    // Node A: alice is local, bob is node B's connection 2, mirrored here.
    let mut node_a = Harness::with_store(db.open(), HubConfig::default());
    node_a.login(ALICE, "alice", T0);
    node_a.login(BOB, "bob", T0);
    let bobs_token = node_a.auth_tokens[&BOB].clone();
    node_a.hub.disconnect(BOB, T0);
    node_a.hub.attach_remote(BOB_ON_NODE_B, "bob");
    node_a.auth_tokens.insert(BOB_ON_NODE_B, bobs_token);
    node_a.hub.drain();
    let call = node_a.call(ALICE, "bob", None, T0);
    let sid = call.session_id.clone();
    node_a.ok(BOB_ON_NODE_B, accept(&sid), T0 + 1_000);
    node_a
        .join(ALICE, &sid, None, T0 + 2_000)
        .0
        .expect("alice joins");
    node_a
        .join(BOB_ON_NODE_B, &sid, None, T0 + 2_000)
        .0
        .expect("bob joins");
    let snapshot = node_a
        .hub
        .snapshot_session(&sid, |conn| {
            Some(super::NodeConn {
                node: if conn == BOB_ON_NODE_B { "b" } else { "a" }.into(),
                conn: if conn == BOB_ON_NODE_B { BOB } else { conn },
            })
        })
        .expect("node a holds the session");
    assert_eq!(snapshot.held_users(), ["alice", "bob"]);
    // Through JSON, as it goes through Redis.
    let snapshot: super::SessionSnapshot =
        serde_json::from_str(&serde_json::to_string(&snapshot).expect("json")).expect("json");

    // Node A dies; node B (bob's connection 2 is its own) takes the session over.
    let mut node_b = Harness::with_store(db.open(), HubConfig::default());
    node_b.login(BOB, "bob", T0 + 3_000);
    node_b.hub.drain();
    node_b.hub.restore_session(
        &sid,
        snapshot,
        |named| (named.node == "b").then_some(named.conn),
        T0 + 3_000,
    );
    assert!(node_b.hub.holds_session(&sid));
    assert!(
        node_b.hub.drain().is_empty(),
        "a mesh session is restored quietly"
    );

    // alice comes back through node B.
    const ALICE_ON_NODE_B: ConnId = 5;
    node_b.login(ALICE_ON_NODE_B, "alice", T0 + 4_000);
    node_b.hub.drain();
    let (joined, outs) = node_b.join(ALICE_ON_NODE_B, &sid, None, T0 + 4_000);
    assert_eq!(uids(joined.expect("alice rejoins")), ["alice", "bob"]);
    assert!(outs.is_empty(), "a rejoin is not news to bob: {outs:?}");
    let signal = Request::Signal {
        session_id: sid.clone(),
        to: "bob".into(),
        signal: PeerSignal::Offer { sdp: "v=0".into() },
    };
    let (answer, outs) = node_b.request(ALICE_ON_NODE_B, signal, T0 + 4_100);
    assert_eq!(answer, Ok(Reply::Ok));
    assert_eq!(
        outs,
        [event(
            BOB,
            ServerEvent::Signal {
                session_id: sid.clone(),
                from: "alice".into(),
                signal: PeerSignal::Offer { sdp: "v=0".into() },
            }
        )]
    );
    // Past the reconnect grace nothing happens: both are connected.
    assert!(node_b.tick(T0 + 60_000).is_empty());
    node_b.ok(
        ALICE_ON_NODE_B,
        Request::LeaveSession {
            session_id: sid.clone(),
        },
        T0 + 70_000,
    );
    let logs: Vec<CallLog> = node_b
        .call_logs()
        .into_iter()
        .filter(|log| log.session_id == sid)
        .collect();
    assert_eq!(logs.len(), 1, "{logs:?}");
    assert_eq!(logs[0].status, CallStatus::Ended);
    assert_eq!(logs[0].participants, ["alice", "bob"]);
    assert_eq!(logs[0].ended_at, Some(T0 + 70_000));
}

/// A call ringing a user who was away rings them when they log in on another node (as it
/// does on a login here); a mirror that is only resynced rings nothing.
#[test]
fn a_ringing_call_rings_a_user_logging_in_on_another_node() {
    let mut h = Harness::new(lobby_config());
    h.login(ALICE, "alice", T0);
    h.login(BOB, "bob", T0);
    h.hub.disconnect(BOB, T0);
    h.hub.drain();
    let call = h.call(ALICE, "bob", None, T0);
    h.hub.attach_remote(DAVE_ON_NODE_B, "bob");
    assert!(h.hub.drain().is_empty(), "a resynced mirror is not rung");
    h.hub.attach_remote(BOB_ON_NODE_B, "bob");
    h.hub.logged_in_remotely(BOB_ON_NODE_B);
    assert_eq!(
        h.hub.drain(),
        [event(
            BOB_ON_NODE_B,
            ServerEvent::IncomingCallReceived { call }
        )]
    );
}

/// A session through the SFU, taken over by another node's hub: with the room its SFU last
/// reported, the room is adopted (the route stays `sfu`, nobody is told anything); without a
/// report, it goes on as a mesh and its members still connected are told so.
#[test]
fn a_restored_sfu_session_adopts_its_room_or_goes_back_to_the_mesh() {
    use huddle_protocol::MediaRoute;
    let mut h = sfu_harness(0);
    h.login(ALICE, "alice", T0);
    h.join(ALICE, "big", None, T0).0.expect("alice joins");
    let name = |conn: ConnId| {
        Some(super::NodeConn {
            node: "a".into(),
            conn,
        })
    };
    let unreported = h.hub.snapshot_session("big", name).expect("held");
    let room = serde_json::json!({"room_id": 7});
    h.hub.handle_sfu_news(SfuNews::RoomState {
        session_id: "big".into(),
        state: room.clone(),
    });
    let reported = h.hub.snapshot_session("big", name).expect("held");

    let mut adopter = sfu_harness(0);
    adopter.hub.restore_session(
        "big",
        serde_json::from_str(&serde_json::to_string(&reported).expect("json")).expect("json"),
        |_| Some(BOB),
        T0 + 1_000,
    );
    assert_eq!(
        adopter.hub.drain(),
        [Out::Sfu(SfuCommand::AdoptRoom {
            session_id: "big".into(),
            state: room,
        })]
    );
    assert_eq!(adopter.hub.media_route("big"), Some(MediaRoute::Sfu));

    let mut fallback = sfu_harness(0);
    fallback
        .hub
        .restore_session("big", unreported, |_| Some(BOB), T0 + 1_000);
    assert_eq!(
        fallback.hub.drain(),
        [event(
            BOB,
            ServerEvent::MediaRouteChanged {
                session_id: "big".into(),
                route: MediaRoute::Mesh,
            }
        )]
    );
    assert_eq!(fallback.hub.media_route("big"), Some(MediaRoute::Mesh));
}
