//! The web client: the files under `crates/huddle_server/web/` (plain ES modules, no build
//! step), built into the binary by `rust-embed` and served at `/` from the server's own
//! origin, which the `/ws` Origin check accepts.
//!
//! Every answer carries the file's MIME type, a strong `ETag` (its SHA-256, so a
//! `If-None-Match` revalidation gets `304`), `Cache-Control: no-cache` (a new server never
//! leaves an old client in the browser), and a Content-Security-Policy that lets the page
//! load only its own scripts and talk only to its own server.

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rust_embed::Embed;

/// The web client's files, in the binary in every build (`debug-embed`: a debug build
/// read them at run time from the source tree it was built from, which need not exist
/// where it runs).
#[derive(Embed)]
#[folder = "web/"]
struct WebClient;

/// What the page may load and reach: its own files, its own server's WebSocket, media
/// from its own `MediaStream`s, avatars from anywhere over HTTPS.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
    style-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data: blob: https:; \
    media-src 'self' blob:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

/// `GET /`: the page.
pub(crate) async fn index(headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

/// `GET /{path}`: one of its files, or 404.
pub(crate) async fn file(Path(path): Path<String>, headers: HeaderMap) -> Response {
    serve(&path, &headers)
}

fn serve(path: &str, request: &HeaderMap) -> Response {
    let Some(file) = WebClient::get(path) else {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    };
    let etag = format!(
        "\"{}\"",
        file.metadata
            .sha256_hash()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let mut headers = HeaderMap::new();
    let mut set = |name, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    };
    set(header::CONTENT_TYPE, file.metadata.mimetype());
    set(header::ETAG, &etag);
    set(header::CACHE_CONTROL, "no-cache");
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY);
    set(header::REFERRER_POLICY, "no-referrer");
    let unchanged = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|tag| tag.trim() == etag));
    if unchanged {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    (StatusCode::OK, headers, file.data.into_owned()).into_response()
}
