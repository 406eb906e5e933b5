//! Plain Rust listeners: several at once, removal, replacement, a panicking one, and the same
//! events as ECS readers and observers.

use std::sync::{Arc, Mutex};

use bevy::prelude::*;
use bevy_huddle::CallEventListeners;
use bevy_huddle::prelude::*;

use crate::harness::*;

type Log = Arc<Mutex<Vec<CallEvent>>>;

fn recorder(log: &Log) -> impl FnMut(&CallEvent) + Send + Sync + 'static {
    let log = log.clone();
    move |event: &CallEvent| log.lock().expect("log").push(event.clone())
}

/// Every `CallEvent` message seen by an ECS reader.
#[derive(Resource, Default)]
struct ReadEvents(Vec<CallEvent>);

fn read_events(mut reader: MessageReader<CallEvent>, mut seen: ResMut<ReadEvents>) {
    seen.0.extend(reader.read().cloned());
}

/// Two listeners both get every event, in the same order as observers and message readers; a
/// removed listener gets nothing more; re-adding an id replaces the listener.
#[test]
fn several_listeners_removal_and_replacement() {
    let mut app = app();
    app.init_resource::<ReadEvents>()
        .add_systems(Last, read_events);
    let (first, second, replacement): (Log, Log, Log) = Default::default();
    app.add_call_event_listener("first", recorder(&first));
    app.add_call_event_listener("second", recorder(&second));
    one_to_one(&mut app);
    act(&mut app, CallAction::MuteAudio(true));
    app.update();

    let observed = take_events(&mut app);
    assert!(!observed.is_empty());
    assert_eq!(*first.lock().expect("log"), observed);
    assert_eq!(*second.lock().expect("log"), observed);
    assert_eq!(
        std::mem::take(&mut app.world_mut().resource_mut::<ReadEvents>().0),
        observed
    );

    app.remove_call_event_listener("first");
    app.add_call_event_listener("second", recorder(&replacement));
    let before = first.lock().expect("log").len();
    let second_before = second.lock().expect("log").len();
    act(&mut app, CallAction::MuteAudio(false));
    app.update();
    assert_eq!(
        first.lock().expect("log").len(),
        before,
        "removed listener got nothing"
    );
    assert_eq!(
        second.lock().expect("log").len(),
        second_before,
        "replaced listener got nothing"
    );
    assert!(matches!(
        &replacement.lock().expect("log")[..],
        [CallEvent::UserMuted { muted: false, .. }]
    ));
    let ids: Vec<String> = app
        .world()
        .resource::<CallEventListeners>()
        .ids()
        .map(str::to_owned)
        .collect();
    assert_eq!(ids, vec!["second".to_owned()]);
}

/// A listener that panics is caught: the app keeps running, the listeners after it still get
/// the event, and the panic is counted.
#[test]
fn a_panicking_listener_does_not_take_the_app_down() {
    let mut app = app();
    let after: Log = Default::default();
    app.add_call_event_listener("explodes", |_: &CallEvent| panic!("listener bug"));
    app.add_call_event_listener("after", recorder(&after));
    one_to_one(&mut app);
    act(&mut app, CallAction::RaiseHand);
    app.update();
    let got = after.lock().expect("log").clone();
    assert!(
        got.iter()
            .any(|e| matches!(e, CallEvent::HandRaised { .. }))
    );
    let panics = app.world().resource::<CallEventListeners>().panics();
    assert_eq!(panics as usize, got.len(), "one caught panic per event");
    app.update();
    assert!(state_of(&mut app, "alice").hand_raised);
}
