//! Devices in a running call, and the real device lists.
//!
//! - [`follow_device_selection`]: a device chosen during the call is switched to live.
//! - [`DeviceWatcherPlugin`] (not in [`HuddlePlugins`](crate::HuddlePlugins): add it where real
//!   devices should be used) lists the real devices at start and re-lists them every few
//!   seconds on a background thread; a change arrives as
//!   [`DeviceListRefreshed`](crate::call::session::DeviceListRefreshed).

use bevy::prelude::*;

use super::CallMediaSession;
use crate::call::devices::{DeviceInfo, DeviceKind, DeviceLists};
use crate::call::error::HuddleError;
use crate::call::events::CallEvent;

/// A device chosen during the call (`set_audio_input_device`, `set_audio_output_device`,
/// `set_video_input_device`, `switch_camera`) is switched to live in every running media
/// session; one that cannot be opened gives a `DeviceUnavailable` error a moment later
/// (devices open off the main thread; cameras only while video is on), and the synthetic
/// stand-in (tone, null sink, test pattern) takes its place until another is chosen.
pub(crate) fn follow_device_selection(
    mut events: ParamSet<(MessageReader<CallEvent>, MessageWriter<CallEvent>)>,
    sessions: Query<(Entity, &CallMediaSession)>,
) {
    let chosen: Vec<DeviceInfo> = events
        .p0()
        .read()
        .filter_map(|event| match event {
            CallEvent::MediaDeviceSelected { device, .. } => Some(device.clone()),
            _ => None,
        })
        .collect();
    for device in chosen {
        for (call, media) in &sessions {
            let id = Some(device.id.as_str());
            // Devices open off the main thread: failures come back as `DeviceFailed`.
            let switched = match device.kind {
                DeviceKind::AudioInput => {
                    media.session.set_audio_input(id);
                    Ok(())
                }
                DeviceKind::AudioOutput => {
                    media.session.set_audio_output(id);
                    Ok(())
                }
                DeviceKind::VideoInput => {
                    media.session.set_video_input(id).map_err(|err| err.reason)
                }
            };
            if let Err(reason) = switched {
                events.p1().write(CallEvent::Error {
                    call: Some(call),
                    error: HuddleError::DeviceUnavailable {
                        kind: device.kind,
                        id: device.id.clone(),
                        reason,
                    },
                });
            }
        }
    }
}

/// Lists real devices (cpal) at start and on hot-plug, every `interval`.
pub struct DeviceWatcherPlugin {
    /// How often to re-list.
    pub interval: std::time::Duration,
}

impl Default for DeviceWatcherPlugin {
    fn default() -> Self {
        Self {
            interval: std::time::Duration::from_secs(3),
        }
    }
}

/// The watcher thread's channel end.
#[derive(Resource)]
struct DeviceWatch(crossbeam_channel::Receiver<DeviceLists>);

impl Plugin for DeviceWatcherPlugin {
    fn build(&self, app: &mut App) {
        let (tx, rx) = crossbeam_channel::bounded(2);
        let interval = self.interval;
        let spawned = std::thread::Builder::new()
            .name("huddle devices".into())
            .spawn(move || {
                let mut last: Option<DeviceLists> = None;
                loop {
                    let lists = huddle_media::devices::enumerate();
                    if last.as_ref() != Some(&lists) {
                        if tx.send(lists.clone()).is_err() {
                            return;
                        }
                        last = Some(lists);
                    }
                    std::thread::sleep(interval);
                }
            });
        if let Err(err) = spawned {
            error!("cannot start the device watcher: {err}");
        }
        app.insert_resource(DeviceWatch(rx)).add_systems(
            PreUpdate,
            forward_device_lists.in_set(crate::HuddleSystems::Receive),
        );
    }
}

fn forward_device_lists(
    watch: Res<DeviceWatch>,
    mut refreshed: MessageWriter<crate::call::session::DeviceListRefreshed>,
) {
    while let Ok(lists) = watch.0.try_recv() {
        refreshed.write(crate::call::session::DeviceListRefreshed(lists));
    }
}
