//! The game world with a real renderer (Bevy's `RenderPlugin` on whatever Vulkan device the
//! machine has — Mesa's lavapipe on CI — and no window): a game camera shared as the
//! screen-share track, and a click on a 3D mesh surface pinning its participant through
//! Bevy's mesh picking.

use std::time::Duration;

use bevy::app::TerminalCtrlCHandlerPlugin;
use bevy::asset::RenderAssetUsages;
use bevy::camera::{NormalizedRenderTarget, RenderTarget};
use bevy::log::LogPlugin;
use bevy::picking::mesh_picking::MeshPickingPlugin;
use bevy::picking::pointer::{Location, PointerAction, PointerButton, PointerId, PointerInput};
use bevy::prelude::*;
use bevy::render::RenderPlugin;
use bevy::render::pipelined_rendering::PipelinedRenderingPlugin;
use bevy::render::render_resource::{Extent3d, TextureDimension, TextureFormat, TextureUsages};
use bevy::window::{ExitCondition, PrimaryWindow};
use bevy::winit::WinitPlugin;
use bevy_huddle::media::game_view::CameraShare;
use bevy_huddle::prelude::*;
use bevy_huddle::view::surfaces::{SurfaceContent, VideoSurface};
use huddle_client::Backoff;

use crate::harness::*;
use crate::media_calls::{media_user, screen_tile_of, session_of, small_video};
use crate::whole_stack::*;

/// An app with Bevy's default plugins and a real renderer but no window, plus Huddle.
fn rendering_app(extra: impl FnOnce(&mut App)) -> App {
    let mut app = App::new();
    app.add_plugins(
        DefaultPlugins
            .set(WindowPlugin {
                primary_window: None,
                exit_condition: ExitCondition::DontExit,
                close_when_requested: false,
                ..default()
            })
            .set(RenderPlugin {
                synchronous_pipeline_compilation: true,
                ..default()
            })
            .disable::<PipelinedRenderingPlugin>()
            .disable::<WinitPlugin>()
            .disable::<LogPlugin>()
            .disable::<TerminalCtrlCHandlerPlugin>(),
    )
    .add_plugins(HuddlePlugins);
    extra(&mut app);
    finish_test_app(app)
}

/// The game's view: a 2D camera drawing into a 320×180 image, cleared red, with a blue
/// sprite over its right half.
fn spawn_game_view(app: &mut App) -> Entity {
    let mut target = Image::new_uninit(
        Extent3d {
            width: 320,
            height: 180,
            depth_or_array_layers: 1,
        },
        TextureDimension::D2,
        TextureFormat::Rgba8UnormSrgb,
        RenderAssetUsages::RENDER_WORLD,
    );
    target.texture_descriptor.usage |= TextureUsages::RENDER_ATTACHMENT;
    let target = app.world_mut().resource_mut::<Assets<Image>>().add(target);
    app.world_mut().spawn((
        Sprite::from_color(Color::srgb(0.0, 0.0, 1.0), Vec2::new(160.0, 180.0)),
        Transform::from_xyz(80.0, 0.0, 0.0),
    ));
    app.world_mut()
        .spawn((
            Camera2d,
            Camera {
                clear_color: ClearColorConfig::Custom(Color::srgb(1.0, 0.0, 0.0)),
                ..default()
            },
            RenderTarget::from(target),
        ))
        .id()
}

/// The RGB of pixel (x, y) of bob's screen-share tile of `uid`.
fn screen_pixel(app: &mut App, uid: &str, x: u32, y: u32) -> [u8; 3] {
    let mut tiles = app
        .world_mut()
        .query_filtered::<(&VideoTile, &TileOf), With<ScreenShareTile>>();
    let image = tiles
        .iter(app.world())
        .find(|(_, of)| {
            app.world()
                .get::<Participant>(of.0)
                .is_some_and(|p| p.uid == uid)
        })
        .map(|(tile, _)| tile.image.clone())
        .expect("a screen-share tile");
    let image = app
        .world()
        .resource::<Assets<Image>>()
        .get(&image)
        .expect("image");
    let width = image.texture_descriptor.size.width;
    let data = image.data.as_ref().expect("pixels");
    let at = ((y * width + x) * 4) as usize;
    [data[at], data[at + 1], data[at + 2]]
}

fn near(actual: [u8; 3], expected: [u8; 3]) -> bool {
    actual
        .iter()
        .zip(expected)
        .all(|(a, e)| (i32::from(*a) - i32::from(e)).abs() <= 40)
}

/// `share_camera` in a real call: alice's renderer draws the game view, its pictures go out
/// on her screen-share track, and bob gets `ScreenShareStarted` and a 320×180 screen tile
/// whose left half is the clear colour (red) and right half the sprite (blue). Sharing another
/// camera while sharing switches to it; stopping removes bob's tile and alice's capture, and
/// the next share is the desktop again; a shared camera that is despawned gives a typed
/// `ScreenShare` error and turns the share off, with the call going on.
#[test]
fn game_camera_is_shared_as_screen_video() {
    let stack = Stack::start();
    let mut alice = rendering_app(|_| {});
    small_video(&mut alice);
    stack.connect(&mut alice, "alice", Backoff::default());
    let camera = spawn_game_view(&mut alice);
    let mut bob = media_user(&stack, "bob");
    call_and_join(&mut alice, &mut bob);
    act(&mut alice, CallAction::ShareCamera(camera));
    pump_for(
        &mut [&mut alice, &mut bob],
        "the game view on bob's side",
        Duration::from_secs(30),
        |apps| {
            screen_tile_of(apps[1], "alice").is_some_and(|(size, _)| size == UVec2::new(320, 180))
                && session_of(apps[0])
                    .counters()
                    .screen_frames_sent
                    .load(std::sync::atomic::Ordering::Relaxed)
                    >= 10
        },
    );
    let call = active_call(&alice).expect("call");
    let captured = alice
        .world()
        .get::<CameraShare>(call)
        .expect("capture runs")
        .frames_captured();
    assert!(captured >= 10, "{captured} pictures read back");
    assert!(
        bob.world().resource::<ObservedEvents>().0.iter().any(
            |e| matches!(e, CallEvent::ScreenShareStarted { user, .. } if user.uid == "alice")
        )
    );
    let left = screen_pixel(&mut bob, "alice", 80, 90);
    let right = screen_pixel(&mut bob, "alice", 240, 90);
    assert!(
        near(left, [255, 0, 0]),
        "left half is the clear colour: {left:?}"
    );
    assert!(
        near(right, [0, 0, 255]),
        "right half is the sprite: {right:?}"
    );

    // Switching the running share to another camera shares that camera (not the desktop).
    let other = spawn_game_view(&mut alice);
    act(&mut alice, CallAction::ShareCamera(other));
    pump_for(
        &mut [&mut alice, &mut bob],
        "the other camera shared",
        Duration::from_secs(30),
        |apps| {
            apps[0]
                .world()
                .get::<CameraShare>(call)
                .is_some_and(|share| share.camera == other && share.frames_captured() >= 3)
        },
    );
    assert_eq!(
        alice
            .world()
            .get::<CallMedia>(call)
            .expect("call")
            .shared_camera,
        Some(other)
    );

    act(&mut alice, CallAction::StopScreenShare);
    pump(&mut [&mut alice, &mut bob], "the share tile goes", |apps| {
        screen_tile_of(apps[1], "alice").is_none()
    });
    assert!(alice.world().get::<CameraShare>(call).is_none());
    assert!(!session_of(&alice).is_screen_sharing());
    assert_eq!(
        alice
            .world()
            .get::<CallMedia>(call)
            .expect("call")
            .shared_camera,
        None,
        "the next share is the desktop again"
    );

    act(&mut alice, CallAction::ShareCamera(camera));
    alice.update();
    alice.world_mut().despawn(camera);
    pump(&mut [&mut alice, &mut bob], "error and off again", |apps| {
        !state_of(apps[0], "alice").screen_sharing
    });
    assert!(
        alice.world().resource::<ObservedEvents>().0.iter().any(|e| matches!(
            e,
            CallEvent::Error { error: HuddleError::ScreenShare(reason), .. } if reason.contains("gone")
        )),
        "a typed error says the camera is gone"
    );
    assert_eq!(call_state(&alice), Some(CallState::InCall));
}

fn click_at(app: &mut App, position: Vec2) {
    let location = Location {
        target: NormalizedRenderTarget::None {
            width: 800,
            height: 600,
        },
        position,
    };
    for action in [
        PointerAction::Move { delta: Vec2::ZERO },
        PointerAction::Press(PointerButton::Primary),
        PointerAction::Release(PointerButton::Primary),
    ] {
        app.world_mut().write_message(PointerInput::new(
            PointerId::Mouse,
            location.clone(),
            action,
        ));
        app.update();
    }
    app.update();
}

/// A 3D screen (a mesh with its own `StandardMaterial` and `VideoSurface(bob)`): its
/// material shows bob's avatar colour until his video arrives, then his tile's very `Image`,
/// and the avatar again while he pauses. A click on it — Bevy's mesh picking casting the
/// pointer's ray from a 3D camera — pins bob; a click beside it changes nothing; a second
/// click unpins.
#[test]
fn mesh_surface_shows_video_and_a_click_on_it_pins() {
    let mut app = rendering_app(|app| {
        app.add_plugins(MeshPickingPlugin);
    });
    let (call, bob) = spotlight_with_bob_and_carol(&mut app);
    let mesh = app
        .world_mut()
        .resource_mut::<Assets<Mesh>>()
        .add(Rectangle::new(2.0, 1.0));
    let material = app
        .world_mut()
        .resource_mut::<Assets<StandardMaterial>>()
        .add(StandardMaterial::default());
    let screen = app
        .world_mut()
        .spawn((
            Mesh3d(mesh),
            MeshMaterial3d(material.clone()),
            Transform::default(),
            VideoSurface(bob),
        ))
        .id();
    // Picking asks for a primary window even for cameras that draw nowhere; without winit
    // this is only the component, no real window.
    app.world_mut().spawn((Window::default(), PrimaryWindow));
    app.world_mut().spawn((
        Camera3d::default(),
        RenderTarget::None {
            size: UVec2::new(800, 600),
        },
        Transform::from_xyz(0.0, 0.0, 5.0).looking_at(Vec3::ZERO, Vec3::Y),
    ));
    run(&mut app, 3);
    let base_texture = |app: &App| {
        app.world()
            .resource::<Assets<StandardMaterial>>()
            .get(&material)
            .expect("material")
            .base_color_texture
            .clone()
    };
    assert_eq!(
        app.world().get::<SurfaceContent>(screen),
        Some(&SurfaceContent::Avatar)
    );
    assert_eq!(base_texture(&app), None);

    video_arrives(&mut app, call, "bob", UVec2::new(640, 360));
    let image = tile_image(&mut app, "bob");
    assert_eq!(base_texture(&app), Some(image));
    video_paused(&mut app, call, "bob", true);
    assert_eq!(
        app.world().get::<SurfaceContent>(screen),
        Some(&SurfaceContent::Avatar)
    );
    assert_eq!(base_texture(&app), None);

    let pinned = |app: &App| app.world().get::<CallLayout>(call).expect("layout").pinned;
    click_at(&mut app, Vec2::new(20.0, 20.0));
    assert_eq!(pinned(&app), None, "a click beside the screen pins nobody");
    click_at(&mut app, Vec2::new(400.0, 300.0));
    assert_eq!(pinned(&app), Some(bob), "a click on the screen pins bob");
    click_at(&mut app, Vec2::new(400.0, 300.0));
    assert_eq!(pinned(&app), None, "a second click unpins");
}
