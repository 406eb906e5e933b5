//! Tiles as bevy_ui nodes: each [`VideoTile`] becomes an absolutely positioned node (under the
//! call's [`CallTarget`] when there is one) with two children:
//!
//! - [`TileVideo`]: an `ImageNode` showing the participant's `Image`, placed at the layout's
//!   content rect and cropped by its UV rect;
//! - [`TileAvatar`]: the initials placeholder (circle, square or fullscreen per
//!   `avatar_mode`), shown until video arrives and whenever the participant pauses video;
//! - [`TileNameLabel`]: the participant's name in the corner, colour and visibility set by
//!   `main_video_container.name_label`;
//! - [`TileNetworkLabel`]: their network quality (Excellent / Good / Poor / Bad, coloured) in
//!   the corner and with the visibility of `main_video_container.network_label`; hidden until
//!   a quality is measured;
//! - [`TileMutedBadge`] and [`TileHandBadge`]: "Muted" and "Hand raised" pills, top left,
//!   shown while the participant's microphone is muted or their hand is up.
//!
//! Text on tiles uses the [`TileTextFont`] resource (Bevy's default font unless the app
//! chooses one).
//!
//! [`attach_tile_nodes`] builds them once; [`apply_tile_layouts`] copies each changed
//! [`TileLayout`] into the nodes; [`show_video_or_avatar`] switches between picture and avatar;
//! [`show_quality_and_speaking`] keeps the network label and the badges current and outlines
//! the tile of whoever is speaking.

use bevy::prelude::*;

use crate::call::model::*;
use crate::call::settings::{AvatarMode, TileCorner};

/// The child node of a tile that shows the video.
#[derive(Component, Clone, Copy, Debug, Default)]
pub struct TileVideo;

/// The child node of a tile that shows the avatar placeholder.
#[derive(Component, Clone, Copy, Debug, Default)]
pub struct TileAvatar;

/// The child node of a tile that shows the participant's name.
#[derive(Component, Clone, Copy, Debug, Default)]
pub struct TileNameLabel;

/// The child node of a tile that shows the participant's network quality.
#[derive(Component, Clone, Copy, Debug, Default)]
pub struct TileNetworkLabel;

/// The child node of a tile that says the participant's microphone is muted.
#[derive(Component, Clone, Copy, Debug, Default)]
pub struct TileMutedBadge;

/// The child node of a tile that says the participant's hand is raised.
#[derive(Component, Clone, Copy, Debug, Default)]
pub struct TileHandBadge;

/// The font of the text on tiles (names, initials, badges, network quality). The default is
/// Bevy's default font; an app built with Bevy's `system_font_discovery` sets
/// `FontSource::SansSerif`, so names draw in any script through the system's fallback fonts.
#[derive(Resource, Clone, Debug, Default, PartialEq)]
pub struct TileTextFont(pub FontSource);

impl TileTextFont {
    /// A `TextFont` of this font at `size`.
    pub fn at(&self, size: f32) -> TextFont {
        TextFont {
            font: self.0.clone(),
            ..TextFont::from_font_size(size)
        }
    }
}

/// Colour of the outline around a speaking participant's tile.
pub const SPEAKING_OUTLINE: Color = Color::srgb(0.25, 0.85, 0.45);

/// What the network label says for a quality, and its colour (empty until measured).
pub fn quality_label(quality: ConnectionQuality) -> (&'static str, Color) {
    match quality {
        ConnectionQuality::Unknown => ("", Color::WHITE),
        ConnectionQuality::Excellent => ("Excellent", Color::srgb(0.3, 0.9, 0.4)),
        ConnectionQuality::Good => ("Good", Color::srgb(0.7, 0.9, 0.3)),
        ConnectionQuality::Poor => ("Poor", Color::srgb(1.0, 0.7, 0.2)),
        ConnectionQuality::Bad => ("Bad", Color::srgb(1.0, 0.3, 0.3)),
    }
}

/// A stable, pleasant background colour for a participant's avatar.
pub fn avatar_color(uid: &str) -> Color {
    let hash = uid.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    Color::hsl((hash % 360) as f32, 0.45, 0.45)
}

/// Builds the UI nodes of every new tile.
pub(crate) fn attach_tile_nodes(
    new_tiles: Query<(Entity, &VideoTile, &TileOf, Has<ScreenShareTile>), Added<VideoTile>>,
    participants: Query<(&Participant, &ParticipantOf)>,
    calls: Query<(&Call, Option<&CallTarget>)>,
    font: Option<Res<TileTextFont>>,
    mut commands: Commands,
) {
    let font = font.as_deref().cloned().unwrap_or_default();
    for (tile, video, tile_of, screen) in &new_tiles {
        let Ok((who, participant_of)) = participants.get(tile_of.0) else {
            continue;
        };
        let Ok((call, target)) = calls.get(participant_of.0) else {
            continue;
        };
        let avatar_mode = call.settings.avatar_mode;
        let container = &call.settings.main_video_container;
        let name_label = container.name_label;
        let network_label = container.network_label;
        let label_color = container
            .name_label_color()
            .unwrap_or(Color::srgb(0.2, 0.2, 0.2));
        let mut entity = commands.entity(tile);
        entity.insert((
            Node {
                position_type: PositionType::Absolute,
                display: Display::None,
                overflow: Overflow::clip(),
                border_radius: BorderRadius::all(Val::Px(8.0)),
                ..default()
            },
            BackgroundColor(Color::BLACK),
            ZIndex(0),
        ));
        if let Some(CallTarget(root)) = target {
            entity.insert(ChildOf(*root));
        }
        let (avatar_size, radius) = match avatar_mode {
            AvatarMode::Circle => (Val::Percent(40.0), BorderRadius::MAX),
            AvatarMode::Square => (Val::Percent(40.0), BorderRadius::ZERO),
            AvatarMode::Fullscreen => (Val::Percent(100.0), BorderRadius::ZERO),
        };
        let initials = who.initials();
        let mut name = if who.name.is_empty() {
            who.uid.clone()
        } else {
            who.name.clone()
        };
        if screen {
            // Marked as a screen share, not their camera.
            name.push_str("'s screen");
        }
        let color = avatar_color(&who.uid);
        entity.with_children(|tile| {
            // The tile itself takes clicks and drags; what is drawn on it does not, so a
            // press on the picture, the avatar or a label is a press on the tile.
            tile.spawn((
                TileVideo,
                Pickable::IGNORE,
                Node {
                    position_type: PositionType::Absolute,
                    display: Display::None,
                    ..default()
                },
                ImageNode::new(video.image.clone()),
            ));
            tile.spawn((
                TileAvatar,
                Pickable::IGNORE,
                Node {
                    position_type: PositionType::Absolute,
                    left: Val::Percent(0.0),
                    right: Val::Percent(0.0),
                    top: Val::Percent(0.0),
                    bottom: Val::Percent(0.0),
                    margin: UiRect::AUTO,
                    height: avatar_size,
                    aspect_ratio: (avatar_mode != AvatarMode::Fullscreen).then_some(1.0),
                    justify_content: JustifyContent::Center,
                    align_items: AlignItems::Center,
                    border_radius: radius,
                    ..default()
                },
                BackgroundColor(color),
                children![(Text::new(initials), font.at(20.0), Pickable::IGNORE)],
            ));
            if name_label.visible {
                tile.spawn((
                    TileNameLabel,
                    Pickable::IGNORE,
                    Node {
                        border_radius: BorderRadius::all(Val::Px(4.0)),
                        ..corner_label_node(name_label.position)
                    },
                    BackgroundColor(label_color.with_alpha(0.8)),
                    ZIndex(1),
                    children![(Text::new(name), font.at(14.0), Pickable::IGNORE)],
                ));
            }
            if !screen {
                // Muted and hand-raised badges, top left, shown while they are true.
                tile.spawn((
                    Pickable::IGNORE,
                    Node {
                        position_type: PositionType::Absolute,
                        top: Val::Px(6.0),
                        left: Val::Px(6.0),
                        column_gap: Val::Px(4.0),
                        ..default()
                    },
                    ZIndex(1),
                    children![
                        badge(TileMutedBadge, "Muted", Color::srgb(0.8, 0.15, 0.15), &font),
                        badge(
                            TileHandBadge,
                            "Hand raised",
                            Color::srgb(0.9, 0.6, 0.1),
                            &font
                        ),
                    ],
                ));
            }
            if network_label.visible && !screen {
                tile.spawn((
                    TileNetworkLabel,
                    Pickable::IGNORE,
                    Node {
                        display: Display::None,
                        ..corner_label_node(network_label.position)
                    },
                    BackgroundColor(Color::srgba(0.0, 0.0, 0.0, 0.8)),
                    ZIndex(1),
                    Text::new(""),
                    font.at(13.0),
                    TextColor(Color::WHITE),
                ));
            }
        });
    }
}

/// A hidden pill with `text` on `color`, marked with `marker`.
fn badge(marker: impl Component, text: &str, color: Color, font: &TileTextFont) -> impl Bundle {
    (
        marker,
        Pickable::IGNORE,
        Node {
            display: Display::None,
            padding: UiRect::axes(Val::Px(6.0), Val::Px(2.0)),
            border_radius: BorderRadius::all(Val::Px(4.0)),
            ..default()
        },
        BackgroundColor(color),
        children![(
            Text::new(text),
            font.at(13.0),
            TextColor(Color::WHITE),
            Pickable::IGNORE
        )],
    )
}

/// The node of a label pinned into a corner of its tile.
fn corner_label_node(corner: TileCorner) -> Node {
    let (top, bottom, left, right) = corner_offsets(corner);
    Node {
        position_type: PositionType::Absolute,
        top,
        bottom,
        left,
        right,
        padding: UiRect::axes(Val::Px(6.0), Val::Px(2.0)),
        ..default()
    }
}

/// `top`, `bottom`, `left`, `right` that pin a label into a corner with a small margin.
fn corner_offsets(corner: TileCorner) -> (Val, Val, Val, Val) {
    let margin = Val::Px(6.0);
    let (top, bottom) = match corner {
        TileCorner::TopLeft | TileCorner::TopRight => (margin, Val::Auto),
        TileCorner::BottomLeft | TileCorner::BottomRight => (Val::Auto, margin),
    };
    let (left, right) = match corner {
        TileCorner::TopLeft | TileCorner::BottomLeft => (margin, Val::Auto),
        TileCorner::TopRight | TileCorner::BottomRight => (Val::Auto, margin),
    };
    (top, bottom, left, right)
}

/// Copies changed tile layouts into their nodes.
pub(crate) fn apply_tile_layouts(
    mut tiles: Query<
        (&TileLayout, &VideoTile, &mut Node, &mut ZIndex, &Children),
        Or<(Changed<TileLayout>, Changed<VideoTile>)>,
    >,
    mut videos: Query<(&mut Node, &mut ImageNode), (With<TileVideo>, Without<TileLayout>)>,
) {
    for (layout, tile, mut node, mut z, children) in &mut tiles {
        let rect = layout.rect;
        node.display = if layout.visible() {
            Display::Flex
        } else {
            Display::None
        };
        node.left = Val::Px(rect.min.x);
        node.top = Val::Px(rect.min.y);
        node.width = Val::Px(rect.width());
        node.height = Val::Px(rect.height());
        z.set_if_neq(ZIndex(layout.z));
        for child in children.iter() {
            let Ok((mut video_node, mut image)) = videos.get_mut(child) else {
                continue;
            };
            let content = layout.content;
            video_node.left = Val::Px(content.min.x - rect.min.x);
            video_node.top = Val::Px(content.min.y - rect.min.y);
            video_node.width = Val::Px(content.width());
            video_node.height = Val::Px(content.height());
            let frame = tile.frame_size.as_vec2();
            let crop = (tile.has_video() && layout.uv != Rect::new(0.0, 0.0, 1.0, 1.0))
                .then(|| Rect::from_corners(layout.uv.min * frame, layout.uv.max * frame));
            if image.rect != crop {
                image.rect = crop;
            }
        }
    }
}

/// Shows the picture when video flows and is not paused, the avatar otherwise; an audio call
/// shows avatars only (a peer that sends its camera anyway is not shown).
pub(crate) fn show_video_or_avatar(
    tiles_changed: Query<(), Changed<VideoTile>>,
    states_changed: Query<(), Changed<ParticipantState>>,
    media_changed: Query<(), Changed<CallMedia>>,
    tiles: Query<(&VideoTile, &TileOf, &Children, Has<ScreenShareTile>)>,
    states: Query<(&ParticipantState, &ParticipantOf)>,
    calls: Query<&CallMedia>,
    mut nodes: Query<(&mut Node, Has<TileVideo>), Or<(With<TileVideo>, With<TileAvatar>)>>,
) {
    if tiles_changed.is_empty() && states_changed.is_empty() && media_changed.is_empty() {
        return;
    }
    for (tile, tile_of, children, screen) in &tiles {
        let Ok((state, participant_of)) = states.get(tile_of.0) else {
            continue;
        };
        let audio_call = calls.get(participant_of.0).is_ok_and(|m| m.audio_only);
        // Pausing the camera does not hide a screen share, nor does an audio call.
        let camera_off = !screen && (state.video_paused || audio_call);
        let show_video = tile.has_video() && !camera_off;
        for child in children.iter() {
            if let Ok((mut node, is_video)) = nodes.get_mut(child) {
                let display = if is_video == show_video {
                    Display::Flex
                } else {
                    Display::None
                };
                if node.display != display {
                    node.display = display;
                }
            }
        }
    }
}

/// Writes each participant's network quality into their tile's network label, and outlines
/// the tile of whoever is speaking (only for participants whose state changed).
#[allow(clippy::type_complexity)]
pub(crate) fn show_quality_and_speaking(
    changed: Query<(&ParticipantState, &ParticipantTiles), Changed<ParticipantState>>,
    mut tiles: Query<(
        Option<&Children>,
        Has<ScreenShareTile>,
        Option<&mut Outline>,
    )>,
    mut labels: Query<(&mut Text, &mut TextColor, &mut Node), With<TileNetworkLabel>>,
    mut badges: Query<
        (&mut Node, Has<TileMutedBadge>),
        (
            Or<(With<TileMutedBadge>, With<TileHandBadge>)>,
            Without<TileNetworkLabel>,
        ),
    >,
    descendants: Query<&Children>,
    mut commands: Commands,
) {
    for (state, owned) in &changed {
        let (text, color) = quality_label(state.connection_quality);
        for tile in owned.iter() {
            let Ok((children, screen, outline)) = tiles.get_mut(tile) else {
                continue;
            };
            if screen {
                continue;
            }
            for child in children.into_iter().flat_map(|c| c.iter()) {
                if let Ok((mut label, mut label_color, mut node)) = labels.get_mut(child) {
                    if label.0 != text {
                        label.0 = text.to_owned();
                    }
                    label_color.set_if_neq(TextColor(color));
                    // Nothing measured (yet, or ever for ourselves): no empty box.
                    let display = if text.is_empty() {
                        Display::None
                    } else {
                        Display::Flex
                    };
                    if node.display != display {
                        node.display = display;
                    }
                }
            }
            for badge in descendants.iter_descendants(tile) {
                if let Ok((mut node, is_muted_badge)) = badges.get_mut(badge) {
                    let on = if is_muted_badge {
                        state.audio_muted
                    } else {
                        state.hand_raised
                    };
                    let display = if on { Display::Flex } else { Display::None };
                    if node.display != display {
                        node.display = display;
                    }
                }
            }
            let wanted = if state.speaking {
                Outline::new(Val::Px(3.0), Val::ZERO, SPEAKING_OUTLINE)
            } else {
                Outline::new(Val::ZERO, Val::ZERO, Color::NONE)
            };
            match outline {
                Some(mut outline) => {
                    if *outline != wanted {
                        *outline = wanted;
                    }
                }
                None => {
                    commands.entity(tile).insert(wanted);
                }
            }
        }
    }
}

/// Keeps each call's viewport equal to its target node's size, or to the primary window's
/// when it has no target.
pub(crate) fn sync_viewports(
    mut calls: Query<(&mut CallViewport, Option<&CallTarget>)>,
    nodes: Query<&ComputedNode>,
    windows: Query<&Window, With<bevy::window::PrimaryWindow>>,
) {
    for (mut viewport, target) in &mut calls {
        let size = match target {
            Some(CallTarget(root)) => nodes
                .get(*root)
                .ok()
                .map(|node| node.size() * node.inverse_scale_factor()),
            None => windows
                .single()
                .ok()
                .map(|w| Vec2::new(w.width(), w.height())),
        };
        if let Some(size) = size.filter(|s| s.x > 0.0 && s.y > 0.0) {
            viewport.set_if_neq(CallViewport { size });
        }
    }
}
