//! The server connection: login, the ringing flow, call tokens and sessions, bridged into ECS.
//!
//! - [`HuddleRuntime`](crate::HuddleRuntime): the tokio runtime the network tasks run on
//!   (built by default, or the game's own `Handle`). Never Bevy's task pools.
//! - [`ServerConnection`] (request component): spawn it with a URL and a uid; the plugin
//!   starts a `huddle_client` task and attaches its channel ends ([`ConnectionLink`]);
//!   [`ConnectionStatus`] follows it (connecting, online, reconnecting, offline).
//! - In: [`RingingAction`] messages (initiate, accept, reject/cancel, end, generate token,
//!   call logs) and [`StartSession`] (a call token + settings + target → a [`Call`] entity
//!   with a [`CallToken`], joined through the connection).
//! - Out: [`RingingEvent`] messages and observer events (incoming call, accepted, rejected,
//!   cancelled, ended, token generated, call logs, presence, failures); session news become
//!   [`SessionUpdate`]s, so the call model applies them like any transport's; peer signals
//!   travel as the call model's [`OutboundPeerSignal`] / [`PeerSignalReceived`], and a joined
//!   call is marked [`RelayedBy`] this connection.
//! - [`drain_connections`] runs in [`HuddleSystems::Receive`](crate::HuddleSystems::Receive)
//!   and only `try_recv`s; [`send_requests`] runs in
//!   [`HuddleSystems::Send`](crate::HuddleSystems::Send) and only `try_send`s.
//! - A dropped connection reconnects with backoff; calls stay up, and once logged in again
//!   each live call joins its session again (the server kept the place) and the participant
//!   list is reconciled. If the client gives up, every live call ends with
//!   [`EndReason::ConnectionLost`].

use std::collections::HashMap;

use bevy::prelude::*;
pub use huddle_client::DropReason;
use huddle_client::{Backoff, ClientCommand, ClientConfig, ClientEvent, ClientHandle};
use huddle_protocol::{
    Call as WireCall, CallLog, CallLogQuery, CallStatus, CallType, ErrorBody, Presence,
    ReceiverType, Reply, Request, ServerEvent, SessionEndReason, SessionParticipant, StateChange,
    User,
};

use crate::HuddleRuntime;
use crate::call::actions::{OutboundSignal, Signal};
use crate::call::error::HuddleError;
use crate::call::events::CallEvent;
use crate::call::model::*;
use crate::call::session::{ParticipantInfo, SessionChange, SessionUpdate};
use crate::call::settings::CallSettings;
use crate::call::signal::{
    CallMediaRoute, IceServers, OutboundPeerSignal, PeerSignalReceived, RelayedBy,
    TransportCheckWanted,
};

/// A connection to a Huddle server (request component).
#[derive(Component, Clone, Debug)]
#[require(ConnectionStatus)]
pub struct ServerConnection {
    /// WebSocket URL, e.g. `ws://127.0.0.1:7878/ws`.
    pub url: String,
    /// Other nodes of the same cluster, tried in turn after `url` when a connection drops.
    pub fallback_urls: Vec<String>,
    /// Who to log in as.
    pub uid: String,
    /// Display name (dev login creates the user with it).
    pub name: Option<String>,
    /// Auth token from the admin API; `None` uses dev login.
    pub auth_token: Option<String>,
    /// Reconnection policy.
    pub backoff: Backoff,
    /// Extra trusted CA certificates (PEM) for a `wss://` server with its own CA.
    pub ca_file: Option<std::path::PathBuf>,
}

impl ServerConnection {
    /// Dev login as `uid` at `url`.
    pub fn dev(url: impl Into<String>, uid: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            fallback_urls: Vec::new(),
            uid: uid.into(),
            name: None,
            auth_token: None,
            backoff: Backoff::default(),
            ca_file: None,
        }
    }

    /// Trust the CA certificates in this PEM file too (`wss://` with a self-hosted CA).
    pub fn with_ca_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }

    /// Log in with an auth token.
    pub fn with_auth_token(mut self, token: impl Into<String>) -> Self {
        self.auth_token = Some(token.into());
        self
    }

    /// With a display name.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// With a reconnection policy.
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }
}

/// Where a connection is.
#[derive(Component, Clone, Debug, Default, PartialEq)]
pub enum ConnectionStatus {
    /// Connecting and logging in.
    #[default]
    Connecting,
    /// Logged in.
    Online {
        /// Who we are.
        user: User,
        /// Auth token for `generate_token`.
        auth_token: String,
    },
    /// The socket dropped; reconnecting.
    Reconnecting {
        /// Why it dropped.
        reason: DropReason,
    },
    /// Stopped for good.
    Offline {
        /// Why.
        error: HuddleError,
    },
}

/// What a sent request was, to route its answer.
#[derive(Clone, Debug)]
enum Pending {
    Ringing,
    Token { session_id: String },
    Join { call: Entity, rejoin: bool },
    Session { call: Entity },
}

/// The live half of a [`ServerConnection`]: the client task's channel ends.
#[derive(Component)]
pub struct ConnectionLink {
    client: ClientHandle,
    next_id: u64,
    pending: HashMap<u64, Pending>,
}

impl ConnectionLink {
    fn request(&mut self, request: Request, pending: Pending) -> bool {
        self.next_id += 1;
        let id = self.next_id;
        let sent = self.client.send(ClientCommand::Request { id, request });
        if sent {
            self.pending.insert(id, pending);
        }
        sent
    }

    /// Drops the socket as a network failure would (the client reconnects). A test hook
    /// (feature `test-utils`).
    #[cfg(feature = "test-utils")]
    pub fn drop_connection(&self) {
        self.client.send(ClientCommand::DropConnection);
    }
}

/// The ringing API of the reference SDK, as requests.
#[non_exhaustive]
#[derive(Message, Clone, Debug, PartialEq)]
pub enum RingingAction {
    /// Place a call (reference `initiateCall`).
    InitiateCall {
        /// uid or guid.
        receiver_id: String,
        /// User or group.
        receiver_type: ReceiverType,
        /// Audio or video.
        call_type: CallType,
        /// Ringing timeout (default 45 s).
        timeout_secs: Option<u32>,
    },
    /// Accept an incoming call.
    AcceptCall {
        /// The call.
        session_id: String,
    },
    /// Reject (`Rejected`/`Busy`) or cancel (`Cancelled`) a call.
    RejectCall {
        /// The call.
        session_id: String,
        /// `Rejected`, `Busy` or `Cancelled`.
        status: CallStatus,
    },
    /// End a call for everyone.
    EndCall {
        /// The call.
        session_id: String,
    },
    /// Get a call token for a session (reference `generateToken`).
    GenerateToken {
        /// The session.
        session_id: String,
    },
    /// List call logs.
    ListCallLogs {
        /// Filters and page.
        query: CallLogQuery,
    },
}

/// Join a session (reference `startSession`): spawns a [`Call`] with a [`CallToken`].
#[derive(Message, Clone, Debug)]
pub struct StartSession {
    /// A call token from [`RingingEvent::TokenGenerated`].
    pub call_token: String,
    /// How the call looks and starts.
    pub settings: CallSettings,
    /// The UI node to render in (none for headless).
    pub target: Option<Entity>,
}

/// The call token a [`Call`] joins its session with; the connection sends it.
#[derive(Component, Clone, Debug)]
pub struct CallToken(pub String);

/// Notifications of the ringing flow and the connection.
#[non_exhaustive]
#[derive(Message, Event, Clone, Debug, PartialEq)]
pub enum RingingEvent {
    /// Logged in (again, after a reconnect).
    LoggedIn {
        /// Who we are.
        user: User,
        /// Contacts and presence.
        contacts: Vec<Presence>,
        /// The groups we belong to (what group calls can ring).
        groups: Vec<huddle_protocol::GroupInfo>,
        /// Whether this follows a drop.
        reconnected: bool,
    },
    /// Our call was placed (answer to `InitiateCall`).
    CallInitiated {
        /// The call.
        call: WireCall,
    },
    /// Someone is calling us.
    IncomingCallReceived {
        /// The call.
        call: WireCall,
    },
    /// We accepted a call (answer to `AcceptCall`).
    CallAccepted {
        /// The call.
        call: WireCall,
    },
    /// We rejected or cancelled a call (answer to `RejectCall`).
    CallRejected {
        /// The call, with the status we gave.
        call: WireCall,
    },
    /// Our call was accepted.
    OutgoingCallAccepted {
        /// The call.
        call: WireCall,
        /// uid of who accepted.
        by: String,
    },
    /// Our call was rejected, busy or unanswered (see the status).
    OutgoingCallRejected {
        /// The call.
        call: WireCall,
    },
    /// A call ringing for us was cancelled or went unanswered (see the status).
    IncomingCallCancelled {
        /// The call.
        call: WireCall,
    },
    /// A call we were part of ended (reference `CallEndedMessageReceived`).
    CallEndedMessageReceived {
        /// The call.
        call: WireCall,
    },
    /// A call token (answer to `GenerateToken`).
    TokenGenerated {
        /// The session.
        session_id: String,
        /// The token for `StartSession`.
        call_token: String,
    },
    /// Call logs (answer to `ListCallLogs`).
    CallLogs {
        /// This page.
        logs: Vec<CallLog>,
        /// All matching entries.
        total: u64,
    },
    /// A contact came online or went offline.
    PresenceChanged(Presence),
    /// A ringing request failed.
    Failed {
        /// Why.
        error: HuddleError,
    },
    /// The connection dropped; reconnecting.
    ConnectionLost {
        /// Why.
        reason: DropReason,
    },
}

fn server_error(error: ErrorBody) -> HuddleError {
    HuddleError::Server {
        code: error.code,
        message: error.message,
    }
}

/// Starts the client task of each new connection.
///
/// The runtime is created on first use, so an app that never connects pays nothing; insert a
/// [`HuddleRuntime`] built from your own handle to share the game's runtime.
pub(crate) fn connect_servers(
    new: Query<(Entity, &ServerConnection), Without<ConnectionLink>>,
    runtime: Option<Res<HuddleRuntime>>,
    mut commands: Commands,
) {
    if new.is_empty() {
        return;
    }
    let runtime = match runtime {
        Some(runtime) => runtime.clone(),
        None => {
            let runtime = HuddleRuntime::default();
            commands.insert_resource(runtime.clone());
            runtime
        }
    };
    for (entity, connection) in &new {
        let client = huddle_client::spawn(
            runtime.handle(),
            ClientConfig {
                url: connection.url.clone(),
                fallback_urls: connection.fallback_urls.clone(),
                uid: connection.uid.clone(),
                auth_token: connection.auth_token.clone(),
                name: connection.name.clone(),
                backoff: connection.backoff,
                ca_file: connection.ca_file.clone(),
            },
        );
        commands.entity(entity).insert(ConnectionLink {
            client,
            next_id: 0,
            pending: HashMap::new(),
        });
    }
}

/// Everything the drain needs to route news into the call model.
#[derive(bevy::ecs::system::SystemParam)]
pub(crate) struct Bridge<'w, 's> {
    calls: Query<
        'w,
        's,
        (
            Entity,
            &'static mut Call,
            &'static CallState,
            Option<&'static RelayedBy>,
            Option<&'static CallToken>,
        ),
    >,
    participants: Query<'w, 's, (&'static Participant, &'static ParticipantOf)>,
    ringing: MessageWriter<'w, RingingEvent>,
    updates: MessageWriter<'w, SessionUpdate>,
    signals: MessageWriter<'w, PeerSignalReceived>,
    commands: Commands<'w, 's>,
}

impl Bridge<'_, '_> {
    fn call_for_session(&self, session_id: &str) -> Option<Entity> {
        self.calls
            .iter()
            .find(|(_, call, state, ..)| call.session_id == session_id && !state.is_ended())
            .map(|(entity, ..)| entity)
    }

    fn update(&mut self, call: Entity, change: SessionChange) {
        self.updates.write(SessionUpdate { call, change });
    }

    fn uids_in(&self, call: Entity) -> Vec<String> {
        self.participants
            .iter()
            .filter(|(_, of)| of.0 == call)
            .map(|(p, _)| p.uid.clone())
            .collect()
    }
}

fn participant_info(p: &SessionParticipant) -> ParticipantInfo {
    ParticipantInfo {
        uid: p.uid.clone(),
        name: p.name.clone(),
        avatar: p.avatar.clone(),
        audio_muted: p.audio_muted,
        video_paused: p.video_paused,
    }
}

/// Drains every connection's events (never blocks) and routes them.
pub(crate) fn drain_connections(
    mut connections: Query<(
        Entity,
        &ServerConnection,
        &mut ConnectionLink,
        &mut ConnectionStatus,
    )>,
    mut bridge: Bridge,
) {
    for (connection, config, mut link, mut status) in &mut connections {
        while let Ok(event) = link.client.events.try_recv() {
            match event {
                ClientEvent::Connected {
                    user,
                    auth_token,
                    contacts,
                    groups,
                    reconnected,
                } => {
                    *status = ConnectionStatus::Online {
                        user: user.clone(),
                        auth_token,
                    };
                    bridge.ringing.write(RingingEvent::LoggedIn {
                        user,
                        contacts,
                        groups,
                        reconnected,
                    });
                    if reconnected {
                        rejoin_calls(connection, &mut link, &bridge);
                    }
                }
                ClientEvent::Disconnected { reason } => {
                    *status = ConnectionStatus::Reconnecting {
                        reason: reason.clone(),
                    };
                    bridge
                        .ringing
                        .write(RingingEvent::ConnectionLost { reason });
                }
                ClientEvent::GaveUp { code, reason } => {
                    let error = if code == huddle_protocol::ErrorCode::UnknownApiError {
                        HuddleError::Unreachable(reason)
                    } else {
                        HuddleError::Server {
                            code,
                            message: reason,
                        }
                    };
                    *status = ConnectionStatus::Offline {
                        error: error.clone(),
                    };
                    let lost: Vec<Entity> = bridge
                        .calls
                        .iter()
                        .filter(|(_, _, state, via, _)| {
                            !state.is_ended() && via.is_none_or(|v| v.0 == connection)
                        })
                        .map(|(e, ..)| e)
                        .collect();
                    for call in lost {
                        bridge.update(call, SessionChange::Failed(error.clone()));
                        bridge.update(
                            call,
                            SessionChange::Ended {
                                reason: EndReason::ConnectionLost,
                            },
                        );
                    }
                    bridge.ringing.write(RingingEvent::Failed { error });
                }
                ClientEvent::Answer { id, result } => {
                    let Some(pending) = link.pending.remove(&id) else {
                        continue;
                    };
                    route_answer(pending, result, &config.uid, &mut bridge);
                }
                ClientEvent::Event(event) => route_event(event, &mut bridge),
            }
        }
    }
}

/// After a reconnect, each live call joins its session again.
fn rejoin_calls(connection: Entity, link: &mut ConnectionLink, bridge: &Bridge) {
    // In the session: rejoin and reconcile. Still joining: the join was lost, join afresh.
    let rejoins: Vec<(Entity, String, String, bool)> = bridge
        .calls
        .iter()
        .filter(|(_, _, state, via, token)| {
            matches!(state, CallState::InCall | CallState::Joining)
                && token.is_some()
                && via.is_some_and(|v| v.0 == connection)
        })
        .filter_map(|(entity, call, state, _, token)| {
            token.map(|t| {
                let rejoin = *state == CallState::InCall;
                (entity, call.session_id.clone(), t.0.clone(), rejoin)
            })
        })
        .collect();
    for (call, session_id, call_token, rejoin) in rejoins {
        link.request(
            Request::JoinSession {
                session_id,
                call_token,
                idle_timeout_secs: None,
                audio_muted: false,
                video_paused: false,
            },
            Pending::Join { call, rejoin },
        );
    }
}

fn route_answer(
    pending: Pending,
    result: Result<Reply, ErrorBody>,
    my_uid: &str,
    bridge: &mut Bridge,
) {
    match (pending, result) {
        (Pending::Ringing, Ok(Reply::Call { call })) => {
            let event = match call.status {
                CallStatus::Ongoing if call.initiator.uid != my_uid => {
                    RingingEvent::CallAccepted { call }
                }
                CallStatus::Rejected
                | CallStatus::Busy
                | CallStatus::Cancelled
                | CallStatus::Ended => RingingEvent::CallRejected { call },
                _ => RingingEvent::CallInitiated { call },
            };
            bridge.ringing.write(event);
        }
        (Pending::Ringing, Ok(Reply::CallLogs { logs, total })) => {
            bridge.ringing.write(RingingEvent::CallLogs { logs, total });
        }
        (Pending::Token { session_id }, Ok(Reply::Token { call_token, .. })) => {
            bridge.ringing.write(RingingEvent::TokenGenerated {
                session_id,
                call_token,
            });
        }
        (Pending::Ringing | Pending::Token { .. }, Ok(_)) => {}
        (Pending::Ringing | Pending::Token { .. }, Err(error)) => {
            bridge.ringing.write(RingingEvent::Failed {
                error: server_error(error),
            });
        }
        (
            Pending::Join { call, rejoin },
            Ok(Reply::Joined {
                participants,
                one_to_one,
                ice_servers,
                media_route,
                ..
            }),
        ) => {
            if let Ok(mut entity) = bridge.commands.get_entity(call) {
                entity.insert((IceServers(ice_servers), CallMediaRoute(media_route)));
            }
            if let Ok((_, mut info, ..)) = bridge.calls.get_mut(call) {
                info.is_group = !one_to_one;
            }
            if rejoin {
                let present = bridge.uids_in(call);
                for p in participants.iter().filter(|p| !present.contains(&p.uid)) {
                    bridge.update(call, SessionChange::ParticipantJoined(participant_info(p)));
                }
                for uid in present
                    .into_iter()
                    .filter(|uid| !participants.iter().any(|p| &p.uid == uid))
                {
                    bridge.update(call, SessionChange::ParticipantLeft { uid });
                }
            } else {
                let local = participants
                    .iter()
                    .find(|p| p.uid == my_uid)
                    .map(participant_info)
                    .unwrap_or_else(|| ParticipantInfo::new(my_uid, my_uid));
                let others = participants
                    .iter()
                    .filter(|p| p.uid != my_uid)
                    .map(participant_info)
                    .collect();
                bridge.update(call, SessionChange::Joined { local, others });
            }
        }
        // The socket dropped before the answer: the join is sent again after the reconnect.
        (Pending::Join { .. }, Err(error))
            if error.code == huddle_protocol::ErrorCode::UnknownApiError => {}
        (Pending::Join { call, .. }, Err(error)) => {
            for change in SessionChange::failed_and_ended(server_error(error)) {
                bridge.update(call, change);
            }
        }
        (Pending::Join { .. } | Pending::Session { .. }, Ok(_)) => {}
        // Signals and state changes sent just before the socket dropped: the drop itself is
        // reported once (the connection's status), the call rejoins after the reconnect, and
        // the media repairs itself (an ICE restart offers again); not an error per request.
        (Pending::Session { .. }, Err(error))
            if error.code == huddle_protocol::ErrorCode::UnknownApiError => {}
        (Pending::Session { call }, Err(error)) => {
            bridge.update(call, SessionChange::Failed(server_error(error)));
        }
    }
}

fn route_event(event: ServerEvent, bridge: &mut Bridge) {
    match event {
        ServerEvent::IncomingCallReceived { call } => {
            bridge
                .ringing
                .write(RingingEvent::IncomingCallReceived { call });
        }
        ServerEvent::OutgoingCallAccepted { call, by } => {
            bridge
                .ringing
                .write(RingingEvent::OutgoingCallAccepted { call, by });
        }
        ServerEvent::OutgoingCallRejected { call } => {
            bridge
                .ringing
                .write(RingingEvent::OutgoingCallRejected { call });
        }
        ServerEvent::IncomingCallCancelled { call } => {
            bridge
                .ringing
                .write(RingingEvent::IncomingCallCancelled { call });
        }
        ServerEvent::CallEnded { call } => {
            if let Some(entity) = bridge.call_for_session(&call.session_id) {
                bridge.update(
                    entity,
                    SessionChange::Ended {
                        reason: EndReason::RemoteHangUp,
                    },
                );
            }
            bridge
                .ringing
                .write(RingingEvent::CallEndedMessageReceived { call });
        }
        ServerEvent::Presence(presence) => {
            bridge
                .ringing
                .write(RingingEvent::PresenceChanged(presence));
        }
        ServerEvent::ParticipantJoined {
            session_id,
            participant,
        } => {
            if let Some(call) = bridge.call_for_session(&session_id) {
                bridge.update(
                    call,
                    SessionChange::ParticipantJoined(participant_info(&participant)),
                );
            }
        }
        ServerEvent::ParticipantLeft { session_id, uid } => {
            if let Some(call) = bridge.call_for_session(&session_id) {
                bridge.update(call, SessionChange::ParticipantLeft { uid });
            }
        }
        ServerEvent::SessionEnded { session_id, reason } => {
            if let Some(call) = bridge.call_for_session(&session_id) {
                let reason = match reason {
                    SessionEndReason::Ended => EndReason::RemoteHangUp,
                    SessionEndReason::Timeout => EndReason::SessionTimeout,
                    SessionEndReason::ServerShutdown => EndReason::ServerShutdown,
                };
                bridge.update(call, SessionChange::Ended { reason });
            }
        }
        ServerEvent::ParticipantState {
            session_id,
            uid,
            change,
        } => {
            let Some(call) = bridge.call_for_session(&session_id) else {
                return;
            };
            let change = match change {
                StateChange::AudioMuted(muted) => SessionChange::Muted {
                    by: uid.clone(),
                    uid,
                    muted,
                },
                StateChange::VideoPaused(paused) => SessionChange::VideoPaused { uid, paused },
                StateChange::HandRaised(raised) => SessionChange::HandRaised { uid, raised },
                StateChange::ScreenSharing(started) => SessionChange::ScreenShare { uid, started },
                StateChange::Recording(started) => {
                    SessionChange::RecordingToggled { started, by: uid }
                }
                StateChange::SwitchedToVideo(responder) => SessionChange::SwitchedToVideo {
                    initiator: uid,
                    responder,
                },
            };
            bridge.update(call, change);
        }
        ServerEvent::MediaRouteChanged { session_id, route } => {
            if let Some(call) = bridge.call_for_session(&session_id)
                && let Ok(mut entity) = bridge.commands.get_entity(call)
            {
                entity.insert(CallMediaRoute(route));
            }
        }
        ServerEvent::Signal {
            session_id,
            from,
            signal,
        } => {
            if let Some(call) = bridge.call_for_session(&session_id) {
                bridge
                    .signals
                    .write(PeerSignalReceived { call, from, signal });
            }
        }
    }
}

/// `StartSession` → a call entity with its token (the session id is read from the token).
pub(crate) fn start_sessions(
    mut requests: MessageReader<StartSession>,
    mut events: MessageWriter<CallEvent>,
    mut commands: Commands,
) {
    for request in requests.read() {
        let Some(session_id) = huddle_client::session_id_of_token(&request.call_token) else {
            events.write(CallEvent::Error {
                call: None,
                error: HuddleError::MalformedToken,
            });
            continue;
        };
        let mut call = commands.spawn((
            Call::new(session_id, request.settings.clone()),
            CallToken(request.call_token.clone()),
        ));
        if let Some(target) = request.target {
            call.insert(CallTarget(target));
        }
    }
}

/// The connection to use: the first online one, else the first one; with its auth token.
fn pick_connection<'a>(
    connections: &'a mut Query<(Entity, &mut ConnectionLink, &ConnectionStatus)>,
) -> Option<(Entity, Mut<'a, ConnectionLink>, Option<String>)> {
    let mut chosen = None;
    for (entity, link, status) in connections.iter_mut() {
        if matches!(status, ConnectionStatus::Offline { .. }) {
            continue;
        }
        let token = match status {
            ConnectionStatus::Online { auth_token, .. } => Some(auth_token.clone()),
            _ => None,
        };
        let online = token.is_some();
        if chosen.is_none() || online {
            chosen = Some((entity, link, token));
            if online {
                break;
            }
        }
    }
    chosen
}

/// How long a connection asked to prove itself (after a media outage) may stay silent.
const TRANSPORT_CHECK_WITHIN: std::time::Duration = std::time::Duration::from_secs(2);

/// Sends what ECS asked for: joins of new calls, ringing actions, outbound signals.
pub(crate) fn send_requests(
    mut connections: Query<(Entity, &mut ConnectionLink, &ConnectionStatus)>,
    new_calls: Query<(Entity, &Call, &CallState, &CallToken), Without<RelayedBy>>,
    via: Query<(&Call, &RelayedBy)>,
    mut ringing: MessageReader<RingingAction>,
    mut signals: MessageReader<OutboundSignal>,
    mut peer_signals: MessageReader<OutboundPeerSignal>,
    mut checks: MessageReader<TransportCheckWanted>,
    mut failures: MessageWriter<RingingEvent>,
    mut updates: MessageWriter<SessionUpdate>,
    mut commands: Commands,
) {
    for (call, info, state, token) in &new_calls {
        if *state != CallState::Joining {
            continue;
        }
        let not_connected = |updates: &mut MessageWriter<SessionUpdate>| {
            for change in SessionChange::failed_and_ended(HuddleError::NotConnected) {
                updates.write(SessionUpdate { call, change });
            }
        };
        let Some((connection, mut link, _)) = pick_connection(&mut connections) else {
            not_connected(&mut updates);
            commands.entity(call).insert(RelayedBy(Entity::PLACEHOLDER));
            continue;
        };
        let settings = &info.settings;
        let sent = link.request(
            Request::JoinSession {
                session_id: info.session_id.clone(),
                call_token: token.0.clone(),
                idle_timeout_secs: Some(settings.idle_timeout().as_secs().max(1) as u32),
                audio_muted: settings.start_audio_muted,
                video_paused: settings.start_video_muted || settings.audio_only,
            },
            Pending::Join {
                call,
                rejoin: false,
            },
        );
        if !sent {
            not_connected(&mut updates);
        }
        commands.entity(call).insert(RelayedBy(connection));
    }
    let actions: Vec<RingingAction> = ringing.read().cloned().collect();
    if !actions.is_empty() {
        match pick_connection(&mut connections) {
            None => {
                for _ in actions {
                    failures.write(RingingEvent::Failed {
                        error: HuddleError::NotConnected,
                    });
                }
            }
            Some((_, mut link, auth_token)) => {
                for action in actions {
                    let (request, pending) =
                        ringing_request(action, auth_token.clone().unwrap_or_default());
                    if !link.request(request, pending) {
                        failures.write(RingingEvent::Failed {
                            error: HuddleError::NotConnected,
                        });
                    }
                }
            }
        }
    }
    for OutboundSignal { call, signal } in signals.read() {
        let Ok((info, via)) = via.get(*call) else {
            continue;
        };
        let Ok((_, mut link, _)) = connections.get_mut(via.0) else {
            continue;
        };
        let session_id = info.session_id.clone();
        let change = match signal {
            Signal::Leave => None,
            Signal::AudioMuted(v) => Some(StateChange::AudioMuted(*v)),
            Signal::VideoPaused(v) => Some(StateChange::VideoPaused(*v)),
            Signal::HandRaised(v) => Some(StateChange::HandRaised(*v)),
            Signal::ScreenShare(v) => Some(StateChange::ScreenSharing(*v)),
            Signal::Recording(v) => Some(StateChange::Recording(*v)),
            Signal::SwitchedToVideo => Some(StateChange::SwitchedToVideo(String::new())),
        };
        let request = match change {
            None => Request::LeaveSession { session_id },
            Some(change) => Request::State { session_id, change },
        };
        link.request(request, Pending::Session { call: *call });
    }
    for TransportCheckWanted { call } in checks.read() {
        let Ok((_, via)) = via.get(*call) else {
            continue;
        };
        if let Ok((_, link, _)) = connections.get(via.0) {
            link.client.send(ClientCommand::CheckConnection {
                within: TRANSPORT_CHECK_WITHIN,
            });
        }
    }
    for OutboundPeerSignal { call, to, signal } in peer_signals.read() {
        let Ok((info, via)) = via.get(*call) else {
            continue;
        };
        let Ok((_, mut link, _)) = connections.get_mut(via.0) else {
            continue;
        };
        let request = Request::Signal {
            session_id: info.session_id.clone(),
            to: to.clone(),
            signal: signal.clone(),
        };
        link.request(request, Pending::Session { call: *call });
    }
}

/// The protocol request for a ringing action (`auth_token` for `GenerateToken`).
fn ringing_request(action: RingingAction, auth_token: String) -> (Request, Pending) {
    match action {
        RingingAction::InitiateCall {
            receiver_id,
            receiver_type,
            call_type,
            timeout_secs,
        } => (
            Request::InitiateCall {
                receiver_id,
                receiver_type,
                call_type,
                timeout_secs,
            },
            Pending::Ringing,
        ),
        RingingAction::AcceptCall { session_id } => {
            (Request::AcceptCall { session_id }, Pending::Ringing)
        }
        RingingAction::RejectCall { session_id, status } => {
            (Request::RejectCall { session_id, status }, Pending::Ringing)
        }
        RingingAction::EndCall { session_id } => {
            (Request::EndCall { session_id }, Pending::Ringing)
        }
        RingingAction::GenerateToken { session_id } => (
            Request::GenerateToken {
                session_id: session_id.clone(),
                auth_token,
            },
            Pending::Token { session_id },
        ),
        RingingAction::ListCallLogs { query } => {
            (Request::ListCallLogs { query }, Pending::Ringing)
        }
    }
}
