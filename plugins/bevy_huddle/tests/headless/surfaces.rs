//! In-world video surfaces: a sprite shows a participant's video (the tile's own `Image`),
//! their avatar colour while paused, and a click on it pins them.

use bevy::camera::NormalizedRenderTarget;
use bevy::picking::backend::{HitData, PointerHits};
use bevy::picking::pointer::{
    Location, PointerAction, PointerButton, PointerId, PointerInput, PointerLocation,
};
use bevy::picking::{InteractionPlugin, PickingPlugin, PickingSystems};
use bevy::prelude::*;
use bevy_huddle::prelude::*;
use bevy_huddle::view::surfaces::{SurfaceContent, VideoSurface};

use crate::harness::*;

/// A test picking backend: the pointer left of x = 100 is over the (single) surface.
fn surface_backend(
    pointers: Query<(&PointerId, &PointerLocation)>,
    surfaces: Query<Entity, With<VideoSurface>>,
    mut hits: MessageWriter<PointerHits>,
) {
    for (pointer, location) in &pointers {
        let Some(location) = &location.location else {
            continue;
        };
        if location.position.x < 100.0 {
            let picks = surfaces
                .iter()
                .map(|e| (e, HitData::new(Entity::PLACEHOLDER, 1.0, None, None)))
                .collect();
            hits.write(PointerHits::new(*pointer, picks, 0.0));
        }
    }
}

fn surface_app() -> (App, Entity, Entity) {
    let mut app = app_with(|app| {
        app.add_plugins((PickingPlugin, InteractionPlugin))
            .add_systems(PreUpdate, surface_backend.in_set(PickingSystems::Backend));
    });
    app.world_mut().spawn(PointerId::Mouse);
    let (call, bob) = spotlight_with_bob_and_carol(&mut app);
    let screen = app
        .world_mut()
        .spawn((Sprite::default(), VideoSurface(bob), Transform::default()))
        .id();
    app.update();
    (app, call, screen)
}

fn press_at(app: &mut App, x: f32, action: PointerAction) {
    let location = Location {
        target: NormalizedRenderTarget::None {
            width: 800,
            height: 600,
        },
        position: Vec2::new(x, 10.0),
    };
    app.world_mut()
        .write_message(PointerInput::new(PointerId::Mouse, location, action));
    app.update();
}

/// The surface shows bob's avatar colour until his video arrives, then the very `Image` his
/// tile shows, and the avatar again while he pauses.
#[test]
fn surface_shows_video_or_avatar() {
    let (mut app, call, screen) = surface_app();
    assert_eq!(
        app.world().get::<SurfaceContent>(screen),
        Some(&SurfaceContent::Avatar)
    );
    video_arrives(&mut app, call, "bob", UVec2::new(640, 360));
    let image = tile_image(&mut app, "bob");
    assert_eq!(
        app.world().get::<SurfaceContent>(screen),
        Some(&SurfaceContent::Video)
    );
    assert_eq!(
        app.world().get::<Sprite>(screen).expect("sprite").image,
        image,
        "same Image as the tile"
    );
    video_paused(&mut app, call, "bob", true);
    assert_eq!(
        app.world().get::<SurfaceContent>(screen),
        Some(&SurfaceContent::Avatar)
    );
    assert_ne!(
        app.world().get::<Sprite>(screen).expect("sprite").image,
        image
    );
}

/// Clicking the surface pins bob (the main tile becomes his); clicking again unpins.
#[test]
fn clicking_a_surface_pins_its_participant() {
    let (mut app, call, _) = surface_app();
    let bob = participant(&mut app, "bob");
    for expected in [Some(bob), None] {
        press_at(&mut app, 50.0, PointerAction::Move { delta: Vec2::ZERO });
        press_at(&mut app, 50.0, PointerAction::Press(PointerButton::Primary));
        press_at(
            &mut app,
            50.0,
            PointerAction::Release(PointerButton::Primary),
        );
        app.update();
        assert_eq!(
            app.world().get::<CallLayout>(call).expect("layout").pinned,
            expected
        );
    }
    assert_eq!(
        layout_of(&mut app, "bob").role,
        TileRole::Strip,
        "unpinned: carol (latest) is main again"
    );
}
