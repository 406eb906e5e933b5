//! A small 3D room where the call's participants stand as avatars carrying their video on
//! screens, heard from where they stand; walk with WASD (Q/E turn), G shares (or stops
//! sharing) your view of the room with the others as a screen share. The default call UI
//! (button bar, participants panel) is drawn over the room and the call's tiles sit in a
//! small overlay. Runs its own embedded server and bots, like `huddle demo`.
//!
//! `cargo run --example game_call` (under `xvfb-run` without a display); set
//! `GAME_CALL_SCREENSHOT=shot.png` to save a screenshot once every screen shows video, and quit.

use std::time::Duration;

use bevy::core_pipeline::tonemapping::Tonemapping;
use bevy::prelude::*;
use bevy::render::view::screenshot::{Screenshot, ScreenshotCaptured, save_to_disk};
use bevy_huddle::HuddleRuntime;
use bevy_huddle::prelude::*;
use bevy_huddle::spatial::{VoiceEmitter, VoiceListener};
use bevy_huddle::view::surfaces::{SurfaceContent, VideoSurface};
use bevy_huddle_ui::HuddleUiPlugin;
use huddle::embedded::{BotJoin, JoinOnLogin, join_on_login, spawn_bot, start_embedded_server};

const BOTS: u16 = 3;

fn main() {
    App::new()
        .add_plugins((
            DefaultPlugins,
            HuddlePlugins,
            HuddleUiPlugin,
            MeshPickingPlugin,
        ))
        .insert_resource(huddle::desktop::demo_media_settings())
        .add_systems(Startup, (build_room, start_call))
        .add_systems(
            Update,
            (
                join_on_login,
                place_avatars,
                walk,
                share_view,
                screenshot_when_ready,
            ),
        )
        .run();
}

/// The player: a camera that listens.
#[derive(Component)]
struct Player;

fn build_room(
    mut commands: Commands,
    mut meshes: ResMut<Assets<Mesh>>,
    mut materials: ResMut<Assets<StandardMaterial>>,
) {
    commands.spawn((
        Mesh3d(meshes.add(Plane3d::default().mesh().size(20.0, 20.0))),
        MeshMaterial3d(materials.add(Color::srgb(0.25, 0.27, 0.3))),
    ));
    for (x, z, w, d) in [
        (0.0, -10.0, 20.0, 0.2),
        (-10.0, 0.0, 0.2, 20.0),
        (10.0, 0.0, 0.2, 20.0),
    ] {
        commands.spawn((
            Mesh3d(meshes.add(Cuboid::new(w, 3.0, d))),
            MeshMaterial3d(materials.add(Color::srgb(0.35, 0.33, 0.4))),
            Transform::from_xyz(x, 1.5, z),
        ));
    }
    commands.spawn((
        DirectionalLight {
            illuminance: 8_000.0,
            ..default()
        },
        Transform::from_xyz(3.0, 8.0, 4.0).looking_at(Vec3::ZERO, Vec3::Y),
    ));
    commands.spawn((
        Player,
        VoiceListener,
        Camera3d::default(),
        Tonemapping::None,
        Transform::from_xyz(0.0, 1.7, 7.0).looking_at(Vec3::new(0.0, 1.5, 0.0), Vec3::Y),
    ));
}

fn start_call(mut commands: Commands) {
    // The call's own tiles go in a small overlay at the bottom left, above the bar's strip.
    let overlay = commands
        .spawn(Node {
            position_type: PositionType::Absolute,
            left: Val::Px(8.0),
            bottom: Val::Px(bevy_huddle_ui::CALL_BAR_HEIGHT),
            width: Val::Px(360.0),
            height: Val::Px(200.0),
            ..default()
        })
        .id();
    let runtime = HuddleRuntime::default();
    let url = match start_embedded_server(&runtime, Vec::new()) {
        Ok(url) => url,
        Err(err) => panic!("cannot start the embedded server: {err}"),
    };
    for i in 1..=BOTS {
        spawn_bot(
            runtime.clone(),
            url.clone(),
            format!("bot-{i}"),
            format!("Bot {i}"),
            BotJoin::Session("room".into()),
            bevy_huddle::media::MediaSettings {
                talk_pattern: Some(huddle::desktop::taking_turns(
                    usize::from(i - 1),
                    usize::from(BOTS),
                )),
                ..huddle::desktop::demo_media_settings()
            },
        );
    }
    commands.insert_resource(runtime);
    commands.insert_resource(JoinOnLogin {
        session_id: "room".into(),
        settings: CallSettings::default(),
        target: Some(overlay),
    });
    commands.spawn(ServerConnection::dev(url, "player").with_name("Player"));
}

/// Every remote participant gets an avatar in a half circle, with a screen above it showing
/// their video, and their voice coming from it.
fn place_avatars(
    new: Query<(Entity, &Participant), (Added<Participant>, Without<LocalParticipant>)>,
    mut placed: Local<u32>,
    mut commands: Commands,
    mut meshes: ResMut<Assets<Mesh>>,
    mut materials: ResMut<Assets<StandardMaterial>>,
) {
    for (participant, _) in &new {
        let angle = -0.9 + 0.9 * (*placed % 3) as f32;
        *placed += 1;
        let at = Vec3::new(5.0 * angle.sin(), 0.0, -5.0 * angle.cos());
        // A rectangle's front (+Z) must face the player, so its forward (−Z) looks away.
        let player = Vec3::new(0.0, 0.0, 7.0);
        let facing = Transform::from_translation(at).looking_at(at * 2.0 - player, Vec3::Y);
        commands.spawn((
            Mesh3d(meshes.add(Capsule3d::new(0.35, 1.0))),
            MeshMaterial3d(materials.add(Color::srgb(0.8, 0.6, 0.3))),
            Transform::from_translation(at + Vec3::Y * 0.85),
            VoiceEmitter(participant),
        ));
        commands.spawn((
            Mesh3d(meshes.add(Rectangle::new(2.4, 1.35))),
            MeshMaterial3d(materials.add(StandardMaterial::default())),
            Transform::from_translation(at + Vec3::Y * 2.6).with_rotation(facing.rotation),
            VideoSurface(participant),
        ));
    }
}

/// WASD moves the player, Q/E turn.
fn walk(
    keys: Res<ButtonInput<KeyCode>>,
    time: Res<Time>,
    mut player: Query<&mut Transform, With<Player>>,
) {
    let Ok(mut transform) = player.single_mut() else {
        return;
    };
    let forward = transform.forward().with_y(0.0).normalize_or_zero();
    let right = transform.right().with_y(0.0).normalize_or_zero();
    let mut motion = Vec3::ZERO;
    for (key, direction) in [
        (KeyCode::KeyW, forward),
        (KeyCode::KeyS, -forward),
        (KeyCode::KeyD, right),
        (KeyCode::KeyA, -right),
    ] {
        if keys.pressed(key) {
            motion += direction;
        }
    }
    transform.translation += motion.normalize_or_zero() * 3.0 * time.delta_secs();
    let turn = f32::from(keys.pressed(KeyCode::KeyQ)) - f32::from(keys.pressed(KeyCode::KeyE));
    transform.rotate_y(turn * 1.5 * time.delta_secs());
}

/// G: share the player's view (the window's camera) with the call, or stop sharing it.
fn share_view(
    keys: Res<ButtonInput<KeyCode>>,
    camera: Query<Entity, With<Player>>,
    me: Query<&ParticipantState, With<LocalParticipant>>,
    mut controls: CallControls,
) {
    if !keys.just_pressed(KeyCode::KeyG) {
        return;
    }
    let sharing = me.iter().any(|state| state.screen_sharing);
    match camera.single() {
        Ok(_) if sharing => controls.stop_screen_share(),
        Ok(camera) => controls.share_camera(camera),
        Err(_) => {}
    }
}

/// With `GAME_CALL_SCREENSHOT`, saves a screenshot once every screen shows video, then quits.
fn screenshot_when_ready(
    screens: Query<&SurfaceContent>,
    mut warm: Local<u32>,
    mut taken: Local<bool>,
    mut commands: Commands,
    time: Res<Time<Real>>,
    mut exit: MessageWriter<AppExit>,
) {
    let Ok(path) = std::env::var("GAME_CALL_SCREENSHOT") else {
        return;
    };
    if time.elapsed() > Duration::from_secs(90) {
        exit.write(AppExit::from_code(1));
        return;
    }
    let ready = screens.iter().count() == usize::from(BOTS)
        && screens.iter().all(|s| *s == SurfaceContent::Video);
    if !ready || *taken {
        return;
    }
    *warm += 1;
    if *warm < 60 {
        return;
    }
    *taken = true;
    commands
        .spawn(Screenshot::primary_window())
        .observe(save_to_disk(path))
        .observe(
            |_: On<ScreenshotCaptured>, mut exit: MessageWriter<AppExit>| {
                exit.write(AppExit::Success);
            },
        );
}
