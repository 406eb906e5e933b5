//! Synthetic video: a moving test pattern that carries its frame number and capture time in
//! the picture, in blocks large enough to survive lossy compression, so a receiver can read
//! them back ([`read_stamp`]) and measure frame loss and latency end to end. The band's lower
//! half repeats every cell inverted, so a picture that is not the pattern (a camera, a
//! browser's video, a screen share) reads as "no stamp" rather than as a made-up number.
//!
//! Layout of a frame (RGBA, row-major):
//!
//! ```text
//! ┌──────────────────────────────────────────────┐
//! │ ■□■■□ … 64 stamp cells (32 bits frame, 32 ms) │  top band: black/white cells,
//! │ □■□□■ … the same cells inverted (check row)   │  then the same inverted
//! │                                               │
//! │   colour bars that scroll one step per frame  │
//! │             ▇ a square bouncing around        │
//! └──────────────────────────────────────────────┘
//! ```

/// Bits of the stamp: 32 for the frame number, 32 for the capture time in milliseconds.
pub const STAMP_BITS: u32 = 64;

/// How much brighter (in 0..=255 luma) one of a cell and its check cell must be than the
/// other for the picture to carry a stamp.
const STAMP_CONTRAST: i32 = 48;

/// The frame number and capture time a synthetic frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameStamp {
    /// Frame counter since the source started.
    pub frame: u32,
    /// Capture time in milliseconds (wrapping), from the source's clock.
    pub capture_ms: u32,
}

/// A test-pattern generator for one participant; `seed` varies the colours.
#[derive(Clone, Debug)]
pub struct TestPattern {
    width: u32,
    height: u32,
    seed_hash: u32,
}

impl TestPattern {
    /// A pattern of `width`×`height` (both at least 64×36), coloured by `seed`.
    pub fn new(width: u32, height: u32, seed: &str) -> Self {
        // FNV-1a, so that seeds differing in one character look different.
        let seed_hash = seed.bytes().fold(0x811c_9dc5_u32, |h, b| {
            (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
        });
        Self {
            width: width.max(64),
            height: height.max(36),
            seed_hash,
        }
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// Height of the stamp band at the top.
    fn band_height(&self) -> u32 {
        (self.height / 8).max(8)
    }

    /// Renders one frame into `rgba` (resized to width × height × 4).
    pub fn render_rgba(&self, stamp: FrameStamp, rgba: &mut Vec<u8>) {
        let (w, h) = (self.width as usize, self.height as usize);
        rgba.resize(w * h * 4, 0);
        let band = self.band_height() as usize;
        let bars = [
            [235u8, 235, 235],
            [235, 235, 16],
            [16, 235, 235],
            [16, 235, 16],
            [235, 16, 235],
            [235, 16, 16],
            [16, 16, 235],
            [40, 40, 40],
        ];
        let squares = [
            [255u8, 140, 0],
            [255, 40, 40],
            [250, 250, 250],
            [30, 30, 30],
        ];
        let seed = self.seed_hash as usize;
        let rotate = seed % bars.len();
        let square_colour = squares[(seed / bars.len()) % squares.len()];
        let phase = (seed / 64) % 997;
        let bar_width = (w / bars.len()).max(1);
        let scroll = ((stamp.frame as usize + phase) * 4) % w;
        let square = (h / 5).max(4);
        let travel_x = w.saturating_sub(square).max(1);
        let travel_y = (h - band).saturating_sub(square).max(1);
        let t = (stamp.frame as usize + phase) * 5;
        let bounce = |pos: usize, travel: usize| {
            let p = pos % (2 * travel);
            if p < travel { p } else { 2 * travel - p }
        };
        let (sx, sy) = (bounce(t, travel_x), band + bounce(t * 3 / 4, travel_y));
        for y in 0..h {
            let row = &mut rgba[y * w * 4..(y + 1) * w * 4];
            for x in 0..w {
                let px = &mut row[x * 4..x * 4 + 4];
                let colour = if y < band {
                    let bit = (x * STAMP_BITS as usize) / w;
                    // Upper half: the bit; lower half: its inverse (the check row).
                    if stamp_bit(stamp, bit as u32) != (y >= band / 2) {
                        [255, 255, 255]
                    } else {
                        [0, 0, 0]
                    }
                } else if (sx..sx + square).contains(&x) && (sy..sy + square).contains(&y) {
                    square_colour
                } else {
                    bars[((x + scroll) / bar_width + rotate) % bars.len()]
                };
                px[..3].copy_from_slice(&colour);
                px[3] = 255;
            }
        }
    }
}

fn stamp_bit(stamp: FrameStamp, bit: u32) -> bool {
    let value = (u64::from(stamp.frame) << 32) | u64::from(stamp.capture_ms);
    (value >> (STAMP_BITS - 1 - bit)) & 1 == 1
}

/// Reads the stamp back from an RGBA frame of `width`×`height` by sampling the centre of each
/// cell of the top band and of its inverted check row (tolerant of compression noise).
/// `None` if the buffer is too small or the picture does not carry a stamp (some cell and its
/// check cell are not clearly different).
pub fn read_stamp(rgba: &[u8], width: u32, height: u32) -> Option<FrameStamp> {
    let value = read_cells(rgba, width, height, STAMP_BITS)?;
    Some(FrameStamp {
        frame: (value >> 32) as u32,
        capture_ms: value as u32,
    })
}

/// Reads only the frame number (the band's left half), for pictures whose right part may be
/// covered (a tile under a window, in a screenshot).
pub fn read_frame_number(rgba: &[u8], width: u32, height: u32) -> Option<u32> {
    read_cells(rgba, width, height, 32).map(|value| value as u32)
}

/// The first `cells` bits of the band, most significant first.
fn read_cells(rgba: &[u8], width: u32, height: u32, cells: u32) -> Option<u64> {
    let (w, h) = (width as usize, height as usize);
    if w < STAMP_BITS as usize || rgba.len() < w * h * 4 {
        return None;
    }
    let band = (height / 8).max(8) as usize;
    let (bit_row, check_row) = (band / 4, band * 3 / 4);
    let luma = |x: usize, y: usize| {
        let i = (y * w + x) * 4;
        (u32::from(rgba[i]) + u32::from(rgba[i + 1]) + u32::from(rgba[i + 2])) / 3
    };
    let mut value = 0u64;
    for bit in 0..cells as usize {
        let x = (bit * w + w / 2) / STAMP_BITS as usize;
        // A cell and its check cell must differ clearly (scaling and compression blur the
        // levels, never the order); which is brighter is the bit.
        let (cell, check) = (luma(x, bit_row) as i32, luma(x, check_row) as i32);
        if (cell - check).abs() < STAMP_CONTRAST {
            return None;
        }
        value = (value << 1) | u64::from(cell > check);
    }
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stamps written into a frame are read back exactly, at several sizes, even after noise.
    #[test]
    fn stamp_round_trips_through_the_picture() {
        for (w, h) in [(1280, 720), (640, 360), (320, 180)] {
            let pattern = TestPattern::new(w, h, "bob");
            let mut rgba = Vec::new();
            for frame in [0u32, 1, 299, 123_456, u32::MAX] {
                let stamp = FrameStamp {
                    frame,
                    capture_ms: frame.wrapping_mul(33).wrapping_add(7),
                };
                pattern.render_rgba(stamp, &mut rgba);
                // Simulate compression noise: nudge every byte by up to ±40.
                for (i, byte) in rgba.iter_mut().enumerate() {
                    let noise = (i % 81) as i16 - 40;
                    *byte = (*byte as i16 + noise).clamp(0, 255) as u8;
                }
                assert_eq!(
                    read_stamp(&rgba, w, h),
                    Some(stamp),
                    "{w}x{h} frame {frame}"
                );
                assert_eq!(read_frame_number(&rgba, w, h), Some(frame));
            }
        }
    }

    /// Consecutive frames differ (the picture moves) and the buffer has the right size.
    #[test]
    fn pattern_moves() {
        let pattern = TestPattern::new(320, 180, "alice");
        let (mut a, mut b) = (Vec::new(), Vec::new());
        pattern.render_rgba(
            FrameStamp {
                frame: 1,
                capture_ms: 0,
            },
            &mut a,
        );
        pattern.render_rgba(
            FrameStamp {
                frame: 2,
                capture_ms: 0,
            },
            &mut b,
        );
        assert_eq!(a.len(), 320 * 180 * 4);
        let band = 180 / 8 * 320 * 4;
        assert_ne!(a[band..], b[band..], "the picture below the stamp moves");
        assert_eq!(read_stamp(&a[..10], 320, 180), None);
    }

    /// Pictures that are not the pattern read as "no stamp": black, white, grey, and
    /// smooth gradients like a camera's.
    #[test]
    fn pictures_without_a_stamp_read_as_none() {
        let (w, h) = (320u32, 180u32);
        let fill = |f: &dyn Fn(u32, u32) -> [u8; 3]| -> Vec<u8> {
            let mut rgba = Vec::with_capacity((w * h * 4) as usize);
            for y in 0..h {
                for x in 0..w {
                    rgba.extend_from_slice(&f(x, y));
                    rgba.push(255);
                }
            }
            rgba
        };
        for (name, picture) in [
            ("black", fill(&|_, _| [0, 0, 0])),
            ("white", fill(&|_, _| [255, 255, 255])),
            ("grey", fill(&|_, _| [128, 128, 128])),
            (
                "gradient",
                fill(&|x, y| [(x % 256) as u8, (y % 256) as u8, 90]),
            ),
            (
                "stripes",
                fill(&|x, _| if (x / 5) % 2 == 0 { [0; 3] } else { [255; 3] }),
            ),
        ] {
            assert_eq!(read_stamp(&picture, w, h), None, "{name}");
        }
    }
}
