//! Recording: when the local participant turns recording on (`RecordingToggled` by us, from
//! `start_recording` or `start_recording_on_call_start`), the session records the call into a
//! Matroska file in [`RecordingSettings`]'s folder; turning it off (or the call ending)
//! finishes the file (`RecordingSaved`). A file that cannot be written gives an `Error` event
//! and turns recording off; the call goes on.

use bevy::prelude::*;
use huddle_media::session::MediaSession;

use super::CallMediaSession;
use crate::call::actions::CallAction;
use crate::call::error::{HuddleError, Shared};
use crate::call::events::CallEvent;
use crate::call::model::Call;

/// Where recordings go.
#[derive(Resource, Clone, Debug, PartialEq, Eq)]
pub struct RecordingSettings {
    /// The folder new recordings are written to (created if missing), as
    /// `huddle-<session>-<unix time>.mkv`.
    pub folder: std::path::PathBuf,
    /// Write exactly this file instead (the bot's `--record PATH`).
    pub file: Option<std::path::PathBuf>,
}

impl Default for RecordingSettings {
    /// `$HUDDLE_RECORDINGS`, else `~/Videos/Huddle`, else `./recordings`.
    fn default() -> Self {
        let folder = std::env::var_os("HUDDLE_RECORDINGS")
            .map(std::path::PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME")
                    .map(|home| std::path::PathBuf::from(home).join("Videos").join("Huddle"))
            })
            .unwrap_or_else(|| "recordings".into());
        Self { folder, file: None }
    }
}

impl RecordingSettings {
    /// The file a new recording of session `session_id` goes to.
    pub fn path_for(&self, session_id: &str) -> std::path::PathBuf {
        if let Some(file) = &self.file {
            return file.clone();
        }
        let safe: String = session_id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        self.folder.join(format!("huddle-{safe}-{now}.mkv"))
    }
}

/// Our own `RecordingToggled` starts and stops the session's recording.
pub(crate) fn follow_recording(
    mut events: ParamSet<(MessageReader<CallEvent>, MessageWriter<CallEvent>)>,
    sessions: Query<(&CallMediaSession, &Call)>,
    settings: Option<Res<RecordingSettings>>,
    mut actions: MessageWriter<CallAction>,
) {
    let toggles: Vec<(Entity, bool)> = events
        .p0()
        .read()
        .filter_map(|event| match event {
            CallEvent::RecordingToggled { call, started, by } => sessions
                .get(*call)
                .ok()
                .filter(|(media, _)| media.local_uid == *by)
                .map(|_| (*call, *started)),
            _ => None,
        })
        .collect();
    for (call, started) in toggles {
        let Ok((media, request)) = sessions.get(call) else {
            continue;
        };
        if started {
            let settings = settings.as_deref().cloned().unwrap_or_default();
            let path = settings.path_for(&request.session_id);
            begin_recording(call, &media.session, &path, &mut events.p1(), &mut actions);
        } else {
            finish_recording(call, media, &mut events.p1());
        }
    }
}

/// Starts recording into `path`; a file that cannot be written is an `Error` event and turns
/// recording off again (for everyone: the action tells the peers).
pub(super) fn begin_recording(
    call: Entity,
    session: &MediaSession,
    path: &std::path::Path,
    events: &mut MessageWriter<CallEvent>,
    actions: &mut MessageWriter<CallAction>,
) {
    if let Err(err) = session.start_recording(path) {
        events.write(CallEvent::Error {
            call: Some(call),
            error: HuddleError::Recording(Shared::new(err)),
        });
        actions.write(CallAction::StopRecording);
    }
}

/// Finishes the session's recording, if any: `RecordingSaved`, or an `Error`.
pub(super) fn finish_recording(
    call: Entity,
    media: &CallMediaSession,
    events: &mut MessageWriter<CallEvent>,
) {
    match media.session.stop_recording() {
        Some(Ok(summary)) => {
            events.write(CallEvent::RecordingSaved {
                call,
                path: summary.path,
                duration_ms: summary.duration_ms,
                tracks: summary.tracks.len(),
            });
        }
        Some(Err(err)) => {
            events.write(CallEvent::Error {
                call: Some(call),
                error: HuddleError::Recording(Shared::new(err)),
            });
        }
        None => {}
    }
}
