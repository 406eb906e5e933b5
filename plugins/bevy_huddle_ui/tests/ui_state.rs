//! Headless tests of the default UI's state: which buttons show, what they send, the ringing
//! screens and their choices, shortcuts. `App` + `MinimalPlugins`, no window, no egui pass.

use std::time::Duration;

use bevy::prelude::*;
use bevy::time::TimeUpdateStrategy;
use bevy_huddle::prelude::*;
use bevy_huddle::{RingingAction, StartSession};
use bevy_huddle_ui::bar::next_mode;
use bevy_huddle_ui::*;
use huddle_protocol::{Call as WireCall, CallStatus, CallType, ReceiverType, User};

#[derive(Resource, Default)]
struct Sent {
    ringing: Vec<RingingAction>,
    started: Vec<StartSession>,
}

fn log_sent(
    mut ringing: MessageReader<RingingAction>,
    mut start: MessageReader<StartSession>,
    mut sent: ResMut<Sent>,
) {
    sent.ringing.extend(ringing.read().cloned());
    sent.started.extend(start.read().cloned());
}

fn app() -> App {
    let mut app = App::new();
    app.add_plugins((
        MinimalPlugins,
        AssetPlugin::default(),
        HuddlePlugins,
        HuddleUiStatePlugin,
    ))
    .init_resource::<ButtonInput<KeyCode>>()
    .init_resource::<Sent>()
    .insert_resource(TimeUpdateStrategy::ManualDuration(Duration::from_millis(
        100,
    )))
    .add_systems(Last, log_sent);
    app.finish();
    app.update();
    app
}

fn joined(app: &mut App, settings: CallSettings) -> Entity {
    let call = app.world_mut().spawn(Call::new("s1", settings)).id();
    app.update();
    app.world_mut().write_message(SessionUpdate {
        call,
        change: SessionChange::Joined {
            local: ParticipantInfo::new("alice", "Alice"),
            others: vec![ParticipantInfo::new("bob", "Bob")],
        },
    });
    app.update();
    app.update();
    call
}

fn local_state(app: &mut App) -> ParticipantState {
    let mut query = app
        .world_mut()
        .query_filtered::<&ParticipantState, With<LocalParticipant>>();
    query
        .single(app.world())
        .expect("local participant")
        .clone()
}

fn wire_call(session: &str, call_type: CallType, status: CallStatus) -> WireCall {
    WireCall {
        session_id: session.into(),
        status,
        call_type,
        receiver_type: ReceiverType::User,
        initiator: User {
            uid: "carol".into(),
            name: "Carol".into(),
            avatar: None,
        },
        receiver: "alice".into(),
        initiated_at: 0,
    }
}

fn ringing_event(app: &mut App, event: RingingEvent) {
    app.world_mut().write_message(event);
    app.update();
}

/// The bar shows the reference default buttons (no record button), hides everything when
/// `default_layout` is off, swaps video buttons for "switch to video" on audio calls, and
/// honours each `show_*` flag.
#[test]
fn bar_buttons_follow_the_settings() {
    let video = BarState::default();
    let defaults = CallSettings::default();
    assert_eq!(
        bar_buttons(&defaults, &video),
        vec![
            CallButton::Mute,
            CallButton::PauseVideo,
            CallButton::SwitchCamera,
            CallButton::AudioMode,
            CallButton::Mode,
            CallButton::ScreenShare,
            CallButton::RaiseHand,
            CallButton::Pip,
            CallButton::EndCall,
        ]
    );

    let tiles_only = CallSettings::builder()
        .default_layout(false)
        .build()
        .expect("valid settings");
    assert!(bar_buttons(&tiles_only, &video).is_empty());

    let audio = BarState {
        audio_only: true,
        ..default()
    };
    let audio_buttons = bar_buttons(&defaults, &audio);
    assert!(audio_buttons.contains(&CallButton::SwitchToVideo));
    assert!(!audio_buttons.contains(&CallButton::PauseVideo));
    assert!(!audio_buttons.contains(&CallButton::SwitchCamera));
    assert!(!audio_buttons.contains(&CallButton::Pip));

    let mut custom = CallSettings::default();
    custom.buttons.show_recording = true;
    custom.buttons.show_end_call = false;
    custom.buttons.show_mute_audio = false;
    let buttons = bar_buttons(&custom, &video);
    assert!(buttons.contains(&CallButton::Record));
    assert!(!buttons.contains(&CallButton::EndCall));
    assert!(!buttons.contains(&CallButton::Mute));
}

/// Each button toggles from the current state: mute ↔ unmute, record start ↔ stop, hand up ↔
/// down, PIP in ↔ out, and the mode button cycles grid → spotlight → single → grid.
#[test]
fn buttons_toggle_from_the_current_state() {
    let idle = BarState::default();
    let busy = BarState {
        audio_muted: true,
        video_paused: true,
        recording: true,
        screen_sharing: true,
        hand_raised: true,
        pip: true,
        ..default()
    };
    let pairs = [
        (
            CallButton::Mute,
            CallAction::MuteAudio(true),
            CallAction::MuteAudio(false),
        ),
        (
            CallButton::PauseVideo,
            CallAction::PauseVideo(true),
            CallAction::PauseVideo(false),
        ),
        (
            CallButton::Record,
            CallAction::StartRecording,
            CallAction::StopRecording,
        ),
        (
            CallButton::ScreenShare,
            CallAction::StartScreenShare,
            CallAction::StopScreenShare,
        ),
        (
            CallButton::RaiseHand,
            CallAction::RaiseHand,
            CallAction::LowerHand,
        ),
        (CallButton::Pip, CallAction::EnterPip, CallAction::ExitPip),
    ];
    for (button, off, on) in pairs {
        assert_eq!(button.action(&idle), Some(off), "{button:?} from idle");
        assert_eq!(button.action(&busy), Some(on), "{button:?} when on");
        assert_ne!(button.label(&idle), button.label(&busy), "{button:?} label");
    }
    assert_eq!(CallButton::AudioMode.action(&idle), None, "opens a menu");
    assert_eq!(
        CallButton::EndCall.action(&idle),
        Some(CallAction::EndSession)
    );
    let mut mode = LayoutMode::Default;
    let mut seen = Vec::new();
    for _ in 0..3 {
        mode = next_mode(mode);
        seen.push(mode);
    }
    assert_eq!(
        seen,
        vec![
            LayoutMode::Spotlight,
            LayoutMode::Single,
            LayoutMode::Default
        ]
    );
}

/// A button press routed through the real action pipeline changes the call: pressing Mute in
/// a joined call mutes the local participant, pressing it again unmutes.
#[test]
fn pressing_mute_in_a_joined_call_mutes_and_unmutes() {
    let mut app = app();
    joined(&mut app, CallSettings::default());
    for expected in [true, false] {
        let state = local_state(&mut app);
        let bar = BarState {
            audio_muted: state.audio_muted,
            ..default()
        };
        let action = CallButton::Mute
            .action(&bar)
            .expect("mute is a plain action");
        app.world_mut().write_message(action);
        app.update();
        assert_eq!(local_state(&mut app).audio_muted, expected);
    }
}

/// M mutes, H raises the hand and Esc twice ends the call while shortcuts are on (one Esc
/// only arms the confirmation, which lapses after 3 s); with `CallShortcuts::enabled =
/// false`, or while someone types in a text field, the same keys change nothing.
#[test]
fn shortcuts_drive_the_call_and_can_be_turned_off() {
    let mut app = app();
    let call = joined(&mut app, CallSettings::default());
    let press = |app: &mut App, key: KeyCode| {
        app.world_mut()
            .resource_mut::<ButtonInput<KeyCode>>()
            .press(key);
        app.update();
        let mut keys = app.world_mut().resource_mut::<ButtonInput<KeyCode>>();
        keys.release(key);
        keys.clear();
    };

    app.world_mut().resource_mut::<CallShortcuts>().enabled = false;
    press(&mut app, KeyCode::KeyM);
    assert!(!local_state(&mut app).audio_muted, "disabled shortcuts");

    app.world_mut().resource_mut::<CallShortcuts>().enabled = true;
    app.world_mut().resource_mut::<CallShortcuts>().typing = true;
    press(&mut app, KeyCode::KeyM);
    assert!(!local_state(&mut app).audio_muted, "typing, not a shortcut");

    app.world_mut().resource_mut::<CallShortcuts>().typing = false;
    press(&mut app, KeyCode::KeyM);
    assert!(local_state(&mut app).audio_muted);
    press(&mut app, KeyCode::KeyH);
    assert!(local_state(&mut app).hand_raised);
    press(&mut app, KeyCode::Escape);
    app.update();
    assert_eq!(
        app.world().get::<CallState>(call),
        Some(&CallState::InCall),
        "one Esc does not hang up"
    );
    assert!(
        app.world()
            .resource::<LeaveConfirmation>()
            .armed_until
            .is_some(),
        "one Esc asks for another"
    );
    // 100 ms per frame: 31 frames is past the 3 s window.
    for _ in 0..31 {
        app.update();
    }
    assert_eq!(
        app.world().resource::<LeaveConfirmation>().armed_until,
        None
    );
    press(&mut app, KeyCode::Escape);
    assert_eq!(app.world().get::<CallState>(call), Some(&CallState::InCall));
    press(&mut app, KeyCode::Escape);
    app.update();
    let state = app.world().get::<CallState>(call).cloned();
    assert!(
        matches!(state, Some(CallState::Ended { .. }) | None),
        "Esc leaves the call, got {state:?}"
    );
}

/// An incoming call shows the incoming screen; each choice sends the matching request
/// (Accept → AcceptCall, Reject → Rejected, Busy → Busy, Cancel → Cancelled).
#[test]
fn ringing_choices_send_the_matching_requests() {
    let mut app = app();
    ringing_event(
        &mut app,
        RingingEvent::IncomingCallReceived {
            call: wire_call("in-1", CallType::Video, CallStatus::Initiated),
        },
    );
    let screens = app.world().resource::<RingingScreens>().clone();
    assert_eq!(
        screens.incoming.map(|c| c.initiator.name),
        Some("Carol".into())
    );

    for choice in [
        RingingChoice::Accept("in-1".into()),
        RingingChoice::Reject("in-1".into()),
        RingingChoice::Busy("in-1".into()),
        RingingChoice::Cancel("out-1".into()),
    ] {
        app.world_mut().write_message(choice);
        app.update();
    }
    let sent = std::mem::take(&mut app.world_mut().resource_mut::<Sent>().ringing);
    let expected = [
        RingingAction::AcceptCall {
            session_id: "in-1".into(),
        },
        RingingAction::RejectCall {
            session_id: "in-1".into(),
            status: CallStatus::Rejected,
        },
        RingingAction::RejectCall {
            session_id: "in-1".into(),
            status: CallStatus::Busy,
        },
        RingingAction::RejectCall {
            session_id: "out-1".into(),
            status: CallStatus::Cancelled,
        },
    ];
    assert_eq!(sent, expected);
}

/// Accepting an audio call clears the incoming screen, asks for a token, and joins with the
/// token as an audio-only call; a token for a session the UI is not joining is ignored.
#[test]
fn an_accepted_call_is_joined_with_its_token() {
    let mut app = app();
    let call = wire_call("in-2", CallType::Audio, CallStatus::Ongoing);
    ringing_event(
        &mut app,
        RingingEvent::IncomingCallReceived { call: call.clone() },
    );
    ringing_event(&mut app, RingingEvent::CallAccepted { call });
    assert!(app.world().resource::<RingingScreens>().incoming.is_none());
    let sent = std::mem::take(&mut app.world_mut().resource_mut::<Sent>().ringing);
    assert!(sent.contains(&RingingAction::GenerateToken {
        session_id: "in-2".into()
    }));

    ringing_event(
        &mut app,
        RingingEvent::TokenGenerated {
            session_id: "someone-else".into(),
            call_token: "t0".into(),
        },
    );
    ringing_event(
        &mut app,
        RingingEvent::TokenGenerated {
            session_id: "in-2".into(),
            call_token: "t1".into(),
        },
    );
    let started = std::mem::take(&mut app.world_mut().resource_mut::<Sent>().started);
    assert_eq!(started.len(), 1, "only the accepted session is joined");
    assert_eq!(started[0].call_token, "t1");
    assert!(started[0].settings.audio_only);
}

/// Outcomes become toasts: our call rejected as busy, an incoming call that went unanswered;
/// toasts disappear after `TOAST_DURATION`.
#[test]
fn outcomes_become_toasts_that_expire() {
    let mut app = app();
    let outgoing = wire_call("out-2", CallType::Video, CallStatus::Initiated);
    ringing_event(
        &mut app,
        RingingEvent::CallInitiated {
            call: outgoing.clone(),
        },
    );
    assert!(app.world().resource::<RingingScreens>().outgoing.is_some());
    ringing_event(
        &mut app,
        RingingEvent::OutgoingCallRejected {
            call: WireCall {
                status: CallStatus::Busy,
                ..outgoing
            },
        },
    );
    let incoming = wire_call("in-3", CallType::Video, CallStatus::Initiated);
    ringing_event(
        &mut app,
        RingingEvent::IncomingCallReceived {
            call: incoming.clone(),
        },
    );
    ringing_event(
        &mut app,
        RingingEvent::IncomingCallCancelled {
            call: WireCall {
                status: CallStatus::Unanswered,
                ..incoming
            },
        },
    );
    let screens = app.world().resource::<RingingScreens>().clone();
    assert!(screens.outgoing.is_none() && screens.incoming.is_none());
    let texts: Vec<_> = screens.toasts.iter().map(|t| t.text.as_str()).collect();
    assert_eq!(texts, ["alice is busy", "Missed call from Carol"]);

    for _ in 0..(ringing::TOAST_DURATION.as_millis() / 100 + 2) {
        app.update();
    }
    assert!(app.world().resource::<RingingScreens>().toasts.is_empty());
}

/// The device pickers list every microphone, speaker and camera (synthetic ones marked) with
/// the one in use selected; picking another sends the matching action, which selects it
/// (`MediaDeviceSelected`) — and the pickers then show it selected.
#[test]
fn device_pickers_list_devices_and_a_pick_selects_one() {
    let mut app = app();
    let pickers = device_pickers(app.world().resource::<MediaDevices>());
    let titles: Vec<&str> = pickers.iter().map(|p| p.title).collect();
    assert_eq!(titles, ["Microphone", "Speaker", "Camera"]);
    let cameras = &pickers[2];
    assert!(cameras.options.len() >= 2, "two synthetic cameras at least");
    assert!(cameras.options[0].selected && !cameras.options[1].selected);
    assert!(
        cameras
            .options
            .iter()
            .all(|o| o.label.ends_with("(synthetic)"))
    );
    let second = cameras.options[1].id.clone();
    assert_eq!(
        choose_device(DeviceKind::VideoInput, &second),
        CallAction::SetVideoInputDevice(second.clone())
    );
    app.world_mut()
        .write_message(choose_device(DeviceKind::VideoInput, &second));
    app.update();
    let pickers = device_pickers(app.world().resource::<MediaDevices>());
    let selected: Vec<&str> = pickers[2]
        .options
        .iter()
        .filter(|o| o.selected)
        .map(|o| o.id.as_str())
        .collect();
    assert_eq!(selected, [second.as_str()]);
    assert_eq!(
        choose_device(DeviceKind::AudioOutput, "x"),
        CallAction::SetAudioOutputDevice("x".into())
    );
    assert_eq!(
        choose_device(DeviceKind::AudioInput, "y"),
        CallAction::SetAudioInputDevice("y".into())
    );
}

/// An incoming call rings: the ringtone (the default clip from assets/) plays on the null
/// output (no speaker here) with sound in it; it stops when the call is cancelled; with the
/// ringtone turned off an incoming call shows but nothing rings.
#[test]
fn incoming_calls_ring_until_they_go() {
    let mut app = app();
    assert!(!app.world().resource::<RingtonePlayer>().is_playing());
    ringing_event(
        &mut app,
        RingingEvent::IncomingCallReceived {
            call: wire_call("in-9", CallType::Audio, CallStatus::Initiated),
        },
    );
    assert!(app.world().resource::<RingtonePlayer>().is_playing());
    std::thread::sleep(Duration::from_millis(300));
    let player = app.world().resource::<RingtonePlayer>();
    let ringtone = player.ringtone().expect("ringing");
    assert!(
        !ringtone.on_device(),
        "no speaker on this machine: null output"
    );
    assert!(
        ringtone.frames_played() >= 5,
        "{}",
        ringtone.frames_played()
    );
    assert!(ringtone.level().0 > 0.01, "the clip is audible");
    ringing_event(
        &mut app,
        RingingEvent::IncomingCallCancelled {
            call: wire_call("in-9", CallType::Audio, CallStatus::Cancelled),
        },
    );
    assert!(app.world().resource::<RingingScreens>().incoming.is_none());
    assert!(!app.world().resource::<RingtonePlayer>().is_playing());

    app.world_mut().resource_mut::<RingtoneSettings>().enabled = false;
    ringing_event(
        &mut app,
        RingingEvent::IncomingCallReceived {
            call: wire_call("in-10", CallType::Video, CallStatus::Initiated),
        },
    );
    assert!(app.world().resource::<RingingScreens>().incoming.is_some());
    assert!(!app.world().resource::<RingtonePlayer>().is_playing());
}

/// Placing a call shows "Calling…" in the same frame as the request, before the server has
/// answered (`RingingScreens::placing`); the server's `CallInitiated` turns it into the
/// outgoing screen (with the receiver's name from the login's contacts), and a refusal
/// clears it.
#[test]
fn a_placed_call_shows_at_once() {
    let mut app = app();
    ringing_event(
        &mut app,
        RingingEvent::LoggedIn {
            user: User {
                uid: "alice".into(),
                name: "Alice".into(),
                avatar: None,
            },
            contacts: vec![huddle_protocol::Presence {
                user: User {
                    uid: "bob".into(),
                    name: "Bob Builder".into(),
                    avatar: None,
                },
                online: true,
            }],
            groups: Vec::new(),
            reconnected: false,
        },
    );
    app.world_mut().write_message(RingingAction::InitiateCall {
        receiver_id: "bob".into(),
        receiver_type: ReceiverType::User,
        call_type: CallType::Video,
        timeout_secs: None,
    });
    app.update();
    let screens = app.world().resource::<RingingScreens>().clone();
    assert_eq!(
        screens.placing.as_ref().map(|p| p.receiver_id.as_str()),
        Some("bob"),
        "shown in the frame of the click"
    );
    assert_eq!(screens.display_name("bob"), "Bob Builder");
    let mut call = wire_call("out-9", CallType::Video, CallStatus::Initiated);
    call.receiver = "bob".into();
    ringing_event(&mut app, RingingEvent::CallInitiated { call });
    let screens = app.world().resource::<RingingScreens>().clone();
    assert_eq!(screens.placing, None);
    assert_eq!(
        screens.outgoing.map(|c| c.session_id),
        Some("out-9".to_owned())
    );

    app.world_mut().write_message(RingingAction::InitiateCall {
        receiver_id: "nobody".into(),
        receiver_type: ReceiverType::User,
        call_type: CallType::Audio,
        timeout_secs: None,
    });
    app.update();
    assert!(app.world().resource::<RingingScreens>().placing.is_some());
    ringing_event(
        &mut app,
        RingingEvent::Failed {
            error: HuddleError::InvalidSessionId("x".into()),
        },
    );
    assert_eq!(app.world().resource::<RingingScreens>().placing, None);
}

/// Whether egui, with these font definitions, has a glyph for every character of `text`.
fn egui_draws(fonts: bevy_egui::egui::FontDefinitions, text: &str) -> bool {
    use bevy_huddle_ui::bevy_egui::egui;
    let ctx = egui::Context::default();
    ctx.set_fonts(fonts);
    // Fonts take effect at the start of a pass.
    let mut output = ctx.run_ui(egui::RawInput::default(), |_| {});
    // No renderer takes the font atlas here.
    output.textures_delta.clear();
    ctx.fonts_mut(|fonts| fonts.has_glyphs(&egui::FontId::proportional(14.0), text))
}

/// Names in any script draw in egui: with the system fallback chain (the fonts Bevy's text
/// falls back to, found through fontconfig; `scripts/setup` installs Noto), egui has a glyph
/// for every character of Latin with diacritics, Greek, Cyrillic, Chinese, Japanese and
/// Korean; egui's own fonts alone have none for the CJK characters (what drew as boxes).
#[test]
fn names_in_any_script_have_glyphs() {
    use bevy_huddle_ui::fonts::{font_definitions, system_fallback_chain};
    let chain = system_fallback_chain();
    let families: Vec<String> = chain.iter().map(|f| f.family.clone()).collect();
    assert!(!chain.is_empty(), "no system fonts found");
    let with_chain = font_definitions(chain);
    for text in ["Zoë", "Ω Σ", "Привет", "山田", "やまだ", "김"] {
        assert!(
            egui_draws(with_chain.clone(), text),
            "{text:?} has no glyphs in {families:?}"
        );
    }
    assert!(
        !egui_draws(bevy_egui::egui::FontDefinitions::default(), "山田"),
        "egui's own fonts lack CJK, so this test would not notice a missing chain"
    );
}

/// Talking into a muted microphone shows a hint naming the mute key.
#[test]
fn talking_while_muted_shows_a_hint() {
    let mut app = app();
    let call = joined(&mut app, CallSettings::default());
    app.world_mut()
        .write_message(CallEvent::TalkingWhileMuted { call });
    app.update();
    let toasts: Vec<String> = app
        .world()
        .resource::<RingingScreens>()
        .toasts
        .iter()
        .map(|t| t.text.clone())
        .collect();
    assert_eq!(toasts, ["You are muted: press M to unmute"]);
}
