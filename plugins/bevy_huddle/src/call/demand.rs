//! [`VideoDemand`]: how much of a remote participant's video we want, per participant.
//!
//! The view (tiles, in-world surfaces) publishes it from what is on screen; media asks the
//! participant's sender for exactly that. A participant without one gets everything, so a
//! game without the view plugin still receives full video.

use bevy::prelude::*;

/// How much of this participant's video we want (on a remote [`Participant`](super::model::Participant)).
#[derive(Component, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VideoDemand {
    /// Nothing is showing it: ask the sender to stop.
    pub paused: bool,
    /// The most it is worth, bits per second (0: no cap).
    pub max_bitrate_bps: u32,
    /// The largest size it is shown at, in logical pixels (zero: unknown).
    pub wanted_size: UVec2,
}
