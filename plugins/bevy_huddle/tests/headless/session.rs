//! What the transport reports (`SessionUpdate`) becomes state and the reference events:
//! joins and leaves, remote mutes, speakers, quality, the call's end, idle timeout, and the
//! refusals when a call cannot start.

use std::time::Duration;

use bevy::prelude::*;
use bevy_huddle::prelude::*;

use crate::harness::*;

fn uids(users: &[CallUser]) -> Vec<&str> {
    users.iter().map(|u| u.uid.as_str()).collect()
}

/// Joining spawns the local and remote participants (each with a tile and an audio route),
/// moves the call to `InCall`, and announces the user list in join order.
#[test]
fn joining_spawns_participants_and_lists_users() {
    let mut app = app();
    let call = spawn_call(&mut app, Call::new("s", CallSettings::default()));
    assert_eq!(
        app.world().get::<CallState>(call),
        Some(&CallState::Joining)
    );
    assert_eq!(app.world().resource::<ActiveCall>().0, Some(call));
    session(
        &mut app,
        call,
        SessionChange::Joined {
            local: ParticipantInfo::new("alice", "Alice"),
            others: vec![
                ParticipantInfo::new("bob", "Bob"),
                ParticipantInfo::new("carol", "Carol"),
            ],
        },
    );
    run(&mut app, 2);
    assert_eq!(app.world().get::<CallState>(call), Some(&CallState::InCall));
    let members = app.world().get::<CallParticipants>(call).expect("members");
    assert_eq!(members.len(), 3);
    let alice = participant(&mut app, "alice");
    assert!(app.world().get::<LocalParticipant>(alice).is_some());
    for uid in ["alice", "bob", "carol"] {
        let tile = tile_of(&mut app, uid);
        assert!(app.world().get::<VideoTile>(tile).is_some());
    }
    let mut routes = app.world_mut().query::<&AudioRoute>();
    assert_eq!(routes.iter(app.world()).count(), 3);
    let events = take_events(&mut app);
    let lists: Vec<Vec<&str>> = events
        .iter()
        .filter_map(|e| match e {
            CallEvent::UserListChanged { users, .. } => Some(uids(users)),
            _ => None,
        })
        .collect();
    assert_eq!(lists, vec![vec!["alice", "bob", "carol"]]);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, CallEvent::AudioModesUpdated { .. }))
    );
}

/// Remote joins and leaves in a group call give `UserJoined`/`UserLeft` and the new list;
/// the call goes on while others remain, and a duplicate join changes nothing.
#[test]
fn remote_join_and_leave_in_a_group_call() {
    let mut app = app();
    let call = joined_call(
        &mut app,
        Call::new("g", CallSettings::default()).group(),
        &["bob"],
    );
    take_events(&mut app);
    session(
        &mut app,
        call,
        SessionChange::ParticipantJoined(ParticipantInfo::new("carol", "Carol")),
    );
    session(
        &mut app,
        call,
        SessionChange::ParticipantJoined(ParticipantInfo::new("carol", "Carol")),
    );
    run(&mut app, 3);
    let events = take_events(&mut app);
    assert!(matches!(&events[0], CallEvent::UserJoined { user, .. } if user.uid == "carol"));
    assert!(
        matches!(&events[1], CallEvent::UserListChanged { users, .. } if uids(users) == ["alice", "bob", "carol"])
    );
    assert_eq!(events.len(), 2, "the duplicate join is ignored: {events:?}");

    session(
        &mut app,
        call,
        SessionChange::ParticipantLeft { uid: "bob".into() },
    );
    run(&mut app, 2);
    let events = take_events(&mut app);
    assert!(matches!(&events[0], CallEvent::UserLeft { user, .. } if user.uid == "bob"));
    assert!(
        matches!(&events[1], CallEvent::UserListChanged { users, .. } if uids(users) == ["alice", "carol"])
    );
    assert_eq!(events.len(), 2);
    assert_eq!(app.world().get::<CallState>(call), Some(&CallState::InCall));
    let mut tiles = app.world_mut().query::<&VideoTile>();
    assert_eq!(
        tiles.iter(app.world()).count(),
        2,
        "bob's tile went with him"
    );
}

/// In a 1:1 call the other side leaving ends the call with `CallEnded` (remote hang-up).
#[test]
fn one_to_one_ends_when_the_other_side_leaves() {
    let mut app = app();
    let call = one_to_one(&mut app);
    take_events(&mut app);
    session(
        &mut app,
        call,
        SessionChange::ParticipantLeft { uid: "bob".into() },
    );
    run(&mut app, 2);
    assert_eq!(
        app.world().get::<CallState>(call),
        Some(&CallState::Ended {
            reason: EndReason::RemoteHangUp
        })
    );
    let events = take_events(&mut app);
    assert!(events.contains(&CallEvent::CallEnded {
        call,
        reason: EndReason::RemoteHangUp
    }));
    // A late `Ended` from the server changes nothing more.
    session(
        &mut app,
        call,
        SessionChange::Ended {
            reason: EndReason::RemoteHangUp,
        },
    );
    run(&mut app, 2);
    assert!(take_events(&mut app).is_empty());
}

/// Remote state changes update the participant and emit their events; quality and dominant
/// speaker too; an update naming an unknown uid is a typed error and changes nothing.
#[test]
fn remote_state_changes() {
    let mut app = app();
    let call = joined_call(
        &mut app,
        Call::new("g", CallSettings::default()).group(),
        &["bob", "carol"],
    );
    take_events(&mut app);
    session(
        &mut app,
        call,
        SessionChange::Muted {
            uid: "bob".into(),
            muted: true,
            by: "bob".into(),
        },
    );
    session(
        &mut app,
        call,
        SessionChange::VideoPaused {
            uid: "carol".into(),
            paused: true,
        },
    );
    session(
        &mut app,
        call,
        SessionChange::HandRaised {
            uid: "carol".into(),
            raised: true,
        },
    );
    session(
        &mut app,
        call,
        SessionChange::ScreenShare {
            uid: "bob".into(),
            started: true,
        },
    );
    session(
        &mut app,
        call,
        SessionChange::Speaking {
            uid: "bob".into(),
            speaking: true,
        },
    );
    session(
        &mut app,
        call,
        SessionChange::DominantSpeaker {
            uid: Some("bob".into()),
        },
    );
    session(
        &mut app,
        call,
        SessionChange::ConnectionQuality {
            uid: "carol".into(),
            quality: bevy_huddle::call::model::ConnectionQuality::Poor,
        },
    );
    session(
        &mut app,
        call,
        SessionChange::RecordingToggled {
            started: true,
            by: "bob".into(),
        },
    );
    session(
        &mut app,
        call,
        SessionChange::Muted {
            uid: "mallory".into(),
            muted: true,
            by: "x".into(),
        },
    );
    app.update();
    let bob = state_of(&mut app, "bob");
    assert!(bob.audio_muted && bob.screen_sharing && bob.speaking);
    let carol = state_of(&mut app, "carol");
    assert!(carol.video_paused && carol.hand_raised);
    assert_eq!(
        carol.connection_quality,
        bevy_huddle::call::model::ConnectionQuality::Poor
    );
    let bob_entity = participant(&mut app, "bob");
    assert_eq!(
        app.world()
            .get::<CallLayout>(call)
            .expect("layout")
            .dominant_speaker,
        Some(bob_entity)
    );
    let events = take_events(&mut app);
    assert!(
        matches!(&events[0], CallEvent::UserMuted { user, muted: true, muted_by, .. } if user.uid == "bob" && muted_by == "bob")
    );
    assert!(
        matches!(&events[1], CallEvent::UserVideoPaused { user, paused: true, .. } if user.uid == "carol")
    );
    assert!(matches!(&events[2], CallEvent::HandRaised { user, .. } if user.uid == "carol"));
    assert!(matches!(&events[3], CallEvent::ScreenShareStarted { user, .. } if user.uid == "bob"));
    assert_eq!(
        events[4],
        CallEvent::DominantSpeakerChanged {
            call,
            uid: Some("bob".into())
        }
    );
    assert!(
        matches!(&events[5], CallEvent::ConnectionQualityChanged { user, .. } if user.uid == "carol")
    );
    assert_eq!(
        events[6],
        CallEvent::RecordingToggled {
            call,
            started: true,
            by: "bob".into()
        }
    );
    assert_eq!(error_codes(&events), vec![ErrorCode::InvalidArgument]);
    assert_eq!(events.len(), 8);
}

/// `start_audio_muted`, `start_video_muted` and `start_recording_on_call_start` apply at join,
/// and peers are told.
#[test]
fn start_settings_apply_at_join() {
    let mut app = app();
    let settings = CallSettings::builder()
        .start_audio_muted(true)
        .start_video_muted(true)
        .start_recording_on_call_start(true)
        .build()
        .expect("valid");
    let call = joined_call(&mut app, Call::new("s", settings), &["bob"]);
    let alice = state_of(&mut app, "alice");
    assert!(alice.audio_muted && alice.video_paused);
    assert_eq!(
        app.world()
            .get::<CallMedia>(call)
            .expect("media")
            .recording_by
            .as_deref(),
        Some("alice")
    );
    let signals = take_signals(&mut app);
    assert_eq!(
        signals,
        vec![
            Signal::AudioMuted(true),
            Signal::VideoPaused(true),
            Signal::Recording(true)
        ]
    );
    assert!(
        take_events(&mut app)
            .iter()
            .any(|e| matches!(e, CallEvent::RecordingToggled { started: true, .. }))
    );
}

/// Alone in a call for `idle_timeout` (simulated time) ends it with `SessionTimeout`; company
/// resets the clock.
#[test]
fn idle_timeout_ends_a_lonely_call() {
    let mut app = app();
    let settings = CallSettings::builder()
        .idle_timeout(Duration::from_secs(1))
        .build()
        .expect("valid");
    let call = joined_call(&mut app, Call::new("s", settings).group(), &[]);
    take_events(&mut app);
    run(&mut app, 40); // 0.64 s
    assert_eq!(app.world().get::<CallState>(call), Some(&CallState::InCall));
    session(
        &mut app,
        call,
        SessionChange::ParticipantJoined(ParticipantInfo::new("bob", "Bob")),
    );
    run(&mut app, 40); // with company: no timeout
    session(
        &mut app,
        call,
        SessionChange::ParticipantLeft { uid: "bob".into() },
    );
    run(&mut app, 40);
    assert_eq!(
        app.world().get::<CallState>(call),
        Some(&CallState::InCall),
        "clock restarted when bob left"
    );
    run(&mut app, 30); // 1.1 s alone
    assert_eq!(
        app.world().get::<CallState>(call),
        Some(&CallState::Ended {
            reason: EndReason::SessionTimeout
        })
    );
    let events = take_events(&mut app);
    assert!(events.contains(&CallEvent::SessionTimeout { call }));
    assert!(take_signals(&mut app).contains(&Signal::Leave));
}

/// A call with invalid settings, an empty session id, or a second call while one is live
/// fails with a typed error and never becomes the active call.
#[test]
fn calls_that_cannot_start() {
    let mut app = app();
    let bad = CallSettings {
        idle_timeout_secs: -1.0,
        ..CallSettings::default()
    };
    let refused = spawn_call(&mut app, Call::new("s", bad));
    assert!(matches!(
        app.world().get::<CallState>(refused),
        Some(CallState::Ended { reason: EndReason::Failed { code, .. } }) if *code == ErrorCode::InvalidProp
    ));
    assert_eq!(app.world().resource::<ActiveCall>().0, None);
    let empty = spawn_call(&mut app, Call::new("  ", CallSettings::default()));
    assert!(
        app.world()
            .get::<CallState>(empty)
            .is_some_and(CallState::is_ended)
    );

    let first = one_to_one(&mut app);
    let second = spawn_call(&mut app, Call::new("other", CallSettings::default()));
    assert_eq!(app.world().resource::<ActiveCall>().0, Some(first));
    assert!(
        app.world()
            .get::<CallState>(second)
            .is_some_and(CallState::is_ended)
    );
    let codes = error_codes(&take_events(&mut app));
    assert_eq!(
        codes,
        vec![
            ErrorCode::InvalidProp,
            ErrorCode::InvalidSessionId,
            ErrorCode::CallInProgress
        ]
    );
}

/// A device hot-plug replaces the lists, announces them, and moves a selection whose device
/// vanished to the first remaining one.
#[test]
fn device_hot_plug_refresh() {
    let mut app = app();
    let mut lists = app.world().resource::<MediaDevices>().lists().clone();
    lists.video_inputs.remove(0);
    app.world_mut()
        .write_message(bevy_huddle::DeviceListRefreshed(lists.clone()));
    app.update();
    let devices = app.world().resource::<MediaDevices>();
    assert_eq!(
        devices.selected(DeviceKind::VideoInput),
        lists.video_inputs.first()
    );
    let events = take_events(&mut app);
    assert_eq!(
        events,
        vec![CallEvent::MediaDeviceListUpdated {
            devices: lists.clone()
        }]
    );
    app.world_mut()
        .write_message(bevy_huddle::DeviceListRefreshed(lists));
    app.update();
    assert!(
        take_events(&mut app).is_empty(),
        "an identical list is not news"
    );
}

/// The candidate pair carrying a participant's media lands in their state (what the app's
/// participant details show), and the same pair reported again does not count as a change
/// (a system watching `Changed<ParticipantState>` sees one change, then none).
#[test]
fn media_path_lands_in_the_participant_state_once() {
    #[derive(Resource, Default)]
    struct BobChanges(u32);
    fn count_bob_changes(
        changed: Query<&Participant, Changed<ParticipantState>>,
        mut changes: ResMut<BobChanges>,
    ) {
        changes.0 += changed.iter().filter(|p| p.uid == "bob").count() as u32;
    }
    let mut app = app();
    let call = joined_call(&mut app, Call::new("p", CallSettings::default()), &["bob"]);
    app.init_resource::<BobChanges>()
        .add_systems(Last, count_bob_changes);
    app.update();
    let path = bevy_huddle::call::model::MediaPath {
        local_candidate_type: "relay".into(),
        remote_candidate_type: "srflx".into(),
        protocol: "udp".into(),
    };
    let change = |path: &bevy_huddle::call::model::MediaPath| SessionChange::MediaPath {
        uid: "bob".into(),
        path: path.clone(),
    };
    let before = app.world().resource::<BobChanges>().0;
    session(&mut app, call, change(&path));
    app.update();
    assert_eq!(state_of(&mut app, "bob").media_path.as_ref(), Some(&path));
    assert_eq!(path.to_string(), "relay ↔ srflx over udp");
    let after_first = app.world().resource::<BobChanges>().0;
    assert_eq!(after_first, before + 1, "the new pair is one change");
    session(&mut app, call, change(&path));
    app.update();
    assert_eq!(
        app.world().resource::<BobChanges>().0,
        after_first,
        "the same pair again is no change"
    );
}

/// How many entities of each kind a call leaves behind: participants, tiles (camera and
/// screen share), audio routes, tile UI nodes (picture, avatar, name, badges), and children
/// under the call's target node.
fn leftovers(app: &mut App, root: Entity) -> [usize; 5] {
    let world = app.world_mut();
    let participants = world.query::<&Participant>().iter(world).count();
    let tiles = world.query::<&VideoTile>().iter(world).count();
    let routes = world.query::<&AudioRoute>().iter(world).count();
    let nodes = world
        .query_filtered::<(), Or<(
            With<bevy_huddle::view::tiles::TileVideo>,
            With<bevy_huddle::view::tiles::TileAvatar>,
            With<bevy_huddle::view::tiles::TileNameLabel>,
            With<bevy_huddle::view::tiles::TileMutedBadge>,
        )>>()
        .iter(world)
        .count();
    let under_root = world.get::<Children>(root).map_or(0, |c| c.len());
    [participants, tiles, routes, nodes, under_root]
}

/// A 1:1 call rendered under a target node, with bob sharing his screen; returns the call.
fn call_with_tiles_under(app: &mut App, root: Entity, session_id: &str) -> Entity {
    let call = app
        .world_mut()
        .spawn((
            Call::new(session_id, CallSettings::default()),
            CallTarget(root),
        ))
        .id();
    app.update();
    session(
        app,
        call,
        SessionChange::Joined {
            local: ParticipantInfo::new("alice", "Alice"),
            others: vec![ParticipantInfo::new("bob", "Bob")],
        },
    );
    run(app, 2);
    let bob = participant(app, "bob");
    let image = app
        .world_mut()
        .resource_mut::<Assets<Image>>()
        .add(Image::default());
    app.world_mut().spawn((
        ScreenShareTile,
        TileOf(bob),
        VideoTile {
            image,
            frame_size: UVec2::new(64, 36),
        },
    ));
    run(app, 2);
    call
}

/// Every way a call ends (we leave, the other side hangs up, the server ends the session,
/// the connection is lost) removes everything the call spawned: participants, camera and
/// screen-share tiles with all their UI nodes, audio routes, and the tiles under the target
/// node. The next call starts from a clean view: only its own tiles, and the ended call's
/// entity is gone.
#[test]
fn every_end_path_removes_the_calls_entities() {
    let ends: [(&str, fn(&mut App, Entity)); 4] = [
        ("leave", |app, _| act(app, CallAction::EndSession)),
        ("remote hang-up", |app, call| {
            session(
                app,
                call,
                SessionChange::ParticipantLeft { uid: "bob".into() },
            )
        }),
        ("session ended", |app, call| {
            session(
                app,
                call,
                SessionChange::Ended {
                    reason: EndReason::SessionTimeout,
                },
            )
        }),
        ("connection lost", |app, call| {
            session(
                app,
                call,
                SessionChange::Ended {
                    reason: EndReason::ConnectionLost,
                },
            )
        }),
    ];
    for (path, end) in ends {
        let mut app = app();
        let root = app.world_mut().spawn(Node::default()).id();
        let first = call_with_tiles_under(&mut app, root, "first");
        let [participants, tiles, routes, nodes, under_root] = leftovers(&mut app, root);
        assert_eq!((participants, tiles), (2, 3), "{path}: set-up");
        assert!(routes > 0, "{path}: set-up routes");
        assert!(nodes >= 6 && under_root == 3, "{path}: set-up nodes");

        end(&mut app, first);
        run(&mut app, 2);
        assert!(
            app.world()
                .get::<CallState>(first)
                .is_some_and(CallState::is_ended),
            "{path}: the call ended"
        );
        assert_eq!(leftovers(&mut app, root), [0; 5], "{path}: everything gone");

        let second = call_with_tiles_under(&mut app, root, "second");
        assert_eq!(app.world().resource::<ActiveCall>().0, Some(second));
        assert!(
            app.world().get_entity(first).is_err(),
            "{path}: the ended call is gone once the next starts"
        );
        let [participants, tiles, ..] = leftovers(&mut app, root);
        assert_eq!(
            (participants, tiles),
            (2, 3),
            "{path}: only the new call's tiles"
        );
    }
}

/// Speaking flags drive the dominant speaker: the first remote to speak becomes dominant; a
/// second who starts while the first still speaks waits; when the first stops, the one still
/// speaking takes over; silence keeps the last one. Our own speaking never makes us
/// dominant, and a pinned participant stays the main tile whoever speaks.
#[test]
fn the_dominant_speaker_follows_the_talk() {
    let mut app = app();
    let (call, bob) = spotlight_with_bob_and_carol(&mut app);
    let carol = participant(&mut app, "carol");
    let speak = |app: &mut App, uid: &str, speaking: bool| {
        session(
            app,
            call,
            SessionChange::Speaking {
                uid: uid.into(),
                speaking,
            },
        );
        run(app, 2);
    };
    let dominant = |app: &App| {
        app.world()
            .get::<CallLayout>(call)
            .and_then(|l| l.dominant_speaker)
    };
    speak(&mut app, "alice", true);
    assert_eq!(
        dominant(&app),
        None,
        "we are never our own dominant speaker"
    );
    speak(&mut app, "bob", true);
    assert_eq!(dominant(&app), Some(bob));
    assert!(state_of(&mut app, "bob").speaking);
    speak(&mut app, "carol", true);
    assert_eq!(dominant(&app), Some(bob), "bob still speaks");
    speak(&mut app, "bob", false);
    assert_eq!(dominant(&app), Some(carol));
    speak(&mut app, "carol", false);
    assert_eq!(
        dominant(&app),
        Some(carol),
        "silence keeps the last speaker"
    );
    let changes: Vec<Option<String>> = take_events(&mut app)
        .into_iter()
        .filter_map(|e| match e {
            CallEvent::DominantSpeakerChanged { uid, .. } => Some(uid),
            _ => None,
        })
        .collect();
    assert_eq!(changes, [Some("bob".into()), Some("carol".into())]);
    assert_eq!(layout_of(&mut app, "carol").role, TileRole::Main);

    act(&mut app, CallAction::Pin("bob".into()));
    run(&mut app, 2);
    speak(&mut app, "carol", true);
    assert_eq!(
        layout_of(&mut app, "bob").role,
        TileRole::Main,
        "the pin wins"
    );
}

/// The loudest speaker leads: with bob and carol both speaking, carol takes the main tile
/// only once she is at least 6 dB louder than bob (a murmur 3 dB louder does not), and bob
/// takes it back only the same way; the loudness of someone not speaking is ignored, and
/// forgotten when a speaker stops.
#[test]
fn the_loudest_speaker_becomes_dominant() {
    let mut app = app();
    let (call, bob) = spotlight_with_bob_and_carol(&mut app);
    let carol = participant(&mut app, "carol");
    let tell = |app: &mut App, change: SessionChange| {
        session(app, call, change);
        run(app, 2);
    };
    let speak = |uid: &str| SessionChange::Speaking {
        uid: uid.into(),
        speaking: true,
    };
    let loud = |uid: &str, dbov: f32| SessionChange::Loudness {
        uid: uid.into(),
        dbov,
    };
    let dominant = |app: &App| {
        app.world()
            .get::<CallLayout>(call)
            .and_then(|l| l.dominant_speaker)
    };
    tell(&mut app, loud("carol", -10.0));
    assert_eq!(dominant(&app), None, "carol is not speaking");
    tell(&mut app, speak("bob"));
    tell(&mut app, loud("bob", -30.0));
    tell(&mut app, speak("carol"));
    tell(&mut app, loud("carol", -27.0));
    assert_eq!(dominant(&app), Some(bob), "3 dB louder is not enough");
    tell(&mut app, loud("carol", -22.0));
    assert_eq!(dominant(&app), Some(carol), "8 dB louder takes over");
    assert_eq!(layout_of(&mut app, "carol").role, TileRole::Main);
    tell(&mut app, loud("bob", -25.0));
    assert_eq!(dominant(&app), Some(carol), "bob only 3 dB louder");
    tell(&mut app, loud("bob", -15.0));
    assert_eq!(dominant(&app), Some(bob));
    // Carol stops, and her loudness goes with it: speaking again, she is −127 dBov until
    // she is told otherwise, and the quieter bob stays.
    tell(&mut app, loud("bob", -30.0));
    tell(
        &mut app,
        SessionChange::Speaking {
            uid: "carol".into(),
            speaking: false,
        },
    );
    tell(&mut app, speak("carol"));
    assert_eq!(dominant(&app), Some(bob));
}
