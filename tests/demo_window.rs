//! Whole-app test: the demo opens a real window (Xvfb + Mesa lavapipe), lays out a grid of
//! four tiles, and the screenshot shows every participant's moving test pattern where the
//! layout put it. Each tile's picture carries its frame number, which is read back from the
//! PNG: a frame number above zero in every tile proves that frames went from the synthetic
//! source through each participant's `Image` to the GPU and onto the screen.

use std::path::Path;
use std::process::Command;

use bevy::math::{Rect, Vec2};
use bevy_huddle::layout::{LayoutRequest, LayoutTile, compute_layout};
use bevy_huddle::settings::{AspectFit, LayoutMode};
use huddle::demo::{BOT_VIDEO, STATUS_HEIGHT};
use huddle_media::synthetic::read_stamp;

const WIDTH: u32 = 1280;
const HEIGHT: u32 = 720;

fn run_demo(args: &[&str]) {
    let status = Command::new("xvfb-run")
        .args([
            "-a",
            "-s",
            "-screen 0 1280x720x24",
            env!("CARGO_BIN_EXE_huddle"),
            "demo",
        ])
        .args(args)
        .status()
        .expect("xvfb-run must be installed (scripts/setup installs it)");
    assert!(status.success(), "huddle demo {args:?} failed: {status}");
}

/// Where the layout puts each tile's picture, in window pixels (same code the app runs).
fn grid_content_rects(tiles: usize) -> Vec<Rect> {
    let layout_tiles: Vec<LayoutTile> = (0..tiles)
        .map(|i| LayoutTile {
            key: bevy::ecs::entity::Entity::from_raw_u32(i as u32 + 1).expect("entity"),
            local: i == 0,
            video_aspect: Some(BOT_VIDEO.x as f32 / BOT_VIDEO.y as f32),
        })
        .collect();
    let viewport = Vec2::new(WIDTH as f32, HEIGHT as f32 - STATUS_HEIGHT);
    compute_layout(&LayoutRequest {
        mode: LayoutMode::Default,
        viewport,
        tiles: &layout_tiles,
        main: None,
        floating_position: None,
        fit: AspectFit::Contain,
    })
    .into_iter()
    .map(|(_, layout)| {
        let offset = Vec2::new(0.0, STATUS_HEIGHT);
        Rect::from_corners(layout.content.min + offset, layout.content.max + offset)
    })
    .collect()
}

/// The demo with three bots in a grid: exits 0, writes a 1280×720 screenshot, and every one
/// of the four tiles shows a test-pattern frame whose stamp reads back with a frame number
/// above zero; the gaps between tiles show the background, not video.
#[test]
fn demo_grid_screenshot_shows_video_in_every_tile() {
    let dir = std::env::temp_dir().join(format!("huddle-demo-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let shot = dir.join("grid.png");
    let shot_arg = shot.to_str().expect("utf-8 path");
    run_demo(&[
        "--bots",
        "3",
        "--mode",
        "grid",
        "--screenshot",
        shot_arg,
        "--exit-after",
        "60",
    ]);
    assert!(Path::new(&shot).exists(), "no screenshot written");
    let image = image::open(&shot).expect("decodes").to_rgba8();
    assert_eq!((image.width(), image.height()), (WIDTH, HEIGHT));

    let rects = grid_content_rects(4);
    for (i, rect) in rects.iter().enumerate() {
        // Stay a pixel inside the rect to avoid edge filtering.
        let (x, y) = (rect.min.x.ceil() as u32 + 1, rect.min.y.ceil() as u32 + 1);
        let (w, h) = (rect.width() as u32 - 3, rect.height() as u32 - 3);
        let crop = image::imageops::crop_imm(&image, x, y, w, h).to_image();
        let stamp = read_stamp(crop.as_raw(), w, h)
            .unwrap_or_else(|| panic!("tile {i}: no stamp in {rect:?}"));
        assert!(
            stamp.frame > 0 && stamp.frame < 100_000,
            "tile {i} at {rect:?} shows no plausible video frame: {stamp:?}"
        );
    }
    // Between the first two tiles of the top row lies background, not video.
    let gap_x = ((rects[0].max.x + rects[1].min.x) / 2.0) as u32;
    let gap_y = rects[0].center().y as u32;
    let pixel = image.get_pixel(gap_x, gap_y).0;
    assert!(
        pixel[0] < 40 && pixel[1] < 40 && pixel[2] < 40,
        "gap between tiles is not background: {pixel:?}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
