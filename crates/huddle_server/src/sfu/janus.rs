//! A client of Janus Gateway's WebSocket API (subprotocol `janus-protocol`), the part the
//! SFU needs: one Janus session per connection, plugin handles, requests matched to their
//! answers by transaction, and each handle's own events on a channel of its own.
//!
//! ```text
//!  request(body) ── transaction t ──▶ Janus ──▶ "ack" (skipped) ──▶ "success"/"event"/"error"
//!                                                   with t ──▶ the waiting request
//!  events without a waiting transaction (trickle, webrtcup, hangup, plugin news) ──▶
//!      the channel of their `sender` handle
//! ```
//!
//! The session is kept alive with a `keepalive` every [`KEEPALIVE_EVERY`] (Janus ends idle
//! sessions after 60 s by default). When the socket closes, every waiting request fails with
//! [`JanusError::Closed`] and every handle's channel ends.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// How often the Janus session is kept alive.
pub const KEEPALIVE_EVERY: Duration = Duration::from_secs(20);

/// How long a request waits for its answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How long connecting (TCP + WebSocket + session) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What went wrong talking to Janus.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum JanusError {
    /// The WebSocket could not be opened.
    #[error("cannot reach Janus at {url}: {reason}")]
    Unreachable {
        /// The instance.
        url: String,
        /// Why.
        reason: String,
    },
    /// The connection closed (Janus stopped or the network failed).
    #[error("the connection to Janus closed")]
    Closed,
    /// No answer in time.
    #[error("Janus did not answer `{request}` within {after:?}")]
    Timeout {
        /// The request.
        request: String,
        /// How long we waited.
        after: Duration,
    },
    /// Janus (or its VideoRoom plugin) answered with an error.
    #[error("Janus refused `{request}`: {code} {reason}")]
    Refused {
        /// The request.
        request: String,
        /// Janus's error code.
        code: i64,
        /// Janus's reason.
        reason: String,
    },
    /// The answer lacks what it should carry.
    #[error("Janus's answer to `{request}` is malformed: {reason}")]
    Malformed {
        /// The request.
        request: String,
        /// What is missing.
        reason: String,
    },
}

type Waiting = Arc<Mutex<HashMap<String, oneshot::Sender<Value>>>>;
type HandleEvents = Arc<Mutex<HashMap<u64, mpsc::UnboundedSender<Value>>>>;

/// One connection to one Janus instance, with its Janus session.
pub struct JanusConnection {
    url: String,
    api_secret: Option<String>,
    outgoing: mpsc::UnboundedSender<Message>,
    waiting: Waiting,
    handles: HandleEvents,
    session_id: AtomicU64,
    next_transaction: AtomicU64,
    alive: Arc<AtomicBool>,
}

/// A plugin handle's answer: the plugin's data, and the SDP Janus attached, if any.
#[derive(Debug, Clone)]
pub struct PluginAnswer {
    /// `plugindata.data`.
    pub data: Value,
    /// `jsep`: `{"type": "offer"|"answer", "sdp": …}`.
    pub jsep: Option<Value>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl JanusConnection {
    /// Connects, creates a Janus session, and keeps it alive until the connection closes.
    pub async fn connect(url: &str, api_secret: Option<String>) -> Result<Arc<Self>, JanusError> {
        Self::open(url, api_secret, None).await
    }

    /// Takes over the Janus session `session_id` that another client (a Huddle node that
    /// died) made: its handles, and the media through them, carry on here. Janus keeps a
    /// session whose socket closed for its `reclaim_session_timeout` (scripts/janus-config).
    pub async fn claim(
        url: &str,
        api_secret: Option<String>,
        session_id: u64,
    ) -> Result<Arc<Self>, JanusError> {
        Self::open(url, api_secret, Some(session_id)).await
    }

    /// The instance's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The Janus session this connection drives.
    pub fn session_id(&self) -> u64 {
        self.session_id.load(Ordering::Relaxed)
    }

    /// The events of `handle`, a handle of a claimed session, from now on.
    pub fn follow(&self, handle: u64) -> mpsc::UnboundedReceiver<Value> {
        let (events, receiver) = mpsc::unbounded_channel();
        lock(&self.handles).insert(handle, events);
        receiver
    }

    /// Connects; makes a new Janus session, or claims `claimed`.
    async fn open(
        url: &str,
        api_secret: Option<String>,
        claimed: Option<u64>,
    ) -> Result<Arc<Self>, JanusError> {
        let unreachable = |reason: String| JanusError::Unreachable {
            url: url.to_owned(),
            reason,
        };
        let mut request = url
            .into_client_request()
            .map_err(|err| unreachable(err.to_string()))?;
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            http_header("janus-protocol").map_err(unreachable)?,
        );
        let (ws, _) =
            tokio::time::timeout(CONNECT_TIMEOUT, tokio_tungstenite::connect_async(request))
                .await
                .map_err(|_| unreachable(format!("no answer within {CONNECT_TIMEOUT:?}")))?
                .map_err(|err| unreachable(err.to_string()))?;
        let (mut sink, mut stream) = ws.split();
        let (outgoing, mut to_send) = mpsc::unbounded_channel::<Message>();
        let waiting: Waiting = Arc::default();
        let handles: HandleEvents = Arc::default();
        let alive = Arc::new(AtomicBool::new(true));
        tokio::spawn(async move {
            while let Some(message) = to_send.recv().await {
                if sink.send(message).await.is_err() {
                    break;
                }
            }
        });
        {
            let (waiting, handles, alive) = (waiting.clone(), handles.clone(), alive.clone());
            tokio::spawn(async move {
                while let Some(Ok(message)) = stream.next().await {
                    let Message::Text(text) = message else {
                        continue;
                    };
                    let Ok(value) = serde_json::from_str::<Value>(&text) else {
                        tracing::warn!("janus: unreadable message: {text}");
                        continue;
                    };
                    dispatch(value, &waiting, &handles);
                }
                alive.store(false, Ordering::Relaxed);
                // Waiting requests fail, handle channels end.
                lock(&waiting).clear();
                lock(&handles).clear();
            });
        }
        let connection = Arc::new(Self {
            url: url.to_owned(),
            api_secret,
            outgoing,
            waiting,
            handles,
            session_id: AtomicU64::new(0),
            next_transaction: AtomicU64::new(1),
            alive,
        });
        match claimed {
            Some(session_id) => {
                connection.session_id.store(session_id, Ordering::Relaxed);
                connection
                    .request("claim", json!({"janus": "claim"}))
                    .await?;
            }
            None => {
                let created = connection
                    .request("create", json!({"janus": "create"}))
                    .await?;
                let session_id = id_in(&created, "create")?;
                connection.session_id.store(session_id, Ordering::Relaxed);
            }
        }
        let keeper = Arc::downgrade(&connection);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(KEEPALIVE_EVERY).await;
                let Some(connection) = keeper.upgrade() else {
                    break;
                };
                if !connection.is_alive() {
                    break;
                }
                let _ = connection
                    .request("keepalive", json!({"janus": "keepalive"}))
                    .await;
            }
        });
        Ok(connection)
    }

    /// Whether the socket is still open.
    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Relaxed)
    }

    /// A fresh transaction id.
    fn transaction(&self) -> String {
        format!("h{}", self.next_transaction.fetch_add(1, Ordering::Relaxed))
    }

    /// Sends `body` with `transaction`, the Janus session (once there is one) and the API
    /// secret; false if the socket is gone.
    fn send(&self, mut body: Value, transaction: &str) -> bool {
        body["transaction"] = json!(transaction);
        let session_id = self.session_id.load(Ordering::Relaxed);
        if session_id != 0 {
            body["session_id"] = json!(session_id);
        }
        if let Some(secret) = &self.api_secret {
            body["apisecret"] = json!(secret);
        }
        self.outgoing
            .send(Message::Text(body.to_string().into()))
            .is_ok()
    }

    /// Sends `body` and waits for the answer that is not an `ack`.
    async fn request(&self, name: &str, body: Value) -> Result<Value, JanusError> {
        let transaction = self.transaction();
        let (answer, answered) = oneshot::channel();
        lock(&self.waiting).insert(transaction.clone(), answer);
        if !self.is_alive() || !self.send(body, &transaction) {
            lock(&self.waiting).remove(&transaction);
            return Err(JanusError::Closed);
        }
        let answer = match tokio::time::timeout(REQUEST_TIMEOUT, answered).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => return Err(JanusError::Closed),
            Err(_) => {
                lock(&self.waiting).remove(&transaction);
                return Err(JanusError::Timeout {
                    request: name.to_owned(),
                    after: REQUEST_TIMEOUT,
                });
            }
        };
        if answer["janus"] == "error" {
            return Err(JanusError::Refused {
                request: name.to_owned(),
                code: answer["error"]["code"].as_i64().unwrap_or(0),
                reason: answer["error"]["reason"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            });
        }
        Ok(answer)
    }

    /// Attaches a VideoRoom handle; its events (trickled candidates, plugin news) arrive on
    /// the returned channel.
    pub async fn attach_videoroom(
        &self,
    ) -> Result<(u64, mpsc::UnboundedReceiver<Value>), JanusError> {
        let answer = self
            .request(
                "attach",
                json!({"janus": "attach", "plugin": "janus.plugin.videoroom"}),
            )
            .await?;
        let handle = id_in(&answer, "attach")?;
        let (events, receiver) = mpsc::unbounded_channel();
        lock(&self.handles).insert(handle, events);
        Ok((handle, receiver))
    }

    /// A plugin request on `handle` (with an SDP if `jsep` is set); a plugin-level error
    /// (`error_code`) is [`JanusError::Refused`].
    pub async fn message(
        &self,
        handle: u64,
        body: Value,
        jsep: Option<Value>,
    ) -> Result<PluginAnswer, JanusError> {
        let name = body["request"].as_str().unwrap_or("message").to_owned();
        let mut request = json!({"janus": "message", "handle_id": handle, "body": body});
        if let Some(jsep) = jsep {
            request["jsep"] = jsep;
        }
        let asked = std::time::Instant::now();
        let answer = self.request(&name, request).await?;
        tracing::debug!(
            "janus: {name} on {handle} answered in {:?}",
            asked.elapsed()
        );
        let data = answer["plugindata"]["data"].clone();
        if let Some(code) = data["error_code"].as_i64() {
            return Err(JanusError::Refused {
                request: name,
                code,
                reason: data["error"].as_str().unwrap_or_default().to_owned(),
            });
        }
        if data.is_null() {
            return Err(JanusError::Malformed {
                request: name,
                reason: "no plugin data".into(),
            });
        }
        Ok(PluginAnswer {
            data,
            jsep: answer.get("jsep").cloned(),
        })
    }

    /// Trickles one candidate (`{"candidate", "sdpMid", "sdpMLineIndex"}`) or the end of
    /// candidates (`{"completed": true}`) to `handle`. Not waited for: Janus acks it.
    pub fn trickle(&self, handle: u64, candidate: Value) {
        let body = json!({"janus": "trickle", "handle_id": handle, "candidate": candidate});
        self.send(body, &self.transaction());
    }

    /// Detaches `handle` (Janus hangs up its PeerConnection; a publisher leaves its room).
    pub async fn detach(&self, handle: u64) {
        lock(&self.handles).remove(&handle);
        let _ = self
            .request("detach", json!({"janus": "detach", "handle_id": handle}))
            .await;
    }
}

impl Drop for JanusConnection {
    fn drop(&mut self) {
        if self.session_id.load(Ordering::Relaxed) != 0 {
            self.send(json!({"janus": "destroy"}), "bye");
        }
        let _ = self.outgoing.send(Message::Close(None));
    }
}

/// The `data.id` of Janus's answer to `request` (a session or handle id).
fn id_in(answer: &Value, request: &str) -> Result<u64, JanusError> {
    answer["data"]["id"]
        .as_u64()
        .ok_or_else(|| JanusError::Malformed {
            request: request.into(),
            reason: "no id".into(),
        })
}

fn http_header(value: &str) -> Result<tokio_tungstenite::tungstenite::http::HeaderValue, String> {
    tokio_tungstenite::tungstenite::http::HeaderValue::from_str(value).map_err(|e| e.to_string())
}

/// Hands a message to the request waiting for its transaction (unless it is an `ack`), or
/// to its handle's channel.
fn dispatch(value: Value, waiting: &Waiting, handles: &HandleEvents) {
    if value["janus"] == "ack" {
        return;
    }
    if let Some(transaction) = value["transaction"].as_str()
        && let Some(answer) = lock(waiting).remove(transaction)
    {
        let _ = answer.send(value);
        return;
    }
    if let Some(sender) = value["sender"].as_u64()
        && let Some(events) = lock(handles).get(&sender)
    {
        let _ = events.send(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An answer goes to the request waiting for its transaction, an `ack` to nobody, and an
    /// event without a waiting transaction to its handle's channel.
    #[test]
    fn answers_go_to_their_request_and_events_to_their_handle() {
        let waiting: Waiting = Arc::default();
        let handles: HandleEvents = Arc::default();
        let (answer, mut answered) = oneshot::channel();
        lock(&waiting).insert("h1".into(), answer);
        let (events, mut handle_events) = mpsc::unbounded_channel();
        lock(&handles).insert(7, events);
        dispatch(
            json!({"janus": "ack", "transaction": "h1"}),
            &waiting,
            &handles,
        );
        assert!(answered.try_recv().is_err(), "an ack is not the answer");
        dispatch(
            json!({"janus": "event", "transaction": "h1", "sender": 7, "plugindata": {}}),
            &waiting,
            &handles,
        );
        assert_eq!(answered.try_recv().expect("answered")["janus"], "event");
        assert!(
            handle_events.try_recv().is_err(),
            "the answer is not an event"
        );
        dispatch(
            json!({"janus": "trickle", "sender": 7, "candidate": {"completed": true}}),
            &waiting,
            &handles,
        );
        assert_eq!(handle_events.try_recv().expect("event")["janus"], "trickle");
        dispatch(json!({"janus": "trickle", "sender": 8}), &waiting, &handles);
        assert!(handle_events.try_recv().is_err(), "another handle's event");
    }
}
