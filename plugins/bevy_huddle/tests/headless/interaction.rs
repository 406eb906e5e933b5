//! Tile click and drag driven by real bevy_picking pointer input (`PointerInput` press, move,
//! release), hit-tested by `TileLayoutPickingPlugin` against the computed tile rects.

use bevy::camera::NormalizedRenderTarget;
use bevy::picking::pointer::{Location, PointerAction, PointerButton, PointerId, PointerInput};
use bevy::picking::{InteractionPlugin, PickingPlugin};
use bevy::prelude::*;
use bevy_huddle::TileLayoutPickingPlugin;
use bevy_huddle::prelude::*;

use crate::harness::*;

fn picking_app() -> App {
    let mut app = app_with(|app| {
        app.add_plugins((PickingPlugin, InteractionPlugin, TileLayoutPickingPlugin));
    });
    app.world_mut().spawn(PointerId::Mouse);
    app.update();
    app
}

fn location(position: Vec2) -> Location {
    Location {
        target: NormalizedRenderTarget::None {
            width: 1280,
            height: 720,
        },
        position,
    }
}

fn pointer(app: &mut App, position: Vec2, action: PointerAction) {
    app.world_mut().write_message(PointerInput::new(
        PointerId::Mouse,
        location(position),
        action,
    ));
    app.update();
}

/// Moves the mouse to `at`, presses and releases there: one click.
fn click(app: &mut App, at: Vec2) {
    pointer(app, at, PointerAction::Move { delta: Vec2::ZERO });
    pointer(app, at, PointerAction::Press(PointerButton::Primary));
    pointer(app, at, PointerAction::Release(PointerButton::Primary));
    app.update();
}

/// Presses at `from`, moves by `by` in four steps, releases.
fn drag(app: &mut App, from: Vec2, by: Vec2) {
    pointer(app, from, PointerAction::Move { delta: Vec2::ZERO });
    pointer(app, from, PointerAction::Press(PointerButton::Primary));
    for step in 1..=4 {
        let at = from + by * step as f32 / 4.0;
        pointer(app, at, PointerAction::Move { delta: by / 4.0 });
    }
    pointer(
        app,
        from + by,
        PointerAction::Release(PointerButton::Primary),
    );
    app.update();
}

fn spotlight_call(app: &mut App, click_enabled: bool, drag_enabled: bool) -> Entity {
    let settings = CallSettings::builder()
        .mode(LayoutMode::Spotlight)
        .enable_video_tile_click(click_enabled)
        .enable_video_tile_drag(drag_enabled)
        .build()
        .expect("valid");
    let call = joined_call(app, Call::new("g", settings).group(), &["bob", "carol"]);
    app.update();
    call
}

fn pinned(app: &App, call: Entity) -> Option<Entity> {
    app.world().get::<CallLayout>(call).expect("layout").pinned
}

/// Clicking a strip tile pins it (it becomes main); clicking it again unpins.
#[test]
fn click_pins_and_unpins_in_spotlight() {
    let mut app = picking_app();
    let call = spotlight_call(&mut app, true, true);
    let bob = layout_of(&mut app, "bob");
    assert_eq!(bob.role, TileRole::Strip);
    click(&mut app, bob.rect.center());
    let bob_entity = participant(&mut app, "bob");
    assert_eq!(pinned(&app, call), Some(bob_entity));
    let bob = layout_of(&mut app, "bob");
    assert_eq!(bob.role, TileRole::Main);
    assert!(take_events(&mut app).contains(&CallEvent::PinChanged {
        call,
        pinned: Some("bob".into())
    }));
    click(&mut app, bob.rect.center());
    assert_eq!(pinned(&app, call), None);
    assert!(take_events(&mut app).contains(&CallEvent::PinChanged { call, pinned: None }));
}

/// Clicks do nothing with `enable_video_tile_click` off, or outside Spotlight.
#[test]
fn click_is_inert_when_disabled_or_in_grid() {
    let mut app = picking_app();
    let call = spotlight_call(&mut app, false, false);
    let bob = layout_of(&mut app, "bob");
    click(&mut app, bob.rect.center());
    assert_eq!(pinned(&app, call), None);

    act(&mut app, CallAction::SetMode(LayoutMode::Default));
    app.update();
    let mut app2 = picking_app();
    let settings = CallSettings::default();
    let grid_call = joined_call(&mut app2, Call::new("g", settings).group(), &["bob"]);
    app2.update();
    let bob = layout_of(&mut app2, "bob");
    assert_eq!(bob.role, TileRole::Grid);
    click(&mut app2, bob.rect.center());
    assert_eq!(pinned(&app2, grid_call), None);
}

/// Dragging the floating local tile moves it by the drag distance; a drag far past the edge
/// leaves it clamped inside the viewport; the release does not count as a click (no pin).
#[test]
fn drag_moves_the_floating_tile_and_clamps_it() {
    let mut app = picking_app();
    let call = spotlight_call(&mut app, true, true);
    let start = layout_of(&mut app, "alice");
    assert_eq!(start.role, TileRole::Floating);
    drag(&mut app, start.rect.center(), Vec2::new(-300.0, -200.0));
    let moved = layout_of(&mut app, "alice");
    assert!(
        (moved.rect.min - (start.rect.min + Vec2::new(-300.0, -200.0))).length() < 1.0,
        "{:?} -> {:?}",
        start.rect,
        moved.rect
    );
    assert_eq!(
        pinned(&app, call),
        None,
        "the drag's release is not a click"
    );

    drag(&mut app, moved.rect.center(), Vec2::new(-5000.0, -5000.0));
    let clamped = layout_of(&mut app, "alice");
    assert!(
        clamped.rect.min.x.abs() < 1e-3 && clamped.rect.min.y.abs() < 1e-3,
        "{:?}",
        clamped.rect
    );
    let viewport = app
        .world()
        .get::<CallViewport>(call)
        .expect("viewport")
        .size;
    drag(&mut app, clamped.rect.center(), Vec2::new(9000.0, 9000.0));
    let far = layout_of(&mut app, "alice");
    assert!((far.rect.max - viewport).length() < 1e-3, "{:?}", far.rect);
}

/// With `enable_video_tile_drag` off, or for a tile that is not floating, a drag moves nothing.
#[test]
fn drag_is_inert_when_disabled_or_not_floating() {
    let mut app = picking_app();
    let call = spotlight_call(&mut app, true, false);
    let start = layout_of(&mut app, "alice");
    drag(&mut app, start.rect.center(), Vec2::new(-300.0, -200.0));
    assert_eq!(layout_of(&mut app, "alice").rect, start.rect);
    assert_eq!(
        app.world()
            .get::<CallLayout>(call)
            .expect("layout")
            .floating_position,
        None
    );

    let mut app = picking_app();
    let call = spotlight_call(&mut app, true, true);
    let bob = layout_of(&mut app, "bob");
    drag(&mut app, bob.rect.center(), Vec2::new(-300.0, -200.0));
    assert_eq!(
        layout_of(&mut app, "bob").rect,
        bob.rect,
        "strip tiles do not move"
    );
    assert_eq!(
        app.world()
            .get::<CallLayout>(call)
            .expect("layout")
            .floating_position,
        None
    );
}
