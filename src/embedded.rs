//! The embedded server and the in-process bots of the demo.
//!
//! - [`start_embedded_server`]: a `huddle_server` on 127.0.0.1 (a free port, dev login,
//!   in-memory database, or for the app [`embedded_database`] in the user's data folder)
//!   running on the app's [`HuddleRuntime`].
//! - [`spawn_bot`]: a headless Huddle app on its own thread (the same ECS plugins as the
//!   window, `MinimalPlugins`, no GPU) that logs in to the server and either joins a session
//!   directly or answers the calls that ring it ([`BotJoin`]), then stays in the call.

use bevy::app::ScheduleRunnerPlugin;
use bevy::prelude::*;
use bevy_huddle::HuddleRuntime;
use bevy_huddle::prelude::*;
use huddle_protocol::GroupInfo;
use huddle_server::{HubConfig, ServerConfig};

/// Starts the embedded server with these groups; returns its WebSocket URL.
pub fn start_embedded_server(
    runtime: &HuddleRuntime,
    groups: Vec<GroupInfo>,
) -> Result<String, huddle_server::ServerError> {
    start_embedded_server_with(runtime, groups, EmbeddedServerOptions::default())
}

/// How the app's embedded server runs, beyond the demo's defaults.
#[derive(Clone, Debug)]
pub struct EmbeddedServerOptions {
    /// Every user who logs in joins this group (so everyone is everyone's contact).
    pub lobby: Option<String>,
    /// Users, groups and call logs live in this SQLite file (`None`: in memory, gone when the
    /// process ends).
    pub db: Option<std::path::PathBuf>,
    /// Where it listens (default: 127.0.0.1 on a free port).
    pub listen: std::net::SocketAddr,
}

impl Default for EmbeddedServerOptions {
    fn default() -> Self {
        Self {
            lobby: None,
            db: None,
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        }
    }
}

/// [`start_embedded_server`] with [`EmbeddedServerOptions`].
pub fn start_embedded_server_with(
    runtime: &HuddleRuntime,
    groups: Vec<GroupInfo>,
    options: EmbeddedServerOptions,
) -> Result<String, huddle_server::ServerError> {
    let config = ServerConfig {
        hub: HubConfig {
            dev_login: true,
            dev_lobby: options.lobby,
            ..HubConfig::default()
        },
        groups,
        db: options.db,
        listen: options.listen,
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

/// The web client's address on the server whose WebSocket URL is `ws_url`
/// (`ws://HOST:PORT/ws` → `http://HOST:PORT/`, `wss://` → `https://`).
pub fn web_client_url(ws_url: &str) -> Option<String> {
    let (scheme, rest) = ws_url.split_once("://")?;
    let web = match scheme {
        "ws" => "http",
        "wss" => "https",
        _ => return None,
    };
    let host = rest.split('/').next().filter(|h| !h.is_empty())?;
    Some(format!("{web}://{host}/"))
}

/// Where the app keeps its data: `$XDG_DATA_HOME/huddle`, or `~/.local/share/huddle` when
/// `XDG_DATA_HOME` is unset or not an absolute path (the XDG base directory rules); `None`
/// without a home directory.
pub fn app_data_dir() -> Option<std::path::PathBuf> {
    data_dir_from(std::env::var_os("XDG_DATA_HOME"), std::env::var_os("HOME"))
}

/// [`app_data_dir`] from the values of `XDG_DATA_HOME` and `HOME`.
pub fn data_dir_from(
    xdg_data_home: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
) -> Option<std::path::PathBuf> {
    let absolute = |value: Option<std::ffi::OsString>| {
        value
            .map(std::path::PathBuf::from)
            .filter(|path| path.is_absolute())
    };
    let base =
        absolute(xdg_data_home).or_else(|| absolute(home).map(|h| h.join(".local/share")))?;
    Some(base.join("huddle"))
}

/// The embedded server's database file in [`app_data_dir`], its folder created; `None` (with
/// a warning: the history then lasts until the app quits) when there is no such folder.
pub fn embedded_database() -> Option<std::path::PathBuf> {
    let Some(dir) = app_data_dir() else {
        warn!("no home directory: the call history is kept in memory only");
        return None;
    };
    match std::fs::create_dir_all(&dir) {
        Ok(()) => Some(dir.join("embedded-server.sqlite3")),
        Err(err) => {
            warn!(
                "cannot create {}: {err}; the call history is kept in memory only",
                dir.display()
            );
            None
        }
    }
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

/// How a bot gets into a call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BotJoin {
    /// Joins this session as soon as it is logged in (a direct call, no ringing).
    Session(String),
    /// Answers every call that rings it: accept, call token, join; leaves when the caller
    /// has left.
    AnswerCalls,
}

/// A bot that answers calls: incoming → accept; accepted → token; token → join (without
/// video when the call is an audio call).
pub fn answer_calls(
    mut events: MessageReader<RingingEvent>,
    mut ringing: MessageWriter<RingingAction>,
    mut start: MessageWriter<StartSession>,
    mut audio_calls: Local<std::collections::HashSet<String>>,
) {
    for event in events.read() {
        match event {
            RingingEvent::IncomingCallReceived { call } => {
                if call.call_type == huddle_protocol::CallType::Audio {
                    audio_calls.insert(call.session_id.clone());
                }
                ringing.write(RingingAction::AcceptCall {
                    session_id: call.session_id.clone(),
                });
            }
            RingingEvent::CallAccepted { call } => {
                ringing.write(RingingAction::GenerateToken {
                    session_id: call.session_id.clone(),
                });
            }
            RingingEvent::TokenGenerated {
                session_id,
                call_token,
            } => {
                let settings = CallSettings {
                    audio_only: audio_calls.remove(session_id),
                    ..CallSettings::default()
                };
                start.write(StartSession {
                    call_token: call_token.clone(),
                    settings,
                    target: None,
                });
            }
            RingingEvent::Failed { error } => error!("bot: {error}"),
            _ => {}
        }
    }
}

/// An answering bot leaves a call once the person who placed it has left (a group call goes
/// on without them otherwise, and the bot stays busy for everyone else). Who placed each
/// call comes from its ringing; calls the bot was not rung for are left alone.
pub fn leave_when_the_caller_leaves(
    mut events: MessageReader<RingingEvent>,
    mut callers: Local<std::collections::HashMap<String, String>>,
    mut caller_seen: Local<std::collections::HashSet<Entity>>,
    active: Res<ActiveCall>,
    calls: Query<(&Call, &CallState, Option<&CallParticipants>)>,
    participants: Query<&Participant>,
    mut actions: MessageWriter<CallAction>,
) {
    for event in events.read() {
        if let RingingEvent::IncomingCallReceived { call } = event {
            callers.insert(call.session_id.clone(), call.initiator.uid.clone());
        }
    }
    let Some(entity) = active.0 else {
        return;
    };
    let Ok((call, CallState::InCall, members)) = calls.get(entity) else {
        return;
    };
    let Some(caller) = callers.get(&call.session_id) else {
        return;
    };
    let present = members
        .into_iter()
        .flat_map(|m| m.iter())
        .filter_map(|p| participants.get(p).ok())
        .any(|p| &p.uid == caller);
    if present {
        caller_seen.insert(entity);
    } else if caller_seen.remove(&entity) {
        callers.remove(&call.session_id);
        actions.write(CallAction::EndSession);
    }
}

/// Runs a headless bot app on its own thread until the process ends.
pub fn spawn_bot(
    runtime: HuddleRuntime,
    url: String,
    uid: String,
    name: String,
    join: BotJoin,
    media: bevy_huddle::media::MediaSettings,
) {
    let spawned = std::thread::Builder::new()
        .name(format!("bot {uid}"))
        .spawn(move || {
            let mut app = App::new();
            app.add_plugins((
                MinimalPlugins.set(ScheduleRunnerPlugin::run_loop(crate::bot::BOT_TICK)),
                AssetPlugin::default(),
                HuddlePlugins,
            ))
            .insert_resource(runtime)
            // Headless: nobody looks at the bot's own tile.
            .insert_resource(bevy_huddle::media::MediaSettings {
                local_preview: false,
                ..media
            });
            match join {
                BotJoin::Session(session_id) => {
                    app.insert_resource(JoinOnLogin {
                        session_id,
                        settings: CallSettings::default(),
                        target: None,
                    })
                    .add_systems(Update, join_on_login);
                }
                BotJoin::AnswerCalls => {
                    app.add_systems(Update, (answer_calls, leave_when_the_caller_leaves));
                }
            }
            app.world_mut()
                .spawn(ServerConnection::dev(url, uid).with_name(name));
            app.run();
        });
    if let Err(err) = spawned {
        error!("cannot start a bot thread: {err}");
    }
}

#[cfg(test)]
mod tests {
    use super::web_client_url;

    /// The web client's address is the server's, over HTTP(S): what the app prints.
    #[test]
    fn the_web_client_is_at_the_servers_address() {
        assert_eq!(
            web_client_url("ws://127.0.0.1:7878/ws").as_deref(),
            Some("http://127.0.0.1:7878/")
        );
        assert_eq!(
            web_client_url("wss://huddle.example.org/ws").as_deref(),
            Some("https://huddle.example.org/")
        );
        assert_eq!(web_client_url("http://x/ws"), None);
        assert_eq!(web_client_url("ws:///ws"), None);
    }
}
