//! Benchmark: what receiving video costs a client's other work. Prints one line of figures.
//!
//! N headless bots (each with its own runtime) send W×H video at 30 fps into a direct session
//! on the embedded server; one headless client (all of `HuddlePlugins`, its own 2-worker
//! `HuddleRuntime`, measuring off) receives every stream. The bots show no tiles and ask one
//! another for no video, so the machine's CPU goes to the client's receive path and the bots'
//! encoders. After a warm-up, for S seconds, it measures:
//!
//! - **the signaling round trip**: a second signaling client on the *client's* runtime sends
//!   `ping` every 50 ms and times each `pong` (what a busy runtime does to signaling);
//! - **the main thread's time per frame in PreUpdate..PostUpdate** (Huddle's systems, plus
//!   the little `MinimalPlugins` adds there), the client updated every 16 ms, these schedules
//!   run single-threaded: as wall time, and as the main thread's own CPU time (on an
//!   overloaded machine the wall time also counts waiting for a core);
//! - the frames per second the client decoded from each remote.
//!
//! Run: `cargo run --example bench_receive_load -- --remotes 4 --width 1280 --height 720`
//! (`--seconds S`, `--warmup S`). `scripts/bench-receive-load` runs the two cases.

use std::time::{Duration, Instant};

use bevy::prelude::*;
use bevy_huddle::call::demand::VideoDemand;
use bevy_huddle::media::{MediaSettings, MediaStats};
use bevy_huddle::prelude::*;
use bevy_huddle::{HuddleRuntime, TileLayoutPlugin};
use huddle::embedded::{JoinOnLogin, join_on_login, start_embedded_server};
use huddle_client::{Backoff, ClientCommand, ClientConfig, ClientEvent};
use huddle_media::video::EncoderSettings;
use huddle_protocol::Request;

const SESSION: &str = "bench";

/// Command-line options.
struct Options {
    remotes: usize,
    width: u32,
    height: u32,
    seconds: f64,
    warmup: f64,
}

fn options() -> Options {
    let mut options = Options {
        remotes: 4,
        width: 1280,
        height: 720,
        seconds: 10.0,
        warmup: 4.0,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let value = pair.get(1).map(String::as_str).unwrap_or_default();
        match pair[0].as_str() {
            "--remotes" => options.remotes = value.parse().expect("--remotes N"),
            "--width" => options.width = value.parse().expect("--width W"),
            "--height" => options.height = value.parse().expect("--height H"),
            "--seconds" => options.seconds = value.parse().expect("--seconds S"),
            "--warmup" => options.warmup = value.parse().expect("--warmup S"),
            other => panic!("unknown option {other}"),
        }
    }
    options
}

/// Main-schedule time of each frame: wall clock, and CPU time of the main thread (what our
/// systems cost, without the time other threads had the core).
#[derive(Resource, Default)]
struct FrameSpans {
    started: Option<(Instant, Duration)>,
    measuring: bool,
    millis: Vec<f64>,
    cpu_millis: Vec<f64>,
}

/// CPU time this thread has used (Linux: the first field of its schedstat, in nanoseconds).
fn thread_cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let nanos = stat
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    Duration::from_nanos(nanos)
}

fn frame_starts(mut spans: ResMut<FrameSpans>) {
    spans.started = Some((Instant::now(), thread_cpu_time()));
}

fn frame_ends(mut spans: ResMut<FrameSpans>) {
    if let Some((started, cpu)) = spans.started.take()
        && spans.measuring
    {
        spans.millis.push(started.elapsed().as_secs_f64() * 1000.0);
        let used = thread_cpu_time().saturating_sub(cpu);
        spans.cpu_millis.push(used.as_secs_f64() * 1000.0);
    }
}

/// A bot that sends `video` and asks nobody for theirs.
fn spawn_sender(url: String, uid: String, video: EncoderSettings) {
    std::thread::spawn(move || {
        let mut app = App::new();
        app.add_plugins((
            MinimalPlugins,
            AssetPlugin::default(),
            HuddlePlugins.build().disable::<TileLayoutPlugin>(),
        ))
        .insert_resource(HuddleRuntime::default())
        .insert_resource(MediaSettings {
            video,
            local_preview: false,
            ..MediaSettings::default()
        })
        .insert_resource(JoinOnLogin {
            session_id: SESSION.into(),
            settings: CallSettings::default(),
            target: None,
        })
        .add_systems(Update, join_on_login)
        .add_systems(Update, pause_others_video);
        app.world_mut().spawn(ServerConnection::dev(url, uid));
        loop {
            let next = Instant::now() + Duration::from_millis(16);
            app.update();
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
    });
}

/// Bots watch nobody: every remote's video demand is "paused" (without the view plugin,
/// nothing else would say so and they would get everything).
fn pause_others_video(
    remotes: Query<
        Entity,
        (
            With<Participant>,
            Without<LocalParticipant>,
            Without<VideoDemand>,
        ),
    >,
    mut commands: Commands,
) {
    for remote in &remotes {
        commands.entity(remote).insert(VideoDemand {
            paused: true,
            ..default()
        });
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[index]
}

fn main() {
    let options = options();
    let server_runtime = HuddleRuntime::default();
    let url = start_embedded_server(&server_runtime, Vec::new()).expect("embedded server");
    let video = EncoderSettings {
        width: options.width,
        height: options.height,
        fps: 30.0,
        bitrate_bps: 2_500_000.min(options.width * options.height * 3),
        keyframe_interval: 120,
    };
    for i in 1..=options.remotes {
        spawn_sender(url.clone(), format!("bot{i:02}"), video);
    }

    // The client under test.
    let client_runtime = HuddleRuntime::default();
    let mut client = App::new();
    client
        .add_plugins((MinimalPlugins, AssetPlugin::default(), HuddlePlugins))
        .insert_resource(client_runtime.clone())
        .insert_resource(MediaSettings {
            video: EncoderSettings {
                width: 160,
                height: 90,
                fps: 15.0,
                bitrate_bps: 100_000,
                keyframe_interval: 60,
            },
            local_preview: false,
            ..MediaSettings::default()
        })
        .insert_resource(JoinOnLogin {
            session_id: SESSION.into(),
            settings: CallSettings::default(),
            target: None,
        })
        .init_resource::<FrameSpans>()
        .add_systems(Update, join_on_login)
        .add_systems(PreUpdate, frame_starts.before(HuddleSystems::Receive))
        .add_systems(PostUpdate, frame_ends.after(HuddleSystems::Notify));
    // All of the measured schedules on the main thread, so its CPU time is theirs.
    let single_threaded = |schedule: &mut Schedule| {
        schedule.set_executor(bevy::ecs::schedule::SingleThreadedExecutor::new());
    };
    client.edit_schedule(PreUpdate, single_threaded);
    client.edit_schedule(Update, single_threaded);
    client.edit_schedule(PostUpdate, single_threaded);
    client
        .world_mut()
        .spawn(ServerConnection::dev(url.clone(), "client"));

    // The pinger: a signaling client on the client's runtime.
    let pinger = huddle_client::spawn(
        client_runtime.handle(),
        ClientConfig {
            url,
            fallback_urls: Vec::new(),
            uid: "pinger".into(),
            auth_token: None,
            name: None,
            backoff: Backoff::default(),
            ca_file: None,
        },
    );

    let decoded = |app: &App| -> Vec<u64> {
        let call = app.world().resource::<ActiveCall>().0;
        let stats = call.and_then(|c| app.world().get::<MediaStats>(c));
        let mut counts: Vec<(String, u64)> = stats
            .map(|s| {
                s.remotes
                    .iter()
                    .map(|(uid, r)| (uid.clone(), r.video_frames_decoded))
                    .collect()
            })
            .unwrap_or_default();
        counts.sort();
        counts.into_iter().map(|(_, n)| n).collect()
    };
    let tick = |app: &mut App| {
        let next = Instant::now() + Duration::from_millis(16);
        app.update();
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    };

    // Warm-up: everyone joined and video flowing, then a few more seconds.
    let setup_deadline = Instant::now() + Duration::from_secs(60);
    while decoded(&client).iter().filter(|n| **n > 0).count() < options.remotes {
        assert!(
            Instant::now() < setup_deadline,
            "video from every remote within 60 s (got {:?})",
            decoded(&client)
        );
        tick(&mut client);
    }
    let warm_until = Instant::now() + Duration::from_secs_f64(options.warmup);
    while Instant::now() < warm_until {
        tick(&mut client);
    }

    // Measure.
    let (pings_tx, pings_rx) = std::sync::mpsc::channel::<f64>();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pinging = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut logged_in = false;
            while !logged_in {
                match pinger.events.recv_timeout(Duration::from_secs(10)) {
                    Ok(ClientEvent::Connected { .. }) => logged_in = true,
                    Ok(_) => {}
                    Err(err) => panic!("pinger never logged in: {err}"),
                }
            }
            let mut id = 1;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let sent = Instant::now();
                pinger.send(ClientCommand::Request {
                    id,
                    request: Request::Ping {},
                });
                loop {
                    match pinger.events.recv_timeout(Duration::from_secs(5)) {
                        Ok(ClientEvent::Answer { id: answered, .. }) if answered == id => break,
                        Ok(_) => {}
                        Err(err) => panic!("no pong: {err}"),
                    }
                }
                let _ = pings_tx.send(sent.elapsed().as_secs_f64() * 1000.0);
                id += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let before = decoded(&client);
    client.world_mut().resource_mut::<FrameSpans>().measuring = true;
    let measure_start = Instant::now();
    while measure_start.elapsed().as_secs_f64() < options.seconds {
        tick(&mut client);
    }
    let elapsed = measure_start.elapsed().as_secs_f64();
    client.world_mut().resource_mut::<FrameSpans>().measuring = false;
    let after = decoded(&client);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    pinging.join().expect("pinger");

    let mut pings: Vec<f64> = pings_rx.try_iter().collect();
    pings.sort_by(f64::total_cmp);
    let spans = client.world().resource::<FrameSpans>();
    let mut frames = spans.millis.clone();
    frames.sort_by(f64::total_cmp);
    let mean = frames.iter().sum::<f64>() / frames.len().max(1) as f64;
    let mut cpu = spans.cpu_millis.clone();
    cpu.sort_by(f64::total_cmp);
    let cpu_mean = cpu.iter().sum::<f64>() / cpu.len().max(1) as f64;
    let fps: Vec<String> = after
        .iter()
        .zip(before.iter())
        .map(|(a, b)| format!("{:.1}", (a - b) as f64 / elapsed))
        .collect();
    println!(
        "remotes={} video={}x{} decoded_fps=[{}] pings={} ping_p50_ms={:.2} ping_p99_ms={:.2} \
         ping_max_ms={:.2} frames={} main_p50_ms={:.3} main_p99_ms={:.3} main_mean_ms={:.3} \
         main_cpu_p50_ms={:.3} main_cpu_p99_ms={:.3} main_cpu_mean_ms={:.3}",
        options.remotes,
        options.width,
        options.height,
        fps.join(","),
        pings.len(),
        percentile(&pings, 0.5),
        percentile(&pings, 0.99),
        pings.last().copied().unwrap_or(f64::NAN),
        frames.len(),
        percentile(&frames, 0.5),
        percentile(&frames, 0.99),
        mean,
        percentile(&cpu, 0.5),
        percentile(&cpu, 0.99),
        cpu_mean,
    );
    // The bots' threads run until the process ends.
    std::process::exit(0);
}
