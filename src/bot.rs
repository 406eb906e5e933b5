//! `huddle bot`: the same ECS plugins in a headless app (no window, no GPU), for tests,
//! benchmarks and demos.
//!
//! 1. Logs in to `--server` as `--uid`.
//! 2. `--call UID` / `--group GUID` places a call (video unless `--audio`); `--answer` accepts
//!    incoming calls; `--session ID` joins a direct session. Either way it gets a call token
//!    and starts the session once the call is accepted.
//! 3. It stays `--seconds` in the call, sending the synthetic pattern and its tone over real
//!    WebRTC, then hangs up and writes its statistics as JSON (`--stats-json`).
//! 4. `--record PATH` records the call from the moment it joins (everyone's video and audio
//!    as received, into one Matroska file) and finishes the file before hanging up.
//!
//! `call_setup_ms` runs from placing (or receiving) the call to the first remote video frame
//! decoded (first audio frame in an audio call).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bevy::app::ScheduleRunnerPlugin;
use bevy::ecs::schedule::SingleThreadedExecutor;
use bevy::prelude::*;
use bevy_huddle::media::{CallMediaSession, MediaSettings, MediaStats, RecordingSettings};
use bevy_huddle::prelude::*;
use clap::ValueEnum;
use huddle_media::video::EncoderSettings;
use huddle_protocol::{CallType, ReceiverType};
use serde::Serialize;

/// Where the bot's media comes from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum MediaArg {
    /// The moving test pattern and a tone.
    #[default]
    Synthetic,
    /// The first real camera, microphone and speaker of this machine; a kind with none (or
    /// one that fails to open) falls back to its synthetic stand-in, noted in `errors`.
    Devices,
}

/// Options of `huddle bot`.
#[derive(Clone, Debug, clap::Args)]
pub struct BotArgs {
    /// Server WebSocket URL, e.g. ws://127.0.0.1:7878/ws.
    #[arg(long)]
    pub server: String,
    /// Another node of the same cluster, repeatable: tried in turn after `--server` when the
    /// connection drops.
    #[arg(long = "fallback-server", value_name = "URL")]
    pub fallback_servers: Vec<String>,
    /// User id to log in as (dev login).
    #[arg(long)]
    pub uid: String,
    /// Display name.
    #[arg(long)]
    pub name: Option<String>,
    /// Auth token (instead of dev login).
    #[arg(long)]
    pub auth_token: Option<String>,
    /// Accept incoming calls.
    #[arg(long)]
    pub answer: bool,
    /// Call this user.
    #[arg(long, conflicts_with = "group")]
    pub call: Option<String>,
    /// Call this group.
    #[arg(long)]
    pub group: Option<String>,
    /// Join this direct session (no ringing).
    #[arg(long, conflicts_with_all = ["call", "group"])]
    pub session: Option<String>,
    /// A video call (the default).
    #[arg(long, conflicts_with = "audio")]
    pub video: bool,
    /// An audio-only call.
    #[arg(long)]
    pub audio: bool,
    /// Seconds to stay in the call.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Give up if no call started within this many seconds.
    #[arg(long, default_value_t = 60)]
    pub wait: u64,
    /// Write statistics here as JSON on exit.
    #[arg(long)]
    pub stats_json: Option<PathBuf>,
    /// Media source.
    #[arg(long, value_enum, default_value_t = MediaArg::Synthetic)]
    pub media: MediaArg,
    /// Video width.
    #[arg(long, default_value_t = 1280)]
    pub width: u32,
    /// Video height.
    #[arg(long, default_value_t = 720)]
    pub height: u32,
    /// Video frames per second.
    #[arg(long, default_value_t = 30.0)]
    pub fps: f32,
    /// Video bitrate in kbps.
    #[arg(long, default_value_t = 2500)]
    pub kbps: u32,
    /// The synthetic voice talks in turns, e.g. `2s-on-3s-off` (default: it never stops).
    #[arg(long, value_name = "PATTERN")]
    pub talk_pattern: Option<huddle_media::speech::TalkPattern>,
    /// Send stereo audio (synthetic: a second tone, 1.5 × the first, on the right).
    #[arg(long)]
    pub stereo: bool,
    /// Record the call into this Matroska (.mkv) file.
    #[arg(long)]
    pub record: Option<PathBuf>,
    /// Gather ICE candidates on this local address only (e.g. `10.0.0.2:0`), repeatable;
    /// by default every interface that is up, loopback included.
    #[arg(long = "bind", value_name = "ADDR")]
    pub bind: Vec<std::net::SocketAddr>,
    /// Trust the CA certificates in this PEM file too (a `wss://` server with its own CA).
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Ask every remote for at most this much video, as a small tile would (in a mesh their
    /// bitrate; through the SFU it picks the simulcast layer: below 500 the quarter picture,
    /// below 1500 the half).
    #[arg(long, value_name = "KBPS")]
    pub want_video_kbps: Option<u32>,
    /// Want none of this participant's video, as a hidden tile would (repeatable): their
    /// sender (in a mesh) or the SFU stops sending it to us.
    #[arg(long = "hide-video-of", value_name = "UID")]
    pub hide_video_of: Vec<String>,
}

/// The bot's progress.
#[derive(Resource, Debug)]
struct Bot {
    args: BotArgs,
    started: Instant,
    call_placed_at: Option<Instant>,
    in_call_since: Option<Instant>,
    hung_up_at: Option<Instant>,
    session_id: Option<String>,
    /// The call we answered is an audio call (joined without video, whatever `--audio` says).
    answered_audio_call: bool,
    errors: Vec<String>,
    exit_code: u8,
    timeline: Timeline,
}

/// Once a second in the call: each remote's decoded video frames so far, and congestion
/// control's target for our video.
#[derive(Debug, Default)]
struct Timeline {
    next_sample: Option<Instant>,
    frames: std::collections::BTreeMap<String, Vec<u64>>,
    target_bps: Vec<u32>,
    /// Each remote's figures at the last sample: a participant who left before us is still
    /// in our report, with what we had of them.
    last_seen: std::collections::BTreeMap<String, bevy_huddle::media::RemoteMediaStats>,
}

/// Statistics written on exit.
#[derive(Serialize, Debug, Default)]
pub struct BotStats {
    /// Who.
    pub uid: String,
    /// The call's session.
    pub session_id: String,
    /// Placing/receiving the call → first remote media decoded.
    pub call_setup_ms: Option<u64>,
    /// What was sent.
    pub sent: SentStats,
    /// What was received, per remote uid.
    pub remotes: std::collections::BTreeMap<String, RemoteStats>,
    /// The recording (`--record`), once finished.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recording: Option<RecordingStats>,
    /// Errors seen.
    pub errors: Vec<String>,
}

/// What `--record` wrote.
#[derive(Serialize, Debug, Default)]
pub struct RecordingStats {
    /// The file.
    pub path: PathBuf,
    /// Its length, in milliseconds.
    pub duration_ms: u64,
    /// Its tracks: (participant, "video"/"audio", frames).
    pub tracks: Vec<(String, String, u64)>,
}

/// What was sent.
#[derive(Serialize, Debug, Default)]
pub struct SentStats {
    /// Video frames.
    pub video_frames: u64,
    /// Frames of the camera's half-size simulcast layer sent to the SFU (left out while
    /// nobody receives it).
    pub video_medium_layer_frames: u64,
    /// The same for the quarter-size layer.
    pub video_low_layer_frames: u64,
    /// Audio frames (20 ms).
    pub audio_frames: u64,
    /// The tone sent.
    pub audio_tone_hz: f32,
    /// Congestion control's target bitrate for our video at the end, bits per second.
    pub video_target_bps: u32,
    /// The same, once a second from joining.
    pub video_target_bps_per_second: Vec<u32>,
}

/// Latency percentiles.
#[derive(Serialize, Debug, Default)]
pub struct Percentiles {
    /// Median.
    pub p50: u32,
    /// 95th percentile.
    pub p95: u32,
    /// Maximum.
    pub max: u32,
}

/// What was received from one participant.
#[derive(Serialize, Debug, Default)]
pub struct RemoteStats {
    /// Video frames decoded.
    pub video_frames_decoded: u64,
    /// Video frames decoded in each second from joining.
    pub video_frames_per_second: Vec<u64>,
    /// Pictures after a stamped one whose stamp could not be read (broken pictures).
    pub video_frames_unstamped: u64,
    /// Width of the last frame.
    pub video_width: u32,
    /// Height of the last frame.
    pub video_height: u32,
    /// Decoded frames per second once video flows (the seconds before the first picture,
    /// and the first second with pictures, left out).
    pub video_fps: f32,
    /// Capture → decoded latency from the stamps; absent when their pictures carry none (a
    /// browser's camera, a real one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub video_latency_ms: Option<Percentiles>,
    /// Audio frames decoded.
    pub audio_frames_decoded: u64,
    /// Audio packets received but not decoded (not among the loudest few of a large call).
    pub audio_frames_skipped: u64,
    /// Tone heard (the left channel of stereo).
    pub audio_tone_hz: Option<f32>,
    /// Channels of their audio (1 mono, 2 stereo).
    pub audio_channels: u8,
    /// Share of audio frames concealed (packet-loss concealment).
    pub audio_concealed_ratio: f32,
    /// Share of audio frames lost but recovered from in-band FEC.
    pub audio_recovered_ratio: f32,
    /// The candidate pair that carried the media last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ice: Option<huddle_media::ice::CandidatePath>,
    /// ICE restarts this side made on the connection.
    pub ice_restarts: u32,
}

/// How often the bot's schedule runs. Media flows on its own threads; the schedule only
/// handles signaling, state and the once-a-second figures, so 30 Hz (as the demo's embedded
/// bots) is plenty. At 120 Hz a bot in a call of four through the SFU took 40 % of a core
/// (`scripts/bench-sfu 4`, debug build), at 30 Hz 28 %.
pub(crate) const BOT_TICK: Duration = Duration::from_nanos(1_000_000_000 / 30);

/// Runs the bot; returns the exit code.
pub fn run(args: BotArgs) -> ExitCode {
    let mut app = App::new();
    app.add_plugins((
        MinimalPlugins.set(ScheduleRunnerPlugin::run_loop(BOT_TICK)),
        AssetPlugin::default(),
        bevy::log::LogPlugin::default(),
        HuddlePlugins,
    ))
    .insert_resource(RecordingSettings {
        file: args.record.clone(),
        ..RecordingSettings::default()
    })
    .insert_resource(MediaSettings {
        video: EncoderSettings {
            width: args.width & !1,
            height: args.height & !1,
            fps: args.fps,
            bitrate_bps: args.kbps.saturating_mul(1000),
            keyframe_interval: (args.fps * 4.0) as u32,
        },
        stereo_audio: args.stereo,
        talk_pattern: args.talk_pattern,
        // Headless: nobody looks at our own tile.
        local_preview: false,
        // The bot reports latency and tones.
        measure: true,
        bind_addrs: if args.bind.is_empty() {
            huddle_media::ice::all_interfaces()
        } else {
            args.bind.iter().map(ToString::to_string).collect()
        },
        ..MediaSettings::default()
    })
    .add_systems(
        Update,
        (drive_bot, record_errors, sample_timeline).after(HuddleSystems::Apply),
    );
    if args.want_video_kbps.is_some() || !args.hide_video_of.is_empty() {
        // After the view has published what is on screen, so that media asks for this.
        let (kbps, hidden) = (args.want_video_kbps, args.hide_video_of.clone());
        app.add_systems(
            PostUpdate,
            (move |demands: Query<(&Participant, &mut VideoDemand)>| {
                want_video_as_asked(demands, kbps, &hidden)
            })
            .after(HuddleSystems::Layout),
        );
    }
    let mut connection = ServerConnection::dev(args.server.clone(), args.uid.clone());
    connection.fallback_urls = args.fallback_servers.clone();
    if let Some(name) = &args.name {
        connection = connection.with_name(name.clone());
    }
    if let Some(token) = &args.auth_token {
        connection = connection.with_auth_token(token.clone());
    }
    if let Some(ca_file) = &args.ca_file {
        connection = connection.with_ca_file(ca_file.clone());
    }
    app.world_mut().spawn(connection);
    let mut missing_devices = Vec::new();
    if args.media == MediaArg::Devices {
        let lists = huddle_media::devices::enumerate();
        // The lists first (so the choices below find the real devices), then the choices.
        app.insert_resource(MediaDevices::new(lists.clone()));
        for (kind, list) in [
            (DeviceKind::AudioInput, &lists.audio_inputs),
            (DeviceKind::AudioOutput, &lists.audio_outputs),
            (DeviceKind::VideoInput, &lists.video_inputs),
        ] {
            match list.iter().find(|d| !d.synthetic) {
                Some(device) => {
                    app.world_mut().write_message(match kind {
                        DeviceKind::AudioInput => {
                            CallAction::SetAudioInputDevice(device.id.clone())
                        }
                        DeviceKind::AudioOutput => {
                            CallAction::SetAudioOutputDevice(device.id.clone())
                        }
                        DeviceKind::VideoInput => {
                            CallAction::SetVideoInputDevice(device.id.clone())
                        }
                    });
                }
                None => {
                    missing_devices.push(format!("no real {kind} device; using the synthetic one"))
                }
            }
        }
    }
    app.insert_resource(Bot {
        args,
        started: Instant::now(),
        call_placed_at: None,
        in_call_since: None,
        hung_up_at: None,
        session_id: None,
        answered_audio_call: false,
        errors: missing_devices,
        exit_code: 0,
        timeline: Timeline::default(),
    });
    run_schedules_on_this_thread(&mut app);
    match app.run() {
        AppExit::Success => ExitCode::SUCCESS,
        AppExit::Error(code) => ExitCode::from(code.get()),
    }
}

/// Makes every schedule of `app` run its systems on the thread that runs the app. A bot is
/// one of many processes on a machine (twelve on two cores in the SFU tests): there, the
/// multi-threaded executor's hand-offs to the task pool and back cost more than the
/// systems. With this and [`BOT_TICK`], a bot in a call of four took 20 % of a core instead
/// of 40 % (`scripts/bench-sfu 4`). Plugins are finished first, so that the schedules they
/// add are there too.
fn run_schedules_on_this_thread(app: &mut App) {
    if app.plugins_state() == bevy::app::PluginsState::Ready {
        app.finish();
        app.cleanup();
    }
    for (_, schedule) in app.world_mut().resource_mut::<Schedules>().iter_mut() {
        schedule.set_executor(SingleThreadedExecutor::new());
    }
}

/// `--want-video-kbps` and `--hide-video-of`: each remote's video demand is that cap, or
/// paused, whatever the view published.
fn want_video_as_asked(
    mut demands: Query<(&Participant, &mut VideoDemand)>,
    kbps: Option<u32>,
    hidden: &[String],
) {
    for (who, mut demand) in &mut demands {
        let paused = hidden.contains(&who.uid);
        let max_bitrate_bps = match kbps {
            Some(kbps) if !paused => kbps.saturating_mul(1000),
            _ => demand.max_bitrate_bps,
        };
        let asked = VideoDemand {
            paused,
            max_bitrate_bps,
            wanted_size: demand.wanted_size,
        };
        demand.set_if_neq(asked);
    }
}

fn sample_timeline(
    mut bot: ResMut<Bot>,
    active: Res<ActiveCall>,
    calls: Query<(&MediaStats, &CallMediaSession)>,
) {
    let Some(since) = bot.in_call_since else {
        return;
    };
    if bot.hung_up_at.is_some() {
        return;
    }
    let Some((stats, media)) = active.0.and_then(|call| calls.get(call).ok()) else {
        return;
    };
    let now = Instant::now();
    let timeline = &mut bot.timeline;
    let due = *timeline
        .next_sample
        .get_or_insert(since + Duration::from_secs(1));
    if now < due {
        return;
    }
    timeline.next_sample = Some(due + Duration::from_secs(1));
    let second = timeline.target_bps.len();
    timeline
        .target_bps
        .push(media.session().target_bitrate_bps());
    for (uid, remote) in &stats.remotes {
        let totals = timeline.frames.entry(uid.clone()).or_default();
        totals.resize(second, 0);
        totals.push(remote.video_frames_decoded);
        timeline.last_seen.insert(uid.clone(), remote.clone());
    }
}

/// Per-second deltas of running totals.
fn per_second(totals: &[u64]) -> Vec<u64> {
    let mut previous = 0;
    totals
        .iter()
        .map(|&total| {
            let delta = total.saturating_sub(previous);
            previous = total;
            delta
        })
        .collect()
}

fn call_settings(args: &BotArgs) -> CallSettings {
    CallSettings::builder()
        .audio_only(args.audio)
        .start_recording_on_call_start(args.record.is_some())
        .build()
        .unwrap_or_default()
}

fn record_errors(
    mut events: MessageReader<CallEvent>,
    mut ringing: MessageReader<RingingEvent>,
    mut bot: ResMut<Bot>,
) {
    for event in events.read() {
        if let CallEvent::Error { error, .. } = event {
            bot.errors.push(format!("{}: {error}", error.code()));
        }
    }
    for event in ringing.read() {
        if let RingingEvent::Failed { error } = event {
            bot.errors.push(format!("{}: {error}", error.code()));
        }
    }
}

fn drive_bot(
    mut bot: ResMut<Bot>,
    mut ringing_events: MessageReader<RingingEvent>,
    mut ringing: MessageWriter<RingingAction>,
    mut start: MessageWriter<StartSession>,
    mut controls: CallControls,
    active: Res<ActiveCall>,
    calls: Query<(
        &Call,
        &CallState,
        Option<&MediaStats>,
        Option<&CallMediaSession>,
    )>,
    mut exit: MessageWriter<AppExit>,
) {
    let args = bot.args.clone();
    for event in ringing_events.read() {
        match event {
            RingingEvent::LoggedIn {
                reconnected: false, ..
            } => {
                let call_type = if args.audio {
                    CallType::Audio
                } else {
                    CallType::Video
                };
                if let Some(uid) = &args.call {
                    bot.call_placed_at = Some(Instant::now());
                    ringing.write(RingingAction::InitiateCall {
                        receiver_id: uid.clone(),
                        receiver_type: ReceiverType::User,
                        call_type,
                        timeout_secs: None,
                    });
                } else if let Some(guid) = &args.group {
                    bot.call_placed_at = Some(Instant::now());
                    ringing.write(RingingAction::InitiateCall {
                        receiver_id: guid.clone(),
                        receiver_type: ReceiverType::Group,
                        call_type,
                        timeout_secs: None,
                    });
                } else if let Some(session) = &args.session {
                    bot.call_placed_at = Some(Instant::now());
                    ringing.write(RingingAction::GenerateToken {
                        session_id: session.clone(),
                    });
                }
            }
            RingingEvent::IncomingCallReceived { call }
                if args.answer && bot.session_id.is_none() =>
            {
                bot.call_placed_at = Some(Instant::now());
                bot.session_id = Some(call.session_id.clone());
                bot.answered_audio_call = call.call_type == CallType::Audio;
                ringing.write(RingingAction::AcceptCall {
                    session_id: call.session_id.clone(),
                });
                ringing.write(RingingAction::GenerateToken {
                    session_id: call.session_id.clone(),
                });
            }
            RingingEvent::OutgoingCallAccepted { call, .. } if bot.session_id.is_none() => {
                bot.session_id = Some(call.session_id.clone());
                ringing.write(RingingAction::GenerateToken {
                    session_id: call.session_id.clone(),
                });
            }
            RingingEvent::OutgoingCallRejected { call } => {
                bot.errors.push(format!("call {:?}", call.status));
                bot.exit_code = 1;
                exit.write(AppExit::from_code(1));
            }
            RingingEvent::TokenGenerated {
                session_id,
                call_token,
            } => {
                bot.session_id = Some(session_id.clone());
                let mut settings = call_settings(&args);
                settings.audio_only |= bot.answered_audio_call;
                start.write(StartSession {
                    call_token: call_token.clone(),
                    settings,
                    target: None,
                });
            }
            _ => {}
        }
    }
    let call = active.0.and_then(|c| calls.get(c).ok());
    if let Some((_, CallState::InCall, ..)) = call
        && bot.in_call_since.is_none()
    {
        bot.in_call_since = Some(Instant::now());
    }
    let now = Instant::now();
    let ended = call.is_some_and(|(_, state, ..)| state.is_ended());
    let done_talking = bot
        .in_call_since
        .is_some_and(|t| now.duration_since(t) >= Duration::from_secs(args.seconds));
    let waited_too_long = bot.in_call_since.is_none()
        && now.duration_since(bot.started) >= Duration::from_secs(args.wait);
    if bot.hung_up_at.is_none() && (done_talking || ended || waited_too_long) {
        if let Some((info, state, stats, media)) = call {
            if !state.is_ended() {
                controls.end_session();
            }
            let mut stats = collect_stats(&bot, info, stats, media);
            // Finish the recording before leaving, so the stats can say what it holds.
            match media.and_then(|m| m.session().stop_recording()) {
                Some(Ok(summary)) => {
                    stats.recording = Some(RecordingStats {
                        path: summary.path,
                        duration_ms: summary.duration_ms,
                        tracks: summary
                            .tracks
                            .into_iter()
                            .map(|t| {
                                (
                                    t.participant,
                                    format!("{:?}", t.kind).to_lowercase(),
                                    t.frames,
                                )
                            })
                            .collect(),
                    });
                }
                Some(Err(err)) => stats.errors.push(format!("recording: {err}")),
                None if args.record.is_some() => {
                    stats.errors.push("recording: never started".into());
                    bot.exit_code = 1;
                }
                None => {}
            }
            write_stats(&args, &stats);
            if stats
                .remotes
                .values()
                .all(|r| r.video_frames_decoded == 0 && r.audio_frames_decoded == 0)
            {
                bot.exit_code = 1;
            }
        } else {
            bot.errors.push("no call took place".into());
            write_stats(
                &args,
                &BotStats {
                    uid: args.uid.clone(),
                    errors: bot.errors.clone(),
                    ..default()
                },
            );
            bot.exit_code = 1;
        }
        bot.hung_up_at = Some(now);
    }
    // Leave a moment for the hang-up to reach the server.
    if bot
        .hung_up_at
        .is_some_and(|t| now.duration_since(t) > Duration::from_millis(300))
    {
        exit.write(if bot.exit_code == 0 {
            AppExit::Success
        } else {
            AppExit::from_code(bot.exit_code)
        });
    }
}

fn percentiles(samples: &[u32]) -> Percentiles {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let at = |p: f64| {
        sorted
            .get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    Percentiles {
        p50: at(0.5),
        p95: at(0.95),
        max: sorted.last().copied().unwrap_or(0),
    }
}

fn collect_stats(
    bot: &Bot,
    info: &Call,
    stats: Option<&MediaStats>,
    media: Option<&CallMediaSession>,
) -> BotStats {
    let mut out = BotStats {
        uid: bot.args.uid.clone(),
        session_id: info.session_id.clone(),
        errors: bot.errors.clone(),
        ..default()
    };
    if let Some(media) = media {
        let counters = media.session().counters();
        out.sent = SentStats {
            video_frames: counters
                .video_frames_sent
                .load(std::sync::atomic::Ordering::Relaxed),
            audio_frames: counters
                .audio_frames_sent
                .load(std::sync::atomic::Ordering::Relaxed),
            video_medium_layer_frames: counters.smaller_layer_frames_sent[0]
                .load(std::sync::atomic::Ordering::Relaxed),
            video_low_layer_frames: counters.smaller_layer_frames_sent[1]
                .load(std::sync::atomic::Ordering::Relaxed),
            audio_tone_hz: huddle_media::audio::tone_frequency_for(&bot.args.uid),
            video_target_bps: media.session().target_bitrate_bps(),
            video_target_bps_per_second: bot.timeline.target_bps.clone(),
        };
    }
    if let Some(stats) = stats {
        out.call_setup_ms = match (bot.call_placed_at, stats.first_remote_media) {
            (Some(placed), Some(first)) => {
                Some(first.saturating_duration_since(placed).as_millis() as u64)
            }
            _ => None,
        };
        let in_call = bot
            .in_call_since
            .map(|t| t.elapsed().as_secs_f32())
            .unwrap_or(0.0)
            .max(0.001);
        // Who is still here, and who left before us (as last seen).
        let mut remotes = bot.timeline.last_seen.clone();
        remotes.extend(stats.remotes.iter().map(|(u, r)| (u.clone(), r.clone())));
        for (uid, remote) in &remotes {
            let per_second = per_second(
                bot.timeline
                    .frames
                    .get(uid)
                    .map(Vec::as_slice)
                    .unwrap_or_default(),
            );
            // From the first second with video on, that (partial) second left out: the
            // connection's set-up does not count.
            let flowing: Vec<u64> = per_second.iter().copied().skip_while(|&n| n == 0).collect();
            let fps = match flowing.split_first() {
                Some((_, rest)) if !rest.is_empty() => {
                    rest.iter().sum::<u64>() as f32 / rest.len() as f32
                }
                _ => remote.video_frames_decoded as f32 / in_call,
            };
            out.remotes.insert(
                uid.clone(),
                RemoteStats {
                    video_frames_decoded: remote.video_frames_decoded,
                    video_frames_per_second: per_second,
                    video_frames_unstamped: remote.video_frames_unstamped,
                    video_width: remote.video_size.x,
                    video_height: remote.video_size.y,
                    video_fps: fps,
                    video_latency_ms: (!remote.video_latency_ms.is_empty())
                        .then(|| percentiles(&remote.video_latency_ms)),
                    audio_frames_decoded: remote.audio_frames_decoded,
                    audio_frames_skipped: remote.audio_frames_skipped,
                    audio_tone_hz: remote.audio_tone_hz,
                    audio_channels: remote.audio_channels,
                    audio_concealed_ratio: if remote.audio_frames_decoded == 0 {
                        0.0
                    } else {
                        remote.audio_frames_concealed as f32 / remote.audio_frames_decoded as f32
                    },
                    audio_recovered_ratio: if remote.audio_frames_decoded == 0 {
                        0.0
                    } else {
                        remote.audio_frames_recovered as f32 / remote.audio_frames_decoded as f32
                    },
                    ice: remote.ice.clone(),
                    ice_restarts: remote.ice_restarts,
                },
            );
        }
    }
    out
}

fn write_stats(args: &BotArgs, stats: &BotStats) {
    let json = serde_json::to_string_pretty(stats).unwrap_or_default();
    match &args.stats_json {
        Some(path) => {
            if let Err(err) = std::fs::write(path, &json) {
                eprintln!("huddle bot: cannot write {}: {err}", path.display());
            }
        }
        None => println!("{json}"),
    }
}
