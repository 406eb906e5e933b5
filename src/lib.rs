//! The `huddle` desktop app: command line, and the demo call.
//!
//! - [`app`]: the desktop app (`huddle`): login, contacts and groups with presence, call
//!   history, placing calls and joining by session id, on the embedded server or another.
//! - [`pip`]: picture-in-picture as a second, always-on-top window.
//! - [`cli`]: the command line (`huddle demo …`).
//! - [`demo`]: a windowed call on the embedded server with headless bots, laid out and
//!   rendered by `bevy_huddle`, with real WebRTC media between everyone.
//! - [`desktop`]: what the app and the demo share (the window, the call area, media
//!   settings); neither imports the other.
//! - [`embedded`]: the embedded server and the demo's bots.
//! - [`bot`]: `huddle bot`, a headless participant that prints its statistics.
//! - [`audio_check`]: `huddle audio-check`, the voice processing's figures on a scene.

pub mod app;
pub mod audio_check;
pub mod bot;
pub mod cli;
pub mod demo;
pub mod desktop;
pub mod embedded;
pub mod pip;
