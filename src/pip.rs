//! Picture-in-picture: a small always-on-top second window with the call's main video.
//!
//! 1. When the active call's `CallMedia::pip` turns on (`enter_pip`), [`follow_pip`] opens a
//!    320×180 window (`WindowLevel::AlwaysOnTop`) with its own camera and one UI node whose
//!    `ImageNode` shows a tile's `Image` — the very image the tile shows, no copy.
//! 2. [`show_main_video`] keeps it on the main video: the Spotlight/Single main tile, else the
//!    first remote participant with video, else anyone's tile.
//! 3. `exit_pip` (or the call ending) closes the window; closing the window by hand exits
//!    PIP (`ExitPip`), so the call's state and the window never disagree.

use bevy::camera::RenderTarget;
use bevy::prelude::*;
use bevy::window::{WindowLevel, WindowRef, WindowResolution};
use bevy_huddle::prelude::*;

/// The PIP window, while open.
#[derive(Component, Debug)]
pub struct PipWindow {
    /// The call it shows.
    pub call: Entity,
}

/// The node showing the video in the PIP window.
#[derive(Component, Debug)]
pub struct PipVideo;

/// What the PIP window is made of, while it is open.
#[derive(Resource, Default, Debug)]
pub struct PipParts {
    /// The call, the window, its camera and its UI root.
    open: Option<(Entity, [Entity; 3])>,
}

/// Opens and closes the PIP window with the call's PIP state.
pub struct PipPlugin;

impl Plugin for PipPlugin {
    fn build(&self, app: &mut App) {
        app.init_resource::<PipParts>().add_systems(
            Update,
            (follow_pip, show_main_video)
                .chain()
                .after(HuddleSystems::Apply),
        );
    }
}

/// Opens the window when the active call enters PIP and closes it when PIP ends; a window
/// closed by hand (gone while PIP is on) exits PIP.
pub fn follow_pip(
    active: Res<ActiveCall>,
    calls: Query<(&CallMedia, &CallState)>,
    windows: Query<(), With<PipWindow>>,
    mut parts: ResMut<PipParts>,
    mut actions: MessageWriter<CallAction>,
    mut commands: Commands,
) {
    let wanted = active
        .0
        .filter(|c| calls.get(*c).is_ok_and(|(m, s)| m.pip && !s.is_ended()));
    if let Some((call, [window, camera, root])) = parts.open {
        let closed_by_hand = !windows.contains(window);
        if wanted != Some(call) || closed_by_hand {
            for entity in [window, camera, root] {
                if let Ok(mut entity) = commands.get_entity(entity) {
                    entity.despawn();
                }
            }
            parts.open = None;
            if closed_by_hand && wanted == Some(call) {
                actions.write(CallAction::ExitPip);
                return;
            }
        }
    }
    let Some(call) = wanted else {
        return;
    };
    if parts.open.is_some() {
        return;
    }
    let window = commands
        .spawn((
            Window {
                // ASCII: X11 tools read WM_NAME as Latin-1, and winit writes UTF-8 there.
                title: "Huddle - picture in picture".into(),
                resolution: WindowResolution::new(320, 180),
                window_level: WindowLevel::AlwaysOnTop,
                ..default()
            },
            PipWindow { call },
        ))
        .id();
    let camera = commands
        .spawn((Camera2d, RenderTarget::Window(WindowRef::Entity(window))))
        .id();
    let root = commands
        .spawn((
            Node {
                width: Val::Percent(100.0),
                height: Val::Percent(100.0),
                ..default()
            },
            BackgroundColor(Color::BLACK),
            UiTargetCamera(camera),
        ))
        .with_child((
            PipVideo,
            ImageNode::default(),
            Node {
                width: Val::Percent(100.0),
                height: Val::Percent(100.0),
                ..default()
            },
        ))
        .id();
    parts.open = Some((call, [window, camera, root]));
}

/// Points the PIP video at the call's main video.
pub fn show_main_video(
    pips: Query<&PipWindow>,
    members: Query<&CallParticipants>,
    participants: Query<(Has<LocalParticipant>, &ParticipantTiles)>,
    tiles: Query<(&VideoTile, Option<&TileLayout>)>,
    mut videos: Query<&mut ImageNode, With<PipVideo>>,
) {
    let Some(pip) = pips.iter().next() else {
        return;
    };
    let Ok(members) = members.get(pip.call) else {
        return;
    };
    // (is the main tile, is a remote with video): the best candidate wins.
    let mut best: Option<((bool, bool), Handle<Image>)> = None;
    for member in members.iter() {
        let Ok((local, owned)) = participants.get(member) else {
            continue;
        };
        for tile in owned.iter() {
            let Ok((video, layout)) = tiles.get(tile) else {
                continue;
            };
            let rank = (
                layout.is_some_and(|l| l.role == TileRole::Main),
                !local && video.has_video(),
            );
            if best.as_ref().is_none_or(|(r, _)| rank > *r) {
                best = Some((rank, video.image.clone()));
            }
        }
    }
    let Some((_, image)) = best else {
        return;
    };
    for mut node in &mut videos {
        if node.image != image {
            node.image = image.clone();
        }
    }
}
