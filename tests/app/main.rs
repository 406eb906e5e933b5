//! Tests of the `huddle` package, in one binary (each links Bevy): a person's journey through
//! the desktop app in a real window driven by real input (`app_journey`), the app's model
//! against a real server (`app_model`), picture-in-picture (`pip`), the demo in a real window
//! (`demo_window`), `huddle bot` processes recording a call (`bot_recording`), the web client in
//! a real Chromium calling bots and the app (`browser`), bots calling across network
//! namespaces with NAT, TURN, loss and outages (`net_lab`), through Janus (`sfu`), and across
//! two nodes of a cluster, one of them killed mid-call (`cluster`).

mod app_journey;
mod app_model;
mod bot_recording;
mod browser;
mod cluster;
mod demo_window;
mod net_lab;
mod pip;
mod sfu;

/// Tests that run real media between several participants (and the demo, which renders on
/// the CPU) take this lock, so they run one at a time: together they oversubscribe a 2-core
/// machine and starve one another (the demo needs 90 rendered frames after video flows within
/// its time limit).
pub(crate) fn one_media_test_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
