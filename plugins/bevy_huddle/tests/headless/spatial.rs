//! Spatial voice: gains from where avatars stand relative to the listener.

use bevy::prelude::*;
use bevy_huddle::prelude::*;
use bevy_huddle::spatial::*;

use crate::harness::*;

fn gain_of(app: &mut App, uid: &str) -> RouteGain {
    let owner = participant(app, uid);
    let mut routes = app
        .world_mut()
        .query::<(&bevy_huddle::call::model::RouteOf, &RouteGain)>();
    routes
        .iter(app.world())
        .find(|(of, _)| of.0 == owner)
        .map(|(_, g)| *g)
        .expect("route gain")
}

/// A call with four remotes: voices to the left, to the right, far away, and one with no
/// avatar; the listener at the origin looking down −Z.
fn spatial_app() -> (App, Entity) {
    let mut app = app_with(|app| {
        app.add_plugins(TransformPlugin);
    });
    joined_call(
        &mut app,
        Call::new("s", CallSettings::default()).group(),
        &["left", "right", "far", "plain"],
    );
    let listener = app
        .world_mut()
        .spawn((VoiceListener, Transform::default()))
        .id();
    for (uid, at) in [
        ("left", Vec3::new(-3.0, 0.0, 0.0)),
        ("right", Vec3::new(3.0, 0.0, 0.0)),
        ("far", Vec3::new(0.0, 0.0, -50.0)),
    ] {
        let who = participant(&mut app, uid);
        app.world_mut()
            .spawn((VoiceEmitter(who), Transform::from_translation(at)));
    }
    run(&mut app, 15);
    (app, listener)
}

/// A voice on the left is louder in the left ear and vice versa; a voice beyond the maximum
/// distance is silent and culled; a voice without an avatar is plain stereo.
#[test]
fn left_right_far_and_plain_voices() {
    let (mut app, _) = spatial_app();
    let left = gain_of(&mut app, "left");
    assert!(left.left > 0.1 && left.right < 0.01, "{left:?}");
    let right = gain_of(&mut app, "right");
    assert!(right.right > 0.1 && right.left < 0.01, "{right:?}");
    assert!((left.left - right.right).abs() < 1e-4, "symmetric");
    let far = gain_of(&mut app, "far");
    assert_eq!((far.left, far.right, far.culled), (0.0, 0.0, true));
    let plain = gain_of(&mut app, "plain");
    assert_eq!(
        plain,
        RouteGain {
            left: 1.0,
            right: 1.0,
            culled: false
        }
    );
}

/// Turning the listener around swaps the ears, one bounded step per frame (no jumps).
#[test]
fn turning_the_listener_moves_gains_smoothly() {
    let (mut app, listener) = spatial_app();
    let step = app
        .world()
        .resource::<SpatialAudioSettings>()
        .max_step_per_frame;
    app.world_mut()
        .get_mut::<Transform>(listener)
        .expect("listener")
        .rotation = Quat::from_rotation_y(std::f32::consts::PI);
    let mut previous = gain_of(&mut app, "left");
    for _ in 0..20 {
        app.update();
        let now = gain_of(&mut app, "left");
        assert!(
            (now.left - previous.left).abs() <= step + 1e-5
                && (now.right - previous.right).abs() <= step + 1e-5
        );
        previous = now;
    }
    assert!(
        previous.right > 0.1 && previous.left < 0.01,
        "the left voice is now on the right: {previous:?}"
    );
}

/// Local volume and mute, and the game's occlusion, scale the spatial gains.
#[test]
fn volume_mute_and_occlusion_scale_gains() {
    let (mut app, _) = spatial_app();
    let full = gain_of(&mut app, "left").left;
    act(
        &mut app,
        CallAction::SetParticipantVolume {
            uid: "left".into(),
            volume: 0.5,
        },
    );
    run(&mut app, 10);
    assert!((gain_of(&mut app, "left").left - full * 0.5).abs() < 1e-4);
    act(
        &mut app,
        CallAction::SetParticipantLocalMute {
            uid: "right".into(),
            muted: true,
        },
    );
    let right_avatar = {
        let who = participant(&mut app, "right");
        let mut q = app.world_mut().query::<(Entity, &VoiceEmitter)>();
        q.iter(app.world())
            .find(|(_, e)| e.0 == who)
            .map(|(e, _)| e)
            .expect("emitter")
    };
    run(&mut app, 10);
    assert_eq!(gain_of(&mut app, "right").right, 0.0, "muted locally");
    act(
        &mut app,
        CallAction::SetParticipantLocalMute {
            uid: "right".into(),
            muted: false,
        },
    );
    app.world_mut()
        .entity_mut(right_avatar)
        .insert(VoiceOcclusion(0.0));
    run(&mut app, 10);
    assert_eq!(gain_of(&mut app, "right").right, 0.0, "occluded");
}

/// Attenuation is 1 up to the reference distance, falls monotonically, and is 0 from the
/// maximum distance on, for both models; the pan is equal-power.
#[test]
fn attenuation_models_and_pan_law() {
    for model in [DistanceModel::Inverse, DistanceModel::Linear] {
        let settings = SpatialAudioSettings {
            model,
            ..SpatialAudioSettings::default()
        };
        assert_eq!(attenuation(&settings, 0.5), 1.0);
        let mut previous = 1.0;
        for step in 1..=40 {
            let distance = step as f32;
            let a = attenuation(&settings, distance);
            assert!(a <= previous, "{model:?}: not monotonic at {distance}");
            previous = a;
        }
        assert_eq!(attenuation(&settings, settings.max_distance), 0.0);
        assert_eq!(attenuation(&settings, 1e6), 0.0);
    }
    for direction in [Vec3::X, Vec3::NEG_X, Vec3::NEG_Z, Vec3::new(1.0, 0.0, -1.0)] {
        let (l, r) = equal_power_pan(direction);
        assert!((l * l + r * r - 1.0).abs() < 1e-5);
    }
    let (l, r) = equal_power_pan(Vec3::NEG_Z);
    assert!((l - r).abs() < 1e-5, "straight ahead is centred");
}

/// Without `SpatialVoicePlugin`, every route still has a `RouteGain`, computed by the call
/// model from the volume and local mute (the same in both ears), and it follows changes.
#[test]
fn plain_gains_follow_volume_and_mute_without_spatial_voice() {
    let mut app = App::new();
    app.add_plugins((
        MinimalPlugins,
        AssetPlugin::default(),
        HuddlePlugins.build().disable::<SpatialVoicePlugin>(),
    ));
    let mut app = finish_test_app(app);
    joined_call(&mut app, Call::new("s", CallSettings::default()), &["bob"]);
    run(&mut app, 2);
    assert_eq!(gain_of(&mut app, "bob"), RouteGain::plain(1.0));
    act(
        &mut app,
        CallAction::SetParticipantVolume {
            uid: "bob".into(),
            volume: 0.4,
        },
    );
    run(&mut app, 2);
    assert_eq!(gain_of(&mut app, "bob"), RouteGain::plain(0.4));
    act(
        &mut app,
        CallAction::SetParticipantLocalMute {
            uid: "bob".into(),
            muted: true,
        },
    );
    run(&mut app, 2);
    assert_eq!(gain_of(&mut app, "bob"), RouteGain::plain(0.0));
}
