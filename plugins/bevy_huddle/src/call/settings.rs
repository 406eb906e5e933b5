//! [`CallSettings`]: how a call looks and starts, built with [`CallSettingsBuilder`].
//!
//! Every option of the reference `CallSettingsBuilder` is here with the reference default. The
//! settings are serde (de)serializable (unknown fields are refused, missing ones take their
//! default), and [`CallSettings::validate`] refuses what cannot work with a typed
//! [`HuddleError::InvalidProp`] (`INVALID_PROP_EXCEPTION`). Combinations that are merely inert
//! are allowed: tile drag outside Spotlight does nothing, as in the reference.

use std::str::FromStr;
use std::time::Duration;

use bevy::prelude::{Color, Srgba};
use serde::{Deserialize, Serialize};

use crate::call::error::HuddleError;

/// How tiles are arranged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LayoutMode {
    /// Grid: every tile the same size in an even grid (reference `DEFAULT`).
    #[default]
    #[serde(alias = "DEFAULT", alias = "grid")]
    Default,
    /// One large main tile, the others in a strip, the local preview floating.
    #[serde(alias = "SPOTLIGHT")]
    Spotlight,
    /// Only the main tile.
    #[serde(alias = "SINGLE")]
    Single,
}

impl FromStr for LayoutMode {
    type Err = HuddleError;

    /// Parses reference names (`DEFAULT`, `SPOTLIGHT`, `SINGLE`) in any case, and `grid`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "default" | "grid" => Ok(LayoutMode::Default),
            "spotlight" => Ok(LayoutMode::Spotlight),
            "single" => Ok(LayoutMode::Single),
            _ => Err(HuddleError::invalid_prop(
                "mode",
                format!("unknown mode `{s}` (expected DEFAULT, SPOTLIGHT or SINGLE)"),
            )),
        }
    }
}

/// Shape of the avatar shown when a participant's video is paused or absent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AvatarMode {
    /// A circle in the middle of the tile (reference default).
    #[default]
    Circle,
    /// A square in the middle of the tile.
    Square,
    /// The avatar fills the tile.
    Fullscreen,
}

/// How video fits its tile.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AspectFit {
    /// The whole picture is visible, letterboxed (reference default).
    #[default]
    Contain,
    /// The picture fills the tile, cropped.
    Cover,
}

/// Audio output routes a device may offer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AudioMode {
    /// The loudspeaker.
    #[default]
    Speaker,
    /// A phone's earpiece.
    Earpiece,
    /// A Bluetooth headset.
    Bluetooth,
    /// Wired headphones.
    Headphones,
}

/// A corner of a tile, for its labels and buttons.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TileCorner {
    /// Top left.
    TopLeft,
    /// Top right.
    TopRight,
    /// Bottom left.
    #[default]
    BottomLeft,
    /// Bottom right.
    BottomRight,
}

/// Placement and visibility of a label or button on the main video tile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TileOverlay {
    /// Which corner it sits in.
    pub position: TileCorner,
    /// Whether it is shown at all.
    pub visible: bool,
}

/// The reference `MainVideoContainerSetting`: aspect, name label, network label, fullscreen button.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MainVideoContainerSettings {
    /// How video fits the tile.
    pub aspect: AspectFit,
    /// The participant's name label.
    pub name_label: TileOverlay,
    /// Background colour of the name label, as `#RRGGBB` or `#RRGGBBAA`.
    pub name_label_color: String,
    /// The network-quality label.
    pub network_label: TileOverlay,
    /// The fullscreen button.
    pub fullscreen_button: TileOverlay,
}

impl Default for MainVideoContainerSettings {
    fn default() -> Self {
        Self {
            aspect: AspectFit::Contain,
            name_label: TileOverlay {
                position: TileCorner::BottomLeft,
                visible: true,
            },
            name_label_color: "#333333".to_owned(),
            network_label: TileOverlay {
                position: TileCorner::BottomRight,
                visible: true,
            },
            fullscreen_button: TileOverlay {
                position: TileCorner::TopRight,
                visible: true,
            },
        }
    }
}

impl MainVideoContainerSettings {
    /// The name label colour, parsed.
    pub fn name_label_color(&self) -> Result<Color, HuddleError> {
        Srgba::hex(&self.name_label_color)
            .map(Color::from)
            .map_err(|err| {
                HuddleError::invalid_prop(
                    "main_video_container.name_label_color",
                    format!("`{}` is not a #RRGGBB colour: {err}", self.name_label_color),
                )
            })
    }
}

/// Which buttons the default layout shows (reference `show*Button` options).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ButtonSettings {
    /// End call.
    pub show_end_call: bool,
    /// Mute audio.
    pub show_mute_audio: bool,
    /// Pause video.
    pub show_pause_video: bool,
    /// Switch camera.
    pub show_switch_camera: bool,
    /// Audio mode menu.
    pub show_audio_mode: bool,
    /// Screen share.
    pub show_screen_share: bool,
    /// Layout mode switch.
    pub show_mode: bool,
    /// Switch an audio call to video.
    pub show_switch_to_video: bool,
    /// Recording toggle (off by default, as `showCallRecordButton` in the reference).
    pub show_recording: bool,
}

impl Default for ButtonSettings {
    fn default() -> Self {
        Self {
            show_end_call: true,
            show_mute_audio: true,
            show_pause_video: true,
            show_switch_camera: true,
            show_audio_mode: true,
            show_screen_share: true,
            show_mode: true,
            show_switch_to_video: true,
            show_recording: false,
        }
    }
}

/// Default `idle_timeout`: 180 s alone in a call ends it.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(180);
/// Longest accepted `idle_timeout` (one day).
pub const MAX_IDLE_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

/// Everything that shapes one call, with the reference defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CallSettings {
    /// Show the default button layout (false: only the tiles).
    pub default_layout: bool,
    /// How tiles are arranged.
    pub mode: LayoutMode,
    /// Clicking a tile pins it as the main tile (Spotlight).
    pub enable_video_tile_click: bool,
    /// The floating local tile can be dragged (Spotlight only; inert elsewhere).
    pub enable_video_tile_drag: bool,
    /// Avatar shape when video is paused or absent.
    pub avatar_mode: AvatarMode,
    /// Aspect, labels and buttons of the main video container.
    pub main_video_container: MainVideoContainerSettings,
    /// The call carries no video.
    pub audio_only: bool,
    /// Join with the microphone muted.
    pub start_audio_muted: bool,
    /// Join with the camera paused.
    pub start_video_muted: bool,
    /// Audio route to start with (falls back to the first available one).
    pub default_audio_mode: AudioMode,
    /// Start recording as soon as the call is connected.
    pub start_recording_on_call_start: bool,
    /// Seconds alone in a call before it ends (`SessionTimeout`).
    pub idle_timeout_secs: f64,
    /// Buttons shown by the default layout.
    pub buttons: ButtonSettings,
}

impl Default for CallSettings {
    fn default() -> Self {
        Self {
            default_layout: true,
            mode: LayoutMode::Default,
            enable_video_tile_click: true,
            enable_video_tile_drag: true,
            avatar_mode: AvatarMode::Circle,
            main_video_container: MainVideoContainerSettings::default(),
            audio_only: false,
            start_audio_muted: false,
            start_video_muted: false,
            default_audio_mode: AudioMode::Speaker,
            start_recording_on_call_start: false,
            idle_timeout_secs: DEFAULT_IDLE_TIMEOUT.as_secs_f64(),
            buttons: ButtonSettings::default(),
        }
    }
}

impl CallSettings {
    /// Starts a builder from the reference defaults.
    pub fn builder() -> CallSettingsBuilder {
        CallSettingsBuilder::default()
    }

    /// Checks that every value can work; the first problem is returned as `INVALID_PROP_EXCEPTION`.
    pub fn validate(&self) -> Result<(), HuddleError> {
        let secs = self.idle_timeout_secs;
        if !secs.is_finite() || secs <= 0.0 {
            return Err(HuddleError::invalid_prop(
                "idle_timeout_secs",
                format!("must be a positive number of seconds, got {secs}"),
            ));
        }
        if secs > MAX_IDLE_TIMEOUT.as_secs_f64() {
            return Err(HuddleError::invalid_prop(
                "idle_timeout_secs",
                format!(
                    "must be at most {} s, got {secs}",
                    MAX_IDLE_TIMEOUT.as_secs()
                ),
            ));
        }
        self.main_video_container.name_label_color()?;
        Ok(())
    }

    /// The idle timeout as a duration (call [`validate`](Self::validate) first).
    pub fn idle_timeout(&self) -> Duration {
        Duration::try_from_secs_f64(self.idle_timeout_secs).unwrap_or(DEFAULT_IDLE_TIMEOUT)
    }

    /// Parses settings from JSON; malformed JSON, unknown fields, unknown enum strings and
    /// invalid values all give `INVALID_PROP_EXCEPTION`.
    pub fn from_json(json: &str) -> Result<Self, HuddleError> {
        let settings: CallSettings = serde_json::from_str(json)
            .map_err(|err| HuddleError::invalid_prop("settings", err.to_string()))?;
        settings.validate()?;
        Ok(settings)
    }

    /// Whether tile drag has any effect: it is only active in Spotlight.
    pub fn tile_drag_active(&self) -> bool {
        self.enable_video_tile_drag && self.mode == LayoutMode::Spotlight
    }
}

/// Builder for [`CallSettings`], mirroring the reference `CallSettingsBuilder`.
///
/// Setters never fail; [`build`](Self::build) validates and reports the first problem,
/// including a mode name given as a string that is not a known mode.
#[derive(Clone, Debug, Default)]
pub struct CallSettingsBuilder {
    settings: CallSettings,
    first_error: Option<HuddleError>,
}

macro_rules! builder_setters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty => $($field:ident).+;)*) => {
        $(
            $(#[$doc])*
            pub fn $name(mut self, value: $ty) -> Self {
                self.settings.$($field).+ = value;
                self
            }
        )*
    };
}

impl CallSettingsBuilder {
    builder_setters! {
        /// Show the default button layout.
        default_layout: bool => default_layout;
        /// Layout mode.
        mode: LayoutMode => mode;
        /// Clicking a tile pins it (Spotlight).
        enable_video_tile_click: bool => enable_video_tile_click;
        /// The floating tile can be dragged (Spotlight).
        enable_video_tile_drag: bool => enable_video_tile_drag;
        /// Avatar shape.
        avatar_mode: AvatarMode => avatar_mode;
        /// Main video container (aspect, labels, fullscreen button).
        main_video_container: MainVideoContainerSettings => main_video_container;
        /// How video fits its tile.
        aspect: AspectFit => main_video_container.aspect;
        /// Audio-only call.
        audio_only: bool => audio_only;
        /// Join muted.
        start_audio_muted: bool => start_audio_muted;
        /// Join with video paused.
        start_video_muted: bool => start_video_muted;
        /// Initial audio route.
        default_audio_mode: AudioMode => default_audio_mode;
        /// Record from the start.
        start_recording_on_call_start: bool => start_recording_on_call_start;
        /// Idle timeout in seconds (must be positive).
        idle_timeout_secs: f64 => idle_timeout_secs;
        /// All button flags at once.
        buttons: ButtonSettings => buttons;
        /// End call button.
        show_end_call_button: bool => buttons.show_end_call;
        /// Mute button.
        show_mute_audio_button: bool => buttons.show_mute_audio;
        /// Pause video button.
        show_pause_video_button: bool => buttons.show_pause_video;
        /// Switch camera button.
        show_switch_camera_button: bool => buttons.show_switch_camera;
        /// Audio mode button.
        show_audio_mode_button: bool => buttons.show_audio_mode;
        /// Screen share button.
        show_screen_share_button: bool => buttons.show_screen_share;
        /// Mode button.
        show_mode_button: bool => buttons.show_mode;
        /// Switch-to-video button.
        show_switch_to_video_button: bool => buttons.show_switch_to_video;
        /// Recording button.
        show_recording_button: bool => buttons.show_recording;
    }

    /// Idle timeout as a duration.
    pub fn idle_timeout(self, timeout: Duration) -> Self {
        self.idle_timeout_secs(timeout.as_secs_f64())
    }

    /// Layout mode by its reference name (`DEFAULT`, `SPOTLIGHT`, `SINGLE`); an unknown name
    /// makes [`build`](Self::build) fail with `INVALID_PROP_EXCEPTION`.
    pub fn mode_name(mut self, name: &str) -> Self {
        match name.parse() {
            Ok(mode) => self.settings.mode = mode,
            Err(err) => {
                self.first_error.get_or_insert(err);
            }
        }
        self
    }

    /// Validates and returns the settings.
    pub fn build(self) -> Result<CallSettings, HuddleError> {
        if let Some(err) = self.first_error {
            return Err(err);
        }
        self.settings.validate()?;
        Ok(self.settings)
    }
}
