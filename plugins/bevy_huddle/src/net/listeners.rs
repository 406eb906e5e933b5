//! `add_ringing_listener` / `remove_ringing_listener` on an `App` or `World`: plain Rust
//! listeners for [`RingingEvent`]s, beside messages and observers.

use bevy::prelude::*;

use super::connection::RingingEvent;
use crate::call::events::{EventListener, Listeners};

/// Ringing listeners on an `App` or `World`.
pub trait RingingListenerAppExt {
    /// Registers a [`RingingEvent`] listener under `id` (replacing one with the same id).
    fn add_ringing_listener(
        &mut self,
        id: impl Into<String>,
        listener: impl EventListener<RingingEvent>,
    ) -> &mut Self;
    /// Removes the ringing listener registered under `id`.
    fn remove_ringing_listener(&mut self, id: &str) -> &mut Self;
}

impl RingingListenerAppExt for World {
    fn add_ringing_listener(
        &mut self,
        id: impl Into<String>,
        listener: impl EventListener<RingingEvent>,
    ) -> &mut Self {
        self.get_resource_or_init::<Listeners<RingingEvent>>()
            .add(id, listener);
        self
    }

    fn remove_ringing_listener(&mut self, id: &str) -> &mut Self {
        if let Some(mut listeners) = self.get_resource_mut::<Listeners<RingingEvent>>() {
            listeners.remove(id);
        }
        self
    }
}

impl RingingListenerAppExt for App {
    fn add_ringing_listener(
        &mut self,
        id: impl Into<String>,
        listener: impl EventListener<RingingEvent>,
    ) -> &mut Self {
        self.world_mut().add_ringing_listener(id, listener);
        self
    }

    fn remove_ringing_listener(&mut self, id: &str) -> &mut Self {
        self.world_mut().remove_ringing_listener(id);
        self
    }
}
