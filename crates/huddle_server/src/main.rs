//! `huddle-server`: the signaling and identity server on its own.

use std::process::ExitCode;

use clap::Parser;

/// Huddle's signaling and identity server.
#[derive(Parser)]
#[command(name = "huddle-server", version, about)]
struct Cli {
    #[command(flatten)]
    server: huddle_server::ServerArgs,
}

fn main() -> ExitCode {
    match huddle_server::run_from_args(Cli::parse().server) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("huddle-server: {err}");
            ExitCode::FAILURE
        }
    }
}
