//! Notifications: every [`CallEvent`] is written once, as a Bevy message, by the systems that
//! change call state; the [`notify`](HuddleSystems::Notify) system then hands each one to
//!
//! 1. ECS code reading `MessageReader<CallEvent>` (buffered, two frames),
//! 2. observers (`app.add_observer(|event: On<CallEvent>| ..)`), and
//! 3. plain Rust listeners registered with
//!    [`add_call_event_listener`](CallEventListenerAppExt::add_call_event_listener)
//!    (ringing events: `RingingListenerAppExt::add_ringing_listener` in `net`).
//!
//! All three see the same events in the same order. A listener that panics is caught and
//! logged; the app and the other listeners carry on.
//!
//! [`HuddleSystems::Notify`]: crate::HuddleSystems::Notify

use std::panic::{AssertUnwindSafe, catch_unwind};

use bevy::prelude::*;
use huddle_protocol::ErrorCode;

use crate::call::devices::{DeviceInfo, DeviceKind, DeviceLists};
use crate::call::error::HuddleError;
use crate::call::model::{ConnectionQuality, EndReason};
use crate::call::settings::{AudioMode, LayoutMode};

/// A participant as events name them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallUser {
    /// User id.
    pub uid: String,
    /// Display name.
    pub name: String,
    /// Avatar URL.
    pub avatar: Option<String>,
}

/// Everything a call tells its users (reference event names, plus Huddle's own).
#[non_exhaustive]
#[derive(Message, Event, Clone, Debug, PartialEq)]
pub enum CallEvent {
    /// Someone joined the session.
    UserJoined {
        /// The call.
        call: Entity,
        /// Who.
        user: CallUser,
    },
    /// Someone left the session.
    UserLeft {
        /// The call.
        call: Entity,
        /// Who.
        user: CallUser,
    },
    /// The participant list changed; the whole list, in join order.
    UserListChanged {
        /// The call.
        call: Entity,
        /// Everyone in the call now.
        users: Vec<CallUser>,
    },
    /// A 1:1 call ended (sent to both sides; group calls send `UserLeft` instead).
    CallEnded {
        /// The call.
        call: Entity,
        /// Why.
        reason: EndReason,
    },
    /// The local user pressed end call (only on the side that pressed it).
    CallEndButtonPressed {
        /// The call.
        call: Entity,
    },
    /// The available audio modes or the selected one changed.
    AudioModesUpdated {
        /// The call.
        call: Entity,
        /// Modes this device offers.
        modes: Vec<AudioMode>,
        /// The one in use.
        selected: AudioMode,
    },
    /// A device list changed (hot-plug).
    MediaDeviceListUpdated {
        /// The new lists.
        devices: DeviceLists,
    },
    /// A device was selected (set device, or switch camera).
    MediaDeviceSelected {
        /// Which kind.
        kind: DeviceKind,
        /// The device now in use.
        device: DeviceInfo,
    },
    /// Someone's microphone was muted or unmuted.
    UserMuted {
        /// The call.
        call: Entity,
        /// Whose microphone.
        user: CallUser,
        /// Muted (true) or unmuted.
        muted: bool,
        /// The uid of who did it.
        muted_by: String,
    },
    /// Someone paused or resumed their video.
    UserVideoPaused {
        /// The call.
        call: Entity,
        /// Whose video.
        user: CallUser,
        /// Paused (true) or resumed.
        paused: bool,
    },
    /// Someone started sharing their screen.
    ScreenShareStarted {
        /// The call.
        call: Entity,
        /// Who shares.
        user: CallUser,
    },
    /// Someone stopped sharing their screen.
    ScreenShareStopped {
        /// The call.
        call: Entity,
        /// Who shared.
        user: CallUser,
    },
    /// An audio call became a video call.
    CallSwitchedToVideo {
        /// The call.
        call: Entity,
        /// Its session id.
        session_id: String,
        /// uid of who asked for video.
        initiator: String,
        /// uid of the other side (empty in a group call).
        responder: String,
    },
    /// Recording started or stopped.
    RecordingToggled {
        /// The call.
        call: Entity,
        /// Started (true) or stopped.
        started: bool,
        /// uid of who toggled it.
        by: String,
    },
    /// Our recording of the call was finished and saved (on stop, or when the call ended).
    RecordingSaved {
        /// The call.
        call: Entity,
        /// The Matroska file.
        path: std::path::PathBuf,
        /// How long it lasts, in milliseconds.
        duration_ms: u64,
        /// Its tracks (one video and one audio per participant heard and seen).
        tracks: usize,
    },
    /// Alone in the call for `idle_timeout`: the call ends.
    SessionTimeout {
        /// The call.
        call: Entity,
    },
    /// An operation failed; the call state is unchanged.
    Error {
        /// The call it concerns, if any.
        call: Option<Entity>,
        /// What went wrong.
        error: HuddleError,
    },
    /// The loudest participant changed.
    DominantSpeakerChanged {
        /// The call.
        call: Entity,
        /// uid of the new dominant speaker, if anyone speaks.
        uid: Option<String>,
    },
    /// Someone raised their hand.
    HandRaised {
        /// The call.
        call: Entity,
        /// Who.
        user: CallUser,
    },
    /// Someone lowered their hand.
    HandLowered {
        /// The call.
        call: Entity,
        /// Who.
        user: CallUser,
    },
    /// Someone's network quality changed.
    ConnectionQualityChanged {
        /// The call.
        call: Entity,
        /// Whose.
        user: CallUser,
        /// Now.
        quality: ConnectionQuality,
    },
    /// The layout mode changed.
    ModeChanged {
        /// The call.
        call: Entity,
        /// The new mode.
        mode: LayoutMode,
    },
    /// Picture-in-picture was entered or left.
    PipToggled {
        /// The call.
        call: Entity,
        /// PIP is on.
        active: bool,
    },
    /// A participant was pinned as the main tile, or the pin was removed.
    PinChanged {
        /// The call.
        call: Entity,
        /// uid of the pinned participant, `None` when unpinned.
        pinned: Option<String>,
    },
    /// A participant's local playback volume or local mute changed.
    LocalAudioChanged {
        /// The call.
        call: Entity,
        /// Whose voice.
        user: CallUser,
        /// Volume, 0..=1.
        volume: f32,
        /// Locally muted.
        muted: bool,
    },
    /// We are muted and talking into our microphone (once per stretch of talk), the cue for
    /// a "you are muted" hint as Meet and Zoom show.
    TalkingWhileMuted {
        /// The call.
        call: Entity,
    },
}

impl CallEvent {
    /// The reference error code, for [`CallEvent::Error`].
    pub fn error_code(&self) -> Option<ErrorCode> {
        match self {
            CallEvent::Error { error, .. } => Some(error.code()),
            _ => None,
        }
    }
}

/// A plain Rust listener for events of type `E` (any `FnMut(&E) + Send + Sync` is one).
pub trait EventListener<E>: Send + Sync + 'static {
    /// Called once per event, in order.
    fn on_event(&mut self, event: &E);
}

impl<E, F> EventListener<E> for F
where
    F: FnMut(&E) + Send + Sync + 'static,
{
    fn on_event(&mut self, event: &E) {
        self(event);
    }
}

/// A listener for [`CallEvent`]s.
pub trait CallEventListener: EventListener<CallEvent> {}
impl<T: EventListener<CallEvent>> CallEventListener for T {}

/// Listeners registered by id, called in registration order.
#[derive(Resource)]
pub struct Listeners<E: 'static> {
    entries: Vec<(String, Box<dyn EventListener<E>>)>,
    panics: u64,
}

impl<E: 'static> Default for Listeners<E> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
            panics: 0,
        }
    }
}

/// The registered [`CallEvent`] listeners.
pub type CallEventListeners = Listeners<CallEvent>;

impl<E: std::fmt::Debug + 'static> Listeners<E> {
    /// Registers `listener` under `id`, replacing any listener with the same id.
    pub fn add(&mut self, id: impl Into<String>, listener: impl EventListener<E>) {
        let id = id.into();
        let listener: Box<dyn EventListener<E>> = Box::new(listener);
        match self
            .entries
            .iter_mut()
            .find(|(existing, _)| *existing == id)
        {
            Some(entry) => entry.1 = listener,
            None => self.entries.push((id, listener)),
        }
    }

    /// Removes the listener registered under `id`; it gets nothing more. Returns whether one was.
    pub fn remove(&mut self, id: &str) -> bool {
        let before = self.entries.len();
        self.entries.retain(|(existing, _)| existing != id);
        self.entries.len() != before
    }

    /// Ids of the registered listeners, in call order.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(id, _)| id.as_str())
    }

    /// How many times a listener panicked (each panic was caught and logged).
    pub fn panics(&self) -> u64 {
        self.panics
    }

    /// Hands one event to every listener, catching panics.
    pub fn dispatch(&mut self, event: &E) {
        for (id, listener) in &mut self.entries {
            let outcome = catch_unwind(AssertUnwindSafe(|| listener.on_event(event)));
            if outcome.is_err() {
                self.panics += 1;
                error!("event listener `{id}` panicked on {event:?}; it stays registered");
            }
        }
    }
}

/// `add_call_event_listener` / `remove_call_event_listener` on an `App` or `World` (ringing
/// listeners: `RingingListenerAppExt` in `net`).
pub trait CallEventListenerAppExt {
    /// Registers a [`CallEvent`] listener under `id` (replacing one with the same id).
    fn add_call_event_listener(
        &mut self,
        id: impl Into<String>,
        listener: impl EventListener<CallEvent>,
    ) -> &mut Self;
    /// Removes the [`CallEvent`] listener registered under `id`.
    fn remove_call_event_listener(&mut self, id: &str) -> &mut Self;
}

impl CallEventListenerAppExt for World {
    fn add_call_event_listener(
        &mut self,
        id: impl Into<String>,
        listener: impl EventListener<CallEvent>,
    ) -> &mut Self {
        self.get_resource_or_init::<CallEventListeners>()
            .add(id, listener);
        self
    }

    fn remove_call_event_listener(&mut self, id: &str) -> &mut Self {
        if let Some(mut listeners) = self.get_resource_mut::<CallEventListeners>() {
            listeners.remove(id);
        }
        self
    }
}

impl CallEventListenerAppExt for App {
    fn add_call_event_listener(
        &mut self,
        id: impl Into<String>,
        listener: impl EventListener<CallEvent>,
    ) -> &mut Self {
        self.world_mut().add_call_event_listener(id, listener);
        self
    }

    fn remove_call_event_listener(&mut self, id: &str) -> &mut Self {
        self.world_mut().remove_call_event_listener(id);
        self
    }
}

/// Fans each new event message of type `E` out to listeners and observers.
pub(crate) fn notify<E>(
    mut events: MessageReader<E>,
    mut listeners: ResMut<Listeners<E>>,
    mut commands: Commands,
) where
    E: Message + Event + Clone + std::fmt::Debug,
    for<'a> E::Trigger<'a>: Default,
{
    for event in events.read() {
        listeners.dispatch(event);
        commands.trigger(event.clone());
    }
}
