//! `wss://` end to end: a real `huddle_server` terminating TLS with certificates made here
//! (rcgen), and the signaling client verifying them with rustls. Also the server's Origin
//! check on `/ws`. Everything on 127.0.0.1.

use std::path::{Path, PathBuf};
use std::time::Duration;

use huddle_client::{Backoff, ClientConfig, ClientEvent};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

/// A CA, and a certificate for 127.0.0.1 it signed (valid now, or expired), as PEM files.
struct Certificates {
    dir: PathBuf,
}

impl Certificates {
    fn new(name: &str, expired: bool) -> Self {
        let dir = std::env::temp_dir().join(format!("huddle-tls-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("params");
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let cert = params.signed_by(&key, &issuer).expect("certificate");
        std::fs::write(dir.join("ca.pem"), ca_cert.pem()).expect("write");
        std::fs::write(dir.join("cert.pem"), cert.pem()).expect("write");
        std::fs::write(dir.join("key.pem"), key.serialize_pem()).expect("write");
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Certificates {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Starts a dev-login server on 127.0.0.1 (with TLS if `tls` is given); returns its address.
fn start_server(
    runtime: &tokio::runtime::Runtime,
    tls: Option<(&Path, &Path)>,
    allowed_origins: Vec<String>,
) -> std::net::SocketAddr {
    let config = huddle_server::ServerConfig {
        hub: huddle_server::HubConfig {
            dev_login: true,
            ..huddle_server::HubConfig::default()
        },
        tls: tls.map(|(cert, key)| huddle_server::tls::TlsFiles {
            cert: cert.to_owned(),
            key: key.to_owned(),
        }),
        allowed_origins,
        ..huddle_server::ServerConfig::default()
    };
    let server = runtime
        .block_on(huddle_server::bind(config))
        .expect("server binds");
    let addr = server.local_addr();
    runtime.spawn(async move {
        let _ = server.serve_until(std::future::pending()).await;
    });
    addr
}

/// Logs in as alice at `url`; returns the first event that says how it went (within 10 s).
fn first_outcome(
    runtime: &tokio::runtime::Runtime,
    url: String,
    ca_file: Option<PathBuf>,
) -> ClientEvent {
    let client = huddle_client::spawn(
        runtime.handle(),
        ClientConfig {
            url,
            fallback_urls: Vec::new(),
            uid: "alice".into(),
            auth_token: None,
            name: None,
            backoff: Backoff {
                // A refused certificate must not wait for this.
                give_up_after: Duration::from_secs(60),
                ..Backoff::default()
            },
            ca_file,
        },
    );
    client
        .events
        .recv_timeout(Duration::from_secs(10))
        .expect("an outcome within 10 s")
}

/// Logs in over `wss://` to a server using `server`'s certificate, trusting `client_ca`.
fn login_over_tls(server: &Certificates, client_ca: &Certificates) -> ClientEvent {
    let runtime = runtime();
    let addr = start_server(
        &runtime,
        Some((&server.path("cert.pem"), &server.path("key.pem"))),
        Vec::new(),
    );
    first_outcome(
        &runtime,
        format!("wss://{addr}/ws"),
        Some(client_ca.path("ca.pem")),
    )
}

/// A `wss://` login works when the client trusts the server's CA through `ca_file`.
#[test]
fn wss_login_works_with_the_servers_ca_file() {
    let certs = Certificates::new("ok", false);
    let outcome = login_over_tls(&certs, &certs);
    assert!(
        matches!(&outcome, ClientEvent::Connected { user, .. } if user.uid == "alice"),
        "{outcome:?}"
    );
}

/// A certificate from a CA the client does not trust stops the client at once with a TLS
/// reason (no retrying for 60 s).
#[test]
fn unknown_ca_is_refused_at_once() {
    let (certs, other) = (
        Certificates::new("unknown", false),
        Certificates::new("other", false),
    );
    let outcome = login_over_tls(&certs, &other);
    assert!(
        matches!(&outcome, ClientEvent::GaveUp { reason, .. }
            if reason.contains("TLS") && reason.contains("invalid peer certificate")),
        "{outcome:?}"
    );
}

/// An expired certificate (from a trusted CA) is refused, saying it expired.
#[test]
fn expired_certificate_is_refused() {
    let certs = Certificates::new("expired", true);
    let outcome = login_over_tls(&certs, &certs);
    assert!(
        matches!(&outcome, ClientEvent::GaveUp { reason, .. } if reason.contains("certificate expired")),
        "{outcome:?}"
    );
}

/// A CA file that does not exist, or holds no certificate, is a clear error before any
/// connection; a server given a key that is not PEM does not start.
#[test]
fn bad_ca_file_and_bad_key_are_clear_errors() {
    let runtime = runtime();
    let outcome = first_outcome(
        &runtime,
        "wss://127.0.0.1:9/ws".into(),
        Some("/nonexistent/ca.pem".into()),
    );
    assert!(
        matches!(&outcome, ClientEvent::GaveUp { reason, .. } if reason.contains("CA file /nonexistent/ca.pem")),
        "{outcome:?}"
    );
    let certs = Certificates::new("badkey", false);
    std::fs::write(certs.path("key.pem"), "not a key").expect("write");
    let config = huddle_server::ServerConfig {
        tls: Some(huddle_server::tls::TlsFiles {
            cert: certs.path("cert.pem"),
            key: certs.path("key.pem"),
        }),
        ..huddle_server::ServerConfig::default()
    };
    match runtime.block_on(huddle_server::bind(config)) {
        Err(huddle_server::ServerError::Tls(huddle_server::tls::TlsError::File {
            path, ..
        })) => {
            assert_eq!(path, certs.path("key.pem"));
        }
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("a server started with a key that is not PEM"),
    }
}

/// Opens `/ws` with `origin` (if any); returns the HTTP status of the upgrade.
fn upgrade_status(
    runtime: &tokio::runtime::Runtime,
    addr: std::net::SocketAddr,
    origin: Option<&str>,
) -> u16 {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://{addr}/ws")
        .into_client_request()
        .expect("request");
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("origin", origin.parse().expect("header"));
    }
    match runtime.block_on(tokio_tungstenite::connect_async(request)) {
        Ok((_, response)) => response.status().as_u16(),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(err) => panic!("upgrade: {err}"),
    }
}

/// `/ws` refuses a page from another site (403) but takes native clients (no Origin), the
/// server's own origin, and listed origins.
#[test]
fn ws_refuses_foreign_origins() {
    let runtime = runtime();
    let addr = start_server(&runtime, None, vec!["https://app.example.org".into()]);
    assert_eq!(upgrade_status(&runtime, addr, None), 101);
    assert_eq!(
        upgrade_status(&runtime, addr, Some(&format!("http://{addr}"))),
        101
    );
    assert_eq!(
        upgrade_status(&runtime, addr, Some("https://app.example.org")),
        101
    );
    assert_eq!(
        upgrade_status(&runtime, addr, Some("https://evil.example")),
        403
    );
}
