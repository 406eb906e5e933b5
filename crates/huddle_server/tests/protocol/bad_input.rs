//! Bad input never takes the server down: oversized frames close with 1009, garbage and
//! unknown or ill-typed messages get a clear error and the connection stays usable, floods
//! are throttled then closed (1008), sockets that never log in are closed (1008), and every
//! other client carries on.

use std::time::Duration;

use futures_util::SinkExt;
use huddle_protocol::{ErrorCode, MAX_FRAME_BYTES, Reply, Request, ServerFrame, ServerPayload};
use huddle_server::{HubConfig, ServerConfig};
use tokio_tungstenite::tungstenite::Message;

use crate::harness::*;

/// Garbage, unknown types, wrong field types, a wrong version and binary frames each get an
/// error answer (echoing the id when there is one), and the connection still works.
#[tokio::test]
async fn malformed_frames_get_errors_and_the_connection_survives() {
    let server = TestServer::dev().await;
    let mut client = Client::login(&server, "alice").await;
    let cases: [(&str, Option<u64>, ErrorCode); 6] = [
        ("not json at all", None, ErrorCode::InvalidArgument),
        (
            r#"{"v":1,"id":7,"type":"launch_rockets"}"#,
            Some(7),
            ErrorCode::InvalidArgument,
        ),
        (
            r#"{"v":1,"id":8,"type":"accept_call","session_id":42}"#,
            Some(8),
            ErrorCode::InvalidArgument,
        ),
        (
            r#"{"v":1,"id":9,"type":"accept_call","session_id":"s","extra":true}"#,
            Some(9),
            ErrorCode::InvalidArgument,
        ),
        (
            r#"{"v":2,"id":10,"type":"ping"}"#,
            Some(10),
            ErrorCode::ApiError,
        ),
        (r#"[1,2,3]"#, None, ErrorCode::InvalidArgument),
    ];
    for (text, id, code) in cases {
        client.send_text(text).await;
        let (re, got) = client.raw_error_frame().await;
        assert_eq!((re, got), (id, code), "{text}");
    }
    client.send_binary(vec![1, 2, 3]).await;
    assert_eq!(client.raw_error_frame().await.1, ErrorCode::InvalidArgument);
    assert!(
        matches!(client.request(Request::Ping {}).await, Ok(Reply::Pong)),
        "still usable"
    );
}

/// A frame over 64 KiB closes that connection with 1009; another client is unaffected.
#[tokio::test]
async fn oversized_frame_closes_with_1009() {
    let server = TestServer::dev().await;
    let mut bystander = Client::login(&server, "bob").await;
    let mut client = Client::login(&server, "alice").await;
    let huge = format!(
        r#"{{"v":1,"type":"ping","pad":"{}"}}"#,
        "x".repeat(MAX_FRAME_BYTES + 1)
    );
    client.send_text(huge).await;
    assert_eq!(client.closed().await, Closed::Code(1009));
    assert!(matches!(
        bystander.request(Request::Ping {}).await,
        Ok(Reply::Pong)
    ));
}

/// A flood is answered with rate-limit errors, then closed with 1008; another client keeps
/// being served throughout.
#[tokio::test]
async fn flood_is_throttled_then_closed() {
    let server = TestServer::dev().await;
    let mut bystander = Client::login(&server, "bob").await;
    let mut flooder = Client::login(&server, "mallory").await;
    let ping = r#"{"v":1,"type":"ping"}"#;
    for _ in 0..1_000 {
        if flooder.try_send_text(ping).await.is_err() {
            break;
        }
    }
    let mut rate_limited = false;
    let closed = loop {
        match flooder.next_any().await {
            Some(Ok(ServerFrame {
                payload: ServerPayload::Error { error, .. },
                ..
            })) => {
                assert_eq!(error.code, ErrorCode::ApiError);
                assert!(error.message.contains("rate limit"));
                rate_limited = true;
            }
            Some(Ok(_)) => {}
            Some(Err(closed)) => break closed,
            None => panic!("flooder neither throttled nor closed"),
        }
    };
    assert!(rate_limited, "errors before the close");
    assert_eq!(closed, Closed::Code(1008));
    assert!(matches!(
        bystander.request(Request::Ping {}).await,
        Ok(Reply::Pong)
    ));
}

/// A socket that never logs in is closed with 1008 after the login timeout.
#[tokio::test]
async fn silent_socket_is_closed_after_the_login_timeout() {
    let server = TestServer::start(ServerConfig {
        hub: HubConfig {
            dev_login: true,
            ..HubConfig::default()
        },
        login_timeout: Duration::from_millis(300),
        ..ServerConfig::default()
    })
    .await;
    let mut silent = Client::connect(&server).await;
    let started = std::time::Instant::now();
    assert_eq!(silent.closed().await, Closed::Code(1008));
    assert!(started.elapsed() >= Duration::from_millis(250));
    let mut prompt = Client::login(&server, "alice").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        matches!(prompt.request(Request::Ping {}).await, Ok(Reply::Pong)),
        "a logged-in socket stays"
    );
}

impl Client {
    /// Reads the next frame, which must be an error answer; returns its `re` and code.
    pub async fn raw_error_frame(&mut self) -> (Option<u64>, ErrorCode) {
        match self.next_any().await {
            Some(Ok(ServerFrame {
                re,
                payload: ServerPayload::Error { error, .. },
                ..
            })) => (re, error.code),
            other => panic!("expected an error frame, got {other:?}"),
        }
    }

    /// Sends a binary frame.
    pub async fn send_binary(&mut self, bytes: Vec<u8>) {
        self.ws_mut()
            .send(Message::Binary(bytes.into()))
            .await
            .expect("send");
    }
}

/// A client that stops reading while others send it large frames is cut off, and the server
/// lets go of what it queued for it: when it reads again it gets at most what the kernel's
/// socket buffers held (a few MB) and then the end of the stream, not the whole backlog
/// (about 1,000 frames of 48 KiB here, 48 MiB). Everyone else carries on.
#[tokio::test]
async fn a_client_that_stops_reading_is_cut_off_and_its_backlog_dropped() {
    let server = TestServer::start(ServerConfig {
        rate: huddle_server::RateLimit {
            burst: 100_000.0,
            per_second: 100_000.0,
            close_after: 100_000,
        },
        ..dev_config()
    })
    .await;
    let mut alice = Client::login(&server, "alice").await;
    let mut bob = Client::login(&server, "bob").await;
    alice.join("flood").await;
    bob.join("flood").await;
    let _ = alice.event().await; // bob joined; alice reads nothing more
    let sdp = "x".repeat(48 * 1024);
    let frames = 1_400;
    // Without ids: no answers for bob to read.
    let frame = format!(
        r#"{{"v":1,"type":"signal","session_id":"flood","to":"alice","signal":{{"kind":"offer","sdp":"{sdp}"}}}}"#
    );
    for _ in 0..frames {
        if bob.try_send_text(&frame).await.is_err() {
            panic!("bob's socket failed");
        }
    }
    // Bob is still served: each of his frames is answered (`ok`, without `re`).
    for _ in 0..frames {
        match bob.next_any().await {
            Some(Ok(frame)) => assert!(
                matches!(frame.payload, ServerPayload::Reply(Reply::Ok)),
                "{frame:?}"
            ),
            other => panic!("bob: {other:?}"),
        }
    }
    assert_eq!(bob.request(Request::Ping {}).await, Ok(Reply::Pong));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut bytes = 0usize;
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        use futures_util::StreamExt;
        while let Some(Ok(message)) = alice.ws_mut().next().await {
            bytes += message.len();
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "alice's stream did not end; read {bytes} bytes"
    );
    assert!(
        bytes < 24 * 1024 * 1024,
        "alice got {} MiB: the backlog was kept",
        bytes / (1024 * 1024)
    );
    assert_eq!(bob.request(Request::Ping {}).await, Ok(Reply::Pong));
}

/// Nothing holds a connection before the WebSocket upgrade: a client that trickles a partial
/// request head is dropped after the header-read timeout, connections past the per-address
/// cap are closed at once, and a client from another address still gets `/healthz` while
/// the first address is at its cap.
#[tokio::test]
async fn slow_and_surplus_connections_are_dropped_before_the_upgrade() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = TestServer::start(ServerConfig {
        limits: huddle_server::ConnectionLimits {
            max_connections: 100,
            max_per_address: 20,
            header_read_timeout: Duration::from_millis(800),
        },
        ..dev_config()
    })
    .await;
    // 30 connections from 127.0.0.1, each sending the start of an upgrade request.
    let mut slow = Vec::new();
    for _ in 0..30 {
        let mut stream = tokio::net::TcpStream::connect(server.addr)
            .await
            .expect("connect");
        let _ = stream.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n").await;
        slow.push(stream);
    }
    // A client from 127.0.0.2 is not held up by them.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.2:0".parse().expect("addr"))
        .expect("bind");
    let mut other = socket.connect(server.addr).await.expect("connect");
    other
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut answer = String::new();
    tokio::time::timeout(WAIT, other.read_to_string(&mut answer))
        .await
        .expect("healthz answered in time")
        .expect("read");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // Every slow connection ends: the 10 over the cap at once, the 20 others at the timeout.
    let started = std::time::Instant::now();
    for mut stream in slow {
        let mut rest = Vec::new();
        tokio::time::timeout(WAIT, stream.read_to_end(&mut rest))
            .await
            .expect("the server dropped the slow connection")
            .ok();
    }
    assert!(started.elapsed() < Duration::from_secs(4));
    // With the slow ones gone, 127.0.0.1 is served again.
    let mut client = Client::login(&server, "alice").await;
    assert_eq!(client.request(Request::Ping {}).await, Ok(Reply::Pong));
}

/// Where the doc and the server disagreed, they now say the same (each case as documented
/// in `docs/protocol.md`):
/// - unknown fields are refused on `ping` and inside `list_call_logs.query` too;
/// - a `v` that is not an unsigned 32-bit number is malformed (`INVALID_ARGUMENT_EXCEPTION`),
///   a well-formed other version is `API_ERROR`.
#[tokio::test]
async fn unknown_fields_and_bad_versions_are_answered_as_documented() {
    let server = TestServer::dev().await;
    let mut client = Client::login(&server, "alice").await;
    for (frame, id, code) in [
        (
            r#"{"v":1,"id":21,"type":"ping","extra":true}"#,
            21,
            ErrorCode::InvalidArgument,
        ),
        (
            r#"{"v":1,"id":22,"type":"list_call_logs","query":{"bogus":1}}"#,
            22,
            ErrorCode::InvalidArgument,
        ),
        (
            r#"{"v":-1,"id":23,"type":"ping"}"#,
            23,
            ErrorCode::InvalidArgument,
        ),
        (
            r#"{"v":4294967296,"id":24,"type":"ping"}"#,
            24,
            ErrorCode::InvalidArgument,
        ),
        (r#"{"v":2,"id":25,"type":"ping"}"#, 25, ErrorCode::ApiError),
    ] {
        client.send_text(frame).await;
        match client.next_any().await {
            Some(Ok(ServerFrame {
                re,
                payload: ServerPayload::Error { error, .. },
                ..
            })) => {
                assert_eq!((re, error.code), (Some(id), code), "{frame}");
            }
            other => panic!("{frame}: {other:?}"),
        }
    }
    assert_eq!(client.request(Request::Ping {}).await, Ok(Reply::Pong));
}

/// A logged-in client that sends nothing for the idle timeout (here 1 s; 60 s by default)
/// is closed with 1001; one that sends `ping`s in time stays.
#[tokio::test]
async fn silent_clients_are_closed_after_the_idle_timeout() {
    let server = TestServer::start(ServerConfig {
        idle_timeout: Duration::from_secs(1),
        ..dev_config()
    })
    .await;
    let mut silent = Client::login(&server, "alice").await;
    let mut pinging = Client::login(&server, "bob").await;
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(pinging.request(Request::Ping {}).await, Ok(Reply::Pong));
    }
    assert_eq!(silent.closed().await, Closed::Code(1001));
}

/// Frames the WebSocket layer itself refuses end the connection without a close frame, as
/// documented: text over 256 KiB (over 64 KiB but under it is closed with 1009) and a text
/// frame that is not UTF-8.
#[tokio::test]
async fn frames_the_websocket_layer_refuses_drop_the_connection() {
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    let server = TestServer::dev().await;
    let mut huge = Client::login(&server, "alice").await;
    let _ = huge.try_send_text(&"x".repeat(300 * 1024)).await;
    assert_eq!(huge.closed().await, Closed::Dropped);
    let mut garbled = Client::login(&server, "bob").await;
    let frame = Frame::message(vec![0xff, 0xfe, 0x7b], OpCode::Data(Data::Text), true);
    let _ = garbled.ws_mut().send(Message::Frame(frame)).await;
    assert_eq!(garbled.closed().await, Closed::Dropped);
}

/// Out of file descriptors, the accept loop says so and carries on: `huddle-server` run with
/// an open-file limit of 40 and flooded with 80 silent connections logs "accept failed", and
/// once they close it answers `/healthz` again.
#[tokio::test]
async fn running_out_of_file_descriptors_is_logged_and_survived() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = std::env::temp_dir().join(format!("huddle-emfile-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
        probe.local_addr().expect("addr").port()
    };
    let log = dir.join("server.log");
    let command = format!(
        "ulimit -n 40 && exec {} --listen 127.0.0.1:{port} --db {} --dev-login 2> {}",
        env!("CARGO_BIN_EXE_huddle-server"),
        dir.join("db").display(),
        log.display()
    );
    /// Kills the server however the test ends.
    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _server = Killed(
        std::process::Command::new("bash")
            .args(["-c", &command])
            .env("RUST_LOG", "warn")
            .spawn()
            .expect("server starts"),
    );
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let mut ready = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "server did not listen");
    let mut flood = Vec::new();
    for _ in 0..80 {
        if let Ok(stream) = tokio::net::TcpStream::connect(addr).await {
            flood.push(stream);
        }
    }
    let mut logged = false;
    for _ in 0..40 {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("accept failed") {
            logged = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(logged, "no accept failure logged");
    drop(flood);
    let mut answered = String::new();
    for _ in 0..60 {
        if let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await {
            let _ = stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await;
            answered.clear();
            let read =
                tokio::time::timeout(Duration::from_secs(1), stream.read_to_string(&mut answered))
                    .await;
            if matches!(read, Ok(Ok(_))) && answered.starts_with("HTTP/1.1 200") {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        answered.starts_with("HTTP/1.1 200"),
        "healthz after the flood: {answered:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
