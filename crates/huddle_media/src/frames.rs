//! Decoded pictures on their way to the application: one newest-wins slot per remote video
//! track.
//!
//! Each track's decode thread [`put`](VideoSlot::put)s every picture it decodes into its
//! slot, replacing one the application has not taken yet (counted, never queued), so a slow
//! reader sees the newest picture and latency never piles up. The application
//! [`take_all`](VideoSlots::take_all)s once per frame.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::peer::DecodedVideo;

/// Which of a participant's video tracks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VideoTrackKind {
    /// Their camera (or test pattern).
    Camera,
    /// Their screen share.
    Screen,
}

/// A decoded picture taken from a slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VideoFrame {
    /// Whose.
    pub uid: String,
    /// Which track.
    pub track: VideoTrackKind,
    /// The picture.
    pub frame: DecodedVideo,
}

/// The newest decoded picture of one track.
#[derive(Debug, Default)]
pub struct VideoSlot {
    newest: Mutex<Option<DecodedVideo>>,
    replaced: AtomicU64,
}

impl VideoSlot {
    /// Puts a picture in, replacing (and counting) one not taken yet.
    pub fn put(&self, frame: DecodedVideo) {
        if lock(&self.newest).replace(frame).is_some() {
            self.replaced.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Takes the newest picture, if there is one since the last take.
    pub fn take(&self) -> Option<DecodedVideo> {
        lock(&self.newest).take()
    }

    /// Pictures replaced before anyone took them.
    pub fn replaced(&self) -> u64 {
        self.replaced.load(Ordering::Relaxed)
    }
}

/// The slots of a session's remote tracks.
#[derive(Clone, Debug, Default)]
pub struct VideoSlots(Arc<Mutex<HashMap<(String, VideoTrackKind), Arc<VideoSlot>>>>);

impl VideoSlots {
    /// The slot of `uid`'s `track` (made on first use; a track that comes back after a
    /// reconnect reuses it).
    pub fn slot(&self, uid: &str, track: VideoTrackKind) -> Arc<VideoSlot> {
        lock(&self.0)
            .entry((uid.to_owned(), track))
            .or_default()
            .clone()
    }

    /// Takes the newest picture of every track that has one.
    pub fn take_all(&self) -> Vec<VideoFrame> {
        lock(&self.0)
            .iter()
            .filter_map(|((uid, track), slot)| {
                slot.take().map(|frame| VideoFrame {
                    uid: uid.clone(),
                    track: *track,
                    frame,
                })
            })
            .collect()
    }

    /// Pictures of `uid`'s `track` replaced before they were taken.
    pub fn replaced(&self, uid: &str, track: VideoTrackKind) -> u64 {
        lock(&self.0)
            .get(&(uid.to_owned(), track))
            .map_or(0, |slot| slot.replaced())
    }

    /// Forgets `uid`'s slots (they left).
    pub fn remove(&self, uid: &str) {
        lock(&self.0).retain(|(who, _), _| who != uid);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn picture(n: u8) -> DecodedVideo {
        DecodedVideo {
            width: 1,
            height: 1,
            rgba: vec![n, n, n, 255],
            stamp: None,
            encoded: bytes::Bytes::new(),
        }
    }

    /// A slot keeps only the newest picture and counts the ones replaced before a take.
    #[test]
    fn newest_picture_wins_and_replacements_are_counted() {
        let slots = VideoSlots::default();
        let slot = slots.slot("bob", VideoTrackKind::Camera);
        slot.put(picture(1));
        slot.put(picture(2));
        slot.put(picture(3));
        let taken = slots.take_all();
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].frame.rgba[0], 3);
        assert_eq!(slots.replaced("bob", VideoTrackKind::Camera), 2);
        assert!(slots.take_all().is_empty(), "a picture is taken once");
        slots.slot("bob", VideoTrackKind::Screen).put(picture(9));
        slots.remove("bob");
        assert!(
            slots.take_all().is_empty(),
            "a participant who left has no slots"
        );
    }
}
