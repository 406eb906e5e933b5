//! Tile interaction through bevy_picking (SPEC §4).
//!
//! - **Click** a tile in Spotlight (with `enable_video_tile_click`): pins its participant as
//!   the main tile; clicking the pinned tile again unpins. It goes through
//!   [`CallAction::Pin`]/[`CallAction::Unpin`], so it is announced like the API call.
//! - **Drag** the floating local tile in Spotlight (with `enable_video_tile_drag`): moves it,
//!   clamped inside the viewport. The click that ends a drag does not pin.
//! - **Hover**: mirrored from bevy_picking's [`Hovered`] into [`TileInteraction::hovered`].
//!
//! The observers work with any picking backend. In a window, bevy_ui's backend picks the tile
//! nodes; [`TileLayoutPickingPlugin`] is a backend that hit-tests the computed
//! [`TileLayout`] rects directly, for headless apps (tests, bots) and games that draw tiles
//! themselves.

use bevy::picking::PickingSystems;
use bevy::picking::backend::{HitData, PointerHits};
use bevy::picking::hover::Hovered;
use bevy::picking::pointer::{PointerButton, PointerId, PointerLocation};
use bevy::prelude::*;

use crate::call::actions::CallAction;
use crate::call::model::*;
use crate::call::settings::LayoutMode;
use crate::view::layout::clamp_into_viewport;

/// Looks up the call a tile belongs to: (participant uid, call entity).
fn tile_owner<'a>(
    tile_of: &TileOf,
    participants: &'a Query<(&Participant, &ParticipantOf)>,
) -> Option<(&'a Participant, Entity)> {
    participants
        .get(tile_of.0)
        .ok()
        .map(|(who, of)| (who, of.0))
}

/// Click on a tile: pin or unpin its participant (Spotlight, `enable_video_tile_click`).
pub(crate) fn pin_on_tile_click(
    click: On<Pointer<Click>>,
    tiles: Query<(&TileOf, &TileInteraction)>,
    participants: Query<(&Participant, &ParticipantOf)>,
    calls: Query<(&Call, &CallLayout, &CallState)>,
    active: Res<ActiveCall>,
    mut actions: MessageWriter<CallAction>,
) {
    if click.button != PointerButton::Primary {
        return;
    }
    let Ok((tile_of, interaction)) = tiles.get(click.entity) else {
        return;
    };
    if interaction.drag_origin.is_some() {
        // This click ends a drag.
        return;
    }
    let Some((who, call)) = tile_owner(tile_of, &participants) else {
        return;
    };
    let Ok((info, layout, state)) = calls.get(call) else {
        return;
    };
    let clickable = info.settings.enable_video_tile_click
        && layout.mode == LayoutMode::Spotlight
        && *state == CallState::InCall
        && active.0 == Some(call);
    if !clickable {
        return;
    }
    actions.write(if layout.pinned == Some(tile_of.0) {
        CallAction::Unpin
    } else {
        CallAction::Pin(who.uid.clone())
    });
}

/// Drag start on the floating tile: remember where it was.
pub(crate) fn start_tile_drag(
    drag: On<Pointer<DragStart>>,
    mut tiles: Query<(&TileOf, &TileLayout, &mut TileInteraction)>,
    participants: Query<(&Participant, &ParticipantOf)>,
    calls: Query<(&Call, &CallLayout)>,
) {
    if drag.button != PointerButton::Primary {
        return;
    }
    let Ok((tile_of, layout, mut interaction)) = tiles.get_mut(drag.entity) else {
        return;
    };
    let Some((_, call)) = tile_owner(tile_of, &participants) else {
        return;
    };
    let Ok((info, call_layout)) = calls.get(call) else {
        return;
    };
    let draggable = info.settings.enable_video_tile_drag
        && call_layout.mode == LayoutMode::Spotlight
        && layout.role == TileRole::Floating;
    if draggable {
        interaction.drag_origin = Some(layout.rect.min);
    }
}

/// Drag of the floating tile: move it, clamped inside the viewport.
pub(crate) fn move_dragged_tile(
    drag: On<Pointer<Drag>>,
    tiles: Query<(&TileOf, &TileLayout, &TileInteraction)>,
    participants: Query<(&Participant, &ParticipantOf)>,
    mut calls: Query<(&mut CallLayout, &CallViewport)>,
) {
    let Ok((tile_of, layout, interaction)) = tiles.get(drag.entity) else {
        return;
    };
    let Some(origin) = interaction.drag_origin else {
        return;
    };
    let Some((_, call)) = tile_owner(tile_of, &participants) else {
        return;
    };
    let Ok((mut call_layout, viewport)) = calls.get_mut(call) else {
        return;
    };
    let position = clamp_into_viewport(origin + drag.distance, layout.rect.size(), viewport.size);
    if call_layout.floating_position != Some(position) {
        call_layout.floating_position = Some(position);
    }
}

/// Drag end: forget the origin.
pub(crate) fn end_tile_drag(drag: On<Pointer<DragEnd>>, mut tiles: Query<&mut TileInteraction>) {
    if let Ok(mut interaction) = tiles.get_mut(drag.entity)
        && interaction.drag_origin.is_some()
    {
        interaction.drag_origin = None;
    }
}

/// Mirrors bevy_picking's hover state into [`TileInteraction::hovered`].
pub(crate) fn mirror_tile_hover(
    mut tiles: Query<(&Hovered, &mut TileInteraction), Changed<Hovered>>,
) {
    for (hovered, mut interaction) in &mut tiles {
        if interaction.hovered != hovered.get() {
            interaction.hovered = hovered.get();
        }
    }
}

/// A picking backend that hit-tests visible tiles by their [`TileLayout`] rects (viewport
/// coordinates), topmost first. Add it where bevy_ui does not pick the tiles: headless apps,
/// bots, tests, or games that draw tiles themselves.
pub struct TileLayoutPickingPlugin;

impl Plugin for TileLayoutPickingPlugin {
    fn build(&self, app: &mut App) {
        app.add_systems(
            PreUpdate,
            pick_tiles_by_layout.in_set(PickingSystems::Backend),
        );
    }
}

/// Reports the tiles under each pointer.
pub(crate) fn pick_tiles_by_layout(
    pointers: Query<(&PointerId, &PointerLocation)>,
    tiles: Query<(Entity, &TileLayout), With<VideoTile>>,
    mut hits: MessageWriter<PointerHits>,
) {
    for (pointer, location) in &pointers {
        let Some(location) = &location.location else {
            continue;
        };
        let picks: Vec<(Entity, HitData)> = tiles
            .iter()
            .filter(|(_, layout)| layout.visible() && layout.rect.contains(location.position))
            .map(|(tile, layout)| {
                // Nearer (smaller depth) for tiles drawn on top.
                let depth = 1000.0 - layout.z as f32;
                (tile, HitData::new(Entity::PLACEHOLDER, depth, None, None))
            })
            .collect();
        if !picks.is_empty() {
            hits.write(PointerHits::new(*pointer, picks, 0.0));
        }
    }
}
