//! Every in-call action changes local state, announces it with the right event, tells peers
//! when they must know, and refuses bad input with a typed error while leaving state alone.

use bevy::prelude::*;
use bevy_huddle::prelude::*;

use crate::harness::*;

fn call_media(app: &App, call: Entity) -> CallMedia {
    app.world().get::<CallMedia>(call).cloned().expect("media")
}

fn call_layout(app: &App, call: Entity) -> CallLayout {
    app.world()
        .get::<CallLayout>(call)
        .cloned()
        .expect("layout")
}

/// Mute, pause video, raise hand and screen share each flip the local flag, emit their event
/// once (a repeat is a no-op), and send the matching signal.
#[test]
fn local_toggles_change_state_emit_events_and_signal_peers() {
    let mut app = app();
    let call = one_to_one(&mut app);
    take_events(&mut app);
    take_signals(&mut app);

    act(&mut app, CallAction::MuteAudio(true));
    act(&mut app, CallAction::MuteAudio(true));
    app.update();
    assert!(state_of(&mut app, "alice").audio_muted);
    let events = take_events(&mut app);
    let alice = events
        .iter()
        .filter_map(|e| match e {
            CallEvent::UserMuted {
                call: c,
                user,
                muted,
                muted_by,
            } => Some((*c, user.uid.clone(), *muted, muted_by.clone())),
            _ => None,
        })
        .collect::<Vec<_>>();
    assert_eq!(alice, vec![(call, "alice".into(), true, "alice".into())]);
    assert_eq!(take_signals(&mut app), vec![Signal::AudioMuted(true)]);

    act(&mut app, CallAction::PauseVideo(true));
    act(&mut app, CallAction::RaiseHand);
    act(&mut app, CallAction::StartScreenShare);
    app.update();
    let state = state_of(&mut app, "alice");
    assert!(state.video_paused && state.hand_raised && state.screen_sharing);
    let events = take_events(&mut app);
    assert!(
        matches!(&events[0], CallEvent::UserVideoPaused { paused: true, user, .. } if user.uid == "alice")
    );
    assert!(matches!(&events[1], CallEvent::HandRaised { user, .. } if user.uid == "alice"));
    assert!(
        matches!(&events[2], CallEvent::ScreenShareStarted { user, .. } if user.uid == "alice")
    );
    assert_eq!(
        take_signals(&mut app),
        vec![
            Signal::VideoPaused(true),
            Signal::HandRaised(true),
            Signal::ScreenShare(true)
        ]
    );

    act(&mut app, CallAction::MuteAudio(false));
    act(&mut app, CallAction::PauseVideo(false));
    act(&mut app, CallAction::LowerHand);
    act(&mut app, CallAction::StopScreenShare);
    app.update();
    assert_eq!(state_of(&mut app, "alice"), ParticipantState::default());
    let events = take_events(&mut app);
    assert!(matches!(
        &events[0],
        CallEvent::UserMuted { muted: false, .. }
    ));
    assert!(matches!(
        &events[1],
        CallEvent::UserVideoPaused { paused: false, .. }
    ));
    assert!(matches!(&events[2], CallEvent::HandLowered { .. }));
    assert!(matches!(&events[3], CallEvent::ScreenShareStopped { .. }));
    assert_eq!(events.len(), 4);
}

/// Recording, PIP, mode and audio mode change call-level state with their events; an
/// unavailable audio mode is refused with `INVALID_PROP_EXCEPTION` and changes nothing.
#[test]
fn call_level_actions_change_state_and_emit_events() {
    let mut app = app();
    let call = one_to_one(&mut app);
    take_events(&mut app);
    take_signals(&mut app);

    act(&mut app, CallAction::StartRecording);
    act(&mut app, CallAction::EnterPip);
    act(&mut app, CallAction::SetMode(LayoutMode::Spotlight));
    act(&mut app, CallAction::SetAudioMode(AudioMode::Headphones));
    act(&mut app, CallAction::SetAudioMode(AudioMode::Earpiece));
    app.update();
    let media = call_media(&app, call);
    assert_eq!(media.recording_by.as_deref(), Some("alice"));
    assert!(media.pip);
    assert_eq!(media.audio_mode, AudioMode::Headphones, "earpiece refused");
    assert_eq!(call_layout(&app, call).mode, LayoutMode::Spotlight);
    let events = take_events(&mut app);
    assert_eq!(
        events[0],
        CallEvent::RecordingToggled {
            call,
            started: true,
            by: "alice".into()
        }
    );
    assert_eq!(events[1], CallEvent::PipToggled { call, active: true });
    assert_eq!(
        events[2],
        CallEvent::ModeChanged {
            call,
            mode: LayoutMode::Spotlight
        }
    );
    assert!(matches!(
        &events[3],
        CallEvent::AudioModesUpdated { selected: AudioMode::Headphones, modes, .. }
            if modes.contains(&AudioMode::Speaker)
    ));
    assert_eq!(error_codes(&events), vec![ErrorCode::InvalidProp]);
    assert_eq!(take_signals(&mut app), vec![Signal::Recording(true)]);

    act(&mut app, CallAction::StopRecording);
    act(&mut app, CallAction::ExitPip);
    app.update();
    let media = call_media(&app, call);
    assert!(media.recording_by.is_none() && !media.pip);
    let events = take_events(&mut app);
    assert_eq!(
        events[0],
        CallEvent::RecordingToggled {
            call,
            started: false,
            by: "alice".into()
        }
    );
    assert_eq!(
        events[1],
        CallEvent::PipToggled {
            call,
            active: false
        }
    );
}

/// An audio-only call switches to video once, naming initiator and responder; a second
/// switch is refused.
#[test]
fn switch_to_video_call() {
    let mut app = app();
    let settings = CallSettings::builder()
        .audio_only(true)
        .build()
        .expect("valid");
    let call = joined_call(&mut app, Call::new("audio-1", settings), &["bob"]);
    assert!(call_media(&app, call).audio_only);
    assert!(
        state_of(&mut app, "alice").video_paused,
        "audio-only sends no video"
    );
    take_events(&mut app);
    take_signals(&mut app);

    act(&mut app, CallAction::SwitchToVideoCall);
    app.update();
    assert!(!call_media(&app, call).audio_only);
    assert!(!state_of(&mut app, "alice").video_paused, "video turns on");
    let events = take_events(&mut app);
    assert_eq!(
        events[0],
        CallEvent::CallSwitchedToVideo {
            call,
            session_id: "audio-1".into(),
            initiator: "alice".into(),
            responder: "bob".into(),
        }
    );
    assert!(
        matches!(&events[1], CallEvent::UserVideoPaused { paused: false, user, .. } if user.uid == "alice")
    );
    assert_eq!(events.len(), 2);
    assert_eq!(
        take_signals(&mut app),
        vec![Signal::SwitchedToVideo, Signal::VideoPaused(false)]
    );

    act(&mut app, CallAction::SwitchToVideoCall);
    app.update();
    assert_eq!(
        error_codes(&take_events(&mut app)),
        vec![ErrorCode::InvalidProp]
    );
}

/// Devices: lists come from the media layer; selecting a listed device announces it,
/// an unknown id is refused and the selection stays; switch camera cycles cameras.
#[test]
fn device_selection_and_camera_switch() {
    let mut app = app();
    one_to_one(&mut app);
    take_events(&mut app);
    let devices = app.world().resource::<MediaDevices>().clone();
    let cameras: Vec<String> = devices
        .video_input_devices()
        .iter()
        .map(|d| d.id.clone())
        .collect();
    assert!(cameras.len() >= 2);
    assert_eq!(
        devices
            .selected(DeviceKind::VideoInput)
            .map(|d| d.id.clone()),
        Some(cameras[0].clone())
    );

    act(&mut app, CallAction::SwitchCamera);
    app.update();
    let selected = |app: &App, kind| {
        app.world()
            .resource::<MediaDevices>()
            .selected(kind)
            .map(|d| d.id.clone())
    };
    assert_eq!(
        selected(&app, DeviceKind::VideoInput),
        Some(cameras[1].clone())
    );
    act(&mut app, CallAction::SwitchCamera);
    app.update();
    assert_eq!(
        selected(&app, DeviceKind::VideoInput),
        Some(cameras[0].clone()),
        "wraps around"
    );
    let events = take_events(&mut app);
    assert_eq!(events.len(), 2);
    assert!(events.iter().all(|e| matches!(
        e,
        CallEvent::MediaDeviceSelected {
            kind: DeviceKind::VideoInput,
            ..
        }
    )));

    let mic = devices.audio_input_devices()[0].id.clone();
    act(&mut app, CallAction::SetAudioInputDevice(mic.clone()));
    act(
        &mut app,
        CallAction::SetAudioOutputDevice("no-such-speaker".into()),
    );
    act(
        &mut app,
        CallAction::SetVideoInputDevice(cameras[1].clone()),
    );
    app.update();
    assert_eq!(selected(&app, DeviceKind::AudioInput), Some(mic));
    assert_eq!(
        selected(&app, DeviceKind::VideoInput),
        Some(cameras[1].clone())
    );
    assert_eq!(
        selected(&app, DeviceKind::AudioOutput),
        devices
            .selected(DeviceKind::AudioOutput)
            .map(|d| d.id.clone()),
        "unknown speaker id leaves the selection alone"
    );
    let events = take_events(&mut app);
    assert_eq!(error_codes(&events), vec![ErrorCode::InvalidArgument]);
    assert!(events.iter().any(|e| matches!(
        e,
        CallEvent::Error {
            error: HuddleError::UnknownDevice {
                kind: DeviceKind::AudioOutput,
                ..
            },
            ..
        }
    )));
}

/// With no camera at all, switch camera gives a typed error instead of doing nothing silently.
#[test]
fn switch_camera_without_cameras_is_a_typed_error() {
    let mut app = app();
    one_to_one(&mut app);
    let mut lists = app.world().resource::<MediaDevices>().lists().clone();
    lists.video_inputs.clear();
    app.world_mut()
        .write_message(bevy_huddle::DeviceListRefreshed(lists));
    app.update();
    take_events(&mut app);
    act(&mut app, CallAction::SwitchCamera);
    app.update();
    let events = take_events(&mut app);
    assert!(matches!(
        &events[..],
        [CallEvent::Error {
            error: HuddleError::NoDevice {
                kind: DeviceKind::VideoInput
            },
            ..
        }]
    ));
}

/// Pin/unpin by uid, and per-participant local volume and mute; unknown uids and volumes
/// outside 0..=1 are refused without changing anything.
#[test]
fn pin_and_local_audio_controls() {
    let mut app = app();
    let call = joined_call(
        &mut app,
        Call::new("g", CallSettings::default()).group(),
        &["bob", "carol"],
    );
    take_events(&mut app);
    let bob = participant(&mut app, "bob");

    act(&mut app, CallAction::Pin("bob".into()));
    act(&mut app, CallAction::Pin("nobody".into()));
    act(
        &mut app,
        CallAction::SetParticipantVolume {
            uid: "bob".into(),
            volume: 0.25,
        },
    );
    act(
        &mut app,
        CallAction::SetParticipantVolume {
            uid: "bob".into(),
            volume: 1.5,
        },
    );
    act(
        &mut app,
        CallAction::SetParticipantLocalMute {
            uid: "carol".into(),
            muted: true,
        },
    );
    app.update();
    assert_eq!(call_layout(&app, call).pinned, Some(bob));
    let mut routes = app
        .world_mut()
        .query::<(&bevy_huddle::call::model::RouteOf, &AudioRoute)>();
    let routes: Vec<(Entity, AudioRoute)> = routes
        .iter(app.world())
        .map(|(of, r)| (of.0, r.clone()))
        .collect();
    let bob_route = routes
        .iter()
        .find(|(p, _)| *p == bob)
        .map(|(_, r)| r)
        .expect("bob route");
    assert_eq!(bob_route.volume, 0.25);
    assert!(!bob_route.local_mute);
    let carol = participant(&mut app, "carol");
    assert!(
        routes
            .iter()
            .find(|(p, _)| *p == carol)
            .is_some_and(|(_, r)| r.local_mute)
    );

    let events = take_events(&mut app);
    assert_eq!(
        events[0],
        CallEvent::PinChanged {
            call,
            pinned: Some("bob".into())
        }
    );
    assert_eq!(
        error_codes(&events),
        vec![ErrorCode::InvalidArgument, ErrorCode::InvalidProp]
    );
    assert!(events.iter().any(|e| matches!(e, CallEvent::LocalAudioChanged { user, volume, muted: false, .. } if user.uid == "bob" && *volume == 0.25)));
    assert!(events.iter().any(|e| matches!(e, CallEvent::LocalAudioChanged { user, muted: true, .. } if user.uid == "carol")));

    act(&mut app, CallAction::Unpin);
    app.update();
    assert_eq!(call_layout(&app, call).pinned, None);
    assert_eq!(
        take_events(&mut app),
        vec![CallEvent::PinChanged { call, pinned: None }]
    );
}

/// End session: the pressing side gets `CallEndButtonPressed`, a 1:1 call also `CallEnded`;
/// the state says why, peers are told, later actions get `ERR_CALL_ENDED`, and
/// `clear_active_call` despawns the call and everything that belongs to it.
#[test]
fn end_session_then_clear_active_call() {
    let mut app = app();
    let call = one_to_one(&mut app);
    take_events(&mut app);
    take_signals(&mut app);

    act(&mut app, CallAction::EndSession);
    app.update();
    assert_eq!(
        app.world().get::<CallState>(call),
        Some(&CallState::Ended {
            reason: EndReason::LocalHangUp
        })
    );
    assert_eq!(
        take_events(&mut app),
        vec![
            CallEvent::CallEndButtonPressed { call },
            CallEvent::CallEnded {
                call,
                reason: EndReason::LocalHangUp
            },
        ]
    );
    assert_eq!(take_signals(&mut app), vec![Signal::Leave]);

    act(&mut app, CallAction::MuteAudio(true));
    app.update();
    assert_eq!(
        error_codes(&take_events(&mut app)),
        vec![ErrorCode::CallEnded]
    );

    act(&mut app, CallAction::ClearActiveCall);
    run(&mut app, 2);
    assert!(app.world().get_entity(call).is_err());
    assert_eq!(app.world().resource::<ActiveCall>().0, None);
    let mut leftovers = app
        .world_mut()
        .query_filtered::<Entity, Or<(With<Participant>, With<VideoTile>, With<AudioRoute>)>>();
    assert_eq!(
        leftovers.iter(app.world()).count(),
        0,
        "participants, tiles and routes go too"
    );

    act(&mut app, CallAction::MuteAudio(true));
    app.update();
    assert_eq!(
        error_codes(&take_events(&mut app)),
        vec![ErrorCode::CallNotFound]
    );
}

/// A group call ending locally announces the button press but not `CallEnded` (1:1 only).
#[test]
fn group_call_end_has_no_call_ended_event() {
    let mut app = app();
    let call = joined_call(
        &mut app,
        Call::new("g", CallSettings::default()).group(),
        &["bob", "carol"],
    );
    take_events(&mut app);
    act(&mut app, CallAction::EndSession);
    app.update();
    assert_eq!(
        take_events(&mut app),
        vec![CallEvent::CallEndButtonPressed { call }]
    );
}
