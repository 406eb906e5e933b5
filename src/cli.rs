//! The command line.

use std::path::PathBuf;

use bevy_huddle::settings::LayoutMode;
use clap::{Parser, Subcommand, ValueEnum};

/// Huddle: video/audio calls on Bevy's ECS.
#[derive(Debug, Parser)]
#[command(name = "huddle", version, about)]
pub struct Cli {
    /// What to run (nothing: the app).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The desktop app: log in, contacts, groups, call history, calls (the default).
    App(crate::app::AppArgs),
    /// Open a demo call with synthetic participants in a window.
    Demo(DemoArgs),
    /// Run the signaling and identity server.
    Server(huddle_server::ServerArgs),
    /// A headless participant: log in, call or answer, stay, hang up, print statistics.
    Bot(crate::bot::BotArgs),
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
