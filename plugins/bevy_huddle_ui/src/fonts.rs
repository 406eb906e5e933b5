//! Text in any script for egui, with the fallback chain Bevy's own text uses.
//!
//! egui ships fonts for Latin, Greek, Cyrillic and emoji only, so a name like `山田` drew as
//! boxes. Bevy's text (with the `system_font_discovery` feature) finds system fonts through
//! fontique (fontconfig on Linux) and falls back per script. [`system_fallback_chain`] asks
//! the same fontique collection for the same answers: the system's sans-serif family, then
//! the family fontique falls back to for each script people commonly type in
//! ([`FALLBACK_SCRIPTS`]). [`install_fallback_fonts`] appends those fonts, in that order,
//! after egui's own fonts (which keep the emoji and icon glyphs) in both egui families, once,
//! on the first frame. A machine without such fonts keeps egui's defaults.

use bevy::prelude::*;
use bevy_egui::{EguiContexts, egui};
use fontique::{Collection, CollectionOptions, FallbackKey, GenericFamily, Script};

/// Scripts whose fallback family joins the chain, in order (ISO 15924 codes).
pub const FALLBACK_SCRIPTS: [&[u8; 4]; 11] = [
    b"Latn", b"Grek", b"Cyrl", b"Hani", b"Hira", b"Kana", b"Hang", b"Arab", b"Hebr", b"Deva",
    b"Thai",
];

/// One font of the chain.
#[derive(Clone, Debug)]
pub struct FallbackFont {
    /// Its family name (what egui calls it).
    pub family: String,
    /// The font file's bytes.
    pub data: Vec<u8>,
    /// Its index in a font collection file (`.ttc`).
    pub index: u32,
}

/// The system's fonts for text in any script: the sans-serif family, then each script's
/// fallback family, without repeats; empty without system fonts.
pub fn system_fallback_chain() -> Vec<FallbackFont> {
    let mut collection = Collection::new(CollectionOptions {
        shared: false,
        system_fonts: true,
    });
    let mut families: Vec<fontique::FamilyId> = collection
        .generic_families(GenericFamily::SansSerif)
        .take(1)
        .collect();
    for script in FALLBACK_SCRIPTS {
        let key = FallbackKey::new(Script::from_bytes(*script), None);
        families.extend(collection.fallback_families(key).take(1));
    }
    let mut chain: Vec<FallbackFont> = Vec::new();
    for id in families {
        let Some(family) = collection.family(id) else {
            continue;
        };
        if chain.iter().any(|f| f.family == family.name()) {
            continue;
        }
        let Some(font) = family.default_font() else {
            continue;
        };
        // Colour bitmap fonts (Noto Color Emoji) draw nothing in egui: its own emoji font
        // already covers emoji.
        if family.name().contains("Color Emoji") {
            continue;
        }
        if let Some(blob) = font.load(None) {
            chain.push(FallbackFont {
                family: family.name().to_owned(),
                data: blob.as_ref().to_vec(),
                index: font.index(),
            });
        }
    }
    chain
}

/// egui's default fonts with `chain` appended to both families (after egui's own fonts,
/// so its glyphs and emoji stay as they are, and every other character finds a font). The
/// font files move into egui, uncopied (a CJK font is tens of megabytes).
pub fn font_definitions(chain: Vec<FallbackFont>) -> egui::FontDefinitions {
    let mut fonts = egui::FontDefinitions::default();
    for font in chain {
        let mut data = egui::FontData::from_owned(font.data);
        data.index = font.index;
        fonts
            .font_data
            .insert(font.family.clone(), std::sync::Arc::new(data));
        for family in [egui::FontFamily::Proportional, egui::FontFamily::Monospace] {
            fonts
                .families
                .entry(family)
                .or_default()
                .push(font.family.clone());
        }
    }
    fonts
}

/// Gives egui the system fallback chain, once (the first frame with an egui context).
pub(crate) fn install_fallback_fonts(
    mut contexts: EguiContexts,
    mut installed: Local<bool>,
) -> Result {
    if *installed {
        return Ok(());
    }
    let ctx = contexts.ctx_mut()?;
    let chain = system_fallback_chain();
    info!(
        "egui fallback fonts: {}",
        chain
            .iter()
            .map(|f| f.family.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    ctx.set_fonts(font_definitions(chain));
    *installed = true;
    Ok(())
}
