//! The default Huddle call UI (button bar, ringing dialogs, participants panel, device menus),
//! on bevy_egui, over the tiles that `bevy_huddle` lays out.
//!
//! Not built yet: this crate reserves its place in the layering (`bevy_huddle ←
//! bevy_huddle_ui ← huddle`). Until it lands, the desktop demo drives calls with keyboard
//! shortcuts and shows a status line.
