//! `huddle`: the desktop app's entry point.

use std::process::ExitCode;

use clap::Parser;
use huddle::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.into_command() {
        Command::App(args) => huddle::app::run(args),
        Command::Demo(args) => huddle::demo::run(args),
        Command::Bot(args) => huddle::bot::run(args),
        Command::AudioCheck(args) => huddle::audio_check::run(args),
        Command::Server(args) => match huddle_server::run_from_args(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("huddle server: {err}");
                ExitCode::FAILURE
            }
        },
    }
}
