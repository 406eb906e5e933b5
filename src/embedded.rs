//! The embedded server and the in-process bots of the demo.
//!
//! - [`start_embedded_server`]: a `huddle_server` on 127.0.0.1 (a free port, dev login,
//!   in-memory database) running on the app's [`HuddleRuntime`].
//! - [`spawn_bot`]: a headless Huddle app on its own thread (the same ECS plugins as the
//!   window, `MinimalPlugins`, no GPU) that logs in to the server, gets a call token for a
//!   session and joins it, then stays in the call.

use std::time::Duration;

use bevy::app::ScheduleRunnerPlugin;
use bevy::prelude::*;
use bevy_huddle::connection::HuddleRuntime;
use bevy_huddle::prelude::*;
use huddle_server::{HubConfig, ServerConfig};

/// Starts the embedded server; returns its WebSocket URL.
pub fn start_embedded_server(
    runtime: &HuddleRuntime,
) -> Result<String, huddle_server::ServerError> {
    let config = ServerConfig {
        hub: HubConfig {
            dev_login: true,
            ..HubConfig::default()
        },
        ..ServerConfig::default()
    };
    let server = runtime.handle().block_on(huddle_server::bind(config))?;
    let url = format!("ws://{}/ws", server.local_addr());
    runtime.handle().spawn(async move {
        if let Err(err) = server.serve_until(std::future::pending()).await {
            error!("embedded server stopped: {err}");
        }
    });
    Ok(url)
}

/// The session a participant joins as soon as it is logged in.
#[derive(Resource, Clone, Debug)]
pub struct JoinOnLogin {
    /// The session id.
    pub session_id: String,
    /// Settings of the call.
    pub settings: CallSettings,
    /// Where the call renders.
    pub target: Option<Entity>,
}

/// Logged in → ask for a token; token → start the session.
pub fn join_on_login(
    mut events: MessageReader<RingingEvent>,
    join: Res<JoinOnLogin>,
    mut ringing: MessageWriter<RingingAction>,
    mut start: MessageWriter<StartSession>,
) {
    for event in events.read() {
        match event {
            RingingEvent::LoggedIn {
                reconnected: false, ..
            } => {
                ringing.write(RingingAction::GenerateToken {
                    session_id: join.session_id.clone(),
                });
            }
            RingingEvent::TokenGenerated {
                session_id,
                call_token,
            } if *session_id == join.session_id => {
                start.write(StartSession {
                    call_token: call_token.clone(),
                    settings: join.settings.clone(),
                    target: join.target,
                });
            }
            RingingEvent::Failed { error } => error!("demo: {error}"),
            _ => {}
        }
    }
}

/// Runs a headless bot app on its own thread until the process ends.
pub fn spawn_bot(
    runtime: HuddleRuntime,
    url: String,
    uid: String,
    name: String,
    session_id: String,
    media: bevy_huddle::media::MediaSettings,
) {
    let spawned = std::thread::Builder::new()
        .name(format!("bot {uid}"))
        .spawn(move || {
            let mut app = App::new();
            app.add_plugins((
                MinimalPlugins.set(ScheduleRunnerPlugin::run_loop(Duration::from_secs_f64(
                    1.0 / 30.0,
                ))),
                AssetPlugin::default(),
                HuddlePlugins,
            ))
            .insert_resource(runtime)
            .insert_resource(media)
            .insert_resource(JoinOnLogin {
                session_id,
                settings: CallSettings::default(),
                target: None,
            })
            .add_systems(Update, join_on_login);
            app.world_mut()
                .spawn(ServerConnection::dev(url, uid).with_name(name));
            app.run();
        });
    if let Err(err) = spawned {
        error!("cannot start a bot thread: {err}");
    }
}
