//! In-call actions (reference `CometChatCalls.*` methods) as [`CallAction`] messages.
//!
//! Write them with [`CallControls`] (a `SystemParam` with one method per reference call) or
//! any `MessageWriter<CallAction>`. [`apply_call_actions`] applies each to the active call in
//! [`HuddleSystems::Apply`](crate::HuddleSystems::Apply): it validates, changes local state,
//! announces the change as a [`CallEvent`], and, when peers must know, queues an
//! [`OutboundSignal`] for the transport. A refused action changes nothing and produces a
//! [`CallEvent::Error`] with a typed [`HuddleError`].

use bevy::ecs::system::SystemParam;
use bevy::prelude::*;

use crate::call::devices::{DeviceKind, MediaDevices};
use crate::call::error::HuddleError;
use crate::call::events::{CallEvent, CallUser};
use crate::call::model::*;
use crate::call::settings::{AudioMode, LayoutMode};

/// A request to change the active call (or the devices).
#[non_exhaustive]
#[derive(Message, Clone, Debug, PartialEq)]
pub enum CallAction {
    /// Leave and end the call (reference `endSession`).
    EndSession,
    /// Mute or unmute the microphone: stops sending audio, tells everyone.
    MuteAudio(bool),
    /// Pause or resume the camera: stops sending video, tells everyone.
    PauseVideo(bool),
    /// Switch to the next camera.
    SwitchCamera,
    /// Route audio to a mode (speaker, earpiece, …).
    SetAudioMode(AudioMode),
    /// Show the main tile in a small always-on-top view.
    EnterPip,
    /// Leave picture-in-picture.
    ExitPip,
    /// Turn an audio-only call into a video call.
    SwitchToVideoCall,
    /// Start recording the call.
    StartRecording,
    /// Stop recording the call.
    StopRecording,
    /// Start sharing the screen.
    StartScreenShare,
    /// Stop sharing the screen.
    StopScreenShare,
    /// Share this Bevy camera's picture (its window or image render target) as the screen
    /// share: sets [`CallMedia::shared_camera`] and starts sharing (a share already running switches to the camera). When the share
    /// stops, the setting is cleared: the next `StartScreenShare` shares the desktop.
    ShareCamera(Entity),
    /// Change the layout mode.
    SetMode(LayoutMode),
    /// Use this microphone.
    SetAudioInputDevice(String),
    /// Use this speaker.
    SetAudioOutputDevice(String),
    /// Use this camera.
    SetVideoInputDevice(String),
    /// Make this participant (by uid) the main tile.
    Pin(String),
    /// Remove the pin.
    Unpin,
    /// Raise the local user's hand.
    RaiseHand,
    /// Lower the local user's hand.
    LowerHand,
    /// Set a participant's local playback volume (0..=1), only for us.
    SetParticipantVolume {
        /// Whose voice.
        uid: String,
        /// New volume.
        volume: f32,
    },
    /// Mute or unmute a participant locally, only for us.
    SetParticipantLocalMute {
        /// Whose voice.
        uid: String,
        /// Muted.
        muted: bool,
    },
    /// Forget the active call (reference `clearActiveCall`): its entities are despawned.
    ClearActiveCall,
}

/// What peers must be told about a local change; the transport forwards these.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Signal {
    /// The local user leaves the session.
    Leave,
    /// Microphone muted/unmuted.
    AudioMuted(bool),
    /// Camera paused/resumed.
    VideoPaused(bool),
    /// Hand raised/lowered.
    HandRaised(bool),
    /// Screen share started/stopped.
    ScreenShare(bool),
    /// The call switched to video.
    SwitchedToVideo,
    /// Recording started/stopped.
    Recording(bool),
}

/// A [`Signal`] for the transport of one call.
#[derive(Message, Clone, Debug, PartialEq, Eq)]
pub struct OutboundSignal {
    /// The call.
    pub call: Entity,
    /// What to tell peers.
    pub signal: Signal,
}

/// The in-call API of the reference SDK, as a `SystemParam`.
#[derive(SystemParam)]
pub struct CallControls<'w> {
    actions: MessageWriter<'w, CallAction>,
}

macro_rules! control_methods {
    ($($(#[$doc:meta])* $name:ident($($arg:ident: $ty:ty),*) => $action:expr;)*) => {
        impl CallControls<'_> {
            $(
                $(#[$doc])*
                pub fn $name(&mut self $(, $arg: $ty)*) {
                    self.actions.write($action);
                }
            )*
        }
    };
}

control_methods! {
    /// Reference `endSession`.
    end_session() => CallAction::EndSession;
    /// Reference `muteAudio`.
    mute_audio(muted: bool) => CallAction::MuteAudio(muted);
    /// Reference `pauseVideo`.
    pause_video(paused: bool) => CallAction::PauseVideo(paused);
    /// Reference `switchCamera`.
    switch_camera() => CallAction::SwitchCamera;
    /// Reference `setAudioMode`.
    set_audio_mode(mode: AudioMode) => CallAction::SetAudioMode(mode);
    /// Reference `enterPIPMode`.
    enter_pip() => CallAction::EnterPip;
    /// Reference `exitPIPMode`.
    exit_pip() => CallAction::ExitPip;
    /// Reference `switchToVideoCall`.
    switch_to_video_call() => CallAction::SwitchToVideoCall;
    /// Reference `startRecording`.
    start_recording() => CallAction::StartRecording;
    /// Reference `stopRecording`.
    stop_recording() => CallAction::StopRecording;
    /// Reference `startScreenShare`.
    start_screen_share() => CallAction::StartScreenShare;
    /// Reference `stopScreenShare`.
    stop_screen_share() => CallAction::StopScreenShare;
    /// `startScreenShare` with a game camera as the source: others receive what it renders.
    share_camera(camera: Entity) => CallAction::ShareCamera(camera);
    /// Reference `setMode`.
    set_mode(mode: LayoutMode) => CallAction::SetMode(mode);
    /// Reference `setAudioInputDevice`.
    set_audio_input_device(id: impl Into<String>) => CallAction::SetAudioInputDevice(id.into());
    /// Reference `setAudioOutputDevice`.
    set_audio_output_device(id: impl Into<String>) => CallAction::SetAudioOutputDevice(id.into());
    /// Reference `setVideoInputDevice`.
    set_video_input_device(id: impl Into<String>) => CallAction::SetVideoInputDevice(id.into());
    /// Pin a participant as the main tile.
    pin(uid: impl Into<String>) => CallAction::Pin(uid.into());
    /// Remove the pin.
    unpin() => CallAction::Unpin;
    /// Raise the local hand.
    raise_hand() => CallAction::RaiseHand;
    /// Lower the local hand.
    lower_hand() => CallAction::LowerHand;
    /// Local playback volume of one participant.
    set_participant_volume(uid: impl Into<String>, volume: f32) =>
        CallAction::SetParticipantVolume { uid: uid.into(), volume };
    /// Local mute of one participant.
    set_participant_local_mute(uid: impl Into<String>, muted: bool) =>
        CallAction::SetParticipantLocalMute { uid: uid.into(), muted };
    /// Reference `clearActiveCall`.
    clear_active_call() => CallAction::ClearActiveCall;
}

/// The audio modes this machine offers (desktop: speaker and headphones).
#[derive(Resource, Clone, Debug, PartialEq, Eq)]
pub struct AvailableAudioModes(pub Vec<AudioMode>);

impl Default for AvailableAudioModes {
    fn default() -> Self {
        Self(vec![AudioMode::Speaker, AudioMode::Headphones])
    }
}

/// Everything the appliers read and write, gathered once.
#[derive(SystemParam)]
pub(crate) struct CallWorld<'w, 's> {
    pub commands: Commands<'w, 's>,
    pub active: ResMut<'w, ActiveCall>,
    pub calls: Query<
        'w,
        's,
        (
            &'static Call,
            &'static mut CallState,
            &'static mut CallLayout,
            &'static mut CallMedia,
            // Bevy removes the relationship target once its last participant is gone (an
            // ended call): absent means nobody.
            Option<&'static CallParticipants>,
        ),
    >,
    pub participants: Query<
        'w,
        's,
        (
            Entity,
            &'static Participant,
            &'static mut ParticipantState,
            Has<LocalParticipant>,
        ),
    >,
    pub routes: Query<'w, 's, (&'static RouteOf, &'static mut AudioRoute)>,
    pub devices: ResMut<'w, MediaDevices>,
    pub audio_modes: Res<'w, AvailableAudioModes>,
    pub events: MessageWriter<'w, CallEvent>,
    pub signals: MessageWriter<'w, OutboundSignal>,
}

impl CallWorld<'_, '_> {
    /// The active call, if it is still going on.
    fn live_call(&self) -> Result<Entity, HuddleError> {
        let call = self.active.0.ok_or(HuddleError::NoActiveCall)?;
        let (_, state, ..) = self
            .calls
            .get(call)
            .map_err(|_| HuddleError::NoActiveCall)?;
        if state.is_ended() {
            return Err(HuddleError::CallEnded);
        }
        Ok(call)
    }

    /// The local participant of `call`.
    fn local_participant(&self, call: Entity) -> Result<Entity, HuddleError> {
        let (.., members) = self
            .calls
            .get(call)
            .map_err(|_| HuddleError::NoActiveCall)?;
        members
            .into_iter()
            .flat_map(|m| m.iter())
            .find(|p| self.participants.get(*p).is_ok_and(|(.., local)| local))
            .ok_or(HuddleError::CallEnded)
    }

    /// The participant of `call` with this uid.
    pub(crate) fn participant_by_uid(&self, call: Entity, uid: &str) -> Option<Entity> {
        let (.., members) = self.calls.get(call).ok()?;
        members?.iter().find(|p| {
            self.participants
                .get(*p)
                .is_ok_and(|(_, who, ..)| who.uid == uid)
        })
    }

    fn known_participant(&self, call: Entity, uid: &str) -> Result<Entity, HuddleError> {
        self.participant_by_uid(call, uid)
            .ok_or_else(|| HuddleError::InvalidArgument {
                argument: "uid",
                reason: format!("no participant `{uid}` in this call"),
            })
    }

    pub(crate) fn user(&self, participant: Entity) -> CallUser {
        self.participants
            .get(participant)
            .map(|(_, who, ..)| who.to_user())
            .unwrap_or_else(|_| CallUser {
                uid: String::new(),
                name: String::new(),
                avatar: None,
            })
    }

    pub(crate) fn local_uid(&self, call: Entity) -> String {
        self.local_participant(call)
            .map(|p| self.user(p).uid)
            .unwrap_or_default()
    }

    /// The users of `call` in join order.
    pub(crate) fn users(&self, call: Entity) -> Vec<CallUser> {
        let Ok((.., members)) = self.calls.get(call) else {
            return Vec::new();
        };
        let mut present: Vec<(u64, CallUser)> = members
            .into_iter()
            .flat_map(|m| m.iter())
            .filter_map(|p| self.participants.get(p).ok())
            .map(|(_, who, ..)| (who.joined_seq, who.to_user()))
            .collect();
        present.sort_by_key(|(seq, _)| *seq);
        present.into_iter().map(|(_, user)| user).collect()
    }

    pub(crate) fn signal(&mut self, call: Entity, signal: Signal) {
        self.signals.write(OutboundSignal { call, signal });
    }

    pub(crate) fn emit(&mut self, event: CallEvent) {
        self.events.write(event);
    }

    /// Changes one flag of the local participant; `None` when it already had that value.
    pub(crate) fn set_local_flag(
        &mut self,
        call: Entity,
        value: bool,
        flag: fn(&mut ParticipantState) -> &mut bool,
    ) -> Result<Option<CallUser>, HuddleError> {
        let local = self.local_participant(call)?;
        let (_, who, mut state, _) = self
            .participants
            .get_mut(local)
            .map_err(|_| HuddleError::CallEnded)?;
        let slot = flag(&mut state);
        if *slot == value {
            return Ok(None);
        }
        *slot = value;
        Ok(Some(who.to_user()))
    }

    /// Video starts flowing from the local side (after a switch to video): unpause and tell.
    pub(crate) fn turn_local_video_on(&mut self, call: Entity) -> Result<(), HuddleError> {
        if let Some(user) = self.set_local_flag(call, false, |s| &mut s.video_paused)? {
            self.signal(call, Signal::VideoPaused(false));
            self.emit(CallEvent::UserVideoPaused {
                call,
                user,
                paused: false,
            });
        }
        Ok(())
    }

    /// Starts or stops the local screen share of `call`: the flag, the signal to the others
    /// and `ScreenShareStarted`/`Stopped` (nothing if it already is so).
    fn set_screen_share(&mut self, call: Entity, start: bool) -> Result<(), HuddleError> {
        if let Some(user) = self.set_local_flag(call, start, |s| &mut s.screen_sharing)? {
            self.signal(call, Signal::ScreenShare(start));
            self.emit(if start {
                CallEvent::ScreenShareStarted { call, user }
            } else {
                CallEvent::ScreenShareStopped { call, user }
            });
        }
        Ok(())
    }

    /// Ends `call` with `reason`, emitting `CallEnded` for 1:1 calls. No-op if already ended.
    pub(crate) fn end_call(&mut self, call: Entity, reason: EndReason) {
        let Ok((info, mut state, ..)) = self.calls.get_mut(call) else {
            return;
        };
        if state.is_ended() {
            return;
        }
        let was_in_session = matches!(*state, CallState::InCall | CallState::Joining);
        *state = CallState::Ended {
            reason: reason.clone(),
        };
        let one_to_one = !info.is_group;
        // Everything the call spawned goes with it: its participants and, linked to them,
        // their tiles (UI nodes included), screen-share tiles and audio routes. The call
        // entity stays, ended, for whoever reads the reason, until the next call starts.
        if let Ok((.., Some(members))) = self.calls.get(call) {
            for participant in members.iter() {
                self.commands.entity(participant).try_despawn();
            }
        }
        if reason == EndReason::SessionTimeout {
            self.emit(CallEvent::SessionTimeout { call });
        }
        if one_to_one && was_in_session {
            self.emit(CallEvent::CallEnded { call, reason });
        }
    }

    fn apply(&mut self, action: &CallAction) -> Result<(), HuddleError> {
        match action {
            CallAction::EndSession => {
                let call = self.live_call()?;
                self.emit(CallEvent::CallEndButtonPressed { call });
                self.signal(call, Signal::Leave);
                self.end_call(call, EndReason::LocalHangUp);
            }
            CallAction::MuteAudio(muted) => {
                let call = self.live_call()?;
                if let Some(user) = self.set_local_flag(call, *muted, |s| &mut s.audio_muted)? {
                    self.signal(call, Signal::AudioMuted(*muted));
                    let muted_by = user.uid.clone();
                    self.emit(CallEvent::UserMuted {
                        call,
                        user,
                        muted: *muted,
                        muted_by,
                    });
                }
            }
            CallAction::PauseVideo(paused) => {
                let call = self.live_call()?;
                if let Some(user) = self.set_local_flag(call, *paused, |s| &mut s.video_paused)? {
                    self.signal(call, Signal::VideoPaused(*paused));
                    self.emit(CallEvent::UserVideoPaused {
                        call,
                        user,
                        paused: *paused,
                    });
                }
            }
            CallAction::RaiseHand | CallAction::LowerHand => {
                let raise = *action == CallAction::RaiseHand;
                let call = self.live_call()?;
                if let Some(user) = self.set_local_flag(call, raise, |s| &mut s.hand_raised)? {
                    self.signal(call, Signal::HandRaised(raise));
                    self.emit(if raise {
                        CallEvent::HandRaised { call, user }
                    } else {
                        CallEvent::HandLowered { call, user }
                    });
                }
            }
            CallAction::StartScreenShare | CallAction::StopScreenShare => {
                let call = self.live_call()?;
                let start = *action == CallAction::StartScreenShare;
                if !start && let Ok((_, _, _, mut media, _)) = self.calls.get_mut(call) {
                    // A camera share is one share: the next one is the desktop again.
                    media.shared_camera = None;
                }
                self.set_screen_share(call, start)?;
            }
            CallAction::ShareCamera(camera) => {
                let call = self.live_call()?;
                let local = self.local_participant(call)?;
                let (_, _, _, mut media, _) = self
                    .calls
                    .get_mut(call)
                    .map_err(|_| HuddleError::NoActiveCall)?;
                let switched = media.shared_camera.replace(*camera) != Some(*camera);
                let sharing = self
                    .participants
                    .get(local)
                    .is_ok_and(|(_, _, state, _)| state.screen_sharing);
                if sharing && switched {
                    // The running share ends and a new one starts from the camera.
                    self.set_screen_share(call, false)?;
                }
                self.set_screen_share(call, true)?;
            }
            CallAction::SwitchCamera => {
                let device = self.devices.cycle_camera()?;
                self.emit(CallEvent::MediaDeviceSelected {
                    kind: DeviceKind::VideoInput,
                    device,
                });
            }
            CallAction::SetAudioInputDevice(id) => {
                self.select_device(DeviceKind::AudioInput, id)?
            }
            CallAction::SetAudioOutputDevice(id) => {
                self.select_device(DeviceKind::AudioOutput, id)?;
            }
            CallAction::SetVideoInputDevice(id) => {
                self.select_device(DeviceKind::VideoInput, id)?
            }
            CallAction::SetAudioMode(mode) => {
                let call = self.live_call()?;
                if !self.audio_modes.0.contains(mode) {
                    return Err(HuddleError::invalid_prop(
                        "audio_mode",
                        format!(
                            "{mode:?} is not available here (available: {:?})",
                            self.audio_modes.0
                        ),
                    ));
                }
                let modes = self.audio_modes.0.clone();
                let (.., mut media, _) = self
                    .calls
                    .get_mut(call)
                    .map_err(|_| HuddleError::NoActiveCall)?;
                if media.audio_mode != *mode {
                    media.audio_mode = *mode;
                    self.emit(CallEvent::AudioModesUpdated {
                        call,
                        modes,
                        selected: *mode,
                    });
                }
            }
            CallAction::EnterPip | CallAction::ExitPip => {
                let active = *action == CallAction::EnterPip;
                let call = self.live_call()?;
                let (.., mut media, _) = self
                    .calls
                    .get_mut(call)
                    .map_err(|_| HuddleError::NoActiveCall)?;
                if media.pip != active {
                    media.pip = active;
                    self.emit(CallEvent::PipToggled { call, active });
                }
            }
            CallAction::SwitchToVideoCall => {
                let call = self.live_call()?;
                let local_uid = self.local_uid(call);
                let (info, _, _, mut media, _) = self
                    .calls
                    .get_mut(call)
                    .map_err(|_| HuddleError::NoActiveCall)?;
                if !media.audio_only {
                    return Err(HuddleError::invalid_prop(
                        "audio_only",
                        "the call already carries video",
                    ));
                }
                media.audio_only = false;
                let session_id = info.session_id.clone();
                let is_group = info.is_group;
                let responder = if is_group {
                    String::new()
                } else {
                    self.users(call)
                        .into_iter()
                        .find(|u| u.uid != local_uid)
                        .map(|u| u.uid)
                        .unwrap_or_default()
                };
                self.signal(call, Signal::SwitchedToVideo);
                self.emit(CallEvent::CallSwitchedToVideo {
                    call,
                    session_id,
                    initiator: local_uid,
                    responder,
                });
                self.turn_local_video_on(call)?;
            }
            CallAction::StartRecording | CallAction::StopRecording => {
                let start = *action == CallAction::StartRecording;
                let call = self.live_call()?;
                let by = self.local_uid(call);
                self.set_recording(call, start, by, true);
            }
            CallAction::SetMode(mode) => {
                let call = self.live_call()?;
                let (.., mut layout, _, _) = self
                    .calls
                    .get_mut(call)
                    .map_err(|_| HuddleError::NoActiveCall)?;
                if layout.mode != *mode {
                    layout.mode = *mode;
                    self.emit(CallEvent::ModeChanged { call, mode: *mode });
                }
            }
            CallAction::Pin(uid) => {
                let call = self.live_call()?;
                let participant = self.known_participant(call, uid)?;
                self.set_pin(call, Some(participant));
            }
            CallAction::Unpin => {
                let call = self.live_call()?;
                self.set_pin(call, None);
            }
            CallAction::SetParticipantVolume { uid, volume } => {
                if !volume.is_finite() || !(0.0..=1.0).contains(volume) {
                    return Err(HuddleError::invalid_prop(
                        "volume",
                        format!("must be within 0..=1, got {volume}"),
                    ));
                }
                let call = self.live_call()?;
                let participant = self.known_participant(call, uid)?;
                self.change_route(call, participant, |route| route.volume = *volume);
            }
            CallAction::SetParticipantLocalMute { uid, muted } => {
                let call = self.live_call()?;
                let participant = self.known_participant(call, uid)?;
                self.change_route(call, participant, |route| route.local_mute = *muted);
            }
            CallAction::ClearActiveCall => {
                if let Some(call) = self.active.0.take() {
                    if self
                        .calls
                        .get(call)
                        .is_ok_and(|(_, state, ..)| !state.is_ended())
                    {
                        self.signal(call, Signal::Leave);
                    }
                    self.commands.entity(call).try_despawn();
                }
            }
        }
        Ok(())
    }

    fn select_device(&mut self, kind: DeviceKind, id: &str) -> Result<(), HuddleError> {
        let device = self.devices.select(kind, id)?;
        self.emit(CallEvent::MediaDeviceSelected { kind, device });
        Ok(())
    }

    /// Turns recording on/off; `tell_peers` when the change is ours.
    pub(crate) fn set_recording(
        &mut self,
        call: Entity,
        start: bool,
        by: String,
        tell_peers: bool,
    ) {
        let Ok((.., mut media, _)) = self.calls.get_mut(call) else {
            return;
        };
        if media.recording_by.is_some() == start {
            return;
        }
        media.recording_by = start.then(|| by.clone());
        if tell_peers {
            self.signal(call, Signal::Recording(start));
        }
        self.emit(CallEvent::RecordingToggled {
            call,
            started: start,
            by,
        });
    }

    pub(crate) fn set_pin(&mut self, call: Entity, participant: Option<Entity>) {
        let Ok((.., mut layout, _, _)) = self.calls.get_mut(call) else {
            return;
        };
        if layout.pinned == participant {
            return;
        }
        layout.pinned = participant;
        let pinned = participant.map(|p| self.user(p).uid);
        self.emit(CallEvent::PinChanged { call, pinned });
    }

    fn change_route(
        &mut self,
        call: Entity,
        participant: Entity,
        change: impl Fn(&mut AudioRoute),
    ) {
        let mut changed = None;
        for (route_of, mut route) in &mut self.routes {
            if route_of.0 != participant {
                continue;
            }
            let mut updated = (*route).clone();
            change(&mut updated);
            if updated != *route {
                changed = Some((updated.volume, updated.local_mute));
                *route = updated;
            }
        }
        if let Some((volume, muted)) = changed {
            let user = self.user(participant);
            self.emit(CallEvent::LocalAudioChanged {
                call,
                user,
                volume,
                muted,
            });
        }
    }
}

impl Participant {
    /// This participant as events name them.
    pub fn to_user(&self) -> CallUser {
        CallUser {
            uid: self.uid.clone(),
            name: self.name.clone(),
            avatar: self.avatar.clone(),
        }
    }
}

/// Applies every [`CallAction`] of this frame, in order.
pub(crate) fn apply_call_actions(mut actions: MessageReader<CallAction>, mut world: CallWorld) {
    for action in actions.read() {
        if let Err(error) = world.apply(action) {
            let call = world.active.0;
            world.emit(CallEvent::Error { call, error });
        }
    }
}
