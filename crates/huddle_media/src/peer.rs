//! WebRTC peers (webrtc 0.21, DTLS-SRTP): one [`Peer`] per remote participant, full mesh.
//!
//! - **Negotiation** without glare: the participant with the smaller uid offers. Each side
//!   sends its SDP as soon as it is set, then **trickles** its candidates one by one as they
//!   are gathered (host at once, server-reflexive and relay as STUN/TURN answer) and ends with
//!   an end-of-candidates signal, so set-up never waits for the slowest server. Candidates
//!   gathered before the SDP went out wait for it; remote candidates that arrive before the
//!   remote SDP wait for it too. Gathering uses the session's [`IceConfig`]: its interfaces,
//!   the STUN/TURN servers the signaling server handed out, and mDNS only if asked (and then
//!   only if the host can join the multicast group).
//! - **ICE restart**: when the connection has been disconnected or failed for
//!   [`ICE_RESTART_AFTER`] (an outage, an interface change), the offering side restarts ICE:
//!   new credentials, fresh candidates, a new offer through the signaling server, again every
//!   [`ICE_RESTART_AFTER`] until it is back. The answering side applies such an offer to the
//!   same connection (same DTLS certificate), so tracks, tiles and the call stay.
//! - **Codecs**: H.264 Constrained Baseline (42e01f, packetization-mode 1, PT 102) and Opus
//!   48 kHz (PT 111, in-band FEC). Interceptors: GCC congestion control on TWCC feedback
//!   (its target bitrate drives the encoder), NACK, RTCP sender/receiver reports, and a
//!   forwarder that hands PLI/FIR to the sender so the encoder makes a keyframe.
//! - **Sending**: [`Peer::write_video`] / [`Peer::write_audio`] write encoded frames as samples
//!   (the [`crate::session`] encodes once for all peers).
//! - **Receiving**: each remote track is read by a task on the async runtime, which only does
//!   IO. Video packets cross a bounded queue to the track's own decode thread (reassembly →
//!   H.264 → RGBA), which puts each picture into the track's newest-wins slot
//!   ([`crate::frames`]) and counts it ([`crate::probe`]); the task sends keyframe requests
//!   when the decoder asks. Audio is decoded by its task (Opus is cheap) straight into the
//!   mixer, and counted. Control news (signals, connection state, errors) go out as
//!   [`PeerEvent`]s on a channel the caller drains without blocking.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::Sender;
use huddle_protocol::{PeerSignal, SimulcastLayer};
use rtc::interceptor::{Attribute, Interceptor, Packet, Slot, StreamInfo, TaggedPacket};
use rtc::media::Sample;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::interceptor_registry::{
    Registry, register_default_interceptors,
};
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_H264, MIME_TYPE_OPUS, MediaEngine,
};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp::codec::h264::H264Packet;
use rtc::rtp::extension::HeaderExtension;
use rtc::rtp::extension::audio_level_extension::AudioLevelExtension;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters,
    RTCRtpEncodingParameters, RTCRtpHeaderExtensionCapability, RtpCodecKind,
};
use rtc::sansio::Protocol;
use rtc::sdp::extmap::{SDES_MID_URI, SDES_RTP_STREAM_ID_URI};
use tokio::sync::Mutex;
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCIceGatheringState,
    RTCPeerConnectionState,
};
use webrtc::rtp_transceiver::RtpSender;

use crate::audio::{FRAME_SAMPLES, OpusDecoder};
use crate::frames::VideoTrackKind;
use crate::probe::AudioFrameOrigin;
use crate::synthetic::{FrameStamp, read_stamp};
use crate::video::{EncodedFrame, H264Decoder};

/// H.264 payload type.
pub const H264_PAYLOAD_TYPE: u8 = 102;
/// Opus payload type.
pub const OPUS_PAYLOAD_TYPE: u8 = 111;

/// A peer failure.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The WebRTC stack refused an operation (building the connection, a track, a
    /// description, a candidate).
    #[error("webrtc: {0}")]
    WebRtc(#[from] webrtc::error::Error),
    /// A session description that cannot be parsed.
    #[error("malformed session description: {0}")]
    MalformedDescription(String),
    /// The connection has no local description right after setting one.
    #[error("no local description to send")]
    NoLocalDescription,
    /// The operating system gave no randomness (for an SSRC).
    #[error("no randomness for an SSRC: {0}")]
    NoRandomness(getrandom::Error),
    /// The remote side (or we) renegotiated more than [`MAX_RENEGOTIATIONS`] times within
    /// [`RENEGOTIATION_WINDOW`]: a negotiation loop. The offer is refused and no
    /// `renegotiation_wanted` is sent until the window has passed.
    #[error("renegotiation loop: more than {limit} renegotiations within {window:?}")]
    RenegotiationLimit {
        /// The cap ([`MAX_RENEGOTIATIONS`]).
        limit: usize,
        /// The window it applies to ([`RENEGOTIATION_WINDOW`]).
        window: Duration,
    },
}

/// At most this many renegotiations (offers on a connection that has a remote description,
/// ICE restarts aside) per [`RENEGOTIATION_WINDOW`], sent and received together. Huddle
/// needs one per switch to video; a client that answers every answer with a new offer hits
/// the cap within a second instead of looping for ever.
pub const MAX_RENEGOTIATIONS: usize = 10;

/// The window of [`MAX_RENEGOTIATIONS`].
pub const RENEGOTIATION_WINDOW: Duration = Duration::from_secs(30);

/// The renegotiations of one connection in the last [`RENEGOTIATION_WINDOW`].
#[derive(Debug, Default)]
struct RenegotiationBudget {
    recent: std::sync::Mutex<VecDeque<Instant>>,
}

impl RenegotiationBudget {
    /// Counts one renegotiation at `now`, or refuses it when the window is full.
    fn spend(&self, now: Instant) -> Result<(), PeerError> {
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        while recent
            .front()
            .is_some_and(|&at| now.saturating_duration_since(at) >= RENEGOTIATION_WINDOW)
        {
            recent.pop_front();
        }
        if recent.len() >= MAX_RENEGOTIATIONS {
            return Err(PeerError::RenegotiationLimit {
                limit: MAX_RENEGOTIATIONS,
                window: RENEGOTIATION_WINDOW,
            });
        }
        recent.push_back(now);
        Ok(())
    }
}

/// One `m=video` section of a session description: its `a=msid` stream and track ids, if
/// it has them (a browser's `recvonly` line has none).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VideoLine {
    /// The media stream id (`a=msid:STREAM TRACK`).
    pub stream_id: Option<String>,
    /// The track id.
    pub track_id: Option<String>,
}

/// The `m=video` sections of `sdp`, in order.
pub fn video_lines(sdp: &str) -> Vec<VideoLine> {
    let mut lines = Vec::new();
    let mut in_video = false;
    for line in sdp.lines().map(str::trim) {
        if let Some(media) = line.strip_prefix("m=") {
            in_video = media.starts_with("video");
            if in_video {
                lines.push(VideoLine::default());
            }
        } else if in_video && let Some(msid) = line.strip_prefix("a=msid:") {
            let mut ids = msid.split_whitespace();
            if let Some(current) = lines.last_mut() {
                current.stream_id = ids.next().map(str::to_owned);
                current.track_id = ids.next().map(str::to_owned);
            }
        }
    }
    lines
}

/// Whether an offer's video lines ([`video_lines`]) have one for our camera: a video line that is not Huddle's screen
/// share (`huddle-screen`). The camera goes on the first such line, whatever its stream id
/// and wherever it is (a browser's one `m=video`, sendrecv or recvonly, is one).
pub fn offers_camera_line(lines: &[VideoLine]) -> bool {
    lines
        .iter()
        .any(|line| line.stream_id.as_deref() != Some(SCREEN_STREAM))
}

/// Whether a received video track is a camera or a screen share. Huddle's own stream ids
/// say it (`huddle-video`, `huddle-screen`); for any other client, the first of the video
/// lines of its description ([`video_lines`]) is the camera and a later one the screen share.
pub fn video_track_kind(
    stream_id: &str,
    track_id: &str,
    remote_lines: &[VideoLine],
) -> VideoTrackKind {
    match stream_id {
        SCREEN_STREAM => return VideoTrackKind::Screen,
        CAMERA_STREAM => return VideoTrackKind::Camera,
        _ => {}
    }
    let position = remote_lines.iter().position(|line| {
        line.track_id.as_deref() == Some(track_id)
            || (line.track_id.is_none() && line.stream_id.as_deref() == Some(stream_id))
    });
    match position {
        Some(index) if index > 0 => VideoTrackKind::Screen,
        _ => VideoTrackKind::Camera,
    }
}

/// A decoded video frame from a remote participant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodedVideo {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// RGBA pixels.
    pub rgba: Vec<u8>,
    /// The stamp in the picture, if it is the synthetic pattern.
    pub stamp: Option<FrameStamp>,
    /// The H.264 access unit (Annex-B) it was decoded from, as received.
    pub encoded: Bytes,
}

/// What peers report.
#[derive(Clone, Debug, PartialEq)]
pub enum PeerEvent {
    /// A device chosen for the call could not be opened or stopped working; its synthetic
    /// stand-in is used instead.
    DeviceFailed {
        /// Which kind.
        kind: crate::DeviceKind,
        /// Its id.
        id: String,
        /// Why.
        reason: String,
    },
    /// A signal to send to `to` through the signaling server.
    Signal {
        /// Recipient uid.
        to: String,
        /// The signal.
        signal: PeerSignal,
    },
    /// The connection to `uid` is up.
    Connected {
        /// Who.
        uid: String,
    },
    /// A STUN or TURN server handed out for the session cannot be used (unreachable,
    /// credentials refused, unsupported); the call goes on with the candidates that work.
    IceServerProblem(crate::ice::IceServerProblem),
    /// The connection to `uid` has been down for a while and its ICE was restarted (we
    /// offer); the call goes on while the new path is found.
    IceRestarted {
        /// Who.
        uid: String,
    },
    /// The connection to `uid` failed or closed.
    Disconnected {
        /// Who.
        uid: String,
        /// Why.
        reason: String,
    },
    /// Link measurements of the connection to `uid`, every second.
    Quality {
        /// Whose link.
        uid: String,
        /// Round-trip time of the selected ICE candidate pair, in milliseconds.
        rtt_ms: Option<f64>,
        /// Share of RTP packets lost over the last interval (0..=1).
        loss: f32,
        /// The candidate pair carrying the media, once ICE selected one.
        path: Option<crate::ice::CandidatePath>,
    },
    /// Our screen share ended by itself (the source failed: display gone, window closed).
    ScreenShareEnded {
        /// Why.
        reason: String,
    },
    /// The recording stopped because writing failed (disk full, file gone); the call goes on.
    RecordingFailed {
        /// What failed, with the path.
        reason: String,
    },
    /// `uid` started or stopped speaking (from the audio level extension of their packets,
    /// or, for ourselves, from the microphone's level).
    Speaking {
        /// Who.
        uid: String,
        /// Speaking now.
        speaking: bool,
    },
    /// How loud `uid` has been over about the last second of their voice (from the audio
    /// level extension; [`crate::speech::RecentLoudness`]): sent every
    /// [`LOUDNESS_INTERVAL`] while they speak, so the loudest speaker can lead.
    Loudness {
        /// Who.
        uid: String,
        /// dBov: 0 loudest, −127 silence.
        dbov: f32,
    },
    /// We are muted and talking into a real microphone (once per stretch of talk): the app
    /// can hint "you are muted".
    TalkingWhileMuted,
    /// Something failed but the call goes on.
    Error {
        /// About whom.
        uid: String,
        /// What.
        reason: String,
    },
}

/// Counters shared by the peers of one session.
#[derive(Debug, Default)]
pub struct MediaCounters {
    /// Video frames written to at least one peer.
    pub video_frames_sent: AtomicU64,
    /// Audio frames written to at least one peer.
    pub audio_frames_sent: AtomicU64,
    /// Keyframes requested by receivers (PLI/FIR).
    pub keyframe_requests: AtomicU64,
    /// Screen-share frames written to at least one peer.
    pub screen_frames_sent: AtomicU64,
    /// Frames of the camera's smaller simulcast layers (medium, low) written to the SFU.
    pub smaller_layer_frames_sent: [AtomicU64; 2],
}

/// Test hook (feature `test-utils`): the share of incoming video RTP packets to drop
/// (0..=1000 per mille).
#[derive(Debug, Default)]
pub struct LossInjection {
    /// Per mille of RTP packets dropped before depacketizing.
    pub video_drop_per_mille: std::sync::atomic::AtomicU32,
}

fn h264_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_H264.to_owned(),
        clock_rate: 90_000,
        channels: 0,
        sdp_fmtp_line: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"
            .to_owned(),
        rtcp_feedback: vec![
            RTCPFeedback {
                typ: "ccm".to_owned(),
                parameter: "fir".to_owned(),
            },
            RTCPFeedback {
                typ: "nack".to_owned(),
                parameter: String::new(),
            },
            RTCPFeedback {
                typ: "nack".to_owned(),
                parameter: "pli".to_owned(),
            },
        ],
    }
}

fn opus_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_OPUS.to_owned(),
        clock_rate: 48_000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1;stereo=1".to_owned(),
        rtcp_feedback: vec![],
    }
}

/// Hands PLI/FIR to the application (the sending track), so the encoder can make a keyframe.
/// Placed last, so every other interceptor has seen the RTCP first.
struct KeyframeRequestForwarder {
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for KeyframeRequestForwarder {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            let requests: Vec<Box<dyn rtc::rtcp::Packet>> = packets
                .iter()
                .filter(|p| {
                    let any = p.as_any();
                    any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
                })
                .cloned()
                .collect();
            // Everything else passes unchanged: RTCP without a keyframe request stays with the
            // stack, and attribute carriers (congestion control's target bitrate) must go on.
            if !requests.is_empty() {
                msg.message.packet = Packet::Rtcp(requests);
                msg.message.add(Attribute::DeliverToApplication);
            }
        }
        self.read_queue.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read_queue.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write_queue.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write_queue.pop_front()
    }
}

impl Interceptor for KeyframeRequestForwarder {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

/// What every peer of a session shares: where news, pictures, voices, figures and recorded
/// media go, and what the senders are told.
pub struct PeerContext {
    /// Control news for the application.
    pub events: Sender<PeerEvent>,
    /// Newest-wins slots of decoded pictures.
    pub frames: crate::frames::VideoSlots,
    /// Receive statistics.
    pub probe: Arc<crate::probe::MediaProbe>,
    /// The mix of received voices.
    pub mixer: crate::mixer::SharedMixer,
    /// The running recording, if any.
    pub recording: RecordingTap,
    /// Send-side counters.
    pub counters: Arc<MediaCounters>,
    /// Set by a receiver's keyframe request (PLI/FIR) for the camera encoder.
    pub keyframe_wanted: Arc<AtomicBool>,
    /// The same for the screen-share encoder.
    pub screen_keyframe_wanted: Arc<AtomicBool>,
    /// The same for the encoders of the camera's smaller simulcast layers (medium, low).
    pub smaller_layers_keyframe_wanted: Arc<[AtomicBool; 2]>,
    /// Whether anyone receives the camera's smaller simulcast layers (medium, low), as the
    /// SFU tells (`layers_wanted`); an unwanted layer is not encoded.
    pub smaller_layers_wanted: Arc<[AtomicBool; 2]>,
    /// Test hook: induced loss of received video.
    pub loss: Arc<LossInjection>,
}

/// Everything the event handler needs.
struct Handler {
    role: PeerRole,
    remote_uid: String,
    /// The negotiated id of the audio level extension (0 until negotiated).
    audio_level_id: Arc<AtomicU8>,
    connected: Arc<AtomicBool>,
    ice: Arc<IceHealth>,
    trickle: Arc<Trickle>,
    /// The video lines of the remote description last applied, to tell a foreign client's
    /// camera from its screen share by position ([`video_track_kind`]).
    remote_video_lines: Arc<std::sync::Mutex<Vec<VideoLine>>>,
    context: Arc<PeerContext>,
}

/// How long a connection may be disconnected or failed before its ICE is restarted (and
/// between restarts while it stays down).
pub const ICE_RESTART_AFTER: Duration = Duration::from_secs(3);

/// Whether ICE is down, since when, and when it was last restarted.
#[derive(Default)]
struct IceHealth {
    state: std::sync::Mutex<IceHealthState>,
}

#[derive(Default)]
struct IceHealthState {
    down_since: Option<Instant>,
    restarted_at: Option<Instant>,
}

impl IceHealth {
    fn lock(&self) -> std::sync::MutexGuard<'_, IceHealthState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Down (disconnected, failed) or up (connected, completed); `None` (checking, new)
    /// changes nothing, so a restart that is still checking stays down.
    fn set_down(&self, down: Option<bool>) {
        let mut state = self.lock();
        match down {
            Some(false) => state.down_since = None,
            Some(true) if state.down_since.is_none() => state.down_since = Some(Instant::now()),
            _ => {}
        }
    }

    /// Whether a restart is due at `now` (down long enough, and not restarted too recently);
    /// if so, it is noted as done.
    fn restart_due(&self, now: Instant) -> bool {
        let mut state = self.lock();
        let down_long = state
            .down_since
            .is_some_and(|since| now.duration_since(since) >= ICE_RESTART_AFTER);
        let quiet = state
            .restarted_at
            .is_none_or(|at| now.duration_since(at) >= ICE_RESTART_AFTER);
        if down_long && quiet {
            state.restarted_at = Some(now);
            true
        } else {
            false
        }
    }
}

/// Our trickled candidates wait here until the description they belong to has been sent.
#[derive(Default)]
struct Trickle {
    state: std::sync::Mutex<TrickleState>,
}

#[derive(Default)]
struct TrickleState {
    description_sent: bool,
    waiting: Vec<PeerSignal>,
}

impl Trickle {
    fn lock(&self) -> std::sync::MutexGuard<'_, TrickleState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A candidate (or the end of them): sent now if its description went out, else kept.
    fn gathered(&self, signal: PeerSignal, send: impl FnOnce(PeerSignal)) {
        let mut state = self.lock();
        if state.description_sent {
            drop(state);
            send(signal);
        } else {
            state.waiting.push(signal);
        }
    }

    /// A new local description is about to be set: its candidates wait for it.
    fn hold(&self) {
        self.lock().description_sent = false;
    }

    /// The description went out: what waited follows it, in order.
    fn release(&self) -> Vec<PeerSignal> {
        let mut state = self.lock();
        state.description_sent = true;
        std::mem::take(&mut state.waiting)
    }
}

/// Where a running recording takes the media as it arrives (`None` while not recording).
pub type RecordingTap = Arc<std::sync::Mutex<Option<crate::recording::Recorder>>>;

/// The recorder, if a recording is running.
pub(crate) fn recorder_of(tap: &RecordingTap) -> Option<crate::recording::Recorder> {
    tap.lock().ok().and_then(|r| r.clone())
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: webrtc::peer_connection::RTCPeerConnectionIceEvent) {
        let init = match event.candidate.to_json() {
            Ok(init) => init,
            Err(err) => {
                tracing::debug!("unusable local candidate: {err}");
                return;
            }
        };
        let signal = PeerSignal::Candidate {
            candidate: Some(init.candidate),
            sdp_mid: init.sdp_mid,
            sdp_mline_index: init.sdp_mline_index,
            username_fragment: init.username_fragment,
        };
        self.trickle.gathered(signal, |signal| self.send(signal));
    }

    async fn on_ice_connection_state_change(
        &self,
        state: webrtc::peer_connection::RTCIceConnectionState,
    ) {
        use webrtc::peer_connection::RTCIceConnectionState as Ice;
        self.ice.set_down(match state {
            Ice::Disconnected | Ice::Failed => Some(true),
            Ice::Connected | Ice::Completed => Some(false),
            _ => None,
        });
    }

    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let end = PeerSignal::Candidate {
                candidate: None,
                sdp_mid: None,
                sdp_mline_index: None,
                username_fragment: None,
            };
            self.trickle.gathered(end, |signal| self.send(signal));
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let uid = self.remote_uid.clone();
        self.connected.store(
            state == RTCPeerConnectionState::Connected,
            Ordering::Relaxed,
        );
        let event = match state {
            RTCPeerConnectionState::Connected => PeerEvent::Connected { uid },
            RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => {
                PeerEvent::Disconnected {
                    uid,
                    reason: format!("{state}"),
                }
            }
            _ => return,
        };
        let _ = self.context.events.send(event);
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let mut uid = self.remote_uid.clone();
        let context = self.context.clone();
        let audio_level_id = self.audio_level_id.clone();
        let remote_video_lines = self.remote_video_lines.clone();
        let role = self.role;
        tokio::spawn(async move {
            let kind = track.kind().await;
            let (stream_id, track_id) = (track.stream_id().await, track.track_id().await);
            let sfu_owner = if role == PeerRole::SfuSubscriber {
                match sfu_track_owner(&stream_id, &track_id) {
                    Some(owner) => Some(owner),
                    None => {
                        let reason =
                            format!("an SFU track without an owner: msid {stream_id} {track_id}");
                        let _ = context.events.send(PeerEvent::Error { uid, reason });
                        return;
                    }
                }
            } else {
                None
            };
            if let Some((owner, _)) = &sfu_owner {
                uid = owner.clone();
            }
            let result = if kind == RtpCodecKind::Video {
                let kind = match sfu_owner {
                    Some((_, kind)) => kind,
                    None => {
                        let lines = remote_video_lines
                            .lock()
                            .map(|lines| lines.clone())
                            .unwrap_or_default();
                        video_track_kind(&stream_id, &track_id, &lines)
                    }
                };
                receive_video(track, (&uid, kind), &context).await
            } else {
                receive_audio(track, (&uid, &audio_level_id), &context).await
            };
            if let Err(reason) = result {
                let _ = context.events.send(PeerEvent::Error { uid, reason });
            }
        });
    }
}

impl Handler {
    fn send(&self, signal: PeerSignal) {
        let _ = self.context.events.send(PeerEvent::Signal {
            to: self.remote_uid.clone(),
            signal,
        });
    }
}

/// Keyframe requests (PLI/FIR) from the receivers of `track` go to `wanted`, with the SSRC
/// each asks a keyframe of (so a simulcast layer's request reaches that layer's encoder).
fn forward_keyframe_requests(
    track: Arc<TrackLocalStaticSample>,
    wanted: impl Fn(u32) + Send + 'static,
    counters: Arc<MediaCounters>,
) {
    tokio::spawn(async move {
        while let Some(event) = track.poll().await {
            if let TrackLocalEvent::OnRtcpPacket(packets) = event {
                let ssrcs = keyframe_request_ssrcs(&packets);
                if ssrcs.is_empty() {
                    continue;
                }
                for ssrc in ssrcs {
                    wanted(ssrc);
                }
                counters.keyframe_requests.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
}

/// The SSRCs that keyframe requests ask a keyframe of: a PLI's media source, a FIR's entries.
fn keyframe_request_ssrcs(packets: &[Box<dyn rtc::rtcp::Packet>]) -> Vec<u32> {
    let mut ssrcs = Vec::new();
    for packet in packets {
        let any = packet.as_any();
        if let Some(pli) = any.downcast_ref::<PictureLossIndication>() {
            ssrcs.push(pli.media_ssrc);
        } else if let Some(fir) = any.downcast_ref::<FullIntraRequest>() {
            ssrcs.extend(fir.fir.iter().map(|entry| entry.ssrc));
        }
    }
    ssrcs
}

/// Sets a flag for every keyframe request, whatever SSRC it names.
fn any_request_sets(flag: Arc<AtomicBool>) -> impl Fn(u32) + Send + 'static {
    move |_| flag.store(true, Ordering::Relaxed)
}

async fn request_keyframe(track: &Arc<dyn TrackRemote>, ssrc: u32) {
    let pli = PictureLossIndication {
        sender_ssrc: 0,
        media_ssrc: ssrc,
    };
    let _ = track.write_rtcp(vec![Box::new(pli)]).await;
}

/// Reassembles H.264 access units from RTP packets: packets are kept by (extended) sequence
/// number per RTP timestamp, and a frame is released as soon as it is complete (contiguous
/// from the packet after the previous frame's marker up to its own marker packet), so there
/// is no extra frame of delay. A frame that stays incomplete while a newer one completes is
/// given up after [`FRAME_WAIT`] (time for NACK to bring the missing packets back), and the
/// receiver then waits for a keyframe.
struct FrameAssembler {
    depacketizer: H264Packet,
    frames: std::collections::BTreeMap<u64, PendingFrame>,
    highest_seq: Option<u64>,
    previous_end: Option<u64>,
}

struct PendingFrame {
    timestamp: u32,
    packets: std::collections::BTreeMap<u64, (bool, Bytes)>,
    first_seen: Instant,
}

/// Most frames kept waiting for their missing packets.
const MAX_PENDING_FRAMES: usize = 16;

/// How long an incomplete frame may hold back newer complete ones: room for a few NACK
/// rounds ([`NACK_INTERVAL`]) before the receiver gives the frame up and waits for a keyframe.
const FRAME_WAIT: Duration = Duration::from_millis(200);

/// How often the receiver asks again for packets it is missing.
const NACK_INTERVAL: Duration = Duration::from_millis(20);

/// How many times one missing packet is asked for (10 × 20 ms covers [`FRAME_WAIT`]). Without
/// a limit, the packets of an outage, long gone from the sender's buffer, were asked for
/// every 20 ms for ever: a storm of NACKs and retransmissions after the restore that
/// congestion control read as loss.
const NACKS_PER_PACKET: u16 = 10;

impl FrameAssembler {
    fn new() -> Self {
        Self {
            depacketizer: H264Packet::default(),
            frames: std::collections::BTreeMap::new(),
            highest_seq: None,
            previous_end: None,
        }
    }

    /// Extends a 16-bit sequence number relative to the highest seen.
    fn extend(&mut self, seq: u16) -> u64 {
        let ext = match self.highest_seq {
            None => u64::from(seq) + (1 << 16),
            Some(high) => {
                let base = high & !0xffff;
                let candidates = [
                    base.wrapping_sub(1 << 16) | u64::from(seq),
                    base | u64::from(seq),
                    (base + (1 << 16)) | u64::from(seq),
                ];
                candidates
                    .into_iter()
                    .min_by_key(|c| c.abs_diff(high))
                    .unwrap_or(base | u64::from(seq))
            }
        };
        if self.highest_seq.is_none_or(|h| ext > h) {
            self.highest_seq = Some(ext);
        }
        ext
    }

    /// Takes a packet; returns the access units it completed, oldest first, and whether
    /// frames were given up.
    fn push(&mut self, now: Instant, packet: rtc::rtp::packet::Packet) -> (Vec<Bytes>, bool) {
        let seq = self.extend(packet.header.sequence_number);
        if self.previous_end.is_some_and(|end| seq <= end) {
            return (Vec::new(), false); // late duplicate of a released frame
        }
        let timestamp = packet.header.timestamp;
        let key = self
            .frames
            .iter()
            .find(|(_, f)| f.timestamp == timestamp)
            .map(|(k, _)| *k);
        let frame_key = match key {
            Some(k) if seq < k => {
                // A packet before the frame's lowest one: re-key the frame.
                let frame = self.frames.remove(&k).unwrap_or_else(|| unreachable!());
                self.frames.insert(seq, frame);
                seq
            }
            Some(k) => k,
            None => {
                self.frames.insert(
                    seq,
                    PendingFrame {
                        timestamp,
                        packets: std::collections::BTreeMap::new(),
                        first_seen: now,
                    },
                );
                seq
            }
        };
        if let Some(frame) = self.frames.get_mut(&frame_key) {
            frame
                .packets
                .insert(seq, (packet.header.marker, packet.payload));
        }
        let mut out = Vec::new();
        let mut gave_up = false;
        while let Some((&first_key, oldest)) = self.frames.iter().next() {
            let complete = self.is_complete(oldest);
            if complete {
                let frame = self
                    .frames
                    .remove(&first_key)
                    .unwrap_or_else(|| unreachable!());
                let end = frame.packets.keys().next_back().copied();
                let mut access_unit = bytes::BytesMut::new();
                let mut ok = true;
                for (_, payload) in frame.packets.values() {
                    match rtc::rtp::packetizer::Depacketizer::depacketize(
                        &mut self.depacketizer,
                        payload,
                    ) {
                        Ok(nal) => access_unit.extend_from_slice(&nal),
                        Err(_) => ok = false,
                    }
                }
                self.previous_end = end;
                if ok && !access_unit.is_empty() {
                    out.push(access_unit.freeze());
                }
                continue;
            }
            // Never hold more than a handful of frames: a stream that never completes a frame
            // (heavy loss, no marker bits) must not grow without bound.
            if self.frames.len() > MAX_PENDING_FRAMES {
                self.frames.remove(&first_key);
                self.previous_end = None;
                self.depacketizer = H264Packet::default();
                gave_up = true;
                continue;
            }
            let newer_complete = self
                .frames
                .values()
                .skip(1)
                .any(|f| self.is_complete_ignoring_start(f));
            if newer_complete
                && (now.duration_since(oldest.first_seen) > FRAME_WAIT || self.frames.len() > 8)
            {
                self.frames.remove(&first_key);
                self.previous_end = None;
                self.depacketizer = H264Packet::default();
                gave_up = true;
                continue;
            }
            break;
        }
        (out, gave_up)
    }

    /// Complete: has its marker packet, no gaps, and starts right after the previous frame.
    /// When that is unknown (stream start, after a loss), the first packet must start a NAL
    /// unit and a later packet must have been seen, so that earlier packets of the frame
    /// cannot still be on their way.
    fn is_complete(&self, frame: &PendingFrame) -> bool {
        let (Some((&first, (_, first_payload))), Some(&last)) = (
            frame.packets.iter().next(),
            frame.packets.keys().next_back(),
        ) else {
            return false;
        };
        let starts_right = match self.previous_end {
            Some(end) => first == end + 1,
            None => {
                rtc::rtp::packetizer::Depacketizer::is_partition_head(
                    &self.depacketizer,
                    first_payload,
                ) && self.highest_seq.is_some_and(|h| h > last)
            }
        };
        starts_right && self.is_complete_ignoring_start(frame)
    }

    fn is_complete_ignoring_start(&self, frame: &PendingFrame) -> bool {
        let (Some(first), Some((&last, (marker, _)))) = (
            frame.packets.keys().next(),
            frame.packets.iter().next_back(),
        ) else {
            return false;
        };
        *marker && (last - first + 1) as usize == frame.packets.len()
    }
}

/// Whether an Annex-B access unit holds an IDR slice (NAL type 5).
fn has_idr(access_unit: &[u8]) -> bool {
    access_unit
        .windows(4)
        .any(|w| w[0] == 0 && w[1] == 0 && w[2] == 1 && (w[3] & 0x1f) == 5)
}

/// The receive side of a video track, without IO: RTP packets in, decoded RGBA frames out
/// (reassemble → H.264 decode → I420 → RGBA → stamp read back). After a loss it skips
/// frames until a keyframe arrives (and [`needs_keyframe`](Self::needs_keyframe) says to
/// ask for one), so it never shows a corrupted picture.
pub struct VideoReceiver {
    assembler: FrameAssembler,
    decoder: H264Decoder,
    waiting_for_keyframe: bool,
    read_stamps: bool,
}

impl VideoReceiver {
    /// A receiver for one H.264 track; with `read_stamps`, each picture's synthetic stamp is
    /// read back (measuring), else it is `None`.
    pub fn new(read_stamps: bool) -> Result<Self, String> {
        Ok(Self {
            assembler: FrameAssembler::new(),
            decoder: H264Decoder::new().map_err(|e| e.to_string())?,
            waiting_for_keyframe: true,
            read_stamps,
        })
    }

    /// Takes one RTP packet; returns the frames it completed.
    pub fn push(&mut self, now: Instant, packet: rtc::rtp::packet::Packet) -> Vec<DecodedVideo> {
        let (access_units, gave_up) = self.assembler.push(now, packet);
        if gave_up {
            self.waiting_for_keyframe = true;
        }
        let mut frames = Vec::new();
        for access_unit in access_units {
            if self.waiting_for_keyframe && !has_idr(&access_unit) {
                continue;
            }
            let mut rgba = Vec::new();
            match self.decoder.decode_rgba(&access_unit, &mut rgba) {
                Ok(Some((width, height))) => {
                    self.waiting_for_keyframe = false;
                    let stamp = if self.read_stamps {
                        read_stamp(&rgba, width, height)
                    } else {
                        None
                    };
                    frames.push(DecodedVideo {
                        width,
                        height,
                        rgba,
                        stamp,
                        encoded: access_unit,
                    });
                }
                Ok(None) => {}
                Err(_) => self.waiting_for_keyframe = true,
            }
        }
        frames
    }

    /// Whether the decoder lost its reference and needs a keyframe.
    pub fn needs_keyframe(&self) -> bool {
        self.waiting_for_keyframe
    }
}

/// The media stream id of screen-share tracks.
const SCREEN_STREAM: &str = "huddle-screen";

/// The media stream id of camera tracks.
const CAMERA_STREAM: &str = "huddle-video";

/// The name a participant's screen share is recorded under.
pub fn screen_track_name(uid: &str) -> String {
    format!("{uid} (screen)")
}

/// RTP packets of one video track that may wait for its decode thread; beyond, packets are
/// dropped (the reassembler then asks for a keyframe) rather than queued without bound.
pub const DECODE_QUEUE_PACKETS: usize = 1024;

/// Reads one remote video track: packets go to the track's decode thread; keyframe requests
/// go back to the sender when the decoder lost its reference.
async fn receive_video(
    track: Arc<dyn TrackRemote>,
    (uid, kind): (&str, VideoTrackKind),
    context: &Arc<PeerContext>,
) -> Result<(), String> {
    let ssrc = track.ssrcs().await.first().copied().unwrap_or(0);
    let needs_keyframe = Arc::new(AtomicBool::new(true));
    let packets = spawn_video_decoder((uid, kind), context, needs_keyframe.clone())?;
    request_keyframe(&track, ssrc).await;
    let mut last_pli = Instant::now();
    #[cfg(feature = "test-utils")]
    let mut received = 0u64;
    while let Some(event) = track.poll().await {
        let packet = match event {
            TrackRemoteEvent::OnRtpPacket(packet) => packet,
            TrackRemoteEvent::OnEnded => break,
            _ => continue,
        };
        #[cfg(feature = "test-utils")]
        {
            let drop_per_mille = context.loss.video_drop_per_mille.load(Ordering::Relaxed);
            if drop_per_mille > 0 {
                received += 1;
                // Deterministic spread: drop `drop_per_mille` of every 1000 packets.
                if (received * u64::from(drop_per_mille)) % 1000 < u64::from(drop_per_mille) {
                    continue;
                }
            }
        }
        match packets.try_send(packet) {
            Ok(()) | Err(crossbeam_channel::TrySendError::Full(_)) => {}
            Err(crossbeam_channel::TrySendError::Disconnected(_)) => {
                return Err(format!("the video decoder of {uid} stopped"));
            }
        }
        if needs_keyframe.load(Ordering::Relaxed) && last_pli.elapsed() > Duration::from_millis(300)
        {
            request_keyframe(&track, ssrc).await;
            last_pli = Instant::now();
        }
    }
    Ok(())
}

/// Starts the decode thread of one video track: packets in (until the sender is dropped),
/// pictures out into the track's slot, counted and recorded; `needs_keyframe` says when the
/// decoder waits for one.
fn spawn_video_decoder(
    (uid, kind): (&str, VideoTrackKind),
    context: &Arc<PeerContext>,
    needs_keyframe: Arc<AtomicBool>,
) -> Result<Sender<rtc::rtp::packet::Packet>, String> {
    let mut receiver = VideoReceiver::new(context.probe.measuring())?;
    let (packets, queue) = crossbeam_channel::bounded(DECODE_QUEUE_PACKETS);
    let slot = context.frames.slot(uid, kind);
    let context = context.clone();
    let uid = uid.to_owned();
    let name = match kind {
        VideoTrackKind::Screen => screen_track_name(&uid),
        VideoTrackKind::Camera => uid.clone(),
    };
    std::thread::Builder::new()
        .name(format!("huddle-decode-{uid}"))
        .spawn(move || {
            for packet in queue {
                for frame in receiver.push(Instant::now(), packet) {
                    if let Some(recorder) = recorder_of(&context.recording) {
                        recorder.video(&name, &frame.encoded, frame.width, frame.height);
                    }
                    if kind == VideoTrackKind::Camera {
                        context.probe.video(&uid, &frame);
                    }
                    slot.put(frame);
                }
                needs_keyframe.store(receiver.needs_keyframe(), Ordering::Relaxed);
            }
        })
        .map_err(|err| format!("cannot start a video decoder: {err}"))?;
    Ok(packets)
}

/// How often a speaking remote's loudness is told ([`PeerEvent::Loudness`]).
pub const LOUDNESS_INTERVAL: Duration = Duration::from_millis(250);

/// How often a quiet audio track checks whether its talker stopped speaking.
const SPEAKING_TICK: Duration = Duration::from_millis(200);

/// Reads one remote audio track: speaking from each packet's audio level extension (no
/// decoding needed), then Opus decode (with concealment of short gaps) into the mixer,
/// counted by the probe; voices out of earshot, and in a large call those not among the
/// loudest few ([`crate::speech::LoudestVoices`]), are not decoded.
async fn receive_audio(
    track: Arc<dyn TrackRemote>,
    (uid, audio_level_id): (&str, &AtomicU8),
    context: &Arc<PeerContext>,
) -> Result<(), String> {
    // Stereo output whatever the stream: a mono stream comes out on both channels.
    let mut decoder = OpusDecoder::stereo().map_err(|e| e.to_string())?;
    let mut out = vec![0i16; FRAME_SAMPLES * 6 * 2];
    let mut last_seq: Option<u16> = None;
    let mut stereo = false;
    // Hands one decoded frame (`n` samples per channel) to the mixer and the probe.
    let deliver = |out: &[i16], n: usize, stereo: bool, origin: AudioFrameOrigin| {
        let interleaved = &out[..n * 2];
        crate::mixer::lock(&context.mixer).push_stereo(uid, interleaved);
        context.probe.audio(uid, interleaved, stereo, origin);
    };
    let started = Instant::now();
    let mut speaking = crate::speech::SpeakingDetector::default();
    let mut loudness = crate::speech::RecentLoudness::default();
    let mut last_loudness = Instant::now();
    let tell = |now: bool| {
        let _ = context.events.send(PeerEvent::Speaking {
            uid: uid.to_owned(),
            speaking: now,
        });
    };
    loop {
        // A muted talker sends nothing: time alone ends their speaking.
        let Ok(event) = tokio::time::timeout(SPEAKING_TICK, track.poll()).await else {
            if let Some(now) = speaking.tick(started.elapsed()) {
                tell(now);
            }
            continue;
        };
        let Some(event) = event else { break };
        let packet = match event {
            TrackRemoteEvent::OnRtpPacket(packet) => packet,
            TrackRemoteEvent::OnEnded => break,
            _ => continue,
        };
        let level_byte = match audio_level_id.load(Ordering::Relaxed) {
            0 => None,
            id => packet.header.get_extension(id),
        }
        .and_then(|payload| payload.first().copied());
        // RFC 6464: the V bit, then the level in −dBov.
        let voice = level_byte.is_some_and(|byte| byte & 0x80 != 0);
        if let Some(byte) = level_byte {
            loudness.frame(byte & 0x7f, voice);
        }
        // A packet without the extension counts as silence for the choice of the loudest.
        let level = level_byte.map_or(127, |byte| byte & 0x7f);
        if let Some(now) = speaking.frame(started.elapsed(), voice) {
            tell(now);
        }
        if speaking.speaking() && last_loudness.elapsed() >= LOUDNESS_INTERVAL {
            last_loudness = Instant::now();
            let _ = context.events.send(PeerEvent::Loudness {
                uid: uid.to_owned(),
                dbov: loudness.dbov(),
            });
        }
        let seq = packet.header.sequence_number;
        if let Some(recorder) = recorder_of(&context.recording) {
            recorder.audio(uid, &packet.payload);
        }
        let decode = {
            let mut mixer = crate::mixer::lock(&context.mixer);
            mixer.heard(uid, level, voice, Instant::now());
            mixer.wants(uid)
        };
        if !decode {
            // Out of earshot, or not among the loudest few of a large call: not decoded at
            // all (the saving of proximity culling and of audio at scale).
            context.probe.audio_skipped(uid);
            last_seq = Some(seq);
            continue;
        }
        if let Some(last) = last_seq {
            let gap = seq.wrapping_sub(last);
            // Conceal up to five lost 20 ms frames; the last one comes back from this
            // packet's in-band FEC when it has some (SILK and hybrid packets do).
            if (2..=6).contains(&gap) {
                for missing in 1..gap {
                    let fec = (missing == gap - 1).then_some(packet.payload.as_ref());
                    let origin = if fec.is_some_and(crate::audio::may_carry_fec) {
                        AudioFrameOrigin::RecoveredByFec
                    } else {
                        AudioFrameOrigin::Concealed
                    };
                    if let Ok(n) = decoder.conceal(fec, &mut out[..FRAME_SAMPLES * 2]) {
                        deliver(&out, n, stereo, origin);
                    }
                }
            }
        }
        last_seq = Some(seq);
        stereo = crate::audio::is_stereo_packet(&packet.payload);
        match decoder.decode(&packet.payload, &mut out) {
            Ok(n) => deliver(&out, n, stereo, AudioFrameOrigin::Decoded),
            Err(err) => {
                let _ = context.events.send(PeerEvent::Error {
                    uid: uid.to_owned(),
                    reason: err.to_string(),
                });
            }
        }
    }
    if speaking.speaking() {
        tell(false);
    }
    crate::mixer::lock(&context.mixer).forget_voice(uid);
    Ok(())
}

/// What a connection is for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PeerRole {
    /// To one remote participant (full mesh): both ways; the smaller uid offers.
    #[default]
    Mesh,
    /// To the SFU ([`huddle_protocol::SFU_PUBLISH_PEER`]): we offer and send our tracks.
    SfuPublisher,
    /// From the SFU ([`huddle_protocol::SFU_SUBSCRIBE_PEER`]): it offers everyone else's
    /// tracks (again as people come and go, so its renegotiations are not capped) and we
    /// answer, sending nothing; each track's `msid` names its owner and kind.
    SfuSubscriber,
}

/// Whose track a subscriber track is and what it carries, from its `msid` as the SFU labels
/// them: `huddle-video video-<uid>`, `huddle-audio audio-<uid>`, `huddle-screen screen-<uid>`.
pub fn sfu_track_owner(stream_id: &str, track_id: &str) -> Option<(String, VideoTrackKind)> {
    let (prefix, kind) = match stream_id {
        "huddle-video" => ("video-", VideoTrackKind::Camera),
        "huddle-audio" => ("audio-", VideoTrackKind::Camera),
        "huddle-screen" => ("screen-", VideoTrackKind::Screen),
        _ => return None,
    };
    let uid = track_id.strip_prefix(prefix)?;
    huddle_protocol::messages::is_valid_uid(uid).then(|| (uid.to_owned(), kind))
}

/// One WebRTC connection to one remote participant (or to the SFU).
pub struct Peer {
    role: PeerRole,
    remote_uid: String,
    /// What the remote wants of our video (adaptive receive): paused, and a bitrate cap.
    wanted_paused: AtomicBool,
    wanted_max_bitrate: std::sync::atomic::AtomicU32,
    /// Video frames written to this peer.
    video_frames_written: AtomicU64,
    /// Media is written only once DTLS is up (earlier writes would be refused by SRTP).
    connected: Arc<AtomicBool>,
    offerer: bool,
    pc: Arc<dyn PeerConnection>,
    video: Arc<TrackLocalStaticSample>,
    audio: Arc<TrackLocalStaticSample>,
    screen: Arc<TrackLocalStaticSample>,
    video_ssrc: u32,
    /// On a publishing connection to the SFU, the camera goes out in three simulcast layers.
    simulcast: Option<SimulcastSend>,
    audio_ssrc: u32,
    /// The negotiated id of the audio level extension (0 until negotiated), shared with the
    /// receive side.
    audio_level_id: Arc<AtomicU8>,
    screen_ssrc: u32,
    /// Audio and screen senders, once negotiated.
    senders: Mutex<Option<[Arc<dyn RtpSender>; 2]>>,
    /// The camera's sender, once attached (from the start, or by a renegotiation).
    video_sender: Mutex<Option<Arc<dyn RtpSender>>>,
    /// The camera's sender exists (readable without waiting).
    video_attached: AtomicBool,
    /// We want our camera on this connection (a video call, or switched to video).
    wants_video: AtomicBool,
    /// An offer is out and another renegotiation was asked for meanwhile.
    renegotiate_after_answer: AtomicBool,
    /// Negotiated payload types: video, audio, screen.
    payload_types: Mutex<Option<[u8; 3]>>,
    /// Screen frames written to this peer.
    screen_frames_written: AtomicU64,
    trickle: Arc<Trickle>,
    ice: Arc<IceHealth>,
    /// Remote candidates that arrived before the remote description.
    remote_candidates: Mutex<Vec<rtc::peer_connection::transport::RTCIceCandidateInit>>,
    /// Whether `.local` (mDNS) candidates can be resolved.
    multicast_dns: bool,
    /// The video lines of the remote description last applied (shared with the handler).
    remote_video_lines: Arc<std::sync::Mutex<Vec<VideoLine>>>,
    /// Renegotiations in the last [`RENEGOTIATION_WINDOW`].
    renegotiations: RenegotiationBudget,
    context: Arc<PeerContext>,
}

/// A random non-zero SSRC; the operating system's randomness failing is an error, never a
/// predictable value.
fn random_u32() -> Result<u32, PeerError> {
    let mut buf = [0u8; 4];
    getrandom::fill(&mut buf).map_err(PeerError::NoRandomness)?;
    Ok(u32::from_le_bytes(buf) | 1)
}

fn local_track(
    kind: RtpCodecKind,
    codec: RTCRtpCodec,
    ssrc: u32,
    id: &str,
) -> Result<Arc<TrackLocalStaticSample>, PeerError> {
    let track = MediaStreamTrack::new(
        format!("huddle-{id}"),
        format!("{id}-{ssrc}"),
        id.to_owned(),
        kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec,
            ..Default::default()
        }],
    );
    Ok(Arc::new(TrackLocalStaticSample::new(
        Instant::now(),
        track,
    )?))
}

/// The camera track of a publishing connection to the SFU: one encoding per simulcast layer,
/// highest first (`a=rid:h send`, `m`, `l`, and `a=simulcast:send h;m;l` in the offer), each
/// with its own SSRC (`ssrcs`, in the same order).
fn simulcast_track(
    codec: RTCRtpCodec,
    ssrcs: [u32; 3],
) -> Result<Arc<TrackLocalStaticSample>, PeerError> {
    let encodings = SimulcastLayer::HIGHEST_FIRST
        .iter()
        .zip(ssrcs)
        .map(|(layer, ssrc)| RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                rid: layer.rid().to_owned(),
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec: codec.clone(),
            ..Default::default()
        })
        .collect();
    let track = MediaStreamTrack::new(
        "huddle-video".to_owned(),
        format!("video-{}", ssrcs[0]),
        "video".to_owned(),
        RtpCodecKind::Video,
        encodings,
    );
    Ok(Arc::new(TrackLocalStaticSample::new(
        Instant::now(),
        track,
    )?))
}

/// The camera's simulcast layers on a publishing connection to the SFU.
struct SimulcastSend {
    /// One SSRC per layer, in [`SimulcastLayer::HIGHEST_FIRST`] order.
    ssrcs: [u32; 3],
    /// The camera m-line's mid, once our offer has it: every packet carries it with its rid
    /// (the offer has no `a=ssrc` lines, so that is how the SFU tells the layers apart).
    mid: std::sync::Mutex<Option<String>>,
}

impl SimulcastSend {
    fn ssrc(&self, layer: SimulcastLayer) -> u32 {
        let index = SimulcastLayer::HIGHEST_FIRST
            .iter()
            .position(|l| *l == layer)
            .unwrap_or(0);
        self.ssrcs[index]
    }
}

/// The text of an RTP header extension that carries a string (the SDES `mid` and
/// `rtp-stream-id` extensions of RFC 8843 and RFC 8852).
struct SdesText(Bytes);

impl rtc::shared::marshal::MarshalSize for SdesText {
    fn marshal_size(&self) -> usize {
        self.0.len()
    }
}

impl rtc::shared::marshal::Marshal for SdesText {
    fn marshal_to(&self, buf: &mut [u8]) -> rtc::shared::error::Result<usize> {
        let Some(target) = buf.get_mut(..self.0.len()) else {
            return Err(rtc::shared::error::Error::ErrBufferTooSmall);
        };
        target.copy_from_slice(&self.0);
        Ok(self.0.len())
    }
}

/// The header extensions that name a simulcast layer's packets: the m-line's mid and the
/// layer's rid.
fn simulcast_extensions(mid: &str, layer: SimulcastLayer) -> Vec<HeaderExtension> {
    vec![
        HeaderExtension::Custom {
            uri: SDES_MID_URI.into(),
            extension: Box::new(SdesText(Bytes::copy_from_slice(mid.as_bytes()))),
        },
        HeaderExtension::Custom {
            uri: SDES_RTP_STREAM_ID_URI.into(),
            extension: Box::new(SdesText(Bytes::from_static(layer.rid().as_bytes()))),
        },
    ]
}

/// The mid of the m-line that sends simulcast (`a=rid:… send`) in our own `sdp`.
fn simulcast_mid(sdp: &str) -> Option<String> {
    let mut mid = None;
    for line in sdp.lines().map(str::trim) {
        if line.starts_with("m=") {
            mid = None;
        } else if let Some(value) = line.strip_prefix("a=mid:") {
            mid = Some(value.to_owned());
        } else if line.starts_with("a=rid:") && line.ends_with(" send") && mid.is_some() {
            return mid;
        }
    }
    None
}

/// Writes one encoded frame as a sample on `(track, ssrc, payload type)`, with `extensions`
/// on every packet; counts it in `written_count`, if any.
async fn write_frame(
    (track, ssrc, payload_type): (&TrackLocalStaticSample, u32, u8),
    frame: &EncodedFrame,
    duration: Duration,
    written_count: Option<&AtomicU64>,
    extensions: Vec<HeaderExtension>,
) -> bool {
    let sample = Sample {
        data: Bytes::copy_from_slice(&frame.data),
        duration,
        ..Sample::new(Instant::now())
    };
    let writer = extensions.into_iter().fold(
        track.sample_writer(ssrc, payload_type),
        |writer, extension| writer.with_extension(extension),
    );
    let written = writer.write_sample(&sample).await.is_ok();
    if let Some(count) = written_count.filter(|_| written) {
        count.fetch_add(1, Ordering::Relaxed);
    }
    written
}

/// `sdp` without its `a=candidate` and `a=end-of-candidates` lines.
fn without_candidates(sdp: &str) -> String {
    let mut out = String::with_capacity(sdp.len());
    for line in sdp.split_inclusive('\n') {
        let attribute = line.trim_end();
        if attribute.starts_with("a=candidate:") || attribute == "a=end-of-candidates" {
            continue;
        }
        out.push_str(line);
    }
    out
}

/// The ICE user fragment of a session description.
fn ice_ufrag(sdp: &str) -> Option<&str> {
    sdp.lines()
        .find_map(|line| line.trim().strip_prefix("a=ice-ufrag:"))
}

/// The DTLS certificate fingerprint of a session description.
fn sdp_fingerprint(sdp: &str) -> Option<&str> {
    sdp.lines()
        .find_map(|line| line.trim().strip_prefix("a=fingerprint:"))
}

/// Whether a candidate's address is an mDNS name (`….local`), as browsers send.
fn is_mdns_candidate(candidate: &str) -> bool {
    candidate
        .split_whitespace()
        .nth(4)
        .is_some_and(|address| address.ends_with(".local"))
}

/// Time between ICE connectivity checks.
const ICE_CHECK_INTERVAL: Duration = Duration::from_millis(50);
/// Checks per candidate pair before it fails (× the interval: 1.4 s, as webrtc's default).
const ICE_MAX_BINDING_REQUESTS: u16 = 28;

/// The codecs (H.264, Opus) and interceptors of every connection.
fn media_and_interceptors() -> Result<(MediaEngine, Registry), PeerError> {
    let mut media = MediaEngine::default();
    media.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: h264_codec(),
            payload_type: H264_PAYLOAD_TYPE,
        },
        RtpCodecKind::Video,
    )?;
    media.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: opus_codec(),
            payload_type: OPUS_PAYLOAD_TYPE,
        },
        RtpCodecKind::Audio,
    )?;
    // Every audio packet says how loud it is and whether it holds voice (RFC 6464), as
    // browsers do: receivers know who speaks without decoding.
    media.register_header_extension(
        RTCRtpHeaderExtensionCapability {
            uri: crate::speech::AUDIO_LEVEL_URI.to_owned(),
        },
        RtpCodecKind::Audio,
        None,
    )?;
    // Congestion control (GCC over TWCC feedback) first: its target bitrate drives the
    // encoder (see `link_totals`) and the pacer, which releases at 2.5 × the target (rtc's
    // own pacer, which `configure_congestion_control` puts in, paces at exactly the target).
    // Then NACK, reports, and TWCC receive.
    let (registry, round_trip) = crate::congestion::configure(
        Registry::new(),
        (2_500_000.0, 150_000.0, 6_000_000.0),
        &mut media,
    )?;
    let registry = register_default_interceptors(registry, &mut media)?;
    // A packet is sent again at most once per round trip, however often it is asked for.
    let registry = registry.with(
        Slot::NackResponder,
        crate::congestion::NackResendGuard::new(round_trip),
    );
    // NACKs every 20 ms instead of 100 ms: a lost packet, or a lost retransmission, is asked
    // for again well within FRAME_WAIT, so a loss rarely costs a frame (and a keyframe).
    let registry = registry.with(
        Slot::NackGenerator,
        rtc::interceptor::NackGeneratorBuilder::new()
            .with_interval(NACK_INTERVAL)
            .with_max_nacks_per_packet(NACKS_PER_PACKET)
            .build(),
    );
    let registry = registry.with(
        Slot::from(14_000),
        KeyframeRequestForwarder {
            read_queue: VecDeque::new(),
            write_queue: VecDeque::new(),
        },
    );
    Ok((media, registry))
}

/// Builds the connection with the session's ICE set-up. mDNS, when asked for, needs the
/// multicast group; a host that cannot join it (no multicast route, only `lo`) gets a
/// connection without mDNS rather than none.
async fn build_connection(
    ice: &crate::ice::IceConfig,
    handler: Arc<Handler>,
) -> Result<impl PeerConnection, PeerError> {
    let configuration = || {
        webrtc::peer_connection::RTCConfigurationBuilder::default()
            .with_ice_servers(
                ice.servers
                    .iter()
                    .map(|server| webrtc::peer_connection::RTCIceServer {
                        urls: server.urls.clone(),
                        username: server.username.clone().unwrap_or_default(),
                        credential: server.credential.clone().unwrap_or_default(),
                    })
                    .collect(),
            )
            .build()
    };
    let settings = |mdns: bool| {
        webrtc::peer_connection::SettingEngineBuilder::default()
            // Connectivity checks every 50 ms (RFC 8445's Ta) instead of 200 ms: a check that
            // raced the remote description, or a DTLS flight that raced ICE, is retried 150 ms
            // sooner. The same 1.4 s per candidate pair before giving up.
            .with_ice_connection_attempts(Some(ICE_CHECK_INTERVAL), Some(ICE_MAX_BINDING_REQUESTS))
            .with_multicast_dns_mode(if mdns {
                rtc::ice::mdns::MulticastDnsMode::QueryAndGather
            } else {
                rtc::ice::mdns::MulticastDnsMode::Disabled
            })
            .build()
    };
    let build = |mdns: bool, (media, registry): (MediaEngine, Registry)| {
        PeerConnectionBuilder::new()
            .with_configuration(configuration())
            .with_setting_engine(settings(mdns))
            .with_media_engine(media)
            .with_interceptor_registry(registry)
            .with_handler(handler.clone() as Arc<dyn PeerConnectionEventHandler>)
            .with_udp_addrs(ice.bind.clone())
            .build()
    };
    if ice.multicast_dns {
        match build(true, media_and_interceptors()?).await {
            Ok(pc) => return Ok(pc),
            Err(err) => tracing::warn!("mDNS unavailable ({err}); going on without it"),
        }
    }
    Ok(build(false, media_and_interceptors()?).await?)
}

/// A connection's link totals ([`Peer::link_totals`]).
#[derive(Clone, Debug, Default)]
pub struct LinkTotals {
    /// Round-trip time of the best candidate pair, in milliseconds.
    pub rtt_ms: Option<f64>,
    /// RTP packets received so far.
    pub packets_received: u64,
    /// RTP packets lost so far.
    pub packets_lost: u64,
    /// Congestion control's target bitrate for our video, bits per second.
    pub target_bitrate_bps: Option<f64>,
    /// The selected candidate pair.
    pub path: Option<crate::ice::CandidatePath>,
}

/// How to reach and set up a peer.
#[derive(Clone, Debug)]
pub struct PeerSetup {
    /// What the connection is for.
    pub role: PeerRole,
    /// Our uid.
    pub local_uid: String,
    /// Theirs.
    pub remote_uid: String,
    /// Interfaces, STUN/TURN servers and mDNS.
    pub ice: crate::ice::IceConfig,
    /// Negotiate our camera track from the start (false for audio-only calls: it is added
    /// by a renegotiation when the call switches to video).
    pub video: bool,
}

impl Peer {
    /// Builds the connection (no negotiation yet). Must run inside a tokio runtime.
    pub async fn create(
        setup: &PeerSetup,
        context: Arc<PeerContext>,
    ) -> Result<Arc<Self>, PeerError> {
        let trickle = Arc::new(Trickle::default());
        let connected = Arc::new(AtomicBool::new(false));
        let ice = Arc::new(IceHealth::default());
        let audio_level_id = Arc::new(AtomicU8::new(0));
        let remote_video_lines = Arc::new(std::sync::Mutex::new(Vec::new()));
        let handler = Arc::new(Handler {
            role: setup.role,
            remote_uid: setup.remote_uid.clone(),
            audio_level_id: audio_level_id.clone(),
            connected: connected.clone(),
            ice: ice.clone(),
            trickle: trickle.clone(),
            remote_video_lines: remote_video_lines.clone(),
            context: context.clone(),
        });
        let pc = build_connection(&setup.ice, handler).await?;
        let (video_ssrc, audio_ssrc, screen_ssrc) = (random_u32()?, random_u32()?, random_u32()?);
        let simulcast = match setup.role {
            PeerRole::SfuPublisher => Some(SimulcastSend {
                ssrcs: [video_ssrc, random_u32()?, random_u32()?],
                mid: std::sync::Mutex::new(None),
            }),
            PeerRole::Mesh | PeerRole::SfuSubscriber => None,
        };
        let video = match &simulcast {
            Some(layers) => simulcast_track(h264_codec(), layers.ssrcs)?,
            None => local_track(RtpCodecKind::Video, h264_codec(), video_ssrc, "video")?,
        };
        let offerer = match setup.role {
            PeerRole::Mesh => setup.local_uid < setup.remote_uid,
            PeerRole::SfuPublisher => true,
            PeerRole::SfuSubscriber => false,
        };
        let peer = Arc::new(Self {
            role: setup.role,
            remote_uid: setup.remote_uid.clone(),
            wanted_paused: AtomicBool::new(false),
            wanted_max_bitrate: std::sync::atomic::AtomicU32::new(0),
            video_frames_written: AtomicU64::new(0),
            connected,
            offerer,
            pc: Arc::new(pc),
            video,
            audio: local_track(RtpCodecKind::Audio, opus_codec(), audio_ssrc, "audio")?,
            screen: local_track(RtpCodecKind::Video, h264_codec(), screen_ssrc, "screen")?,
            video_ssrc,
            simulcast,
            audio_ssrc,
            screen_ssrc,
            audio_level_id,
            senders: Mutex::new(None),
            video_sender: Mutex::new(None),
            video_attached: AtomicBool::new(false),
            wants_video: AtomicBool::new(setup.video),
            renegotiate_after_answer: AtomicBool::new(false),
            payload_types: Mutex::new(None),
            screen_frames_written: AtomicU64::new(0),
            trickle,
            ice,
            remote_candidates: Mutex::new(Vec::new()),
            multicast_dns: setup.ice.multicast_dns,
            remote_video_lines,
            renegotiations: RenegotiationBudget::default(),
            context,
        });
        Ok(peer)
    }

    /// Whether the remote side's description was applied (negotiation happened).
    pub async fn has_remote_description(&self) -> bool {
        self.pc.remote_description().await.is_some()
    }

    /// What the connection is for.
    pub fn role(&self) -> PeerRole {
        self.role
    }

    /// The remote participant.
    pub fn remote_uid(&self) -> &str {
        &self.remote_uid
    }

    /// Whether we make the offer (the smaller uid does).
    pub fn is_offerer(&self) -> bool {
        self.offerer
    }

    /// Adds our tracks before the first offer or answer: the camera (if `video`), audio, and
    /// the screen-share track, which stays silent until someone shares so that starting a
    /// share needs no renegotiation.
    async fn add_tracks(&self, video: bool) -> Result<(), PeerError> {
        let mut senders = self.senders.lock().await;
        if senders.is_some() {
            return Ok(());
        }
        if video {
            self.attach_video().await?;
        }
        let audio = self
            .pc
            .add_track(self.audio.clone() as Arc<dyn TrackLocal>)
            .await?;
        let screen = self
            .pc
            .add_track(self.screen.clone() as Arc<dyn TrackLocal>)
            .await?;
        *senders = Some([audio, screen]);
        forward_keyframe_requests(
            self.screen.clone(),
            any_request_sets(self.context.screen_keyframe_wanted.clone()),
            self.context.counters.clone(),
        );
        Ok(())
    }

    /// Adds the camera track to the connection unless it is there; true if it was added
    /// now (the next offer or answer carries it).
    async fn attach_video(&self) -> Result<bool, PeerError> {
        let mut sender = self.video_sender.lock().await;
        if sender.is_some() {
            return Ok(false);
        }
        *sender = Some(
            self.pc
                .add_track(self.video.clone() as Arc<dyn TrackLocal>)
                .await?,
        );
        self.video_attached.store(true, Ordering::Release);
        let whole = self.context.keyframe_wanted.clone();
        match &self.simulcast {
            Some(simulcast) => {
                // A layer's request goes to that layer's encoder (the whole picture's is the
                // camera's own encoder).
                let smaller = self.context.smaller_layers_keyframe_wanted.clone();
                let ssrcs = simulcast.ssrcs;
                forward_keyframe_requests(
                    self.video.clone(),
                    move |ssrc| match ssrcs.iter().position(|s| *s == ssrc) {
                        Some(1) => smaller[0].store(true, Ordering::Relaxed),
                        Some(2) => smaller[1].store(true, Ordering::Relaxed),
                        _ => whole.store(true, Ordering::Relaxed),
                    },
                    self.context.counters.clone(),
                )
            }
            None => forward_keyframe_requests(
                self.video.clone(),
                any_request_sets(whole),
                self.context.counters.clone(),
            ),
        }
        Ok(true)
    }

    /// Whether our camera track is part of the connection.
    pub async fn has_video_track(&self) -> bool {
        self.video_sender.lock().await.is_some()
    }

    /// [`Self::has_video_track`] without waiting.
    pub fn video_attached(&self) -> bool {
        self.video_attached.load(Ordering::Acquire)
    }

    /// The call switched to video: the camera track joins the connection. The offerer adds
    /// it and re-offers; the answerer asks the offerer to (its track is added when that
    /// offer arrives). Runs in the session's actor, serialised with the signals.
    pub async fn enable_video(&self) -> Result<(), PeerError> {
        self.wants_video.store(true, Ordering::Relaxed);
        if self.has_video_track().await {
            return Ok(());
        }
        if self.offerer {
            self.attach_video().await?;
            self.renegotiate().await
        } else {
            self.send_signal(PeerSignal::RenegotiationWanted);
            Ok(())
        }
    }

    /// The offerer's new offer on an established connection (same ICE credentials). If an
    /// offer is still out, it goes once that one is answered.
    async fn renegotiate(&self) -> Result<(), PeerError> {
        if self.pc.pending_local_description().await.is_some()
            || self.pc.remote_description().await.is_none()
        {
            self.renegotiate_after_answer.store(true, Ordering::Relaxed);
            return Ok(());
        }
        self.renegotiations.spend(Instant::now())?;
        self.send_offer().await
    }

    /// Keeps the video lines of the remote description just applied, for
    /// [`video_track_kind`].
    fn remember_remote_video_lines(&self, lines: Vec<VideoLine>) {
        if let Ok(mut current) = self.remote_video_lines.lock() {
            *current = lines;
        }
    }

    /// Creates and sets an offer, sends it, and lets its candidates follow.
    async fn send_offer(&self) -> Result<(), PeerError> {
        let offer = self.pc.create_offer(None).await?;
        self.trickle.hold();
        self.pc.set_local_description(offer).await?;
        let sdp = self.local_sdp().await?;
        self.send_signal(PeerSignal::Offer { sdp });
        self.release_candidates();
        Ok(())
    }

    /// After an ICE restart the remote side has forgotten our candidates, and the stack keeps
    /// the ones it has rather than gathering again: send each one again (a candidate that is
    /// gathered anew is trickled as well; the remote side ignores a duplicate).
    async fn resend_local_candidates(&self) {
        let Some(description) = self.pc.local_description().await else {
            return;
        };
        for line in description.sdp.lines() {
            if let Some(candidate) = line.trim().strip_prefix("a=") {
                if !candidate.starts_with("candidate:") {
                    continue;
                }
                self.send_signal(PeerSignal::Candidate {
                    candidate: Some(candidate.to_owned()),
                    sdp_mid: Some(String::new()),
                    sdp_mline_index: Some(0),
                    username_fragment: ice_ufrag(&description.sdp).map(str::to_owned),
                });
            }
        }
    }

    /// Sends the candidates gathered while the description was being sent.
    fn release_candidates(&self) {
        for signal in self.trickle.release() {
            self.send_signal(signal);
        }
    }

    /// The offerer's ICE restart, when the connection has been down for
    /// [`ICE_RESTART_AFTER`] (and not restarted within it): new ICE credentials and
    /// candidates in a new offer. Runs in the session's actor, serialised with the signals.
    /// True if it restarted.
    pub async fn restart_ice_if_down(&self) -> Result<bool, PeerError> {
        // A restart offer still unanswered is offered again (with new credentials): it may
        // have gone out on a signaling socket the outage killed.
        if !self.offerer
            || self.pc.remote_description().await.is_none()
            || !self.ice.restart_due(Instant::now())
        {
            return Ok(false);
        }
        self.pc.restart_ice().await?;
        self.send_offer().await?;
        self.resend_local_candidates().await;
        let _ = self.context.events.send(PeerEvent::IceRestarted {
            uid: self.remote_uid.clone(),
        });
        Ok(true)
    }

    /// Whether `offer` continues our current connection: the same DTLS certificate
    /// (fingerprint) as the remote description we have, so an ICE restart or a
    /// renegotiation rather than a peer that started over.
    pub async fn continues_connection(&self, offer: &str) -> bool {
        match self.pc.remote_description().await {
            Some(current) => {
                sdp_fingerprint(&current.sdp).is_some()
                    && sdp_fingerprint(&current.sdp) == sdp_fingerprint(offer)
            }
            None => false,
        }
    }

    /// Our local description as sent: without candidate lines, since every candidate is
    /// trickled (so the remote side learns each one the same way, with its statistics).
    async fn local_sdp(&self) -> Result<String, PeerError> {
        let description = self
            .pc
            .local_description()
            .await
            .ok_or(PeerError::NoLocalDescription)?;
        // The answer repeats the offer's extension ids, so ours are the session's.
        if let Some(id) = crate::speech::audio_level_extension_id(&description.sdp) {
            self.audio_level_id.store(id, Ordering::Relaxed);
        }
        if let Some(simulcast) = &self.simulcast {
            *simulcast.mid.lock().unwrap_or_else(|p| p.into_inner()) =
                simulcast_mid(&description.sdp);
        }
        Ok(without_candidates(&description.sdp))
    }

    /// The offerer's first step: add tracks, create the offer and send it (candidates follow
    /// as they are gathered).
    pub async fn start(&self) -> Result<(), PeerError> {
        if !self.offerer {
            return Ok(());
        }
        self.add_tracks(self.wants_video.load(Ordering::Relaxed))
            .await?;
        self.send_offer().await
    }

    fn send_signal(&self, signal: PeerSignal) {
        let _ = self.context.events.send(PeerEvent::Signal {
            to: self.remote_uid.clone(),
            signal,
        });
    }

    /// Applies a signal from the remote side.
    pub async fn handle_signal(&self, signal: PeerSignal) -> Result<(), PeerError> {
        match signal {
            PeerSignal::Offer { sdp } => {
                // A video line that is not Huddle's screen share: the camera's (a browser's
                // single m=video, or an audio-only call that switched to video).
                let lines = video_lines(&sdp);
                let offers_camera = offers_camera_line(&lines);
                let renegotiation = self.has_remote_description().await;
                // New ICE credentials on a connection we have: the offerer restarted ICE.
                let ice_restart = match self.pc.remote_description().await {
                    Some(current) => ice_ufrag(&current.sdp) != ice_ufrag(&sdp),
                    None => false,
                };
                if renegotiation && !ice_restart && self.role != PeerRole::SfuSubscriber {
                    self.renegotiations.spend(Instant::now())?;
                }
                let offer = RTCSessionDescription::offer(sdp)
                    .map_err(|e| PeerError::MalformedDescription(e.to_string()))?;
                self.pc.set_remote_description(offer).await?;
                self.remember_remote_video_lines(lines);
                self.add_waiting_candidates().await;
                // Our camera goes only on the offer's camera line: a camera track added to
                // an offer without one would take the screen share's line.
                if self.role == PeerRole::SfuSubscriber {
                    // Receive only.
                } else if renegotiation {
                    if offers_camera {
                        self.attach_video().await?;
                    }
                } else {
                    self.add_tracks(offers_camera).await?;
                }
                let answer = self.pc.create_answer(None).await?;
                self.trickle.hold();
                self.pc.set_local_description(answer).await?;
                let sdp = self.local_sdp().await?;
                self.send_signal(PeerSignal::Answer { sdp });
                self.release_candidates();
                if ice_restart {
                    self.resend_local_candidates().await;
                }
                self.learn_payload_types().await;
                if self.role == PeerRole::Mesh
                    && self.wants_video.load(Ordering::Relaxed)
                    && !self.video_attached()
                {
                    // We send video but the offer had no camera line: ask for one (once
                    // the budget is spent, a client that re-offers without one is not
                    // asked again).
                    self.renegotiations.spend(Instant::now())?;
                    self.send_signal(PeerSignal::RenegotiationWanted);
                }
            }
            PeerSignal::Answer { sdp } => {
                if self.pc.pending_local_description().await.is_none() {
                    // No offer of ours is waiting: an answer to one we replaced (an ICE
                    // restart offered again), arriving late. Nothing to apply it to.
                    return Ok(());
                }
                let lines = video_lines(&sdp);
                let answer = RTCSessionDescription::answer(sdp)
                    .map_err(|e| PeerError::MalformedDescription(e.to_string()))?;
                self.pc.set_remote_description(answer).await?;
                self.remember_remote_video_lines(lines);
                self.add_waiting_candidates().await;
                self.learn_payload_types().await;
                if self.renegotiate_after_answer.swap(false, Ordering::Relaxed) {
                    Box::pin(self.renegotiate()).await?;
                }
            }
            PeerSignal::LayersWanted { layers } => {
                if self.simulcast.is_some() {
                    for (wanted, layer) in self
                        .context
                        .smaller_layers_wanted
                        .iter()
                        .zip([SimulcastLayer::Medium, SimulcastLayer::Low])
                    {
                        wanted.store(layers.contains(&layer), Ordering::Relaxed);
                    }
                }
            }
            PeerSignal::RenegotiationWanted => {
                // Once our camera is on the connection, the offer that carried it (sent or
                // still out) also carries the answerer's camera line: nothing more to do.
                if self.offerer && self.attach_video().await? {
                    self.renegotiate().await?;
                }
            }
            PeerSignal::Candidate {
                candidate: Some(candidate),
                sdp_mid,
                sdp_mline_index,
                username_fragment,
            } => {
                if !self.multicast_dns && is_mdns_candidate(&candidate) {
                    tracing::debug!("mDNS is off; skipping {candidate}");
                    return Ok(());
                }
                let init = rtc::peer_connection::transport::RTCIceCandidateInit {
                    candidate,
                    sdp_mid,
                    sdp_mline_index,
                    username_fragment,
                    ..Default::default()
                };
                match self.pc.remote_description().await {
                    None => self.remote_candidates.lock().await.push(init),
                    Some(remote) => {
                        // A candidate of an earlier ICE generation (before a restart) is stale.
                        if init.username_fragment.as_deref().is_some_and(|ufrag| {
                            ice_ufrag(&remote.sdp).is_some_and(|current| current != ufrag)
                        }) {
                            return Ok(());
                        }
                        self.pc.add_ice_candidate(init).await?;
                    }
                }
            }
            PeerSignal::Candidate {
                candidate: None, ..
            } => {}
            PeerSignal::VideoWanted {
                paused,
                max_bitrate_bps,
            } => {
                self.wanted_paused.store(paused, Ordering::Relaxed);
                self.wanted_max_bitrate
                    .store(max_bitrate_bps, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// Adds the remote candidates that arrived before the remote description.
    async fn add_waiting_candidates(&self) {
        let waiting = std::mem::take(&mut *self.remote_candidates.lock().await);
        for init in waiting {
            if let Err(err) = self.pc.add_ice_candidate(init).await {
                tracing::debug!("remote candidate refused: {err}");
            }
        }
    }

    async fn learn_payload_types(&self) {
        let senders = self.senders.lock().await.clone();
        let Some([audio, screen]) = senders else {
            return;
        };
        let video = self.video_sender.lock().await.clone();
        let pt = |params: Result<rtc::rtp_transceiver::rtp_sender::RTCRtpSendParameters, _>| {
            params
                .ok()
                .and_then(|p| p.rtp_parameters.codecs.first().map(|c| c.payload_type))
        };
        let video_pt = match video {
            Some(video) => pt(video.get_parameters().await),
            None => None,
        }
        .unwrap_or(H264_PAYLOAD_TYPE);
        let audio_pt = pt(audio.get_parameters().await).unwrap_or(OPUS_PAYLOAD_TYPE);
        let screen_pt = pt(screen.get_parameters().await).unwrap_or(H264_PAYLOAD_TYPE);
        *self.payload_types.lock().await = Some([video_pt, audio_pt, screen_pt]);
    }

    /// Writes one encoded video frame (no-op until negotiated).
    pub async fn write_video(&self, frame: &EncodedFrame, duration: Duration) -> bool {
        if !self.connected.load(Ordering::Relaxed) || self.wanted_paused.load(Ordering::Relaxed) {
            return false;
        }
        if self.simulcast.is_some() {
            return self
                .write_video_layer(SimulcastLayer::High, frame, duration)
                .await;
        }
        let Some([pt, _, _]) = *self.payload_types.lock().await else {
            return false;
        };
        if !self.has_video_track().await {
            return false;
        }
        let track = (self.video.as_ref(), self.video_ssrc, pt);
        write_frame(
            track,
            frame,
            duration,
            Some(&self.video_frames_written),
            vec![],
        )
        .await
    }

    /// Whether our camera goes out in simulcast layers here (a publishing connection to the
    /// SFU): the camera's whole picture is [`Peer::write_video`], the smaller layers
    /// [`Peer::write_video_layer`].
    pub fn sends_simulcast(&self) -> bool {
        self.simulcast.is_some()
    }

    /// Writes one encoded frame of a simulcast layer of our camera (no-op on a connection
    /// without simulcast, or until negotiated). Frames of the whole picture are counted.
    pub async fn write_video_layer(
        &self,
        layer: SimulcastLayer,
        frame: &EncodedFrame,
        duration: Duration,
    ) -> bool {
        let Some(simulcast) = &self.simulcast else {
            return false;
        };
        if !self.connected.load(Ordering::Relaxed) || !self.has_video_track().await {
            return false;
        }
        let Some([pt, _, _]) = *self.payload_types.lock().await else {
            return false;
        };
        let Some(mid) = simulcast
            .mid
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        else {
            return false;
        };
        let track = (self.video.as_ref(), simulcast.ssrc(layer), pt);
        let extensions = simulcast_extensions(&mid, layer);
        let counter = (layer == SimulcastLayer::High).then_some(&self.video_frames_written);
        write_frame(track, frame, duration, counter, extensions).await
    }

    /// Writes one encoded frame of our screen share (no-op until negotiated).
    pub async fn write_screen(&self, frame: &EncodedFrame, duration: Duration) -> bool {
        if !self.connected.load(Ordering::Relaxed) {
            return false;
        }
        let Some([_, _, pt]) = *self.payload_types.lock().await else {
            return false;
        };
        let track = (self.screen.as_ref(), self.screen_ssrc, pt);
        write_frame(
            track,
            frame,
            duration,
            Some(&self.screen_frames_written),
            vec![],
        )
        .await
    }

    /// Screen-share frames written to this peer so far.
    pub fn screen_frames_written(&self) -> u64 {
        self.screen_frames_written.load(Ordering::Relaxed)
    }

    /// The receiver's wishes for our video: (paused, bitrate cap in bps, 0 = none).
    pub fn video_wanted(&self) -> (bool, u32) {
        (
            self.wanted_paused.load(Ordering::Relaxed),
            self.wanted_max_bitrate.load(Ordering::Relaxed),
        )
    }

    /// Video frames written to this peer so far.
    pub fn video_frames_written(&self) -> u64 {
        self.video_frames_written.load(Ordering::Relaxed)
    }

    /// Writes one encoded 20 ms audio frame with its level (no-op until negotiated).
    pub async fn write_audio(&self, packet: &[u8], level: crate::speech::AudioLevel) -> bool {
        if !self.connected.load(Ordering::Relaxed) {
            return false;
        }
        let Some([_, pt, _]) = *self.payload_types.lock().await else {
            return false;
        };
        let sample = Sample {
            data: Bytes::copy_from_slice(packet),
            duration: Duration::from_millis(20),
            ..Sample::new(Instant::now())
        };
        self.audio
            .sample_writer(self.audio_ssrc, pt)
            .with_audio_level(AudioLevelExtension {
                level: level.level,
                voice: level.voice,
            })
            .write_sample(&sample)
            .await
            .is_ok()
    }

    /// Totals for link quality: round-trip time in ms, RTP packets received and lost,
    /// congestion control's target bitrate for our video in bits per second, and the
    /// candidate pair carrying the media.
    pub async fn link_totals(&self) -> LinkTotals {
        let report = self
            .pc
            .get_stats(Instant::now(), webrtc::peer_connection::StatsSelector::None)
            .await;
        let rtt = report
            .candidate_pairs()
            .map(|pair| pair.current_round_trip_time)
            .filter(|rtt| *rtt > 0.0)
            .fold(None, |best: Option<f64>, rtt| {
                Some(best.map_or(rtt, |b| b.min(rtt)))
            })
            .map(|seconds| seconds * 1000.0);
        let (mut received, mut lost) = (0u64, 0u64);
        for stream in report.inbound_rtp_streams() {
            received += stream.received_rtp_stream_stats.packets_received;
            lost += stream.received_rtp_stream_stats.packets_lost.max(0) as u64;
        }
        let target = report
            .outbound_rtp_streams()
            .map(|stream| stream.target_bitrate)
            .filter(|bps| *bps > 0.0)
            .fold(None, |best: Option<f64>, bps| {
                Some(best.map_or(bps, |b| b.max(bps)))
            });
        LinkTotals {
            rtt_ms: rtt,
            packets_received: received,
            packets_lost: lost,
            target_bitrate_bps: target,
            path: crate::ice::selected_path(&report),
        }
    }

    /// Closes the connection (ends its tasks and sockets).
    pub async fn close(&self) {
        let _ = self.pc.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::TestPattern;
    use crate::video::{EncoderSettings, H264Encoder, I420Frame};
    use rtc::rtp::codec::h264::H264Payloader;
    use rtc::rtp::packetizer::{Packetizer, new_packetizer};
    use rtc::rtp::sequence::new_random_sequencer;

    /// `frames` encoded frames of the pattern, cut into RTP packets (keyframe every 10).
    fn packetized(frames: u32) -> Vec<Vec<rtc::rtp::packet::Packet>> {
        let pattern = TestPattern::new(320, 180, "rtp");
        let mut encoder = H264Encoder::new(EncoderSettings {
            width: 320,
            height: 180,
            fps: 30.0,
            bitrate_bps: 300_000,
            keyframe_interval: 10,
        })
        .expect("encoder");
        let mut packetizer = new_packetizer(
            Instant::now(),
            300, // small MTU: several packets per frame
            102,
            7,
            Box::new(H264Payloader::default()),
            Box::new(new_random_sequencer()),
            90_000,
        );
        let mut rgba = Vec::new();
        (1..=frames)
            .filter_map(|frame| {
                pattern.render_rgba(
                    FrameStamp {
                        frame,
                        capture_ms: 0,
                    },
                    &mut rgba,
                );
                let i420 = I420Frame::from_rgba(&rgba, 320, 180).expect("i420");
                let encoded = encoder.encode(&i420).expect("encode")?;
                Some(
                    packetizer
                        .packetize(Instant::now(), &Bytes::from(encoded.data), 3000)
                        .expect("packetize"),
                )
            })
            .collect()
    }

    fn frame_numbers(
        receiver: &mut VideoReceiver,
        packets: impl IntoIterator<Item = rtc::rtp::packet::Packet>,
    ) -> Vec<u32> {
        packets
            .into_iter()
            .flat_map(|p| receiver.push(Instant::now(), p))
            .filter_map(|f| f.stamp.map(|s| s.frame))
            .collect()
    }

    /// In order: every frame comes out once, right when its last packet arrives (the very
    /// first frame when the next one starts, since nothing tells where the stream began).
    #[test]
    fn reassembles_every_frame_in_order() {
        let stream = packetized(20);
        let count = stream.len();
        let mut receiver = VideoReceiver::new(true).expect("receiver");
        let mut numbers = Vec::new();
        for (i, frame) in stream.into_iter().enumerate() {
            let before = numbers.len();
            numbers.extend(frame_numbers(&mut receiver, frame));
            let expected = if i == 0 {
                0
            } else if i == 1 {
                2
            } else {
                1
            };
            assert_eq!(
                numbers.len(),
                before + expected,
                "frame {i} released at its own last packet"
            );
        }
        assert_eq!(numbers.len(), count);
        assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "{numbers:?}");
    }

    /// Packets reordered within a frame (as after a NACK retransmission) still reassemble.
    #[test]
    fn reordered_packets_reassemble() {
        let stream = packetized(6);
        let mut receiver = VideoReceiver::new(true).expect("receiver");
        let mut numbers = Vec::new();
        for mut frame in stream {
            frame.reverse();
            numbers.extend(frame_numbers(&mut receiver, frame));
        }
        assert_eq!(numbers, (1..=6).collect::<Vec<_>>());
    }

    /// A packet lost for good: the broken frame and the frames that depend on it are skipped
    /// (no corrupted picture), a keyframe is wanted, and decoding resumes at the next keyframe.
    #[test]
    fn loss_skips_to_the_next_keyframe() {
        let stream = packetized(25);
        let mut receiver = VideoReceiver::new(true).expect("receiver");
        let mut numbers = Vec::new();
        let mut wanted_keyframe = false;
        for (i, mut frame) in stream.into_iter().enumerate() {
            if i == 3 && frame.len() > 1 {
                frame.remove(0);
            }
            std::thread::sleep(Duration::from_millis(if i == 4 { 150 } else { 0 }));
            numbers.extend(frame_numbers(&mut receiver, frame));
            wanted_keyframe |= receiver.needs_keyframe();
        }
        assert!(wanted_keyframe);
        assert!(
            !numbers.contains(&4),
            "the broken frame is not shown: {numbers:?}"
        );
        assert!(
            numbers.contains(&11) && numbers.contains(&25),
            "resumes at the next keyframe: {numbers:?}"
        );
        assert!(numbers.windows(2).all(|w| w[1] > w[0]));
    }

    /// A browser's offer: audio first, then one sendrecv video line with a random stream id.
    const BROWSER_OFFER: &str = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n\
        a=msid:3f1c5e b1e2\r\nm=video 9 UDP/TLS/RTP/SAVPF 102\r\na=mid:1\r\n\
        a=msid:3f1c5e cam-7\r\nm=video 9 UDP/TLS/RTP/SAVPF 102\r\na=mid:2\r\n\
        a=msid:9a9a scr-8\r\n";

    /// The video lines of an SDP are read in order with their msid stream and track ids, and
    /// a line without msid (a browser's recvonly line) has none.
    #[test]
    fn video_lines_are_read_in_order_with_their_msid() {
        let lines = video_lines(BROWSER_OFFER);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].track_id.as_deref(), Some("cam-7"));
        assert_eq!(lines[1].stream_id.as_deref(), Some("9a9a"));
        let recvonly = "m=audio 9 X 111\r\nm=video 9 X 102\r\na=recvonly\r\n";
        assert_eq!(video_lines(recvonly), vec![VideoLine::default()]);
    }

    /// Any video line but Huddle's screen share is a camera line: a browser's single or
    /// recvonly line is one, Huddle's audio-only offer (screen line only) has none, and its
    /// switch-to-video offer (screen then camera) has one.
    #[test]
    fn a_camera_line_is_any_video_line_but_the_huddle_screen() {
        assert!(offers_camera_line(&video_lines(BROWSER_OFFER)));
        assert!(offers_camera_line(&video_lines(
            "m=audio 9 X 111\r\nm=video 9 X 102\r\na=recvonly\r\n"
        )));
        let audio_only = "m=audio 9 X 111\r\na=msid:huddle-audio a\r\n\
            m=video 9 X 102\r\na=msid:huddle-screen s\r\n";
        assert!(!offers_camera_line(&video_lines(audio_only)));
        let switched = format!("{audio_only}m=video 9 X 102\r\na=msid:huddle-video v\r\n");
        assert!(offers_camera_line(&video_lines(&switched)));
        assert!(!offers_camera_line(&video_lines("m=audio 9 X 111\r\n")));
    }

    /// Huddle's stream ids say camera or screen wherever the line is; a foreign client's
    /// first video line is its camera and its second the screen share; a track not found in
    /// the description is taken for a camera.
    #[test]
    fn a_foreign_clients_second_video_line_is_its_screen() {
        use VideoTrackKind::{Camera, Screen};
        let browser = video_lines(BROWSER_OFFER);
        assert_eq!(video_track_kind("3f1c5e", "cam-7", &browser), Camera);
        assert_eq!(video_track_kind("9a9a", "scr-8", &browser), Screen);
        assert_eq!(video_track_kind("huddle-screen", "x", &[]), Screen);
        assert_eq!(video_track_kind("huddle-video", "scr-8", &browser), Camera);
        assert_eq!(video_track_kind("other", "unknown", &browser), Camera);
    }

    /// The renegotiation budget takes MAX_RENEGOTIATIONS within the window, refuses the
    /// next with the typed error, and takes more once the window has passed.
    #[test]
    fn renegotiations_beyond_the_cap_are_refused_until_the_window_passes() {
        let budget = RenegotiationBudget::default();
        let start = Instant::now();
        for i in 0..MAX_RENEGOTIATIONS {
            budget
                .spend(start + Duration::from_millis(i as u64))
                .expect("within the cap");
        }
        let refused = budget.spend(start + Duration::from_secs(1));
        assert!(
            matches!(
                refused,
                Err(PeerError::RenegotiationLimit {
                    limit: MAX_RENEGOTIATIONS,
                    ..
                })
            ),
            "{refused:?}"
        );
        budget
            .spend(start + RENEGOTIATION_WINDOW + Duration::from_millis(1))
            .expect("the first ones left the window");
    }
}
