//! The session side of a call: what the transport reports, applied to ECS state.
//!
//! The transport (server connection and peers, in later layers; a test or a local demo
//! today) writes [`SessionUpdate`] messages: joined, someone joined or left, someone muted,
//! the call ended, … [`apply_session_updates`] turns each into state changes and
//! [`CallEvent`]s. It never touches the network: the transport drains its channels in
//! [`HuddleSystems::Receive`](crate::HuddleSystems::Receive) and writes these messages.
//!
//! Also here: [`start_new_calls`] validates a freshly spawned [`Call`] and makes it the active
//! call, and [`end_idle_calls`] ends a call whose local user was alone for `idle_timeout`.

use std::time::Duration;

use bevy::ecs::system::SystemParam;
use bevy::prelude::*;

use crate::call::actions::{CallWorld, Signal};
use crate::call::devices::DeviceLists;
use crate::call::error::HuddleError;
use crate::call::events::CallEvent;
use crate::call::model::*;

/// One participant as the transport describes them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParticipantInfo {
    /// User id.
    pub uid: String,
    /// Display name.
    pub name: String,
    /// Avatar URL.
    pub avatar: Option<String>,
    /// Microphone muted when they joined.
    pub audio_muted: bool,
    /// Camera paused when they joined.
    pub video_paused: bool,
}

impl ParticipantInfo {
    /// A participant with a uid and a name, unmuted.
    pub fn new(uid: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            uid: uid.into(),
            name: name.into(),
            ..default()
        }
    }
}

/// What happened in a call's session, as reported by the transport.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq)]
pub enum SessionChange {
    /// The call is ringing.
    Ringing {
        /// Placed or received.
        direction: CallDirection,
    },
    /// The local user joined; `others` were already there.
    Joined {
        /// The local user.
        local: ParticipantInfo,
        /// Everyone else already in the session.
        others: Vec<ParticipantInfo>,
    },
    /// Someone joined.
    ParticipantJoined(ParticipantInfo),
    /// Someone left.
    ParticipantLeft {
        /// Who.
        uid: String,
    },
    /// Someone's microphone was muted or unmuted.
    Muted {
        /// Whose.
        uid: String,
        /// Muted.
        muted: bool,
        /// uid of who did it.
        by: String,
    },
    /// Someone paused or resumed their camera.
    VideoPaused {
        /// Whose.
        uid: String,
        /// Paused.
        paused: bool,
    },
    /// Someone started or stopped speaking.
    Speaking {
        /// Who.
        uid: String,
        /// Speaking now.
        speaking: bool,
    },
    /// How loud a speaking participant has been over about the last second, dBov (0
    /// loudest, −127 silence); told a few times a second while they speak.
    Loudness {
        /// Who.
        uid: String,
        /// dBov.
        dbov: f32,
    },
    /// The dominant speaker changed.
    DominantSpeaker {
        /// Who, if anyone.
        uid: Option<String>,
    },
    /// Someone raised or lowered their hand.
    HandRaised {
        /// Who.
        uid: String,
        /// Raised.
        raised: bool,
    },
    /// Someone's network quality changed.
    ConnectionQuality {
        /// Whose.
        uid: String,
        /// Now.
        quality: ConnectionQuality,
    },
    /// The candidate pair carrying someone's media was chosen or changed.
    MediaPath {
        /// Whose.
        uid: String,
        /// The pair.
        path: MediaPath,
    },
    /// Someone started or stopped sharing their screen.
    ScreenShare {
        /// Who.
        uid: String,
        /// Started.
        started: bool,
    },
    /// The call switched to video.
    SwitchedToVideo {
        /// Who asked.
        initiator: String,
        /// The other side.
        responder: String,
    },
    /// Recording started or stopped.
    RecordingToggled {
        /// Started.
        started: bool,
        /// uid of who toggled it.
        by: String,
    },
    /// A participant's video arrived or changed size.
    VideoFormat {
        /// Whose.
        uid: String,
        /// Frame size in pixels.
        size: UVec2,
    },
    /// The session is over.
    Ended {
        /// Why.
        reason: EndReason,
    },
    /// The transport failed an operation; the call goes on.
    Failed(HuddleError),
}

impl SessionChange {
    /// What a transport reports when a call cannot join or go on: the error, then the end.
    pub fn failed_and_ended(error: HuddleError) -> [SessionChange; 2] {
        let reason = EndReason::failed(&error);
        [
            SessionChange::Failed(error),
            SessionChange::Ended { reason },
        ]
    }

    /// The participant a media measurement is about (speaking, loudness, link quality, media
    /// path, picture size); `None` for every other change.
    pub fn measured_participant(&self) -> Option<&str> {
        match self {
            SessionChange::Speaking { uid, .. }
            | SessionChange::Loudness { uid, .. }
            | SessionChange::ConnectionQuality { uid, .. }
            | SessionChange::MediaPath { uid, .. }
            | SessionChange::VideoFormat { uid, .. } => Some(uid),
            _ => None,
        }
    }
}

/// A [`SessionChange`] for one call.
#[derive(Message, Clone, Debug, PartialEq)]
pub struct SessionUpdate {
    /// The call.
    pub call: Entity,
    /// What happened.
    pub change: SessionChange,
}

/// The media layer enumerated the devices again (hot-plug).
#[derive(Message, Clone, Debug, PartialEq, Eq)]
pub struct DeviceListRefreshed(pub DeviceLists);

/// Makes each newly spawned [`Call`] the active one after validating its settings.
pub(crate) fn start_new_calls(
    new_calls: Query<(Entity, &Call), Added<Call>>,
    mut world: CallWorld,
) {
    for (call, info) in &new_calls {
        let refusal = if let Err(err) = info.settings.validate() {
            Some(err)
        } else if world.active.0.is_some_and(|other| {
            other != call
                && world
                    .calls
                    .get(other)
                    .is_ok_and(|(_, state, ..)| !state.is_ended())
        }) {
            Some(HuddleError::CallInProgress)
        } else if info.session_id.trim().is_empty() {
            Some(HuddleError::InvalidSessionId(info.session_id.clone()))
        } else {
            None
        };
        let settings = info.settings.clone();
        let Ok((_, mut state, mut layout, mut media, _)) = world.calls.get_mut(call) else {
            continue;
        };
        if let Some(error) = refusal {
            *state = CallState::Ended {
                reason: EndReason::failed(&error),
            };
            world.emit(CallEvent::Error {
                call: Some(call),
                error,
            });
            continue;
        }
        layout.mode = settings.mode;
        media.audio_only = settings.audio_only;
        let modes = &world.audio_modes.0;
        media.audio_mode = if modes.contains(&settings.default_audio_mode) {
            settings.default_audio_mode
        } else {
            modes.first().copied().unwrap_or_default()
        };
        if *state == CallState::Idle {
            *state = CallState::Joining;
        }
        // The call it replaces has ended (a live one refuses the new call above): it goes.
        if let Some(previous) = world.active.0.filter(|previous| *previous != call) {
            world.commands.entity(previous).try_despawn();
        }
        world.active.0 = Some(call);
    }
}

/// How much louder (dB) a speaker must be than a dominant speaker who is still speaking to
/// take over: a talker does not lose the main tile to someone murmuring along.
pub const DOMINANCE_MARGIN_DB: f32 = 6.0;

/// What [`apply_session_updates`] needs besides the [`CallWorld`].
#[derive(SystemParam)]
pub(crate) struct SessionWorld<'w, 's> {
    world: CallWorld<'w, 's>,
    images: Option<ResMut<'w, Assets<Image>>>,
    join_sequence: ResMut<'w, JoinSequence>,
    tiles: Query<'w, 's, (&'static TileOf, &'static mut VideoTile), Without<ScreenShareTile>>,
    /// When each participant last started speaking (a sequence number: later is larger).
    speaking_since: Local<'s, std::collections::HashMap<Entity, u64>>,
    /// How loud each participant has lately been when speaking (dBov).
    loudness: Local<'s, std::collections::HashMap<Entity, f32>>,
}

impl SessionWorld<'_, '_> {
    /// Spawns a participant with its tile and audio route.
    fn spawn_participant(&mut self, call: Entity, info: &ParticipantInfo, local: bool) -> Entity {
        let participant = Participant {
            uid: info.uid.clone(),
            name: info.name.clone(),
            avatar: info.avatar.clone(),
            joined_seq: self.join_sequence.next(),
        };
        let state = ParticipantState {
            audio_muted: info.audio_muted,
            video_paused: info.video_paused,
            ..default()
        };
        let commands = &mut self.world.commands;
        let mut entity = commands.spawn((participant, state, ParticipantOf(call)));
        if local {
            entity.insert(LocalParticipant);
        }
        let id = entity.id();
        let image = self
            .images
            .as_mut()
            .map(|images| images.add(super::video_image::blank_video_image()))
            .unwrap_or_default();
        commands.spawn((
            TileOf(id),
            VideoTile {
                image,
                frame_size: UVec2::ZERO,
            },
        ));
        commands.spawn((RouteOf(id), AudioRoute::default()));
        id
    }

    fn apply(&mut self, call: Entity, change: &SessionChange) -> Result<Applied, HuddleError> {
        let w = &mut self.world;
        if w.calls.get(call).is_err() {
            return Err(HuddleError::NoActiveCall);
        }
        let ended = w.calls.get(call).is_ok_and(|(_, s, ..)| s.is_ended());
        if ended {
            // Late news about a finished call changes nothing.
            return Ok(Applied::Done);
        }
        if let Some(uid) = change.measured_participant()
            && w.participant_by_uid(call, uid).is_none()
        {
            // The media's late figures about someone who just left (their connection's last
            // report raced their leave): stale, not an error.
            return Ok(Applied::Done);
        }
        match change {
            SessionChange::Ringing { direction } => {
                let (_, mut state, ..) = w
                    .calls
                    .get_mut(call)
                    .map_err(|_| HuddleError::NoActiveCall)?;
                *state = CallState::Ringing {
                    direction: *direction,
                };
            }
            SessionChange::Joined { local, others } => {
                let (info, mut state, ..) = w
                    .calls
                    .get_mut(call)
                    .map_err(|_| HuddleError::NoActiveCall)?;
                if *state == CallState::InCall {
                    return Ok(Applied::Done);
                }
                *state = CallState::InCall;
                let settings = info.settings.clone();
                let local = ParticipantInfo {
                    audio_muted: settings.start_audio_muted,
                    video_paused: settings.start_video_muted || settings.audio_only,
                    ..local.clone()
                };
                self.spawn_participant(call, &local, true);
                for other in others {
                    self.spawn_participant(call, other, false);
                }
                let w = &mut self.world;
                if settings.start_audio_muted {
                    w.signal(call, Signal::AudioMuted(true));
                }
                if local.video_paused {
                    w.signal(call, Signal::VideoPaused(true));
                }
                let (.., media, _) = w.calls.get(call).map_err(|_| HuddleError::NoActiveCall)?;
                let selected = media.audio_mode;
                let modes = w.audio_modes.0.clone();
                w.emit(CallEvent::AudioModesUpdated {
                    call,
                    modes,
                    selected,
                });
                if settings.start_recording_on_call_start {
                    w.set_recording(call, true, local.uid.clone(), true);
                }
                // The user list is announced once the spawns are applied.
                return Ok(Applied::Spawned);
            }
            SessionChange::ParticipantJoined(info) => {
                if w.participant_by_uid(call, &info.uid).is_some() {
                    return Ok(Applied::Done);
                }
                self.spawn_participant(call, info, false);
                let user = Participant {
                    uid: info.uid.clone(),
                    name: info.name.clone(),
                    avatar: info.avatar.clone(),
                    joined_seq: 0,
                }
                .to_user();
                self.world.emit(CallEvent::UserJoined { call, user });
                return Ok(Applied::Spawned);
            }
            SessionChange::ParticipantLeft { uid } => {
                let Some(participant) = w.participant_by_uid(call, uid) else {
                    return Ok(Applied::Done);
                };
                let user = w.user(participant);
                w.commands.entity(participant).try_despawn();
                let (info, _, mut layout, ..) = w
                    .calls
                    .get_mut(call)
                    .map_err(|_| HuddleError::NoActiveCall)?;
                let is_group = info.is_group;
                if layout.pinned == Some(participant) {
                    layout.pinned = None;
                }
                if layout.dominant_speaker == Some(participant) {
                    layout.dominant_speaker = None;
                }
                let users = w
                    .users(call)
                    .into_iter()
                    .filter(|u| u.uid != user.uid)
                    .collect();
                w.emit(CallEvent::UserLeft { call, user });
                w.emit(CallEvent::UserListChanged { call, users });
                if !is_group {
                    w.end_call(call, EndReason::RemoteHangUp);
                }
            }
            SessionChange::Muted { uid, muted, by } => {
                if let Some(user) = self.set_flag(call, uid, *muted, |s| &mut s.audio_muted)? {
                    self.world.emit(CallEvent::UserMuted {
                        call,
                        user,
                        muted: *muted,
                        muted_by: by.clone(),
                    });
                }
            }
            SessionChange::VideoPaused { uid, paused } => {
                if let Some(user) = self.set_flag(call, uid, *paused, |s| &mut s.video_paused)? {
                    self.world.emit(CallEvent::UserVideoPaused {
                        call,
                        user,
                        paused: *paused,
                    });
                }
            }
            SessionChange::Speaking { uid, speaking } => {
                if self
                    .set_flag(call, uid, *speaking, |s| &mut s.speaking)?
                    .is_some()
                {
                    let participant = self.known(call, uid)?;
                    if *speaking {
                        let next = self.speaking_since.values().max().map_or(0, |n| n + 1);
                        self.speaking_since.insert(participant, next);
                    } else {
                        self.loudness.remove(&participant);
                    }
                    self.follow_speakers(call)?;
                }
            }
            SessionChange::Loudness { uid, dbov } => {
                // Only a speaker's loudness counts; it is forgotten when they stop.
                let participant = self.known(call, uid)?;
                let speaking = (self.world.participants.get(participant))
                    .is_ok_and(|(_, _, state, _)| state.speaking);
                if speaking {
                    self.loudness.insert(participant, *dbov);
                    self.follow_speakers(call)?;
                }
            }
            SessionChange::HandRaised { uid, raised } => {
                if let Some(user) = self.set_flag(call, uid, *raised, |s| &mut s.hand_raised)? {
                    self.world.emit(if *raised {
                        CallEvent::HandRaised { call, user }
                    } else {
                        CallEvent::HandLowered { call, user }
                    });
                }
            }
            SessionChange::ScreenShare { uid, started } => {
                if let Some(user) = self.set_flag(call, uid, *started, |s| &mut s.screen_sharing)? {
                    self.world.emit(if *started {
                        CallEvent::ScreenShareStarted { call, user }
                    } else {
                        CallEvent::ScreenShareStopped { call, user }
                    });
                }
            }
            SessionChange::ConnectionQuality { uid, quality } => {
                let participant = self.known(call, uid)?;
                let w = &mut self.world;
                let (_, who, mut state, _) = w
                    .participants
                    .get_mut(participant)
                    .map_err(|_| HuddleError::NoActiveCall)?;
                if state.connection_quality != *quality {
                    state.connection_quality = *quality;
                    let user = who.to_user();
                    w.emit(CallEvent::ConnectionQualityChanged {
                        call,
                        user,
                        quality: *quality,
                    });
                }
            }
            SessionChange::MediaPath { uid, path } => {
                let participant = self.known(call, uid)?;
                let (_, _, mut state, _) = self
                    .world
                    .participants
                    .get_mut(participant)
                    .map_err(|_| HuddleError::NoActiveCall)?;
                if state.media_path.as_ref() != Some(path) {
                    state.media_path = Some(path.clone());
                }
            }
            SessionChange::DominantSpeaker { uid } => {
                let participant = match uid {
                    Some(uid) => Some(self.known(call, uid)?),
                    None => None,
                };
                let w = &mut self.world;
                let (.., mut layout, _, _) = w
                    .calls
                    .get_mut(call)
                    .map_err(|_| HuddleError::NoActiveCall)?;
                if layout.dominant_speaker != participant {
                    layout.dominant_speaker = participant;
                    w.emit(CallEvent::DominantSpeakerChanged {
                        call,
                        uid: uid.clone(),
                    });
                }
            }
            SessionChange::SwitchedToVideo {
                initiator,
                responder,
            } => {
                let (info, _, _, mut media, _) = w
                    .calls
                    .get_mut(call)
                    .map_err(|_| HuddleError::NoActiveCall)?;
                if media.audio_only {
                    media.audio_only = false;
                    let session_id = info.session_id.clone();
                    w.emit(CallEvent::CallSwitchedToVideo {
                        call,
                        session_id,
                        initiator: initiator.clone(),
                        responder: responder.clone(),
                    });
                    w.turn_local_video_on(call)?;
                }
            }
            SessionChange::RecordingToggled { started, by } => {
                w.set_recording(call, *started, by.clone(), false);
            }
            SessionChange::VideoFormat { uid, size } => {
                let participant = self.known(call, uid)?;
                for (tile_of, mut tile) in &mut self.tiles {
                    if tile_of.0 == participant && tile.frame_size != *size {
                        tile.frame_size = *size;
                    }
                }
            }
            SessionChange::Ended { reason } => w.end_call(call, reason.clone()),
            SessionChange::Failed(error) => w.emit(CallEvent::Error {
                call: Some(call),
                error: error.clone(),
            }),
        }
        Ok(Applied::Done)
    }

    fn known(&self, call: Entity, uid: &str) -> Result<Entity, HuddleError> {
        self.world
            .participant_by_uid(call, uid)
            .ok_or_else(|| HuddleError::InvalidArgument {
                argument: "uid",
                reason: format!("no participant `{uid}` in this call"),
            })
    }

    /// Sets one flag of a participant; `Some(user)` when it changed.
    /// The dominant speaker follows the talk: the loudest remote who is speaking (by their
    /// recent loudness; the one who started last among equals) takes over from a dominant
    /// speaker who is not speaking, or who is [`DOMINANCE_MARGIN_DB`] quieter; while nobody
    /// speaks, the last one stays.
    fn follow_speakers(&mut self, call: Entity) -> Result<(), HuddleError> {
        let w = &mut self.world;
        let (.., layout, _, members) = w.calls.get(call).map_err(|_| HuddleError::NoActiveCall)?;
        let current = layout.dominant_speaker;
        let speaking = |p: Entity| w.participants.get(p).is_ok_and(|(_, _, s, _)| s.speaking);
        let loudness = |p: Entity| self.loudness.get(&p).copied().unwrap_or(-127.0);
        let next = members
            .into_iter()
            .flat_map(|m| m.iter())
            .filter(|p| w.participants.get(*p).is_ok_and(|(.., local)| !local))
            .filter(|p| speaking(*p))
            .max_by(|a, b| {
                loudness(*a)
                    .total_cmp(&loudness(*b))
                    .then_with(|| self.speaking_since.get(a).cmp(&self.speaking_since.get(b)))
            });
        // A dominant speaker still speaking stays until someone is clearly louder; one whose
        // loudness has not been told yet stays too.
        if let Some(current) = current.filter(|c| speaking(*c))
            && (!self.loudness.contains_key(&current)
                || next.is_none_or(|n| {
                    n == current || loudness(n) < loudness(current) + DOMINANCE_MARGIN_DB
                }))
        {
            return Ok(());
        }
        let Some(next) = next else {
            return Ok(());
        };
        let uid = w.user(next).uid;
        let (.., mut layout, _, _) = w
            .calls
            .get_mut(call)
            .map_err(|_| HuddleError::NoActiveCall)?;
        layout.dominant_speaker = Some(next);
        w.emit(CallEvent::DominantSpeakerChanged {
            call,
            uid: Some(uid),
        });
        Ok(())
    }

    fn set_flag(
        &mut self,
        call: Entity,
        uid: &str,
        value: bool,
        flag: fn(&mut ParticipantState) -> &mut bool,
    ) -> Result<Option<crate::call::events::CallUser>, HuddleError> {
        let participant = self.known(call, uid)?;
        let (_, who, mut state, _) = self
            .world
            .participants
            .get_mut(participant)
            .map_err(|_| HuddleError::NoActiveCall)?;
        let slot = flag(&mut state);
        if *slot == value {
            return Ok(None);
        }
        *slot = value;
        Ok(Some(who.to_user()))
    }
}

/// What applying one update did.
enum Applied {
    /// State changed (or nothing needed to).
    Done,
    /// Participants were spawned: the user list changes once the spawns are applied.
    Spawned,
}

/// Updates that wait for the participants spawned earlier in the same frame.
#[derive(Resource, Default)]
pub(crate) struct DeferredSessionUpdates {
    pending: Vec<SessionUpdate>,
    /// Calls whose user list must be announced once this frame's spawns are applied.
    list_changed: Vec<Entity>,
}

/// Applies every [`SessionUpdate`], in order.
///
/// Participants are spawned with `Commands`, so an update that follows a join *for the same
/// call* in the same frame waits for the next frame (order is kept).
pub(crate) fn apply_session_updates(
    mut updates: MessageReader<SessionUpdate>,
    mut deferred: ResMut<DeferredSessionUpdates>,
    mut session: SessionWorld,
) {
    for call in std::mem::take(&mut deferred.list_changed) {
        let users = session.world.users(call);
        session
            .world
            .emit(CallEvent::UserListChanged { call, users });
    }
    let queue: Vec<SessionUpdate> = std::mem::take(&mut deferred.pending)
        .into_iter()
        .chain(updates.read().cloned())
        .collect();
    let mut spawned_in: Vec<Entity> = Vec::new();
    for update in queue {
        if spawned_in.contains(&update.call) {
            deferred.pending.push(update);
            continue;
        }
        match session.apply(update.call, &update.change) {
            Ok(Applied::Done) => {}
            Ok(Applied::Spawned) => {
                spawned_in.push(update.call);
                deferred.list_changed.push(update.call);
            }
            Err(error) => session.world.emit(CallEvent::Error {
                call: Some(update.call),
                error,
            }),
        }
    }
}

/// How long the local user has been alone in a call.
#[derive(Component, Clone, Copy, Debug, Default, PartialEq)]
pub struct AloneFor(pub Duration);

/// Ends a call whose local user was alone in it for `idle_timeout` (`SessionTimeout`).
pub(crate) fn end_idle_calls(
    time: Res<Time>,
    mut alone: Query<(Entity, &mut AloneFor)>,
    mut world: CallWorld,
) {
    let mut timed_out = Vec::new();
    for (call, mut alone_for) in &mut alone {
        let Ok((info, state, _, _, members)) = world.calls.get(call) else {
            continue;
        };
        if *state != CallState::InCall || members.is_some_and(|m| m.len() > 1) {
            if alone_for.0 != Duration::ZERO {
                alone_for.0 = Duration::ZERO;
            }
            continue;
        }
        alone_for.0 += time.delta();
        if alone_for.0 >= info.settings.idle_timeout() {
            timed_out.push(call);
        }
    }
    for call in timed_out {
        world.signal(call, Signal::Leave);
        world.end_call(call, EndReason::SessionTimeout);
    }
}

/// Replaces the device lists on hot-plug and announces it.
pub(crate) fn refresh_device_lists(
    mut refreshed: MessageReader<DeviceListRefreshed>,
    mut world: CallWorld,
) {
    for DeviceListRefreshed(lists) in refreshed.read() {
        if world.devices.replace_lists(lists.clone()) {
            world.emit(CallEvent::MediaDeviceListUpdated {
                devices: lists.clone(),
            });
        }
    }
}
