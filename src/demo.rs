//! `huddle demo`: a windowed call with bots, on the embedded server.
//!
//! 1. The embedded server starts on 127.0.0.1 (dev login, in-memory), and `--bots` headless
//!    bot apps start on their own threads ([`crate::embedded`]).
//! 2. The window opens with a UI root under a status line; the local user logs in as `you`
//!    and rings the group `bots` (you and every bot) with a video call ([`ring_the_bots`]).
//!    The bots answer (accept, call token, join); the default call UI shows "Calling…" and
//!    joins the session into the root when the first bot accepts.
//! 3. Everyone sends a moving test pattern (frame number and capture time stamped in the
//!    picture) and a tone over real WebRTC (H.264 + Opus, full mesh on loopback); remote
//!    tiles show what was decoded. [`render_synthetic_video`] draws the local preview.
//! 4. The bots talk in turns ([`crate::desktop::taking_turns`]): each packet's audio level
//!    tells everyone who speaks (the speaking ring), and Spotlight follows the dominant
//!    speaker.
//! 5. Keys: M mute, V pause video, Tab next layout mode, P pin/unpin the main tile, Esc leave.
//! 6. With `--screenshot`, a screenshot is saved once every tile shows video and the app
//!    quits; `--exit-after` bounds the run (exit code 1 if the screenshot was not saved).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use bevy::prelude::*;
use bevy::render::view::screenshot::{Screenshot, ScreenshotCaptured, save_to_disk};
use bevy_huddle::HuddleRuntime;
use bevy_huddle::prelude::*;
use bevy_huddle_ui::CallUiConfig;
use clap::ValueEnum;
use huddle_media::synthetic::{FrameStamp, TestPattern};
use huddle_protocol::{CallType, GroupInfo, ReceiverType};

use crate::desktop::{demo_media_settings_at, spawn_call_area, windowed_app};
use crate::embedded::{BotJoin, spawn_bot, start_embedded_server};

/// The group of the demo's bots (and the local user), which the demo rings.
const DEMO_GROUP: &str = "bots";
/// The local user of the demo.
const LOCAL_UID: &str = "you";

/// Height of the status line above the call, in logical pixels.
pub const STATUS_HEIGHT: f32 = 30.0;
/// Frames to let the software renderer warm up before a screenshot.
const SCREENSHOT_WARMUP_FRAMES: u32 = 90;

/// Runs the demo; returns the process exit code.
pub fn run(args: DemoArgs) -> ExitCode {
    let size = UVec2::new(args.width, args.height);
    let mut app = match windowed_app("Huddle demo", size, "huddle demo") {
        Ok(app) => app,
        Err(code) => return code,
    };
    app.insert_resource(DemoConfig::from(&args))
        .insert_resource(bevy_huddle::media::MediaSettings {
            // The demo draws its own preview of the pattern (SyntheticCamera).
            local_preview: false,
            // The viewer's synthetic voice takes its turn after the bots'.
            talk_pattern: Some(crate::desktop::taking_turns(
                usize::from(args.bots),
                usize::from(args.bots) + 1,
            )),
            ..demo_media_settings_at(DemoConfig::from(&args).video)
        })
        .init_resource::<ScreenshotState>()
        .init_resource::<FrameStats>()
        .add_systems(Last, (record_frame_times, print_frame_stats).chain())
        .add_systems(Startup, open_call)
        .add_systems(Update, ring_the_bots.before(HuddleSystems::Apply))
        .add_systems(
            Update,
            (
                attach_synthetic_sources,
                render_synthetic_video,
                handle_keys,
                show_status,
                take_screenshot,
                exit_when_done,
            )
                .after(HuddleSystems::Apply),
        );
    match app.run() {
        AppExit::Success => ExitCode::SUCCESS,
        AppExit::Error(code) => ExitCode::from(code.get()),
    }
}

/// The demo's options.
#[derive(Resource, Clone, Debug)]
struct DemoConfig {
    bots: u16,
    mode: LayoutMode,
    default_layout: bool,
    video: UVec2,
    frame_stats: bool,
    screenshot: Option<PathBuf>,
    second_screenshot: Option<PathBuf>,
    exit_after: Option<Duration>,
}

impl From<&DemoArgs> for DemoConfig {
    fn from(args: &DemoArgs) -> Self {
        Self {
            bots: args.bots,
            mode: args.mode.into(),
            default_layout: !args.no_bar,
            video: UVec2::new((args.video_height * 16 / 9) & !1, args.video_height & !1),
            frame_stats: args.frame_stats,
            screenshot: args.screenshot.clone(),
            second_screenshot: args.second_screenshot.clone(),
            exit_after: args
                .exit_after
                .and_then(|s| Duration::try_from_secs_f32(s).ok()),
        }
    }
}

/// Whether the screenshots were asked for and written.
#[derive(Resource, Default)]
struct ScreenshotState {
    requested: bool,
    saved: bool,
    warm_frames: u32,
    /// Frames since the first screenshot was saved (for the second one).
    frames_after_first: u32,
    second_requested: bool,
    second_saved: bool,
}

/// Frames between the first and the second screenshot (about a second of video).
const SECOND_SCREENSHOT_AFTER_FRAMES: u32 = 30;

/// Marks the status line.
#[derive(Component)]
struct StatusText;

/// A participant's synthetic camera.
#[derive(Component)]
struct SyntheticCamera {
    pattern: TestPattern,
    frame: u32,
}

fn open_call(mut commands: Commands, config: Res<DemoConfig>, mut exit: MessageWriter<AppExit>) {
    // The call fills the window below a status line, and above the bar when it shows.
    let bar = if config.default_layout {
        bevy_huddle_ui::CALL_BAR_HEIGHT
    } else {
        0.0
    };
    let root = spawn_call_area(&mut commands, STATUS_HEIGHT, bar);
    commands.spawn((
        StatusText,
        Text::new("Huddle demo"),
        TextFont::from_font_size(15.0),
        // Between the Devices (top left) and Participants (top right) windows.
        Node {
            position_type: PositionType::Absolute,
            left: Val::Px(170.0),
            top: Val::Px(8.0),
            ..default()
        },
        GlobalZIndex(10),
    ));
    let settings = CallSettings::builder()
        .mode(config.mode)
        .default_layout(config.default_layout)
        .build()
        .unwrap_or_default();
    let runtime = HuddleRuntime::default();
    let bots: Vec<String> = (1..=config.bots).map(|i| format!("bot-{i}")).collect();
    let group = GroupInfo {
        guid: DEMO_GROUP.to_owned(),
        name: "Bots".to_owned(),
        members: std::iter::once(LOCAL_UID.to_owned())
            .chain(bots.iter().cloned())
            .collect(),
    };
    let url = match start_embedded_server(&runtime, vec![group]) {
        Ok(url) => url,
        Err(err) => {
            error!("cannot start the embedded server: {err}");
            exit.write(AppExit::from_code(1));
            return;
        }
    };
    info!("embedded server at {url}");
    let bot_count = bots.len();
    for (i, uid) in bots.into_iter().enumerate() {
        spawn_bot(
            runtime.clone(),
            url.clone(),
            uid,
            format!("Bot {}", i + 1),
            BotJoin::AnswerCalls,
            bevy_huddle::media::MediaSettings {
                // The viewer's synthetic voice takes the last turn.
                talk_pattern: Some(crate::desktop::taking_turns(i, bot_count + 1)),
                ..demo_media_settings_at(config.video)
            },
        );
    }
    commands.insert_resource(runtime);
    // The default UI joins the call once a bot accepts, into the root node.
    commands.insert_resource(CallUiConfig {
        join_accepted_calls: true,
        settings,
        target: Some(root),
    });
    commands.spawn(ServerConnection::dev(url, LOCAL_UID).with_name("You"));
}

/// Once logged in, rings the bots' group with a video call (they answer; the default UI
/// joins when the first one accepts). Without bots there is nobody to ring.
fn ring_the_bots(
    mut events: MessageReader<RingingEvent>,
    config: Res<DemoConfig>,
    mut ringing: MessageWriter<RingingAction>,
) {
    for event in events.read() {
        if let RingingEvent::LoggedIn {
            reconnected: false, ..
        } = event
            && config.bots > 0
        {
            ringing.write(RingingAction::InitiateCall {
                receiver_id: DEMO_GROUP.to_owned(),
                receiver_type: ReceiverType::Group,
                call_type: CallType::Video,
                timeout_secs: None,
            });
        }
    }
}

/// Gives the local participant a synthetic camera preview (what the media session sends is
/// the same pattern; remote tiles show what was decoded from the network).
fn attach_synthetic_sources(
    new: Query<(Entity, &Participant), Added<LocalParticipant>>,
    config: Res<DemoConfig>,
    mut commands: Commands,
) {
    for (entity, who) in &new {
        commands.entity(entity).insert(SyntheticCamera {
            pattern: TestPattern::new(config.video.x, config.video.y, &who.uid),
            frame: 0,
        });
    }
}

/// Draws the local preview's next test-pattern frame into the local tile's image.
fn render_synthetic_video(
    time: Res<Time<Real>>,
    mut cameras: Query<(
        &Participant,
        &ParticipantOf,
        &ParticipantState,
        &mut SyntheticCamera,
        &ParticipantTiles,
    )>,
    tiles: Query<&VideoTile>,
    mut images: ResMut<Assets<Image>>,
    mut updates: MessageWriter<SessionUpdate>,
) {
    let now_ms = time.elapsed().as_millis() as u32;
    for (who, call, state, mut camera, owned) in &mut cameras {
        if state.video_paused {
            continue;
        }
        camera.frame += 1;
        let mut rgba = Vec::new();
        camera.pattern.render_rgba(
            FrameStamp {
                frame: camera.frame,
                capture_ms: now_ms,
            },
            &mut rgba,
        );
        let size = UVec2::new(camera.pattern.width(), camera.pattern.height());
        for tile in owned.iter().filter_map(|t| tiles.get(t).ok()) {
            let Some(mut image) = images.get_mut(&tile.image) else {
                continue;
            };
            bevy_huddle::call::video_image::show_video_frame(&mut image, size, rgba.clone());
            if tile.frame_size != size {
                updates.write(SessionUpdate {
                    call: call.0,
                    change: SessionChange::VideoFormat {
                        uid: who.uid.clone(),
                        size,
                    },
                });
            }
        }
    }
}

/// Demo keys on top of the UI's shortcuts (M mute, V video, H hand, Esc twice leave): Tab
/// cycles the layout mode, P unpins; once the call is over the demo closes.
fn handle_keys(
    keys: Res<ButtonInput<KeyCode>>,
    calls: Query<&CallLayout>,
    states: Query<&CallState>,
    active: Res<ActiveCall>,
    mut controls: CallControls,
    mut exit: MessageWriter<AppExit>,
) {
    let Some(layout) = active.0.and_then(|call| calls.get(call).ok()) else {
        return;
    };
    if keys.just_pressed(KeyCode::Tab) {
        controls.set_mode(match layout.mode {
            LayoutMode::Default => LayoutMode::Spotlight,
            LayoutMode::Spotlight => LayoutMode::Single,
            LayoutMode::Single => LayoutMode::Default,
        });
    }
    if keys.just_pressed(KeyCode::KeyP) && layout.pinned.is_some() {
        controls.unpin();
    }
    // Esc twice leaves the call (the UI's shortcut), and a demo whose call is over closes.
    if active
        .0
        .and_then(|call| states.get(call).ok())
        .is_some_and(CallState::is_ended)
    {
        exit.write(AppExit::Success);
    }
}

/// What a call event means to a person, for the status line (`None`: not worth a line).
pub fn describe_event(event: &CallEvent) -> Option<String> {
    Some(match event {
        CallEvent::Error { error, .. } => format!("Problem: {error}"),
        CallEvent::UserJoined { user, .. } => format!("{} joined", user.name),
        CallEvent::UserLeft { user, .. } => format!("{} left", user.name),
        CallEvent::UserMuted { user, muted, .. } => {
            format!("{} {}", user.name, if *muted { "muted" } else { "unmuted" })
        }
        CallEvent::UserVideoPaused { user, paused, .. } => format!(
            "{} turned video {}",
            user.name,
            if *paused { "off" } else { "on" }
        ),
        CallEvent::HandRaised { user, .. } => format!("{} raised a hand", user.name),
        CallEvent::HandLowered { user, .. } => format!("{} lowered a hand", user.name),
        CallEvent::ScreenShareStarted { user, .. } => format!("{} is sharing", user.name),
        CallEvent::ScreenShareStopped { user, .. } => format!("{} stopped sharing", user.name),
        CallEvent::ModeChanged { mode, .. } => format!("Layout: {}", mode_name(*mode)),
        CallEvent::RecordingToggled { started, by, .. } => format!(
            "{by} {} recording",
            if *started { "started" } else { "stopped" }
        ),
        CallEvent::CallEnded { .. } => "The call ended".to_owned(),
        _ => return None,
    })
}

/// The layout's name as the bar says it.
pub fn mode_name(mode: LayoutMode) -> &'static str {
    match mode {
        LayoutMode::Default => "Grid",
        LayoutMode::Spotlight => "Spotlight",
        _ => "Single",
    }
}

/// The status line: layout, people, microphone and camera, the keys, and the last event.
fn show_status(
    mut events: MessageReader<CallEvent>,
    mut last_event: Local<String>,
    calls: Query<(&CallLayout, &CallParticipants, &CallState)>,
    local: Query<&ParticipantState, With<LocalParticipant>>,
    active: Res<ActiveCall>,
    mut text: Query<&mut Text, With<StatusText>>,
) {
    if let Some(line) = events.read().filter_map(describe_event).last() {
        *last_event = line;
    }
    let Some((layout, members, state)) = active.0.and_then(|call| calls.get(call).ok()) else {
        return;
    };
    let me = local.iter().next().cloned().unwrap_or_default();
    let state = match state {
        CallState::Idle | CallState::Joining => "joining",
        CallState::Ringing { .. } => "ringing",
        CallState::InCall => "in call",
        CallState::Ended { .. } => "ended",
    };
    let line = format!(
        "{} | {} people, {state} | mic {} | video {} | Tab: layout | {}",
        mode_name(layout.mode),
        members.len(),
        if me.audio_muted { "off" } else { "on" },
        if me.video_paused { "off" } else { "on" },
        *last_event,
    );
    for mut text in &mut text {
        if text.0 != line {
            text.0 = line.clone();
        }
    }
}

/// Once every tile shows video and the renderer is warm, saves the screenshot.
fn take_screenshot(
    config: Res<DemoConfig>,
    mut state: ResMut<ScreenshotState>,
    tiles: Query<&VideoTile>,
    mut commands: Commands,
) {
    let Some(path) = &config.screenshot else {
        return;
    };
    if state.saved && !state.second_requested {
        let Some(second) = &config.second_screenshot else {
            return;
        };
        state.frames_after_first += 1;
        if state.frames_after_first >= SECOND_SCREENSHOT_AFTER_FRAMES {
            state.second_requested = true;
            info!("taking a second screenshot to {}", second.display());
            save_screenshot(&mut commands, second.clone(), |state| {
                state.second_saved = true
            });
        }
        return;
    }
    if state.requested {
        return;
    }
    let flowing = !tiles.is_empty() && tiles.iter().all(VideoTile::has_video);
    if !flowing {
        return;
    }
    state.warm_frames += 1;
    if state.warm_frames < SCREENSHOT_WARMUP_FRAMES {
        return;
    }
    state.requested = true;
    info!("taking a screenshot to {}", path.display());
    save_screenshot(&mut commands, path.clone(), |state| state.saved = true);
}

/// Saves a screenshot of the window to `path`; `saved` marks it done in the state.
fn save_screenshot(commands: &mut Commands, path: PathBuf, saved: fn(&mut ScreenshotState)) {
    commands
        .spawn(Screenshot::primary_window())
        .observe(save_to_disk(path))
        .observe(
            move |_: On<ScreenshotCaptured>, mut state: ResMut<ScreenshotState>| saved(&mut state),
        );
}

/// Quits once the requested screenshot is saved, or after `--exit-after` (failing if a
/// requested screenshot was not saved by then).
fn exit_when_done(
    time: Res<Time<Real>>,
    config: Res<DemoConfig>,
    state: Res<ScreenshotState>,
    mut exit: MessageWriter<AppExit>,
) {
    let all_saved = state.saved && (config.second_screenshot.is_none() || state.second_saved);
    if config.screenshot.is_some() && all_saved {
        exit.write(AppExit::Success);
        return;
    }
    let Some(limit) = config.exit_after else {
        return;
    };
    if time.elapsed() < limit {
        return;
    }
    if config.screenshot.is_some() {
        error!("exiting after {limit:?} without the screenshot: video never flowed everywhere");
        exit.write(AppExit::from_code(1));
    } else {
        exit.write(AppExit::Success);
    }
}

/// How long the demo runs before `--frame-stats` starts counting (set-up, first keyframes).
const FRAME_STATS_WARMUP: Duration = Duration::from_secs(5);

/// Frame times of the steady state, for `--frame-stats`.
#[derive(Resource, Default)]
struct FrameStats {
    frame_ms: Vec<f32>,
    /// Wall clock and process CPU seconds when counting started.
    started: Option<(std::time::Instant, f64)>,
}

/// CPU seconds this process used so far (user + system), from `/proc/self/stat`.
fn process_cpu_seconds() -> f64 {
    const CLOCK_TICKS_PER_SECOND: f64 = 100.0;
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) start at field 3 (state).
    let after_name = stat.rsplit_once(") ").map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / CLOCK_TICKS_PER_SECOND
}

fn record_frame_times(
    time: Res<Time<Real>>,
    config: Res<DemoConfig>,
    mut stats: ResMut<FrameStats>,
) {
    if !config.frame_stats || time.elapsed() < FRAME_STATS_WARMUP {
        return;
    }
    if stats.started.is_none() {
        stats.started = Some((std::time::Instant::now(), process_cpu_seconds()));
        return;
    }
    stats.frame_ms.push(time.delta_secs() * 1000.0);
}

/// Prints the steady-state frame times and CPU use when the demo exits.
fn print_frame_stats(
    mut exits: MessageReader<AppExit>,
    config: Res<DemoConfig>,
    stats: Res<FrameStats>,
    tiles: Query<&VideoTile>,
) {
    if exits.read().next().is_none() || !config.frame_stats {
        return;
    }
    let Some((started, cpu_at_start)) = stats.started else {
        println!("frame-stats: the demo ended before the {FRAME_STATS_WARMUP:?} warm-up");
        return;
    };
    let mut sorted = stats.frame_ms.clone();
    sorted.sort_by(f32::total_cmp);
    let percentile = |p: f32| {
        let index = ((sorted.len().max(1) - 1) as f32 * p).round() as usize;
        sorted.get(index).copied().unwrap_or(f32::NAN)
    };
    let wall = started.elapsed().as_secs_f64();
    let cpu = (process_cpu_seconds() - cpu_at_start) / wall * 100.0;
    let with_video = tiles.iter().filter(|tile| tile.has_video()).count();
    println!(
        "frame-stats bots={} video={}x{} tiles_with_video={with_video} frames={} p50_ms={:.1} \
         p95_ms={:.1} fps={:.1} cpu_percent={cpu:.0} (of one core; 2 cores = 200)",
        config.bots,
        config.video.x,
        config.video.y,
        sorted.len(),
        percentile(0.5),
        percentile(0.95),
        sorted.len() as f64 / wall,
    );
}

/// Layout mode names on the command line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// Every tile in an even grid.
    #[default]
    Grid,
    /// One main tile, a strip, and a floating local preview.
    Spotlight,
    /// Only the main tile.
    Single,
}

impl From<ModeArg> for LayoutMode {
    fn from(mode: ModeArg) -> Self {
        match mode {
            ModeArg::Grid => LayoutMode::Default,
            ModeArg::Spotlight => LayoutMode::Spotlight,
            ModeArg::Single => LayoutMode::Single,
        }
    }
}

/// Options of `huddle demo`.
#[derive(Clone, Debug, clap::Args)]
pub struct DemoArgs {
    /// How many synthetic participants join (0..=48).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(0..=48))]
    pub bots: u16,
    /// Layout mode to start in.
    #[arg(long, value_enum, default_value_t = ModeArg::Grid)]
    pub mode: ModeArg,
    /// Save a screenshot of the window here once video is flowing, then quit.
    #[arg(long)]
    pub screenshot: Option<PathBuf>,
    /// With --screenshot: a second screenshot here, about a second of video later.
    #[arg(long, requires = "screenshot")]
    pub second_screenshot: Option<PathBuf>,
    /// Quit after this many seconds (with --screenshot: fail if none was saved by then).
    #[arg(long)]
    pub exit_after: Option<f32>,
    /// Window width in logical pixels.
    #[arg(long, default_value_t = 1280)]
    pub width: u32,
    /// Window height in logical pixels.
    #[arg(long, default_value_t = 720)]
    pub height: u32,
    /// Height of the video everyone sends (16:9), e.g. 360 for 640×360.
    #[arg(long, default_value_t = 180, value_parser = clap::value_parser!(u32).range(90..=1080))]
    pub video_height: u32,
    /// On exit, print frame-time percentiles and CPU use of the steady state (after 5 s).
    #[arg(long)]
    pub frame_stats: bool,
    /// Hide the button bar and show only the tiles (`default_layout = false`).
    #[arg(long)]
    pub no_bar: bool,
}
