//! The look shared by the call UI and the app's screens: the type scale and colours
//! ([`apply_style`]), avatars with initials ([`avatar`]) and presence dots, and the
//! [`UiMap`], where named widgets note where they were drawn.
//!
//! The map is what a journey test clicks on: with `HUDDLE_UI_MAP=FILE` in the environment,
//! [`write_ui_map`] writes it to `FILE` as JSON (`{"name": [left, top, right, bottom]}` in
//! window pixels) whenever it changes, so a test driving real input (xdotool) finds the
//! "Log in" button, a contact's call button or the bar's Leave button where they are drawn.
//! Without the variable nothing is noted or written.

use std::collections::BTreeMap;

use bevy::prelude::*;
use bevy_egui::{EguiContexts, egui};

/// Green of "online" and of accept buttons.
pub const GREEN: egui::Color32 = egui::Color32::from_rgb(46, 160, 67);
/// Red of the leave and decline buttons.
pub const RED: egui::Color32 = egui::Color32::from_rgb(210, 48, 48);
/// Background of cards (dialogs, the bar).
pub const CARD: egui::Color32 = egui::Color32::from_rgb(32, 35, 42);

/// Sets the type scale (heading 22, body 15, buttons 15, small 12) and rounded widgets.
pub fn apply_style(ctx: &egui::Context) {
    use egui::{FontFamily::Proportional, FontId, TextStyle};
    ctx.all_styles_mut(|style| {
        style.text_styles = [
            (TextStyle::Heading, FontId::new(22.0, Proportional)),
            (TextStyle::Body, FontId::new(15.0, Proportional)),
            (TextStyle::Button, FontId::new(15.0, Proportional)),
            (TextStyle::Small, FontId::new(12.0, Proportional)),
            (
                TextStyle::Monospace,
                FontId::new(14.0, egui::FontFamily::Monospace),
            ),
        ]
        .into();
        style.spacing.button_padding = egui::vec2(10.0, 6.0);
        style.spacing.item_spacing = egui::vec2(8.0, 6.0);
        let rounding = egui::CornerRadius::same(6);
        for widget in [
            &mut style.visuals.widgets.inactive,
            &mut style.visuals.widgets.hovered,
            &mut style.visuals.widgets.active,
            &mut style.visuals.widgets.noninteractive,
            &mut style.visuals.widgets.open,
        ] {
            widget.corner_radius = rounding;
        }
        style.visuals.window_corner_radius = egui::CornerRadius::same(10);
    });
}

pub use bevy_huddle::call::model::initials;

/// The avatar colour of an id: the same hue the tiles use
/// ([`bevy_huddle::view::tiles::avatar_color`]).
pub fn avatar_color(id: &str) -> egui::Color32 {
    let [r, g, b, _] = bevy_huddle::view::tiles::avatar_color(id)
        .to_srgba()
        .to_u8_array();
    egui::Color32::from_rgb(r, g, b)
}

/// A round avatar of `size` with the initials of `name` (or `id`); with `online`, a presence
/// dot (green online, grey offline) at its lower right.
pub fn avatar(ui: &mut egui::Ui, name: &str, id: &str, size: f32, online: Option<bool>) {
    let (rect, _) = ui.allocate_exact_size(egui::vec2(size, size), egui::Sense::hover());
    let painter = ui.painter();
    painter.circle_filled(rect.center(), size / 2.0, avatar_color(id));
    painter.text(
        rect.center(),
        egui::Align2::CENTER_CENTER,
        initials(name, id),
        egui::FontId::proportional(size * 0.4),
        egui::Color32::WHITE,
    );
    if let Some(online) = online {
        let dot = rect.right_bottom() - egui::vec2(size * 0.14, size * 0.14);
        let color = if online { GREEN } else { egui::Color32::GRAY };
        painter.circle_filled(dot, size * 0.14 + 2.0, ui.visuals().panel_fill);
        painter.circle_filled(dot, size * 0.14, color);
    }
}

/// Where named widgets were drawn this frame, in window pixels (see the module doc). The
/// default records nothing; [`UiMap::from_env`] records when `HUDDLE_UI_MAP` names a file.
#[derive(Resource, Clone, Debug, Default, PartialEq)]
pub struct UiMap {
    /// Widget name → `[left, top, right, bottom]`.
    pub widgets: BTreeMap<String, [f32; 4]>,
    /// Names drawn this frame (the map keeps only these at the end of the frame).
    drawn: Vec<String>,
    /// Where the map is written; `None`: nothing is recorded.
    file: Option<std::path::PathBuf>,
}

impl UiMap {
    /// A map written to `$HUDDLE_UI_MAP`, or one that records nothing without the variable.
    pub fn from_env() -> Self {
        Self {
            file: std::env::var_os("HUDDLE_UI_MAP").map(Into::into),
            ..Self::default()
        }
    }

    /// Whether widgets are being recorded.
    pub fn is_recording(&self) -> bool {
        self.file.is_some()
    }

    /// Notes that `name` was drawn at `rect` (egui points) on a screen of `pixels_per_point`.
    pub fn note(&mut self, name: impl Into<String>, rect: egui::Rect, pixels_per_point: f32) {
        let rect = [rect.min.x, rect.min.y, rect.max.x, rect.max.y].map(|v| v * pixels_per_point);
        self.note_pixels(name, rect);
    }

    /// Notes that `name` was drawn at `[left, top, right, bottom]` window pixels.
    pub fn note_pixels(&mut self, name: impl Into<String>, rect: [f32; 4]) {
        if !self.is_recording() {
            return;
        }
        let name = name.into();
        if self.widgets.get(&name) != Some(&rect) {
            self.widgets.insert(name.clone(), rect);
        }
        self.drawn.push(name);
    }

    /// Notes a widget's response under `name`.
    pub fn note_response(&mut self, name: impl Into<String>, response: &egui::Response) {
        let pixels_per_point = response.ctx.pixels_per_point();
        self.note(name, response.rect, pixels_per_point);
    }

    /// Ends a frame: widgets not drawn in it leave the map. Returns whether the map changed.
    fn end_frame(&mut self) -> bool {
        let drawn = std::mem::take(&mut self.drawn);
        let before = self.widgets.len();
        self.widgets.retain(|name, _| drawn.contains(name));
        before != self.widgets.len()
    }
}

/// Notes where the tiles, their name labels and their shown badges are on screen: `tile.UID`,
/// `tile.label.UID`, `badge.muted.UID`, `badge.hand.UID` (`screen.UID` for a screen share),
/// for tiles that are shown.
pub(crate) fn note_tiles(
    tiles: Query<(
        &bevy_huddle::prelude::TileOf,
        &Node,
        &ComputedNode,
        &UiGlobalTransform,
        Has<bevy_huddle::prelude::ScreenShareTile>,
        &Children,
    )>,
    labels: Query<
        (&ComputedNode, &UiGlobalTransform),
        With<bevy_huddle::view::tiles::TileNameLabel>,
    >,
    participants: Query<&bevy_huddle::prelude::Participant>,
    badges: Query<
        (
            &Node,
            &ComputedNode,
            &UiGlobalTransform,
            Has<bevy_huddle::view::tiles::TileMutedBadge>,
        ),
        Or<(
            With<bevy_huddle::view::tiles::TileMutedBadge>,
            With<bevy_huddle::view::tiles::TileHandBadge>,
        )>,
    >,
    descendants: Query<&Children>,
    mut map: ResMut<UiMap>,
) {
    let rect = |node: &ComputedNode, at: &UiGlobalTransform| {
        let size = node.size();
        let center = at.affine().translation;
        (size.x > 0.0 && size.y > 0.0).then(|| {
            let min = center - size / 2.0;
            [min.x, min.y, min.x + size.x, min.y + size.y]
        })
    };
    for (tile_of, style, node, at, screen, children) in &tiles {
        // A hidden node keeps the size it last had.
        if style.display == Display::None {
            continue;
        }
        let Ok(who) = participants.get(tile_of.0) else {
            continue;
        };
        let Some(tile_rect) = rect(node, at) else {
            continue;
        };
        if screen {
            map.note_pixels(format!("screen.{}", who.uid), tile_rect);
            continue;
        }
        map.note_pixels(format!("tile.{}", who.uid), tile_rect);
        for child in children.iter() {
            if let Some(label) = labels.get(child).ok().and_then(|(n, t)| rect(n, t)) {
                map.note_pixels(format!("tile.label.{}", who.uid), label);
            }
        }
        for descendant in children
            .iter()
            .flat_map(|c| descendants.iter_descendants(c))
        {
            let Ok((style, node, at, muted)) = badges.get(descendant) else {
                continue;
            };
            if style.display == Display::None {
                continue;
            }
            if let Some(badge) = rect(node, at) {
                let kind = if muted { "muted" } else { "hand" };
                map.note_pixels(format!("badge.{kind}.{}", who.uid), badge);
            }
        }
    }
}

/// Run condition: the [`UiMap`] is recording.
pub(crate) fn recording(map: Res<UiMap>) -> bool {
    map.is_recording()
}

/// Writes the [`UiMap`] to its file when it changed.
pub(crate) fn write_ui_map(
    mut map: ResMut<UiMap>,
    mut written: Local<Option<BTreeMap<String, [f32; 4]>>>,
) {
    let removed = map.end_frame();
    let Some(path) = map.file.clone() else {
        return;
    };
    if !removed && written.as_ref() == Some(&map.widgets) {
        return;
    }
    let json = serde_json::to_string(&map.widgets).unwrap_or_default();
    // Written whole, then renamed: a reader never sees half a map.
    let partial = path.with_extension("partial");
    if std::fs::write(&partial, json).is_ok() && std::fs::rename(&partial, &path).is_ok() {
        *written = Some(map.widgets.clone());
    }
}

/// Installs the style once (the first frame with an egui context), and notes `ui.ready` in
/// the [`UiMap`] from the tenth frame after it: by then the first windows have left egui's
/// sizing pass and stand where they stay.
pub(crate) fn style_once(
    mut contexts: EguiContexts,
    mut frames: Local<u32>,
    mut map: ResMut<UiMap>,
) -> Result {
    let ctx = contexts.ctx_mut()?;
    if *frames == 0 {
        apply_style(ctx);
    }
    *frames = frames.saturating_add(1);
    if *frames > 10 {
        map.note("ui.ready", egui::Rect::ZERO, 1.0);
    }
    Ok(())
}
