//! WebRTC peers (webrtc 0.21, DTLS-SRTP): one [`Peer`] per remote participant, full mesh.
//!
//! - **Negotiation** without glare: the participant with the smaller uid offers. Each side
//!   waits for ICE gathering to complete and sends one SDP (candidates included) through the
//!   signaling server; trickled candidates are accepted too.
//! - **Codecs**: H.264 Constrained Baseline (42e01f, packetization-mode 1, PT 102) and Opus
//!   48 kHz (PT 111, in-band FEC). Interceptors: NACK, RTCP sender/receiver reports, and a
//!   forwarder that hands PLI/FIR to the sender so the encoder makes a keyframe.
//! - **Sending**: [`Peer::write_video`] / [`Peer::write_audio`] write encoded frames as samples
//!   (the [`crate::session`] encodes once for all peers).
//! - **Receiving**: each remote track is read by a task: video goes through a sample builder
//!   (H.264 depacketizer) and the decoder to RGBA, audio through the Opus decoder; results go
//!   out as [`PeerEvent`]s on a channel the caller drains without blocking.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::Sender;
use huddle_protocol::PeerSignal;
use rtc::interceptor::{Attribute, Interceptor, Packet, Slot, StreamInfo, TaggedPacket};
use rtc::media::Sample;
use rtc::media::io::sample_builder::SampleBuilder;
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
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters,
    RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::sansio::Protocol;
use tokio::sync::Mutex;
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCIceGatheringState,
    RTCPeerConnectionState,
};
use webrtc::rtp_transceiver::RtpSender;

use crate::audio::{FRAME_SAMPLES, OpusDecoder, detect_tone};
use crate::synthetic::{FrameStamp, read_stamp};
use crate::video::{EncodedFrame, H264Decoder};

/// H.264 payload type.
pub const H264_PAYLOAD_TYPE: u8 = 102;
/// Opus payload type.
pub const OPUS_PAYLOAD_TYPE: u8 = 111;

/// A peer failure.
#[derive(Debug, thiserror::Error)]
#[error("webrtc: {0}")]
pub struct PeerError(pub String);

impl From<webrtc::error::Error> for PeerError {
    fn from(err: webrtc::error::Error) -> Self {
        PeerError(err.to_string())
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
}

/// What peers report.
#[derive(Clone, Debug, PartialEq)]
pub enum PeerEvent {
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
    /// The connection to `uid` failed or closed.
    Disconnected {
        /// Who.
        uid: String,
        /// Why.
        reason: String,
    },
    /// A video frame from `uid`.
    Video {
        /// Whose.
        uid: String,
        /// The frame.
        frame: DecodedVideo,
    },
    /// 20 ms of audio from `uid` (decoded, or concealed).
    Audio {
        /// Whose.
        uid: String,
        /// Mono samples at 48 kHz.
        samples: Vec<i16>,
        /// Whether this frame was concealed (lost).
        concealed: bool,
    },
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
}

/// Test hook: the share of incoming video RTP packets to drop (0..=1000 per mille).
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
        sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
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
            if requests.is_empty() {
                return Ok(());
            }
            msg.message.packet = Packet::Rtcp(requests);
            msg.message.add(Attribute::DeliverToApplication);
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

/// Everything the event handler needs.
struct Handler {
    remote_uid: String,
    events: Sender<PeerEvent>,
    gathered: tokio::sync::watch::Sender<bool>,
    loss: Arc<LossInjection>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.gathered.send(true);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let uid = self.remote_uid.clone();
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
        let _ = self.events.send(event);
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let uid = self.remote_uid.clone();
        let events = self.events.clone();
        let loss = self.loss.clone();
        tokio::spawn(async move {
            let kind = track.kind().await;
            let result = if kind == RtpCodecKind::Video {
                receive_video(track, &uid, &events, &loss).await
            } else {
                receive_audio(track, &uid, &events).await
            };
            if let Err(reason) = result {
                let _ = events.send(PeerEvent::Error { uid, reason });
            }
        });
    }
}

async fn request_keyframe(track: &Arc<dyn TrackRemote>, ssrc: u32) {
    let pli = PictureLossIndication {
        sender_ssrc: 0,
        media_ssrc: ssrc,
    };
    let _ = track.write_rtcp(vec![Box::new(pli)]).await;
}

async fn receive_video(
    track: Arc<dyn TrackRemote>,
    uid: &str,
    events: &Sender<PeerEvent>,
    loss: &LossInjection,
) -> Result<(), String> {
    let ssrc = track.ssrcs().await.first().copied().unwrap_or(0);
    let mut decoder = H264Decoder::new().map_err(|e| e.to_string())?;
    let mut builder = SampleBuilder::new(512, H264Packet::default(), 90_000)
        .with_max_time_delay(Duration::from_millis(500));
    request_keyframe(&track, ssrc).await;
    let mut waiting_for_keyframe = true;
    let mut last_pli = Instant::now();
    let mut dropped = 0u64;
    while let Some(event) = track.poll().await {
        let packet = match event {
            TrackRemoteEvent::OnRtpPacket(packet) => packet,
            TrackRemoteEvent::OnEnded => break,
            _ => continue,
        };
        let drop_per_mille = loss.video_drop_per_mille.load(Ordering::Relaxed);
        if drop_per_mille > 0 {
            dropped += 1;
            // Deterministic spread: drop `drop_per_mille` of every 1000 packets.
            if (dropped * u64::from(drop_per_mille)) % 1000 < u64::from(drop_per_mille) {
                continue;
            }
        }
        let now = Instant::now();
        builder.push(now, packet);
        while let Some(sample) = builder.pop(now) {
            if sample.prev_dropped_packets > 0 {
                waiting_for_keyframe = true;
            }
            let mut rgba = Vec::new();
            match decoder.decode_rgba(&sample.data, &mut rgba) {
                Ok(Some((width, height))) => {
                    waiting_for_keyframe = false;
                    let stamp = read_stamp(&rgba, width, height);
                    let frame = DecodedVideo {
                        width,
                        height,
                        rgba,
                        stamp,
                    };
                    if events
                        .send(PeerEvent::Video {
                            uid: uid.to_owned(),
                            frame,
                        })
                        .is_err()
                    {
                        return Ok(());
                    }
                }
                Ok(None) => {}
                Err(_) => waiting_for_keyframe = true,
            }
        }
        if waiting_for_keyframe && last_pli.elapsed() > Duration::from_millis(300) {
            request_keyframe(&track, ssrc).await;
            last_pli = Instant::now();
        }
    }
    Ok(())
}

async fn receive_audio(
    track: Arc<dyn TrackRemote>,
    uid: &str,
    events: &Sender<PeerEvent>,
) -> Result<(), String> {
    let mut decoder = OpusDecoder::new().map_err(|e| e.to_string())?;
    let mut out = vec![0i16; FRAME_SAMPLES * 6];
    let mut last_seq: Option<u16> = None;
    while let Some(event) = track.poll().await {
        let packet = match event {
            TrackRemoteEvent::OnRtpPacket(packet) => packet,
            TrackRemoteEvent::OnEnded => break,
            _ => continue,
        };
        let seq = packet.header.sequence_number;
        if let Some(last) = last_seq {
            let gap = seq.wrapping_sub(last);
            // Conceal up to five lost 20 ms frames (FEC for the last one).
            if (2..=6).contains(&gap) {
                for missing in 1..gap {
                    let fec = (missing == gap - 1).then_some(packet.payload.as_ref());
                    if let Ok(n) = decoder.conceal(fec, &mut out[..FRAME_SAMPLES]) {
                        let _ = events.send(PeerEvent::Audio {
                            uid: uid.to_owned(),
                            samples: out[..n].to_vec(),
                            concealed: true,
                        });
                    }
                }
            }
        }
        last_seq = Some(seq);
        match decoder.decode(&packet.payload, &mut out) {
            Ok(n) => {
                let samples = out[..n].to_vec();
                if events
                    .send(PeerEvent::Audio {
                        uid: uid.to_owned(),
                        samples,
                        concealed: false,
                    })
                    .is_err()
                {
                    return Ok(());
                }
            }
            Err(err) => {
                let _ = events.send(PeerEvent::Error {
                    uid: uid.to_owned(),
                    reason: err.to_string(),
                });
            }
        }
    }
    Ok(())
}

/// Tone detection over the last second of a participant's decoded audio.
pub fn tone_of(samples: &[i16]) -> Option<f32> {
    detect_tone(samples)
}

/// One WebRTC connection to one remote participant.
pub struct Peer {
    remote_uid: String,
    offerer: bool,
    pc: Arc<dyn PeerConnection>,
    video: Arc<TrackLocalStaticSample>,
    audio: Arc<TrackLocalStaticSample>,
    video_ssrc: u32,
    audio_ssrc: u32,
    senders: Mutex<Option<(Arc<dyn RtpSender>, Arc<dyn RtpSender>)>>,
    payload_types: Mutex<Option<(u8, u8)>>,
    gathered: tokio::sync::watch::Receiver<bool>,
    events: Sender<PeerEvent>,
    keyframe_wanted: Arc<AtomicBool>,
    counters: Arc<MediaCounters>,
}

fn random_u32() -> u32 {
    let mut buf = [0u8; 4];
    let _ = getrandom::fill(&mut buf);
    u32::from_le_bytes(buf) | 1
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

/// How to reach and set up a peer.
#[derive(Clone, Debug)]
pub struct PeerSetup {
    /// Our uid.
    pub local_uid: String,
    /// Theirs.
    pub remote_uid: String,
    /// UDP addresses to gather candidates on (loopback in tests and the demo).
    pub udp_addrs: Vec<String>,
}

impl Peer {
    /// Builds the connection (no negotiation yet). Must run inside a tokio runtime.
    pub async fn create(
        setup: &PeerSetup,
        events: Sender<PeerEvent>,
        keyframe_wanted: Arc<AtomicBool>,
        counters: Arc<MediaCounters>,
        loss: Arc<LossInjection>,
    ) -> Result<Arc<Self>, PeerError> {
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
        let registry = register_default_interceptors(Registry::new(), &mut media)?;
        let registry = registry.with(
            Slot::from(14_000),
            KeyframeRequestForwarder {
                read_queue: VecDeque::new(),
                write_queue: VecDeque::new(),
            },
        );
        let (gathered_tx, gathered) = tokio::sync::watch::channel(false);
        let handler = Handler {
            remote_uid: setup.remote_uid.clone(),
            events: events.clone(),
            gathered: gathered_tx,
            loss,
        };
        let pc = PeerConnectionBuilder::new()
            .with_media_engine(media)
            .with_interceptor_registry(registry)
            .with_handler(Arc::new(handler))
            .with_udp_addrs(setup.udp_addrs.clone())
            .build()
            .await?;
        let (video_ssrc, audio_ssrc) = (random_u32(), random_u32());
        let peer = Arc::new(Self {
            remote_uid: setup.remote_uid.clone(),
            offerer: setup.local_uid < setup.remote_uid,
            pc: Arc::new(pc),
            video: local_track(RtpCodecKind::Video, h264_codec(), video_ssrc, "video")?,
            audio: local_track(RtpCodecKind::Audio, opus_codec(), audio_ssrc, "audio")?,
            video_ssrc,
            audio_ssrc,
            senders: Mutex::new(None),
            payload_types: Mutex::new(None),
            gathered,
            events,
            keyframe_wanted,
            counters,
        });
        Ok(peer)
    }

    /// The remote participant.
    pub fn remote_uid(&self) -> &str {
        &self.remote_uid
    }

    /// Whether we make the offer (the smaller uid does).
    pub fn is_offerer(&self) -> bool {
        self.offerer
    }

    async fn add_tracks(&self) -> Result<(), PeerError> {
        let mut senders = self.senders.lock().await;
        if senders.is_some() {
            return Ok(());
        }
        let video = self
            .pc
            .add_track(self.video.clone() as Arc<dyn TrackLocal>)
            .await?;
        let audio = self
            .pc
            .add_track(self.audio.clone() as Arc<dyn TrackLocal>)
            .await?;
        *senders = Some((video, audio));
        // Keyframe requests from the receiver reach the local video track.
        let track = self.video.clone();
        let wanted = self.keyframe_wanted.clone();
        let counters = self.counters.clone();
        tokio::spawn(async move {
            while let Some(event) = track.poll().await {
                if let TrackLocalEvent::OnRtcpPacket(_) = event {
                    wanted.store(true, Ordering::Relaxed);
                    counters.keyframe_requests.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        Ok(())
    }

    async fn wait_gathered(&self) -> Result<String, PeerError> {
        let mut gathered = self.gathered.clone();
        let _ = tokio::time::timeout(Duration::from_secs(5), gathered.wait_for(|done| *done)).await;
        let description = self
            .pc
            .local_description()
            .await
            .ok_or_else(|| PeerError("no local description".into()))?;
        Ok(description.sdp)
    }

    /// The offerer's first step: add tracks, create the offer, and send it when gathered.
    pub async fn start(&self) -> Result<(), PeerError> {
        if !self.offerer {
            return Ok(());
        }
        self.add_tracks().await?;
        let offer = self.pc.create_offer(None).await?;
        self.pc.set_local_description(offer).await?;
        let sdp = self.wait_gathered().await?;
        self.send_signal(PeerSignal::Offer { sdp });
        Ok(())
    }

    fn send_signal(&self, signal: PeerSignal) {
        let _ = self.events.send(PeerEvent::Signal {
            to: self.remote_uid.clone(),
            signal,
        });
    }

    /// Applies a signal from the remote side.
    pub async fn handle_signal(&self, signal: PeerSignal) -> Result<(), PeerError> {
        match signal {
            PeerSignal::Offer { sdp } => {
                let offer =
                    RTCSessionDescription::offer(sdp).map_err(|e| PeerError(e.to_string()))?;
                self.pc.set_remote_description(offer).await?;
                self.add_tracks().await?;
                let answer = self.pc.create_answer(None).await?;
                self.pc.set_local_description(answer).await?;
                let sdp = self.wait_gathered().await?;
                self.send_signal(PeerSignal::Answer { sdp });
                self.learn_payload_types().await;
            }
            PeerSignal::Answer { sdp } => {
                let answer =
                    RTCSessionDescription::answer(sdp).map_err(|e| PeerError(e.to_string()))?;
                self.pc.set_remote_description(answer).await?;
                self.learn_payload_types().await;
            }
            PeerSignal::Candidate {
                candidate: Some(candidate),
                sdp_mid,
                sdp_mline_index,
            } => {
                let init = rtc::peer_connection::transport::RTCIceCandidateInit {
                    candidate,
                    sdp_mid,
                    sdp_mline_index,
                    ..Default::default()
                };
                self.pc.add_ice_candidate(init).await?;
            }
            PeerSignal::Candidate {
                candidate: None, ..
            } => {}
        }
        Ok(())
    }

    async fn learn_payload_types(&self) {
        let senders = self.senders.lock().await.clone();
        let Some((video, audio)) = senders else {
            return;
        };
        let pt = |params: Result<rtc::rtp_transceiver::rtp_sender::RTCRtpSendParameters, _>| {
            params
                .ok()
                .and_then(|p| p.rtp_parameters.codecs.first().map(|c| c.payload_type))
        };
        let video_pt = pt(video.get_parameters().await).unwrap_or(H264_PAYLOAD_TYPE);
        let audio_pt = pt(audio.get_parameters().await).unwrap_or(OPUS_PAYLOAD_TYPE);
        *self.payload_types.lock().await = Some((video_pt, audio_pt));
    }

    /// Writes one encoded video frame (no-op until negotiated).
    pub async fn write_video(&self, frame: &EncodedFrame, duration: Duration) -> bool {
        let Some((pt, _)) = *self.payload_types.lock().await else {
            return false;
        };
        let sample = Sample {
            data: Bytes::copy_from_slice(&frame.data),
            duration,
            ..Sample::new(Instant::now())
        };
        self.video
            .sample_writer(self.video_ssrc, pt)
            .write_sample(&sample)
            .await
            .is_ok()
    }

    /// Writes one encoded 20 ms audio frame (no-op until negotiated).
    pub async fn write_audio(&self, packet: &[u8]) -> bool {
        let Some((_, pt)) = *self.payload_types.lock().await else {
            return false;
        };
        let sample = Sample {
            data: Bytes::copy_from_slice(packet),
            duration: Duration::from_millis(20),
            ..Sample::new(Instant::now())
        };
        self.audio
            .sample_writer(self.audio_ssrc, pt)
            .write_sample(&sample)
            .await
            .is_ok()
    }

    /// Closes the connection (ends its tasks and sockets).
    pub async fn close(&self) {
        let _ = self.pc.close().await;
    }
}
