//! The command line.

use clap::{Parser, Subcommand};

/// Huddle: video/audio calls on Bevy's ECS.
///
/// Without a subcommand it runs the app, and takes the app's options: `huddle --uid carl` is
/// `huddle app --uid carl`.
#[derive(Debug, Parser)]
#[command(
    name = "huddle",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// What to run (nothing: the app).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The app's options, when no subcommand is given.
    #[command(flatten)]
    pub app: crate::app::AppArgs,
}

impl Cli {
    /// The command to run: the subcommand, or the app with the top-level options.
    pub fn into_command(self) -> Command {
        self.command.unwrap_or(Command::App(self.app))
    }
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The desktop app: log in, contacts, groups, call history, calls (the default).
    App(crate::app::AppArgs),
    /// Open a demo call with synthetic participants in a window.
    Demo(crate::demo::DemoArgs),
    /// Run the signaling and identity server.
    Server(huddle_server::ServerArgs),
    /// A headless participant: log in, call or answer, stay, hang up, print statistics.
    Bot(crate::bot::BotArgs),
    /// Measure the voice processing (echo, noise, gain) on a generated scene; no devices.
    AudioCheck(crate::audio_check::AudioCheckArgs),
}
