//! Cameras: V4L2 devices through nokhwa, their frames converted to RGBA for the video sender.
//!
//! - [`list_cameras`]: every camera nokhwa finds (none where `/dev/video*` is absent), as
//!   device ids `camera:<index>`.
//! - [`CameraCapture::open`] opens one on its own thread (nokhwa cameras are not `Send`
//!   everywhere), asking for the format closest to the wanted size and rate among MJPEG,
//!   YUYV and NV12; the thread converts each frame to RGBA ([`to_rgba`]: MJPEG decoded with
//!   zune-jpeg, YUYV/NV12 with the `yuv` crate) and keeps only the newest one for the sender.
//! - A camera that fails to open gives a typed [`CameraError`] (the caller falls back to the
//!   synthetic pattern); one that stops delivering frames ends its thread, and
//!   [`CameraCapture::failure`] says why.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use yuv::{YuvBiPlanarImage, YuvConversionMode, YuvPackedImage, YuvRange, YuvStandardMatrix};

use crate::DeviceInfo;

/// Prefix of camera device ids (`camera:0` is the first V4L2 camera).
pub const CAMERA_PREFIX: &str = "camera:";

/// A camera could not be opened or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("camera `{id}`: {reason}")]
pub struct CameraError {
    /// The device id.
    pub id: String,
    /// What went wrong.
    pub reason: String,
}

/// How a camera frame is encoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PixelFormat {
    /// Motion JPEG: each frame a JPEG picture.
    Mjpeg,
    /// Packed 4:2:2, Y0 U Y1 V.
    Yuyv,
    /// Planar Y, then interleaved U/V at half resolution.
    Nv12,
    /// Anything else (named), which we do not convert.
    Unsupported(String),
}

impl std::fmt::Display for PixelFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PixelFormat::Mjpeg => write!(f, "MJPEG"),
            PixelFormat::Yuyv => write!(f, "YUYV"),
            PixelFormat::Nv12 => write!(f, "NV12"),
            PixelFormat::Unsupported(name) => write!(f, "{name}"),
        }
    }
}

/// Every camera on this machine (empty where there is none, or no camera support).
pub fn list_cameras() -> Vec<DeviceInfo> {
    #[cfg(any(target_os = "linux", target_os = "macos", target_os = "windows"))]
    {
        native::list()
    }
    #[cfg(not(any(target_os = "linux", target_os = "macos", target_os = "windows")))]
    {
        Vec::new()
    }
}

/// One converted camera frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CameraFrame {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// RGBA pixels.
    pub rgba: Vec<u8>,
}

/// A running camera: its thread's newest frame.
pub struct CameraCapture {
    id: String,
    newest: Arc<Mutex<Option<CameraFrame>>>,
    failure: Arc<Mutex<Option<String>>>,
    stop: Arc<AtomicBool>,
}

impl CameraCapture {
    /// Opens camera `id` (`camera:<index>`) near `width`×`height` at `fps`; returns once the
    /// stream runs, or why it cannot.
    pub fn open(id: &str, width: u32, height: u32, fps: u32) -> Result<Self, CameraError> {
        let error = |reason: String| CameraError {
            id: id.to_owned(),
            reason,
        };
        let index: u32 = id
            .strip_prefix(CAMERA_PREFIX)
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| error(format!("not a camera id (expected `{CAMERA_PREFIX}<n>`)")))?;
        let capture = Self {
            id: id.to_owned(),
            newest: Arc::new(Mutex::new(None)),
            failure: Arc::new(Mutex::new(None)),
            stop: Arc::new(AtomicBool::new(false)),
        };
        #[cfg(any(target_os = "linux", target_os = "macos", target_os = "windows"))]
        {
            native::run(&capture, index, (width, height, fps)).map_err(error)?;
            Ok(capture)
        }
        #[cfg(not(any(target_os = "linux", target_os = "macos", target_os = "windows")))]
        {
            let _ = (index, width, height, fps, capture);
            Err(error("cameras are not supported on this platform".into()))
        }
    }

    /// The newest frame since the last call, if a new one arrived.
    pub fn take_newest(&self) -> Option<CameraFrame> {
        self.newest.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Why the camera stopped delivering frames, if it did.
    pub fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The device id.
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl Drop for CameraCapture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Converts one camera frame (MJPEG, YUYV or NV12) to RGBA.
pub fn to_rgba(
    format: &PixelFormat,
    width: u32,
    height: u32,
    data: &[u8],
) -> Result<CameraFrame, String> {
    let pixels = (width * height) as usize;
    let mut rgba = vec![0u8; pixels * 4];
    let short = |needed: usize| {
        format!(
            "{format} frame {width}×{height} has {} bytes, needs {needed}",
            data.len()
        )
    };
    match format {
        PixelFormat::Mjpeg => {
            use zune_jpeg::zune_core::bytestream::ZCursor;
            use zune_jpeg::zune_core::colorspace::ColorSpace;
            use zune_jpeg::zune_core::options::DecoderOptions;
            let options = DecoderOptions::default().jpeg_set_out_colorspace(ColorSpace::RGBA);
            let mut decoder = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(data), options);
            let decoded = decoder
                .decode()
                .map_err(|e| format!("MJPEG frame: {e:?}"))?;
            let (w, h) = decoder
                .dimensions()
                .ok_or_else(|| "MJPEG frame without a size".to_owned())?;
            return Ok(CameraFrame {
                width: w as u32,
                height: h as u32,
                rgba: decoded,
            });
        }
        PixelFormat::Yuyv => {
            if data.len() < pixels * 2 {
                return Err(short(pixels * 2));
            }
            let packed = YuvPackedImage {
                yuy: data,
                yuy_stride: width * 2,
                width,
                height,
            };
            yuv::yuyv422_to_rgba(
                &packed,
                &mut rgba,
                width * 4,
                YuvRange::Limited,
                YuvStandardMatrix::Bt601,
            )
            .map_err(|e| format!("YUYV frame: {e}"))?;
        }
        PixelFormat::Nv12 => {
            let needed = pixels + pixels / 2;
            if data.len() < needed {
                return Err(short(needed));
            }
            let (y_plane, uv_plane) = data.split_at(pixels);
            let planes = YuvBiPlanarImage {
                y_plane,
                y_stride: width,
                uv_plane,
                uv_stride: width,
                width,
                height,
            };
            yuv::yuv_nv12_to_rgba(
                &planes,
                &mut rgba,
                width * 4,
                YuvRange::Limited,
                YuvStandardMatrix::Bt601,
                YuvConversionMode::Balanced,
            )
            .map_err(|e| format!("NV12 frame: {e}"))?;
        }
        PixelFormat::Unsupported(name) => {
            return Err(format!("unsupported camera format {name}"));
        }
    }
    Ok(CameraFrame {
        width,
        height,
        rgba,
    })
}

/// nokhwa (V4L2 on Linux, AVFoundation on macOS, Media Foundation on Windows).
#[cfg(any(target_os = "linux", target_os = "macos", target_os = "windows"))]
mod native {
    use std::sync::atomic::Ordering;

    use nokhwa::utils::{
        ApiBackend, CameraFormat, CameraIndex, FrameFormat, RequestedFormat, RequestedFormatType,
        Resolution,
    };

    use super::{CAMERA_PREFIX, CameraCapture, PixelFormat, to_rgba};
    use crate::{DeviceInfo, DeviceKind};

    pub(super) fn list() -> Vec<DeviceInfo> {
        nokhwa::query(ApiBackend::Auto)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|info| match info.index() {
                CameraIndex::Index(index) => Some(DeviceInfo {
                    id: format!("{CAMERA_PREFIX}{index}"),
                    label: info.human_name(),
                    kind: DeviceKind::VideoInput,
                    synthetic: false,
                }),
                CameraIndex::String(_) => None,
            })
            .collect()
    }

    fn pixel_format(format: FrameFormat) -> PixelFormat {
        match format {
            FrameFormat::MJPEG => PixelFormat::Mjpeg,
            FrameFormat::YUYV => PixelFormat::Yuyv,
            FrameFormat::NV12 => PixelFormat::Nv12,
            other => PixelFormat::Unsupported(other.to_string()),
        }
    }

    /// Opens the camera on its own thread and keeps its newest converted frame in
    /// `capture`; returns once the stream runs, or why it cannot.
    pub(super) fn run(
        capture: &CameraCapture,
        index: u32,
        (width, height, fps): (u32, u32, u32),
    ) -> Result<(), String> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let (newest, failure, stop) = (
            capture.newest.clone(),
            capture.failure.clone(),
            capture.stop.clone(),
        );
        std::thread::Builder::new()
            .name(format!("huddle-camera-{index}"))
            .spawn(move || {
                let wanted =
                    CameraFormat::new(Resolution::new(width, height), FrameFormat::MJPEG, fps);
                let formats = [FrameFormat::MJPEG, FrameFormat::YUYV, FrameFormat::NV12];
                let request =
                    RequestedFormat::with_formats(RequestedFormatType::Closest(wanted), &formats);
                let mut camera = match nokhwa::Camera::new(CameraIndex::Index(index), request)
                    .and_then(|mut camera| camera.open_stream().map(|()| camera))
                {
                    Ok(camera) => camera,
                    Err(err) => {
                        let _ = ready_tx.send(Err(err.to_string()));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                while !stop.load(Ordering::Relaxed) {
                    let converted = camera
                        .frame()
                        .map_err(|e| e.to_string())
                        .and_then(|buffer| {
                            let size = buffer.resolution();
                            to_rgba(
                                &pixel_format(buffer.source_frame_format()),
                                size.width(),
                                size.height(),
                                buffer.buffer(),
                            )
                        });
                    match converted {
                        Ok(frame) => {
                            *newest.lock().unwrap_or_else(|p| p.into_inner()) = Some(frame)
                        }
                        Err(reason) => {
                            *failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason);
                            break;
                        }
                    }
                }
                let _ = camera.stop_stream();
            })
            .map_err(|e| format!("cannot start its thread: {e}"))?;
        match ready_rx.recv() {
            Ok(result) => result,
            Err(_) => Err("its thread ended before opening it".into()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// A 16×8 JPEG: left half pure red, right half pure blue (made with ffmpeg).
    const RED_BLUE_JPEG: &[u8] = include_bytes!("../tests/fixtures/red-blue-16x8.jpg");

    fn pixel(frame: &CameraFrame, x: u32, y: u32) -> [u8; 3] {
        let at = ((y * frame.width + x) * 4) as usize;
        [frame.rgba[at], frame.rgba[at + 1], frame.rgba[at + 2]]
    }

    fn near(actual: [u8; 3], expected: [u8; 3]) -> bool {
        actual
            .iter()
            .zip(expected)
            .all(|(a, e)| (i32::from(*a) - i32::from(e)).abs() <= 24)
    }

    /// MJPEG frames decode to RGBA with their own size and colours.
    #[test]
    fn mjpeg_frames_decode() {
        let frame = to_rgba(&PixelFormat::Mjpeg, 0, 0, RED_BLUE_JPEG).expect("decodes");
        assert_eq!((frame.width, frame.height), (16, 8));
        assert!(
            near(pixel(&frame, 2, 4), [255, 0, 0]),
            "{:?}",
            pixel(&frame, 2, 4)
        );
        assert!(
            near(pixel(&frame, 13, 4), [0, 0, 255]),
            "{:?}",
            pixel(&frame, 13, 4)
        );
        assert!(to_rgba(&PixelFormat::Mjpeg, 0, 0, &RED_BLUE_JPEG[..40]).is_err());
    }

    /// YUYV and NV12 of a known colour convert to it (BT.601 limited range: mid grey and a
    /// saturated red); short buffers are errors, not panics.
    #[test]
    fn yuyv_and_nv12_convert() {
        // Red in BT.601 limited range: Y 81, U 90, V 240.
        let yuyv: Vec<u8> = [81u8, 90, 81, 240].repeat(4 * 2);
        let frame = to_rgba(&PixelFormat::Yuyv, 4, 4, &yuyv).expect("converts");
        assert!(
            near(pixel(&frame, 1, 1), [255, 0, 0]),
            "{:?}",
            pixel(&frame, 1, 1)
        );
        let mut nv12 = vec![126u8; 16];
        nv12.extend([128u8, 128].repeat(4));
        let frame = to_rgba(&PixelFormat::Nv12, 4, 4, &nv12).expect("converts");
        assert!(
            near(pixel(&frame, 2, 3), [128, 128, 128]),
            "{:?}",
            pixel(&frame, 2, 3)
        );
        assert!(to_rgba(&PixelFormat::Yuyv, 4, 4, &yuyv[..10]).is_err());
        assert!(to_rgba(&PixelFormat::Nv12, 4, 4, &nv12[..10]).is_err());
        assert!(to_rgba(&PixelFormat::Unsupported("GRAY".into()), 4, 4, &nv12).is_err());
    }

    /// Opening a camera that is not there is a typed error naming it; a malformed id too.
    #[test]
    fn missing_camera_is_an_error() {
        let listed = list_cameras().len();
        let err = CameraCapture::open(&format!("{CAMERA_PREFIX}{}", listed + 40), 640, 480, 30)
            .err()
            .expect("no such camera");
        assert!(err.id.starts_with(CAMERA_PREFIX));
        let err = CameraCapture::open("webcam", 640, 480, 30)
            .err()
            .expect("bad id");
        assert!(err.reason.contains(CAMERA_PREFIX), "{err}");
    }
}
