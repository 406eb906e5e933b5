//! Ringing screens: what the incoming/outgoing call dialogs show, the choices they offer, and
//! the toasts that report how a call attempt ended.
//!
//! [`note_placed_calls`] shows a call we place at once ("Calling…"), before the server
//! answers; [`follow_ringing`] reads [`RingingEvent`]s into [`RingingScreens`]; [`apply_ringing_choices`]
//! turns each [`RingingChoice`] into the [`RingingAction`] the server expects and, when
//! [`CallUiConfig::join_accepted_calls`] is on, joins accepted calls (call token, then
//! [`StartSession`]).

use std::time::Duration;

use bevy::prelude::*;
use bevy_huddle::prelude::*;
use bevy_huddle::{RingingAction, StartSession};
use huddle_protocol::{Call as WireCall, CallStatus, CallType};

/// How long an outcome toast stays up.
pub const TOAST_DURATION: Duration = Duration::from_secs(4);

/// How the default UI joins calls.
#[derive(Resource, Clone, Debug, PartialEq)]
pub struct CallUiConfig {
    /// Accepted calls (ours or theirs) are joined by the UI: token, then `StartSession`.
    pub join_accepted_calls: bool,
    /// Settings for calls the UI joins (audio-only follows the call type).
    pub settings: CallSettings,
    /// The UI node joined calls render in (`None`: the whole window).
    pub target: Option<Entity>,
}

impl Default for CallUiConfig {
    fn default() -> Self {
        Self {
            join_accepted_calls: true,
            settings: CallSettings::default(),
            target: None,
        }
    }
}

/// A choice made on a ringing screen.
#[derive(Message, Clone, Debug, PartialEq, Eq)]
pub enum RingingChoice {
    /// Answer the incoming call.
    Accept(String),
    /// Decline the incoming call.
    Reject(String),
    /// Decline as busy.
    Busy(String),
    /// Cancel our outgoing call.
    Cancel(String),
}

impl RingingChoice {
    /// The session the choice is about.
    pub fn session_id(&self) -> &str {
        match self {
            RingingChoice::Accept(id)
            | RingingChoice::Reject(id)
            | RingingChoice::Busy(id)
            | RingingChoice::Cancel(id) => id,
        }
    }

    /// The request the server gets for this choice.
    pub fn action(&self) -> RingingAction {
        let session_id = self.session_id().to_owned();
        let status = match self {
            RingingChoice::Accept(_) => return RingingAction::AcceptCall { session_id },
            RingingChoice::Reject(_) => CallStatus::Rejected,
            RingingChoice::Busy(_) => CallStatus::Busy,
            RingingChoice::Cancel(_) => CallStatus::Cancelled,
        };
        RingingAction::RejectCall { session_id, status }
    }
}

/// A short message about how a call attempt ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Toast {
    /// What to show.
    pub text: String,
    /// Time left on screen.
    pub remaining: Duration,
}

/// A call we asked the server to place, before its answer (the "Calling…" screen shows at
/// once, not a round trip later).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlacingCall {
    /// uid or guid rung.
    pub receiver_id: String,
    /// User or group.
    pub receiver_type: huddle_protocol::ReceiverType,
    /// Audio or video.
    pub call_type: CallType,
}

/// What the ringing dialogs show right now.
#[derive(Resource, Clone, Debug, Default, PartialEq)]
pub struct RingingScreens {
    /// The call ringing for us (caller, audio/video): Accept / Reject / Busy.
    pub incoming: Option<WireCall>,
    /// A call we are placing, until the server answers with [`Self::outgoing`] or a refusal.
    pub placing: Option<PlacingCall>,
    /// The call we placed, still ringing: Cancel.
    pub outgoing: Option<WireCall>,
    /// Outcome toasts, oldest first.
    pub toasts: Vec<Toast>,
    /// Display names of the users and groups the login listed (and presence updates since),
    /// by uid or guid, for the ringing screens.
    pub names: std::collections::HashMap<String, String>,
    /// Sessions the UI is joining (accepted, waiting for a token), and whether audio-only.
    joining: Vec<(String, bool)>,
}

impl RingingScreens {
    /// The display name of a uid or guid, or the id itself when unknown.
    pub fn display_name<'a>(&'a self, id: &'a str) -> &'a str {
        self.names.get(id).map_or(id, String::as_str)
    }

    /// Whether an accepted call is being joined (its token asked for, the session not yet
    /// started): the UI shows "Joining…".
    pub fn is_joining(&self) -> bool {
        !self.joining.is_empty()
    }

    fn toast(&mut self, text: String) {
        self.toasts.push(Toast {
            text,
            remaining: TOAST_DURATION,
        });
    }

    /// Remembers that the UI joins `call` and returns the token request that starts it.
    fn start_joining(&mut self, call: &WireCall) -> RingingAction {
        self.joining
            .push((call.session_id.clone(), is_audio_call(call)));
        RingingAction::GenerateToken {
            session_id: call.session_id.clone(),
        }
    }

    fn clear_incoming(&mut self, session_id: &str) -> Option<WireCall> {
        take_if_session(&mut self.incoming, session_id)
    }

    fn clear_outgoing(&mut self, session_id: &str) -> Option<WireCall> {
        take_if_session(&mut self.outgoing, session_id)
    }
}

fn take_if_session(slot: &mut Option<WireCall>, session_id: &str) -> Option<WireCall> {
    slot.take_if(|call| call.session_id == session_id)
}

fn outcome_text(status: CallStatus, who: &str) -> String {
    match status {
        CallStatus::Rejected => format!("{who} declined the call"),
        CallStatus::Busy => format!("{who} is busy"),
        CallStatus::Unanswered => format!("No answer from {who}"),
        CallStatus::Cancelled => format!("Call with {who} cancelled"),
        other => format!("Call with {who}: {other:?}"),
    }
}

/// Notes the calls the app places (to show "Calling…" before the server answers).
pub(crate) fn note_placed_calls(
    mut requests: MessageReader<RingingAction>,
    mut screens: ResMut<RingingScreens>,
) {
    for request in requests.read() {
        if let RingingAction::InitiateCall {
            receiver_id,
            receiver_type,
            call_type,
            ..
        } = request
        {
            screens.placing = Some(PlacingCall {
                receiver_id: receiver_id.clone(),
                receiver_type: *receiver_type,
                call_type: *call_type,
            });
        }
    }
}

/// Updates [`RingingScreens`] from ringing events and ages the toasts.
pub(crate) fn follow_ringing(
    mut events: MessageReader<RingingEvent>,
    mut screens: ResMut<RingingScreens>,
    config: Res<CallUiConfig>,
    mut ringing: MessageWriter<RingingAction>,
    time: Res<Time>,
) {
    let elapsed = time.delta();
    screens.toasts.retain_mut(|toast| {
        toast.remaining = toast.remaining.saturating_sub(elapsed);
        !toast.remaining.is_zero()
    });
    for event in events.read() {
        match event {
            RingingEvent::LoggedIn {
                user,
                contacts,
                groups,
                ..
            } => {
                screens.names.insert(user.uid.clone(), user.name.clone());
                for contact in contacts {
                    let user = &contact.user;
                    screens.names.insert(user.uid.clone(), user.name.clone());
                }
                for group in groups {
                    screens.names.insert(group.guid.clone(), group.name.clone());
                }
            }
            RingingEvent::PresenceChanged(presence) => {
                let user = &presence.user;
                screens.names.insert(user.uid.clone(), user.name.clone());
            }
            RingingEvent::Failed { .. } if screens.placing.is_some() => {
                // The server refused the call (the app shows why).
                screens.placing = None;
            }
            RingingEvent::IncomingCallReceived { call } if screens.incoming.is_none() => {
                screens.incoming = Some(call.clone());
            }
            RingingEvent::IncomingCallCancelled { call } => {
                let was_shown = screens.clear_incoming(&call.session_id).is_some();
                if was_shown {
                    let text = match call.status {
                        CallStatus::Unanswered => {
                            format!("Missed call from {}", call.initiator.name)
                        }
                        _ => format!("{} cancelled the call", call.initiator.name),
                    };
                    screens.toast(text);
                }
            }
            RingingEvent::CallAccepted { call } => {
                screens.clear_incoming(&call.session_id);
                if config.join_accepted_calls {
                    ringing.write(screens.start_joining(call));
                }
            }
            RingingEvent::CallRejected { call } => {
                screens.clear_incoming(&call.session_id);
                if screens.clear_outgoing(&call.session_id).is_some() {
                    let who = screens.display_name(&call.receiver).to_owned();
                    screens.toast(outcome_text(call.status, &who));
                }
            }
            RingingEvent::CallInitiated { call } => {
                screens.placing = None;
                screens.outgoing = Some(call.clone());
            }
            RingingEvent::OutgoingCallAccepted { call, .. } => {
                let ours = screens.clear_outgoing(&call.session_id).is_some();
                if ours && config.join_accepted_calls {
                    ringing.write(screens.start_joining(call));
                }
            }
            RingingEvent::OutgoingCallRejected { call } => {
                screens.placing = None;
                screens.clear_outgoing(&call.session_id);
                let who = screens.display_name(&call.receiver).to_owned();
                screens.toast(outcome_text(call.status, &who));
            }
            RingingEvent::CallEndedMessageReceived { call } => {
                screens.clear_incoming(&call.session_id);
                screens.clear_outgoing(&call.session_id);
            }
            _ => {}
        }
    }
}

/// Talking into a muted microphone gets a hint, as a toast.
pub(crate) fn hint_when_talking_muted(
    mut events: MessageReader<CallEvent>,
    mut screens: ResMut<RingingScreens>,
    shortcuts: Res<crate::CallShortcuts>,
) {
    for event in events.read() {
        if matches!(event, CallEvent::TalkingWhileMuted { .. }) {
            let key = format!("{:?}", shortcuts.mute);
            let key = key.trim_start_matches("Key");
            screens.toast(format!("You are muted: press {key} to unmute"));
        }
    }
}

/// Sends the request for each [`RingingChoice`] and joins calls whose token arrived.
pub(crate) fn apply_ringing_choices(
    mut choices: MessageReader<RingingChoice>,
    mut tokens: MessageReader<RingingEvent>,
    mut screens: ResMut<RingingScreens>,
    config: Res<CallUiConfig>,
    mut ringing: MessageWriter<RingingAction>,
    mut start: MessageWriter<StartSession>,
) {
    for choice in choices.read() {
        ringing.write(choice.action());
    }
    for event in tokens.read() {
        let RingingEvent::TokenGenerated {
            session_id,
            call_token,
        } = event
        else {
            continue;
        };
        let Some(index) = screens.joining.iter().position(|(s, _)| s == session_id) else {
            continue;
        };
        let (_, audio_only) = screens.joining.swap_remove(index);
        let mut settings = config.settings.clone();
        settings.audio_only |= audio_only;
        start.write(StartSession {
            call_token: call_token.clone(),
            settings,
            target: config.target,
        });
    }
}

/// Whether a ringing call is audio-only, for the dialog's label.
pub fn is_audio_call(call: &WireCall) -> bool {
    call.call_type == CallType::Audio
}
