//! Video codec: H.264 Constrained Baseline through openh264, and colour conversion through the
//! SIMD `yuv` crate.
//!
//! ```text
//! RGBA (camera, pattern) ─I420Frame::from_rgba─▶ I420 ─H264Encoder─▶ Annex-B access unit ─▶ RTP
//! RTP ─▶ Annex-B access unit ─H264Decoder─▶ I420 (decoder's buffer) ─yuv─▶ RGBA (into the Image)
//! ```
//!
//! The encoder runs in explicit bitrate mode (openh264's default is a 120 kbps quality mode),
//! emits a keyframe every `keyframe_interval` frames as a backstop and on request (PLI), and is
//! rebuilt when the target bitrate moves by more than a quarter (openh264 only exposes live
//! bitrate changes through its unsafe raw API, which this workspace forbids).

use openh264::OpenH264API;
use openh264::decoder::{Decoder, DecoderConfig};
use openh264::encoder::{
    BitRate, Encoder, EncoderConfig, FrameRate, FrameType, IntraFramePeriod, Profile,
    RateControlMode, UsageType,
};
use openh264::formats::YUVSource;
use yuv::{
    BufferStoreMut, YuvConversionMode, YuvPlanarImage, YuvPlanarImageMut, YuvRange,
    YuvStandardMatrix,
};

/// A video failure.
#[derive(Debug, thiserror::Error)]
pub enum VideoError {
    /// The encoder or decoder refused.
    #[error("openh264: {0}")]
    Codec(String),
    /// Colour conversion refused (bad sizes).
    #[error("colour conversion: {0}")]
    Convert(String),
    /// Odd or zero dimensions.
    #[error("unsupported frame size {width}x{height} (must be even and non-zero)")]
    BadSize {
        /// Width.
        width: u32,
        /// Height.
        height: u32,
    },
}

/// A frame in I420 (planar Y, then U, then V at half resolution).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct I420Frame {
    width: u32,
    height: u32,
    data: Vec<u8>,
}

impl I420Frame {
    /// An all-black frame.
    pub fn new(width: u32, height: u32) -> Result<Self, VideoError> {
        check_size(width, height)?;
        let (w, h) = (width as usize, height as usize);
        let mut data = vec![16u8; w * h + 2 * (w / 2) * (h / 2)];
        data[w * h..].fill(128);
        Ok(Self {
            width,
            height,
            data,
        })
    }

    /// Converts an RGBA buffer (`width * height * 4` bytes) into I420 (BT.601, limited range).
    pub fn from_rgba(rgba: &[u8], width: u32, height: u32) -> Result<Self, VideoError> {
        let mut frame = Self::new(width, height)?;
        frame.fill_from_rgba(rgba)?;
        Ok(frame)
    }

    /// Overwrites this frame from an RGBA buffer of the same size.
    pub fn fill_from_rgba(&mut self, rgba: &[u8]) -> Result<(), VideoError> {
        let (w, h) = (self.width as usize, self.height as usize);
        let (y, chroma) = self.data.split_at_mut(w * h);
        let (u, v) = chroma.split_at_mut((w / 2) * (h / 2));
        let mut planar = YuvPlanarImageMut {
            y_plane: BufferStoreMut::Borrowed(y),
            y_stride: self.width,
            u_plane: BufferStoreMut::Borrowed(u),
            u_stride: self.width / 2,
            v_plane: BufferStoreMut::Borrowed(v),
            v_stride: self.width / 2,
            width: self.width,
            height: self.height,
        };
        yuv::rgba_to_yuv420(
            &mut planar,
            rgba,
            self.width * 4,
            YuvRange::Limited,
            YuvStandardMatrix::Bt601,
            YuvConversionMode::Balanced,
        )
        .map_err(|e| VideoError::Convert(e.to_string()))
    }

    /// The size of this frame halved (each side rounded down to even), as
    /// [`I420Frame::halve_into`] makes it; `None` below 16 pixels a side.
    pub fn halved_size(&self) -> Option<(u32, u32)> {
        halved_size(self.width, self.height)
    }

    /// Writes this frame at half its width and height into `out` (which must be of
    /// [`I420Frame::halved_size`]): each output sample is the mean of the 2×2 it covers, in
    /// every plane (a box filter, enough for one octave down).
    pub fn halve_into(&self, out: &mut I420Frame) -> Result<(), VideoError> {
        if self.halved_size() != Some((out.width, out.height)) {
            return Err(VideoError::BadSize {
                width: out.width,
                height: out.height,
            });
        }
        let (w, h) = (self.width as usize, self.height as usize);
        let (ow, oh) = (out.width as usize, out.height as usize);
        let planes_in = [(0, w), (w * h, w / 2), (w * h + (w / 2) * (h / 2), w / 2)];
        let planes_out = [
            (0, ow, oh),
            (ow * oh, ow / 2, oh / 2),
            (ow * oh + (ow / 2) * (oh / 2), ow / 2, oh / 2),
        ];
        for ((in_start, in_stride), (out_start, out_w, out_h)) in
            planes_in.into_iter().zip(planes_out)
        {
            for y in 0..out_h {
                let top = in_start + 2 * y * in_stride;
                let bottom = top + in_stride;
                for x in 0..out_w {
                    let sum = u16::from(self.data[top + 2 * x])
                        + u16::from(self.data[top + 2 * x + 1])
                        + u16::from(self.data[bottom + 2 * x])
                        + u16::from(self.data[bottom + 2 * x + 1]);
                    out.data[out_start + y * out_w + x] = ((sum + 2) / 4) as u8;
                }
            }
        }
        Ok(())
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }
}

/// Half of `width` × `height`, each side rounded down to even; `None` below 16 pixels a side.
pub fn halved_size(width: u32, height: u32) -> Option<(u32, u32)> {
    let (width, height) = ((width / 2) & !1, (height / 2) & !1);
    (width >= 16 && height >= 16).then_some((width, height))
}

fn check_size(width: u32, height: u32) -> Result<(), VideoError> {
    if width == 0 || height == 0 || !width.is_multiple_of(2) || !height.is_multiple_of(2) {
        return Err(VideoError::BadSize { width, height });
    }
    Ok(())
}

impl YUVSource for I420Frame {
    fn dimensions(&self) -> (usize, usize) {
        (self.width as usize, self.height as usize)
    }

    fn strides(&self) -> (usize, usize, usize) {
        let w = self.width as usize;
        (w, w / 2, w / 2)
    }

    fn y(&self) -> &[u8] {
        &self.data[..(self.width * self.height) as usize]
    }

    fn u(&self) -> &[u8] {
        let (w, h) = (self.width as usize, self.height as usize);
        &self.data[w * h..w * h + (w / 2) * (h / 2)]
    }

    fn v(&self) -> &[u8] {
        let (w, h) = (self.width as usize, self.height as usize);
        &self.data[w * h + (w / 2) * (h / 2)..]
    }
}

/// Converts any I420 source into RGBA (BT.601 limited range), resizing `rgba` as needed.
pub fn i420_to_rgba(source: &impl YUVSource, rgba: &mut Vec<u8>) -> Result<(u32, u32), VideoError> {
    let (w, h) = source.dimensions();
    let (ys, us, vs) = source.strides();
    rgba.resize(w * h * 4, 0);
    let planar = YuvPlanarImage {
        y_plane: source.y(),
        y_stride: ys as u32,
        u_plane: source.u(),
        u_stride: us as u32,
        v_plane: source.v(),
        v_stride: vs as u32,
        width: w as u32,
        height: h as u32,
    };
    yuv::yuv420_to_rgba(
        &planar,
        rgba,
        (w * 4) as u32,
        YuvRange::Limited,
        YuvStandardMatrix::Bt601,
    )
    .map_err(|e| VideoError::Convert(e.to_string()))?;
    Ok((w as u32, h as u32))
}

/// How to encode.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EncoderSettings {
    /// Width in pixels (even).
    pub width: u32,
    /// Height in pixels (even).
    pub height: u32,
    /// Frames per second.
    pub fps: f32,
    /// Target bitrate in bits per second.
    pub bitrate_bps: u32,
    /// A keyframe at least every this many frames.
    pub keyframe_interval: u32,
}

impl EncoderSettings {
    /// 1280×720 at 30 fps, 2.5 Mbps, a keyframe every 4 s.
    pub fn hd() -> Self {
        Self {
            width: 1280,
            height: 720,
            fps: 30.0,
            bitrate_bps: 2_500_000,
            keyframe_interval: 120,
        }
    }
}

/// One encoded access unit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedFrame {
    /// Annex-B NAL units (start codes included).
    pub data: Vec<u8>,
    /// Whether it is a keyframe (IDR).
    pub keyframe: bool,
}

/// The lowest video bitrate the encoder is given.
pub const MIN_BITRATE_BPS: u32 = 50_000;

/// Bits per pixel (per second, at the configured frame rate) a picture needs to look right:
/// about what libwebrtc's default bitrate limits give (1280×720 at 30 fps from 900 kbit/s,
/// 640×360 from 300 kbit/s, measured as 0.03 to 0.045 bits per pixel).
pub const BITS_PER_PIXEL: f32 = 0.03;

/// How long the rate must stay well above what the next larger size needs before the
/// picture grows back (libwebrtc's quality scaler waits too): congestion control's target
/// swings, and every change of size costs a keyframe.
pub const GROW_AFTER: std::time::Duration = std::time::Duration::from_secs(3);

/// How many times the camera's picture is halved for the bitrate it may use, as libwebrtc
/// lowers the resolution rather than the frame rate ("maintain framerate"): at 150 kbit/s a
/// 1280×720 picture gets a few frames a second out of openh264's rate control, which skips
/// frames it has no bits for, and keyframes (after a loss or an outage) take seconds to
/// send; 320×180 at the same rate runs at the full frame rate.
///
/// The picture shrinks as soon as the rate falls under what its size needs
/// ([`BITS_PER_PIXEL`], or 60 % of the configured rate when that is lower: the configured
/// rate alone never shrinks it), and grows one step back once the rate has stayed 25 %
/// above what the larger size needs for [`GROW_AFTER`]. At most [`ResolutionScaler::MAX_HALVINGS`]
/// halvings, and never below 16 pixels a side.
#[derive(Debug, Default)]
pub struct ResolutionScaler {
    halvings: u32,
    roomy_since: Option<std::time::Instant>,
}

impl ResolutionScaler {
    /// At most a quarter of the width and height (a sixteenth of the pixels).
    pub const MAX_HALVINGS: u32 = 2;

    /// The halvings for a picture of `settings`' size and frame rate sent at `bitrate_bps`
    /// now (`settings.bitrate_bps` is the configured rate).
    pub fn halvings_for(
        &mut self,
        now: std::time::Instant,
        settings: EncoderSettings,
        bitrate_bps: u32,
    ) -> u32 {
        let needs = |halvings: u32| -> Option<f32> {
            let (mut width, mut height) = (settings.width, settings.height);
            for _ in 0..halvings {
                (width, height) = halved_size(width, height)?;
            }
            let pixels_per_second = width as f32 * height as f32 * settings.fps.max(1.0);
            Some((pixels_per_second * BITS_PER_PIXEL).min(settings.bitrate_bps as f32 * 0.6))
        };
        let rate = bitrate_bps as f32;
        let mut shrank = false;
        while self.halvings < Self::MAX_HALVINGS
            && needs(self.halvings).is_some_and(|needed| rate < needed)
            && needs(self.halvings + 1).is_some()
        {
            self.halvings += 1;
            shrank = true;
        }
        if shrank {
            self.roomy_since = None;
            return self.halvings;
        }
        let roomy = self.halvings > 0
            && needs(self.halvings - 1).is_some_and(|needed| rate >= needed * 1.25);
        if !roomy {
            self.roomy_since = None;
        } else if now.duration_since(*self.roomy_since.get_or_insert(now)) >= GROW_AFTER {
            self.halvings -= 1;
            self.roomy_since = None;
        }
        self.halvings
    }
}

/// Sets a running openh264 encoder's target (and maximum) bitrate for all layers through its
/// `SetOption` (`ENCODER_OPTION_BITRATE`, `ENCODER_OPTION_MAX_BITRATE`), which the `openh264`
/// crate does not wrap.
#[allow(unsafe_code)]
fn set_encoder_bitrate(encoder: &mut Encoder, bps: u32) -> Result<(), VideoError> {
    use openh264_sys2::{
        ENCODER_OPTION_BITRATE, ENCODER_OPTION_MAX_BITRATE, SBitrateInfo, SPATIAL_LAYER_ALL,
    };
    let bitrate = i32::try_from(bps).unwrap_or(i32::MAX);
    for option in [ENCODER_OPTION_MAX_BITRATE, ENCODER_OPTION_BITRATE] {
        let mut info = SBitrateInfo {
            iLayer: SPATIAL_LAYER_ALL,
            iBitrate: bitrate,
        };
        // SAFETY: the encoder is initialised (it exists); both options take a pointer to an
        // `SBitrateInfo`, which lives on this stack frame for the whole call and is only read.
        let status = unsafe {
            encoder
                .raw_api()
                .set_option(option, std::ptr::from_mut(&mut info).cast())
        };
        if status != 0 {
            return Err(VideoError::Codec(format!(
                "openh264 SetOption({option}) = {status}"
            )));
        }
    }
    Ok(())
}

/// An H.264 Constrained Baseline encoder.
pub struct H264Encoder {
    encoder: Encoder,
    settings: EncoderSettings,
    /// The bitrate the encoder was built for (the most `set_bitrate` gives it).
    built_bitrate_bps: u32,
    force_keyframe: bool,
}

fn new_encoder(settings: &EncoderSettings) -> Result<Encoder, VideoError> {
    let config = EncoderConfig::new()
        .usage_type(UsageType::CameraVideoRealTime)
        .profile(Profile::Baseline)
        .rate_control_mode(RateControlMode::Bitrate)
        .bitrate(BitRate::from_bps(settings.bitrate_bps))
        .max_frame_rate(FrameRate::from_hz(settings.fps))
        .intra_frame_period(IntraFramePeriod::from_num_frames(
            settings.keyframe_interval,
        ))
        .skip_frames(true)
        .num_threads(1);
    Encoder::with_api_config(OpenH264API::from_source(), config)
        .map_err(|e| VideoError::Codec(e.to_string()))
}

impl H264Encoder {
    /// An encoder with these settings.
    pub fn new(settings: EncoderSettings) -> Result<Self, VideoError> {
        check_size(settings.width, settings.height)?;
        Ok(Self {
            encoder: new_encoder(&settings)?,
            built_bitrate_bps: settings.bitrate_bps,
            settings,
            force_keyframe: false,
        })
    }

    /// The current settings.
    pub fn settings(&self) -> EncoderSettings {
        self.settings
    }

    /// Asks for a keyframe on the next frame (a receiver sent PLI/FIR).
    pub fn request_keyframe(&mut self) {
        self.force_keyframe = true;
    }

    /// Moves the target bitrate (from congestion control) in the running encoder, as
    /// libwebrtc does: no rebuild and no keyframe, so the steps of a congestion controller
    /// backing off under loss do not each cost a keyframe (which at a low rate made the rate
    /// control skip the frames after it). Moves under 5 % are ignored, and the rate stays
    /// within 50 kbit/s and the rate the encoder was built with.
    pub fn set_bitrate(&mut self, bps: u32) -> Result<(), VideoError> {
        // Never above the rate it was built for: its H.264 level was chosen for that rate.
        let bps = bps.clamp(MIN_BITRATE_BPS, self.built_bitrate_bps.max(MIN_BITRATE_BPS));
        let current = f64::from(self.settings.bitrate_bps);
        if (f64::from(bps) - current).abs() <= current * 0.05 {
            return Ok(());
        }
        set_encoder_bitrate(&mut self.encoder, bps)?;
        self.settings.bitrate_bps = bps;
        Ok(())
    }

    /// Encodes one frame; `None` when the encoder skipped it.
    pub fn encode(&mut self, frame: &I420Frame) -> Result<Option<EncodedFrame>, VideoError> {
        if self.force_keyframe {
            self.encoder.force_intra_frame();
            self.force_keyframe = false;
        }
        let bitstream = self
            .encoder
            .encode(frame)
            .map_err(|e| VideoError::Codec(e.to_string()))?;
        let keyframe = matches!(bitstream.frame_type(), FrameType::IDR | FrameType::I);
        if matches!(bitstream.frame_type(), FrameType::Skip | FrameType::Invalid) {
            return Ok(None);
        }
        let data = bitstream.to_vec();
        if data.is_empty() {
            return Ok(None);
        }
        Ok(Some(EncodedFrame { data, keyframe }))
    }
}

/// An H.264 decoder producing RGBA.
pub struct H264Decoder {
    decoder: Decoder,
}

impl H264Decoder {
    /// A decoder.
    pub fn new() -> Result<Self, VideoError> {
        let decoder = Decoder::with_api_config(OpenH264API::from_source(), DecoderConfig::new())
            .map_err(|e| VideoError::Codec(e.to_string()))?;
        Ok(Self { decoder })
    }

    /// Decodes one Annex-B access unit into `rgba`; returns the frame size, or `None` when the
    /// decoder needs more data (e.g. waiting for a keyframe).
    pub fn decode_rgba(
        &mut self,
        access_unit: &[u8],
        rgba: &mut Vec<u8>,
    ) -> Result<Option<(u32, u32)>, VideoError> {
        let decoded = self
            .decoder
            .decode(access_unit)
            .map_err(|e| VideoError::Codec(e.to_string()))?;
        match decoded {
            Some(yuv) => i420_to_rgba(&yuv, rgba).map(Some),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The picture shrinks at once when the rate falls under what its size needs (two steps
    /// for a deep fall), grows one step at a time only after the rate has stayed well above
    /// the larger size's need for [`GROW_AFTER`], and a configured low rate alone never
    /// shrinks it.
    #[test]
    fn resolution_follows_the_bitrate_down_at_once_and_up_slowly() {
        let start = std::time::Instant::now();
        let at = |secs: f32| start + std::time::Duration::from_secs_f32(secs);
        let hd = EncoderSettings::hd();
        let mut scaler = ResolutionScaler::default();
        assert_eq!(scaler.halvings_for(at(0.0), hd, 2_000_000), 0);
        // 720p30 needs 829 kbit/s, 360p30 207 kbit/s.
        assert_eq!(scaler.halvings_for(at(1.0), hd, 600_000), 1);
        assert_eq!(scaler.halvings_for(at(1.5), hd, 120_000), 2);
        // Roomy for 360p (≥ 259 kbit/s) but not for long enough, then long enough.
        assert_eq!(scaler.halvings_for(at(2.0), hd, 300_000), 2);
        assert_eq!(scaler.halvings_for(at(4.5), hd, 300_000), 2);
        assert_eq!(scaler.halvings_for(at(5.0), hd, 300_000), 1);
        // A dip restarts the wait.
        assert_eq!(scaler.halvings_for(at(6.0), hd, 2_000_000), 1);
        assert_eq!(scaler.halvings_for(at(7.0), hd, 900_000), 1);
        assert_eq!(scaler.halvings_for(at(8.0), hd, 2_000_000), 1);
        assert_eq!(scaler.halvings_for(at(11.0), hd, 2_000_000), 0);
        // 720p configured at 400 kbit/s: only a fall under 240 kbit/s shrinks it.
        let modest = EncoderSettings {
            bitrate_bps: 400_000,
            ..hd
        };
        let mut scaler = ResolutionScaler::default();
        assert_eq!(scaler.halvings_for(at(0.0), modest, 400_000), 0);
        assert_eq!(scaler.halvings_for(at(1.0), modest, 300_000), 0);
        assert_eq!(scaler.halvings_for(at(2.0), modest, 220_000), 1);
        // A picture too small to halve twice stops at what it can.
        let tiny = EncoderSettings {
            width: 48,
            height: 48,
            ..hd
        };
        let mut scaler = ResolutionScaler::default();
        assert_eq!(scaler.halvings_for(at(0.0), tiny, 1), 1);
    }
    use crate::synthetic::{FrameStamp, TestPattern, read_stamp};

    /// The synthetic pattern survives H.264 at 360p and 720p: every decoded frame carries the
    /// frame number it was encoded with, and a requested keyframe is an IDR.
    #[test]
    fn pattern_round_trips_through_h264() {
        for (width, height, bitrate) in [(640, 360, 800_000), (1280, 720, 2_500_000)] {
            let pattern = TestPattern::new(width, height, "carol");
            let mut encoder = H264Encoder::new(EncoderSettings {
                width,
                height,
                fps: 30.0,
                bitrate_bps: bitrate,
                keyframe_interval: 60,
            })
            .expect("encoder");
            let mut decoder = H264Decoder::new().expect("decoder");
            let (mut rgba, mut decoded) = (Vec::new(), Vec::new());
            let mut frames = 0;
            for frame in 1..=20u32 {
                let i420 = pattern_frame(&pattern, frame, &mut rgba);
                if frame == 10 {
                    encoder.request_keyframe();
                }
                let Some(encoded) = encoder.encode(&i420).expect("encode") else {
                    continue;
                };
                assert_eq!(encoded.keyframe, frame == 1 || frame == 10, "frame {frame}");
                let Some(size) = decoder
                    .decode_rgba(&encoded.data, &mut decoded)
                    .expect("decode")
                else {
                    continue;
                };
                assert_eq!(size, (width, height));
                let stamp = read_stamp(&decoded, width, height).expect("stamp");
                assert_eq!(stamp.frame, frame, "{width}x{height}");
                frames += 1;
            }
            assert!(frames >= 18, "{frames} frames decoded");
        }
    }

    /// The simulcast layers' pictures: halving takes the mean of each 2×2 in every plane
    /// (rounded), 320×180 halves to 160×90 and then to 80×44 (sides stay even), each of which
    /// encodes and decodes at its size; below 16 pixels a side there is no smaller layer, and
    /// a target of the wrong size is a typed error.
    #[test]
    fn frames_halve_for_the_smaller_layers() {
        let mut tiny = I420Frame::new(32, 32).expect("frame");
        for (i, sample) in tiny.data.iter_mut().enumerate() {
            *sample = (i % 7 * 30) as u8;
        }
        let mut half = I420Frame::new(16, 16).expect("half");
        tiny.halve_into(&mut half).expect("halve");
        // Luma: output (x, y) is the mean of input rows 2y, 2y + 1 and columns 2x, 2x + 1.
        for (x, y) in [(0usize, 0usize), (5, 3), (15, 15)] {
            let at = |row: usize, column: usize| u16::from(tiny.data[row * 32 + column]);
            let sum = at(2 * y, 2 * x)
                + at(2 * y, 2 * x + 1)
                + at(2 * y + 1, 2 * x)
                + at(2 * y + 1, 2 * x + 1);
            assert_eq!(
                u16::from(half.data[y * 16 + x]),
                (sum + 2) / 4,
                "({x}, {y})"
            );
        }
        // Chroma (U starts after 32 × 32 luma samples; rows of 16).
        let at = |row: usize, column: usize| u16::from(tiny.data[32 * 32 + row * 16 + column]);
        let sum = at(2, 4) + at(2, 5) + at(3, 4) + at(3, 5);
        assert_eq!(u16::from(half.data[16 * 16 + 8 + 2]), (sum + 2) / 4);
        assert_eq!(half.halved_size(), None, "16×16 is the smallest layer");
        assert!(matches!(
            tiny.halve_into(&mut I420Frame::new(18, 16).expect("frame")),
            Err(VideoError::BadSize { .. })
        ));

        let pattern = TestPattern::new(320, 180, "dave");
        let mut rgba = Vec::new();
        let whole = pattern_frame(&pattern, 1, &mut rgba);
        let mut layer = whole;
        for expected in [(160, 90), (80, 44)] {
            let (width, height) = layer.halved_size().expect("a smaller layer");
            assert_eq!((width, height), expected);
            let mut smaller = I420Frame::new(width, height).expect("frame");
            layer.halve_into(&mut smaller).expect("halve");
            let mut encoder = H264Encoder::new(EncoderSettings {
                width,
                height,
                fps: 15.0,
                bitrate_bps: 100_000,
                keyframe_interval: 30,
            })
            .expect("encoder");
            let encoded = encoder.encode(&smaller).expect("encode").expect("a frame");
            assert!(encoded.keyframe);
            let mut decoded = Vec::new();
            let size = H264Decoder::new()
                .expect("decoder")
                .decode_rgba(&encoded.data, &mut decoded)
                .expect("decode");
            assert_eq!(size, Some(expected));
            layer = smaller;
        }
    }

    /// Odd sizes and garbage bitstreams are typed errors, not panics.
    /// Frame `frame` of `pattern` (stamped, 30 fps), as the encoder's input.
    fn pattern_frame(pattern: &TestPattern, frame: u32, rgba: &mut Vec<u8>) -> I420Frame {
        pattern.render_rgba(
            FrameStamp {
                frame,
                capture_ms: frame * 33,
            },
            rgba,
        );
        I420Frame::from_rgba(rgba, pattern.width(), pattern.height()).expect("i420")
    }

    /// A bitrate change from congestion control takes effect in the running encoder: after
    /// a cut from 1.5 Mbit/s to 60 kbit/s the frames shrink, none of them is a keyframe, and
    /// a raise is capped at the rate the encoder was built for.
    #[test]
    fn bitrate_changes_without_a_keyframe() {
        let (width, height) = (320, 180);
        let pattern = TestPattern::new(width, height, "dave");
        let mut encoder = H264Encoder::new(EncoderSettings {
            width,
            height,
            fps: 30.0,
            bitrate_bps: 1_500_000,
            keyframe_interval: 1_000,
        })
        .expect("encoder");
        let mut rgba = Vec::new();
        let mut sizes = Vec::new();
        let mut keyframes_after_change = 0;
        for frame in 1..=120u32 {
            if frame == 61 {
                encoder.set_bitrate(60_000).expect("set bitrate");
                assert_eq!(encoder.settings().bitrate_bps, 60_000);
            }
            let i420 = pattern_frame(&pattern, frame, &mut rgba);
            let encoded = encoder.encode(&i420).expect("encode");
            let size = encoded.as_ref().map_or(0, |e| e.data.len());
            if frame > 60 && encoded.as_ref().is_some_and(|e| e.keyframe) {
                keyframes_after_change += 1;
            }
            sizes.push(size);
        }
        assert_eq!(keyframes_after_change, 0, "sizes: {sizes:?}");
        let mean = |range: std::ops::Range<usize>| {
            sizes[range.clone()].iter().sum::<usize>() as f64 / range.len() as f64
        };
        let (before, after) = (mean(30..60), mean(90..120));
        assert!(
            after < before * 0.6,
            "{after:.0} B/frame after vs {before:.0} before"
        );
        encoder.set_bitrate(5_000_000).expect("raise");
        assert_eq!(encoder.settings().bitrate_bps, 1_500_000);
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(matches!(
            I420Frame::new(641, 360),
            Err(VideoError::BadSize { .. })
        ));
        let mut decoder = H264Decoder::new().expect("decoder");
        let mut rgba = Vec::new();
        let garbage = [0u8, 0, 0, 1, 0x65, 0xff, 0x00, 0x13, 0x37];
        let _ = decoder.decode_rgba(&garbage, &mut rgba);
        let _ = decoder.decode_rgba(&[], &mut rgba);
    }
}
