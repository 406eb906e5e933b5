//! What the media sessions produced, into the ECS (in `HuddleSystems::Receive`), one job per
//! system:
//!
//! - [`drain_media_events`]: control news — peer signals out to the call's transport,
//!   errors, link quality (→ `ConnectionQualityChanged`), who speaks (→ `Speaking`), and
//!   failed links rebuilt;
//! - [`show_video_frames`]: the newest decoded picture of each participant (taken from the
//!   session's newest-wins slots; our own sent picture for the self-view) moves into their
//!   tile's `Image`, screen-share pictures to [`PendingScreenFrames`];
//! - [`stats::refresh_media_stats`](super::stats::refresh_media_stats): the figures.

use bevy::prelude::*;
use huddle_media::frames::VideoTrackKind;
use huddle_media::peer::PeerEvent;

use super::CallMediaSession;
use super::share::PendingScreenFrames;
use super::stats::{MediaStats, quality_from};
use crate::call::actions::CallAction;
use crate::call::error::HuddleError;
use crate::call::events::CallEvent;
use crate::call::model::*;
use crate::call::session::{SessionChange, SessionUpdate};
use crate::call::signal::{OutboundPeerSignal, TransportCheckWanted};
use crate::call::video_image::show_video_frame;

/// Drains each session's control events: signals out, errors, link quality, rebuilt links.
pub(crate) fn drain_media_events(
    mut calls: Query<(
        Entity,
        &CallMediaSession,
        &mut MediaStats,
        &CallParticipants,
    )>,
    participants: Query<&Participant>,
    mut signals: MessageWriter<OutboundPeerSignal>,
    mut checks: MessageWriter<TransportCheckWanted>,
    mut updates: MessageWriter<SessionUpdate>,
    mut events: MessageWriter<CallEvent>,
    mut actions: MessageWriter<CallAction>,
) {
    for (call, media, mut stats, members) in &mut calls {
        while let Ok(event) = media.session.events().try_recv() {
            match event {
                PeerEvent::Signal { to, signal } => {
                    signals.write(OutboundPeerSignal { call, to, signal });
                }
                PeerEvent::DeviceFailed { kind, id, reason } => {
                    events.write(CallEvent::Error {
                        call: Some(call),
                        error: HuddleError::DeviceUnavailable { kind, id, reason },
                    });
                }
                PeerEvent::Error { uid, reason } => {
                    events.write(CallEvent::Error {
                        call: Some(call),
                        error: HuddleError::Media { uid, reason },
                    });
                }
                PeerEvent::ScreenShareEnded { reason } => {
                    events.write(CallEvent::Error {
                        call: Some(call),
                        error: HuddleError::ScreenShare(reason),
                    });
                    actions.write(CallAction::StopScreenShare);
                }
                PeerEvent::RecordingFailed { .. } => {
                    // Turning recording off finishes the file and reports the failure
                    // (`finish_recording`), once.
                    actions.write(CallAction::StopRecording);
                }
                PeerEvent::Quality {
                    uid,
                    rtt_ms,
                    loss,
                    path,
                } => {
                    // Through the SFU, every remote's media comes over the receiving
                    // connection: its link is theirs. The publishing connection's figures
                    // are the SFU's, not a participant's.
                    let remotes: Vec<String> = match uid.as_str() {
                        huddle_protocol::SFU_PUBLISH_PEER => Vec::new(),
                        huddle_protocol::SFU_SUBSCRIBE_PEER => members
                            .iter()
                            .filter_map(|p| participants.get(p).ok())
                            .map(|who| who.uid.clone())
                            .filter(|who| *who != media.local_uid)
                            .collect(),
                        _ => vec![uid],
                    };
                    for uid in remotes {
                        let remote = stats.remotes.entry(uid.clone()).or_default();
                        remote.rtt_ms = rtt_ms;
                        remote.loss = loss;
                        if let Some(path) = &path {
                            remote.ice = Some(path.clone());
                            updates.write(SessionUpdate {
                                call,
                                change: SessionChange::MediaPath {
                                    uid: uid.clone(),
                                    path: MediaPath {
                                        local_candidate_type: path.local_candidate_type.clone(),
                                        remote_candidate_type: path.remote_candidate_type.clone(),
                                        protocol: path.protocol.clone(),
                                    },
                                },
                            });
                        }
                        updates.write(SessionUpdate {
                            call,
                            change: SessionChange::ConnectionQuality {
                                uid,
                                quality: quality_from(rtt_ms, loss),
                            },
                        });
                    }
                }
                PeerEvent::Disconnected { uid, .. } => {
                    // A failed link (ICE lost after a network change) is rebuilt if they are
                    // still in the call.
                    let present = members
                        .iter()
                        .filter_map(|p| participants.get(p).ok())
                        .any(|who| who.uid == uid);
                    if present {
                        media.session.remove_peer(&uid);
                        media.session.add_peer(&uid);
                    }
                }
                PeerEvent::Speaking { uid, speaking } => {
                    updates.write(SessionUpdate {
                        call,
                        change: SessionChange::Speaking { uid, speaking },
                    });
                }
                PeerEvent::Loudness { uid, dbov } => {
                    updates.write(SessionUpdate {
                        call,
                        change: SessionChange::Loudness { uid, dbov },
                    });
                }
                PeerEvent::TalkingWhileMuted => {
                    events.write(CallEvent::TalkingWhileMuted { call });
                }
                PeerEvent::Connected { .. } => {}
                PeerEvent::IceServerProblem(problem) => {
                    events.write(CallEvent::Error {
                        call: Some(call),
                        error: HuddleError::IceServer(problem),
                    });
                }
                PeerEvent::IceRestarted { uid } => {
                    if uid != huddle_protocol::SFU_PUBLISH_PEER {
                        stats.remotes.entry(uid).or_default().ice_restarts += 1;
                    }
                    checks.write(TransportCheckWanted { call });
                }
            }
        }
    }
}

/// Moves each participant's newest picture into their tile's `Image` (the bytes move, no
/// copy), its size into the layout; screen-share pictures go to [`PendingScreenFrames`].
pub(crate) fn show_video_frames(
    calls: Query<(Entity, &CallMediaSession, &CallParticipants)>,
    participants: Query<(&Participant, &ParticipantTiles)>,
    tiles: Query<&VideoTile, Without<ScreenShareTile>>,
    mut screen_frames: ResMut<PendingScreenFrames>,
    mut images: Option<ResMut<Assets<Image>>>,
    mut updates: MessageWriter<SessionUpdate>,
) {
    for (call, media, members) in &calls {
        let mut newest = media.session.take_video_frames();
        // Our own picture goes into our tile like anyone's (the self-view).
        if let Some(frame) = media.session.take_local_preview() {
            newest.push(huddle_media::frames::VideoFrame {
                uid: media.local_uid.clone(),
                track: VideoTrackKind::Camera,
                frame,
            });
        }
        for taken in newest {
            if taken.track == VideoTrackKind::Screen {
                screen_frames.0.insert((call, taken.uid), taken.frame);
                continue;
            }
            let Some(images) = images.as_deref_mut() else {
                continue;
            };
            let Some((_, owned)) = members
                .iter()
                .filter_map(|p| participants.get(p).ok())
                .find(|(who, _)| who.uid == taken.uid)
            else {
                continue;
            };
            // A participant has one video tile (its Image is what every surface shows).
            let Some(tile) = owned.iter().find_map(|t| tiles.get(t).ok()) else {
                continue;
            };
            let Some(mut image) = images.get_mut(&tile.image) else {
                continue;
            };
            let size = UVec2::new(taken.frame.width, taken.frame.height);
            show_video_frame(&mut image, size, taken.frame.rgba);
            if tile.frame_size != size {
                updates.write(SessionUpdate {
                    call,
                    change: SessionChange::VideoFormat {
                        uid: taken.uid,
                        size,
                    },
                });
            }
        }
    }
}
