//! The web client as the server serves it: the page and its modules from the binary, with
//! their types, a strong ETag that revalidates, and the security headers; nothing else.

use std::net::SocketAddr;

use crate::harness::{TestServer, raw_http};

/// `GET path` with extra header lines; returns (status, lower-cased head, body).
async fn get(addr: SocketAddr, path: &str, headers: &str) -> (u16, String, String) {
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{headers}\r\n");
    let (status, head, body) = raw_http(addr, &request).await;
    (status, head.to_ascii_lowercase(), body)
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

/// `/` is the page (HTML, with a CSP that keeps scripts to the server's own origin), its
/// modules come as JavaScript, a second request with the ETag gets 304 and no body, and an
/// unknown file or a path escaping the folder is 404.
#[tokio::test]
async fn the_web_client_is_served_from_the_binary() {
    let server = TestServer::dev().await;
    let (status, head, body) = get(server.addr, "/", "").await;
    assert_eq!(status, 200, "{head}");
    assert_eq!(header(&head, "content-type"), Some("text/html"));
    assert!(
        body.contains("<script type=\"module\" src=\"app.js\">"),
        "{body}"
    );
    let csp = header(&head, "content-security-policy").expect("a CSP");
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(header(&head, "x-content-type-options"), Some("nosniff"));

    for module in ["app.js", "call.js", "protocol.js"] {
        let (status, head, body) = get(server.addr, &format!("/{module}"), "").await;
        assert_eq!(status, 200, "{module}: {head}");
        assert_eq!(header(&head, "content-type"), Some("text/javascript"));
        let source = concat!(env!("CARGO_MANIFEST_DIR"), "/web/");
        let on_disk = std::fs::read_to_string(format!("{source}{module}")).expect("the module");
        assert!(body == on_disk, "{module} is served as it is in web/");
        let etag = header(&head, "etag").expect("an ETag").to_owned();
        let (status, _, body) = get(
            server.addr,
            &format!("/{module}"),
            &format!("If-None-Match: {etag}\r\n"),
        )
        .await;
        assert_eq!(status, 304, "{module} revalidates");
        assert!(body.is_empty());
    }
    for missing in ["/nope.js", "/../Cargo.toml", "/%2e%2e/Cargo.toml"] {
        assert_eq!(get(server.addr, missing, "").await.0, 404, "{missing}");
    }
    // The API and health routes are unchanged by the catch-all.
    assert_eq!(get(server.addr, "/healthz", "").await.0, 200);
}
