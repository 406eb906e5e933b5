//! The server connection as a sub-plugin: login, ringing, call tokens, sessions and
//! reconnects ([`connection`]), and plain Rust listeners for ringing events ([`listeners`]).
//! It imports only the call model (`call/`) and the runtime.

pub mod connection;
pub mod listeners;

use bevy::prelude::*;

use crate::HuddleSystems;
use crate::call::events::{Listeners, notify};
use connection::*;

/// The server connection: login, ringing, call tokens and sessions (see [`connection`]).
pub struct ServerConnectionPlugin;

impl Plugin for ServerConnectionPlugin {
    fn build(&self, app: &mut App) {
        app.init_resource::<Listeners<RingingEvent>>()
            .add_message::<RingingAction>()
            .add_message::<StartSession>()
            .add_message::<RingingEvent>()
            .add_systems(
                PreUpdate,
                (connect_servers, drain_connections)
                    .chain()
                    .in_set(HuddleSystems::Receive),
            )
            .add_systems(Update, start_sessions.before(HuddleSystems::Apply))
            .add_systems(PostUpdate, send_requests.in_set(HuddleSystems::Send))
            .add_systems(
                PostUpdate,
                notify::<RingingEvent>.in_set(HuddleSystems::Notify),
            );
    }
}
