//! Audio codec and synthetic audio: Opus at 48 kHz in 20 ms frames (in-band FEC on), a tone
//! source whose frequency is derived from the uid, and a tone detector so a receiver can tell
//! whose voice it hears.

use opus::{Application, Bitrate, Channels};

/// Sample rate of everything audio in Huddle.
pub const SAMPLE_RATE: u32 = 48_000;
/// Samples per channel in one 20 ms frame.
pub const FRAME_SAMPLES: usize = 960;

/// An audio failure.
#[derive(Debug, thiserror::Error)]
#[error("opus: {0}")]
pub struct AudioError(String);

impl From<opus::Error> for AudioError {
    fn from(err: opus::Error) -> Self {
        AudioError(err.to_string())
    }
}

/// The tone a participant's synthetic microphone plays: 300 to 1,450 Hz in 50 Hz steps,
/// chosen from the uid (distinct for up to 24 participants by construction of the step).
pub fn tone_frequency_for(uid: &str) -> f32 {
    let hash = uid.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    300.0 + (hash % 24) as f32 * 50.0
}

/// A sine tone, 20 ms at a time.
#[derive(Clone, Debug)]
pub struct ToneSource {
    frequency: f32,
    phase: f32,
    amplitude: f32,
}

impl ToneSource {
    /// A tone at `frequency` Hz, at a third of full scale.
    pub fn new(frequency: f32) -> Self {
        Self {
            frequency,
            phase: 0.0,
            amplitude: 0.3,
        }
    }

    /// Its frequency.
    pub fn frequency(&self) -> f32 {
        self.frequency
    }

    /// Fills `frame` (mono) with the next samples.
    pub fn fill(&mut self, frame: &mut [i16]) {
        let step = std::f32::consts::TAU * self.frequency / SAMPLE_RATE as f32;
        for sample in frame.iter_mut() {
            *sample = (self.phase.sin() * self.amplitude * f32::from(i16::MAX)) as i16;
            self.phase = (self.phase + step) % std::f32::consts::TAU;
        }
    }
}

/// A sample in −1..1 as 16-bit (clipped at full scale).
pub fn sample_to_i16(sample: f32) -> i16 {
    (sample.clamp(-1.0, 1.0) * f32::from(i16::MAX)) as i16
}

/// Whether an Opus packet carries stereo (the `s` bit of its TOC byte, RFC 6716 §3.1).
pub fn is_stereo_packet(packet: &[u8]) -> bool {
    packet.first().is_some_and(|toc| toc & 0b100 != 0)
}

/// The right channel's tone of a stereo synthetic microphone: 1.5 × the left one, so a
/// receiver can tell the channels apart.
pub fn right_tone_frequency(left_hz: f32) -> f32 {
    left_hz * 1.5
}

/// Estimates the frequency of a (mostly) pure tone from its rising zero crossings, with
/// sub-sample interpolation. `None` for silence.
pub fn detect_tone(samples: &[i16]) -> Option<f32> {
    let mut first: Option<f32> = None;
    let mut last = 0.0f32;
    let mut crossings = 0u32;
    for (i, pair) in samples.windows(2).enumerate() {
        let (a, b) = (f32::from(pair[0]), f32::from(pair[1]));
        if a < 0.0 && b >= 0.0 {
            let at = i as f32 + (-a / (b - a));
            if first.is_none() {
                first = Some(at);
            }
            last = at;
            crossings += 1;
        }
    }
    let first = first?;
    if crossings < 3 || last <= first {
        return None;
    }
    Some((crossings - 1) as f32 * SAMPLE_RATE as f32 / (last - first))
}

/// Opus encoder: 48 kHz mono, VoIP, in-band FEC on.
pub struct OpusEncoder {
    encoder: opus::Encoder,
    packet: Vec<u8>,
}

impl OpusEncoder {
    /// A mono encoder at `bitrate_bps`.
    pub fn new(bitrate_bps: i32) -> Result<Self, AudioError> {
        Self::with_channels(bitrate_bps, false)
    }

    /// A mono or stereo encoder; stereo frames are interleaved left/right
    /// (`2 × FRAME_SAMPLES` samples per 20 ms).
    pub fn with_channels(bitrate_bps: i32, stereo: bool) -> Result<Self, AudioError> {
        let (channels, application) = if stereo {
            (Channels::Stereo, Application::Audio)
        } else {
            (Channels::Mono, Application::Voip)
        };
        let mut encoder = opus::Encoder::new(SAMPLE_RATE, channels, application)?;
        encoder.set_bitrate(Bitrate::Bits(bitrate_bps))?;
        encoder.set_inband_fec(true)?;
        encoder.set_packet_loss_perc(10)?;
        Ok(Self {
            encoder,
            packet: vec![0; 1500],
        })
    }

    /// Encodes one 20 ms frame (960 samples).
    pub fn encode(&mut self, frame: &[i16]) -> Result<Vec<u8>, AudioError> {
        let len = self.encoder.encode(frame, &mut self.packet)?;
        Ok(self.packet[..len].to_vec())
    }
}

/// Whether an Opus packet can carry in-band FEC for the frame before it: only SILK-only and
/// hybrid packets (TOC configurations 0–15, RFC 6716 §3.1) have LBRR data; CELT-only ones
/// never do, and a lost frame before one is concealed.
pub fn may_carry_fec(packet: &[u8]) -> bool {
    packet.first().is_some_and(|toc| (toc >> 3) < 16)
}

/// Opus decoder: 48 kHz mono, with concealment and FEC recovery.
pub struct OpusDecoder {
    decoder: opus::Decoder,
}

impl OpusDecoder {
    /// A mono decoder.
    pub fn new() -> Result<Self, AudioError> {
        Ok(Self {
            decoder: opus::Decoder::new(SAMPLE_RATE, Channels::Mono)?,
        })
    }

    /// A decoder with stereo output (interleaved left/right): a stereo stream keeps its two
    /// channels, a mono one comes out on both. `decode`/`conceal` return samples per channel.
    pub fn stereo() -> Result<Self, AudioError> {
        Ok(Self {
            decoder: opus::Decoder::new(SAMPLE_RATE, Channels::Stereo)?,
        })
    }

    /// Decodes a packet into `out` (960 samples for 20 ms); returns the sample count.
    pub fn decode(&mut self, packet: &[u8], out: &mut [i16]) -> Result<usize, AudioError> {
        Ok(self.decoder.decode(packet, out, false)?)
    }

    /// Conceals one lost frame: from the next packet's FEC data when it is there, else by
    /// packet-loss concealment.
    pub fn conceal(
        &mut self,
        next_packet: Option<&[u8]>,
        out: &mut [i16],
    ) -> Result<usize, AudioError> {
        match next_packet {
            Some(next) => Ok(self.decoder.decode(next, out, true)?),
            None => Ok(self.decoder.decode(&[], out, false)?),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Our voice encoder (VoIP, 32 kbps, FEC on) makes SILK or hybrid packets, the kind that
    /// carry in-band FEC; a CELT-only packet (TOC configuration 16–31) never does.
    #[test]
    fn voice_packets_may_carry_fec_and_celt_packets_do_not() {
        let mut tone = ToneSource::new(tone_frequency_for("alice"));
        let mut encoder = OpusEncoder::new(32_000).expect("encoder");
        let mut frame = vec![0i16; FRAME_SAMPLES];
        let mut with_fec = 0;
        for _ in 0..50 {
            tone.fill(&mut frame);
            let packet = encoder.encode(&frame).expect("encode");
            with_fec += usize::from(may_carry_fec(&packet));
        }
        assert!(with_fec >= 45, "{with_fec} of 50 packets SILK or hybrid");
        assert!(!may_carry_fec(&[31 << 3]));
        assert!(!may_carry_fec(&[]));
    }

    /// Different uids get different tones, and the tone detector finds a tone after Opus
    /// encoding and decoding within 2 Hz.
    #[test]
    fn tone_survives_opus_and_is_detected() {
        assert_ne!(tone_frequency_for("alice"), tone_frequency_for("bob"));
        for uid in ["alice", "bob", "bot-3"] {
            let frequency = tone_frequency_for(uid);
            let mut tone = ToneSource::new(frequency);
            let mut encoder = OpusEncoder::new(32_000).expect("encoder");
            let mut decoder = OpusDecoder::new().expect("decoder");
            let (mut frame, mut out) = (vec![0i16; FRAME_SAMPLES], vec![0i16; FRAME_SAMPLES]);
            let mut decoded = Vec::new();
            for _ in 0..25 {
                tone.fill(&mut frame);
                let packet = encoder.encode(&frame).expect("encode");
                assert!(packet.len() < 200, "20 ms at 32 kbps is ~80 bytes");
                let n = decoder.decode(&packet, &mut out).expect("decode");
                assert_eq!(n, FRAME_SAMPLES);
                decoded.extend_from_slice(&out);
            }
            let heard = detect_tone(&decoded[FRAME_SAMPLES * 5..]).expect("a tone");
            assert!(
                (heard - frequency).abs() < 2.0,
                "{uid}: sent {frequency} Hz, heard {heard} Hz"
            );
        }
        assert_eq!(detect_tone(&[0i16; FRAME_SAMPLES]), None);
    }

    /// A lost packet is concealed (FEC from the next packet, or PLC) into a full frame.
    #[test]
    fn loss_is_concealed() {
        let mut tone = ToneSource::new(440.0);
        let mut encoder = OpusEncoder::new(32_000).expect("encoder");
        let mut decoder = OpusDecoder::new().expect("decoder");
        let mut frame = vec![0i16; FRAME_SAMPLES];
        let mut out = vec![0i16; FRAME_SAMPLES];
        let packets: Vec<Vec<u8>> = (0..10)
            .map(|_| {
                tone.fill(&mut frame);
                encoder.encode(&frame).expect("encode")
            })
            .collect();
        for p in &packets[..5] {
            decoder.decode(p, &mut out).expect("decode");
        }
        assert_eq!(
            decoder.conceal(Some(&packets[6]), &mut out).expect("fec"),
            FRAME_SAMPLES
        );
        assert_eq!(decoder.conceal(None, &mut out).expect("plc"), FRAME_SAMPLES);
        assert!(out.iter().any(|s| *s != 0), "concealment is not silence");
    }
}
