//! `huddle` (or `huddle app`): the desktop app.
//!
//! 1. **Log in** with a uid and a name: to the embedded server (started in-process with a dev
//!    lobby, so everyone who logs in is everyone's contact, and with `--bots` bots that
//!    answer calls, so a newcomer has someone to call) or to `--server URL`.
//! 2. **Home**: contacts with presence (online first) and groups, each with Audio and Video
//!    call buttons (the call rings; the default call UI shows "Calling…" and joins once it is
//!    accepted); joining a direct call by session id (call token, then the session); and the
//!    call history from the server's call logs, filtered by type, status and direction.
//! 3. **In a call** the call fills the window (tiles laid out by `bevy_huddle`) under the
//!    default call UI (`bevy_huddle_ui`: bar, participants, devices); when it ends the app
//!    is home again and the history is refreshed.
//! 4. **Picture-in-picture** ([`crate::pip`]): `enter_pip` opens a small always-on-top
//!    window with the main tile.
//!
//! Everything but the egui drawing ([`AppModelPlugin`]: the [`AppModel`] and the
//! [`AppCommand`]s the screens send) runs in a headless `App`, which is how it is tested.

use std::process::ExitCode;

use bevy::prelude::*;
use bevy_huddle::HuddleRuntime;
use bevy_huddle::prelude::*;
use bevy_huddle_ui::CallUiConfig;
use huddle_protocol::{
    CallDirection, CallLog, CallLogQuery, CallStatus, CallType, GroupInfo, Presence, ReceiverType,
    User,
};

use crate::desktop::{spawn_call_area, windowed_app};
use crate::embedded::{BotJoin, spawn_bot, start_embedded_server_with};

/// The group every user of the embedded server is in (so everyone is everyone's contact).
pub const LOBBY: &str = "lobby";

/// Options of `huddle app` (and of `huddle` alone).
#[derive(Clone, Debug, clap::Args)]
pub struct AppArgs {
    /// A Huddle server's WebSocket URL (`ws://HOST:PORT/ws`, or `wss://` for a server with
    /// TLS); without it the app starts its own embedded server.
    #[arg(long)]
    pub server: Option<String>,
    /// Trust the CA certificates in this PEM file too (a `wss://` server with its own CA).
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<std::path::PathBuf>,
    /// Log in at once as this uid (otherwise the login screen asks).
    #[arg(long)]
    pub uid: Option<String>,
    /// Display name for `--uid`.
    #[arg(long)]
    pub name: Option<String>,
    /// Bots on the embedded server that answer calls (0..=16).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(0..=16))]
    pub bots: u16,
    /// Save a screenshot here once logged in with every bot online (or after 60 s), then quit.
    #[arg(long)]
    pub screenshot: Option<std::path::PathBuf>,
}

impl Default for AppArgs {
    /// What `huddle` alone runs: the embedded server with two bots, the login screen.
    fn default() -> Self {
        Self {
            server: None,
            ca_file: None,
            uid: None,
            name: None,
            bots: 2,
            screenshot: None,
        }
    }
}

/// The server the app logs in to.
#[derive(Resource, Clone, Debug, PartialEq, Eq)]
pub struct AppServer {
    /// Its WebSocket URL.
    pub url: String,
    /// Extra trusted CA certificates for `wss://`.
    pub ca_file: Option<std::path::PathBuf>,
}

/// Call history filters (all `None`: every call).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HistoryFilter {
    /// Only audio or only video calls.
    pub call_type: Option<CallType>,
    /// Only calls that ended this way.
    pub status: Option<CallStatus>,
    /// Only calls we placed, or only calls we received.
    pub direction: Option<CallDirection>,
}

impl HistoryFilter {
    /// The server query for the first page of 50.
    pub fn query(&self) -> CallLogQuery {
        CallLogQuery {
            call_type: self.call_type,
            status: self.status,
            direction: self.direction,
            page: 1,
            per_page: 50,
            ..CallLogQuery::default()
        }
    }
}

/// What the app's screens show.
#[derive(Resource, Default, Debug)]
pub struct AppModel {
    /// The login form.
    pub login_uid: String,
    /// The login form's name.
    pub login_name: String,
    /// Who we are, once logged in.
    pub me: Option<User>,
    /// Contacts and whether they are online, online first, then by name.
    pub contacts: Vec<Presence>,
    /// Our groups.
    pub groups: Vec<GroupInfo>,
    /// The call history (newest first) under the current filter.
    pub history: Vec<CallLog>,
    /// Calls matching the filter in all pages.
    pub history_total: u64,
    /// The history's filter.
    pub filter: HistoryFilter,
    /// The "join by session id" field.
    pub join_session: String,
    /// A session we asked a token for, to join when it comes.
    pub joining: Option<String>,
    /// The last problem to show (a refused request, a bad session id).
    pub notice: Option<String>,
}

impl AppModel {
    fn sort_contacts(&mut self) {
        self.contacts
            .sort_by(|a, b| b.online.cmp(&a.online).then(a.user.name.cmp(&b.user.name)));
    }
}

/// What the screens ask for.
#[derive(Message, Clone, Debug, PartialEq)]
pub enum AppCommand {
    /// Log in (dev login) as `uid` with this display name.
    LogIn {
        /// User id.
        uid: String,
        /// Display name.
        name: String,
    },
    /// Ring a user or a group.
    Call {
        /// uid or guid.
        receiver_id: String,
        /// User or group.
        receiver_type: ReceiverType,
        /// Audio or video.
        call_type: CallType,
    },
    /// Join a direct call by its session id.
    JoinSession(String),
    /// Fetch the call history again (after changing the filter).
    RefreshHistory,
}

/// The app's state and commands, without drawing.
pub struct AppModelPlugin;

impl Plugin for AppModelPlugin {
    fn build(&self, app: &mut App) {
        app.init_resource::<AppModel>()
            .add_message::<AppCommand>()
            .add_systems(
                Update,
                (follow_server, refresh_after_calls, apply_app_commands)
                    .chain()
                    .after(HuddleSystems::Apply),
            );
    }
}

/// Applies the screens' commands: log in, ring, join by id, fetch the history.
pub fn apply_app_commands(
    mut commands_in: MessageReader<AppCommand>,
    mut model: ResMut<AppModel>,
    server: Res<AppServer>,
    connections: Query<(), With<ServerConnection>>,
    mut ringing: MessageWriter<RingingAction>,
    mut commands: Commands,
) {
    for command in commands_in.read() {
        match command {
            AppCommand::LogIn { uid, name } => {
                let uid = uid.trim();
                if uid.is_empty() {
                    model.notice = Some("enter a user id to log in".into());
                } else if connections.is_empty() {
                    let name = if name.trim().is_empty() {
                        uid
                    } else {
                        name.trim()
                    };
                    let mut connection =
                        ServerConnection::dev(server.url.clone(), uid).with_name(name);
                    if let Some(ca_file) = &server.ca_file {
                        connection = connection.with_ca_file(ca_file.clone());
                    }
                    commands.spawn(connection);
                    model.notice = None;
                }
            }
            AppCommand::Call {
                receiver_id,
                receiver_type,
                call_type,
            } => {
                ringing.write(RingingAction::InitiateCall {
                    receiver_id: receiver_id.clone(),
                    receiver_type: *receiver_type,
                    call_type: *call_type,
                    timeout_secs: None,
                });
            }
            AppCommand::JoinSession(session_id) => {
                let session_id = session_id.trim();
                if session_id.is_empty() {
                    model.notice = Some("enter the session id of the call to join".into());
                    continue;
                }
                model.joining = Some(session_id.to_owned());
                ringing.write(RingingAction::GenerateToken {
                    session_id: session_id.to_owned(),
                });
            }
            AppCommand::RefreshHistory => {
                ringing.write(RingingAction::ListCallLogs {
                    query: model.filter.query(),
                });
            }
        }
    }
}

/// Keeps the model in step with the server: login (contacts, groups), presence, the history,
/// the token of a session joined by id (→ `StartSession`), refusals.
pub fn follow_server(
    mut events: MessageReader<RingingEvent>,
    mut model: ResMut<AppModel>,
    config: Option<Res<CallUiConfig>>,
    mut start: MessageWriter<StartSession>,
    mut app_commands: MessageWriter<AppCommand>,
) {
    for event in events.read() {
        match event {
            RingingEvent::LoggedIn {
                user,
                contacts,
                groups,
                ..
            } => {
                model.me = Some(user.clone());
                model.contacts = contacts.clone();
                model.groups = groups.clone();
                model.sort_contacts();
                app_commands.write(AppCommand::RefreshHistory);
            }
            RingingEvent::PresenceChanged(presence) => {
                match model
                    .contacts
                    .iter_mut()
                    .find(|c| c.user.uid == presence.user.uid)
                {
                    Some(known) => *known = presence.clone(),
                    None => model.contacts.push(presence.clone()),
                }
                model.sort_contacts();
            }
            RingingEvent::CallLogs { logs, total } => {
                model.history = logs.clone();
                model.history_total = *total;
            }
            RingingEvent::TokenGenerated {
                session_id,
                call_token,
            } if model.joining.as_deref() == Some(session_id.as_str()) => {
                model.joining = None;
                let (settings, target) = config
                    .as_deref()
                    .map(|c| (c.settings.clone(), c.target))
                    .unwrap_or_default();
                start.write(StartSession {
                    call_token: call_token.clone(),
                    settings,
                    target,
                });
            }
            RingingEvent::Failed { error } => {
                model.joining = None;
                model.notice = Some(error.to_string());
            }
            _ => {}
        }
    }
}

/// A call that ends is in the history: fetch it again, half a second later (the server
/// closes the call's log once our leave has reached it).
pub fn refresh_after_calls(
    calls: Query<&CallState, Changed<CallState>>,
    time: Res<Time<Real>>,
    mut due: Local<Option<std::time::Duration>>,
    mut app_commands: MessageWriter<AppCommand>,
) {
    let now = time.elapsed();
    if calls.iter().any(CallState::is_ended) {
        *due = Some(now + std::time::Duration::from_millis(500));
    }
    if due.is_some_and(|at| now >= at) {
        *due = None;
        app_commands.write(AppCommand::RefreshHistory);
    }
}

/// Runs the app; returns the process exit code.
pub fn run(args: AppArgs) -> ExitCode {
    let mut app = match windowed_app("Huddle", UVec2::new(1280, 720), "huddle") {
        Ok(app) => app,
        Err(code) => return code,
    };
    let runtime = HuddleRuntime::default();
    let url = match &args.server {
        Some(url) => url.clone(),
        None => match start_embedded_server_with(&runtime, Vec::new(), Some(LOBBY.into())) {
            Ok(url) => {
                for i in 1..=args.bots {
                    spawn_bot(
                        runtime.clone(),
                        url.clone(),
                        format!("bot-{i}"),
                        format!("Bot {i}"),
                        BotJoin::AnswerCalls,
                        crate::desktop::demo_media_settings(),
                    );
                }
                url
            }
            Err(err) => {
                eprintln!("huddle: cannot start the embedded server: {err}");
                return ExitCode::FAILURE;
            }
        },
    };
    app.add_plugins(AppModelPlugin)
        .insert_resource(runtime)
        .insert_resource(crate::desktop::demo_media_settings())
        .insert_resource(AppServer {
            url,
            ca_file: args.ca_file.clone(),
        })
        .insert_resource(AppModel {
            login_uid: args.uid.clone().unwrap_or_default(),
            login_name: args.name.clone().unwrap_or_default(),
            ..AppModel::default()
        })
        .add_systems(Startup, move |mut commands: Commands| {
            let root = spawn_call_area(&mut commands, 0.0);
            commands.insert_resource(CallUiConfig {
                target: Some(root),
                ..CallUiConfig::default()
            });
        })
        .add_systems(
            bevy_huddle_ui::bevy_egui::EguiPrimaryContextPass,
            draw::draw_app,
        );
    if let Some(path) = args.screenshot.clone() {
        let bots = usize::from(if args.server.is_some() { 0 } else { args.bots });
        app.add_systems(Last, screenshot_when_ready(path, bots));
    }
    if let Some(uid) = &args.uid {
        app.world_mut().write_message(AppCommand::LogIn {
            uid: uid.clone(),
            name: args.name.clone().unwrap_or_default(),
        });
    }
    match app.run() {
        AppExit::Success => ExitCode::SUCCESS,
        AppExit::Error(code) => ExitCode::from(code.get()),
    }
}

/// A system that saves a screenshot once logged in with `bots` contacts online (after the
/// renderer has warmed up), then quits; 60 s without that is a failure (exit code 1).
fn screenshot_when_ready(
    path: std::path::PathBuf,
    bots: usize,
) -> impl FnMut(Res<AppModel>, Res<Time<Real>>, Commands, MessageWriter<AppExit>) {
    use bevy::render::view::screenshot::{Screenshot, ScreenshotCaptured, save_to_disk};
    let mut ready_frames = 0u32;
    let mut taken = false;
    move |model, time, mut commands, mut exit| {
        if time.elapsed() > std::time::Duration::from_secs(60) && !taken {
            exit.write(AppExit::from_code(1));
            return;
        }
        let online = model.contacts.iter().filter(|c| c.online).count();
        if taken || model.me.is_none() || online < bots {
            return;
        }
        ready_frames += 1;
        if ready_frames < 90 {
            return;
        }
        taken = true;
        commands
            .spawn(Screenshot::primary_window())
            .observe(save_to_disk(path.clone()))
            .observe(
                |_: On<ScreenshotCaptured>, mut exit: MessageWriter<AppExit>| {
                    exit.write(AppExit::Success);
                },
            );
    }
}

/// The screens, drawn with egui.
mod draw {
    use bevy::prelude::*;
    use bevy_huddle::prelude::*;
    use bevy_huddle_ui::bevy_egui::{EguiContexts, egui};
    use huddle_protocol::{CallDirection, CallStatus, CallType, ReceiverType};

    use super::{AppCommand, AppModel, AppServer};

    /// Login, or home (contacts, groups, join by id, history) when no call is on.
    pub(super) fn draw_app(
        mut contexts: EguiContexts,
        mut model: ResMut<AppModel>,
        server: Res<AppServer>,
        active: Res<ActiveCall>,
        calls: Query<&CallState>,
        connections: Query<&ConnectionStatus>,
        mut out: MessageWriter<AppCommand>,
    ) -> Result {
        let in_call = active
            .0
            .and_then(|c| calls.get(c).ok())
            .is_some_and(|state| !state.is_ended());
        if in_call {
            return Ok(());
        }
        let ctx = contexts.ctx_mut()?;
        let model = &mut *model;
        if model.me.is_none() {
            let status = connections.iter().next().map(|s| format!("{s:?}"));
            egui::Window::new("Log in to Huddle")
                .collapsible(false)
                .resizable(false)
                .anchor(egui::Align2::CENTER_CENTER, egui::Vec2::ZERO)
                .show(ctx, |ui| {
                    ui.label(format!("Server: {}", server.url));
                    ui.horizontal(|ui| {
                        ui.label("User id");
                        ui.text_edit_singleline(&mut model.login_uid);
                    });
                    ui.horizontal(|ui| {
                        ui.label("Name");
                        ui.text_edit_singleline(&mut model.login_name);
                    });
                    if ui.button("Log in").clicked() {
                        out.write(AppCommand::LogIn {
                            uid: model.login_uid.clone(),
                            name: model.login_name.clone(),
                        });
                    }
                    if let Some(status) = status {
                        ui.label(status);
                    }
                    if let Some(notice) = &model.notice {
                        ui.colored_label(egui::Color32::LIGHT_RED, notice);
                    }
                });
            return Ok(());
        }
        let mut screen = egui::Ui::new(
            ctx.clone(),
            "huddle_home".into(),
            egui::UiBuilder::new()
                .layer_id(egui::LayerId::background())
                .max_rect(ctx.viewport_rect()),
        );
        egui::Panel::left("huddle_people")
            .resizable(false)
            .default_size(320.0)
            .show(&mut screen, |ui| {
                if let Some(me) = &model.me {
                    ui.heading(format!("{} ({})", me.name, me.uid));
                }
                ui.separator();
                ui.strong("Contacts");
                if model.contacts.is_empty() {
                    ui.label("nobody yet");
                }
                for contact in &model.contacts {
                    ui.horizontal(|ui| {
                        let (presence, color) = if contact.online {
                            ("online ", egui::Color32::GREEN)
                        } else {
                            ("offline", egui::Color32::GRAY)
                        };
                        ui.colored_label(color, presence);
                        ui.label(&contact.user.name);
                        call_buttons(ui, &mut out, &contact.user.uid, ReceiverType::User);
                    });
                }
                ui.separator();
                ui.strong("Groups");
                for group in &model.groups {
                    ui.horizontal(|ui| {
                        ui.label(format!("{} ({})", group.name, group.members.len()));
                        call_buttons(ui, &mut out, &group.guid, ReceiverType::Group);
                    });
                }
                ui.separator();
                ui.strong("Join a call by session id");
                ui.horizontal(|ui| {
                    ui.text_edit_singleline(&mut model.join_session);
                    if ui.button("Join").clicked() {
                        out.write(AppCommand::JoinSession(model.join_session.clone()));
                    }
                });
                if let Some(notice) = &model.notice {
                    ui.colored_label(egui::Color32::LIGHT_RED, notice);
                }
            });
        egui::CentralPanel::default_margins().show(&mut screen, |ui| {
            ui.heading("Call history");
            let before = model.filter.clone();
            ui.horizontal(|ui| {
                choice(
                    ui,
                    "Type",
                    &mut model.filter.call_type,
                    &[(CallType::Audio, "audio"), (CallType::Video, "video")],
                );
                choice(
                    ui,
                    "Status",
                    &mut model.filter.status,
                    &[
                        (CallStatus::Ended, "ended"),
                        (CallStatus::Ongoing, "ongoing"),
                        (CallStatus::Unanswered, "unanswered"),
                        (CallStatus::Rejected, "rejected"),
                        (CallStatus::Busy, "busy"),
                        (CallStatus::Cancelled, "cancelled"),
                    ],
                );
                choice(
                    ui,
                    "Direction",
                    &mut model.filter.direction,
                    &[
                        (CallDirection::Outgoing, "outgoing"),
                        (CallDirection::Incoming, "incoming"),
                    ],
                );
                if ui.button("Refresh").clicked() {
                    out.write(AppCommand::RefreshHistory);
                }
            });
            if model.filter != before {
                out.write(AppCommand::RefreshHistory);
            }
            ui.label(format!("{} calls", model.history_total));
            egui::ScrollArea::vertical().show(ui, |ui| {
                egui::Grid::new("huddle_history")
                    .striped(true)
                    .show(ui, |ui| {
                        for heading in
                            ["Type", "With", "Direction", "Status", "Duration", "Session"]
                        {
                            ui.strong(heading);
                        }
                        ui.end_row();
                        for log in &model.history {
                            ui.label(format!("{:?}", log.call_type).to_lowercase());
                            let with =
                                if model.me.as_ref().is_some_and(|me| me.uid == log.initiator) {
                                    log.receiver.clone()
                                } else {
                                    log.initiator.clone()
                                };
                            ui.label(with);
                            ui.label(
                                log.direction
                                    .map_or("", |d| match d {
                                        CallDirection::Outgoing => "outgoing",
                                        CallDirection::Incoming => "incoming",
                                    })
                                    .to_owned(),
                            );
                            ui.label(format!("{:?}", log.status).to_lowercase());
                            ui.label(format!("{} s", log.duration_secs));
                            ui.label(&log.session_id);
                            ui.end_row();
                        }
                    });
            });
        });
        Ok(())
    }

    fn call_buttons(
        ui: &mut egui::Ui,
        out: &mut MessageWriter<AppCommand>,
        receiver_id: &str,
        receiver_type: ReceiverType,
    ) {
        for (label, call_type) in [("Audio", CallType::Audio), ("Video", CallType::Video)] {
            if ui.small_button(label).clicked() {
                out.write(AppCommand::Call {
                    receiver_id: receiver_id.to_owned(),
                    receiver_type,
                    call_type,
                });
            }
        }
    }

    /// A combo box of `options` plus "all" (`None`).
    fn choice<T: Copy + PartialEq>(
        ui: &mut egui::Ui,
        label: &str,
        value: &mut Option<T>,
        options: &[(T, &str)],
    ) {
        let shown = options
            .iter()
            .find(|(v, _)| Some(*v) == *value)
            .map_or("all", |(_, name)| *name);
        ui.label(label);
        egui::ComboBox::from_id_salt(label)
            .selected_text(shown)
            .show_ui(ui, |ui| {
                ui.selectable_value(value, None, "all");
                for (option, name) in options {
                    ui.selectable_value(value, Some(*option), *name);
                }
            });
    }
}
