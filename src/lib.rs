//! The `huddle` desktop app: command line, and the demo call.
//!
//! - [`cli`]: the command line (`huddle demo …`).
//! - [`demo`]: a windowed call on the embedded server with headless bots, laid out and
//!   rendered by `bevy_huddle`, with real WebRTC media between everyone.
//! - [`embedded`]: the embedded server and the demo's bots.
//! - [`bot`]: `huddle bot`, a headless participant that prints its statistics.

pub mod bot;
pub mod cli;
pub mod demo;
pub mod embedded;
