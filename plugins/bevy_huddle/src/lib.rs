//! # bevy_huddle: video/audio calls as ECS data
//!
//! Add [`HuddlePlugins`] to an `App` and a call becomes entities (see [`call::model`]): the call,
//! its participants, each participant's video tile (a bevy_ui node showing an `Image`) and
//! audio route. Everything but rendering and devices runs in a headless `App`
//! (`MinimalPlugins`), so every behaviour is testable with `app.update()`.
//!
//! ## The pipeline, frame by frame
//!
//! 1. [`HuddleSystems::Receive`] (`PreUpdate`): the server connection ([`net`])
//!    drains its channel and writes [`RingingEvent`]s and [`SessionUpdate`]s (joined, someone
//!    joined/left/muted, ended, …). Picking turns pointer input into tile clicks and drags,
//!    which write [`CallAction`]s.
//! 2. [`HuddleSystems::Apply`] (`Update`): a freshly spawned [`Call`] is validated and made the
//!    active call; session updates and in-call actions change state and write [`CallEvent`]s;
//!    calls alone for `idle_timeout` end.
//!    [`HuddleSystems::Media`] (`Update`, after `Apply`): media ([`media`]) starts for calls
//!    in the session, follows joins, leaves, the local mute/pause, route gains and video
//!    demand; its decoded frames land in the tiles' images (drained in `Receive`).
//! 3. [`HuddleSystems::Layout`] (`PostUpdate`, before bevy_ui layout): tile rects are computed
//!    and copied into the tile nodes, and each remote's video demand follows what is on
//!    screen ([`view`]); spatial voice ([`spatial`]) computes each audio route's gains from
//!    where avatars stand.
//! 4. [`HuddleSystems::Send`] (`PostUpdate`): the connection sends joins, [`RingingAction`]s
//!    and [`OutboundSignal`]s to the server.
//! 5. [`HuddleSystems::Notify`] (`PostUpdate`, last): each [`CallEvent`] goes to observers and
//!    to plain Rust listeners ([`CallEventListenerAppExt`]).
//!
//! ## Folders
//!
//! Each folder is a sub-plugin of [`HuddlePlugins`], and imports point toward [`call`] only
//! (checked by `scripts/check-imports`): [`call`] (the call as data; imports nothing else of
//! the crate), [`net`] (the server connection), [`media`] (never imports `net`), [`view`]
//! and [`spatial`]; [`runtime`] holds [`HuddleRuntime`]. A game that disables any
//! sub-plugin but [`CallModelPlugin`] keeps a working call model.
//!
//! ## Starting a call
//!
//! ```no_run
//! use bevy::prelude::*;
//! use bevy_huddle::prelude::*;
//!
//! fn start(mut commands: Commands) {
//!     let settings = CallSettings::builder().mode(LayoutMode::Spotlight).build().unwrap();
//!     commands.spawn(Call::new("standup", settings));
//! }
//!
//! fn mute(keys: Res<ButtonInput<KeyCode>>, mut call: CallControls) {
//!     if keys.just_pressed(KeyCode::KeyM) {
//!         call.mute_audio(true);
//!     }
//! }
//! ```

pub mod call;
pub mod media;
pub mod net;
pub mod runtime;
pub mod spatial;
pub mod view;

use bevy::app::PluginGroupBuilder;
use bevy::prelude::*;

pub use call::CallModelPlugin;
pub use call::actions::{CallAction, CallControls, OutboundSignal, Signal};
pub use call::events::{
    CallEvent, CallEventListener, CallEventListenerAppExt, CallEventListeners, EventListener,
    Listeners,
};
pub use call::session::{DeviceListRefreshed, SessionChange, SessionUpdate};
pub use media::{CallMediaPlugin, DeviceWatcherPlugin};
pub use net::ServerConnectionPlugin;
pub use net::connection::{
    CallToken, ConnectionStatus, RingingAction, RingingEvent, ServerConnection, StartSession,
};
pub use net::listeners::RingingListenerAppExt;
pub use runtime::HuddleRuntime;
pub use spatial::SpatialVoicePlugin;
pub use view::interaction::TileLayoutPickingPlugin;
pub use view::{TileInteractionPlugin, TileLayoutPlugin};

/// The most used types.
pub mod prelude {
    pub use crate::call::actions::{AvailableAudioModes, CallAction, CallControls};
    pub use crate::call::demand::VideoDemand;
    pub use crate::call::devices::{DeviceInfo, DeviceKind, MediaDevices};
    pub use crate::call::error::HuddleError;
    pub use crate::call::events::{CallEvent, CallEventListenerAppExt, CallUser};
    pub use crate::call::model::{
        ActiveCall, AudioRoute, Call, CallLayout, CallMedia, CallParticipants, CallState,
        CallTarget, CallViewport, EndReason, LocalParticipant, Participant, ParticipantOf,
        ParticipantState, ParticipantTiles, ScreenShareTile, TileLayout, TileOf, TileRole,
        VideoTile,
    };
    pub use crate::call::route::RouteGain;
    pub use crate::call::session::{ParticipantInfo, SessionChange, SessionUpdate};
    pub use crate::call::settings::{AspectFit, AudioMode, AvatarMode, CallSettings, LayoutMode};
    pub use crate::net::connection::{
        ConnectionStatus, RingingAction, RingingEvent, ServerConnection, StartSession,
    };
    pub use crate::net::listeners::RingingListenerAppExt;
    pub use crate::view::tiles::TileTextFont;
    pub use crate::{HuddlePlugins, HuddleSystems};
    pub use huddle_protocol::ErrorCode;
}

/// The phases of a Huddle frame; each runs in the schedule its doc names, in this order.
#[derive(SystemSet, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HuddleSystems {
    /// `PreUpdate`: transports and media sessions drain their channels into
    /// [`SessionUpdate`]s, events and tile images.
    Receive,
    /// `Update`: calls start; session updates and [`CallAction`]s change state and write
    /// [`CallEvent`]s; idle calls time out; plain route gains follow volume and local mute.
    Apply,
    /// `Update`, after `Apply`: media sessions start, follow the call's state, route gains
    /// and video demand, record and share, and stop.
    Media,
    /// `PostUpdate`, before bevy_ui layout: tile layouts are computed and applied to nodes;
    /// video demand follows what is on screen.
    Layout,
    /// `PostUpdate`, after `Layout`: transports flush [`OutboundSignal`]s.
    Send,
    /// `PostUpdate`, last: [`CallEvent`]s go to observers and listeners.
    Notify,
}

/// Everything Huddle adds to an app; disable parts with `.disable::<T>()`.
pub struct HuddlePlugins;

impl PluginGroup for HuddlePlugins {
    fn build(self) -> PluginGroupBuilder {
        PluginGroupBuilder::start::<Self>()
            .add(CallModelPlugin)
            .add(TileLayoutPlugin)
            .add(TileInteractionPlugin)
            .add(ServerConnectionPlugin)
            .add(CallMediaPlugin)
            .add(SpatialVoicePlugin)
    }
}
