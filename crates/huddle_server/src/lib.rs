//! Huddle's signaling and identity server (`huddle server`, and the slim `huddle-server`).
//!
//! Not built yet: this crate reserves its place in the layering (`huddle_protocol ←
//! huddle_server`, no Bevy). The ringing flow, call tokens, sessions, relaying and durable
//! call logs land here with the server issue.
