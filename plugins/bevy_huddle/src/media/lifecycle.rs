//! A call's media session from start to stop: it starts when a relayed call is in the
//! session, follows joins, leaves, the local mute and pause, the audio routes' gains and
//! each remote's [`VideoDemand`], and stops when the call ends.

use std::time::Instant;

use bevy::prelude::*;
use huddle_media::session::{MediaSession, SessionConfig};

use super::recording::{RecordingSettings, begin_recording, finish_recording};
use super::stats::MediaStats;
use super::{CallMediaSession, MediaSettings};
use crate::HuddleRuntime;
use crate::call::actions::CallAction;
use crate::call::demand::VideoDemand;
use crate::call::devices::{DeviceKind, MediaDevices};
use crate::call::events::CallEvent;
use crate::call::model::*;
use crate::call::route::RouteGain;
use crate::call::signal::{CallMediaRoute, IceServers, PeerSignalReceived, RelayedBy};

/// Starts the media of server-connected calls once they are in the session.
pub(crate) fn start_call_media(
    calls: Query<
        (
            Entity,
            &Call,
            &CallState,
            &CallMedia,
            &CallParticipants,
            Option<&IceServers>,
            Option<&CallMediaRoute>,
        ),
        (With<RelayedBy>, Without<CallMediaSession>),
    >,
    participants: Query<(&Participant, Has<LocalParticipant>, &ParticipantState)>,
    runtime: Option<Res<HuddleRuntime>>,
    settings: Option<Res<MediaSettings>>,
    recordings: Option<Res<RecordingSettings>>,
    devices: Option<Res<MediaDevices>>,
    mut events: MessageWriter<CallEvent>,
    mut actions: MessageWriter<CallAction>,
    mut commands: Commands,
) {
    let Some(runtime) = runtime else {
        return;
    };
    for (call, request, state, media, members, ice_servers, route) in &calls {
        if *state != CallState::InCall {
            continue;
        }
        let people: Vec<(String, bool, ParticipantState)> = members
            .iter()
            .filter_map(|p| participants.get(p).ok())
            .map(|(who, local, state)| (who.uid.clone(), local, state.clone()))
            .collect();
        let Some((local_uid, _, local_state)) = people.iter().find(|(_, local, _)| *local).cloned()
        else {
            continue;
        };
        let settings = settings.as_deref().cloned().unwrap_or_default();
        let session = MediaSession::start(
            runtime.handle(),
            SessionConfig {
                local_uid: local_uid.clone(),
                video: settings.video,
                ice: huddle_media::ice::IceConfig {
                    bind: settings.bind_addrs.clone(),
                    servers: ice_servers.map(|s| s.0.clone()).unwrap_or_default(),
                    multicast_dns: settings.multicast_dns,
                },
                audio_input: devices
                    .as_ref()
                    .and_then(|d| d.selected(DeviceKind::AudioInput))
                    .map(|d| d.id.clone()),
                audio_output: devices
                    .as_ref()
                    .and_then(|d| d.selected(DeviceKind::AudioOutput))
                    .map(|d| d.id.clone()),
                video_input: devices
                    .as_ref()
                    .and_then(|d| d.selected(DeviceKind::VideoInput))
                    .map(|d| d.id.clone()),
                stereo_audio: settings.stereo_audio,
                measure: settings.measure,
                talk_pattern: settings.talk_pattern,
                voice_processing: settings.voice_processing,
                voice_decode_limit: settings.voice_decode_limit,
            },
        );
        session.set_local_preview(settings.local_preview);
        session.set_audio_muted(local_state.audio_muted);
        session.set_video_paused(local_state.video_paused);
        session.set_video_enabled(!media.audio_only);
        session.set_route(route.map(|r| r.0).unwrap_or_default());
        for (uid, local, _) in &people {
            if !local {
                session.add_peer(uid);
            }
        }
        // Recording turned on before the media existed (`start_recording_on_call_start`).
        if media.recording_by.as_deref() == Some(local_uid.as_str()) {
            let recordings = recordings.as_deref().cloned().unwrap_or_default();
            let path = recordings.path_for(&request.session_id);
            begin_recording(call, &session, &path, &mut events, &mut actions);
        }
        commands.entity(call).insert((
            CallMediaSession { session, local_uid },
            MediaStats {
                started: Some(Instant::now()),
                ..default()
            },
        ));
    }
}

/// Joins and leaves add and remove peers; a switch to video turns video on.
pub(crate) fn follow_participants(
    mut events: MessageReader<CallEvent>,
    sessions: Query<&CallMediaSession>,
) {
    for event in events.read() {
        match event {
            CallEvent::UserJoined { call, user } => {
                if let Ok(media) = sessions.get(*call)
                    && user.uid != media.local_uid
                {
                    media.session.add_peer(&user.uid);
                }
            }
            CallEvent::UserLeft { call, user } => {
                if let Ok(media) = sessions.get(*call) {
                    media.session.remove_peer(&user.uid);
                }
            }
            CallEvent::CallSwitchedToVideo { call, .. } => {
                if let Ok(media) = sessions.get(*call) {
                    media.session.set_video_enabled(true);
                }
            }
            _ => {}
        }
    }
}

/// A call whose route changed (it grew past the server's SFU threshold, or the SFU failed)
/// moves its media: the old connections close, the new ones open.
pub(crate) fn follow_media_route(
    calls: Query<(&CallMediaRoute, &CallMediaSession), Changed<CallMediaRoute>>,
) {
    for (route, media) in &calls {
        media.session.set_route(route.0);
    }
}

/// The local participant's mute and pause drive the senders.
pub(crate) fn follow_local_state(
    changed: Query<
        (&ParticipantState, &ParticipantOf),
        (With<LocalParticipant>, Changed<ParticipantState>),
    >,
    sessions: Query<&CallMediaSession>,
) {
    for (state, of) in &changed {
        if let Ok(media) = sessions.get(of.0) {
            media.session.set_audio_muted(state.audio_muted);
            media.session.set_video_paused(state.video_paused);
        }
    }
}

/// Signals from peers (relayed by the server) go to the call's session.
pub(crate) fn route_peer_signals(
    mut signals: MessageReader<PeerSignalReceived>,
    sessions: Query<&CallMediaSession>,
) {
    for PeerSignalReceived { call, from, signal } in signals.read() {
        if let Ok(media) = sessions.get(*call) {
            media.session.handle_signal(from, signal.clone());
        }
    }
}

/// Each route's gains (volume and local mute, or the spatial gains) go to the call's mixer;
/// voices culled for distance are not decoded at all.
pub(crate) fn apply_audio_routes(
    routes: Query<(&RouteGain, &RouteOf), Changed<RouteGain>>,
    new_sessions: Query<(), Added<CallMediaSession>>,
    all_routes: Query<(&RouteGain, &RouteOf)>,
    participants: Query<(&Participant, &ParticipantOf)>,
    sessions: Query<&CallMediaSession>,
) {
    let apply = |gain: &RouteGain, of: &RouteOf| {
        let Ok((who, call)) = participants.get(of.0) else {
            return;
        };
        if let Ok(media) = sessions.get(call.0) {
            media.session.set_gain(
                &who.uid,
                huddle_media::mixer::StereoGain {
                    left: gain.left,
                    right: gain.right,
                },
            );
            media.session.set_audio_decoding(&who.uid, !gain.culled);
        }
    };
    if new_sessions.is_empty() {
        for (gain, of) in &routes {
            apply(gain, of);
        }
    } else {
        for (gain, of) in &all_routes {
            apply(gain, of);
        }
    }
}

/// Each remote's [`VideoDemand`] (published by the view) is asked of their sender: paused
/// while nothing shows them, a capped bitrate while their tile is small. Asked every frame:
/// the session sends a wish when it changes and again every two seconds, since one sent before
/// the sender's connection existed is lost.
pub(crate) fn apply_video_demand(
    demands: Query<(&Participant, &ParticipantOf, &VideoDemand)>,
    sessions: Query<&CallMediaSession>,
) {
    for (who, of, demand) in &demands {
        if let Ok(media) = sessions.get(of.0) {
            media
                .session
                .want_video_from(&who.uid, demand.paused, demand.max_bitrate_bps);
        }
    }
}

/// Ended calls stop their media (finishing a recording, then dropping the session, which
/// closes every connection).
pub(crate) fn stop_ended_media(
    calls: Query<(Entity, &CallState, &CallMediaSession), Changed<CallState>>,
    mut events: MessageWriter<CallEvent>,
    mut commands: Commands,
) {
    for (call, state, media) in &calls {
        if state.is_ended() {
            finish_recording(call, media, &mut events);
            commands.entity(call).remove::<CallMediaSession>();
        }
    }
}
