//! Whole-server tests: a real server bound to 127.0.0.1:0 in-process, real WebSocket clients
//! and raw HTTP, speaking the protocol of `docs/protocol.md`.

mod bad_input;
mod durability;
mod harness;
mod ringing;
mod sessions;
mod tokens;
mod web;
