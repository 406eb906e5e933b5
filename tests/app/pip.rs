//! Picture-in-picture, headless: entering PIP opens a second, always-on-top window whose
//! only node shows the main tile's own `Image`; exiting closes it; closing the window by
//! hand exits PIP.

use bevy::prelude::*;
use bevy::window::WindowLevel;
use bevy_huddle::prelude::*;
use huddle::pip::{PipPlugin, PipVideo, PipWindow};

fn pip_app() -> (App, Entity) {
    let mut app = App::new();
    app.add_plugins((
        MinimalPlugins,
        AssetPlugin::default(),
        HuddlePlugins,
        PipPlugin,
    ));
    app.finish();
    let settings = CallSettings::builder()
        .mode(LayoutMode::Spotlight)
        .build()
        .expect("valid");
    let call = app.world_mut().spawn(Call::new("s", settings).group()).id();
    app.update();
    app.world_mut().write_message(SessionUpdate {
        call,
        change: SessionChange::Joined {
            local: ParticipantInfo::new("alice", "Alice"),
            others: vec![
                ParticipantInfo::new("bob", "Bob"),
                ParticipantInfo::new("carol", "Carol"),
            ],
        },
    });
    app.update();
    for uid in ["bob", "carol"] {
        app.world_mut().write_message(SessionUpdate {
            call,
            change: SessionChange::VideoFormat {
                uid: uid.into(),
                size: UVec2::new(320, 180),
            },
        });
    }
    app.update();
    app.update();
    (app, call)
}

fn pip_windows(app: &mut App) -> Vec<(Entity, WindowLevel)> {
    let mut windows = app
        .world_mut()
        .query_filtered::<(Entity, &Window), With<PipWindow>>();
    windows
        .iter(app.world())
        .map(|(e, w)| (e, w.window_level))
        .collect()
}

fn main_tile_image(app: &mut App) -> Handle<Image> {
    let mut tiles = app.world_mut().query::<(&VideoTile, &TileLayout)>();
    tiles
        .iter(app.world())
        .find(|(_, layout)| layout.role == TileRole::Main)
        .map(|(tile, _)| tile.image.clone())
        .expect("a main tile")
}

fn pip_image(app: &mut App) -> Handle<Image> {
    let mut nodes = app
        .world_mut()
        .query_filtered::<&ImageNode, With<PipVideo>>();
    nodes
        .single(app.world())
        .expect("the PIP video")
        .image
        .clone()
}

fn pip_on(app: &App, call: Entity) -> bool {
    app.world().get::<CallMedia>(call).expect("media").pip
}

/// `enter_pip` opens one always-on-top window showing the main tile's image; `exit_pip`
/// closes it; closing the window by hand turns PIP off in the call.
#[test]
fn pip_opens_a_window_with_the_main_tile_and_closing_it_exits_pip() {
    let (mut app, call) = pip_app();
    assert!(pip_windows(&mut app).is_empty());
    app.world_mut().write_message(CallAction::EnterPip);
    app.update();
    app.update();
    let windows = pip_windows(&mut app);
    assert_eq!(windows.len(), 1);
    assert_eq!(windows[0].1, WindowLevel::AlwaysOnTop);
    assert!(pip_on(&app, call));
    app.update();
    assert_eq!(
        pip_image(&mut app),
        main_tile_image(&mut app),
        "the main tile's image"
    );

    app.world_mut().write_message(CallAction::ExitPip);
    app.update();
    app.update();
    assert!(pip_windows(&mut app).is_empty(), "exit_pip closes it");
    assert!(!pip_on(&app, call));

    app.world_mut().write_message(CallAction::EnterPip);
    app.update();
    app.update();
    let (window, _) = pip_windows(&mut app)[0];
    // What the window manager's close button does: the window entity goes.
    app.world_mut().despawn(window);
    app.update();
    app.update();
    assert!(!pip_on(&app, call), "closing the window exits PIP");
    assert!(pip_windows(&mut app).is_empty());
    let videos = app
        .world_mut()
        .query_filtered::<(), With<PipVideo>>()
        .iter(app.world())
        .count();
    assert_eq!(videos, 0, "its camera and nodes are gone too");
}
