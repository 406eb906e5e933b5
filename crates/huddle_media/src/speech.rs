//! Who is speaking, the way browsers tell it: every sent audio packet carries its level and a
//! voice flag in the RFC 6464 header extension ([`AUDIO_LEVEL_URI`]), and receivers decide
//! "speaking" from those flags alone, without decoding.
//!
//! 1. [`AudioLevel::of`] measures a 20 ms frame: its level in −dBov (0 loudest, 127 silence)
//!    and whether it holds voice (louder than [`VOICE_LEVEL`]).
//! 2. [`SpeakingDetector`] turns the flags into a speaking state with hysteresis: on once
//!    [`VOICED_TO_START`] of the frames in the last [`START_WINDOW`] had voice (so within
//!    300 ms of speech), off after [`SILENCE_TO_STOP`] without any. Time is an argument: no
//!    clock, no sleeping in tests.
//! 3. [`RecentLoudness`] keeps how loud a talker has been over about the last second (from
//!    the same levels), so the loudest of several speakers can be the dominant one.
//! 4. [`audio_level_extension_id`] finds the extension's negotiated id in an SDP.
//! 5. [`TalkPattern`] makes a synthetic voice talk in turns (`2s-on-3s-off`), so bots show
//!    real switching.
//! 6. [`LoudestVoices`] keeps a large call cheap: beyond [`VoiceDecodeLimit::decode_all_up_to`]
//!    remote voices, only the few loudest recent talkers are decoded (as Meet and Jitsi do),
//!    chosen from the same levels, so a silent participant costs no decoding.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// The RFC 6464 client-to-mixer audio level header extension.
pub const AUDIO_LEVEL_URI: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";

/// How loud a talker has been lately: the mean level of their voiced 20 ms frames, in dBov
/// (0 loudest, −127 silence), weighted over about the last second of voice; frames without
/// voice leave it as it is (pauses between words do not make a talker quieter).
#[derive(Clone, Copy, Debug, Default)]
pub struct RecentLoudness {
    dbov: Option<f32>,
}

/// The weight of one voiced frame in [`RecentLoudness`] (50 frames ≈ 1 s).
const LOUDNESS_WEIGHT: f32 = 1.0 / 50.0;

impl RecentLoudness {
    /// Takes one frame's RFC 6464 level (−dBov) and voice flag.
    pub fn frame(&mut self, level: u8, voice: bool) {
        if !voice {
            return;
        }
        let dbov = -f32::from(level.min(127));
        self.dbov = Some(match self.dbov {
            Some(mean) => mean + (dbov - mean) * LOUDNESS_WEIGHT,
            None => dbov,
        });
    }

    /// The loudness in dBov; −127 before any voice.
    pub fn dbov(&self) -> f32 {
        self.dbov.unwrap_or(-127.0)
    }
}

/// Frames at this level (−dBov) or louder count as voice: −45 dBov is well above a quiet
/// room through a laptop microphone and well below speech at a normal distance.
pub const VOICE_LEVEL: u8 = 45;

/// How far back [`SpeakingDetector`] looks to decide that speech started.
pub const START_WINDOW: Duration = Duration::from_millis(300);
/// Voiced 20 ms frames within [`START_WINDOW`] that start "speaking" (60 ms of voice: a
/// click or a cough is not enough).
pub const VOICED_TO_START: usize = 3;
/// Time without a voiced frame after which "speaking" ends.
pub const SILENCE_TO_STOP: Duration = Duration::from_secs(1);

/// One frame's loudness and voice flag, as RFC 6464 carries them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AudioLevel {
    /// Loudness in −dBov: 0 is a full-scale square wave, 127 silence.
    pub level: u8,
    /// Whether the frame holds voice.
    pub voice: bool,
}

impl AudioLevel {
    /// Silence.
    pub const SILENT: AudioLevel = AudioLevel {
        level: 127,
        voice: false,
    };

    /// The level of PCM samples (interleaved channels are fine): RMS relative to full scale.
    pub fn of(samples: &[i16]) -> Self {
        if samples.is_empty() {
            return Self::SILENT;
        }
        let energy: f64 = samples.iter().map(|s| f64::from(*s).powi(2)).sum();
        let rms = (energy / samples.len() as f64).sqrt() / f64::from(i16::MAX);
        let level = if rms <= 0.0 {
            127
        } else {
            (-20.0 * rms.log10()).round().clamp(0.0, 127.0) as u8
        };
        Self {
            level,
            voice: level <= VOICE_LEVEL,
        }
    }
}

/// Speaking, with hysteresis, from per-frame voice flags.
#[derive(Clone, Debug, Default)]
pub struct SpeakingDetector {
    /// Times of the voiced frames within [`START_WINDOW`].
    recent_voice: VecDeque<Duration>,
    last_voice: Option<Duration>,
    speaking: bool,
}

impl SpeakingDetector {
    /// Whether the talker is speaking now.
    pub fn speaking(&self) -> bool {
        self.speaking
    }

    /// A frame arrived at `now` (any monotonic time); returns the new state if it changed.
    pub fn frame(&mut self, now: Duration, voice: bool) -> Option<bool> {
        if voice {
            self.last_voice = Some(now);
            self.recent_voice.push_back(now);
        }
        self.tick(now)
    }

    /// Time passed (no frame, e.g. the sender went quiet or muted); returns the new state if
    /// it changed.
    pub fn tick(&mut self, now: Duration) -> Option<bool> {
        while self
            .recent_voice
            .front()
            .is_some_and(|at| now.saturating_sub(*at) > START_WINDOW)
        {
            self.recent_voice.pop_front();
        }
        let speaking = if self.speaking {
            self.last_voice
                .is_some_and(|at| now.saturating_sub(at) < SILENCE_TO_STOP)
        } else {
            self.recent_voice.len() >= VOICED_TO_START
        };
        (speaking != self.speaking).then(|| {
            self.speaking = speaking;
            speaking
        })
    }
}

/// The id an SDP gives the audio level extension (`a=extmap:ID[/direction] URI`).
pub fn audio_level_extension_id(sdp: &str) -> Option<u8> {
    sdp.lines().find_map(|line| {
        let rest = line.trim().strip_prefix("a=extmap:")?;
        let (id, uri) = rest.split_once(' ')?;
        let id = id.split('/').next()?;
        (uri.split_whitespace().next()? == AUDIO_LEVEL_URI)
            .then(|| id.parse().ok())
            .flatten()
    })
}

/// Talking in turns: `on` of talk, then `off` of silence, repeating, starting `offset` into
/// the cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TalkPattern {
    /// How long each turn of talk lasts.
    pub on: Duration,
    /// The silence between turns.
    pub off: Duration,
    /// Where in the cycle the talker starts.
    pub offset: Duration,
}

impl TalkPattern {
    /// Whether the talker talks `elapsed` after starting.
    pub fn talking(&self, elapsed: Duration) -> bool {
        let cycle = (self.on + self.off).as_millis().max(1);
        let at = (elapsed + self.offset).as_millis() % cycle;
        at < self.on.as_millis()
    }
}

/// A talk pattern that cannot be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("talk pattern `{0}`: expected e.g. `2s-on-3s-off` (seconds, on then off)")]
pub struct BadTalkPattern(pub String);

impl std::str::FromStr for TalkPattern {
    type Err = BadTalkPattern;

    /// `2s-on-3s-off`, `1.5s-on-4s-off`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || BadTalkPattern(text.to_owned());
        let seconds = |part: &str| -> Result<Duration, BadTalkPattern> {
            let value: f64 = part
                .strip_suffix('s')
                .ok_or_else(bad)?
                .parse()
                .map_err(|_| bad())?;
            if !(0.02..=3600.0).contains(&value) {
                return Err(bad());
            }
            Ok(Duration::from_secs_f64(value))
        };
        match text.split('-').collect::<Vec<_>>().as_slice() {
            [on, "on", off, "off"] => Ok(Self {
                on: seconds(on)?,
                off: seconds(off)?,
                offset: Duration::ZERO,
            }),
            _ => Err(bad()),
        }
    }
}

/// How many remote voices a call decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VoiceDecodeLimit {
    /// Up to this many remote voices, every one is decoded.
    pub decode_all_up_to: usize,
    /// Beyond, only this many of the loudest recent talkers are.
    pub loudest: usize,
}

impl Default for VoiceDecodeLimit {
    /// Every voice up to 20; beyond, the 3 loudest talkers (Meet's and Jitsi's choice).
    fn default() -> Self {
        Self {
            decode_all_up_to: 20,
            loudest: 3,
        }
    }
}

/// A chosen talker silent this long gives up its place to someone talking now.
pub const CHOSEN_SILENCE_TO_YIELD: Duration = Duration::from_millis(250);
/// A chosen talker silent this long leaves the chosen few even if nobody wants the place.
pub const CHOSEN_SILENCE_TO_LEAVE: Duration = SILENCE_TO_STOP;
/// A talker louder than the quietest chosen one (still talking) by this much takes its place.
pub const LOUDER_TO_TAKE_OVER_DB: f32 = 6.0;

/// One remote voice, as [`LoudestVoices`] knows it.
#[derive(Clone, Debug, Default)]
struct Talker {
    loudness: RecentLoudness,
    last_voice: Option<Instant>,
}

impl Talker {
    fn silent_for(&self, now: Instant) -> Duration {
        self.last_voice
            .map_or(Duration::MAX, |at| now.saturating_duration_since(at))
    }
}

/// Which remote voices are worth decoding, from their packets' RFC 6464 levels alone: all of
/// them up to [`VoiceDecodeLimit::decode_all_up_to`] voices, else the
/// [`VoiceDecodeLimit::loudest`] chosen talkers. A talker is chosen on a voiced packet while a
/// place is free; a chosen talker keeps its place until it has been silent for
/// [`CHOSEN_SILENCE_TO_YIELD`] and someone else talks, or for [`CHOSEN_SILENCE_TO_LEAVE`], or
/// until someone [`LOUDER_TO_TAKE_OVER_DB`] louder talks (the quietest gives way). Time is an
/// argument: no clock, no sleeping in tests.
#[derive(Clone, Debug, Default)]
pub struct LoudestVoices {
    limit: VoiceDecodeLimit,
    talkers: HashMap<String, Talker>,
    /// The chosen talkers, at most `limit.loudest`.
    chosen: Vec<String>,
}

impl LoudestVoices {
    /// Chooses under `limit`.
    pub fn new(limit: VoiceDecodeLimit) -> Self {
        Self {
            limit,
            ..Self::default()
        }
    }

    /// Changes the limit (the chosen talkers stay, the extra ones leave at once).
    pub fn set_limit(&mut self, limit: VoiceDecodeLimit) {
        self.limit = limit;
        self.chosen.truncate(limit.loudest);
    }

    /// A packet of `uid`'s voice arrived at `now` with its RFC 6464 level (−dBov) and voice flag.
    pub fn heard(&mut self, uid: &str, level: u8, voice: bool, now: Instant) {
        let talker = match self.talkers.get_mut(uid) {
            Some(talker) => talker,
            None => self.talkers.entry(uid.to_owned()).or_default(),
        };
        talker.loudness.frame(level, voice);
        if voice {
            talker.last_voice = Some(now);
        }
        let talkers = &self.talkers;
        self.chosen.retain(|chosen| {
            talkers
                .get(chosen)
                .is_some_and(|talker| talker.silent_for(now) < CHOSEN_SILENCE_TO_LEAVE)
        });
        if !voice || self.chosen.iter().any(|chosen| chosen == uid) {
            return;
        }
        if self.chosen.len() < self.limit.loudest {
            self.chosen.push(uid.to_owned());
            return;
        }
        let loudness = self.talkers[uid].loudness.dbov();
        // The place to take: the chosen talker silent longest, if long enough; else the
        // quietest, if this one is that much louder.
        let talker_of = |index: &usize| &self.talkers[&self.chosen[*index]];
        let longest_silent = (0..self.chosen.len())
            .max_by_key(|index| talker_of(index).silent_for(now))
            .filter(|index| talker_of(index).silent_for(now) >= CHOSEN_SILENCE_TO_YIELD);
        let quietest = || {
            (0..self.chosen.len())
                .min_by(|a, b| {
                    let (a, b) = (talker_of(a).loudness.dbov(), talker_of(b).loudness.dbov());
                    a.total_cmp(&b)
                })
                .filter(|index| {
                    loudness >= talker_of(index).loudness.dbov() + LOUDER_TO_TAKE_OVER_DB
                })
        };
        if let Some(index) = longest_silent.or_else(quietest) {
            self.chosen[index] = uid.to_owned();
        }
    }

    /// Whether `uid`'s voice is decoded.
    pub fn decodes(&self, uid: &str) -> bool {
        self.talkers.len() <= self.limit.decode_all_up_to
            || self.chosen.iter().any(|chosen| chosen == uid)
    }

    /// Forgets `uid` (their stream ended).
    pub fn forget(&mut self, uid: &str) {
        self.talkers.remove(uid);
        self.chosen.retain(|chosen| chosen != uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loudness follows the voiced frames' levels over about a second, ignores pauses, and
    /// tells a talker 10 dB louder apart from a quieter one.
    #[test]
    fn recent_loudness_follows_voiced_levels() {
        let mut quiet = RecentLoudness::default();
        let mut loud = RecentLoudness::default();
        assert_eq!(quiet.dbov(), -127.0);
        for i in 0..100 {
            quiet.frame(35, true);
            loud.frame(25, true);
            // Pauses between words: silent frames change nothing.
            if i % 4 == 0 {
                quiet.frame(127, false);
                loud.frame(127, false);
            }
        }
        assert!((quiet.dbov() + 35.0).abs() < 0.5, "{}", quiet.dbov());
        assert!(loud.dbov() - quiet.dbov() > 9.0);
        // A second of a louder voice moves most of the way.
        for _ in 0..50 {
            quiet.frame(25, true);
        }
        assert!(quiet.dbov() > -30.0, "{}", quiet.dbov());
    }

    /// Full scale is 0 −dBov (a square wave; a sine is 3 dB lower), silence 127, and a tone at
    /// a tenth of full scale about 23; voice starts at −45 dBov.
    #[test]
    fn levels_in_minus_dbov() {
        assert_eq!(
            AudioLevel::of(&[i16::MAX, i16::MIN + 1].repeat(480)).level,
            0
        );
        assert_eq!(AudioLevel::of(&[0; 960]), AudioLevel::SILENT);
        assert_eq!(AudioLevel::of(&[]), AudioLevel::SILENT);
        let sine = |amplitude: f64| -> Vec<i16> {
            (0..960)
                .map(|i| (amplitude * (i as f64 * 0.13).sin() * 32767.0) as i16)
                .collect()
        };
        let tenth = AudioLevel::of(&sine(0.1));
        assert!((22..=24).contains(&tenth.level), "{tenth:?}");
        assert!(tenth.voice);
        let whisper = AudioLevel::of(&sine(0.001));
        assert!(whisper.level > VOICE_LEVEL && !whisper.voice, "{whisper:?}");
    }

    /// Speaking starts within 300 ms of speech (on the third voiced frame, 40 ms in), not on a
    /// lone click; it lasts through short pauses and ends 1 s after the last voiced frame, also
    /// when frames stop coming at all (time passes by `tick`).
    #[test]
    fn speaking_has_hysteresis() {
        let ms = Duration::from_millis;
        let mut detector = SpeakingDetector::default();
        assert_eq!(detector.frame(ms(0), true), None, "a click");
        for t in (20..400).step_by(20) {
            assert_eq!(detector.frame(ms(t), false), None);
        }
        let mut started = None;
        for t in (1000..1300).step_by(20) {
            if detector.frame(ms(t), true) == Some(true) {
                started.get_or_insert(t);
            }
        }
        assert_eq!(started, Some(1040));
        // A 600 ms pause keeps it on.
        for t in (1300..1900).step_by(20) {
            assert_eq!(detector.frame(ms(t), false), None);
        }
        assert_eq!(detector.frame(ms(1900), true), None);
        assert!(detector.speaking());
        // Then the sender mutes: no frames, only time.
        assert_eq!(detector.tick(ms(2800)), None);
        assert_eq!(detector.tick(ms(2900)), Some(false));
        assert!(!detector.speaking());
    }

    /// The id is read from `a=extmap` lines, with or without a direction.
    #[test]
    fn finds_the_extension_id() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
                   a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n\
                   a=extmap:1/sendrecv urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n";
        assert_eq!(audio_level_extension_id(sdp), Some(1));
        assert_eq!(audio_level_extension_id("v=0\r\n"), None);
    }

    /// `2s-on-3s-off` talks for the first 2 s of every 5 s, shifted by the offset; bad
    /// patterns are refused with the expected form.
    #[test]
    fn talk_patterns() {
        let mut pattern: TalkPattern = "2s-on-3s-off".parse().expect("pattern");
        let s = Duration::from_secs_f64;
        assert!(pattern.talking(s(0.0)) && pattern.talking(s(1.9)));
        assert!(!pattern.talking(s(2.1)) && !pattern.talking(s(4.9)));
        assert!(pattern.talking(s(5.5)));
        pattern.offset = s(2.5);
        assert!(!pattern.talking(s(0.0)) && pattern.talking(s(2.6)));
        for bad in [
            "",
            "2s-on",
            "2-on-3-off",
            "2s-off-3s-on",
            "0s-on-1s-off",
            "xs-on-1s-off",
        ] {
            assert!(bad.parse::<TalkPattern>().is_err(), "{bad:?}");
        }
    }

    /// Feeds 20 ms packets from `from` to `to` (offsets from `start`): each uid in `talking`
    /// sends a voiced packet at `level`, everyone else silence.
    fn packets(
        voices: &mut LoudestVoices,
        start: Instant,
        (from, to): (Duration, Duration),
        everyone: &[&str],
        talking: &[(&str, u8)],
    ) {
        let mut at = from;
        while at < to {
            for uid in everyone {
                match talking.iter().find(|(talker, _)| talker == uid) {
                    Some((_, level)) => voices.heard(uid, *level, true, start + at),
                    None => voices.heard(uid, 127, false, start + at),
                }
            }
            at += Duration::from_millis(20);
        }
    }

    fn decoded<'a>(voices: &LoudestVoices, everyone: &[&'a str]) -> Vec<&'a str> {
        everyone
            .iter()
            .copied()
            .filter(|uid| voices.decodes(uid))
            .collect()
    }

    /// Up to the limit every voice is decoded, talking or not; one voice more and only the
    /// chosen talkers are, and a silent crowd costs nothing.
    #[test]
    fn every_voice_is_decoded_up_to_the_limit() {
        let limit = VoiceDecodeLimit {
            decode_all_up_to: 3,
            loudest: 1,
        };
        let start = Instant::now();
        let span = (Duration::ZERO, Duration::from_millis(200));
        let mut voices = LoudestVoices::new(limit);
        packets(&mut voices, start, span, &["a", "b", "c"], &[("a", 20)]);
        assert_eq!(decoded(&voices, &["a", "b", "c"]), ["a", "b", "c"]);
        packets(
            &mut voices,
            start,
            span,
            &["a", "b", "c", "d"],
            &[("a", 20)],
        );
        assert_eq!(decoded(&voices, &["a", "b", "c", "d"]), ["a"]);
        voices.forget("d");
        assert_eq!(decoded(&voices, &["a", "b", "c"]), ["a", "b", "c"]);

        let mut silent_crowd = LoudestVoices::new(limit);
        packets(&mut silent_crowd, start, span, &["a", "b", "c", "d"], &[]);
        assert!(decoded(&silent_crowd, &["a", "b", "c", "d"]).is_empty());
    }

    /// Talkers taking turns: each is chosen as they start (in the place of the one who
    /// stopped), a talker who pauses briefly keeps the place against a new one of the same
    /// loudness, a much louder one takes the quietest's place, and a talker silent for a
    /// second leaves the chosen few even when nobody wants the place.
    #[test]
    fn the_chosen_few_follow_who_talks() {
        let everyone = ["a", "b", "c", "d", "e"];
        let mut voices = LoudestVoices::new(VoiceDecodeLimit {
            decode_all_up_to: 2,
            loudest: 2,
        });
        let start = Instant::now();
        let ms = Duration::from_millis;
        packets(
            &mut voices,
            start,
            (ms(0), ms(1000)),
            &everyone,
            &[("a", 20), ("b", 20)],
        );
        assert_eq!(decoded(&voices, &everyone), ["a", "b"]);
        // b pauses for 200 ms while c starts at the same loudness: b keeps its place.
        packets(
            &mut voices,
            start,
            (ms(1000), ms(1200)),
            &everyone,
            &[("a", 20), ("c", 20)],
        );
        assert_eq!(decoded(&voices, &everyone), ["a", "b"]);
        // b stays quiet past the yield time: c takes its place.
        packets(
            &mut voices,
            start,
            (ms(1200), ms(1400)),
            &everyone,
            &[("a", 20), ("c", 20)],
        );
        assert_eq!(decoded(&voices, &everyone), ["a", "c"]);
        // d shouts (20 dB louder) while a and c go on: the quietest place is d's.
        packets(
            &mut voices,
            start,
            (ms(1400), ms(1600)),
            &everyone,
            &[("a", 20), ("c", 30), ("d", 5)],
        );
        assert_eq!(decoded(&voices, &everyone), ["a", "d"]);
        // Everyone stops: after a second of silence nobody is decoded.
        packets(&mut voices, start, (ms(1600), ms(2700)), &everyone, &[]);
        assert!(decoded(&voices, &everyone).is_empty());
        // e talks: chosen on its first voiced packet.
        packets(
            &mut voices,
            start,
            (ms(2700), ms(2720)),
            &everyone,
            &[("e", 30)],
        );
        assert_eq!(decoded(&voices, &everyone), ["e"]);
    }
}
