//! What the desktop app and the demo share: the windowed app builder, the call area, and the
//! media settings of on-screen calls. Both import this; neither imports the other.

use std::process::ExitCode;
use std::time::Duration;

use bevy::prelude::*;
use bevy::window::WindowResolution;
use bevy_huddle::HuddlePlugins;
use bevy_huddle_ui::HuddleUiPlugin;

/// Size of the synthetic video everyone in the demo sends.
pub const BOT_VIDEO: UVec2 = UVec2::new(320, 180);

/// What the demo's participants send: small, so a mesh of bots fits on two cores.
pub fn demo_media_settings() -> bevy_huddle::media::MediaSettings {
    demo_media_settings_at(BOT_VIDEO)
}

/// The demo's media settings with video of `size` (bitrate scaled from 300 kbps at 320×180).
pub fn demo_media_settings_at(size: UVec2) -> bevy_huddle::media::MediaSettings {
    let pixels = (size.x * size.y) as f32 / (BOT_VIDEO.x * BOT_VIDEO.y) as f32;
    bevy_huddle::media::MediaSettings {
        video: huddle_media::video::EncoderSettings {
            width: size.x,
            height: size.y,
            fps: 30.0,
            bitrate_bps: (300_000.0 * pixels.sqrt()) as u32,
            keyframe_interval: 60,
        },
        ..Default::default()
    }
}
/// Talker `index` of `count` (the bots, then the local user) talking in turns: 2 s each, one
/// after the other, 1 s apart.
pub fn taking_turns(index: usize, count: usize) -> huddle_media::speech::TalkPattern {
    let turn = Duration::from_secs(3);
    let cycle = turn * u32::try_from(count.max(1)).unwrap_or(u32::MAX);
    let on = Duration::from_secs(2);
    let index = u32::try_from(index % count.max(1)).unwrap_or(0);
    huddle_media::speech::TalkPattern {
        on,
        off: cycle - on,
        offset: cycle - turn * index,
    }
}

/// A windowed Huddle app: Bevy's default plugins with one `title` window of `size`, Huddle's
/// plugins, device watching, the default call UI and PIP. `Err` (exit code 2, after saying
/// how to run it under xvfb-run) where there is no display to open a window on.
pub fn windowed_app(title: &str, size: UVec2, command: &str) -> Result<App, ExitCode> {
    if std::env::var_os("DISPLAY").is_none() && std::env::var_os("WAYLAND_DISPLAY").is_none() {
        eprintln!(
            "{command} needs a display, and none was found (DISPLAY and WAYLAND_DISPLAY are unset).\n\
             On a machine without one, run it in a virtual X server:\n\n    \
             xvfb-run -a -s '-screen 0 1280x720x24' {command}\n\n\
             (Debian: apt-get install xvfb mesa-vulkan-drivers; scripts/demo does this for you.)"
        );
        return Err(ExitCode::from(2));
    }
    let mut app = App::new();
    app.add_plugins(DefaultPlugins.set(WindowPlugin {
        primary_window: Some(Window {
            title: title.into(),
            resolution: WindowResolution::new(size.x, size.y),
            ..default()
        }),
        // The PIP window alone does not keep the app running.
        exit_condition: bevy::window::ExitCondition::OnPrimaryClosed,
        ..default()
    }))
    .insert_resource(ClearColor(CALL_AREA_BACKGROUND))
    .add_plugins((
        HuddlePlugins,
        bevy_huddle::DeviceWatcherPlugin::default(),
        HuddleUiPlugin,
        crate::pip::PipPlugin,
    ));
    Ok(app)
}

/// The colour behind the call (and of the whole window, so the bar's strip matches).
pub const CALL_AREA_BACKGROUND: Color = Color::srgb(0.08, 0.09, 0.11);

/// The window's camera and the UI node calls render in: the whole window between `top`
/// logical pixels from its top and `bottom` from its bottom (the call bar's strip, so the
/// bar covers no tile).
pub fn spawn_call_area(commands: &mut Commands, top: f32, bottom: f32) -> Entity {
    commands.spawn(Camera2d);
    commands
        .spawn((
            Node {
                position_type: PositionType::Absolute,
                left: Val::Px(0.0),
                right: Val::Px(0.0),
                top: Val::Px(top),
                bottom: Val::Px(bottom),
                ..default()
            },
            BackgroundColor(CALL_AREA_BACKGROUND),
        ))
        .id()
}
