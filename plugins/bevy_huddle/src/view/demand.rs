//! Adaptive receive, the view's side: what each remote participant's video gets on our screen
//! becomes their [`VideoDemand`] — paused while nothing shows it (no visible tile, no in-world
//! surface), a capped bitrate while its tile is small, everything otherwise. Media asks the
//! sender for exactly that.

use bevy::prelude::*;

use super::surfaces::VideoSurface;
use crate::call::demand::VideoDemand;
use crate::call::model::*;

/// Tiles narrower than this (logical px) ask for [`SMALL_TILE_BITRATE`].
pub const SMALL_TILE_WIDTH: f32 = 240.0;
/// Bitrate asked for a small tile.
pub const SMALL_TILE_BITRATE: u32 = 250_000;
/// Tiles narrower than this ask for [`MEDIUM_TILE_BITRATE`].
pub const MEDIUM_TILE_WIDTH: f32 = 520.0;
/// Bitrate asked for a medium tile.
pub const MEDIUM_TILE_BITRATE: u32 = 800_000;

/// The demand for one participant's video from its widest visible tile and whether an
/// in-world surface shows it.
pub fn demand_for(widest_tile: Option<Vec2>, on_surface: bool) -> VideoDemand {
    let wanted_size = widest_tile.map_or(UVec2::ZERO, |size| size.ceil().as_uvec2());
    let (paused, max_bitrate_bps) = match (on_surface, widest_tile) {
        (true, _) => (false, 0),
        (false, None) => (true, 0),
        (false, Some(size)) if size.x < SMALL_TILE_WIDTH => (false, SMALL_TILE_BITRATE),
        (false, Some(size)) if size.x < MEDIUM_TILE_WIDTH => (false, MEDIUM_TILE_BITRATE),
        (false, Some(_)) => (false, 0),
    };
    VideoDemand {
        paused,
        max_bitrate_bps,
        wanted_size,
    }
}

/// Publishes every remote participant's [`VideoDemand`] (paused for all in audio calls; written
/// only when it changes).
pub(crate) fn publish_video_demand(
    calls: Query<(&CallParticipants, &CallMedia)>,
    mut participants: Query<(
        Entity,
        Has<LocalParticipant>,
        &ParticipantTiles,
        Option<&mut VideoDemand>,
    )>,
    tiles: Query<&TileLayout>,
    surfaces: Query<&VideoSurface>,
    mut commands: Commands,
) {
    for (members, call_media) in &calls {
        for member in members.iter() {
            let Ok((entity, local, owned, demand)) = participants.get_mut(member) else {
                continue;
            };
            if local {
                continue;
            }
            let on_surface = surfaces.iter().any(|s| s.0 == entity);
            let widest_tile = owned
                .iter()
                .filter_map(|t| tiles.get(t).ok())
                .filter(|layout| layout.visible())
                .map(|layout| layout.rect.size())
                .fold(None, |widest: Option<Vec2>, size| {
                    Some(widest.map_or(size, |w| if size.x > w.x { size } else { w }))
                });
            // An audio call wants nobody's camera, whatever a peer sends.
            let next = if call_media.audio_only {
                demand_for(None, false)
            } else {
                demand_for(widest_tile, on_surface)
            };
            match demand {
                Some(mut demand) => {
                    demand.set_if_neq(next);
                }
                None => {
                    commands.entity(entity).insert(next);
                }
            }
        }
    }
}
