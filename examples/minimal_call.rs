//! The fewest lines to add a call to a Bevy app: connect, get a token, start the session.
//!
//! Run a server (`huddle server --dev-login`), then `cargo run --example minimal_call`
//! (`HUDDLE_SERVER` to point elsewhere, `HUDDLE_UID` to log in as someone else).

use bevy::prelude::*;
use bevy_huddle::prelude::*;

fn main() {
    let server = std::env::var("HUDDLE_SERVER").unwrap_or_else(|_| "ws://127.0.0.1:7878/ws".into());
    let uid = std::env::var("HUDDLE_UID").unwrap_or_else(|_| "minimal".into());
    App::new()
        .add_plugins((DefaultPlugins, HuddlePlugins))
        .add_systems(Startup, move |mut commands: Commands| {
            commands.spawn(Camera2d);
            commands.spawn(ServerConnection::dev(server.clone(), uid.clone()));
        })
        .add_systems(Update, join_the_lobby)
        .run();
}

/// Logged in → ask for a call token for "lobby"; token → start the session (tiles fill the window).
fn join_the_lobby(
    mut events: MessageReader<RingingEvent>,
    mut ringing: MessageWriter<RingingAction>,
    mut start: MessageWriter<StartSession>,
) {
    for event in events.read() {
        match event {
            RingingEvent::LoggedIn { .. } => {
                ringing.write(RingingAction::GenerateToken {
                    session_id: "lobby".into(),
                });
            }
            RingingEvent::TokenGenerated { call_token, .. } => {
                start.write(StartSession {
                    call_token: call_token.clone(),
                    settings: CallSettings::default(),
                    target: None,
                });
            }
            _ => {}
        }
    }
}
