//! Device settings: the microphone, speaker and camera pickers.
//!
//! [`device_pickers`] lists, per kind, every device `bevy_huddle` knows (real ones first,
//! then the synthetic stand-ins) and which one is in use; [`choose_device`] is the
//! [`CallAction`] a pick sends, which switches the device live in a running call (or, if it
//! cannot be opened, reports `DeviceUnavailable` and falls back to the stand-in).

use bevy_huddle::CallAction;
use bevy_huddle::call::devices::{DeviceKind, MediaDevices};

/// One device in a picker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceOption {
    /// Its id (what [`choose_device`] takes).
    pub id: String,
    /// What the picker shows.
    pub label: String,
    /// Whether it is in use.
    pub selected: bool,
}

/// One picker: a kind of device and its options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DevicePicker {
    /// Microphone, speaker or camera.
    pub kind: DeviceKind,
    /// What the picker is called.
    pub title: &'static str,
    /// The devices, real first.
    pub options: Vec<DeviceOption>,
}

/// The three pickers (microphone, speaker, camera) for these devices.
pub fn device_pickers(devices: &MediaDevices) -> Vec<DevicePicker> {
    [
        (DeviceKind::AudioInput, "Microphone"),
        (DeviceKind::AudioOutput, "Speaker"),
        (DeviceKind::VideoInput, "Camera"),
    ]
    .into_iter()
    .map(|(kind, title)| {
        let selected = devices.selected(kind).map(|d| d.id.clone());
        DevicePicker {
            kind,
            title,
            options: devices
                .lists()
                .of_kind(kind)
                .iter()
                .map(|device| DeviceOption {
                    id: device.id.clone(),
                    label: if device.synthetic {
                        format!("{} (synthetic)", device.label)
                    } else {
                        device.label.clone()
                    },
                    selected: selected.as_deref() == Some(device.id.as_str()),
                })
                .collect(),
        }
    })
    .collect()
}

/// The action that puts device `id` of `kind` in use.
pub fn choose_device(kind: DeviceKind, id: &str) -> CallAction {
    match kind {
        DeviceKind::AudioInput => CallAction::SetAudioInputDevice(id.to_owned()),
        DeviceKind::AudioOutput => CallAction::SetAudioOutputDevice(id.to_owned()),
        DeviceKind::VideoInput => CallAction::SetVideoInputDevice(id.to_owned()),
    }
}
