//! Keyboard shortcuts for the active call: M mute, V video, H hand, Esc leave. Leaving takes
//! Esc twice within [`LEAVE_CONFIRM_WINDOW`] (the first press shows "Press Esc again to
//! leave", [`LeaveConfirmation`]), so a stray key does not hang up.

use bevy::prelude::*;
use bevy_huddle::prelude::*;

use crate::bar::{BarState, CallButton};

/// Which keys drive the active call; a game that needs the keys sets `enabled = false`.
#[derive(Resource, Clone, Debug, PartialEq, Eq)]
pub struct CallShortcuts {
    /// Shortcuts are active.
    pub enabled: bool,
    /// Toggles the microphone.
    pub mute: KeyCode,
    /// Toggles the camera.
    pub video: KeyCode,
    /// Raises or lowers the hand.
    pub hand: KeyCode,
    /// Leaves the call.
    pub leave: KeyCode,
    /// Someone is typing (a text field has keyboard focus): keys are text, not shortcuts.
    /// The egui layer sets it every frame; a game with its own text input can set it too.
    pub typing: bool,
}

impl Default for CallShortcuts {
    fn default() -> Self {
        Self {
            enabled: true,
            mute: KeyCode::KeyM,
            video: KeyCode::KeyV,
            hand: KeyCode::KeyH,
            leave: KeyCode::Escape,
            typing: false,
        }
    }
}

/// How long after a first Esc a second one leaves the call.
pub const LEAVE_CONFIRM_WINDOW: std::time::Duration = std::time::Duration::from_secs(3);

/// The leave shortcut was pressed once: until this time (of `Time<Real>`), pressing it again
/// leaves; the UI shows "Press Esc again to leave" meanwhile.
#[derive(Resource, Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaveConfirmation {
    /// When the first press stops counting; `None` when not armed.
    pub armed_until: Option<std::time::Duration>,
}

/// Turns shortcut presses into [`CallAction`]s for the active, joined call.
#[allow(clippy::too_many_arguments)]
pub(crate) fn apply_shortcuts(
    shortcuts: Res<CallShortcuts>,
    keys: Option<Res<ButtonInput<KeyCode>>>,
    active: Res<ActiveCall>,
    calls: Query<(&CallState, &CallMedia, &CallLayout, &CallParticipants)>,
    locals: Query<&ParticipantState, With<LocalParticipant>>,
    time: Res<Time<Real>>,
    mut confirmation: ResMut<LeaveConfirmation>,
    mut actions: MessageWriter<CallAction>,
) {
    let now = time.elapsed();
    if confirmation.armed_until.is_some_and(|until| now >= until) {
        confirmation.armed_until = None;
    }
    let Some(keys) = keys else { return };
    if !shortcuts.enabled || shortcuts.typing || keys.get_just_pressed().next().is_none() {
        return;
    }
    let Some((state, media, layout, participants)) = active.0.and_then(|c| calls.get(c).ok())
    else {
        return;
    };
    if !matches!(state, CallState::InCall) {
        return;
    }
    let local = participants.iter().find_map(|p| locals.get(p).ok());
    let bar = BarState::of(media, layout, local);
    let pressed = [
        (shortcuts.mute, CallButton::Mute),
        (shortcuts.video, CallButton::PauseVideo),
        (shortcuts.hand, CallButton::RaiseHand),
        (shortcuts.leave, CallButton::EndCall),
    ];
    for (key, button) in pressed {
        if button == CallButton::PauseVideo && bar.audio_only {
            continue;
        }
        if !keys.just_pressed(key) {
            continue;
        }
        if button == CallButton::EndCall && confirmation.armed_until.take().is_none() {
            confirmation.armed_until = Some(now + LEAVE_CONFIRM_WINDOW);
            continue;
        }
        if let Some(action) = button.action(&bar) {
            actions.write(action);
        }
    }
}
