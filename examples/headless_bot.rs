//! A headless participant in a few lines: no window, no GPU, the same ECS plugins; it joins
//! the "lobby" session and prints what it receives every second.
//!
//! Run a server (`huddle server --dev-login`), then `cargo run --example headless_bot`.

use std::time::Duration;

use bevy::app::ScheduleRunnerPlugin;
use bevy::prelude::*;
use bevy::time::common_conditions::on_timer;
use bevy_huddle::media::MediaStats;
use bevy_huddle::prelude::*;
use huddle::embedded::{JoinOnLogin, join_on_login};

fn main() {
    let server = std::env::var("HUDDLE_SERVER").unwrap_or_else(|_| "ws://127.0.0.1:7878/ws".into());
    App::new()
        .add_plugins((
            MinimalPlugins.set(ScheduleRunnerPlugin::run_loop(Duration::from_millis(10))),
            AssetPlugin::default(),
            HuddlePlugins,
        ))
        .add_systems(Startup, move |mut commands: Commands| {
            commands.spawn(ServerConnection::dev(server.clone(), "headless-bot"));
        })
        .insert_resource(JoinOnLogin {
            session_id: "lobby".into(),
            settings: CallSettings::default(),
            target: None,
        })
        .add_systems(
            Update,
            (
                join_on_login,
                report.run_if(on_timer(Duration::from_secs(1))),
            ),
        )
        .run();
}

/// Prints, per remote participant, frames decoded and the tone heard.
fn report(calls: Query<(&CallState, &CallParticipants, Option<&MediaStats>)>) {
    for (state, members, stats) in &calls {
        println!("{state:?}, {} in the call", members.len());
        for (uid, remote) in stats.iter().flat_map(|s| s.remotes.iter()) {
            println!(
                "  {uid}: {} frames ({:.0} fps), tone {:?} Hz",
                remote.video_frames_decoded, remote.video_fps, remote.audio_tone_hz
            );
        }
    }
}
