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
//!
//! GCC alone is slow to see a full link (under a 250 kbit/s cap it stayed near its 2.5
//! Mbit/s start for 3-4 s, and took 3.5 s more to come down): [`FullLinkBound`] bounds it
//! by what the link carries as soon as a queue stands on it.
//!
//! Retransmissions are metered by the pacer but not rationed: the receiver asks for a missing
//! packet every 20 ms, so on a link whose round trip has grown to a few hundred milliseconds
//! each lost packet was sent again up to ten times, and the copies kept the capped link full
//! (seen as a stream of "duplicated" SRTP packets and no decoded video after the first
//! seconds). [`NackResendGuard`] sends a packet again at most once per round trip, as
//! libwebrtc's packet history does, with the round trip [`FullLinkBound`] measures.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rtc::interceptor::{
    Attribute, BandwidthEstimator, Interceptor, PacerBuilder, PacerInterceptor, StreamInfo,
    TaggedPacket,
};
use rtc::sansio::Protocol;

/// Congestion control as rtc's `configure_congestion_control` sets it up for TWCC (the
/// `transport-cc` feedback and the transport-wide sequence number extension on audio and
/// video, the TWCC sender), with rtc's GCC between `initial_bps`, `min_bps` and `max_bps`
/// under a [`FullLinkBound`], and a [`FactorPacer`]. The TWCC receiver, for
/// what we receive, comes with rtc's `register_default_interceptors`.
pub fn configure(
    registry: rtc::interceptor::Registry,
    (initial_bps, min_bps, max_bps): (f64, f64, f64),
    media: &mut rtc::peer_connection::configuration::media_engine::MediaEngine,
) -> rtc::shared::error::Result<(rtc::interceptor::Registry, RoundTrip)> {
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
    let round_trip = RoundTrip(Arc::new(AtomicU64::new(
        DEFAULT_ROUND_TRIP.as_micros() as u64
    )));
    let estimator = FullLinkBound::new((initial_bps, min_bps, max_bps), round_trip.clone());
    let registry = registry
        .with(
            Slot::CongestionControl,
            CongestionControlBuilder::new(estimator).build(),
        )
        .with(
            Slot::Pacer,
            FactorPacer {
                pacer: PacerBuilder::new().build(),
            },
        )
        .with(Slot::TwccSender, TwccSenderBuilder::new().build());
    Ok((registry, round_trip))
}

/// The round trip congestion control measures, for a [`NackResendGuard`].
#[derive(Clone, Debug)]
pub struct RoundTrip(Arc<AtomicU64>);

/// How much faster than congestion control's target the pacer may release packets
/// (libwebrtc's pace multiplier): the encoders keep to the target on average, the pacer only
/// smooths their bursts.
pub const PACING_FACTOR: f64 = 2.5;

/// rtc's pacer ([`PacerInterceptor`]) at [`PACING_FACTOR`] × the target: it takes each new
/// target from the feedback passing by as rtc's does, then sets its leaky bucket's rate.
pub struct FactorPacer {
    pacer: PacerInterceptor,
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

/// rtc's GCC, bounded by what the link is seen to carry once it is full, as libwebrtc's
/// estimators do with the acknowledged bitrate: while the packets reported over the last
/// [`ACKED_WINDOW`] waited in a queue (their median one-way delay above the least seen over
/// the last [`BASE_DELAY_SPAN`]s) for more than [`STANDING_QUEUE`], GCC restarts at
/// [`ACKED_SHARE`] of the rate at which they arrived, when it is above that. Under a 250
/// kbit/s cap, GCC's delay half never saw the queue (its estimate kept rising for 3 s) and
/// its loss half, once the queue overflowed, took 200 ms steps of a few per cent, 3.5 s from
/// 3 Mbit/s to the cap, while the link delivered 250 kbit/s the whole time. Random loss
/// (a radio link) builds no queue and leaves GCC alone. A restarted GCC starts its delay and
/// loss halves afresh from the bound and climbs from there.
///
/// It also measures the round trip (from each batch of feedback, the time since its newest
/// packet left), for the [`NackResendGuard`].
pub struct FullLinkBound {
    gcc: rtc::interceptor::Gcc,
    bounds: (f64, f64),
    /// Where the round trip is kept, in microseconds.
    round_trip: Arc<AtomicU64>,
    /// The packets that arrived among those reported over the last [`ACKED_WINDOW`]: when
    /// the feedback came, their arrival on the remote's clock, their size, and their one-way
    /// delay in seconds (the remote's clock minus ours, so only its changes mean anything).
    recent: std::collections::VecDeque<(Instant, Duration, usize, f64)>,
    /// The least one-way delay in the current and the previous [`BASE_DELAY_SPAN`], and when
    /// the current one began.
    base_delay: (f64, f64, Option<Instant>),
    /// Our clock's zero for one-way delays.
    epoch: Instant,
    bounded: u64,
}

/// How much longer than the least one-way delay recently seen the packets of the last
/// [`ACKED_WINDOW`] took (their median) for the link to count as full.
pub const STANDING_QUEUE: Duration = Duration::from_millis(100);

/// How long the least one-way delay is kept (a span and the one before it): long enough to
/// see an empty queue, short enough for the clocks' drift not to matter.
pub const BASE_DELAY_SPAN: Duration = Duration::from_secs(10);

/// How far back [`FullLinkBound`] looks for the queue and the rate the link carries.
pub const ACKED_WINDOW: Duration = Duration::from_millis(500);

/// The share of the arriving rate the target is bounded to on a full link (libwebrtc's
/// delay-based estimator backs off to 0.85 × the acknowledged rate on overuse).
pub const ACKED_SHARE: f64 = 0.85;

impl FullLinkBound {
    /// GCC between these bounds (`initial`, `min`, `max`), keeping the round trip in
    /// `round_trip`.
    pub fn new((initial, min, max): (f64, f64, f64), round_trip: RoundTrip) -> Self {
        Self {
            gcc: rtc::interceptor::Gcc::new(initial, min, max),
            bounds: (min, max),
            round_trip: round_trip.0,
            recent: std::collections::VecDeque::new(),
            base_delay: (f64::INFINITY, f64::INFINITY, None),
            epoch: Instant::now(),
            bounded: 0,
        }
    }

    /// How many times the target was bounded by what a full link carried.
    pub fn bounded(&self) -> u64 {
        self.bounded
    }

    /// Notes the packets of `reports` that arrived, and returns how long the median of the
    /// recent ones waited above the least delay seen and the rate at which they came in (bits
    /// per second), once they span enough time to tell.
    fn queue_and_rate(
        &mut self,
        now: Instant,
        reports: &[rtc::interceptor::PacketReport],
    ) -> Option<(Duration, f64)> {
        let (current, previous, since) = &mut self.base_delay;
        if since.is_none_or(|since| now.saturating_duration_since(since) > BASE_DELAY_SPAN) {
            (*previous, *current, *since) = (*current, f64::INFINITY, Some(now));
        }
        for report in reports {
            if let (true, Some(arrival)) = (report.arrived, report.arrival) {
                let sent = report.departure.saturating_duration_since(self.epoch);
                let delay = arrival.as_secs_f64() - sent.as_secs_f64();
                *current = current.min(delay);
                self.recent.push_back((now, arrival, report.size, delay));
            }
        }
        while self
            .recent
            .front()
            .is_some_and(|(at, ..)| now.saturating_duration_since(*at) > ACKED_WINDOW)
        {
            self.recent.pop_front();
        }
        let base = current.min(*previous);
        let first = self.recent.iter().map(|(_, at, ..)| *at).min()?;
        let last = self.recent.iter().map(|(_, at, ..)| *at).max()?;
        let span = last.saturating_sub(first);
        if span < ACKED_WINDOW / 2 || self.recent.len() < 10 || !base.is_finite() {
            return None;
        }
        let mut delays: Vec<f64> = self.recent.iter().map(|(.., delay)| *delay).collect();
        delays.sort_by(f64::total_cmp);
        let queued = Duration::from_secs_f64((delays[delays.len() / 2] - base).max(0.0));
        let bits: usize = self.recent.iter().map(|(_, _, size, _)| size * 8).sum();
        Some((queued, bits as f64 / span.as_secs_f64()))
    }
}

impl BandwidthEstimator for FullLinkBound {
    fn on_reports(&mut self, now: Instant, reports: &[rtc::interceptor::PacketReport]) {
        self.gcc.on_reports(now, reports);
        let newest = reports
            .iter()
            .filter(|report| report.arrived)
            .map(|report| report.departure)
            .max();
        if let Some(newest) = newest {
            let sample = now.saturating_duration_since(newest).as_micros() as u64;
            let average = self.round_trip.load(Ordering::Relaxed);
            self.round_trip
                .store((average * 7 + sample) / 8, Ordering::Relaxed);
        }
        if let Some((queued, arriving_bps)) = self.queue_and_rate(now, reports)
            && queued > STANDING_QUEUE
        {
            let (min, max) = self.bounds;
            let bound = (arriving_bps * ACKED_SHARE).clamp(min, max);
            if self.gcc.target_bitrate() > bound {
                self.gcc = rtc::interceptor::Gcc::new(bound, min, max);
                self.bounded += 1;
                tracing::debug!(
                    ?queued,
                    arriving_bps = arriving_bps as u64,
                    "full link: bounded to what it carries"
                );
            }
        }
    }

    fn target_bitrate(&self) -> f64 {
        self.gcc.target_bitrate()
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.gcc.handle_timeout(now);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.gcc.poll_timeout()
    }

    fn stats(&self) -> rtc::interceptor::EstimatorStats {
        self.gcc.stats()
    }
}

/// The round trip assumed until feedback measures one.
const DEFAULT_ROUND_TRIP: Duration = Duration::from_millis(100);

/// The shortest wait between two retransmissions of one packet, however short the round trip
/// (a LAN's is under a millisecond): one NACK interval and a little.
const MIN_RESEND_GAP: Duration = Duration::from_millis(30);

/// Retransmissions remembered before the oldest are forgotten.
const RESENDS_REMEMBERED: usize = 4_096;

/// rtc's NACK responder behind a filter: a packet asked for again within a round trip of its
/// last retransmission (at least [`MIN_RESEND_GAP`]) is not sent again, since the copy is
/// still on its way. What is passed on, and what the application reads, is unchanged.
pub struct NackResendGuard {
    responder: rtc::interceptor::NackResponderInterceptor,
    round_trip: Arc<AtomicU64>,
    /// When each (SSRC, sequence number) was last sent again.
    resent: std::collections::HashMap<(u32, u16), Instant>,
    read_queue: std::collections::VecDeque<TaggedPacket>,
    refused: u64,
}

impl NackResendGuard {
    /// The guard over a default responder, with the round trip of [`configure`]'s
    /// congestion control (it goes in [`rtc::interceptor::Slot::NackResponder`], after
    /// rtc's default interceptors, which put a bare responder there).
    pub fn new(round_trip: RoundTrip) -> Self {
        Self {
            responder: rtc::interceptor::NackResponderBuilder::new().build(),
            round_trip: round_trip.0,
            resent: std::collections::HashMap::new(),
            read_queue: std::collections::VecDeque::new(),
            refused: 0,
        }
    }

    /// Retransmissions asked for and not made (a copy was still on its way).
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// The NACKs of `packets` with the sequence numbers sent again too recently left out
    /// (and those kept marked as sent now); `None` when nothing is left to send.
    fn ration(
        &mut self,
        now: Instant,
        packets: &[Box<dyn rtc::rtcp::Packet>],
    ) -> Option<Vec<Box<dyn rtc::rtcp::Packet>>> {
        use rtc::rtcp::transport_feedbacks::transport_layer_nack::{
            TransportLayerNack, nack_pairs_from_sequence_numbers,
        };
        let gap =
            Duration::from_micros(self.round_trip.load(Ordering::Relaxed)).max(MIN_RESEND_GAP);
        if self.resent.len() > RESENDS_REMEMBERED {
            self.resent.retain(|_, at| {
                now.saturating_duration_since(*at) < gap.max(Duration::from_secs(1))
            });
        }
        let mut rationed: Vec<Box<dyn rtc::rtcp::Packet>> = Vec::new();
        for packet in packets {
            let Some(nack) = packet.as_any().downcast_ref::<TransportLayerNack>() else {
                continue;
            };
            let mut wanted = Vec::new();
            for pair in &nack.nacks {
                for sequence in pair.packet_list() {
                    let key = (nack.media_ssrc, sequence);
                    match self.resent.get(&key) {
                        Some(at) if now.saturating_duration_since(*at) < gap => self.refused += 1,
                        _ => {
                            self.resent.insert(key, now);
                            wanted.push(sequence);
                        }
                    }
                }
            }
            if !wanted.is_empty() {
                rationed.push(Box::new(TransportLayerNack {
                    sender_ssrc: nack.sender_ssrc,
                    media_ssrc: nack.media_ssrc,
                    nacks: nack_pairs_from_sequence_numbers(&wanted),
                }));
            }
        }
        (!rationed.is_empty()).then_some(rationed)
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for NackResendGuard {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        if let rtc::interceptor::Packet::Rtcp(packets) = &msg.message.packet
            && let Some(rationed) = self.ration(msg.now, packets)
        {
            self.responder.handle_read(TaggedPacket {
                now: msg.now,
                transport: msg.transport,
                message: rtc::interceptor::AttributedPacket {
                    attributes: Vec::new(),
                    packet: rtc::interceptor::Packet::Rtcp(rationed),
                },
            })?;
            // The responder passes on what it was given: the rationed copy is dropped here,
            // and the packet as it came goes on.
            while self.responder.poll_read().is_some() {}
        }
        self.read_queue.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read_queue.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.responder.handle_write(msg)
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.responder.poll_write()
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), Self::Error> {
        self.responder.handle_timeout(now)
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        self.responder.poll_timeout()
    }
}

impl Interceptor for NackResendGuard {
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        self.responder.bind_local_stream(info);
    }
    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.responder.unbind_local_stream(info);
    }
    fn bind_remote_stream(&mut self, info: &StreamInfo) {
        self.responder.bind_remote_stream(info);
    }
    fn unbind_remote_stream(&mut self, info: &StreamInfo) {
        self.responder.unbind_remote_stream(info);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::interceptor::PacketReport;

    /// A packet asked for again within a round trip of its retransmission is left out of
    /// what reaches the responder; after the round trip it is sent again, and packets never
    /// sent again always pass.
    #[test]
    fn a_packet_is_sent_again_at_most_once_per_round_trip() {
        use rtc::rtcp::transport_feedbacks::transport_layer_nack::{
            TransportLayerNack, nack_pairs_from_sequence_numbers,
        };
        let mut guard = NackResendGuard::new(RoundTrip(Arc::new(AtomicU64::new(200_000))));
        let nack = |sequences: &[u16]| -> Vec<Box<dyn rtc::rtcp::Packet>> {
            vec![Box::new(TransportLayerNack {
                sender_ssrc: 1,
                media_ssrc: 7,
                nacks: nack_pairs_from_sequence_numbers(sequences),
            })]
        };
        let asked = |rationed: Option<Vec<Box<dyn rtc::rtcp::Packet>>>| -> Vec<u16> {
            rationed
                .unwrap_or_default()
                .iter()
                .filter_map(|p| p.as_any().downcast_ref::<TransportLayerNack>())
                .flat_map(|n| n.nacks.iter().flat_map(|pair| pair.packet_list()))
                .collect()
        };
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        assert_eq!(
            asked(guard.ration(at(0), &nack(&[10, 11, 12]))),
            vec![10, 11, 12]
        );
        // 20 ms later the receiver asks again, and for one more.
        assert_eq!(
            asked(guard.ration(at(20), &nack(&[10, 11, 12, 13]))),
            vec![13]
        );
        assert_eq!(guard.refused(), 3);
        assert!(guard.ration(at(150), &nack(&[10, 11, 12])).is_none());
        // A round trip later, a lost copy is sent again.
        assert_eq!(asked(guard.ration(at(210), &nack(&[10, 13]))), vec![10]);
        assert_eq!(asked(guard.ration(at(230), &nack(&[13]))), vec![13]);
    }

    /// Feeds `bound` 100 ms batches of feedback for `seconds` of packets sent every 10 ms
    /// (1200 bytes: 960 kbit/s), the `n`th arriving `arrival(n)` ms after the start on the
    /// remote's clock (`None`: lost).
    fn feed(bound: &mut FullLinkBound, seconds: u64, arrival: impl Fn(u64) -> Option<u64>) {
        let start = Instant::now();
        let packets = seconds * 100;
        for batch in 0..packets / 10 {
            let reports: Vec<PacketReport> = (batch * 10..batch * 10 + 10)
                .map(|n| report(n, start + Duration::from_millis(n * 10), arrival(n)))
                .collect();
            // The feedback comes once the last of the batch arrived (or was due).
            let heard = reports
                .iter()
                .filter_map(|r| r.arrival)
                .max()
                .map_or(Duration::from_millis(batch * 100 + 100), |at| at);
            bound.on_reports(start + heard + Duration::from_millis(5), &reports);
        }
    }

    fn bound() -> FullLinkBound {
        FullLinkBound::new(
            (2_000_000.0, 150_000.0, 6_000_000.0),
            RoundTrip(Arc::new(AtomicU64::new(100_000))),
        )
    }

    /// A link that carries half of what is sent (a packet every 20 ms) builds a queue: the
    /// target is bounded to 0.85 × the 480 kbit/s that arrive within the first second.
    #[test]
    fn a_standing_queue_bounds_the_target_to_what_arrives() {
        let mut full = bound();
        feed(&mut full, 1, |n| Some(n * 20));
        assert!(full.bounded() >= 1, "never bounded");
        let target = full.target_bitrate();
        assert!(
            (300_000.0..=450_000.0).contains(&target),
            "bounded to {target}, not about 0.85 × 480 kbit/s"
        );
    }

    /// Random loss (every tenth packet) with no queue leaves GCC alone.
    #[test]
    fn random_loss_without_a_queue_is_not_a_full_link() {
        let mut lossy = bound();
        feed(&mut lossy, 3, |n| (n % 10 != 3).then_some(n * 10 + 5));
        assert_eq!(lossy.bounded(), 0);
        assert!(
            lossy.target_bitrate() >= 1_000_000.0,
            "{}",
            lossy.target_bitrate()
        );
    }

    fn report(id: u64, departure: Instant, arrival_ms: Option<u64>) -> PacketReport {
        PacketReport {
            ssrc: 1,
            id,
            rtp_sequence_number: id as u16,
            is_twcc: true,
            twcc_sequence_number: id as u16,
            size: 1_200,
            arrived: arrival_ms.is_some(),
            departure,
            arrival: arrival_ms.map(Duration::from_millis),
            ecn: rtc::rtcp::transport_feedbacks::cc_feedback_report::Ecn::default(),
        }
    }
}
