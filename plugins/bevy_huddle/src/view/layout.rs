//! Layouts (SPEC §4): where each tile goes, computed from the call's mode, viewport and
//! participants.
//!
//! [`compute_layout`] is a pure function (no ECS, no clock), so the geometry is tested
//! directly and benchmarked; [`update_tile_layouts`] runs it in
//! [`HuddleSystems::Layout`](crate::HuddleSystems::Layout) whenever something it depends on
//! changed (participants, mode, pin, dominant speaker, viewport, floating position, video
//! size), and writes each tile's [`TileLayout`] only when it differs.
//!
//! - **Grid** (`Default`): every tile in an even grid of equal cells with the tile aspect
//!   (16:9), as large as fits, rows centred, in join order (local first).
//! - **Spotlight**: the main tile (pinned, else dominant speaker, else latest remote joiner,
//!   else local) fills the area above a strip holding the others; the local preview floats
//!   bottom-right (or where it was dragged), clamped inside the viewport.
//! - **Single**: only the main tile.
//!
//! Inside its cell, video is fitted by [`AspectFit`]: `Contain` letterboxes (the content rect
//! keeps the video's aspect), `Cover` fills the cell and crops (the UV rect keeps it).

use bevy::prelude::*;

use crate::call::model::*;
use crate::call::settings::{AspectFit, LayoutMode};

/// Space between tiles and around the edges, in logical pixels.
pub const TILE_GAP: f32 = 8.0;
/// Aspect ratio (width / height) of grid cells and of video not yet received.
pub const DEFAULT_TILE_ASPECT: f32 = 16.0 / 9.0;
/// Share of the viewport height given to the Spotlight strip.
pub const STRIP_HEIGHT_SHARE: f32 = 0.2;
/// Share of the viewport width given to the floating local tile.
pub const FLOATING_WIDTH_SHARE: f32 = 0.2;

/// One tile to place, in stable order (local first, then remotes by join order).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LayoutTile {
    /// Identifies the tile in the result.
    pub key: Entity,
    /// Whether it is the local user's tile.
    pub local: bool,
    /// The video's width / height, once known.
    pub video_aspect: Option<f32>,
}

/// Everything a layout depends on.
#[derive(Clone, Copy, Debug)]
pub struct LayoutRequest<'a> {
    /// Layout mode.
    pub mode: LayoutMode,
    /// Size of the area to fill.
    pub viewport: Vec2,
    /// Tiles in stable order.
    pub tiles: &'a [LayoutTile],
    /// The main tile for Spotlight and Single (see [`choose_main`]).
    pub main: Option<Entity>,
    /// Where the user dragged the floating tile, if they did.
    pub floating_position: Option<Vec2>,
    /// How video fits its cell.
    pub fit: AspectFit,
}

/// Picks the main tile: pinned, else dominant speaker, else the latest remote joiner, else
/// the local tile. `tiles` must be in join order.
pub fn choose_main(
    tiles: &[LayoutTile],
    pinned: Option<Entity>,
    dominant: Option<Entity>,
) -> Option<Entity> {
    let present = |key: Option<Entity>| key.filter(|k| tiles.iter().any(|t| t.key == *k));
    present(pinned)
        .or_else(|| present(dominant))
        .or_else(|| tiles.iter().rev().find(|t| !t.local).map(|t| t.key))
        .or_else(|| tiles.first().map(|t| t.key))
}

/// The largest rect of `aspect` (width / height) centred in `area`.
pub fn fit_in(area: Rect, aspect: f32) -> Rect {
    let size = area.size();
    if size.x <= 0.0 || size.y <= 0.0 || aspect <= 0.0 || !aspect.is_finite() {
        return Rect::from_center_size(area.center(), Vec2::ZERO);
    }
    let fitted = if size.x / size.y > aspect {
        Vec2::new(size.y * aspect, size.y)
    } else {
        Vec2::new(size.x, size.x / aspect)
    };
    Rect::from_center_size(area.center(), fitted)
}

/// Where the picture goes inside `cell` and which part of it shows, for a video of `aspect`.
pub fn fit_video(cell: Rect, video_aspect: f32, fit: AspectFit) -> (Rect, Rect) {
    let full_uv = Rect::new(0.0, 0.0, 1.0, 1.0);
    match fit {
        AspectFit::Contain => (fit_in(cell, video_aspect), full_uv),
        AspectFit::Cover => {
            let size = cell.size();
            if size.x <= 0.0 || size.y <= 0.0 {
                return (cell, full_uv);
            }
            let cell_aspect = size.x / size.y;
            let uv = if video_aspect > cell_aspect {
                let visible = cell_aspect / video_aspect;
                Rect::new((1.0 - visible) / 2.0, 0.0, (1.0 + visible) / 2.0, 1.0)
            } else {
                let visible = video_aspect / cell_aspect;
                Rect::new(0.0, (1.0 - visible) / 2.0, 1.0, (1.0 + visible) / 2.0)
            };
            (cell, uv)
        }
    }
}

/// Equal cells of `aspect` for `count` tiles in `viewport`, as large as they can be, separated
/// and surrounded by `gap`, rows centred; in reading order.
pub fn grid_cells(viewport: Vec2, count: usize, aspect: f32, gap: f32) -> Vec<Rect> {
    if count == 0 {
        return Vec::new();
    }
    let mut best: Option<(usize, usize, Vec2)> = None;
    for columns in 1..=count {
        let rows = count.div_ceil(columns);
        let free_w = viewport.x - gap * (columns as f32 + 1.0);
        let free_h = viewport.y - gap * (rows as f32 + 1.0);
        if free_w <= 0.0 || free_h <= 0.0 {
            continue;
        }
        let width = (free_w / columns as f32).min(free_h / rows as f32 * aspect);
        if best.is_none_or(|(_, _, size)| width > size.x) {
            best = Some((columns, rows, Vec2::new(width, width / aspect)));
        }
    }
    let Some((columns, rows, cell)) = best else {
        // Too small for the gaps: zero-size cells at the centre.
        return vec![Rect::from_center_size(viewport / 2.0, Vec2::ZERO); count];
    };
    let grid_height = rows as f32 * cell.y + (rows as f32 - 1.0) * gap;
    let top = (viewport.y - grid_height) / 2.0;
    (0..count)
        .map(|i| {
            let (row, column) = (i / columns, i % columns);
            let in_row = (count - row * columns).min(columns);
            let row_width = in_row as f32 * cell.x + (in_row as f32 - 1.0) * gap;
            let left = (viewport.x - row_width) / 2.0;
            let min = Vec2::new(
                left + column as f32 * (cell.x + gap),
                top + row as f32 * (cell.y + gap),
            );
            Rect::from_corners(min, min + cell)
        })
        .collect()
}

/// Size of the floating local tile in a viewport.
pub fn floating_size(viewport: Vec2, aspect: f32) -> Vec2 {
    let width = (viewport.x * FLOATING_WIDTH_SHARE)
        .clamp(96.0, 360.0)
        .min(viewport.x * 0.5)
        .min(viewport.y * 0.5 * aspect);
    Vec2::new(width, width / aspect)
}

/// Keeps a tile of `size` whose top-left is `position` inside the viewport.
pub fn clamp_into_viewport(position: Vec2, size: Vec2, viewport: Vec2) -> Vec2 {
    let max = (viewport - size).max(Vec2::ZERO);
    position.clamp(Vec2::ZERO, max)
}

/// Places every tile of the request. The result has one entry per tile, in request order.
pub fn compute_layout(request: &LayoutRequest) -> Vec<(Entity, TileLayout)> {
    let viewport = request.viewport;
    let tiles = request.tiles;
    let hidden = |key| (key, TileLayout::default());
    if viewport.x < 1.0 || viewport.y < 1.0 || !viewport.is_finite() {
        return tiles.iter().map(|t| hidden(t.key)).collect();
    }
    let place = |tile: &LayoutTile, cell: Rect, role: TileRole, z: i32| {
        let aspect = tile.video_aspect.unwrap_or(DEFAULT_TILE_ASPECT);
        let (content, uv) = fit_video(cell, aspect, request.fit);
        (
            tile.key,
            TileLayout {
                rect: cell,
                content,
                uv,
                z,
                role,
            },
        )
    };
    match request.mode {
        LayoutMode::Default => {
            let cells = grid_cells(viewport, tiles.len(), DEFAULT_TILE_ASPECT, TILE_GAP);
            tiles
                .iter()
                .zip(cells)
                .map(|(tile, cell)| place(tile, cell, TileRole::Grid, 0))
                .collect()
        }
        LayoutMode::Single => {
            let main = request.main;
            let cell = Rect::from_corners(Vec2::splat(TILE_GAP), viewport - TILE_GAP);
            tiles
                .iter()
                .map(|tile| {
                    if Some(tile.key) == main {
                        place(tile, cell, TileRole::Main, 0)
                    } else {
                        hidden(tile.key)
                    }
                })
                .collect()
        }
        LayoutMode::Spotlight => spotlight(request, &place),
    }
}

fn spotlight(
    request: &LayoutRequest,
    place: &dyn Fn(&LayoutTile, Rect, TileRole, i32) -> (Entity, TileLayout),
) -> Vec<(Entity, TileLayout)> {
    let viewport = request.viewport;
    let main = request.main;
    let local_floats = request.tiles.iter().any(|t| !t.local) && request.tiles.len() > 1;
    let is_floating = |t: &LayoutTile| t.local && Some(t.key) != main && local_floats;
    let strip: Vec<&LayoutTile> = request
        .tiles
        .iter()
        .filter(|t| Some(t.key) != main && !is_floating(t))
        .collect();
    let strip_height = if strip.is_empty() {
        0.0
    } else {
        (viewport.y * STRIP_HEIGHT_SHARE).clamp(48.0, 200.0)
    };
    let main_cell = Rect::from_corners(
        Vec2::splat(TILE_GAP),
        Vec2::new(viewport.x - TILE_GAP, viewport.y - strip_height - TILE_GAP),
    );
    // Strip cells: one row along the bottom, shrunk to fit the width.
    let strip_cells: Vec<Rect> = if strip.is_empty() {
        Vec::new()
    } else {
        let n = strip.len() as f32;
        let mut cell = Vec2::new(
            (strip_height - TILE_GAP) * DEFAULT_TILE_ASPECT,
            strip_height - TILE_GAP,
        );
        let max_width = (viewport.x - TILE_GAP * (n + 1.0)) / n;
        if cell.x > max_width {
            cell = Vec2::new(max_width, max_width / DEFAULT_TILE_ASPECT);
        }
        let row_width = n * cell.x + (n - 1.0) * TILE_GAP;
        let left = (viewport.x - row_width) / 2.0;
        let top = viewport.y - strip_height + (strip_height - TILE_GAP - cell.y) / 2.0;
        (0..strip.len())
            .map(|i| {
                let min = Vec2::new(left + i as f32 * (cell.x + TILE_GAP), top);
                Rect::from_corners(min, min + cell)
            })
            .collect()
    };
    let floating_cell = {
        let size = floating_size(viewport, DEFAULT_TILE_ASPECT);
        let default_position = Vec2::new(
            viewport.x - size.x - 2.0 * TILE_GAP,
            viewport.y - strip_height - size.y - 2.0 * TILE_GAP,
        );
        let position = clamp_into_viewport(
            request.floating_position.unwrap_or(default_position),
            size,
            viewport,
        );
        Rect::from_corners(position, position + size)
    };
    let mut strip_slots = strip_cells.into_iter();
    request
        .tiles
        .iter()
        .map(|tile| {
            if Some(tile.key) == main {
                place(tile, main_cell, TileRole::Main, 0)
            } else if is_floating(tile) {
                place(tile, floating_cell, TileRole::Floating, 2)
            } else {
                let cell = strip_slots.next().unwrap_or(Rect::EMPTY);
                place(tile, cell, TileRole::Strip, 1)
            }
        })
        .collect()
}

/// The tiles of a call in stable order (local first, then by join order), with the inputs
/// the layout needs.
pub(crate) fn ordered_tiles(
    members: &CallParticipants,
    participants: &Query<(&Participant, Has<LocalParticipant>, &ParticipantTiles)>,
    tiles: &Query<(&VideoTile, &mut TileLayout)>,
) -> Vec<(u64, Entity, LayoutTile)> {
    let mut ordered: Vec<(u64, Entity, LayoutTile)> = members
        .iter()
        .filter_map(|p| participants.get(p).ok().map(|row| (p, row)))
        .flat_map(|(participant, (who, local, owned))| {
            owned.iter().filter_map(move |tile_entity| {
                let (tile, _) = tiles.get(tile_entity).ok()?;
                let order = if local { 0 } else { who.joined_seq };
                Some((
                    order,
                    participant,
                    LayoutTile {
                        key: tile_entity,
                        local,
                        video_aspect: tile.aspect(),
                    },
                ))
            })
        })
        .collect();
    ordered.sort_by_key(|(order, ..)| *order);
    ordered
}

/// Recomputes the layout of every call whose inputs changed; writes only differing tiles.
pub(crate) fn update_tile_layouts(
    calls: Query<(
        &Call,
        Ref<CallLayout>,
        Ref<CallViewport>,
        Ref<CallParticipants>,
    )>,
    participants: Query<(&Participant, Has<LocalParticipant>, &ParticipantTiles)>,
    participants_changed: Query<(), Or<(Changed<ParticipantTiles>, Added<Participant>)>>,
    tiles_changed: Query<(), Changed<VideoTile>>,
    mut tiles: Query<(&VideoTile, &mut TileLayout)>,
    screen_tiles: Query<(), With<ScreenShareTile>>,
) {
    let any_tile_changed = !tiles_changed.is_empty() || !participants_changed.is_empty();
    for (call, layout, viewport, members) in &calls {
        let dirty = any_tile_changed
            || layout.is_changed()
            || viewport.is_changed()
            || members.is_changed();
        if !dirty {
            continue;
        }
        let ordered = ordered_tiles(&members, &participants, &tiles);
        let layout_tiles: Vec<LayoutTile> = ordered.iter().map(|(_, _, t)| *t).collect();
        let tile_of = |participant: Option<Entity>| {
            participant.and_then(|p| ordered.iter().find(|(_, owner, _)| *owner == p))
        };
        // A pin wins; else a screen share is the main tile (the newest one); else the
        // dominant speaker.
        let screen_share = layout_tiles
            .iter()
            .rev()
            .find(|t| screen_tiles.contains(t.key))
            .map(|t| t.key);
        let main = choose_main(
            &layout_tiles,
            tile_of(layout.pinned)
                .map(|(_, _, t)| t.key)
                .or(screen_share),
            tile_of(layout.dominant_speaker).map(|(_, _, t)| t.key),
        );
        let placements = compute_layout(&LayoutRequest {
            mode: layout.mode,
            viewport: viewport.size,
            tiles: &layout_tiles,
            main,
            floating_position: layout.floating_position,
            fit: call.settings.main_video_container.aspect,
        });
        for (key, placement) in placements {
            if let Ok((_, mut current)) = tiles.get_mut(key) {
                current.set_if_neq(placement);
            }
        }
    }
}
