//! Several server URLs (`ClientConfig::fallback_urls`, the nodes of a cluster): the client
//! tries them in turn. Real `huddle_server`s on 127.0.0.1.

use std::time::{Duration, Instant};

use huddle_client::{Backoff, ClientConfig, ClientEvent};
use tokio::sync::oneshot;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Starts a dev-login server; returns its WebSocket URL and a switch that stops it.
fn start_server(runtime: &tokio::runtime::Runtime) -> (String, oneshot::Sender<()>) {
    let config = huddle_server::ServerConfig {
        hub: huddle_server::HubConfig {
            dev_login: true,
            ..huddle_server::HubConfig::default()
        },
        ..huddle_server::ServerConfig::default()
    };
    let server = runtime
        .block_on(huddle_server::bind(config))
        .expect("server binds");
    let url = format!("ws://{}/ws", server.local_addr());
    let (stop, stopped) = oneshot::channel::<()>();
    runtime.spawn(async move {
        let _ = server
            .serve_until(async move {
                let _ = stopped.await;
            })
            .await;
    });
    (url, stop)
}

/// A URL where nothing listens (a port bound and released).
fn dead_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    format!("ws://{addr}/ws")
}

fn config(url: String, fallback_urls: Vec<String>) -> ClientConfig {
    ClientConfig {
        url,
        fallback_urls,
        uid: "alice".into(),
        auth_token: None,
        name: None,
        backoff: Backoff {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(200),
            give_up_after: Duration::from_secs(20),
        },
        ca_file: None,
    }
}

/// The next event that is not an answer or a pushed event, within 10 s.
fn next_news(events: &crossbeam_channel::Receiver<ClientEvent>) -> ClientEvent {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match events.recv_timeout(left).expect("news within 10 s") {
            ClientEvent::Answer { .. } | ClientEvent::Event(_) => continue,
            news => return news,
        }
    }
}

/// With the first server down, the client logs in at the next one.
#[test]
fn a_client_tries_the_next_server_when_one_is_down() {
    let runtime = runtime();
    let (live, _stop) = start_server(&runtime);
    let client = huddle_client::spawn(runtime.handle(), config(dead_url(), vec![live]));
    let news = next_news(&client.events);
    assert!(matches!(news, ClientEvent::Connected { .. }), "{news:?}");
}

/// When its server stops, a connected client reconnects to the other one.
#[test]
fn a_client_moves_to_the_other_server_when_its_server_stops() {
    let runtime = runtime();
    let (first, stop_first) = start_server(&runtime);
    let (second, _stop_second) = start_server(&runtime);
    let client = huddle_client::spawn(runtime.handle(), config(first, vec![second]));
    let news = next_news(&client.events);
    assert!(matches!(news, ClientEvent::Connected { .. }), "{news:?}");
    let _ = stop_first.send(());
    let news = next_news(&client.events);
    assert!(matches!(news, ClientEvent::Disconnected { .. }), "{news:?}");
    // The first server no longer listens: connected again means connected to the second.
    let news = next_news(&client.events);
    assert!(matches!(news, ClientEvent::Connected { .. }), "{news:?}");
}
