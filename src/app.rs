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
use crate::embedded::{
    BotJoin, EmbeddedServerOptions, embedded_database, spawn_bot, start_embedded_server_with,
};

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
    /// Where the embedded server listens: others on your network can log in to it at
    /// `ws://ADDR/ws` when it is not loopback.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    pub listen: std::net::SocketAddr,
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
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
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
    /// The display name of a uid or guid (ourselves, a contact or a group), or the id itself.
    pub fn display_name<'a>(&'a self, id: &'a str) -> &'a str {
        if let Some(me) = self.me.as_ref().filter(|me| me.uid == id) {
            return &me.name;
        }
        if let Some(contact) = self.contacts.iter().find(|c| c.user.uid == id) {
            return &contact.user.name;
        }
        if let Some(group) = self.groups.iter().find(|g| g.guid == id) {
            return &group.name;
        }
        id
    }

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
    connections: Query<Entity, With<ServerConnection>>,
    mut ringing: MessageWriter<RingingAction>,
    mut commands: Commands,
) {
    for command in commands_in.read() {
        match command {
            AppCommand::LogIn { uid, name } => {
                let uid = uid.trim();
                if uid.is_empty() {
                    model.notice = Some("enter a user id to log in".into());
                } else if model.me.is_none() {
                    // A refused or failed attempt leaves its connection offline: a new attempt
                    // replaces it.
                    for refused in &connections {
                        commands.entity(refused).despawn();
                    }
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
            // A call that ended before anyone joined is in the history already.
            RingingEvent::OutgoingCallRejected { .. }
            | RingingEvent::CallRejected { .. }
            | RingingEvent::IncomingCallCancelled { .. } => {
                app_commands.write(AppCommand::RefreshHistory);
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

/// "No calls", "1 call", "12 calls".
pub fn calls_count(total: u64) -> String {
    match total {
        0 => "No calls".to_owned(),
        1 => "1 call".to_owned(),
        n => format!("{n} calls"),
    }
}

/// A history entry's second line: type, direction and how it went, e.g. "Video call ·
/// outgoing · 2 min 5 s", "Audio call · incoming · missed", "Group video call · ongoing".
pub fn history_line(log: &CallLog) -> String {
    let group = if log.receiver_type == ReceiverType::Group {
        "Group "
    } else {
        ""
    };
    let kind = match (log.call_type, group.is_empty()) {
        (CallType::Audio, true) => "Audio call",
        (CallType::Video, true) => "Video call",
        (CallType::Audio, false) => "audio call",
        (CallType::Video, false) => "video call",
    };
    let direction = match log.direction {
        Some(CallDirection::Outgoing) => " · outgoing",
        Some(CallDirection::Incoming) => " · incoming",
        None => "",
    };
    let incoming = log.direction == Some(CallDirection::Incoming);
    let outcome = match log.status {
        CallStatus::Ended => duration_words(log.duration_secs),
        CallStatus::Ongoing => "ongoing".to_owned(),
        CallStatus::Unanswered if incoming => "missed".to_owned(),
        CallStatus::Unanswered => "no answer".to_owned(),
        CallStatus::Rejected => "declined".to_owned(),
        CallStatus::Busy => "busy".to_owned(),
        CallStatus::Cancelled => "cancelled".to_owned(),
        other => format!("{other:?}").to_lowercase(),
    };
    format!("{group}{kind}{direction} · {outcome}")
}

/// "45 s", "2 min 5 s", "1 h 3 min".
fn duration_words(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s} s"),
        s if s < 3600 => format!("{} min {} s", s / 60, s % 60),
        s => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

/// When a call was placed, in the local time zone: "14:05" today, "Yesterday 09:30", "Mon
/// 18:00" within the week, "3 Nov 2026 18:00" before that.
pub fn when(ms_since_epoch: u64, now: chrono::DateTime<chrono::Local>) -> String {
    use chrono::TimeZone;
    let Some(at) = chrono::Local
        .timestamp_millis_opt(i64::try_from(ms_since_epoch).unwrap_or(i64::MAX))
        .single()
    else {
        return String::new();
    };
    let days = (now.date_naive() - at.date_naive()).num_days();
    match days {
        0 => at.format("%H:%M").to_string(),
        1 => at.format("Yesterday %H:%M").to_string(),
        2..=6 => at.format("%a %H:%M").to_string(),
        _ => at.format("%-d %b %Y %H:%M").to_string(),
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
        None => match start_embedded_server_with(
            &runtime,
            Vec::new(),
            EmbeddedServerOptions {
                lobby: Some(LOBBY.into()),
                db: embedded_database(),
                listen: args.listen,
            },
        ) {
            Ok(url) => {
                if let Some(web) = crate::embedded::web_client_url(&url) {
                    println!(
                        "huddle: web client at {web} (a browser on this machine can call you)"
                    );
                }
                for i in 1..=args.bots {
                    spawn_bot(
                        runtime.clone(),
                        url.clone(),
                        format!("bot-{i}"),
                        format!("Bot {i}"),
                        BotJoin::AnswerCalls,
                        bevy_huddle::media::MediaSettings {
                            // The user without a microphone takes the last turn.
                            talk_pattern: Some(crate::desktop::taking_turns(
                                usize::from(i - 1),
                                usize::from(args.bots) + 1,
                            )),
                            ..crate::desktop::demo_media_settings()
                        },
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
        .insert_resource(bevy_huddle::media::MediaSettings {
            // Without a microphone the user's synthetic voice takes its turn after the bots,
            // instead of a tone that never stops (their own tile would always show speaking).
            talk_pattern: Some(crate::desktop::taking_turns(
                usize::from(args.bots),
                usize::from(args.bots) + 1,
            )),
            ..crate::desktop::demo_media_settings()
        })
        .insert_resource(AppServer {
            url,
            ca_file: args.ca_file.clone(),
        })
        .insert_resource(AppModel {
            login_uid: args.uid.clone().unwrap_or_default(),
            login_name: args.name.clone().unwrap_or_default(),
            ..AppModel::default()
        })
        // Names on tiles in any script: the system's sans-serif and its fallbacks.
        .insert_resource(TileTextFont(FontSource::SansSerif))
        .add_systems(Startup, move |mut commands: Commands| {
            let root = spawn_call_area(&mut commands, 0.0, bevy_huddle_ui::CALL_BAR_HEIGHT);
            commands.insert_resource(CallUiConfig {
                target: Some(root),
                ..CallUiConfig::default()
            });
        })
        .add_systems(
            bevy_huddle_ui::bevy_egui::EguiPrimaryContextPass,
            draw::draw_app.before(bevy_huddle_ui::CallUiDraw),
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

/// The screens, drawn with egui: the login card, and home (contacts and groups with avatars,
/// presence dots and call buttons; join by session id; the call history as a list). Named
/// widgets go in the [`UiMap`](bevy_huddle_ui::look::UiMap) a journey test clicks on.
mod draw {
    use bevy::prelude::*;
    use bevy_huddle::prelude::*;
    use bevy_huddle_ui::RingingScreens;
    use bevy_huddle_ui::bevy_egui::{EguiContexts, egui};
    use bevy_huddle_ui::look::{self, UiMap};
    use huddle_protocol::{CallDirection, CallLog, CallStatus, CallType, ReceiverType};

    use super::{AppCommand, AppModel, AppServer};

    /// What the login card says about the connection, and its colour (`None` once online).
    fn connection_line(status: &ConnectionStatus) -> Option<(String, egui::Color32)> {
        match status {
            ConnectionStatus::Connecting => Some(("Connecting…".into(), egui::Color32::GRAY)),
            ConnectionStatus::Reconnecting { .. } => {
                Some(("Connection lost, reconnecting…".into(), egui::Color32::GRAY))
            }
            ConnectionStatus::Offline { error } => Some((
                format!("Could not log in: {error}"),
                egui::Color32::LIGHT_RED,
            )),
            ConnectionStatus::Online { .. } => None,
        }
    }

    /// Login, or home (contacts, groups, join by id, history) when no call is on.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn draw_app(
        mut contexts: EguiContexts,
        mut model: ResMut<AppModel>,
        server: Res<AppServer>,
        active: Res<ActiveCall>,
        calls: Query<&CallState>,
        connections: Query<&ConnectionStatus>,
        mut screens: ResMut<RingingScreens>,
        mut map: ResMut<UiMap>,
        mut out: MessageWriter<AppCommand>,
    ) -> Result {
        let in_call = active
            .0
            .and_then(|c| calls.get(c).ok())
            .is_some_and(|state| !state.is_ended());
        if in_call || screens.is_joining() {
            return Ok(());
        }
        let ctx = contexts.ctx_mut()?;
        let model = &mut *model;
        if model.me.is_none() {
            let status = connections.iter().next().and_then(connection_line);
            draw_login(ctx, model, &server, status, &mut map, &mut out);
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
            .default_size(340.0)
            .show(&mut screen, |ui| {
                draw_people(ui, model, &mut map, &mut out, &mut screens);
            });
        egui::CentralPanel::default_margins()
            .show(&mut screen, |ui| draw_history(ui, model, &mut out));
        Ok(())
    }

    fn draw_login(
        ctx: &egui::Context,
        model: &mut AppModel,
        server: &AppServer,
        status: Option<(String, egui::Color32)>,
        map: &mut UiMap,
        out: &mut MessageWriter<AppCommand>,
    ) {
        egui::Window::new("Log in to Huddle")
            .collapsible(false)
            .resizable(false)
            .anchor(egui::Align2::CENTER_CENTER, egui::Vec2::ZERO)
            .show(ctx, |ui| {
                ui.set_min_width(320.0);
                ui.small(format!("Server: {}", server.url));
                ui.add_space(6.0);
                let grid = egui::Grid::new("huddle_login")
                    .num_columns(2)
                    .show(ui, |ui| {
                        ui.label("User id");
                        let uid = ui.add(
                            egui::TextEdit::singleline(&mut model.login_uid).hint_text("e.g. ada"),
                        );
                        map.note_response("login.uid", &uid);
                        if uid.has_focus() {
                            map.note_response("login.uid.focused", &uid);
                        }
                        ui.end_row();
                        ui.label("Name");
                        let name = ui.add(
                            egui::TextEdit::singleline(&mut model.login_name)
                                .hint_text("shown to others"),
                        );
                        map.note_response("login.name", &name);
                        if name.has_focus() {
                            map.note_response("login.name.focused", &name);
                        }
                        ui.end_row();
                        (uid, name)
                    });
                let (uid, name) = grid.inner;
                let entered = (uid.lost_focus() || name.lost_focus())
                    && ui.input(|i| i.key_pressed(egui::Key::Enter));
                ui.add_space(6.0);
                let button = ui.add_sized(
                    [ui.available_width(), 34.0],
                    egui::Button::new(egui::RichText::new("Log in").color(egui::Color32::WHITE))
                        .fill(look::GREEN),
                );
                map.note_response("login.submit", &button);
                if button.clicked() || entered {
                    out.write(AppCommand::LogIn {
                        uid: model.login_uid.clone(),
                        name: model.login_name.clone(),
                    });
                }
                // One line: the connection's own words, or the screen's notice.
                let problem = match status {
                    Some((line, color)) => {
                        let refused = color == egui::Color32::LIGHT_RED;
                        let label = ui.colored_label(color, line);
                        refused.then_some(label)
                    }
                    None => model
                        .notice
                        .as_ref()
                        .map(|notice| ui.colored_label(egui::Color32::LIGHT_RED, notice)),
                };
                if let Some(problem) = problem {
                    map.note_response("login.problem", &problem);
                }
            });
    }

    fn draw_people(
        ui: &mut egui::Ui,
        model: &mut AppModel,
        map: &mut UiMap,
        out: &mut MessageWriter<AppCommand>,
        screens: &mut RingingScreens,
    ) {
        if let Some(me) = &model.me {
            ui.add_space(6.0);
            ui.horizontal(|ui| {
                look::avatar(ui, &me.name, &me.uid, 40.0, Some(true));
                ui.vertical(|ui| {
                    ui.heading(&me.name);
                    ui.small(format!("@{}", me.uid));
                });
            });
        }
        ui.separator();
        ui.strong("Contacts");
        if model.contacts.is_empty() {
            ui.weak("Nobody else is here yet");
        }
        for contact in &model.contacts {
            ui.horizontal(|ui| {
                let user = &contact.user;
                look::avatar(ui, &user.name, &user.uid, 32.0, Some(contact.online));
                ui.vertical(|ui| {
                    ui.label(&user.name);
                    ui.small(if contact.online { "online" } else { "offline" });
                });
                call_buttons(ui, map, out, screens, &user.uid, ReceiverType::User);
            });
        }
        ui.separator();
        ui.strong("Groups");
        for group in &model.groups {
            ui.horizontal(|ui| {
                look::avatar(ui, &group.name, &group.guid, 32.0, None);
                ui.vertical(|ui| {
                    ui.label(&group.name);
                    let members = group.members.len();
                    ui.small(format!(
                        "{members} member{}",
                        if members == 1 { "" } else { "s" }
                    ));
                });
                call_buttons(ui, map, out, screens, &group.guid, ReceiverType::Group);
            });
        }
        ui.separator();
        ui.strong("Join a call by session id");
        ui.horizontal(|ui| {
            let field = ui.add(
                egui::TextEdit::singleline(&mut model.join_session)
                    .hint_text("session id")
                    .desired_width(200.0),
            );
            let entered = field.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
            if ui.button("Join").clicked() || entered {
                out.write(AppCommand::JoinSession(model.join_session.clone()));
            }
        });
        if let Some(notice) = &model.notice {
            ui.colored_label(egui::Color32::LIGHT_RED, notice);
        }
    }

    /// The audio and video call buttons of a contact or group, right-aligned. A click shows
    /// "Calling…" in the same frame (the call UI draws after this) and asks for the call.
    fn call_buttons(
        ui: &mut egui::Ui,
        map: &mut UiMap,
        out: &mut MessageWriter<AppCommand>,
        screens: &mut RingingScreens,
        receiver_id: &str,
        receiver_type: ReceiverType,
    ) {
        ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
            for (icon, what, call_type) in [
                ("📹", "Video call", CallType::Video),
                ("📞", "Audio call", CallType::Audio),
            ] {
                let button = ui
                    .add_sized([34.0, 30.0], egui::Button::new(icon))
                    .on_hover_text(what);
                let kind = if call_type == CallType::Audio {
                    "audio"
                } else {
                    "video"
                };
                map.note_response(format!("call.{kind}.{receiver_id}"), &button);
                if button.clicked() {
                    screens.placing = Some(bevy_huddle_ui::PlacingCall {
                        receiver_id: receiver_id.to_owned(),
                        receiver_type,
                        call_type,
                    });
                    out.write(AppCommand::Call {
                        receiver_id: receiver_id.to_owned(),
                        receiver_type,
                        call_type,
                    });
                }
            }
        });
    }

    fn draw_history(ui: &mut egui::Ui, model: &mut AppModel, out: &mut MessageWriter<AppCommand>) {
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
            if ui.button("⟳ Refresh").clicked() {
                out.write(AppCommand::RefreshHistory);
            }
        });
        if model.filter != before {
            out.write(AppCommand::RefreshHistory);
        }
        ui.weak(super::calls_count(model.history_total));
        ui.separator();
        let now = chrono::Local::now();
        egui::ScrollArea::vertical().show(ui, |ui| {
            if model.history.is_empty() {
                ui.weak("No calls yet");
            }
            for log in &model.history {
                ui.horizontal(|ui| {
                    let other = other_party(model, log);
                    let with = model.display_name(other);
                    look::avatar(ui, with, other, 30.0, None);
                    ui.vertical(|ui| {
                        // Calls that did not happen (missed, declined, …) in red.
                        let status_color = match log.status {
                            CallStatus::Ended | CallStatus::Ongoing => ui.visuals().text_color(),
                            _ => egui::Color32::LIGHT_RED,
                        };
                        ui.colored_label(status_color, egui::RichText::new(with).strong());
                        ui.small(super::history_line(log));
                    });
                    ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                        ui.label(super::when(log.initiated_at, now));
                    });
                });
                ui.separator();
            }
        });
    }

    /// The uid or guid on the other side of a call.
    fn other_party<'a>(model: &AppModel, log: &'a CallLog) -> &'a str {
        let mine = model.me.as_ref().is_some_and(|me| me.uid == log.initiator);
        if mine || log.receiver_type == ReceiverType::Group {
            &log.receiver
        } else {
            &log.initiator
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
