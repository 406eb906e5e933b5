//! Tests of the `huddle` package, in one binary (each links Bevy): the desktop app's model
//! against a real server (`app_model`), picture-in-picture (`pip`), the demo in a real window
//! (`demo_window`), and `huddle bot` processes recording a call (`bot_recording`).

mod app_model;
mod bot_recording;
mod demo_window;
mod pip;
