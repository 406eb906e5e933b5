//! The call as data: the model, settings, typed errors, events and listeners, in-call actions
//! and the systems that apply them, the session updates every transport writes, peer-signal
//! messages, route gains, video demand and the device lists.
//!
//! Nothing here imports another folder of this crate: a game that disables every sub-plugin
//! but [`CallModelPlugin`] keeps a working call model, and a transport other than Huddle's
//! server connection plugs in by writing [`SessionUpdate`](session::SessionUpdate)s and
//! [`PeerSignalReceived`](signal::PeerSignalReceived), and reading
//! [`OutboundSignal`](actions::OutboundSignal)s and
//! [`OutboundPeerSignal`](signal::OutboundPeerSignal)s — the way picking backends write
//! `PointerHits`.

pub mod actions;
pub mod demand;
pub mod devices;
pub mod error;
pub mod events;
pub mod model;
pub mod route;
pub mod session;
pub mod settings;
pub mod signal;
pub mod video_image;

use bevy::asset::AssetServer;
use bevy::prelude::*;

use crate::HuddleSystems;

/// The call model: state, actions, session updates, events and listeners.
pub struct CallModelPlugin;

impl Plugin for CallModelPlugin {
    fn build(&self, app: &mut App) {
        app.init_resource::<model::ActiveCall>()
            .init_resource::<model::JoinSequence>()
            .init_resource::<devices::MediaDevices>()
            .init_resource::<actions::AvailableAudioModes>()
            .init_resource::<events::CallEventListeners>()
            .init_resource::<session::DeferredSessionUpdates>()
            .add_message::<actions::CallAction>()
            .add_message::<session::SessionUpdate>()
            .add_message::<session::DeviceListRefreshed>()
            .add_message::<actions::OutboundSignal>()
            .add_message::<signal::OutboundPeerSignal>()
            .add_message::<signal::TransportCheckWanted>()
            .add_message::<signal::PeerSignalReceived>()
            .add_message::<events::CallEvent>()
            .add_systems(
                Update,
                (
                    session::start_new_calls,
                    session::apply_session_updates,
                    actions::apply_call_actions,
                    session::end_idle_calls,
                    session::refresh_device_lists,
                    route::set_plain_route_gains,
                )
                    .chain()
                    .in_set(HuddleSystems::Apply),
            )
            .add_systems(
                PostUpdate,
                events::notify::<events::CallEvent>.in_set(HuddleSystems::Notify),
            )
            .configure_sets(Update, HuddleSystems::Media.after(HuddleSystems::Apply))
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
