//! The `huddle` desktop app: command line, and the demo call.
//!
//! - [`cli`]: the command line (`huddle demo …`).
//! - [`demo`]: a windowed call with synthetic participants, laid out and rendered by
//!   `bevy_huddle`. Until the server and media layers land, the demo's participants are
//!   simulated in-process (their video is the synthetic test pattern drawn on the CPU each
//!   frame); it exercises the ECS model, layouts, tiles, picking and rendering for real.

pub mod cli;
pub mod demo;
