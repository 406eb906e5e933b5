//! Headless tests of the call model: `App` + `MinimalPlugins` + `app.update()`, no window, no
//! GPU. One test binary (each links Bevy); each module covers one area. `game_world` (built
//! with the `game_view` and `pbr` features, as the workspace test run has them) renders with
//! Bevy's renderer on the CPU (lavapipe), still without a window.

mod actions;
#[cfg(all(feature = "game_view", feature = "pbr"))]
mod game_world;
mod harness;
mod interaction;
mod layout;
mod listeners;
mod media_calls;
mod session;
mod settings;
mod spatial;
mod surfaces;
mod whole_stack;
