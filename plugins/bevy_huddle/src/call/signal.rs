//! Peer signals (WebRTC offers, answers, candidates, …) as transport-neutral messages.
//!
//! A media backend writes [`OutboundPeerSignal`]s; whatever relays the call (the server
//! connection in `net/`, or a game's own transport) sends them and writes what arrives as
//! [`PeerSignalReceived`]. The relaying transport marks each call it carries with
//! [`RelayedBy`]: media starts only for calls that someone relays, so a call with no
//! transport stays pure data.

use bevy::prelude::*;
use huddle_protocol::PeerSignal;

/// The entity (a server connection, a game's transport) that relays this call's signals;
/// attached by that transport when the call joins its session.
#[derive(Component, Clone, Copy, Debug, PartialEq, Eq)]
pub struct RelayedBy(pub Entity);

/// STUN and TURN servers (with this participant's TURN credentials) for a call's media,
/// handed out by the server that relays the call when it joins the session. A call without
/// them gathers host candidates only.
#[derive(Component, Clone, Debug, Default, PartialEq, Eq)]
pub struct IceServers(pub Vec<huddle_protocol::IceServer>);

/// How a call's media travels, as the transport relaying it says: a mesh of connections
/// (the default when absent) or two connections through the server's SFU. It can change
/// during the call (a call that grows moves to the SFU); the media follows.
#[derive(Component, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallMediaRoute(pub huddle_protocol::MediaRoute);

/// The media of a call lost its path for a while (an ICE restart): the transport relaying
/// the call should make sure its own connection survived the outage too, and reconnect at
/// once if not, so that the restart's offer and answer get through.
#[derive(Message, Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransportCheckWanted {
    /// The call.
    pub call: Entity,
}

/// A signal for one peer of a call, to be relayed by the call's transport.
#[derive(Message, Clone, Debug, PartialEq)]
pub struct OutboundPeerSignal {
    /// The call.
    pub call: Entity,
    /// Recipient uid.
    pub to: String,
    /// The signal.
    pub signal: PeerSignal,
}

/// A signal from one peer of a call, delivered by the call's transport.
#[derive(Message, Clone, Debug, PartialEq)]
pub struct PeerSignalReceived {
    /// The call.
    pub call: Entity,
    /// From whom.
    pub from: String,
    /// The signal.
    pub signal: PeerSignal,
}
