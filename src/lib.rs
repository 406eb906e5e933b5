//! The `huddle` desktop app: command line, and the demo call.
//!
//! - [`cli`]: the command line (`huddle demo …`).
//! - [`demo`]: a windowed call on the embedded server with headless bots, laid out and
//!   rendered by `bevy_huddle`. Login, tokens, the session, participants and state changes
//!   go through the real server; until the media layer lands, each participant's video is
//!   the synthetic test pattern drawn locally.
//! - [`embedded`]: the embedded server and the bots.

pub mod bot;
pub mod cli;
pub mod demo;
pub mod embedded;
