//! Game-view share: a Bevy camera's picture as the outgoing screen-share track.
//!
//! 1. [`CallAction::ShareCamera`](crate::call::actions::CallAction::ShareCamera) (or
//!    [`CallMedia::shared_camera`](crate::call::model::CallMedia::shared_camera) and
//!    `start_screen_share`) starts the local share. The media bridge calls
//!    [`open_camera_share`]: it makes a `huddle_media::screen::PushedFrames` source for the
//!    session's screen-share encoder and puts a [`CameraShare`] (the pushing end) on the call.
//! 2. [`capture_camera_shares`] (in `Last`) asks the renderer for the camera's picture at the
//!    share's frame rate, one capture in flight at a time: a `Screenshot` of the camera's
//!    render target — its window or its image — which the render world copies back
//!    asynchronously. The game renders as usual; nothing is drawn twice.
//! 3. The capture's observer takes the pixels (BGRA swapchains are swizzled to RGBA) and
//!    pushes them; the share thread encodes the newest frame as H.264 and sends it to every
//!    peer exactly like a desktop share, so the others get `ScreenShareStarted` and a
//!    `ScreenShareTile` with the game's view.
//! 4. A camera that is despawned, renders to something that cannot be read back, or never
//!    delivers a first picture (no renderer) gives a `ScreenShare` error and turns the share
//!    off; a window that stops rendering for a while (minimised) only pauses the share.
//!    Stopping the share removes the [`CameraShare`]; dropping its pusher ends the source.
//!
//! Without the `game_view` feature (no `bevy_render`), sharing a camera is refused with a
//! typed error.

#[cfg(not(feature = "game_view"))]
pub(crate) use disabled::*;
#[cfg(feature = "game_view")]
pub use enabled::*;

#[cfg(not(feature = "game_view"))]
mod disabled {
    use bevy::prelude::*;
    use huddle_media::screen::{ScreenError, ScreenSource};

    /// Opens the share of `camera` for `call`: refused, there is no renderer to read from.
    pub(crate) fn open_camera_share(
        _commands: &mut Commands,
        _call: Entity,
        camera: Entity,
        _fps: f32,
    ) -> Result<Box<dyn ScreenSource>, ScreenError> {
        Err(ScreenError(format!(
            "cannot share camera {camera}: bevy_huddle was built without the `game_view` feature"
        )))
    }

    /// Ends the camera share of `call`: there is none.
    pub(crate) fn close_camera_share(_commands: &mut Commands, _call: Entity) {}
}

#[cfg(feature = "game_view")]
mod enabled {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::time::{Duration, Instant};

    use bevy::camera::RenderTarget;
    use bevy::prelude::*;
    use bevy::render::view::screenshot::{Screenshot, ScreenshotCaptured};
    use huddle_media::screen::{FramePusher, PushedFrame, PushedFrames, ScreenError, ScreenSource};
    use wgpu_types::TextureFormat;

    use crate::call::actions::CallAction;
    use crate::call::error::HuddleError;
    use crate::call::events::CallEvent;

    /// How long the first capture may take before the share is given up (no renderer, or
    /// shader compilation on a CPU renderer holding the first frames for a while); once
    /// pictures have come, a capture that takes this long is simply asked for again.
    const CAPTURE_TIMEOUT: Duration = Duration::from_secs(10);

    /// A running game-view share, on the call entity.
    #[derive(Component)]
    pub struct CameraShare {
        /// The camera whose picture is shared.
        pub camera: Entity,
        pusher: FramePusher,
        period: Duration,
        next_capture: Instant,
        requested_at: Instant,
        in_flight: Arc<AtomicBool>,
        /// The screenshot asked for last, and its number (an answer to an older one that
        /// comes late is ignored).
        pending: Option<Entity>,
        generation: Arc<AtomicU64>,
        captured: Arc<AtomicU64>,
    }

    impl CameraShare {
        /// Pictures read back from the renderer and handed to the encoder so far.
        pub fn frames_captured(&self) -> u64 {
            self.captured.load(Ordering::Relaxed)
        }
    }

    /// Opens the share of `camera` for `call`: the source the session encodes from.
    pub(crate) fn open_camera_share(
        commands: &mut Commands,
        call: Entity,
        camera: Entity,
        fps: f32,
    ) -> Result<Box<dyn ScreenSource>, ScreenError> {
        let fps = fps.clamp(1.0, 60.0);
        let (source, pusher) = PushedFrames::new(format!("camera {camera}"), fps);
        commands.entity(call).insert(CameraShare {
            camera,
            pusher,
            period: Duration::from_secs_f32(1.0 / fps),
            next_capture: Instant::now(),
            requested_at: Instant::now(),
            in_flight: Arc::new(AtomicBool::new(false)),
            pending: None,
            generation: Arc::new(AtomicU64::new(0)),
            captured: Arc::new(AtomicU64::new(0)),
        });
        Ok(Box::new(source))
    }

    /// Ends the camera share of `call`, if there is one.
    pub(crate) fn close_camera_share(commands: &mut Commands, call: Entity) {
        if let Ok(mut call) = commands.get_entity(call) {
            call.remove::<CameraShare>();
        }
    }

    /// Asks the renderer for each shared camera's picture when the next frame is due.
    pub(crate) fn capture_camera_shares(
        mut shares: Query<(Entity, &mut CameraShare)>,
        cameras: Query<&RenderTarget, With<Camera>>,
        mut events: MessageWriter<CallEvent>,
        mut actions: MessageWriter<CallAction>,
        mut commands: Commands,
    ) {
        let now = Instant::now();
        for (call, mut share) in &mut shares {
            let Ok(target) = cameras.get(share.camera) else {
                fail(
                    &mut commands,
                    &mut events,
                    &mut actions,
                    call,
                    format!("camera {} is gone", share.camera),
                );
                continue;
            };
            if matches!(target, RenderTarget::None { .. }) {
                fail(
                    &mut commands,
                    &mut events,
                    &mut actions,
                    call,
                    format!("camera {} renders to no target", share.camera),
                );
                continue;
            }
            if share.in_flight.load(Ordering::Acquire) {
                let stuck = now.duration_since(share.requested_at) > CAPTURE_TIMEOUT;
                if stuck && share.frames_captured() > 0 {
                    // It rendered before (a minimised window renders nothing): drop the
                    // stuck request and ask again; the share goes on.
                    if let Some(stuck) = share.pending.take()
                        && let Ok(mut stuck) = commands.get_entity(stuck)
                    {
                        stuck.despawn();
                    }
                    share.in_flight.store(false, Ordering::Release);
                } else if stuck {
                    fail(
                        &mut commands,
                        &mut events,
                        &mut actions,
                        call,
                        format!(
                            "no picture of camera {} came back from the renderer in {} s \
                             (does the app render? it needs bevy's RenderPlugin)",
                            share.camera,
                            CAPTURE_TIMEOUT.as_secs()
                        ),
                    );
                }
                continue;
            }
            if now < share.next_capture {
                continue;
            }
            share.requested_at = now;
            // Keep the cadence, but never try to catch up on missed frames.
            share.next_capture = (share.next_capture + share.period).max(now);
            share.in_flight.store(true, Ordering::Release);
            let pusher = share.pusher.clone();
            let in_flight = share.in_flight.clone();
            let captured = share.captured.clone();
            let generation = share.generation.clone();
            let this_request = generation.fetch_add(1, Ordering::AcqRel) + 1;
            let mut request = commands.spawn(Screenshot(target.clone()));
            request.observe(
                move |mut shot: On<ScreenshotCaptured>,
                      mut events: MessageWriter<CallEvent>,
                      mut actions: MessageWriter<CallAction>| {
                    if generation.load(Ordering::Acquire) != this_request {
                        // A request given up on; a newer one is out.
                        return;
                    }
                    in_flight.store(false, Ordering::Release);
                    match to_pushed_frame(&mut shot.event_mut().image) {
                        Ok(frame) => {
                            if pusher.push(frame) {
                                captured.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Err(reason) => {
                            events.write(CallEvent::Error {
                                call: Some(call),
                                error: HuddleError::ScreenShare(reason),
                            });
                            actions.write(CallAction::StopScreenShare);
                        }
                    }
                },
            );
            share.pending = Some(request.id());
        }
    }

    /// Ends a camera share that cannot go on: a typed error and the share turned off.
    fn fail(
        commands: &mut Commands,
        events: &mut MessageWriter<CallEvent>,
        actions: &mut MessageWriter<CallAction>,
        call: Entity,
        reason: String,
    ) {
        commands.entity(call).remove::<CameraShare>();
        events.write(CallEvent::Error {
            call: Some(call),
            error: HuddleError::ScreenShare(reason),
        });
        actions.write(CallAction::StopScreenShare);
    }

    /// The captured picture as RGBA, its pixels moved out of the image.
    fn to_pushed_frame(image: &mut Image) -> Result<PushedFrame, String> {
        let format = image.texture_descriptor.format;
        let size = image.texture_descriptor.size;
        let mut rgba = image.data.take().unwrap_or_default();
        match format {
            TextureFormat::Rgba8Unorm | TextureFormat::Rgba8UnormSrgb => {}
            TextureFormat::Bgra8Unorm | TextureFormat::Bgra8UnormSrgb => {
                for pixel in rgba.chunks_exact_mut(4) {
                    pixel.swap(0, 2);
                }
            }
            other => {
                return Err(format!(
                    "the camera renders to {other:?}; a shared camera needs an 8-bit RGBA or BGRA target"
                ));
            }
        }
        Ok(PushedFrame {
            width: size.width,
            height: size.height,
            rgba,
        })
    }
}
