//! Headless tests of the call model: `App` + `MinimalPlugins` + `app.update()`, no window, no
//! GPU. One test binary (each links Bevy); each module covers one area.

mod actions;
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
