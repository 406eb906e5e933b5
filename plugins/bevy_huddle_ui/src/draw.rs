//! Drawing with bevy_egui: the bar, the ringing and status cards, toasts, the participants
//! and devices windows. Every widget writes the same [`CallAction`]s and [`RingingChoice`]s
//! the headless tests use.
//!
//! - The **bar** sits at the bottom, in the [`CALL_BAR_HEIGHT`] strip an app leaves free under
//!   the call (so it covers no tile). Its buttons have fixed sizes (a label changing from
//!   "Mute" to "Unmute" moves nothing), an icon, a tooltip naming the shortcut, and Leave is
//!   red.
//! - **Cards** in the middle: placing and ringing out ("Calling Bob…", with the avatar,
//!   from the click on), ringing in (avatar, Accept / Decline / Busy), "Joining the call…"
//!   until the session is joined, "Waiting for others to join" while alone in it, and "Press
//!   Esc again to leave".
//! - **Toasts** above the bar; **Participants** at the top right and **Devices** at the top
//!   left, so neither covers the other.

use bevy::prelude::*;
use bevy_egui::{EguiContexts, EguiPlugin, EguiPrimaryContextPass, egui};
use bevy_huddle::call::actions::AvailableAudioModes;
use bevy_huddle::call::model::ParticipantRoutes;
use bevy_huddle::prelude::*;
use huddle_protocol::{CallType, ReceiverType};

use crate::bar::{BarState, CallButton, bar_buttons};
use crate::look::{self, UiMap};
use crate::ringing::{RingingChoice, RingingScreens, is_audio_call};
use crate::shortcuts::{CallShortcuts, LeaveConfirmation};

/// Height of the strip at the bottom of the window the bar is drawn in (logical pixels); an
/// app lays its call out above it.
pub const CALL_BAR_HEIGHT: f32 = 76.0;

/// Size of each bar button.
const BAR_BUTTON: egui::Vec2 = egui::vec2(86.0, 50.0);

/// The call UI's egui drawing (in `EguiPrimaryContextPass`): an app that draws screens of its
/// own before it (`.before(CallUiDraw)`) has its clicks' cards shown in the same frame.
#[derive(SystemSet, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CallUiDraw;

pub(crate) fn build(app: &mut App) {
    if !app.is_plugin_added::<EguiPlugin>() {
        app.add_plugins(EguiPlugin::default());
    }
    app.insert_resource(UiMap::from_env())
        .add_systems(
            EguiPrimaryContextPass,
            (
                crate::fonts::install_fallback_fonts,
                look::style_once,
                draw_ringing,
                draw_call_status,
                draw_call_controls,
                note_typing,
            )
                .chain()
                .in_set(CallUiDraw),
        )
        .add_systems(
            Last,
            (look::note_tiles, look::write_ui_map)
                .chain()
                .run_if(look::recording),
        );
}

/// Shortcuts pause while an egui text field has the keyboard.
fn note_typing(mut contexts: EguiContexts, mut shortcuts: ResMut<CallShortcuts>) -> Result {
    let typing = contexts.ctx_mut()?.egui_wants_keyboard_input();
    if shortcuts.typing != typing {
        shortcuts.typing = typing;
    }
    Ok(())
}

/// A centred card with an avatar, a title and a line under it; `buttons` adds the row below.
fn card(
    ctx: &egui::Context,
    id: &str,
    avatar: Option<(&str, &str)>,
    title: &str,
    line: &str,
    buttons: impl FnOnce(&mut egui::Ui),
) {
    egui::Area::new(egui::Id::new(id))
        // Shown at once, not faded in over the next frames.
        .fade_in(false)
        .anchor(
            egui::Align2::CENTER_CENTER,
            egui::vec2(0.0, -CALL_BAR_HEIGHT / 2.0),
        )
        .show(ctx, |ui| {
            egui::Frame::window(ui.style())
                .fill(look::CARD)
                .inner_margin(egui::Margin::same(24))
                .show(ui, |ui| {
                    ui.set_min_width(280.0);
                    ui.vertical_centered(|ui| {
                        if let Some((name, id)) = avatar {
                            look::avatar(ui, name, id, 72.0, None);
                            ui.add_space(8.0);
                        }
                        ui.heading(title);
                        if !line.is_empty() {
                            ui.label(line);
                        }
                        ui.add_space(8.0);
                        buttons(ui);
                    });
                });
        });
}

/// A filled button of `color` with white text.
fn colored_button(ui: &mut egui::Ui, text: &str, color: egui::Color32) -> egui::Response {
    ui.add(
        egui::Button::new(egui::RichText::new(text).color(egui::Color32::WHITE))
            .fill(color)
            .min_size(egui::vec2(96.0, 34.0)),
    )
}

fn call_kind(call_type: CallType) -> &'static str {
    match call_type {
        CallType::Audio => "Audio call",
        CallType::Video => "Video call",
    }
}

fn draw_ringing(
    mut contexts: EguiContexts,
    screens: Res<RingingScreens>,
    mut map: ResMut<UiMap>,
    mut choices: MessageWriter<RingingChoice>,
) -> Result {
    let ctx = contexts.ctx_mut()?;
    if let Some(call) = &screens.incoming {
        let kind = if is_audio_call(call) {
            "Incoming audio call"
        } else {
            "Incoming video call"
        };
        let who = &call.initiator;
        card(
            ctx,
            "huddle_incoming",
            Some((&who.name, &who.uid)),
            &who.name,
            kind,
            |ui| {
                ui.horizontal(|ui| {
                    let id = call.session_id.clone();
                    let accept = colored_button(ui, "Accept", look::GREEN);
                    map.note_response("incoming.accept", &accept);
                    if accept.clicked() {
                        choices.write(RingingChoice::Accept(id.clone()));
                    }
                    let decline = colored_button(ui, "Decline", look::RED);
                    map.note_response("incoming.decline", &decline);
                    if decline.clicked() {
                        choices.write(RingingChoice::Reject(id.clone()));
                    }
                    if ui.button("Busy").clicked() {
                        choices.write(RingingChoice::Busy(id));
                    }
                });
            },
        );
    }
    // Calling: from the click (placing) until the callee answers (outgoing).
    let calling = match (&screens.outgoing, &screens.placing) {
        (Some(call), _) => Some((
            call.receiver.as_str(),
            call.receiver_type,
            call.call_type,
            Some(&call.session_id),
        )),
        (None, Some(placing)) => Some((
            placing.receiver_id.as_str(),
            placing.receiver_type,
            placing.call_type,
            None,
        )),
        (None, None) => None,
    };
    if let Some((receiver, receiver_type, call_type, session)) = calling {
        let name = screens.display_name(receiver);
        let title = format!("Calling {name}…");
        let line = if receiver_type == ReceiverType::Group {
            format!("Group {}", call_kind(call_type).to_lowercase())
        } else {
            call_kind(call_type).to_owned()
        };
        card(
            ctx,
            "huddle_calling",
            Some((name, receiver)),
            &title,
            &line,
            |ui| {
                // Enabled once the server has placed the call (a session to cancel).
                let cancel = ui
                    .add_enabled_ui(session.is_some(), |ui| {
                        colored_button(ui, "Cancel", look::RED)
                    })
                    .inner;
                map.note_response("calling.cancel", &cancel);
                if cancel.clicked()
                    && let Some(session) = session
                {
                    choices.write(RingingChoice::Cancel(session.clone()));
                }
            },
        );
        let rect = ctx.viewport_rect();
        map.note("calling", rect, ctx.pixels_per_point());
    }
    for (index, toast) in screens.toasts.iter().enumerate() {
        egui::Area::new(egui::Id::new(("huddle_toast", index)))
            .anchor(
                egui::Align2::CENTER_BOTTOM,
                egui::vec2(0.0, -(CALL_BAR_HEIGHT + 8.0 + 36.0 * index as f32)),
            )
            .show(ctx, |ui| {
                egui::Frame::popup(ui.style()).show(ui, |ui| ui.label(&toast.text));
            });
    }
    Ok(())
}

/// "Joining the call…", "Waiting for others to join" and the Esc confirmation.
fn draw_call_status(
    mut contexts: EguiContexts,
    screens: Res<RingingScreens>,
    active: Res<ActiveCall>,
    calls: Query<(&Call, &CallState, &CallParticipants)>,
    confirmation: Res<LeaveConfirmation>,
    mut map: ResMut<UiMap>,
) -> Result {
    let ctx = contexts.ctx_mut()?;
    let call = active.0.and_then(|c| calls.get(c).ok());
    let joining = screens.is_joining()
        || call.is_some_and(|(_, state, _)| matches!(state, CallState::Joining));
    let alone = call.is_some_and(|(call, state, members)| {
        *state == CallState::InCall && call.settings.default_layout && members.len() <= 1
    });
    let status = if joining && screens.outgoing.is_none() && screens.placing.is_none() {
        Some(("Joining the call…", "status.joining"))
    } else if alone {
        Some(("Waiting for others to join", "status.waiting"))
    } else {
        None
    };
    if let Some((text, name)) = status {
        let area = egui::Area::new(egui::Id::new("huddle_call_status"))
            .fade_in(false)
            .anchor(egui::Align2::CENTER_TOP, egui::vec2(0.0, 24.0))
            .show(ctx, |ui| {
                egui::Frame::popup(ui.style())
                    .fill(look::CARD)
                    .inner_margin(egui::Margin::symmetric(18, 10))
                    .show(ui, |ui| ui.heading(text));
            });
        map.note_response(name, &area.response);
    }
    if confirmation.armed_until.is_some() {
        let area = egui::Area::new(egui::Id::new("huddle_leave_confirm"))
            .fade_in(false)
            .anchor(
                egui::Align2::CENTER_BOTTOM,
                egui::vec2(0.0, -(CALL_BAR_HEIGHT + 8.0)),
            )
            .show(ctx, |ui| {
                egui::Frame::popup(ui.style())
                    .fill(look::RED)
                    .show(ui, |ui| {
                        ui.colored_label(egui::Color32::WHITE, "Press Esc again to leave")
                    });
            });
        map.note_response("status.leave_confirm", &area.response);
    }
    Ok(())
}

/// The icon of a bar button (egui's emoji font).
fn icon(button: CallButton, state: &BarState) -> &'static str {
    match button {
        CallButton::Mute if state.audio_muted => "🔇",
        CallButton::Mute => "🎤",
        CallButton::PauseVideo if state.video_paused => "🚫",
        CallButton::PauseVideo => "📹",
        CallButton::SwitchCamera => "🔄",
        CallButton::AudioMode => "🔊",
        CallButton::Mode => "▦",
        CallButton::SwitchToVideo => "📹",
        CallButton::Record => "⏺",
        CallButton::ScreenShare => "🖵",
        CallButton::RaiseHand => "✋",
        CallButton::Pip => "🗗",
        CallButton::EndCall => "📞",
    }
}

/// What a bar button's tooltip says, naming its shortcut.
fn tooltip(button: CallButton, state: &BarState, shortcuts: &CallShortcuts) -> String {
    let key = |key: KeyCode| {
        format!("{key:?}")
            .trim_start_matches("Key")
            .replace("Escape", "Esc twice")
    };
    let label = button.label(state);
    match button {
        CallButton::Mute => format!("{label} the microphone ({})", key(shortcuts.mute)),
        CallButton::PauseVideo => format!("{label} ({})", key(shortcuts.video)),
        CallButton::RaiseHand => format!("{label} ({})", key(shortcuts.hand)),
        CallButton::EndCall => format!("Leave the call ({})", key(shortcuts.leave)),
        CallButton::Mode => "Layout: grid, spotlight or single".to_owned(),
        CallButton::Pip => "Picture in picture".to_owned(),
        _ => label.to_owned(),
    }
}

#[allow(clippy::too_many_arguments)]
fn draw_call_controls(
    mut contexts: EguiContexts,
    active: Res<ActiveCall>,
    calls: Query<(
        &Call,
        &CallState,
        &CallMedia,
        &CallLayout,
        &CallParticipants,
    )>,
    participants: Query<(
        &Participant,
        &ParticipantState,
        Has<LocalParticipant>,
        Option<&ParticipantRoutes>,
    )>,
    routes: Query<&AudioRoute>,
    audio_modes: Option<Res<AvailableAudioModes>>,
    devices: Option<Res<MediaDevices>>,
    shortcuts: Res<CallShortcuts>,
    mut map: ResMut<UiMap>,
    mut actions: MessageWriter<CallAction>,
) -> Result {
    let Some((call, state, media, layout, members)) = active.0.and_then(|c| calls.get(c).ok())
    else {
        return Ok(());
    };
    if !matches!(state, CallState::InCall) || !call.settings.default_layout {
        return Ok(());
    }
    let ctx = contexts.ctx_mut()?;
    let local = members
        .iter()
        .filter_map(|p| participants.get(p).ok())
        .find(|(_, _, is_local, _)| *is_local)
        .map(|(_, state, ..)| state);
    let bar = BarState::of(media, layout, local);
    let bar_area = egui::Area::new(egui::Id::new("huddle_call_bar"))
        .anchor(egui::Align2::CENTER_BOTTOM, egui::vec2(0.0, -8.0));
    let shown = bar_area.show(ctx, |ui| {
        egui::Frame::popup(ui.style())
            .fill(look::CARD)
            .inner_margin(egui::Margin::same(6))
            .show(ui, |ui| {
                ui.horizontal(|ui| {
                    for button in bar_buttons(&call.settings, &bar) {
                        let text = format!("{}\n{}", icon(button, &bar), button.label(&bar));
                        let mut widget = egui::Button::new(
                            egui::RichText::new(text)
                                .size(13.0)
                                .color(egui::Color32::WHITE),
                        );
                        if button == CallButton::EndCall {
                            widget = widget.fill(look::RED);
                        } else if (button == CallButton::Mute && bar.audio_muted)
                            || (button == CallButton::PauseVideo && bar.video_paused)
                        {
                            widget = widget.fill(egui::Color32::from_rgb(120, 40, 40));
                        }
                        if button == CallButton::AudioMode {
                            let response = ui
                                .add_sized(BAR_BUTTON, widget)
                                .on_hover_text(tooltip(button, &bar, &shortcuts));
                            map.note_response(format!("bar.{button:?}"), &response);
                            egui::Popup::menu(&response).show(|ui| {
                                for mode in audio_modes.iter().flat_map(|m| m.0.iter()) {
                                    let label = format!("{mode:?}");
                                    if ui
                                        .selectable_label(*mode == media.audio_mode, label)
                                        .clicked()
                                    {
                                        actions.write(CallAction::SetAudioMode(*mode));
                                    }
                                }
                            });
                            continue;
                        }
                        let response = ui
                            .add_sized(BAR_BUTTON, widget)
                            .on_hover_text(tooltip(button, &bar, &shortcuts));
                        map.note_response(format!("bar.{button:?}"), &response);
                        if response.clicked()
                            && let Some(action) = button.action(&bar)
                        {
                            actions.write(action);
                        }
                    }
                    if bar.recording {
                        ui.colored_label(look::RED, "● REC");
                    }
                });
            });
    });
    map.note_response("bar", &shown.response);
    if let Some(devices) = devices {
        let window = egui::Window::new("Devices")
            .anchor(egui::Align2::LEFT_TOP, egui::vec2(8.0, 8.0))
            .default_open(false)
            .resizable(false)
            .show(ctx, |ui| {
                for picker in crate::devices::device_pickers(&devices) {
                    let current = picker
                        .options
                        .iter()
                        .find(|o| o.selected)
                        .map_or("none", |o| o.label.as_str())
                        .to_owned();
                    let combo = egui::ComboBox::from_label(picker.title)
                        .selected_text(current)
                        .show_ui(ui, |ui| {
                            for option in &picker.options {
                                if ui
                                    .selectable_label(option.selected, &option.label)
                                    .clicked()
                                    && !option.selected
                                {
                                    actions.write(crate::devices::choose_device(
                                        picker.kind,
                                        &option.id,
                                    ));
                                }
                            }
                        });
                    let name = format!("devices.{:?}", picker.kind);
                    map.note_response(name.clone(), &combo.response);
                    if combo.inner.is_some() {
                        map.note_response(format!("{name}.open"), &combo.response);
                    }
                }
            });
        if let Some(window) = window {
            map.note_response("window.devices", &window.response);
        }
    }
    let window = egui::Window::new(format!("Participants ({})", members.len()))
        .id(egui::Id::new("huddle_participants"))
        .anchor(egui::Align2::RIGHT_TOP, egui::vec2(-8.0, 8.0))
        .default_open(false)
        .resizable(false)
        .show(ctx, |ui| {
            for entity in members.iter() {
                let Ok((participant, pstate, is_local, proutes)) = participants.get(entity) else {
                    continue;
                };
                ui.separator();
                ui.horizontal(|ui| {
                    look::avatar(ui, &participant.name, &participant.uid, 28.0, None);
                    let you = if is_local { " (you)" } else { "" };
                    ui.strong(format!("{}{you}", participant.name));
                    for (on, mark, hint) in [
                        (pstate.audio_muted, "🔇", "muted"),
                        (pstate.video_paused, "🚫", "video off"),
                        (pstate.speaking, "🔊", "speaking"),
                        (pstate.hand_raised, "✋", "hand raised"),
                    ] {
                        if on {
                            ui.label(mark).on_hover_text(hint);
                        }
                    }
                });
                if is_local {
                    continue;
                }
                if let Some(path) = &pstate.media_path {
                    ui.small(format!("media: {path}"));
                }
                let route = proutes
                    .and_then(|r| r.iter().next())
                    .and_then(|r| routes.get(r).ok());
                ui.horizontal(|ui| {
                    if let Some(route) = route {
                        let mut volume = route.volume;
                        if ui
                            .add(egui::Slider::new(&mut volume, 0.0..=1.0).show_value(false))
                            .changed()
                        {
                            actions.write(CallAction::SetParticipantVolume {
                                uid: participant.uid.clone(),
                                volume,
                            });
                        }
                        let mute_label = if route.local_mute { "Unmute" } else { "Mute" };
                        if ui.small_button(mute_label).clicked() {
                            actions.write(CallAction::SetParticipantLocalMute {
                                uid: participant.uid.clone(),
                                muted: !route.local_mute,
                            });
                        }
                    }
                    let pinned = layout.pinned == Some(entity);
                    if ui
                        .small_button(if pinned { "Unpin" } else { "Pin" })
                        .clicked()
                    {
                        actions.write(if pinned {
                            CallAction::Unpin
                        } else {
                            CallAction::Pin(participant.uid.clone())
                        });
                    }
                });
            }
        });
    if let Some(window) = window {
        map.note_response("window.participants", &window.response);
    }
    Ok(())
}
