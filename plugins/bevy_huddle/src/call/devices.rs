//! Media devices as the ECS sees them: the [`MediaDevices`] resource holds the current lists
//! and the selected device of each kind (synthetic stand-ins by default). Selecting goes
//! through [`CallAction`](crate::call::actions::CallAction)s so that it is validated and announced
//! like every other action; a call's media uses the selection when it starts.
//!
//! A change of the lists arrives as [`DeviceListRefreshed`](crate::call::session::DeviceListRefreshed)
//! (from `media`'s `DeviceWatcherPlugin`, or a game's own source) and is announced as
//! `MediaDeviceListUpdated`.

use bevy::prelude::*;
pub use huddle_media::{DeviceInfo, DeviceKind, DeviceLists};

use crate::call::error::HuddleError;

/// The device lists and the current selection of each kind.
#[derive(Resource, Clone, Debug)]
pub struct MediaDevices {
    lists: DeviceLists,
    audio_input: Option<String>,
    audio_output: Option<String>,
    video_input: Option<String>,
}

impl Default for MediaDevices {
    fn default() -> Self {
        Self::new(DeviceLists::synthetic())
    }
}

impl MediaDevices {
    /// Devices from these lists, each kind's first device selected.
    pub fn new(lists: DeviceLists) -> Self {
        let mut devices = Self {
            lists,
            audio_input: None,
            audio_output: None,
            video_input: None,
        };
        devices.reselect_vanished();
        devices
    }

    /// All lists.
    pub fn lists(&self) -> &DeviceLists {
        &self.lists
    }

    /// Microphones (reference `getAudioInputDevices`).
    pub fn audio_input_devices(&self) -> &[DeviceInfo] {
        &self.lists.audio_inputs
    }

    /// Speakers (reference `getAudioOutputDevices`).
    pub fn audio_output_devices(&self) -> &[DeviceInfo] {
        &self.lists.audio_outputs
    }

    /// Cameras (reference `getVideoInputDevices`).
    pub fn video_input_devices(&self) -> &[DeviceInfo] {
        &self.lists.video_inputs
    }

    /// The selected device of a kind, if any.
    pub fn selected(&self, kind: DeviceKind) -> Option<&DeviceInfo> {
        let id = self.selected_slot(kind).as_deref()?;
        self.lists.of_kind(kind).iter().find(|d| d.id == id)
    }

    fn selected_slot(&self, kind: DeviceKind) -> &Option<String> {
        match kind {
            DeviceKind::AudioInput => &self.audio_input,
            DeviceKind::AudioOutput => &self.audio_output,
            DeviceKind::VideoInput => &self.video_input,
        }
    }

    fn selected_slot_mut(&mut self, kind: DeviceKind) -> &mut Option<String> {
        match kind {
            DeviceKind::AudioInput => &mut self.audio_input,
            DeviceKind::AudioOutput => &mut self.audio_output,
            DeviceKind::VideoInput => &mut self.video_input,
        }
    }

    /// Selects a device by id; an id not in the list is refused and the selection is unchanged.
    pub fn select(&mut self, kind: DeviceKind, id: &str) -> Result<DeviceInfo, HuddleError> {
        let device = self
            .lists
            .of_kind(kind)
            .iter()
            .find(|d| d.id == id)
            .cloned()
            .ok_or_else(|| HuddleError::UnknownDevice {
                kind,
                id: id.to_owned(),
            })?;
        *self.selected_slot_mut(kind) = Some(device.id.clone());
        Ok(device)
    }

    /// Selects the next camera after the current one, wrapping around (reference `switchCamera`).
    pub fn cycle_camera(&mut self) -> Result<DeviceInfo, HuddleError> {
        let cameras = &self.lists.video_inputs;
        if cameras.is_empty() {
            return Err(HuddleError::NoDevice {
                kind: DeviceKind::VideoInput,
            });
        }
        let current = self
            .video_input
            .as_deref()
            .and_then(|id| cameras.iter().position(|d| d.id == id));
        let next = current.map_or(0, |i| (i + 1) % cameras.len());
        let device = cameras[next].clone();
        self.video_input = Some(device.id.clone());
        Ok(device)
    }

    /// Replaces the lists (hot-plug refresh). A selection whose device vanished falls back to
    /// the first device of its kind. Returns whether anything changed.
    pub fn replace_lists(&mut self, lists: DeviceLists) -> bool {
        if self.lists == lists {
            return false;
        }
        self.lists = lists;
        self.reselect_vanished();
        true
    }

    /// Points each selection whose device is not listed at the first device of its kind.
    fn reselect_vanished(&mut self) {
        for kind in [
            DeviceKind::AudioInput,
            DeviceKind::AudioOutput,
            DeviceKind::VideoInput,
        ] {
            let list = self.lists.of_kind(kind);
            let still_there = self
                .selected_slot(kind)
                .as_deref()
                .is_some_and(|id| list.iter().any(|d| d.id == id));
            if !still_there {
                let first = list.first().map(|d| d.id.clone());
                *self.selected_slot_mut(kind) = first;
            }
        }
    }
}
