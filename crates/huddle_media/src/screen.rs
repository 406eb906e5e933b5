//! Screen share sources: what a [`crate::session::MediaSession`] sends on its second video
//! track while a participant shares.
//!
//! - [`X11Screen`]: the desktop (an X11 display's root window, or one window), captured
//!   with `GetImage` on a pure-Rust X11 connection; Linux and other X11 systems.
//! - [`PushedFrames`]: frames pushed by the application, e.g. a game camera's render target
//!   read back by `bevy_huddle` (the game-view share).
//!
//! A source hands out RGBA frames; the session's screen thread encodes them (H.264, its own
//! encoder and bitrate) and writes them to every peer's screen track.

use crossbeam_channel::{Receiver, Sender};

/// Screen capture is not possible (no display, unsupported pixel format, window gone).
#[derive(Debug, thiserror::Error)]
#[error("screen capture: {0}")]
pub struct ScreenError(pub String);

/// Something that produces frames to share.
pub trait ScreenSource: Send + 'static {
    /// Waits (briefly) for, or captures, the next frame into `rgba`; returns its size, or
    /// `None` when nothing new came (the share goes on, and can notice it was stopped). An
    /// error ends the share.
    fn next_frame(&mut self, rgba: &mut Vec<u8>) -> Result<Option<(u32, u32)>, ScreenError>;

    /// Frames per second to capture at.
    fn fps(&self) -> f32;

    /// What is shared, for logs and errors.
    fn describe(&self) -> String;
}

#[cfg(all(
    unix,
    not(any(target_os = "android", target_os = "ios", target_os = "macos"))
))]
pub use x11::X11Screen;

/// X11 capture (X11 systems: Linux and other Unix desktops).
#[cfg(all(
    unix,
    not(any(target_os = "android", target_os = "ios", target_os = "macos"))
))]
mod x11 {
    use x11rb::connection::Connection;
    use x11rb::protocol::xproto::{ConnectionExt, ImageFormat, Window};
    use x11rb::rust_connection::RustConnection;

    use super::{ScreenError, ScreenSource};

    /// The desktop of an X11 display (its root window) or one of its windows.
    pub struct X11Screen {
        connection: RustConnection,
        window: Window,
        display: String,
        fps: f32,
    }

    impl X11Screen {
        /// Connects to `display` (`None`: `$DISPLAY`) to capture its whole screen at `fps`.
        pub fn open(display: Option<&str>, fps: f32) -> Result<Self, ScreenError> {
            let name = display
                .map(str::to_owned)
                .or_else(|| std::env::var("DISPLAY").ok())
                .ok_or_else(|| ScreenError("no X11 display ($DISPLAY is not set)".into()))?;
            let (connection, screen) = x11rb::connect(Some(&name))
                .map_err(|err| ScreenError(format!("cannot open display {name}: {err}")))?;
            let setup = connection.setup();
            let root = setup
                .roots
                .get(screen)
                .ok_or_else(|| ScreenError(format!("display {name} has no screen {screen}")))?;
            let depth = root.root_depth;
            let bits = setup
                .pixmap_formats
                .iter()
                .find(|f| f.depth == depth)
                .map(|f| f.bits_per_pixel);
            if depth < 24 || bits != Some(32) {
                return Err(ScreenError(format!(
                    "display {name}: {depth}-bit colour at {bits:?} bits per pixel is not supported (24/32 is)"
                )));
            }
            let window = root.root;
            Ok(Self {
                connection,
                window,
                display: name,
                fps,
            })
        }

        /// Captures one window instead of the whole screen.
        pub fn window(mut self, window: u32) -> Self {
            self.window = window;
            self
        }
    }

    impl ScreenSource for X11Screen {
        fn next_frame(&mut self, rgba: &mut Vec<u8>) -> Result<Option<(u32, u32)>, ScreenError> {
            let failed = |err: String| ScreenError(format!("display {}: {err}", self.display));
            let geometry = self
                .connection
                .get_geometry(self.window)
                .map_err(|e| failed(e.to_string()))?
                .reply()
                .map_err(|e| failed(e.to_string()))?;
            // The encoder needs even sizes.
            let (width, height) = (geometry.width & !1, geometry.height & !1);
            if width == 0 || height == 0 {
                return Err(failed("the window has no area".into()));
            }
            let image = self
                .connection
                .get_image(
                    ImageFormat::Z_PIXMAP,
                    self.window,
                    0,
                    0,
                    width,
                    height,
                    u32::MAX,
                )
                .map_err(|e| failed(e.to_string()))?
                .reply()
                .map_err(|e| failed(e.to_string()))?;
            let pixels = usize::from(width) * usize::from(height);
            if image.data.len() < pixels * 4 {
                return Err(failed(format!(
                    "short image: {} bytes for {width}×{height}",
                    image.data.len()
                )));
            }
            // Z-pixmap at 32 bits per pixel, little-endian: B, G, R, X.
            rgba.resize(pixels * 4, 0);
            for (out, bgrx) in rgba.chunks_exact_mut(4).zip(image.data.chunks_exact(4)) {
                out.copy_from_slice(&[bgrx[2], bgrx[1], bgrx[0], 255]);
            }
            Ok(Some((u32::from(width), u32::from(height))))
        }

        fn fps(&self) -> f32 {
            self.fps
        }

        fn describe(&self) -> String {
            format!("X11 display {} window {:#x}", self.display, self.window)
        }
    }
}

/// Where there is no X11 (macOS, Windows, mobile): opening the desktop is a typed error.
#[cfg(not(all(
    unix,
    not(any(target_os = "android", target_os = "ios", target_os = "macos"))
)))]
pub struct X11Screen {
    fps: f32,
}

#[cfg(not(all(
    unix,
    not(any(target_os = "android", target_os = "ios", target_os = "macos"))
)))]
impl X11Screen {
    /// Always an error here: desktop capture is X11 only.
    pub fn open(_display: Option<&str>, _fps: f32) -> Result<Self, ScreenError> {
        Err(ScreenError(
            "desktop capture needs X11, which this platform does not have".into(),
        ))
    }

    /// Captures one window instead of the whole screen.
    pub fn window(self, _window: u32) -> Self {
        self
    }
}

#[cfg(not(all(
    unix,
    not(any(target_os = "android", target_os = "ios", target_os = "macos"))
)))]
impl ScreenSource for X11Screen {
    fn next_frame(&mut self, _rgba: &mut Vec<u8>) -> Result<Option<(u32, u32)>, ScreenError> {
        Err(ScreenError("desktop capture needs X11".into()))
    }

    fn fps(&self) -> f32 {
        self.fps
    }

    fn describe(&self) -> String {
        "no X11 desktop".into()
    }
}

/// One frame pushed by the application.
#[derive(Clone, Debug)]
pub struct PushedFrame {
    /// Width in pixels (even).
    pub width: u32,
    /// Height in pixels (even).
    pub height: u32,
    /// RGBA pixels.
    pub rgba: Vec<u8>,
}

/// Frames the application pushes (a game camera's picture): the newest one wins.
pub struct PushedFrames {
    frames: Receiver<PushedFrame>,
    fps: f32,
    name: String,
}

/// The application's end of a [`PushedFrames`] source.
#[derive(Clone)]
pub struct FramePusher {
    frames: Sender<PushedFrame>,
}

impl FramePusher {
    /// Offers a frame; dropped if the encoder has not taken the previous one yet. Returns
    /// false once the share has ended.
    pub fn push(&self, frame: PushedFrame) -> bool {
        !matches!(
            self.frames.try_send(frame),
            Err(crossbeam_channel::TrySendError::Disconnected(_))
        )
    }
}

impl PushedFrames {
    /// A source fed by the returned pusher, encoded at most `fps` times a second.
    pub fn new(name: impl Into<String>, fps: f32) -> (Self, FramePusher) {
        let (frames_tx, frames) = crossbeam_channel::bounded(1);
        (
            Self {
                frames,
                fps,
                name: name.into(),
            },
            FramePusher { frames: frames_tx },
        )
    }
}

/// Moves an RGBA picture into `out`, cropped to even width and height (the encoder's 4:2:0
/// needs them); `None` if it is empty or shorter than its size says.
pub fn crop_to_even(
    width: u32,
    height: u32,
    rgba: Vec<u8>,
    out: &mut Vec<u8>,
) -> Option<(u32, u32)> {
    let (even_width, even_height) = (width & !1, height & !1);
    if even_width == 0 || even_height == 0 || rgba.len() < (width * height * 4) as usize {
        return None;
    }
    if (even_width, even_height) == (width, height) {
        *out = rgba;
    } else {
        out.clear();
        let stride = width as usize * 4;
        for row in rgba.chunks_exact(stride).take(even_height as usize) {
            out.extend_from_slice(&row[..even_width as usize * 4]);
        }
    }
    Some((even_width, even_height))
}

impl ScreenSource for PushedFrames {
    fn next_frame(&mut self, rgba: &mut Vec<u8>) -> Result<Option<(u32, u32)>, ScreenError> {
        // Never wait for long: a game that stops rendering (a minimised window) must not keep
        // the share thread from seeing that the share was stopped.
        let frame = match self
            .frames
            .recv_timeout(std::time::Duration::from_millis(250))
        {
            Ok(frame) => frame,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => return Ok(None),
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                return Err(ScreenError(format!("{}: no more frames", self.name)));
            }
        };
        let (width, height, bytes) = (frame.width, frame.height, frame.rgba.len());
        crop_to_even(width, height, frame.rgba, rgba)
            .map(Some)
            .ok_or_else(|| {
                ScreenError(format!(
                    "{}: bad frame {width}×{height} with {bytes} bytes",
                    self.name
                ))
            })
    }

    fn fps(&self) -> f32 {
        self.fps
    }

    fn describe(&self) -> String {
        self.name.clone()
    }
}

/// A private virtual X server (Xvfb) with a known picture, for tests and demos of the
/// desktop share. Panics where Xvfb is missing (`scripts/setup` installs it).
#[cfg(target_os = "linux")]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub mod test_display {
    use std::time::{Duration, Instant};

    /// A private X server (Xvfb) for one test, stopped when dropped.
    pub struct VirtualDisplay {
        server: std::process::Child,
        /// Its display name, e.g. `:90`.
        pub name: String,
    }

    impl VirtualDisplay {
        /// Starts Xvfb on the first free display number from :90, 640×360 at 24 bits.
        pub fn start() -> Self {
            for number in 90..190 {
                if std::path::Path::new(&format!("/tmp/.X{number}-lock")).exists() {
                    continue;
                }
                let name = format!(":{number}");
                let mut server = std::process::Command::new("Xvfb")
                    .args([
                        name.as_str(),
                        "-screen",
                        "0",
                        "640x360x24",
                        "-nolisten",
                        "tcp",
                    ])
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .expect("Xvfb (installed by scripts/setup)");
                let socket = format!("/tmp/.X11-unix/X{number}");
                let deadline = Instant::now() + Duration::from_secs(10);
                while !std::path::Path::new(&socket).exists() && Instant::now() < deadline {
                    if server.try_wait().ok().flatten().is_some() {
                        break; // lost the race for this number to another server
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                if server.try_wait().ok().flatten().is_some() {
                    continue;
                }
                return Self { server, name };
            }
            panic!("no free X display number");
        }
    }

    impl Drop for VirtualDisplay {
        fn drop(&mut self) {
            let _ = self.server.kill();
            let _ = self.server.wait();
        }
    }

    /// The known picture: red, green, blue and white quadrants (RGB).
    pub const QUADRANTS: [[u8; 3]; 4] = [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]];

    impl VirtualDisplay {
        /// Covers the display with a window painted in [`QUADRANTS`]; the returned connection
        /// keeps it up.
        pub fn paint_quadrants(&self) -> x11rb::rust_connection::RustConnection {
            let display = self.name.as_str();
            use x11rb::connection::Connection;
            use x11rb::protocol::xproto::*;
            let (conn, screen) = x11rb::connect(Some(display)).expect("X connection");
            let root = conn.setup().roots[screen].root;
            let window = conn.generate_id().expect("id");
            conn.create_window(
                x11rb::COPY_DEPTH_FROM_PARENT,
                window,
                root,
                0,
                0,
                640,
                360,
                0,
                WindowClass::INPUT_OUTPUT,
                0,
                &CreateWindowAux::new()
                    .background_pixel(0)
                    .override_redirect(1),
            )
            .expect("window");
            conn.map_window(window).expect("map");
            conn.flush().expect("flush");
            std::thread::sleep(Duration::from_millis(200));
            for (i, [r, g, b]) in QUADRANTS.iter().enumerate() {
                let gc = conn.generate_id().expect("id");
                let pixel = (u32::from(*r) << 16) | (u32::from(*g) << 8) | u32::from(*b);
                conn.create_gc(gc, window, &CreateGCAux::new().foreground(pixel))
                    .expect("gc");
                let (x, y) = ((i % 2) as i16 * 320, (i / 2) as i16 * 180);
                conn.poly_fill_rectangle(
                    window,
                    gc,
                    &[Rectangle {
                        x,
                        y,
                        width: 320,
                        height: 180,
                    }],
                )
                .expect("fill");
            }
            conn.get_input_focus()
                .expect("sync")
                .reply()
                .expect("sync reply");
            conn
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without a display there is a clear error, not a panic.
    #[test]
    fn a_missing_display_is_a_typed_error() {
        let err = X11Screen::open(Some(":4242"), 10.0)
            .err()
            .expect("no display :4242");
        assert!(err.to_string().contains(":4242"), "{err}");
    }

    /// Pushed frames come out as pushed; odd sizes are cropped to even; no new frame is
    /// `None` (not a wait forever); a closed pusher ends the source.
    #[test]
    fn pushed_frames_are_cropped_to_even_sizes() {
        let (mut source, pusher) = PushedFrames::new("game view", 30.0);
        let rgba: Vec<u8> = (0..5 * 3).flat_map(|i| [i as u8, 0, 0, 255]).collect();
        assert!(pusher.push(PushedFrame {
            width: 5,
            height: 3,
            rgba,
        }));
        let mut out = Vec::new();
        assert_eq!(source.next_frame(&mut out).expect("frame"), Some((4, 2)));
        assert_eq!(
            source.next_frame(&mut out).expect("no frame yet"),
            None,
            "nothing pushed: the share goes on"
        );
        let reds: Vec<u8> = out.chunks(4).map(|p| p[0]).collect();
        assert_eq!(reds, vec![0, 1, 2, 3, 5, 6, 7, 8]);
        drop(pusher);
        assert!(source.next_frame(&mut out).is_err());
    }
}
