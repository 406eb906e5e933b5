//! Huddle's wire vocabulary, shared by the client (`bevy_huddle`) and the server (`huddle_server`).
//!
//! This crate holds only data: serde types and the stable error codes of the calling API. It does
//! no IO, so every layer can depend on it (`huddle_protocol ← huddle_media ← bevy_huddle`, and
//! `huddle_protocol ← huddle_server`).
//!
//! - [`ErrorCode`]: the reference SDK's stable string codes (`ERR_CALL_NOT_FOUND`,
//!   `INVALID_PROP_EXCEPTION`, …), carried by every typed error of every layer.
//! - [`CallType`], [`ReceiverType`], [`CallStatus`]: the call vocabulary of the ringing flow.
//! - [`messages`]: the WebSocket protocol's frames ([`ClientFrame`] with a [`Request`],
//!   [`ServerFrame`] with a [`Reply`], an error, or a [`ServerEvent`]).
//! - [`token`]: the layout of call tokens and their claims, read without verifying (the
//!   server verifies; clients read which session a token is for).

pub mod messages;
pub mod token;

pub use messages::{
    Call, CallDirection, CallLog, CallLogQuery, ClientFrame, ErrorBody, GroupInfo, IceServer,
    MAX_FRAME_BYTES, MediaRoute, PeerSignal, Presence, Reply, Request, SFU_PUBLISH_PEER,
    SFU_SUBSCRIBE_PEER, ServerEvent, ServerFrame, ServerPayload, SessionEndReason,
    SessionParticipant, SimulcastLayer, StateChange, User,
};

use std::fmt;

use serde::{Deserialize, Serialize};

/// Version of the client/server protocol. Bumped on any incompatible change.
pub const PROTOCOL_VERSION: u32 = 1;

/// The stable error codes of the calling API (reference SDK names), shared by all layers.
///
/// Each typed error in Huddle maps to one of these through a `code()` method, so code that
/// only needs the reference's string (logs, a JavaScript client, a test) can match on it.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorCode {
    /// The call or session id is unknown to the server.
    #[serde(rename = "ERR_CALL_NOT_FOUND")]
    CallNotFound,
    /// A call was already initiated for this user.
    #[serde(rename = "ERR_CALL_ALREADY_INITIATED")]
    CallAlreadyInitiated,
    /// The user already joined this call.
    #[serde(rename = "ERR_CALL_ALREADY_JOINED")]
    CallAlreadyJoined,
    /// The receiver is busy in another call.
    #[serde(rename = "ERR_CALL_BUSY")]
    CallBusy,
    /// The call was cancelled by its initiator.
    #[serde(rename = "ERR_CALL_CANCELLED")]
    CallCancelled,
    /// The call was rejected by its receiver.
    #[serde(rename = "ERR_CALL_REJECTED")]
    CallRejected,
    /// The call has already ended.
    #[serde(rename = "ERR_CALL_ENDED")]
    CallEnded,
    /// The session id is malformed.
    #[serde(rename = "ERR_INVALID_SESSION_ID")]
    InvalidSessionId,
    /// The operation needs a logged-in user.
    #[serde(rename = "ERR_USER_NOT_LOGGED_IN")]
    UserNotLoggedIn,
    /// A user tried to call themselves.
    #[serde(rename = "ERR_CALLING_SELF")]
    CallingSelf,
    /// Another call is already in progress on this client.
    #[serde(rename = "ERROR_CALL_IN_PROGRESS")]
    CallInProgress,
    /// Missing or invalid arguments (e.g. to `generate_token`).
    #[serde(rename = "INVALID_ARGUMENT_EXCEPTION")]
    InvalidArgument,
    /// Invalid call settings or an invalid value for an in-call action.
    #[serde(rename = "INVALID_PROP_EXCEPTION")]
    InvalidProp,
    /// The server refused the request (e.g. unauthorized, expired token).
    #[serde(rename = "API_ERROR")]
    ApiError,
    /// The server could not be reached or answered something unintelligible.
    #[serde(rename = "UNKNOWN_API_ERROR")]
    UnknownApiError,
    /// A call token's signature does not verify (forged or tampered).
    #[serde(rename = "AUTH_ERR_TOKEN_INVALID_SIGNATURE")]
    TokenInvalidSignature,
}

impl ErrorCode {
    /// Every code, in declaration order.
    pub const ALL: [ErrorCode; 16] = [
        ErrorCode::CallNotFound,
        ErrorCode::CallAlreadyInitiated,
        ErrorCode::CallAlreadyJoined,
        ErrorCode::CallBusy,
        ErrorCode::CallCancelled,
        ErrorCode::CallRejected,
        ErrorCode::CallEnded,
        ErrorCode::InvalidSessionId,
        ErrorCode::UserNotLoggedIn,
        ErrorCode::CallingSelf,
        ErrorCode::CallInProgress,
        ErrorCode::InvalidArgument,
        ErrorCode::InvalidProp,
        ErrorCode::ApiError,
        ErrorCode::UnknownApiError,
        ErrorCode::TokenInvalidSignature,
    ];

    /// The stable string code, exactly as the reference SDK spells it.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::CallNotFound => "ERR_CALL_NOT_FOUND",
            ErrorCode::CallAlreadyInitiated => "ERR_CALL_ALREADY_INITIATED",
            ErrorCode::CallAlreadyJoined => "ERR_CALL_ALREADY_JOINED",
            ErrorCode::CallBusy => "ERR_CALL_BUSY",
            ErrorCode::CallCancelled => "ERR_CALL_CANCELLED",
            ErrorCode::CallRejected => "ERR_CALL_REJECTED",
            ErrorCode::CallEnded => "ERR_CALL_ENDED",
            ErrorCode::InvalidSessionId => "ERR_INVALID_SESSION_ID",
            ErrorCode::UserNotLoggedIn => "ERR_USER_NOT_LOGGED_IN",
            ErrorCode::CallingSelf => "ERR_CALLING_SELF",
            ErrorCode::CallInProgress => "ERROR_CALL_IN_PROGRESS",
            ErrorCode::InvalidArgument => "INVALID_ARGUMENT_EXCEPTION",
            ErrorCode::InvalidProp => "INVALID_PROP_EXCEPTION",
            ErrorCode::ApiError => "API_ERROR",
            ErrorCode::UnknownApiError => "UNKNOWN_API_ERROR",
            ErrorCode::TokenInvalidSignature => "AUTH_ERR_TOKEN_INVALID_SIGNATURE",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a call carries video.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallType {
    /// Audio only.
    Audio,
    /// Audio and video.
    #[default]
    Video,
}

/// Who a call is addressed to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReceiverType {
    /// One user, by uid.
    #[default]
    User,
    /// Every member of a group, by guid.
    Group,
}

/// The status of a call in the ringing flow (reference call statuses).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallStatus {
    /// Placed and ringing.
    #[default]
    Initiated,
    /// Accepted; the session is going on.
    Ongoing,
    /// Nobody answered before the ringing timeout.
    Unanswered,
    /// The receiver rejected it.
    Rejected,
    /// The receiver was busy.
    Busy,
    /// The initiator cancelled it before it was answered.
    Cancelled,
    /// It was answered and has ended.
    Ended,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every error code serializes to exactly the reference string and parses back.
    #[test]
    fn error_codes_round_trip_as_reference_strings() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(&code).expect("serialize");
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            let back: ErrorCode = serde_json::from_str(&json).expect("parse");
            assert_eq!(back, code);
        }
        let unknown: Result<ErrorCode, _> = serde_json::from_str("\"ERR_NOPE\"");
        assert!(unknown.is_err());
    }

    /// A browser's `RTCIceCandidate.toJSON()` (camelCase fields) parses as a candidate signal,
    /// and its end-of-candidates (`candidate: null`) as one without a candidate.
    #[test]
    fn browser_candidates_parse_as_candidate_signals() {
        let browser = r#"{"kind":"candidate","candidate":"candidate:1 1 udp 2122260223 10.0.0.2 5000 typ host","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"u1"}"#;
        let signal: PeerSignal = serde_json::from_str(browser).expect("parse");
        assert_eq!(
            signal,
            PeerSignal::Candidate {
                candidate: Some("candidate:1 1 udp 2122260223 10.0.0.2 5000 typ host".into()),
                sdp_mid: Some("0".into()),
                sdp_mline_index: Some(0),
                username_fragment: Some("u1".into()),
            }
        );
        let end: PeerSignal = serde_json::from_str(
            r#"{"kind":"candidate","candidate":null,"sdpMid":null,"sdpMLineIndex":null}"#,
        )
        .expect("parse");
        assert!(matches!(
            end,
            PeerSignal::Candidate {
                candidate: None,
                ..
            }
        ));
    }
}

#[cfg(test)]
mod doc_examples {
    use crate::{ClientFrame, ServerFrame};

    /// Every JSON example in `docs/protocol.md` parses as the frame type it is labelled with
    /// (`json client` / `json server`) and serializes back to the same JSON value, so the
    /// document cannot drift from the code. A `json client-browser` example uses the browser's
    /// candidate field names, and serializes back to the same values under Huddle's names.
    #[test]
    fn every_example_in_the_protocol_doc_parses() {
        let doc = include_str!("../../../docs/protocol.md");
        let mut seen = (0, 0);
        let mut lines = doc.lines();
        while let Some(line) = lines.next() {
            let (side, browser_names) = match line.trim() {
                "```json client" => ("client", false),
                "```json client-browser" => ("client", true),
                "```json server" => ("server", false),
                _ => continue,
            };
            let body: String = lines
                .by_ref()
                .take_while(|l| l.trim() != "```")
                .collect::<Vec<_>>()
                .join("\n");
            let mut value: serde_json::Value =
                serde_json::from_str(&body).unwrap_or_else(|e| panic!("{body}: {e}"));
            if browser_names {
                value = huddle_names(value);
            }
            let back = if side == "client" {
                seen.0 += 1;
                let frame: ClientFrame =
                    serde_json::from_str(&body).unwrap_or_else(|e| panic!("client {body}: {e}"));
                serde_json::to_value(frame).expect("serialize")
            } else {
                seen.1 += 1;
                let frame: ServerFrame =
                    serde_json::from_str(&body).unwrap_or_else(|e| panic!("server {body}: {e}"));
                serde_json::to_value(frame).expect("serialize")
            };
            assert_eq!(strip_defaults(back), strip_defaults(value), "{body}");
        }
        assert!(seen.0 >= 15 && seen.1 >= 18, "examples found: {seen:?}");
    }

    /// The browser's `RTCIceCandidate` field names renamed to Huddle's.
    fn huddle_names(value: serde_json::Value) -> serde_json::Value {
        match value {
            serde_json::Value::Object(map) => serde_json::Value::Object(
                map.into_iter()
                    .map(|(k, v)| {
                        let key = match k.as_str() {
                            "sdpMid" => "sdp_mid".to_owned(),
                            "sdpMLineIndex" => "sdp_mline_index".to_owned(),
                            "usernameFragment" => "username_fragment".to_owned(),
                            _ => k,
                        };
                        (key, huddle_names(v))
                    })
                    .collect(),
            ),
            other => other,
        }
    }

    /// Drops `false` booleans, so that omitted defaults compare equal to explicit ones.
    fn strip_defaults(value: serde_json::Value) -> serde_json::Value {
        match value {
            serde_json::Value::Object(map) => serde_json::Value::Object(
                map.into_iter()
                    .filter(|(_, v)| *v != serde_json::Value::Bool(false))
                    .map(|(k, v)| (k, strip_defaults(v)))
                    .collect(),
            ),
            serde_json::Value::Array(items) => {
                serde_json::Value::Array(items.into_iter().map(strip_defaults).collect())
            }
            other => other,
        }
    }
}
