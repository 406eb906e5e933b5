//! # bevy_huddle_ui: the default call UI
//!
//! Add [`HuddleUiPlugin`] after [`bevy_huddle::HuddlePlugins`] and the active call gets a
//! button bar, ringing screens, outcome toasts, a participants panel and keyboard shortcuts,
//! drawn with bevy_egui over the tiles `bevy_huddle` lays out.
//!
//! The UI is split so everything but the drawing runs in a headless `App`:
//!
//! 1. [`ringing`] (`Update`, after [`HuddleSystems::Apply`]): [`RingingEvent`]s become
//!    [`RingingScreens`] (the incoming and outgoing call being shown, and toasts for outcomes:
//!    rejected, busy, unanswered, cancelled). A [`RingingChoice`] (Accept / Reject / Busy /
//!    Cancel) becomes the matching [`RingingAction`]; an accepted call is joined
//!    (token → [`StartSession`]) when [`CallUiConfig::join_accepted_calls`] is on. While an
//!    incoming call shows, [`ringtone`] plays the ringtone.
//! 2. [`bar`]: which [`CallButton`]s the bar shows for the call's settings
//!    ([`bar_buttons`]) and which [`CallAction`] each press sends ([`CallButton::action`]).
//! 3. [`devices`]: the microphone, speaker and camera pickers ([`device_pickers`]) and the
//!    action a pick sends ([`choose_device`]), switching the device live in a call.
//! 4. [`shortcuts`] (`Update`, before [`HuddleSystems::Apply`]): M mutes, V pauses video,
//!    H raises/lowers the hand, Esc twice leaves; a game turns them off with
//!    [`CallShortcuts::enabled`].
//! 5. `draw` (feature `egui`, `EguiPrimaryContextPass`): paints 1–4 with egui and writes the
//!    same [`RingingChoice`]s and [`CallAction`]s a test writes by hand; [`fonts`] gives egui
//!    the system fonts Bevy's text falls back to, so names draw in any script.
//!
//! [`HuddleSystems::Apply`]: bevy_huddle::HuddleSystems::Apply
//! [`RingingEvent`]: bevy_huddle::RingingEvent
//! [`RingingAction`]: bevy_huddle::RingingAction
//! [`StartSession`]: bevy_huddle::StartSession
//! [`CallAction`]: bevy_huddle::CallAction

use bevy::prelude::*;
use bevy_huddle::HuddleSystems;

pub mod bar;
pub mod devices;
#[cfg(feature = "egui")]
mod draw;
#[cfg(feature = "egui")]
pub mod fonts;
#[cfg(feature = "egui")]
pub mod look;
pub mod ringing;
pub mod ringtone;
pub mod shortcuts;

pub use bar::{BarState, CallButton, bar_buttons};
/// bevy_egui, as this crate uses it (for apps that draw more with it).
#[cfg(feature = "egui")]
pub use bevy_egui;
pub use devices::{DeviceOption, DevicePicker, choose_device, device_pickers};
/// Height of the strip at the bottom the call bar is drawn in: lay the call out above it.
#[cfg(feature = "egui")]
pub use draw::{CALL_BAR_HEIGHT, CallUiDraw};
pub use ringing::{CallUiConfig, PlacingCall, RingingChoice, RingingScreens, Toast};
pub use ringtone::{RingtonePlayer, RingtoneSettings};
pub use shortcuts::{CallShortcuts, LeaveConfirmation};

/// The UI's state, ringing flow and shortcuts, without drawing (works under `MinimalPlugins`).
#[derive(Default)]
pub struct HuddleUiStatePlugin;

impl Plugin for HuddleUiStatePlugin {
    fn build(&self, app: &mut App) {
        app.init_resource::<RingingScreens>()
            .init_resource::<CallUiConfig>()
            .init_resource::<CallShortcuts>()
            .init_resource::<LeaveConfirmation>()
            .init_resource::<RingtoneSettings>()
            .init_resource::<RingtonePlayer>()
            .add_message::<RingingChoice>()
            .add_systems(
                Update,
                (
                    shortcuts::apply_shortcuts.before(HuddleSystems::Apply),
                    (
                        ringing::follow_ringing,
                        ringing::apply_ringing_choices,
                        ringtone::ring_while_incoming,
                        ringing::hint_when_talking_muted,
                    )
                        .chain()
                        .after(HuddleSystems::Apply),
                ),
            )
            // The requests of this frame, before the connection sends them.
            .add_systems(
                PostUpdate,
                ringing::note_placed_calls.before(HuddleSystems::Send),
            );
    }
}

/// The whole default UI: [`HuddleUiStatePlugin`] plus the egui drawing (feature `egui`).
///
/// Adds bevy_egui's `EguiPlugin` unless the app already has it.
#[derive(Default)]
pub struct HuddleUiPlugin;

impl Plugin for HuddleUiPlugin {
    fn build(&self, app: &mut App) {
        app.add_plugins(HuddleUiStatePlugin);
        #[cfg(feature = "egui")]
        draw::build(app);
    }
}
