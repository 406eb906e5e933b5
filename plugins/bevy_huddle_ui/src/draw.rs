//! Drawing with bevy_egui: the bar, the ringing dialogs, toasts and the participants panel.
//! Every widget writes the same [`CallAction`]s and [`RingingChoice`]s the headless tests use.

use bevy::prelude::*;
use bevy_egui::{EguiContexts, EguiPlugin, EguiPrimaryContextPass, egui};
use bevy_huddle::call::actions::AvailableAudioModes;
use bevy_huddle::call::model::ParticipantRoutes;
use bevy_huddle::prelude::*;

use crate::bar::{BarState, CallButton, bar_buttons};
use crate::ringing::{RingingChoice, RingingScreens, is_audio_call};

pub(crate) fn build(app: &mut App) {
    if !app.is_plugin_added::<EguiPlugin>() {
        app.add_plugins(EguiPlugin::default());
    }
    app.add_systems(
        EguiPrimaryContextPass,
        (draw_ringing, draw_call_controls, note_typing).chain(),
    );
}

/// Shortcuts pause while an egui text field has the keyboard.
fn note_typing(mut contexts: EguiContexts, mut shortcuts: ResMut<crate::CallShortcuts>) -> Result {
    let typing = contexts.ctx_mut()?.egui_wants_keyboard_input();
    if shortcuts.typing != typing {
        shortcuts.typing = typing;
    }
    Ok(())
}

fn draw_ringing(
    mut contexts: EguiContexts,
    screens: Res<RingingScreens>,
    mut choices: MessageWriter<RingingChoice>,
) -> Result {
    let ctx = contexts.ctx_mut()?;
    if let Some(call) = &screens.incoming {
        let kind = if is_audio_call(call) {
            "Audio"
        } else {
            "Video"
        };
        egui::Window::new("Incoming call")
            .collapsible(false)
            .resizable(false)
            .anchor(egui::Align2::CENTER_CENTER, egui::Vec2::ZERO)
            .show(ctx, |ui| {
                ui.heading(&call.initiator.name);
                ui.label(format!("{kind} call"));
                ui.horizontal(|ui| {
                    let id = call.session_id.clone();
                    if ui.button("Accept").clicked() {
                        choices.write(RingingChoice::Accept(id.clone()));
                    }
                    if ui.button("Reject").clicked() {
                        choices.write(RingingChoice::Reject(id.clone()));
                    }
                    if ui.button("Busy").clicked() {
                        choices.write(RingingChoice::Busy(id));
                    }
                });
            });
    }
    if let Some(call) = &screens.outgoing {
        egui::Window::new("Calling")
            .collapsible(false)
            .resizable(false)
            .anchor(egui::Align2::CENTER_CENTER, egui::Vec2::ZERO)
            .show(ctx, |ui| {
                ui.heading(format!("Calling {}…", call.receiver));
                if ui.button("Cancel").clicked() {
                    choices.write(RingingChoice::Cancel(call.session_id.clone()));
                }
            });
    }
    for (index, toast) in screens.toasts.iter().enumerate() {
        egui::Area::new(egui::Id::new(("huddle_toast", index)))
            .anchor(
                egui::Align2::CENTER_TOP,
                egui::vec2(0.0, 12.0 + 32.0 * index as f32),
            )
            .show(ctx, |ui| {
                egui::Frame::popup(ui.style()).show(ui, |ui| ui.label(&toast.text));
            });
    }
    Ok(())
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
        .anchor(egui::Align2::CENTER_BOTTOM, egui::vec2(0.0, -12.0));
    bar_area.show(ctx, |ui| {
        egui::Frame::popup(ui.style()).show(ui, |ui| {
            ui.horizontal(|ui| {
                for button in bar_buttons(&call.settings, &bar) {
                    if button == CallButton::AudioMode {
                        ui.menu_button(button.label(&bar), |ui| {
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
                    } else if ui.button(button.label(&bar)).clicked()
                        && let Some(action) = button.action(&bar)
                    {
                        actions.write(action);
                    }
                }
                if bar.recording {
                    ui.colored_label(egui::Color32::RED, "● REC");
                }
            });
        });
    });
    if let Some(devices) = devices {
        egui::Window::new("Devices")
            .anchor(egui::Align2::RIGHT_TOP, egui::vec2(-8.0, 48.0))
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
                    egui::ComboBox::from_label(picker.title)
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
                }
            });
    }
    egui::Window::new("Participants")
        .anchor(egui::Align2::RIGHT_TOP, egui::vec2(-8.0, 8.0))
        .default_open(false)
        .resizable(false)
        .show(ctx, |ui| {
            ui.heading("Participants");
            for entity in members.iter() {
                let Ok((participant, pstate, is_local, proutes)) = participants.get(entity) else {
                    continue;
                };
                ui.separator();
                let mut flags = String::new();
                for (on, mark) in [
                    (pstate.audio_muted, " 🔇"),
                    (pstate.video_paused, " ⏸"),
                    (pstate.speaking, " 🔊"),
                    (pstate.hand_raised, " ✋"),
                ] {
                    if on {
                        flags.push_str(mark);
                    }
                }
                let you = if is_local { " (you)" } else { "" };
                ui.label(format!("{}{you}{flags}", participant.name));
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
    Ok(())
}
