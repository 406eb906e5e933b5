//! The command line.

use clap::{Parser, Subcommand};

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
    Demo(crate::demo::DemoArgs),
    /// Run the signaling and identity server.
    Server(huddle_server::ServerArgs),
    /// A headless participant: log in, call or answer, stay, hang up, print statistics.
    Bot(crate::bot::BotArgs),
}
