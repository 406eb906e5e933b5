//! Layout geometry (pure functions) and its recomputation in the ECS on join, leave, resize,
//! mode change and video arrival; tiles as bevy_ui nodes with an avatar until video arrives.

use bevy::prelude::*;
use bevy::ui::Display;
use bevy_huddle::prelude::*;
use bevy_huddle::view::layout::*;
use bevy_huddle::view::tiles::{TileAvatar, TileVideo};

use crate::harness::*;

const VIEWPORT: Vec2 = Vec2::new(1280.0, 720.0);
const EPS: f32 = 1e-3;

fn tiles(n: usize) -> Vec<LayoutTile> {
    (0..n)
        .map(|i| LayoutTile {
            key: Entity::from_raw_u32(i as u32 + 1).expect("entity"),
            local: i == 0,
            video_aspect: None,
        })
        .collect()
}

fn overlaps(a: Rect, b: Rect) -> bool {
    a.min.x < b.max.x - EPS
        && b.min.x < a.max.x - EPS
        && a.min.y < b.max.y - EPS
        && b.min.y < a.max.y - EPS
}

fn inside(r: Rect, viewport: Vec2) -> bool {
    r.min.x >= -EPS && r.min.y >= -EPS && r.max.x <= viewport.x + EPS && r.max.y <= viewport.y + EPS
}

fn request(mode: LayoutMode, tiles: &[LayoutTile], main: Option<Entity>) -> LayoutRequest<'_> {
    LayoutRequest {
        mode,
        viewport: VIEWPORT,
        tiles,
        main,
        floating_position: None,
        fit: AspectFit::Contain,
    }
}

/// Grid for 1..=49 tiles in two viewport shapes: no overlaps, all inside, every cell 16:9,
/// reading order equals join order, and no cell smaller than needed (each count fills at
/// least a quarter of the viewport's limiting dimension).
#[test]
fn grid_geometry_for_1_to_49_tiles() {
    for viewport in [VIEWPORT, Vec2::new(800.0, 1000.0)] {
        for n in 1..=49 {
            let input = tiles(n);
            let placed = compute_layout(&LayoutRequest {
                viewport,
                ..request(LayoutMode::Default, &input, None)
            });
            assert_eq!(placed.len(), n);
            for (i, (key, layout)) in placed.iter().enumerate() {
                assert_eq!(*key, input[i].key, "stable order");
                assert_eq!(layout.role, TileRole::Grid);
                assert!(
                    inside(layout.rect, viewport),
                    "n={n} tile {i} outside: {:?}",
                    layout.rect
                );
                let aspect = layout.rect.width() / layout.rect.height();
                assert!(
                    (aspect - DEFAULT_TILE_ASPECT).abs() < 1e-3,
                    "n={n}: aspect {aspect}"
                );
                assert!(layout.rect.width() > 10.0, "n={n}: degenerate tile");
                for (j, (_, other)) in placed.iter().enumerate().skip(i + 1) {
                    assert!(
                        !overlaps(layout.rect, other.rect),
                        "n={n}: tiles {i} and {j} overlap"
                    );
                }
                if i > 0 {
                    let prev = placed[i - 1].1.rect;
                    let same_row = (prev.min.y - layout.rect.min.y).abs() < EPS;
                    assert!(
                        (same_row && prev.min.x < layout.rect.min.x)
                            || layout.rect.min.y > prev.min.y,
                        "n={n}: reading order broken at {i}"
                    );
                }
            }
            // Uses the space: the grid spans most of the limiting dimension.
            let min = placed
                .iter()
                .map(|(_, l)| l.rect.min)
                .reduce(Vec2::min)
                .expect("some");
            let max = placed
                .iter()
                .map(|(_, l)| l.rect.max)
                .reduce(Vec2::max)
                .expect("some");
            let span = max - min;
            assert!(
                span.x >= viewport.x * 0.5 || span.y >= viewport.y * 0.5,
                "n={n}: grid too small {span}"
            );
        }
    }
}

/// Contain keeps the video's aspect inside the cell (letterboxed); Cover fills the cell and
/// crops the texture so that the visible part keeps the aspect.
#[test]
fn contain_and_cover_keep_the_video_aspect() {
    let cell = Rect::new(0.0, 0.0, 320.0, 180.0);
    let four_three = 4.0 / 3.0;
    let (content, uv) = fit_video(cell, four_three, AspectFit::Contain);
    assert!((content.width() / content.height() - four_three).abs() < EPS);
    assert!((content.height() - 180.0).abs() < EPS && content.width() < 320.0);
    assert_eq!(uv, Rect::new(0.0, 0.0, 1.0, 1.0));
    assert!((content.center() - cell.center()).length() < EPS);

    let (content, uv) = fit_video(cell, four_three, AspectFit::Cover);
    assert_eq!(content, cell);
    let visible_aspect = (uv.width() * four_three) / uv.height();
    assert!(
        (visible_aspect - 16.0 / 9.0).abs() < EPS,
        "crop keeps aspect: {visible_aspect}"
    );
    assert!(
        (uv.center() - Vec2::splat(0.5)).length() < EPS,
        "crop is centred"
    );

    let tall = 9.0 / 16.0;
    let (_, uv) = fit_video(cell, tall, AspectFit::Cover);
    assert!((uv.width() - 1.0).abs() < EPS && uv.height() < 1.0);
}

/// Spotlight main tile: pinned beats dominant speaker beats latest remote joiner beats local.
#[test]
fn spotlight_main_tile_rules() {
    let t = tiles(4);
    let (local, first, middle, latest) = (t[0].key, t[1].key, t[2].key, t[3].key);
    assert_eq!(choose_main(&t, Some(first), Some(middle)), Some(first));
    assert_eq!(choose_main(&t, None, Some(middle)), Some(middle));
    assert_eq!(choose_main(&t, None, None), Some(latest));
    let gone = Entity::from_raw_u32(999).expect("entity");
    assert_eq!(
        choose_main(&t, Some(gone), Some(gone)),
        Some(latest),
        "absent pins are ignored"
    );
    assert_eq!(choose_main(&t[..1], None, None), Some(local));
    assert_eq!(choose_main(&[], None, None), None);
}

/// Spotlight geometry: the main tile is the largest, the strip sits below it without overlap,
/// the local preview floats on top inside the viewport.
#[test]
fn spotlight_geometry() {
    let t = tiles(5);
    let main = t[4].key;
    let placed = compute_layout(&request(LayoutMode::Spotlight, &t, Some(main)));
    let role = |k: Entity| {
        placed
            .iter()
            .find(|(key, _)| *key == k)
            .map(|(_, l)| *l)
            .expect("placed")
    };
    let main_layout = role(main);
    assert_eq!(main_layout.role, TileRole::Main);
    let floating = role(t[0].key);
    assert_eq!(floating.role, TileRole::Floating);
    assert!(floating.z > main_layout.z);
    assert!(inside(floating.rect, VIEWPORT));
    let strip: Vec<TileLayout> = t[1..4].iter().map(|x| role(x.key)).collect();
    for s in &strip {
        assert_eq!(s.role, TileRole::Strip);
        assert!(inside(s.rect, VIEWPORT));
        assert!(
            s.rect.min.y >= main_layout.rect.max.y - EPS,
            "strip below main"
        );
        assert!(
            s.rect.width() * s.rect.height() < main_layout.rect.width() * main_layout.rect.height()
        );
    }
    for (i, a) in strip.iter().enumerate() {
        for b in &strip[i + 1..] {
            assert!(!overlaps(a.rect, b.rect));
        }
    }
    // Many strip tiles shrink to fit the width.
    let many = tiles(30);
    let placed = compute_layout(&request(LayoutMode::Spotlight, &many, Some(many[29].key)));
    assert!(placed.iter().all(|(_, l)| inside(l.rect, VIEWPORT)));
    // Alone: the local tile is the main tile, nothing floats.
    let alone = tiles(1);
    let placed = compute_layout(&request(LayoutMode::Spotlight, &alone, Some(alone[0].key)));
    assert_eq!(placed[0].1.role, TileRole::Main);
}

/// A dragged floating position is honoured and clamped inside the viewport.
#[test]
fn floating_position_is_clamped() {
    let t = tiles(2);
    let mut req = request(LayoutMode::Spotlight, &t, Some(t[1].key));
    req.floating_position = Some(Vec2::new(5000.0, -300.0));
    let floating = compute_layout(&req)[0].1;
    assert_eq!(floating.role, TileRole::Floating);
    assert!((floating.rect.max.x - VIEWPORT.x).abs() < EPS);
    assert!(floating.rect.min.y.abs() < EPS);
}

/// Single: only the main tile is visible and it fills the viewport.
#[test]
fn single_mode_shows_only_the_main_tile() {
    let t = tiles(4);
    let placed = compute_layout(&request(LayoutMode::Single, &t, Some(t[2].key)));
    let visible: Vec<_> = placed.iter().filter(|(_, l)| l.visible()).collect();
    assert_eq!(visible.len(), 1);
    assert_eq!(visible[0].0, t[2].key);
    assert!(visible[0].1.rect.width() > VIEWPORT.x * 0.9);
}

/// A zero-size viewport hides every tile instead of producing NaNs.
#[test]
fn zero_viewport_hides_tiles() {
    let t = tiles(3);
    let mut req = request(LayoutMode::Default, &t, None);
    req.viewport = Vec2::ZERO;
    assert!(compute_layout(&req).iter().all(|(_, l)| !l.visible()));
}

/// In the ECS: tiles are laid out on join, re-laid out on leave, resize and mode change, and
/// the Spotlight main tile follows dominant speaker and pin.
#[test]
fn ecs_layout_follows_participants_viewport_and_mode() {
    let mut app = app();
    let call = joined_call(
        &mut app,
        Call::new("g", CallSettings::default()).group(),
        &["bob", "carol"],
    );
    let grid = |app: &mut App, uid: &str| layout_of(app, uid);
    let alice = grid(&mut app, "alice");
    let bob = grid(&mut app, "bob");
    assert_eq!(alice.role, TileRole::Grid);
    assert!(
        alice.rect.min.x < bob.rect.min.x || alice.rect.min.y < bob.rect.min.y,
        "local first"
    );
    let three_up = bob.rect;

    session(
        &mut app,
        call,
        SessionChange::ParticipantLeft {
            uid: "carol".into(),
        },
    );
    run(&mut app, 2);
    assert_ne!(grid(&mut app, "bob").rect, three_up, "recomputed on leave");

    app.world_mut()
        .get_mut::<CallViewport>(call)
        .expect("viewport")
        .size = Vec2::new(640.0, 480.0);
    app.update();
    let small = grid(&mut app, "bob").rect;
    assert!(
        small.max.x <= 640.0 + EPS && small.max.y <= 480.0 + EPS,
        "recomputed on resize"
    );

    session(
        &mut app,
        call,
        SessionChange::ParticipantJoined(ParticipantInfo::new("dave", "Dave")),
    );
    run(&mut app, 2);
    act(&mut app, CallAction::SetMode(LayoutMode::Spotlight));
    app.update();
    assert_eq!(
        grid(&mut app, "dave").role,
        TileRole::Main,
        "latest joiner is main"
    );
    assert_eq!(grid(&mut app, "alice").role, TileRole::Floating);
    session(
        &mut app,
        call,
        SessionChange::DominantSpeaker {
            uid: Some("bob".into()),
        },
    );
    app.update();
    assert_eq!(
        grid(&mut app, "bob").role,
        TileRole::Main,
        "dominant speaker is main"
    );
    act(&mut app, CallAction::Pin("dave".into()));
    app.update();
    assert_eq!(
        grid(&mut app, "dave").role,
        TileRole::Main,
        "pin beats dominant speaker"
    );
    act(&mut app, CallAction::SetMode(LayoutMode::Single));
    app.update();
    assert!(!grid(&mut app, "bob").visible());
    assert_eq!(grid(&mut app, "dave").role, TileRole::Main);
}

/// Tiles are bevy_ui nodes showing the participant's `Image`; the avatar shows until video
/// arrives, the picture after, and the avatar again when video is paused. A 4:3 video is
/// letterboxed (Contain) once its size is known.
#[test]
fn tile_nodes_switch_between_avatar_and_video() {
    let mut app = app();
    let call = one_to_one(&mut app);
    let tile = tile_of(&mut app, "bob");
    let image = tile_image(&mut app, "bob");
    assert!(
        app.world()
            .resource::<Assets<Image>>()
            .get(&image)
            .is_some(),
        "a real image asset"
    );
    let node = app.world().get::<Node>(tile).expect("tile node");
    assert_eq!(node.display, Display::Flex);
    assert_eq!(node.position_type, PositionType::Absolute);
    let children: Vec<Entity> = app
        .world()
        .get::<Children>(tile)
        .expect("children")
        .iter()
        .collect();
    let video = *children
        .iter()
        .find(|c| app.world().get::<TileVideo>(**c).is_some())
        .expect("video child");
    let avatar = *children
        .iter()
        .find(|c| app.world().get::<TileAvatar>(**c).is_some())
        .expect("avatar child");
    assert_eq!(
        app.world()
            .get::<ImageNode>(video)
            .expect("image node")
            .image,
        image
    );
    let display = |app: &App, e: Entity| app.world().get::<Node>(e).expect("node").display;
    assert_eq!(
        (display(&app, video), display(&app, avatar)),
        (Display::None, Display::Flex)
    );

    session(
        &mut app,
        call,
        SessionChange::VideoFormat {
            uid: "bob".into(),
            size: UVec2::new(640, 480),
        },
    );
    app.update();
    assert_eq!(
        (display(&app, video), display(&app, avatar)),
        (Display::Flex, Display::None)
    );
    let layout = layout_of(&mut app, "bob");
    assert!((layout.content.width() / layout.content.height() - 4.0 / 3.0).abs() < EPS);
    let video_node = app.world().get::<Node>(video).expect("node");
    assert_eq!(video_node.width, Val::Px(layout.content.width()));

    session(
        &mut app,
        call,
        SessionChange::VideoPaused {
            uid: "bob".into(),
            paused: true,
        },
    );
    app.update();
    assert_eq!(
        (display(&app, video), display(&app, avatar)),
        (Display::None, Display::Flex)
    );
}

/// The network label in bob's tile says his connection quality (hidden until measured,
/// then e.g. "Poor" in its colour), in the corner `main_video_container.network_label` sets;
/// his tile is outlined while he speaks and not after; a hidden network label is not built.
#[test]
fn tiles_show_network_quality_and_who_speaks() {
    use bevy_huddle::call::model::ConnectionQuality;
    use bevy_huddle::call::settings::TileCorner;
    use bevy_huddle::view::tiles::{SPEAKING_OUTLINE, TileNetworkLabel, quality_label};
    let mut app = app();
    let mut settings = CallSettings::default();
    settings.main_video_container.network_label.position = TileCorner::TopRight;
    let call = joined_call(&mut app, Call::new("s", settings), &["bob"]);
    run(&mut app, 2);
    let tile = tile_of(&mut app, "bob");
    let label = app
        .world()
        .get::<Children>(tile)
        .expect("children")
        .iter()
        .find(|c| app.world().get::<TileNetworkLabel>(*c).is_some())
        .expect("network label");
    let text = |app: &App| app.world().get::<Text>(label).expect("text").0.clone();
    let shown = |app: &App| app.world().get::<Node>(label).expect("node").display;
    assert_eq!(text(&app), "");
    assert_eq!(shown(&app), Display::None, "nothing measured: no empty box");
    let node = app.world().get::<Node>(label).expect("node");
    assert_eq!(
        (node.top, node.bottom),
        (Val::Px(6.0), Val::Auto),
        "top corner"
    );
    assert_eq!(
        (node.right, node.left),
        (Val::Px(6.0), Val::Auto),
        "right corner"
    );

    session(
        &mut app,
        call,
        SessionChange::ConnectionQuality {
            uid: "bob".into(),
            quality: ConnectionQuality::Poor,
        },
    );
    app.update();
    assert_eq!(text(&app), "Poor");
    assert_eq!(shown(&app), Display::Flex);
    assert_eq!(
        app.world().get::<TextColor>(label).expect("colour").0,
        quality_label(ConnectionQuality::Poor).1
    );

    let outline = |app: &App| app.world().get::<Outline>(tile).copied();
    session(
        &mut app,
        call,
        SessionChange::Speaking {
            uid: "bob".into(),
            speaking: true,
        },
    );
    app.update();
    assert_eq!(
        outline(&app).map(|o| (o.width, o.color)),
        Some((Val::Px(3.0), SPEAKING_OUTLINE))
    );
    session(
        &mut app,
        call,
        SessionChange::Speaking {
            uid: "bob".into(),
            speaking: false,
        },
    );
    app.update();
    assert_eq!(outline(&app).map(|o| o.width), Some(Val::ZERO));

    let mut hidden = CallSettings::default();
    hidden.main_video_container.network_label.visible = false;
    let mut other = crate::harness::app();
    joined_call(&mut other, Call::new("t", hidden), &["bob"]);
    run(&mut other, 2);
    let labels = other
        .world_mut()
        .query::<&TileNetworkLabel>()
        .iter(other.world())
        .count();
    assert_eq!(labels, 0);
}

/// The view publishes each remote's `VideoDemand` from what is on screen: a large tile wants
/// everything, a small one a capped bitrate, a hidden one nothing (paused); the local
/// participant gets none. Without the view plugin no demand is published (media then asks
/// for everything).
#[test]
fn the_view_publishes_video_demand_from_tile_sizes() {
    use bevy_huddle::view::demand::{MEDIUM_TILE_BITRATE, SMALL_TILE_BITRATE};
    let demand_of = |app: &mut App, uid: &str| {
        let who = participant(app, uid);
        app.world().get::<VideoDemand>(who).copied()
    };
    let mut app = app();
    let call = joined_call(
        &mut app,
        Call::new("s", CallSettings::default()).group(),
        &["bob", "carol"],
    );
    app.world_mut()
        .get_mut::<CallViewport>(call)
        .expect("viewport")
        .size = Vec2::new(1280.0, 720.0);
    run(&mut app, 2);
    let bob = demand_of(&mut app, "bob").expect("bob's demand");
    assert!(!bob.paused);
    assert_eq!(bob.max_bitrate_bps, 0, "a large tile wants everything");
    assert!(bob.wanted_size.x >= 520, "{:?}", bob.wanted_size);
    assert_eq!(
        demand_of(&mut app, "alice"),
        None,
        "nothing is asked of ourselves"
    );

    app.world_mut()
        .get_mut::<CallViewport>(call)
        .expect("viewport")
        .size = Vec2::new(640.0, 360.0);
    run(&mut app, 2);
    let small = demand_of(&mut app, "bob").expect("bob's demand");
    assert!(
        [SMALL_TILE_BITRATE, MEDIUM_TILE_BITRATE].contains(&small.max_bitrate_bps),
        "a smaller tile caps the bitrate: {small:?}"
    );

    act(&mut app, CallAction::Pin("carol".into()));
    act(&mut app, CallAction::SetMode(LayoutMode::Single));
    run(&mut app, 2);
    assert!(demand_of(&mut app, "bob").expect("bob's demand").paused);
    assert!(!demand_of(&mut app, "carol").expect("carol's demand").paused);

    let mut without_view = App::new();
    without_view.add_plugins((
        MinimalPlugins,
        AssetPlugin::default(),
        HuddlePlugins
            .build()
            .disable::<bevy_huddle::TileLayoutPlugin>(),
    ));
    let mut without_view = finish_test_app(without_view);
    joined_call(
        &mut without_view,
        Call::new("s", CallSettings::default()),
        &["bob"],
    );
    run(&mut without_view, 2);
    assert_eq!(demand_of(&mut without_view, "bob"), None);
}

/// Whether the video picture (not the avatar) of `uid`'s tile shows.
fn picture_shows(app: &mut App, uid: &str) -> bool {
    let tile = tile_of(app, uid);
    let children: Vec<Entity> = app
        .world()
        .get::<Children>(tile)
        .expect("children")
        .iter()
        .collect();
    let video = children
        .into_iter()
        .find(|c| app.world().get::<TileVideo>(*c).is_some())
        .expect("video child");
    app.world().get::<Node>(video).expect("node").display == Display::Flex
}

/// An audio call shows avatars even when a peer sends its camera anyway, and asks every
/// peer for no video (paused demand); once the call switches to video, the picture shows and
/// the demand follows the tile.
#[test]
fn audio_calls_show_avatars_and_want_no_video() {
    let mut app = app();
    let settings = CallSettings::builder()
        .audio_only(true)
        .build()
        .expect("valid");
    let call = joined_call(&mut app, Call::new("s", settings), &["bob"]);
    app.world_mut()
        .get_mut::<CallViewport>(call)
        .expect("viewport")
        .size = Vec2::new(1280.0, 720.0);
    video_arrives(&mut app, call, "bob", UVec2::new(320, 180));
    run(&mut app, 2);
    assert!(
        !picture_shows(&mut app, "bob"),
        "bob's camera shows in an audio call"
    );
    let bob = participant(&mut app, "bob");
    let demand = app.world().get::<VideoDemand>(bob).copied();
    assert!(demand.is_some_and(|d| d.paused), "demand: {demand:?}");

    session(
        &mut app,
        call,
        SessionChange::SwitchedToVideo {
            initiator: "bob".into(),
            responder: "alice".into(),
        },
    );
    run(&mut app, 3);
    assert!(
        picture_shows(&mut app, "bob"),
        "video call: the picture shows"
    );
    let demand = app.world().get::<VideoDemand>(bob).copied();
    assert!(demand.is_some_and(|d| !d.paused), "demand: {demand:?}");
}

/// A tile shows "Muted" while its participant's microphone is muted and "Hand raised" while
/// their hand is up, and neither otherwise.
#[test]
fn tiles_show_muted_and_hand_badges() {
    use bevy_huddle::view::tiles::{TileHandBadge, TileMutedBadge};
    let mut app = app();
    let call = joined_call(&mut app, Call::new("s", CallSettings::default()), &["bob"]);
    run(&mut app, 2);
    let badge_shown = |app: &mut App, muted_badge: bool| {
        let tile = tile_of(app, "bob");
        let world = app.world_mut();
        let mut badges = world.query::<(Entity, &Node, Has<TileMutedBadge>, Has<TileHandBadge>)>();
        let mut descendants = vec![tile];
        let mut next = 0;
        while next < descendants.len() {
            if let Some(children) = world.get::<Children>(descendants[next]) {
                descendants.extend(children.iter());
            }
            next += 1;
        }
        badges
            .iter(world)
            .filter(|(e, ..)| descendants.contains(e))
            .find(|(_, _, m, h)| if muted_badge { *m } else { *h })
            .map(|(_, node, ..)| node.display == Display::Flex)
            .expect("badge")
    };
    assert!(!badge_shown(&mut app, true) && !badge_shown(&mut app, false));
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
        SessionChange::HandRaised {
            uid: "bob".into(),
            raised: true,
        },
    );
    run(&mut app, 2);
    assert!(badge_shown(&mut app, true), "muted badge");
    assert!(badge_shown(&mut app, false), "hand badge");
    session(
        &mut app,
        call,
        SessionChange::Muted {
            uid: "bob".into(),
            muted: false,
            by: "bob".into(),
        },
    );
    run(&mut app, 2);
    assert!(!badge_shown(&mut app, true), "unmuted");
    assert!(badge_shown(&mut app, false), "the hand stays up");
}

/// A pin survives switching layouts: pinned in Spotlight, Single shows the pinned person,
/// and back in Spotlight they are still main.
#[test]
fn the_pin_survives_switching_to_single() {
    let mut app = app();
    let (call, bob) = spotlight_with_bob_and_carol(&mut app);
    act(&mut app, CallAction::Pin("bob".into()));
    run(&mut app, 2);
    for mode in [
        LayoutMode::Single,
        LayoutMode::Default,
        LayoutMode::Spotlight,
    ] {
        act(&mut app, CallAction::SetMode(mode));
        run(&mut app, 2);
        assert_eq!(
            app.world().get::<CallLayout>(call).and_then(|l| l.pinned),
            Some(bob),
            "{mode:?}"
        );
    }
    act(&mut app, CallAction::SetMode(LayoutMode::Single));
    run(&mut app, 2);
    assert_eq!(layout_of(&mut app, "bob").role, TileRole::Main);
    assert!(!layout_of(&mut app, "carol").visible());
}
