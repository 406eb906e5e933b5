//! The button bar: which buttons show ([`bar_buttons`]) and what pressing one does
//! ([`CallButton::action`]). Pure functions of the call's settings and state, so the rules are
//! tested without egui.

use bevy_huddle::prelude::*;

/// One button of the call bar, in the order the bar shows them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CallButton {
    /// Mute / unmute the microphone (`show_mute_audio`).
    Mute,
    /// Pause / resume the camera (`show_pause_video`; video calls only).
    PauseVideo,
    /// Next camera (`show_switch_camera`; video calls only).
    SwitchCamera,
    /// Audio-mode menu (`show_audio_mode`).
    AudioMode,
    /// Layout mode: grid → spotlight → single (`show_mode`).
    Mode,
    /// Turn an audio call into video (`show_switch_to_video`; audio calls only).
    SwitchToVideo,
    /// Start / stop recording (`show_recording`).
    Record,
    /// Start / stop sharing the screen (`show_screen_share`).
    ScreenShare,
    /// Raise / lower the hand (always shown with the bar).
    RaiseHand,
    /// Enter / exit picture-in-picture (video calls).
    Pip,
    /// Leave the call (`show_end_call`).
    EndCall,
}

/// What the bar needs to know about the call to label and toggle its buttons.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BarState {
    /// The local microphone is muted.
    pub audio_muted: bool,
    /// The local camera is paused.
    pub video_paused: bool,
    /// The call carries no video.
    pub audio_only: bool,
    /// Someone records the call.
    pub recording: bool,
    /// We share our screen.
    pub screen_sharing: bool,
    /// Our hand is raised.
    pub hand_raised: bool,
    /// Current layout mode.
    pub mode: LayoutMode,
    /// Picture-in-picture is on.
    pub pip: bool,
}

impl BarState {
    /// The bar's view of a call: its media and layout, and the local participant's state.
    pub fn of(media: &CallMedia, layout: &CallLayout, local: Option<&ParticipantState>) -> Self {
        let local = local.cloned().unwrap_or_default();
        Self {
            audio_muted: local.audio_muted,
            video_paused: local.video_paused,
            audio_only: media.audio_only,
            recording: media.recording_by.is_some(),
            screen_sharing: local.screen_sharing,
            hand_raised: local.hand_raised,
            mode: layout.mode,
            pip: media.pip,
        }
    }
}

/// The buttons the bar shows, in order; empty when `default_layout` is off (tiles only).
pub fn bar_buttons(settings: &CallSettings, state: &BarState) -> Vec<CallButton> {
    if !settings.default_layout {
        return Vec::new();
    }
    let shown = &settings.buttons;
    let video = !state.audio_only;
    [
        (CallButton::Mute, shown.show_mute_audio),
        (CallButton::PauseVideo, shown.show_pause_video && video),
        (CallButton::SwitchCamera, shown.show_switch_camera && video),
        (CallButton::AudioMode, shown.show_audio_mode),
        (CallButton::Mode, shown.show_mode),
        (
            CallButton::SwitchToVideo,
            shown.show_switch_to_video && state.audio_only,
        ),
        (CallButton::Record, shown.show_recording),
        (CallButton::ScreenShare, shown.show_screen_share),
        (CallButton::RaiseHand, true),
        (CallButton::Pip, video),
        (CallButton::EndCall, shown.show_end_call),
    ]
    .into_iter()
    .filter_map(|(button, show)| show.then_some(button))
    .collect()
}

/// The layout mode after `mode` on the bar's mode button.
pub fn next_mode(mode: LayoutMode) -> LayoutMode {
    match mode {
        LayoutMode::Default => LayoutMode::Spotlight,
        LayoutMode::Spotlight => LayoutMode::Single,
        _ => LayoutMode::Default,
    }
}

impl CallButton {
    /// The action a press sends, given the call's state; `None` for the audio-mode button,
    /// which opens a menu of [`AvailableAudioModes`](bevy_huddle::call::actions::AvailableAudioModes)
    /// instead.
    pub fn action(self, state: &BarState) -> Option<CallAction> {
        Some(match self {
            CallButton::Mute => CallAction::MuteAudio(!state.audio_muted),
            CallButton::PauseVideo => CallAction::PauseVideo(!state.video_paused),
            CallButton::SwitchCamera => CallAction::SwitchCamera,
            CallButton::AudioMode => return None,
            CallButton::Mode => CallAction::SetMode(next_mode(state.mode)),
            CallButton::SwitchToVideo => CallAction::SwitchToVideoCall,
            CallButton::Record if state.recording => CallAction::StopRecording,
            CallButton::Record => CallAction::StartRecording,
            CallButton::ScreenShare if state.screen_sharing => CallAction::StopScreenShare,
            CallButton::ScreenShare => CallAction::StartScreenShare,
            CallButton::RaiseHand if state.hand_raised => CallAction::LowerHand,
            CallButton::RaiseHand => CallAction::RaiseHand,
            CallButton::Pip if state.pip => CallAction::ExitPip,
            CallButton::Pip => CallAction::EnterPip,
            CallButton::EndCall => CallAction::EndSession,
        })
    }

    /// The button's label in the current state.
    pub fn label(self, state: &BarState) -> &'static str {
        match self {
            CallButton::Mute if state.audio_muted => "Unmute",
            CallButton::Mute => "Mute",
            CallButton::PauseVideo if state.video_paused => "Start video",
            CallButton::PauseVideo => "Stop video",
            CallButton::SwitchCamera => "Switch camera",
            CallButton::AudioMode => "Audio",
            CallButton::Mode => match state.mode {
                LayoutMode::Default => "Grid",
                LayoutMode::Spotlight => "Spotlight",
                _ => "Single",
            },
            CallButton::SwitchToVideo => "Switch to video",
            CallButton::Record if state.recording => "Stop recording",
            CallButton::Record => "Record",
            CallButton::ScreenShare if state.screen_sharing => "Stop sharing",
            CallButton::ScreenShare => "Share screen",
            CallButton::RaiseHand if state.hand_raised => "Lower hand",
            CallButton::RaiseHand => "Raise hand",
            CallButton::Pip if state.pip => "Exit PIP",
            CallButton::Pip => "PIP",
            CallButton::EndCall => "Leave",
        }
    }
}
