//! Screen share: when the local participant starts sharing (`ScreenShareStarted` by us), the
//! session captures the desktop ([`ScreenShareSettings`]: X11 display, window, frame rate,
//! bitrate) onto its screen track; no display gives an `Error` event and the share is turned
//! off again. When the call's [`CallMedia::shared_camera`] is set (`share_camera`), that Bevy
//! camera's picture is shared instead ([`game_view`](super::game_view)). A remote's screen
//! frames go into a second tile of theirs, marked [`ScreenShareTile`] (spotlighted by the
//! layout), removed when they stop sharing.

use std::collections::HashMap;

use bevy::prelude::*;

use super::CallMediaSession;
use crate::call::actions::CallAction;
use crate::call::error::HuddleError;
use crate::call::events::CallEvent;
use crate::call::model::*;
use crate::call::video_image::{show_video_frame, video_image};

/// How the local screen share captures and sends.
#[derive(Resource, Clone, Debug, PartialEq)]
pub struct ScreenShareSettings {
    /// The X11 display to capture (`None`: `$DISPLAY`).
    pub display: Option<String>,
    /// One window of it to capture (an X11 window id) instead of the whole screen.
    pub window: Option<u32>,
    /// Frames per second.
    pub fps: f32,
    /// Encoder bitrate, bits per second.
    pub bitrate_bps: u32,
}

impl Default for ScreenShareSettings {
    fn default() -> Self {
        Self {
            display: None,
            window: None,
            fps: 10.0,
            bitrate_bps: 1_500_000,
        }
    }
}

/// Newest screen-share frame of each sharer, between draining and showing.
#[derive(Resource, Default)]
pub(crate) struct PendingScreenFrames(
    pub(crate) HashMap<(Entity, String), huddle_media::peer::DecodedVideo>,
);

/// Puts each sharer's newest screen frame into their screen-share tile, spawning the tile
/// with the first frame; pictures of someone not (or no longer) sharing are dropped.
pub(crate) fn show_screen_shares(
    mut pending: ResMut<PendingScreenFrames>,
    calls: Query<&CallParticipants>,
    participants: Query<(&Participant, &ParticipantState, &ParticipantTiles)>,
    mut screen_tiles: Query<&mut VideoTile, With<ScreenShareTile>>,
    mut images: Option<ResMut<Assets<Image>>>,
    mut commands: Commands,
) {
    for ((call, uid), frame) in pending.0.drain() {
        let Some(images) = images.as_deref_mut() else {
            continue;
        };
        let Some((participant, owned)) = calls.get(call).ok().and_then(|members| {
            members
                .iter()
                .find(|p| participants.get(*p).is_ok_and(|(who, ..)| who.uid == uid))
                .and_then(|p| {
                    participants
                        .get(p)
                        .ok()
                        // Only while they share: a picture still in flight when their stop
                        // arrived must not bring the removed tile back.
                        .filter(|(_, state, _)| state.screen_sharing)
                        .map(|(.., owned)| (p, owned))
                })
        }) else {
            continue;
        };
        let size = UVec2::new(frame.width, frame.height);
        let existing = owned.iter().find(|t| screen_tiles.contains(*t));
        match existing.and_then(|t| screen_tiles.get_mut(t).ok()) {
            Some(mut tile) => {
                if let Some(mut image) = images.get_mut(&tile.image) {
                    show_video_frame(&mut image, size, frame.rgba);
                }
                if tile.frame_size != size {
                    tile.frame_size = size;
                }
            }
            None => {
                commands.spawn((
                    ScreenShareTile,
                    TileOf(participant),
                    VideoTile {
                        image: images.add(video_image(size, frame.rgba)),
                        frame_size: size,
                    },
                ));
            }
        }
    }
}

/// Our own `ScreenShareStarted`/`Stopped` start and stop the capture; anyone's stop removes
/// their screen-share tile.
pub(crate) fn follow_screen_shares(
    mut events: ParamSet<(MessageReader<CallEvent>, MessageWriter<CallEvent>)>,
    sessions: Query<(&CallMediaSession, &CallMedia)>,
    calls: Query<&CallParticipants>,
    participants: Query<(&Participant, &ParticipantTiles)>,
    screen_tiles: Query<(), With<ScreenShareTile>>,
    settings: Option<Res<ScreenShareSettings>>,
    mut actions: MessageWriter<CallAction>,
    mut commands: Commands,
) {
    let changes: Vec<(Entity, String, bool)> = events
        .p0()
        .read()
        .filter_map(|event| match event {
            CallEvent::ScreenShareStarted { call, user } => Some((*call, user.uid.clone(), true)),
            CallEvent::ScreenShareStopped { call, user } => Some((*call, user.uid.clone(), false)),
            _ => None,
        })
        .collect();
    for (call, uid, started) in changes {
        let local = sessions.get(call).ok().filter(|(m, _)| m.local_uid == uid);
        match (local, started) {
            (Some((media, call_media)), true) => {
                let settings = settings.as_deref().cloned().unwrap_or_default();
                let opened = match call_media.shared_camera {
                    Some(camera) => super::game_view::open_camera_share(
                        &mut commands,
                        call,
                        camera,
                        settings.fps,
                    ),
                    None => huddle_media::screen::X11Screen::open(
                        settings.display.as_deref(),
                        settings.fps,
                    )
                    .map(
                        |screen| -> Box<dyn huddle_media::screen::ScreenSource> {
                            Box::new(match settings.window {
                                Some(window) => screen.window(window),
                                None => screen,
                            })
                        },
                    ),
                };
                match opened {
                    Ok(source) => media
                        .session
                        .start_screen_share(source, settings.bitrate_bps),
                    Err(err) => {
                        events.p1().write(CallEvent::Error {
                            call: Some(call),
                            error: HuddleError::ScreenShare(err.to_string()),
                        });
                        actions.write(CallAction::StopScreenShare);
                    }
                }
            }
            (Some((media, _)), false) => {
                // Stop first: the capture thread then ends quietly when its frames stop.
                media.session.stop_screen_share();
                super::game_view::close_camera_share(&mut commands, call);
            }
            (None, true) => {}
            (None, false) => {
                let owned = calls.get(call).ok().and_then(|members| {
                    members
                        .iter()
                        .filter_map(|p| participants.get(p).ok())
                        .find(|(who, _)| who.uid == uid)
                        .map(|(_, owned)| owned)
                });
                for tile in owned.into_iter().flat_map(|o| o.iter()) {
                    if screen_tiles.contains(tile) {
                        commands.entity(tile).despawn();
                    }
                }
            }
        }
    }
}
