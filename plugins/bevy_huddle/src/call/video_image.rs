//! The one way Huddle makes and fills video `Image`s: RGBA8 sRGB, render-world only, so that
//! setting new pixels moves the bytes to the GPU without keeping a copy in the main world,
//! and Bevy reuses the GPU texture while the size stays the same.

use bevy::asset::RenderAssetUsages;
use bevy::image::ToExtents;
use bevy::prelude::*;
use wgpu_types::{TextureDimension, TextureFormat};

/// A video image of `size` holding `rgba` (4 bytes per pixel, row by row).
pub fn video_image(size: UVec2, rgba: Vec<u8>) -> Image {
    Image::new(
        size.to_extents(),
        TextureDimension::D2,
        rgba,
        TextureFormat::Rgba8UnormSrgb,
        RenderAssetUsages::RENDER_WORLD,
    )
}

/// A 1×1 black video image, ready for frames.
pub fn blank_video_image() -> Image {
    video_image(UVec2::ONE, vec![0, 0, 0, 255])
}

/// Puts a new picture into a video image: the pixels move in when the size is unchanged,
/// else the image is rebuilt at the new size.
pub fn show_video_frame(image: &mut Image, size: UVec2, rgba: Vec<u8>) {
    if image.size() == size {
        image.data = Some(rgba);
    } else {
        *image = video_image(size, rgba);
    }
}
