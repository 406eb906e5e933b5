//! Whole-app test: the demo opens a real window (Xvfb + Mesa lavapipe), lays out a grid of
//! four tiles, and the screenshot shows every participant's moving test pattern where the
//! layout put it. Each tile's picture carries its frame number, which is read back from the
//! PNG: a frame number above zero in every tile proves that frames went from the synthetic
//! source through each participant's `Image` to the GPU and onto the screen. The default UI's
//! button bar (egui) is found by its frame colour where egui anchors it, and is absent with
//! `--no-bar` (`default_layout = false`).

use std::path::Path;
use std::process::Command;

use bevy::math::{Rect, Vec2};
use bevy_huddle::call::settings::{AspectFit, LayoutMode};
use bevy_huddle::view::layout::{LayoutRequest, LayoutTile, compute_layout};
use huddle::demo::STATUS_HEIGHT;
use huddle::desktop::BOT_VIDEO;
use huddle_media::synthetic::read_frame_number;

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

/// The colour of the button bar's frame.
const BAR_FILL: [u8; 3] = {
    let [r, g, b, _] = bevy_huddle_ui::look::CARD.to_array();
    [r, g, b]
};

/// Share of pixels in the band where the bar's frame shows under its buttons (anchored
/// bottom-centre, 8 px up, 6 px of margin) that have the bar's frame colour.
fn bar_fill_share(image: &image::RgbaImage) -> f32 {
    let (x0, x1) = (WIDTH / 2 - 200, WIDTH / 2 + 200);
    let (y0, y1) = (HEIGHT - 13, HEIGHT - 9);
    let total = (x1 - x0) * (y1 - y0);
    let matching = (y0..y1)
        .flat_map(|y| (x0..x1).map(move |x| (x, y)))
        .filter(|&(x, y)| image.get_pixel(x, y).0[..3] == BAR_FILL)
        .count();
    matching as f32 / total as f32
}

/// Runs the demo and returns its screenshot, and a second one about a second later.
fn demo_screenshots(name: &str, args: &[&str]) -> (image::RgbaImage, image::RgbaImage) {
    let dir = std::env::temp_dir().join(format!("huddle-demo-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let shots = [
        dir.join(format!("{name}.png")),
        dir.join(format!("{name}-2.png")),
    ];
    let mut all = args.to_vec();
    all.extend([
        "--screenshot",
        shots[0].to_str().expect("utf-8 path"),
        "--second-screenshot",
        shots[1].to_str().expect("utf-8 path"),
        "--exit-after",
        "60",
    ]);
    run_demo(&all);
    let [first, second] = shots.map(|shot| {
        assert!(Path::new(&shot).exists(), "no screenshot {shot:?} written");
        let image = image::open(&shot).expect("decodes").to_rgba8();
        std::fs::remove_file(&shot).ok();
        assert_eq!((image.width(), image.height()), (WIDTH, HEIGHT));
        image
    });
    (first, second)
}

/// Whether two pixels differ visibly.
fn differs(a: &image::Rgba<u8>, b: &image::Rgba<u8>) -> bool {
    a.0.iter()
        .zip(b.0)
        .take(3)
        .any(|(x, y)| (i32::from(*x) - i32::from(y)).abs() > 24)
}

/// Share of pixels inside `rect` that differ between the two shots.
fn changed_share(a: &image::RgbaImage, b: &image::RgbaImage, rect: &Rect) -> f32 {
    let (x0, y0) = (rect.min.x.ceil() as u32, rect.min.y.ceil() as u32);
    let (x1, y1) = (rect.max.x.floor() as u32, rect.max.y.floor() as u32);
    let total = (x1 - x0) * (y1 - y0);
    let changed = (y0..y1)
        .flat_map(|y| (x0..x1).map(move |x| (x, y)))
        .filter(|&(x, y)| differs(a.get_pixel(x, y), b.get_pixel(x, y)))
        .count();
    changed as f32 / total.max(1) as f32
}

/// Moving video: inside every tile's picture the two shots differ (the pattern scrolls and
/// its stamp counts up), and the frame number read from the second shot is larger; outside
/// every picture (gaps, background, the bar and panels, below the status line) they are
/// the same.
fn assert_moving_video(
    first: &image::RgbaImage,
    second: &image::RgbaImage,
    (rects, cells): (&[Rect], &[Rect]),
) {
    for (i, rect) in rects.iter().enumerate() {
        let share = changed_share(first, second, rect);
        assert!(
            share > 0.02,
            "tile {i} at {rect:?} did not move: {share:.4} changed"
        );
        let stamp = |image: &image::RgbaImage| {
            let (x, y) = (rect.min.x.ceil() as u32 + 1, rect.min.y.ceil() as u32 + 1);
            let (w, h) = (rect.width() as u32 - 3, rect.height() as u32 - 3);
            let crop = image::imageops::crop_imm(image, x, y, w, h).to_image();
            read_frame_number(crop.as_raw(), w, h)
        };
        let (before, after) = (stamp(first), stamp(second));
        assert!(
            matches!((before, after), (Some(b), Some(a)) if a > b),
            "tile {i}: frame numbers {before:?} then {after:?}"
        );
    }
    let inside = |x: u32, y: u32| {
        let p = Vec2::new(x as f32, y as f32);
        // Edges are filtered, and the speaking outline (3 px, just outside each tile's cell)
        // comes and goes as everyone takes turns talking.
        let on_outline =
            |cell: &Rect| cell.inflate(5.0).contains(p) && !cell.inflate(-3.0).contains(p);
        rects.iter().any(|r| r.inflate(5.0).contains(p)) || cells.iter().any(on_outline)
    };
    let mut outside = 0u32;
    let mut changed = 0u32;
    for y in STATUS_HEIGHT as u32..HEIGHT {
        for x in 0..WIDTH {
            if inside(x, y) {
                continue;
            }
            outside += 1;
            if differs(first.get_pixel(x, y), second.get_pixel(x, y)) {
                changed += 1;
            }
        }
    }
    assert!(
        outside > 10_000,
        "the layout leaves background: {outside} px"
    );
    assert!(
        changed as f32 / (outside as f32) < 0.001,
        "{changed} of {outside} pixels outside the tiles changed"
    );
}

/// Asserts that each rect shows a test-pattern frame with a plausible frame number.
fn assert_video_in(image: &image::RgbaImage, rects: &[Rect]) {
    for (i, rect) in rects.iter().enumerate() {
        // Stay a pixel inside the rect to avoid edge filtering.
        let (x, y) = (rect.min.x.ceil() as u32 + 1, rect.min.y.ceil() as u32 + 1);
        let (w, h) = (rect.width() as u32 - 3, rect.height() as u32 - 3);
        let crop = image::imageops::crop_imm(image, x, y, w, h).to_image();
        // The frame number only: the band's right half may be under the UI's windows.
        let frame = read_frame_number(crop.as_raw(), w, h)
            .unwrap_or_else(|| panic!("tile {i}: no stamp in {rect:?}"));
        assert!(
            frame > 0 && frame < 100_000,
            "tile {i} at {rect:?} shows no plausible video frame: {frame}"
        );
    }
}

/// Where the layout puts each tile's picture, in window pixels (same code the app runs),
/// with the bar's strip left free.
fn content_rects(mode: LayoutMode, tiles: usize) -> Vec<Rect> {
    content_rects_above(mode, tiles, bevy_huddle_ui::CALL_BAR_HEIGHT)
}

/// [`content_rects`] in a call area that ends `bottom` pixels above the window's bottom.
fn content_rects_above(mode: LayoutMode, tiles: usize, bottom: f32) -> Vec<Rect> {
    layout_above(mode, tiles, bottom)
        .into_iter()
        .map(|(content, _)| content)
        .collect()
}

/// The tiles' cells (where the speaking outline is drawn around), as in
/// [`content_rects_above`].
fn cells_above(mode: LayoutMode, tiles: usize, bottom: f32) -> Vec<Rect> {
    layout_above(mode, tiles, bottom)
        .into_iter()
        .map(|(_, cell)| cell)
        .collect()
}

/// Each tile's picture and cell in the window for `tiles` tiles laid out in `mode` above a
/// band of `bottom` px, below the status line.
fn layout_above(mode: LayoutMode, tiles: usize, bottom: f32) -> Vec<(Rect, Rect)> {
    let layout_tiles: Vec<LayoutTile> = (0..tiles)
        .map(|i| LayoutTile {
            key: bevy::ecs::entity::Entity::from_raw_u32(i as u32 + 1).expect("entity"),
            local: i == 0,
            video_aspect: Some(BOT_VIDEO.x as f32 / BOT_VIDEO.y as f32),
        })
        .collect();
    let viewport = Vec2::new(WIDTH as f32, HEIGHT as f32 - STATUS_HEIGHT - bottom);
    compute_layout(&LayoutRequest {
        mode,
        viewport,
        tiles: &layout_tiles,
        // Any remote can be the main tile (the loudest speaker); the set of rects is the same
        // whichever it is.
        main: layout_tiles.last().map(|tile| tile.key),
        floating_position: None,
        fit: AspectFit::Contain,
    })
    .into_iter()
    .map(|(_, layout)| {
        let offset = Vec2::new(0.0, STATUS_HEIGHT);
        (
            Rect::from_corners(layout.content.min + offset, layout.content.max + offset),
            Rect::from_corners(layout.rect.min + offset, layout.rect.max + offset),
        )
    })
    .collect()
}

/// The demo with three bots in a grid (it rings the bots' group; they answer): exits 0,
/// writes two 1280×720 screenshots about a second apart; every one of the four tiles shows a
/// test-pattern frame whose stamp reads back with a frame number above zero, and moves
/// between the shots while nothing outside the tiles does; the gaps between tiles show the
/// background, not video; the button bar is drawn.
#[test]
fn demo_grid_screenshot_shows_video_in_every_tile() {
    let _serial = crate::one_media_test_at_a_time();
    let (image, later) = demo_screenshots("grid", &["--bots", "3", "--mode", "grid"]);
    let rects = content_rects(LayoutMode::Default, 4);
    let cells = cells_above(LayoutMode::Default, 4, bevy_huddle_ui::CALL_BAR_HEIGHT);
    assert_video_in(&image, &rects);
    assert_moving_video(&image, &later, (&rects, &cells));
    // Between the first two tiles of the top row lies background, not video.
    let gap_x = ((rects[0].max.x + rects[1].min.x) / 2.0) as u32;
    let gap_y = rects[0].center().y as u32;
    let pixel = image.get_pixel(gap_x, gap_y).0;
    assert!(
        pixel[0] < 40 && pixel[1] < 40 && pixel[2] < 40,
        "gap between tiles is not background: {pixel:?}"
    );
    let bar = bar_fill_share(&image);
    assert!(
        bar > 0.3,
        "button bar missing: {bar:.3} of its band has its colour"
    );
}

/// The demo in spotlight with `--no-bar`: the main tile, the strip and the floating local
/// preview all show moving video where the spotlight layout puts them (two shots differ
/// inside them only), and no button bar is drawn.
#[test]
fn demo_spotlight_without_bar_shows_only_tiles() {
    let _serial = crate::one_media_test_at_a_time();
    let (image, later) = demo_screenshots(
        "spotlight",
        &["--bots", "3", "--mode", "spotlight", "--no-bar"],
    );
    let rects = content_rects_above(LayoutMode::Spotlight, 4, 0.0);
    let cells = cells_above(LayoutMode::Spotlight, 4, 0.0);
    assert_video_in(&image, &rects);
    assert_moving_video(&image, &later, (&rects, &cells));
    let bar = bar_fill_share(&image);
    assert!(
        bar < 0.02,
        "a button bar was drawn: {bar:.3} of its band has its colour"
    );
}
