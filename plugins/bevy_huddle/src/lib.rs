//! # bevy_huddle: video/audio calls as ECS data
//!
//! Add [`HuddlePlugins`] to an `App` and a call becomes entities (see [`model`]): the call,
//! its participants, each participant's video tile (a bevy_ui node showing an `Image`) and
//! audio route. Everything but rendering and devices runs in a headless `App`
//! (`MinimalPlugins`), so every behaviour is testable with `app.update()`.
//!
//! ## The pipeline, frame by frame
//!
//! 1. [`HuddleSystems::Receive`] (`PreUpdate`): the server connection ([`connection`])
//!    drains its channel and writes [`RingingEvent`]s and [`SessionUpdate`]s (joined, someone
//!    joined/left/muted, ended, …). Picking turns pointer input into tile clicks and drags,
//!    which write [`CallAction`]s.
//! 2. [`HuddleSystems::Apply`] (`Update`): a freshly spawned [`Call`] is validated and made the
//!    active call; session updates and in-call actions change state and write [`CallEvent`]s;
//!    calls alone for `idle_timeout` end.
//!    Media ([`media`]) starts for calls in the session, follows joins, leaves and the local
//!    mute/pause, and its decoded frames land in the tiles' images.
//! 3. [`HuddleSystems::Layout`] (`PostUpdate`, before bevy_ui layout): tile rects are computed
//!    ([`layout`]) and copied into the tile nodes ([`tiles`]); spatial voice ([`spatial`])
//!    computes each audio route's gains from where avatars stand.
//! 4. [`HuddleSystems::Send`] (`PostUpdate`): the connection sends joins, [`RingingAction`]s
//!    and [`OutboundSignal`]s to the server.
//! 5. [`HuddleSystems::Notify`] (`PostUpdate`, last): each [`CallEvent`] goes to observers and
//!    to plain Rust listeners ([`CallEventListenerAppExt`]).
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

pub mod actions;
pub mod connection;
pub mod devices;
pub mod error;
pub mod events;
pub mod game_view;
pub mod interaction;
pub mod layout;
pub mod media;
pub mod model;
pub mod session;
pub mod settings;
pub mod spatial;
pub mod surfaces;
pub mod tiles;

use bevy::app::PluginGroupBuilder;
use bevy::asset::AssetServer;
use bevy::prelude::*;

pub use actions::{CallAction, CallControls, OutboundSignal, Signal};
pub use connection::{
    CallToken, ConnectionStatus, HuddleRuntime, RingingAction, RingingEvent, ServerConnection,
    StartSession,
};
pub use devices::DeviceWatcherPlugin;
pub use events::{
    CallEvent, CallEventListener, CallEventListenerAppExt, CallEventListeners, EventListener,
    Listeners,
};
pub use interaction::TileLayoutPickingPlugin;
pub use session::{DeviceListRefreshed, SessionChange, SessionUpdate};

/// The most used types.
pub mod prelude {
    pub use crate::actions::{AvailableAudioModes, CallAction, CallControls};
    pub use crate::connection::{
        ConnectionStatus, RingingAction, RingingEvent, ServerConnection, StartSession,
    };
    pub use crate::devices::{DeviceInfo, DeviceKind, MediaDevices};
    pub use crate::error::HuddleError;
    pub use crate::events::{CallEvent, CallEventListenerAppExt, CallUser};
    pub use crate::model::{
        ActiveCall, AudioRoute, Call, CallLayout, CallMedia, CallParticipants, CallState,
        CallTarget, CallViewport, EndReason, LocalParticipant, Participant, ParticipantOf,
        ParticipantState, ParticipantTiles, ScreenShareTile, TileLayout, TileOf, TileRole,
        VideoTile,
    };
    pub use crate::session::{ParticipantInfo, SessionChange, SessionUpdate};
    pub use crate::settings::{AspectFit, AudioMode, AvatarMode, CallSettings, LayoutMode};
    pub use crate::{HuddlePlugins, HuddleSystems};
    pub use huddle_protocol::ErrorCode;
}

/// The phases of a Huddle frame; each runs in the schedule its doc names, in this order.
#[derive(SystemSet, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HuddleSystems {
    /// `PreUpdate`: transports drain their channels into [`SessionUpdate`]s.
    Receive,
    /// `Update`: calls start; session updates and [`CallAction`]s change state and write
    /// [`CallEvent`]s; idle calls time out.
    Apply,
    /// `PostUpdate`, before bevy_ui layout: tile layouts are computed and applied to nodes.
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

/// The call model: state, actions, session updates, events and listeners.
pub struct CallModelPlugin;

impl Plugin for CallModelPlugin {
    fn build(&self, app: &mut App) {
        app.init_resource::<model::ActiveCall>()
            .init_resource::<model::JoinSequence>()
            .init_resource::<devices::MediaDevices>()
            .init_resource::<actions::AvailableAudioModes>()
            .init_resource::<CallEventListeners>()
            .init_resource::<session::DeferredSessionUpdates>()
            .add_message::<CallAction>()
            .add_message::<SessionUpdate>()
            .add_message::<DeviceListRefreshed>()
            .add_message::<OutboundSignal>()
            .add_message::<CallEvent>()
            .add_systems(
                Update,
                (
                    session::start_new_calls,
                    session::apply_session_updates,
                    actions::apply_call_actions,
                    session::end_idle_calls,
                    session::refresh_device_lists,
                )
                    .chain()
                    .in_set(HuddleSystems::Apply),
            )
            .add_systems(
                PostUpdate,
                events::notify::<CallEvent>.in_set(HuddleSystems::Notify),
            )
            .configure_sets(
                PostUpdate,
                (
                    HuddleSystems::Layout,
                    HuddleSystems::Send,
                    HuddleSystems::Notify,
                )
                    .chain(),
            );
    }

    fn finish(&self, app: &mut App) {
        // Tiles need somewhere to keep their images; a full app has it from ImagePlugin.
        if app.world().contains_resource::<AssetServer>()
            && !app.world().contains_resource::<Assets<Image>>()
        {
            app.init_asset::<Image>();
        }
    }
}

/// The server connection: login, ringing, call tokens and sessions (see [`connection`]).
pub struct ServerConnectionPlugin;

impl Plugin for ServerConnectionPlugin {
    fn build(&self, app: &mut App) {
        use connection::*;
        app.add_message::<RingingAction>()
            .add_message::<StartSession>()
            .add_message::<RingingEvent>()
            .add_message::<PeerSignalReceived>()
            .add_systems(
                PreUpdate,
                (connect_servers, drain_connections)
                    .chain()
                    .in_set(HuddleSystems::Receive),
            )
            .add_systems(Update, start_sessions.before(HuddleSystems::Apply))
            .add_systems(PostUpdate, send_requests.in_set(HuddleSystems::Send))
            .init_resource::<Listeners<RingingEvent>>()
            .add_systems(
                PostUpdate,
                events::notify::<RingingEvent>.in_set(HuddleSystems::Notify),
            );
    }
}

/// Real media (WebRTC, H.264, Opus) for server-connected calls (see [`media`]).
pub struct CallMediaPlugin;

impl Plugin for CallMediaPlugin {
    fn build(&self, app: &mut App) {
        use media::*;
        app.init_resource::<MediaSettings>()
            .init_resource::<RecordingSettings>()
            .init_resource::<ScreenShareSettings>()
            .init_resource::<PendingScreenFrames>()
            .add_message::<OutboundPeerSignal>()
            .add_systems(
                PreUpdate,
                drain_call_media
                    .after(connection::drain_connections)
                    .in_set(HuddleSystems::Receive),
            )
            .add_systems(
                Update,
                (
                    start_call_media,
                    follow_participants,
                    follow_local_state,
                    route_peer_signals,
                    apply_audio_routes,
                    request_video_by_visibility,
                    follow_recording,
                    follow_device_selection,
                    follow_screen_shares,
                    show_screen_shares,
                    stop_ended_media,
                )
                    .chain()
                    .after(HuddleSystems::Apply),
            );
        #[cfg(feature = "game_view")]
        app.add_systems(Last, game_view::capture_camera_shares);
    }
}

/// Spatial voice: gains of each audio route from emitters and the listener (see [`spatial`]).
pub struct SpatialVoicePlugin;

impl Plugin for SpatialVoicePlugin {
    fn build(&self, app: &mut App) {
        app.init_resource::<spatial::SpatialAudioSettings>()
            .add_systems(
                PostUpdate,
                spatial::update_spatial_gains
                    .after(TransformSystems::Propagate)
                    .before(HuddleSystems::Send),
            );
    }
}

/// Tile layouts and their bevy_ui nodes.
pub struct TileLayoutPlugin;

impl Plugin for TileLayoutPlugin {
    fn build(&self, app: &mut App) {
        app.add_systems(
            PostUpdate,
            (
                tiles::sync_viewports,
                layout::update_tile_layouts,
                tiles::attach_tile_nodes,
                tiles::apply_tile_layouts,
                tiles::show_video_or_avatar,
                tiles::show_quality_and_speaking,
                surfaces::update_video_surfaces,
            )
                .chain()
                .in_set(HuddleSystems::Layout),
        )
        .configure_sets(
            PostUpdate,
            HuddleSystems::Layout.before(bevy::ui::UiSystems::Layout),
        );
    }
}

/// Tile click (pin) and drag (floating tile) through bevy_picking.
pub struct TileInteractionPlugin;

impl Plugin for TileInteractionPlugin {
    fn build(&self, app: &mut App) {
        #[cfg(feature = "pbr")]
        app.add_systems(
            PostUpdate,
            surfaces::update_mesh_surfaces.in_set(HuddleSystems::Layout),
        );
        app.add_observer(interaction::pin_on_tile_click)
            .add_observer(surfaces::pin_on_surface_click)
            .add_observer(interaction::start_tile_drag)
            .add_observer(interaction::move_dragged_tile)
            .add_observer(interaction::end_tile_drag)
            .add_systems(
                PreUpdate,
                interaction::mirror_tile_hover.in_set(HuddleSystems::Receive),
            );
    }
}
