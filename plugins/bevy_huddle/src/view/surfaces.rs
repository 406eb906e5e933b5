//! Video on any in-world surface: put [`VideoSurface`] on a 2D sprite — or, with the `pbr`
//! feature, on a mesh with its own `StandardMaterial` — and it shows that participant's video
//! (the same `Image` the UI tile shows, so no extra copy) or their avatar colour while their
//! video is paused or has not arrived. Clicking a surface pins its participant, like clicking
//! a tile (Spotlight, with `enable_video_tile_click`); on meshes that needs a mesh picking
//! backend (`MeshPickingPlugin`).

use bevy::prelude::*;

use crate::call::actions::CallAction;
use crate::call::model::*;
use crate::call::settings::LayoutMode;
use crate::view::tiles::avatar_color;

/// Shows a participant's video on this entity's `Sprite`.
#[derive(Component, Clone, Copy, Debug, PartialEq, Eq)]
pub struct VideoSurface(pub Entity);

/// What a surface shows now.
#[derive(Component, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SurfaceContent {
    /// The participant's video.
    Video,
    /// Their avatar colour (video paused or not arrived, or the participant is gone).
    #[default]
    Avatar,
}

/// Points every surface's sprite at its participant's video, or shows the avatar colour.
pub(crate) fn update_video_surfaces(
    mut surfaces: Query<(Entity, &VideoSurface, &mut Sprite, Option<&SurfaceContent>)>,
    participants: Query<(&Participant, &ParticipantState, &ParticipantTiles)>,
    tiles: Query<&VideoTile, Without<ScreenShareTile>>,
    mut commands: Commands,
) {
    for (entity, surface, mut sprite, shown) in &mut surfaces {
        let (content, image, color) = surface_look(surface.0, &participants, &tiles);
        let image = image.unwrap_or_default();
        if sprite.image != image {
            sprite.image = image;
        }
        if sprite.color != color {
            sprite.color = color;
        }
        if shown != Some(&content) {
            commands.entity(entity).insert(content);
        }
    }
}

/// What a participant's surfaces should show: their video image, or none and a colour.
fn surface_look(
    participant: Entity,
    participants: &Query<(&Participant, &ParticipantState, &ParticipantTiles)>,
    tiles: &Query<&VideoTile, Without<ScreenShareTile>>,
) -> (SurfaceContent, Option<Handle<Image>>, Color) {
    let video = participants
        .get(participant)
        .ok()
        .and_then(|(who, state, owned)| {
            let tile = owned.iter().find_map(|t| tiles.get(t).ok())?;
            Some((
                who,
                (!state.video_paused && tile.has_video()).then(|| tile.image.clone()),
            ))
        });
    match video {
        Some((_, Some(image))) => (SurfaceContent::Video, Some(image), Color::WHITE),
        Some((who, None)) => (SurfaceContent::Avatar, None, avatar_color(&who.uid)),
        None => (SurfaceContent::Avatar, None, Color::srgb(0.2, 0.2, 0.2)),
    }
}

/// Meshes: each surface's own `StandardMaterial` (unlit) shows the video or the avatar colour.
#[cfg(feature = "pbr")]
pub(crate) fn update_mesh_surfaces(
    surfaces: Query<(
        Entity,
        &VideoSurface,
        &MeshMaterial3d<StandardMaterial>,
        Option<&SurfaceContent>,
    )>,
    participants: Query<(&Participant, &ParticipantState, &ParticipantTiles)>,
    tiles: Query<&VideoTile, Without<ScreenShareTile>>,
    materials: Option<ResMut<Assets<StandardMaterial>>>,
    mut commands: Commands,
) {
    // Headless apps (bots, tests) have no PBR materials at all.
    let Some(mut materials) = materials else {
        return;
    };
    for (entity, surface, material, shown) in &surfaces {
        let (content, image, color) = surface_look(surface.0, &participants, &tiles);
        let needs_update = shown != Some(&content)
            || materials
                .get(&material.0)
                .is_some_and(|m| m.base_color_texture != image);
        if !needs_update {
            continue;
        }
        if let Some(mut material) = materials.get_mut(&material.0) {
            material.base_color_texture = image;
            material.base_color = color;
            material.unlit = true;
        }
        commands.entity(entity).insert(content);
    }
}

/// A click on a surface pins (or unpins) its participant, like a tile click.
pub(crate) fn pin_on_surface_click(
    click: On<Pointer<Click>>,
    surfaces: Query<&VideoSurface>,
    participants: Query<(&Participant, &ParticipantOf)>,
    calls: Query<(&Call, &CallLayout, &CallState)>,
    active: Res<ActiveCall>,
    mut actions: MessageWriter<CallAction>,
) {
    let Ok(surface) = surfaces.get(click.entity) else {
        return;
    };
    let Ok((who, of)) = participants.get(surface.0) else {
        return;
    };
    let Ok((info, layout, state)) = calls.get(of.0) else {
        return;
    };
    let clickable = info.settings.enable_video_tile_click
        && layout.mode == LayoutMode::Spotlight
        && *state == CallState::InCall
        && active.0 == Some(of.0);
    if !clickable {
        return;
    }
    actions.write(if layout.pinned == Some(surface.0) {
        CallAction::Unpin
    } else {
        CallAction::Pin(who.uid.clone())
    });
}
