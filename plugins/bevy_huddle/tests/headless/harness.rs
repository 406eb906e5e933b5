//! Shared set-up: a headless app with Huddle, an event log fed by an observer, and helpers to
//! start a call and drive the transport side with `SessionUpdate`s.

use std::time::Duration;

use bevy::prelude::*;
use bevy::time::TimeUpdateStrategy;
use bevy_huddle::call::actions::OutboundSignal;
use bevy_huddle::prelude::*;

/// Every `CallEvent` an observer saw, in order.
#[derive(Resource, Default)]
pub struct ObservedEvents(pub Vec<CallEvent>);

/// Every `OutboundSignal` written, in order.
#[derive(Resource, Default)]
pub struct SentSignals(pub Vec<OutboundSignal>);

fn log_signals(mut signals: MessageReader<OutboundSignal>, mut sent: ResMut<SentSignals>) {
    sent.0.extend(signals.read().cloned());
}

/// A headless app with Huddle, 16 ms per frame, logging events (observer) and signals.
pub fn app() -> App {
    app_with(|_| {})
}

/// [`app`], with more plugins added by `extra` before the app is finished.
pub fn app_with(extra: impl FnOnce(&mut App)) -> App {
    let mut app = App::new();
    app.add_plugins((MinimalPlugins, AssetPlugin::default(), HuddlePlugins));
    extra(&mut app);
    finish_test_app(app)
}

/// Finishes an app that already has Huddle's plugins: 16 ms per frame, events and signals
/// logged, one update run.
pub fn finish_test_app(mut app: App) -> App {
    app.insert_resource(TimeUpdateStrategy::ManualDuration(Duration::from_millis(
        16,
    )))
    .init_resource::<ObservedEvents>()
    .init_resource::<SentSignals>()
    .add_systems(PostUpdate, log_signals.after(HuddleSystems::Apply))
    .add_observer(|event: On<CallEvent>, mut log: ResMut<ObservedEvents>| {
        log.0.push(event.event().clone());
    });
    app.finish();
    app.cleanup();
    app.update();
    app
}

/// Runs `n` frames.
pub fn run(app: &mut App, n: usize) {
    for _ in 0..n {
        app.update();
    }
}

/// Spawns a call and runs a frame so it becomes the active call.
pub fn spawn_call(app: &mut App, call: Call) -> Entity {
    let entity = app.world_mut().spawn(call).id();
    app.update();
    entity
}

/// Writes a session update for `call`.
pub fn session(app: &mut App, call: Entity, change: SessionChange) {
    app.world_mut()
        .write_message(SessionUpdate { call, change });
}

/// Writes an in-call action.
pub fn act(app: &mut App, action: CallAction) {
    app.world_mut().write_message(action);
}

/// A call with the local user "alice" and remotes with the given uids, all joined.
pub fn joined_call(app: &mut App, call: Call, remotes: &[&str]) -> Entity {
    let entity = spawn_call(app, call);
    session(
        app,
        entity,
        SessionChange::Joined {
            local: ParticipantInfo::new("alice", "Alice Liddell"),
            others: remotes
                .iter()
                .map(|uid| ParticipantInfo::new(*uid, uid.to_uppercase()))
                .collect(),
        },
    );
    run(app, 2);
    entity
}

/// A 1:1 video call between alice (local) and bob, with default settings.
pub fn one_to_one(app: &mut App) -> Entity {
    joined_call(
        app,
        Call::new("session-1", CallSettings::default()),
        &["bob"],
    )
}

/// Takes the events observed so far.
pub fn take_events(app: &mut App) -> Vec<CallEvent> {
    std::mem::take(&mut app.world_mut().resource_mut::<ObservedEvents>().0)
}

/// Takes the signals sent so far.
pub fn take_signals(app: &mut App) -> Vec<Signal> {
    std::mem::take(&mut app.world_mut().resource_mut::<SentSignals>().0)
        .into_iter()
        .map(|s| s.signal)
        .collect()
}

pub use bevy_huddle::Signal;

/// The participant entity with this uid.
pub fn participant(app: &mut App, uid: &str) -> Entity {
    let mut query = app.world_mut().query::<(Entity, &Participant)>();
    query
        .iter(app.world())
        .find(|(_, p)| p.uid == uid)
        .map(|(e, _)| e)
        .unwrap_or_else(|| panic!("no participant {uid}"))
}

/// The state of the participant with this uid.
pub fn state_of(app: &mut App, uid: &str) -> ParticipantState {
    let entity = participant(app, uid);
    app.world()
        .get::<ParticipantState>(entity)
        .cloned()
        .expect("state")
}

/// The (camera) tile entity of the participant with this uid.
pub fn tile_of(app: &mut App, uid: &str) -> Entity {
    let owner = participant(app, uid);
    let mut query = app
        .world_mut()
        .query_filtered::<(Entity, &TileOf), Without<ScreenShareTile>>();
    query
        .iter(app.world())
        .find(|(_, of)| of.0 == owner)
        .map(|(e, _)| e)
        .expect("tile")
}

/// The layout of the participant's tile.
pub fn layout_of(app: &mut App, uid: &str) -> TileLayout {
    let tile = tile_of(app, uid);
    *app.world().get::<TileLayout>(tile).expect("layout")
}

/// The error codes of the `Error` events in `events`.
pub fn error_codes(events: &[CallEvent]) -> Vec<ErrorCode> {
    events.iter().filter_map(CallEvent::error_code).collect()
}

/// `uid`'s video starts arriving at `size` (one frame run).
pub fn video_arrives(app: &mut App, call: Entity, uid: &str, size: UVec2) {
    session(
        app,
        call,
        SessionChange::VideoFormat {
            uid: uid.into(),
            size,
        },
    );
    app.update();
}

/// `uid` pauses or resumes their video (one frame run).
pub fn video_paused(app: &mut App, call: Entity, uid: &str, paused: bool) {
    session(
        app,
        call,
        SessionChange::VideoPaused {
            uid: uid.into(),
            paused,
        },
    );
    app.update();
}

/// A joined Spotlight group call "s" with bob and carol; returns the call and bob.
pub fn spotlight_with_bob_and_carol(app: &mut App) -> (Entity, Entity) {
    let settings = CallSettings::builder()
        .mode(LayoutMode::Spotlight)
        .build()
        .expect("valid");
    let call = joined_call(app, Call::new("s", settings).group(), &["bob", "carol"]);
    (call, participant(app, "bob"))
}

/// The `Image` of `uid`'s video tile.
pub fn tile_image(app: &mut App, uid: &str) -> Handle<Image> {
    let tile = tile_of(app, uid);
    app.world()
        .get::<VideoTile>(tile)
        .expect("tile")
        .image
        .clone()
}
