//! The web client in a real browser: Debian's Chromium, headless with fake camera, microphone
//! and screen, driven through Debian's chromedriver (WebDriver, with `fantoccini`), against an
//! in-process server with the app's dev lobby, `huddle bot` processes and a headless Bevy app.
//!
//! What a person does is done with real input (typing into the login form, clicking the
//! contact's call button, Accept, Mute, Join, Share screen); what they get is read from the
//! page's `getStats` (through `window.huddle.stats()`), the bots' `--stats-json`, the app's
//! ECS, and a decoded screenshot of the page.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bevy::prelude::*;
use bevy_huddle::prelude::*;
use fantoccini::{Client, ClientBuilder, Locator};
use huddle::embedded::{JoinOnLogin, join_on_login};
use serde_json::{Value, json};

use crate::app_model::Server;

/// Headless Chromium behind a chromedriver of its own; dropping it ends both and removes
/// the profile folder, also when a test fails.
struct Browser {
    runtime: tokio::runtime::Runtime,
    client: Option<Client>,
    driver: Child,
    profile: PathBuf,
}

impl Browser {
    fn start(name: &str) -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian's chromium-driver, installed by scripts/setup)");
        let profile =
            std::env::temp_dir().join(format!("huddle-chromium-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&profile);
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                    "--auto-select-desktop-capture-source=Entire screen",
                    "--autoplay-policy=no-user-gesture-required",
                    "--window-size=1280,720",
                    // The network lab's server is not on loopback: let its plain-HTTP page
                    // have the camera and microphone, as only secure origins do.
                    format!(
                        "--unsafely-treat-insecure-origin-as-secure=http://{}:7878",
                        crate::net_lab::SERVER_IP
                    ),
                    format!("--user-data-dir={}", profile.display()),
                ],
            }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            let attempt = runtime.block_on(
                ClientBuilder::new(connector)
                    .capabilities(capabilities.clone())
                    .connect(&url),
            );
            match attempt {
                Ok(client) => break client,
                Err(err) if Instant::now() > deadline => {
                    let _ = driver.kill();
                    panic!("no WebDriver session: {err}")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        };
        Self {
            runtime,
            client: Some(client),
            driver,
            profile,
        }
    }

    fn client(&self) -> &Client {
        self.client.as_ref().expect("open")
    }

    fn open(&self, url: &str) {
        self.runtime
            .block_on(self.client().goto(url))
            .expect("page loads");
    }

    /// Runs `body` (an async function body that `return`s a JSON-able value) in the page.
    fn eval(&self, body: &str) -> Value {
        let script = format!(
            "const done = arguments[arguments.length - 1];\
             (async () => {{ {body} }})().then(done, (e) => done({{ error: String(e) }}));"
        );
        let value = self
            .runtime
            .block_on(self.client().execute_async(&script, Vec::new()))
            .expect("script runs");
        assert!(value.get("error").is_none(), "page script failed: {value}");
        value
    }

    /// Evaluates `body` until `done` holds for its value, or fails after `limit`.
    fn wait_for(
        &self,
        what: &str,
        limit: Duration,
        body: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let value = self.eval(body);
            if done(&value) {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {value}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The page's media statistics per remote uid.
    fn stats(&self) -> Value {
        self.eval("return await window.huddle.stats();")
    }

    /// Waits until the page's `condition` (a JS expression) is true, for at most `limit`.
    fn wait_until(&self, what: &str, limit: Duration, condition: &str) {
        self.wait_for(what, limit, &format!("return !!({condition});"), |v| {
            v == &json!(true)
        });
    }

    fn wait_stats(&self, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        self.wait_for(
            what,
            Duration::from_secs(20),
            "return await window.huddle.stats();",
            done,
        )
    }

    /// Clicks the element, as a person would (WebDriver's element click: real input events).
    fn click(&self, css: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let clicked = self.runtime.block_on(async {
                let element = self.client().find(Locator::Css(css)).await?;
                element.click().await
            });
            match clicked {
                Ok(()) => return,
                Err(err) if Instant::now() > deadline => panic!("cannot click {css}: {err}"),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    fn type_into(&self, css: &str, text: &str) {
        self.runtime
            .block_on(async {
                let element = self.client().find(Locator::Css(css)).await?;
                element.send_keys(text).await
            })
            .unwrap_or_else(|err| panic!("cannot type into {css}: {err}"));
    }

    /// Opens the web client of `server` and logs in as `uid` (dev login) from the form.
    fn log_in(&self, server: &Server, uid: &str) {
        let web = huddle::embedded::web_client_url(&server.url).expect("web URL");
        self.log_in_at(&web, uid);
    }

    /// Opens the web client at `web` and logs in as `uid` (dev login) from the form.
    fn log_in_at(&self, web: &str, uid: &str) {
        self.open(web);
        self.type_into("#login-uid", uid);
        self.type_into("#login-name", &uid.to_uppercase());
        self.click("#login-button");
        self.wait_until(
            "the home screen",
            Duration::from_secs(10),
            "!document.getElementById('home-view').hidden",
        );
    }

    fn screenshot(&self) -> image::RgbaImage {
        let png = self
            .runtime
            .block_on(self.client().screenshot())
            .expect("screenshot");
        image::load_from_memory(&png).expect("a PNG").to_rgba8()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            let _ = self.runtime.block_on(async {
                tokio::time::timeout(Duration::from_secs(5), client.close()).await
            });
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// The page's tile of `key` (a uid) shows a moving test pattern, as a person sees it in the
/// page's screenshot: many colours, and a change within 1 s.
fn assert_tile_shows_moving_picture(browser: &Browser, key: &str) {
    let tile = browser.eval(
        &format!(
            "const r = document.querySelector(\".tile[data-key='{key}'] video\").getBoundingClientRect();\
             return [r.x, r.y, r.width, r.height, window.devicePixelRatio];"
        ),
    );
    let rect: Vec<f64> = serde_json::from_value(tile).expect("a rectangle");
    let crop = |shot: &image::RgbaImage| {
        let scale = rect[4];
        image::imageops::crop_imm(
            shot,
            (rect[0] * scale) as u32,
            (rect[1] * scale) as u32,
            (rect[2] * scale) as u32,
            (rect[3] * scale) as u32,
        )
        .to_image()
    };
    let before = crop(&browser.screenshot());
    std::thread::sleep(Duration::from_secs(1));
    let after = crop(&browser.screenshot());
    let colours: std::collections::HashSet<[u8; 3]> = before
        .pixels()
        .map(|p| [p[0] / 32, p[1] / 32, p[2] / 32])
        .collect();
    assert!(
        colours.len() >= 6,
        "{key}'s tile shows the pattern: {} colours",
        colours.len()
    );
    let changed = before
        .pixels()
        .zip(after.pixels())
        .filter(|(a, b)| a.0.iter().zip(b.0.iter()).any(|(x, y)| x.abs_diff(*y) > 40))
        .count();
    assert!(
        changed > 100,
        "{key}'s picture moves: {changed} pixels changed"
    );
}

/// A `huddle bot` process (small video), killed if the test ends first.
struct Bot {
    child: Child,
    stats: PathBuf,
}

impl Bot {
    fn start(server: &Server, uid: &str, extra: &[&str]) -> Self {
        let stats =
            std::env::temp_dir().join(format!("huddle-browser-{uid}-{}.json", std::process::id()));
        let _ = std::fs::remove_file(&stats);
        let child = Command::new(env!("CARGO_BIN_EXE_huddle"))
            .args(["bot", "--server", &server.url, "--uid", uid])
            .args(["--width", "320", "--height", "180", "--kbps", "400"])
            .arg("--stats-json")
            .arg(&stats)
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("huddle bot starts");
        Self { child, stats }
    }

    /// Waits for the bot to leave and returns its statistics.
    fn finish(mut self) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.child.try_wait().expect("wait").is_none() {
            assert!(Instant::now() < deadline, "bot did not finish");
            std::thread::sleep(Duration::from_millis(100));
        }
        let stats = std::fs::read(&self.stats).expect("bot statistics");
        serde_json::from_slice(&stats).expect("json")
    }
}

impl Drop for Bot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.stats);
    }
}

/// Updates the app until `ready` says so (`Ok`), or fails after `limit` with its last reason.
fn pump_until(
    app: &mut App,
    limit: Duration,
    mut ready: impl FnMut(&mut App) -> Result<(), String>,
) {
    let deadline = Instant::now() + limit;
    loop {
        app.update();
        match ready(app) {
            Ok(()) => return,
            Err(reason) => assert!(Instant::now() < deadline, "timed out: {reason}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether the app shows pictures of `uid` in one of its tiles: the camera tile, or with
/// `screen` the screen-share tile.
fn app_shows_video_of(app: &mut App, uid: &str, screen: bool) -> bool {
    let world = app.world_mut();
    let mut tiles = world.query::<(&VideoTile, &TileOf, Has<ScreenShareTile>)>();
    let owners: Vec<Entity> = tiles
        .iter(world)
        .filter(|(tile, _, is_screen)| tile.has_video() && *is_screen == screen)
        .map(|(_, of, _)| of.0)
        .collect();
    owners.into_iter().any(|owner| {
        world
            .get::<Participant>(owner)
            .is_some_and(|p| p.uid == uid)
    })
}

fn num(value: &Value, path: &[&str]) -> f64 {
    path.iter()
        .fold(value, |v, key| &v[*key])
        .as_f64()
        .unwrap_or(0.0)
}

/// A browser user calls a bot from the contact list (the bot's uid is smaller, so the bot
/// offers), then another bot rings the browser, which accepts from the ringing banner (the
/// browser's uid is smaller, so it offers): in both calls H.264 video is decoded and Opus
/// audio received both ways, by the page's `getStats` and the bot's statistics. In the
/// second call the page's screenshot shows the bot's moving test pattern in its tile, and
/// Mute stops the browser's audio packets at the bot.
#[test]
fn a_browser_calls_a_bot_and_a_bot_calls_the_browser() {
    let _serial = crate::one_media_test_at_a_time();
    let server = Server::start();
    let first = Bot::start(&server, "abot", &["--answer", "--seconds", "6"]);
    let browser = Browser::start("calls");
    browser.log_in(&server, "m-web");
    browser.click("#contacts li[data-uid='abot'] .call-video");
    let stats = browser.wait_stats("video and audio from abot", |s| {
        num(s, &["abot", "camera_frames_decoded"]) > 30.0
            && num(s, &["abot", "audio_packets_received"]) > 50.0
            && num(s, &["abot", "video_frames_encoded"]) > 30.0
    });
    eprintln!("browser ← abot (abot offered): {stats}");
    let bot = first.finish();
    let from_browser = &bot["remotes"]["m-web"];
    eprintln!("abot ← browser: {from_browser}");
    assert_eq!(bot["errors"], json!([]), "{bot}");
    assert!(num(from_browser, &["video_frames_decoded"]) > 30.0, "{bot}");
    assert_eq!(from_browser["video_width"], json!(640), "{bot}");
    assert!(num(from_browser, &["audio_frames_decoded"]) > 50.0, "{bot}");
    browser.wait_until(
        "the call to end when abot leaves",
        Duration::from_secs(20),
        "document.getElementById('call-view').hidden",
    );

    let second = Bot::start(&server, "zbot", &["--call", "m-web", "--seconds", "9"]);
    browser.click("#accept-button");
    let stats = browser.wait_stats("video and audio from zbot", |s| {
        num(s, &["zbot", "camera_frames_decoded"]) > 30.0
            && num(s, &["zbot", "audio_packets_received"]) > 50.0
            && num(s, &["zbot", "audio_packets_sent"]) > 50.0
    });
    eprintln!("browser ← zbot (browser offered): {stats}");

    // The bot's tile shows its test pattern, moving.
    assert_tile_shows_moving_picture(&browser, "zbot");
    if let Ok(dir) = std::env::var("HUDDLE_SCREENSHOTS") {
        let _ = browser
            .screenshot()
            .save(PathBuf::from(dir).join("web-call.png"));
    }

    browser.click("#mute-button");
    // What the page sent in all: its count once it stops growing (two reads 300 ms apart).
    let mut sent_at_mute = num(&browser.stats(), &["zbot", "audio_packets_sent"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = num(&browser.stats(), &["zbot", "audio_packets_sent"]);
        if now == sent_at_mute {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the page still sends audio after Mute"
        );
        sent_at_mute = now;
    }
    let bot = second.finish();
    let from_browser = &bot["remotes"]["m-web"];
    eprintln!("zbot ← browser: {from_browser}; browser sent {sent_at_mute} before Mute");
    assert_eq!(bot["errors"], json!([]), "{bot}");
    assert!(num(from_browser, &["video_frames_decoded"]) > 30.0, "{bot}");
    let heard = num(from_browser, &["audio_frames_decoded"]);
    assert!(heard > 50.0, "audio before Mute: {bot}");
    assert!(
        heard <= sent_at_mute + 2.0,
        "nothing after Mute: the bot decoded {heard}, the page had sent {sent_at_mute}"
    );

    // The auth token lives in sessionStorage while logged in (never localStorage), and
    // logging out forgets it.
    let storage = "return [sessionStorage.length, localStorage.length];";
    browser.wait_until(
        "the call to end",
        Duration::from_secs(20),
        "document.getElementById('call-view').hidden",
    );
    assert_eq!(browser.eval(storage), json!([1, 0]));
    browser.click("#logout-button");
    assert_eq!(browser.eval(storage), json!([0, 0]));
}

/// A naive page that follows only the standard (one `addTrack` per device, so audio then
/// a single video line with random stream ids; candidates trickled as the browser's
/// `RTCIceCandidate.toJSON()`, end of candidates as `candidate: null`) offers to a bot in a
/// direct session: it gets the bot's camera video within 3 s of its offer, on that one video
/// line, and is never asked to renegotiate. Then it loops, offering again after every
/// answer: the bot answers `MAX_RENEGOTIATIONS` of them, no more, and reports the typed
/// renegotiation-loop error.
#[test]
fn a_naive_browser_offer_gets_camera_video_within_3_s() {
    let _serial = crate::one_media_test_at_a_time();
    let server = Server::start();
    let bot = Bot::start(
        &server,
        "zz-bot",
        &["--session", "naive-room", "--seconds", "12"],
    );
    let browser = Browser::start("naive");
    let web = huddle::embedded::web_client_url(&server.url).expect("web URL");
    browser.open(&web);
    let result = browser.eval(NAIVE_OFFER);
    eprintln!("naive offer: {result}");
    assert!(num(&result, &["frames_decoded"]) > 0.0, "{result}");
    assert!(num(&result, &["first_frame_ms"]) < 3000.0, "{result}");
    assert_eq!(result["renegotiations_asked"], json!(0), "{result}");
    assert_eq!(result["video_lines"], json!(1), "{result}");
    assert_eq!(
        result["renegotiations_answered"],
        json!(huddle_media::peer::MAX_RENEGOTIATIONS),
        "{result}"
    );
    let bot = bot.finish();
    let errors = bot["errors"].to_string();
    assert!(errors.contains("renegotiation loop"), "{bot}");
}

/// The naive page's script: raw protocol, standard WebRTC, nothing Huddle-specific.
const NAIVE_OFFER: &str = r#"
const ws = new WebSocket(`ws://${location.host}/ws`);
await new Promise((ok, fail) => { ws.onopen = ok; ws.onerror = fail; });
let id = 0;
const waiting = new Map();
const events = [];
let onEvent = () => {};
ws.onmessage = (m) => {
  const f = JSON.parse(m.data);
  if (f.re !== undefined && waiting.has(f.re)) { waiting.get(f.re)(f); waiting.delete(f.re); return; }
  events.push(f); onEvent(f);
};
const request = (type, fields) => new Promise((ok) => { id += 1; waiting.set(id, ok); ws.send(JSON.stringify({ v: 1, id, type, ...fields })); });
const login = await request('login', { uid: 'a-naive' });
const token = await request('generate_token', { session_id: 'naive-room', auth_token: login.auth_token });
let joined = await request('join_session', { session_id: 'naive-room', call_token: token.call_token });
const deadline = Date.now() + 20000;
while (!joined.participants.some((p) => p.uid === 'zz-bot') && !events.some((e) => e.type === 'participant_joined')) {
  if (Date.now() > deadline) return { error: 'the bot never joined' };
  await new Promise((r) => setTimeout(r, 100));
}
const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
const pc = new RTCPeerConnection();
for (const track of stream.getTracks()) pc.addTrack(track, stream);
const signal = (s) => request('signal', { session_id: 'naive-room', to: 'zz-bot', signal: s });
pc.onicecandidate = (e) => signal({ kind: 'candidate', ...(e.candidate ? e.candidate.toJSON() : {}) });
let renegotiations = 0;
let answerWaiter = () => {};
onEvent = async (f) => {
  if (f.type !== 'signal') return;
  const s = f.signal;
  if (s.kind === 'answer') { await pc.setRemoteDescription({ type: 'answer', sdp: s.sdp }); answerWaiter(true); }
  if (s.kind === 'candidate' && s.candidate) await pc.addIceCandidate({ candidate: s.candidate, sdpMid: s.sdp_mid, sdpMLineIndex: s.sdp_mline_index }).catch(() => {});
  if (s.kind === 'renegotiation_wanted') renegotiations += 1;
};
await pc.setLocalDescription(await pc.createOffer());
const started = performance.now();
await signal({ kind: 'offer', sdp: pc.localDescription.sdp });
let frames = 0;
while (performance.now() - started < 10000) {
  const report = await pc.getStats();
  report.forEach((s) => { if (s.type === 'inbound-rtp' && s.kind === 'video') frames = s.framesDecoded || 0; });
  if (frames > 0) break;
  await new Promise((r) => setTimeout(r, 50));
}
const firstFrame = performance.now() - started;
await new Promise((r) => setTimeout(r, 500));
const lines = pc.localDescription.sdp.split('\r\n').filter((l) => l.startsWith('m=video')).length;
// A client that loops: a new offer after every answer, until one is not answered.
let looped = 0;
for (let i = 0; i < 20; i++) {
  const answered = new Promise((ok) => { answerWaiter = ok; setTimeout(() => ok(false), 2000); });
  await pc.setLocalDescription(await pc.createOffer());
  await signal({ kind: 'offer', sdp: pc.localDescription.sdp });
  if (!(await answered)) break;
  looped += 1;
}
ws.close();
pc.close();
return { frames_decoded: frames, first_frame_ms: Math.round(firstFrame), renegotiations_asked: renegotiations, video_lines: lines, renegotiations_answered: looped };
"#;

/// A browser, a headless Bevy app and a bot meet in one direct session (a 3-way mesh): the
/// browser joins by session id from its home screen and decodes both others' video; the app
/// shows the browser's and the bot's video in its tiles. Then the browser shares its screen
/// (getDisplayMedia, on the line the protocol keeps for it): the app gets a screen-share
/// tile for the browser user with pictures in it.
#[test]
fn a_browser_an_app_and_a_bot_in_one_mesh_with_a_screen_share() {
    let _serial = crate::one_media_test_at_a_time();
    let server = Server::start();
    let bot = Bot::start(
        &server,
        "mesh-bot",
        &["--session", "mesh-room", "--seconds", "40"],
    );
    let mut app = server.headless();
    app.insert_resource(JoinOnLogin {
        session_id: "mesh-room".into(),
        settings: CallSettings::default(),
        target: None,
    })
    .add_systems(Update, join_on_login);
    app.world_mut()
        .spawn(ServerConnection::dev(server.url.clone(), "app-user").with_name("App User"));
    app.finish();

    let browser = Browser::start("mesh");
    browser.log_in(&server, "b-web");
    browser.type_into("#join-session", "mesh-room");
    browser.click("#join-form button");

    pump_until(&mut app, Duration::from_secs(30), |app| {
        let stats = browser.stats();
        let browser_sees_both = num(&stats, &["mesh-bot", "camera_frames_decoded"]) > 10.0
            && num(&stats, &["app-user", "camera_frames_decoded"]) > 10.0;
        if browser_sees_both
            && app_shows_video_of(app, "b-web", false)
            && app_shows_video_of(app, "mesh-bot", false)
        {
            eprintln!("mesh, the browser's view: {stats}");
            return Ok(());
        }
        Err(format!("no 3-way video: {stats}"))
    });

    browser.click("#share-button");
    pump_until(&mut app, Duration::from_secs(20), |app| {
        if app_shows_video_of(app, "b-web", true) {
            return Ok(());
        }
        let errors = browser.eval("return window.huddle.state.call.errors;");
        Err(format!("no screen tile in the app; page errors: {errors}"))
    });
    drop(bot);
}

/// A browser user rings the app's user (a headless app that answers, as the desktop app's
/// Accept does): the call connects with video both ways. In the call, the page's controls
/// work as a person uses them: clicking the app user's tile pins it (Spotlight, the tile
/// takes the main place), Raise hand reaches the app as `hand_raised`, and the volume slider
/// in the participants panel sets the level of that person's audio element.
#[test]
fn a_browser_rings_the_apps_user_and_uses_the_call_controls() {
    let _serial = crate::one_media_test_at_a_time();
    let server = Server::start();
    let mut app = server.answering("app-user");
    let browser = Browser::start("controls");
    browser.log_in(&server, "c-web");
    // The app logs in as it updates; the page lists it once it is there.
    pump_until(&mut app, Duration::from_secs(20), |_| {
        let online = browser.eval(
            "return !!document.querySelector(\"#contacts li[data-uid='app-user'] .dot.online\");",
        );
        (online == json!(true))
            .then_some(())
            .ok_or_else(|| "the app user never came online".to_owned())
    });
    browser.click("#contacts li[data-uid='app-user'] .call-video");

    let browsers_participant = |app: &mut App| {
        let world = app.world_mut();
        let mut participants = world.query::<(&Participant, &ParticipantState)>();
        participants
            .iter(world)
            .find(|(p, _)| p.uid == "c-web")
            .map(|(_, state)| state.clone())
    };
    pump_until(&mut app, Duration::from_secs(30), |app| {
        let stats = browser.stats();
        if num(&stats, &["app-user", "camera_frames_decoded"]) > 10.0
            && app_shows_video_of(app, "c-web", false)
        {
            eprintln!("browser ↔ app: {stats}");
            return Ok(());
        }
        Err(format!("no video between the browser and the app: {stats}"))
    });

    // Click to pin: Spotlight, the pinned tile is the main one (the widest).
    browser.click(".tile[data-key='app-user']");
    let layout = browser.eval(
        "const main = document.querySelector(\".tile[data-key='app-user']\");\
         const local = document.querySelector(\".tile[data-key='local']\");\
         return [document.getElementById('layout-button').textContent, main.classList.contains('pinned'),\
                 main.getBoundingClientRect().width > 2 * local.getBoundingClientRect().width];",
    );
    assert_eq!(layout, json!(["Spotlight", true, true]));

    browser.click("#hand-button");
    pump_until(&mut app, Duration::from_secs(10), |app| {
        browsers_participant(app)
            .is_some_and(|s| s.hand_raised)
            .then_some(())
            .ok_or_else(|| "the app never saw the raised hand".to_owned())
    });

    browser.click("#panel-button");
    browser.eval(
        "const slider = document.querySelector(\"#participants li[data-uid='app-user'] input[type=range]\");\
         slider.value = '0.25'; slider.dispatchEvent(new Event('input')); return true;",
    );
    let volume =
        browser.eval("return document.querySelector(\"audio[data-uid='app-user']\").volume;");
    assert_eq!(volume, json!(0.25));
}

/// A browser in a call that goes through Janus (the server's SFU threshold at 0) with three
/// bots, each on a host of the network lab (Janus gathers no loopback candidates; the browser
/// reaches the lab through a veth of this machine's own namespace). The page publishes on one
/// connection and receives the three bots on the other, each track given to its owner by the
/// SFU's msid: it decodes their video, and its screenshot shows their moving test patterns in
/// the tiles. The bots decode the browser's camera and receive its audio, through Janus too.
#[test]
fn a_browser_takes_part_in_a_call_through_the_sfu() {
    crate::net_lab::require_root();
    let _serial = crate::one_media_test_at_a_time();
    let mut lab = crate::net_lab::Lab::new("sfuweb");
    lab.start_janus();
    lab.start_servers(&["--janus", "ws://10.77.0.1:8188", "--sfu-above", "0"]);
    lab.attach_root("10.77.0.253/24");
    for n in 1..=3u8 {
        let host = lab.host(&format!("h{n}"), n, crate::net_lab::Uplink::Lan);
        lab.bot(&host, &format!("p{n}"), 25, &["--session", "sfu-web"]);
    }
    let browser = Browser::start("sfu");
    browser.log_in_at(
        &format!("http://{}:7878/", crate::net_lab::SERVER_IP),
        "web",
    );
    browser.type_into("#join-session", "sfu-web");
    browser.click("#join-form button");
    let stats = browser.wait_stats("the three bots' video through the SFU", |stats| {
        ["p1", "p2", "p3"]
            .iter()
            .all(|uid| num(stats, &[uid, "camera_frames_decoded"]) > 30.0)
    });
    eprintln!("through the SFU, the browser's view: {stats}");
    assert!(
        num(&stats, &["sfu:publish", "video_frames_encoded"]) > 30.0,
        "the browser publishes: {stats}"
    );
    assert_eq!(
        browser.eval("return window.huddle.state.call.route;"),
        json!("sfu")
    );
    for uid in ["p1", "p2", "p3"] {
        assert_tile_shows_moving_picture(&browser, uid);
    }
    browser
        .screenshot()
        .save(std::env::temp_dir().join("huddle-browser-sfu.png"))
        .expect("screenshot saved");
    lab.wait_for_bots(Duration::from_secs(60));
    for n in 1..=3 {
        let uid = format!("p{n}");
        let bot = lab.stats_of(&uid);
        let web = &bot["remotes"]["web"];
        assert!(
            web["video_frames_decoded"].as_u64().unwrap_or(0) > 30,
            "{uid} decoded the browser's camera: {bot:#}"
        );
        assert!(
            web["audio_frames_decoded"].as_u64().unwrap_or(0) > 50,
            "{uid} received the browser's audio: {bot:#}"
        );
    }
}
