//! Congestion control's start: GCC (rtc's delay- and loss-based estimator over TWCC feedback)
//! behind a slow start, as libwebrtc starts its own with probes.
//!
//! GCC climbs at most 8 % a second, so it must start near what the path carries. Started at
//! the camera's full rate (2.5 Mbit/s), a call over a 250 kbit/s link sent ten times too much
//! for its first seconds: the link dropped nine packets in ten, the feedback that would have
//! told GCC so was dropped with them, and the target stayed at 2–3 Mbit/s for 4 s while the
//! pacer queued seconds of video. Started low, a fast path would take half a minute to reach
//! the camera's rate. So [`SlowStartGcc`]:
//!
//! 1. starts at [`START_BPS`] (libwebrtc's start),
//! 2. doubles its target every [`DOUBLING_INTERVAL`] in which the path delivered most of it
//!    ([`DELIVERED_TO_DOUBLE`]) with no loss and no queue building up, up to the ceiling it
//!    was given (a sender that uses less than its target, such as a still picture, stays
//!    where it is: only delivered traffic shows what the path carries),
//! 3. at the first push-back from the path (more than [`LOSS_TO_STOP`] of a batch lost,
//!    [`QUEUE_TO_STOP`] of queueing delay over the least seen, or GCC's own delay or loss half
//!    lowering its target), hands over to a GCC started below what the path delivered (as
//!    GCC backs off: 0.85 × the delivered rate, at most half the rate that drew the push-back),
//!    and at the ceiling to a GCC started there; GCC runs from then on.
//!
//! Time is an argument: the estimator is driven by feedback reports with their instants.

use std::time::{Duration, Instant};

use rtc::interceptor::{BandwidthEstimator, EstimatorStats, Gcc, PacketReport};

/// The first target (libwebrtc's start rate).
pub const START_BPS: f64 = 300_000.0;
/// How often slow start may double its target while the path takes it.
pub const DOUBLING_INTERVAL: Duration = Duration::from_millis(500);
/// Share of the target the path must have delivered over an interval to double it.
pub const DELIVERED_TO_DOUBLE: f64 = 0.7;
/// Share of a batch of feedback lost that ends slow start.
pub const LOSS_TO_STOP: f64 = 0.1;
/// Queueing delay (one-way delay over the least seen) that ends slow start.
pub const QUEUE_TO_STOP: Duration = Duration::from_millis(60);

/// Slow start's progress.
#[derive(Clone, Copy, Debug)]
struct Start {
    /// The target.
    rate: f64,
    /// The current interval: when it began, and the bytes delivered in it.
    since: Option<Instant>,
    delivered_bytes: u64,
    /// The least one-way delay seen (receiver's clock minus ours, so only differences
    /// count), in seconds; the first departure seen is our clock's zero.
    least_delay: Option<f64>,
    epoch: Option<Instant>,
}

/// GCC behind a slow start (see the module docs).
pub struct SlowStartGcc {
    gcc: Gcc,
    min: f64,
    max: f64,
    starting: Option<Start>,
    /// Slow start stops doubling here.
    ceiling: f64,
}

impl SlowStartGcc {
    /// Slow start from [`START_BPS`] up to `ceiling`; GCC then keeps the target within
    /// `min..=max`.
    pub fn new(ceiling: f64, min: f64, max: f64) -> Self {
        let start = START_BPS.clamp(min, max);
        Self {
            gcc: Gcc::new(start, min, max),
            min,
            max,
            starting: Some(Start {
                rate: start,
                since: None,
                delivered_bytes: 0,
                least_delay: None,
                epoch: None,
            }),
            ceiling: ceiling.clamp(start, max),
        }
    }

    /// Whether slow start is still on.
    pub fn starting(&self) -> bool {
        self.starting.is_some()
    }

    /// Slow start is over: GCC carries on from `rate`.
    fn hand_over(&mut self, rate: f64) {
        self.gcc = Gcc::new(rate.clamp(self.min, self.max), self.min, self.max);
        self.starting = None;
    }
}

impl Start {
    /// Takes a batch of feedback; true if the path pushed back (loss, or a queue building).
    fn take(&mut self, reports: &[PacketReport]) -> bool {
        let lost = reports.iter().filter(|report| !report.arrived).count();
        let mut queued = Duration::ZERO;
        for report in reports {
            let Some(arrival) = report.arrival else {
                continue;
            };
            self.delivered_bytes += report.size as u64;
            let epoch = *self.epoch.get_or_insert(report.departure);
            let sent = report
                .departure
                .saturating_duration_since(epoch)
                .as_secs_f64();
            let delay = arrival.as_secs_f64() - sent;
            let least = self.least_delay.map_or(delay, |least| least.min(delay));
            self.least_delay = Some(least);
            queued = queued.max(Duration::from_secs_f64((delay - least).max(0.0)));
        }
        lost as f64 > LOSS_TO_STOP * reports.len() as f64 || queued > QUEUE_TO_STOP
    }
}

impl BandwidthEstimator for SlowStartGcc {
    fn on_reports(&mut self, now: Instant, reports: &[PacketReport]) {
        if reports.is_empty() {
            return;
        }
        let (delay_before, loss_before) = (
            self.gcc.delay_based_bitrate(),
            self.gcc.loss_based_bitrate(),
        );
        self.gcc.on_reports(now, reports);
        let Some(mut start) = self.starting else {
            return;
        };
        let path_pushed_back = start.take(reports);
        let gcc_pushed_back = self.gcc.delay_based_bitrate() < delay_before
            || self.gcc.loss_based_bitrate() < loss_before;
        let Some(since) = start.since else {
            start.since = Some(now);
            self.starting = Some(start);
            return;
        };
        let elapsed = now.saturating_duration_since(since).as_secs_f64();
        let delivered = if elapsed > 0.0 {
            start.delivered_bytes as f64 * 8.0 / elapsed
        } else {
            0.0
        };
        if path_pushed_back || gcc_pushed_back {
            let below_delivered = if delivered > 0.0 {
                0.85 * delivered
            } else {
                start.rate
            };
            self.hand_over(below_delivered.min(start.rate / 2.0).max(self.min));
            return;
        }
        if elapsed >= DOUBLING_INTERVAL.as_secs_f64() {
            if delivered >= DELIVERED_TO_DOUBLE * start.rate {
                start.rate = (start.rate * 2.0).min(self.ceiling);
                if start.rate >= self.ceiling {
                    self.hand_over(self.ceiling);
                    return;
                }
            }
            start.since = Some(now);
            start.delivered_bytes = 0;
        }
        self.starting = Some(start);
    }

    fn target_bitrate(&self) -> f64 {
        match self.starting {
            Some(start) => start.rate,
            None => self.gcc.target_bitrate(),
        }
    }

    fn stats(&self) -> EstimatorStats {
        self.gcc.stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feedback for 100 ms of a sender using `bps` from `at`: 1200-byte packets evenly spaced
    /// (ids from `*next_id`), each arriving `delay_ms` after it left plus `growth_ms` more per
    /// packet (a queue building), every `lose_every`-th lost (0: none).
    fn feedback(
        next_id: &mut u64,
        (at, epoch): (Instant, Instant),
        bps: f64,
        (delay_ms, growth_ms): (f64, f64),
        lose_every: u64,
    ) -> Vec<PacketReport> {
        let count = ((bps * 0.1 / 8.0 / 1200.0).ceil() as u64).max(1);
        (0..count)
            .map(|index| {
                let id = *next_id;
                *next_id += 1;
                let departure = at + Duration::from_secs_f64(0.1 * index as f64 / count as f64);
                let sent = (departure - epoch).as_secs_f64();
                let lost = lose_every > 0 && id % lose_every == 0;
                let delay = (delay_ms + growth_ms * index as f64) / 1000.0;
                PacketReport {
                    ssrc: 1,
                    id,
                    rtp_sequence_number: id as u16,
                    is_twcc: true,
                    twcc_sequence_number: id as u16,
                    size: 1200,
                    arrived: !lost,
                    departure,
                    arrival: (!lost).then(|| Duration::from_secs_f64(sent + delay)),
                    ecn: Default::default(),
                }
            })
            .collect()
    }

    fn estimator() -> SlowStartGcc {
        SlowStartGcc::new(2_500_000.0, 150_000.0, 6_000_000.0)
    }

    /// A sender using its whole target on a clean path: the target doubles every half second
    /// from 300 kbit/s (300, 600, 1200, 2400) and GCC takes over at the ceiling, so a
    /// 2.5 Mbit/s camera is reached in two seconds instead of the half minute GCC's 8 % a
    /// second would take.
    #[test]
    fn a_clean_path_doubles_up_to_the_ceiling() {
        let epoch = Instant::now();
        let mut estimator = estimator();
        let mut next_id = 0;
        let mut seen = vec![estimator.target_bitrate()];
        for step in 0..40u32 {
            let at = epoch + Duration::from_millis(100) * step;
            let rate = estimator.target_bitrate();
            let reports = feedback(&mut next_id, (at, epoch), rate, (20.0, 0.0), 0);
            estimator.on_reports(at + Duration::from_millis(120), &reports);
            if seen.last() != Some(&estimator.target_bitrate()) {
                seen.push(estimator.target_bitrate());
            }
            if !estimator.starting() {
                break;
            }
        }
        assert_eq!(
            seen,
            [300_000.0, 600_000.0, 1_200_000.0, 2_400_000.0, 2_500_000.0]
        );
        assert!(!estimator.starting(), "GCC runs from the ceiling");
    }

    /// A sender that uses a fraction of its target (a still picture) shows nothing of what
    /// the path carries: the target stays at the start.
    #[test]
    fn a_sender_using_little_of_its_target_does_not_double() {
        let epoch = Instant::now();
        let mut estimator = estimator();
        let mut next_id = 0;
        for step in 0..30u32 {
            let at = epoch + Duration::from_millis(100) * step;
            let reports = feedback(&mut next_id, (at, epoch), 80_000.0, (20.0, 0.0), 0);
            estimator.on_reports(at + Duration::from_millis(120), &reports);
        }
        assert!(estimator.starting());
        assert_eq!(estimator.target_bitrate(), START_BPS);
    }

    /// A path that carries only 250 kbit/s (what gets through of a sender at 600) with a
    /// third of the packets lost ends slow start at once, below what was delivered, and GCC
    /// keeps backing off while the loss lasts.
    #[test]
    fn loss_ends_slow_start_below_what_was_delivered() {
        let epoch = Instant::now();
        let mut estimator = estimator();
        let mut next_id = 0;
        let mut step = 0u32;
        while estimator.target_bitrate() < 600_000.0 {
            let at = epoch + Duration::from_millis(100) * step;
            let rate = estimator.target_bitrate();
            let reports = feedback(&mut next_id, (at, epoch), rate, (20.0, 0.0), 0);
            estimator.on_reports(at + Duration::from_millis(120), &reports);
            step += 1;
        }
        let at = epoch + Duration::from_millis(100) * step;
        let reports = feedback(&mut next_id, (at, epoch), 375_000.0, (20.0, 0.0), 3);
        estimator.on_reports(at + Duration::from_millis(120), &reports);
        assert!(!estimator.starting());
        assert!(
            estimator.target_bitrate() <= 300_000.0,
            "{}",
            estimator.target_bitrate()
        );
        for more in 1..20u32 {
            let at = epoch + Duration::from_millis(100) * (step + more);
            let reports = feedback(&mut next_id, (at, epoch), 375_000.0, (20.0, 0.0), 3);
            estimator.on_reports(at + Duration::from_millis(120), &reports);
        }
        assert!(
            estimator.target_bitrate() < 250_000.0,
            "GCC keeps backing off under loss: {}",
            estimator.target_bitrate()
        );
    }

    /// A queue building up at the bottleneck (each packet 2 ms later than the one before,
    /// with no loss) ends slow start too.
    #[test]
    fn a_growing_queue_ends_slow_start() {
        let epoch = Instant::now();
        let mut estimator = estimator();
        let mut next_id = 0;
        for step in 0..40u32 {
            let at = epoch + Duration::from_millis(100) * step;
            let rate = estimator.target_bitrate();
            let queue = 20.0 + 40.0 * f64::from(step);
            let reports = feedback(&mut next_id, (at, epoch), rate, (queue, 2.0), 0);
            estimator.on_reports(at + Duration::from_millis(120), &reports);
            if !estimator.starting() {
                break;
            }
        }
        assert!(!estimator.starting(), "a growing queue must end slow start");
        assert!(
            estimator.target_bitrate() < 600_000.0,
            "{}",
            estimator.target_bitrate()
        );
    }
}
