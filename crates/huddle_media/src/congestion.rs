//! Congestion control's pieces around rtc's GCC: the pacer and the chain that holds them.
//!
//! GCC (rtc's delay- and loss-based estimator over TWCC feedback) sets the target every sender
//! follows ([`crate::peer`] reads it back from the statistics for the encoders). rtc's own
//! pacer releases packets at exactly that target, so a burst (a keyframe, the retransmissions
//! after a loss or an outage) queued behind it for as long as the burst is over the target:
//! under a 250 kbit/s cap, frames arrived 3–4 s late and were given up. [`FactorPacer`]
//! releases at [`PACING_FACTOR`] times the target, as libwebrtc's pacer does (its pace
//! multiplier): the encoders keep to the target on average, the pacer only smooths their
//! bursts. [`configure`] builds the chain with it.

use std::time::Instant;

use rtc::interceptor::{
    Attribute, BandwidthEstimator, Interceptor, PacerBuilder, PacerInterceptor, StreamInfo,
    TaggedPacket,
};
use rtc::sansio::Protocol;

/// Congestion control as rtc's `configure_congestion_control` sets it up for TWCC (the
/// `transport-cc` feedback and the transport-wide sequence number extension on audio and
/// video, the TWCC sender), with `estimator` and a [`FactorPacer`]. The TWCC receiver, for
/// what we receive, comes with rtc's `register_default_interceptors`.
pub fn configure(
    registry: rtc::interceptor::Registry,
    estimator: impl BandwidthEstimator + 'static,
    media: &mut rtc::peer_connection::configuration::media_engine::MediaEngine,
) -> rtc::shared::error::Result<rtc::interceptor::Registry> {
    use rtc::interceptor::{CongestionControlBuilder, Slot, TwccSenderBuilder};
    use rtc::rtp_transceiver::rtp_sender::{
        RTCPFeedback, RTCRtpHeaderExtensionCapability, RtpCodecKind, TYPE_RTCP_FB_TRANSPORT_CC,
    };
    for kind in [RtpCodecKind::Video, RtpCodecKind::Audio] {
        media.register_feedback(
            RTCPFeedback {
                typ: TYPE_RTCP_FB_TRANSPORT_CC.to_owned(),
                parameter: String::new(),
            },
            kind,
        );
        media.register_header_extension(
            RTCRtpHeaderExtensionCapability {
                uri: rtc::sdp::extmap::TRANSPORT_CC_URI.to_owned(),
            },
            kind,
            None,
        )?;
    }
    Ok(registry
        .with(
            Slot::CongestionControl,
            CongestionControlBuilder::new(estimator).build(),
        )
        .with(Slot::Pacer, FactorPacer::default())
        .with(Slot::TwccSender, TwccSenderBuilder::new().build()))
}

/// How much faster than congestion control's target the pacer may release packets
/// (libwebrtc's pace multiplier): the encoders keep to the target on average, the pacer only
/// smooths their bursts.
pub const PACING_FACTOR: f64 = 2.5;

/// rtc's pacer ([`PacerInterceptor`]) at [`PACING_FACTOR`] × the target: it takes each new
/// target from the feedback passing by as rtc's does, then sets its leaky bucket's rate.
pub struct FactorPacer {
    pacer: PacerInterceptor,
}

impl Default for FactorPacer {
    fn default() -> Self {
        Self {
            pacer: PacerBuilder::new().build(),
        }
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for FactorPacer {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        let target = match msg.message.get(&Attribute::TargetBitrateChanged {
            bits_per_second: 0.0,
        }) {
            Some(Attribute::TargetBitrateChanged { bits_per_second }) => Some(*bits_per_second),
            _ => None,
        };
        self.pacer.handle_read(msg)?;
        if let Some(bits_per_second) = target {
            self.pacer
                .pacer_mut()
                .set_target_bitrate(bits_per_second * PACING_FACTOR);
        }
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.pacer.poll_read()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.pacer.handle_write(msg)
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.pacer.poll_write()
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), Self::Error> {
        self.pacer.handle_timeout(now)
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        self.pacer.poll_timeout()
    }
}

impl Interceptor for FactorPacer {
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        self.pacer.bind_local_stream(info);
    }
    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.pacer.unbind_local_stream(info);
    }
    fn bind_remote_stream(&mut self, info: &StreamInfo) {
        self.pacer.bind_remote_stream(info);
    }
    fn unbind_remote_stream(&mut self, info: &StreamInfo) {
        self.pacer.unbind_remote_stream(info);
    }
}
