//! What the call looks like: tile layouts ([`layout`]) and their bevy_ui nodes ([`tiles`]),
//! tile click and drag ([`interaction`]), video on in-world surfaces ([`surfaces`]), and the
//! [`VideoDemand`](crate::call::demand::VideoDemand) each remote's visibility gives
//! ([`demand`]). Imports only the call model.

pub mod demand;
pub mod interaction;
pub mod layout;
pub mod surfaces;
pub mod tiles;

use bevy::prelude::*;

use crate::HuddleSystems;

/// Tile layouts, their bevy_ui nodes, in-world surfaces and the video demand they give.
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
                demand::publish_video_demand,
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
