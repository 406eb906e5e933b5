//! Typed errors of the client plugin. Every variant maps to a stable reference code
//! ([`ErrorCode`]) through [`HuddleError::code`], and reaches users as a
//! [`CallEvent::Error`](crate::call::events::CallEvent::Error) without disturbing the call state.

use std::sync::Arc;

use huddle_media::recording::RecordingError;
use huddle_protocol::ErrorCode;
use thiserror::Error;

use crate::call::devices::DeviceKind;

/// What went wrong in a call operation.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Error)]
pub enum HuddleError {
    /// A call setting (or a value given to an in-call action) is invalid.
    #[error("invalid property `{prop}`: {reason}")]
    InvalidProp {
        /// The setting or argument at fault, as named in `CallSettings`.
        prop: &'static str,
        /// Why it was refused.
        reason: String,
    },
    /// An argument is missing or names nothing known (e.g. an unknown participant uid).
    #[error("invalid argument `{argument}`: {reason}")]
    InvalidArgument {
        /// The argument at fault.
        argument: &'static str,
        /// Why it was refused.
        reason: String,
    },
    /// The device id is not in the current device list of that kind.
    #[error("no {kind} device with id `{id}`")]
    UnknownDevice {
        /// Which list was searched.
        kind: DeviceKind,
        /// The id that was asked for.
        id: String,
    },
    /// The device list of that kind is empty, so the action cannot apply.
    #[error("no {kind} device is available")]
    NoDevice {
        /// Which list is empty.
        kind: DeviceKind,
    },
    /// The device is listed but could not be opened (unplugged, busy, no permission); its
    /// synthetic stand-in is used instead and the call goes on.
    #[error("{kind} device `{id}` cannot be used: {reason}")]
    DeviceUnavailable {
        /// Which kind of device.
        kind: DeviceKind,
        /// Its id.
        id: String,
        /// Why it could not be opened.
        reason: String,
    },
    /// There is no active call to apply the action to.
    #[error("there is no active call")]
    NoActiveCall,
    /// The action needs a call in progress, but the call has ended.
    #[error("the call has already ended")]
    CallEnded,
    /// A call is already in progress; a second one cannot start.
    #[error("another call is already in progress")]
    CallInProgress,
    /// The session id is empty or malformed.
    #[error("invalid session id `{0}`")]
    InvalidSessionId(String),
    /// The server refused the request, with its code and reason.
    #[error("server refused ({code}): {message}")]
    Server {
        /// The server's error code.
        code: ErrorCode,
        /// Its reason.
        message: String,
    },
    /// The server could not be reached (or stopped answering for too long).
    #[error("server unreachable: {0}")]
    Unreachable(String),
    /// No server connection to send the request through.
    #[error("not connected to a server")]
    NotConnected,
    /// A call token that cannot even be read.
    #[error("malformed call token")]
    MalformedToken,
    /// A STUN or TURN server handed out by the signaling server cannot be used (unreachable,
    /// credentials refused, a kind this client does not support); the call goes on with the
    /// paths that work.
    #[error("ICE server: {0}")]
    IceServer(huddle_media::ice::IceServerProblem),
    /// The media connection to a participant failed (bad SDP, codec error, …); the call goes on.
    #[error("media with `{uid}`: {reason}")]
    Media {
        /// The remote participant.
        uid: String,
        /// What failed.
        reason: String,
    },
    /// Screen capture is impossible here (no display) or stopped (display gone); the call
    /// goes on without the share.
    #[error("screen share: {0}")]
    ScreenShare(String),
    /// Recording could not start or stopped (unwritable folder, disk full); the call goes on.
    /// The media layer's error, with its variant (`Create`, `Write`, `TooManyTracks`).
    #[error("recording: {0}")]
    Recording(Shared<RecordingError>),
}

/// A lower layer's error kept whole (its variant and source) inside a [`HuddleError`], which
/// must be cloneable: shared, and compared by what it says.
#[derive(Debug)]
pub struct Shared<E>(pub Arc<E>);

impl<E> Clone for Shared<E> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<E> Shared<E> {
    /// Wraps an error.
    pub fn new(error: E) -> Self {
        Self(Arc::new(error))
    }
}

impl<E> std::ops::Deref for Shared<E> {
    type Target = E;

    fn deref(&self) -> &E {
        &self.0
    }
}

impl<E: std::fmt::Display> std::fmt::Display for Shared<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl<E: std::fmt::Display> PartialEq for Shared<E> {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0.to_string() == other.0.to_string()
    }
}

impl HuddleError {
    /// The reference SDK's stable error code for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            HuddleError::InvalidProp { .. } => ErrorCode::InvalidProp,
            HuddleError::InvalidArgument { .. }
            | HuddleError::UnknownDevice { .. }
            | HuddleError::NoDevice { .. } => ErrorCode::InvalidArgument,
            HuddleError::NoActiveCall => ErrorCode::CallNotFound,
            HuddleError::CallEnded => ErrorCode::CallEnded,
            HuddleError::CallInProgress => ErrorCode::CallInProgress,
            HuddleError::InvalidSessionId(_) => ErrorCode::InvalidSessionId,
            HuddleError::Server { code, .. } => *code,
            HuddleError::Unreachable(_) => ErrorCode::UnknownApiError,
            HuddleError::NotConnected => ErrorCode::UserNotLoggedIn,
            HuddleError::MalformedToken => ErrorCode::TokenInvalidSignature,
            HuddleError::Media { .. }
            | HuddleError::IceServer(_)
            | HuddleError::Recording(_)
            | HuddleError::ScreenShare(_)
            | HuddleError::DeviceUnavailable { .. } => ErrorCode::UnknownApiError,
        }
    }

    pub(crate) fn invalid_prop(prop: &'static str, reason: impl Into<String>) -> Self {
        HuddleError::InvalidProp {
            prop,
            reason: reason.into(),
        }
    }
}
