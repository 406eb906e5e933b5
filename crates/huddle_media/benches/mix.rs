//! Spatial mixing cost per 20 ms audio frame, and what proximity culling saves.
//!
//! - `mix/{2,8,32}`: N voices, each pushed one decoded 20 ms frame and mixed with its own
//!   left/right gains into one stereo frame (what the output does every 20 ms).
//! - `receive_32/all_in_range` vs `receive_32/24_culled`: the whole audio receive side for 32
//!   voices (Opus decode + push + mix) with everyone in earshot, and with 24 of them beyond the
//!   maximum distance (their packets are dropped undecoded, as the receiver does).
//!
//! 20 ms of one core is the budget per frame: 5 % of a core is 1 ms.
//! Run: `cargo bench -p huddle_media --bench mix`.
#![allow(missing_docs)]

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use huddle_media::audio::{FRAME_SAMPLES, OpusDecoder, OpusEncoder, ToneSource};
use huddle_media::mixer::{Mixer, StereoGain};

fn voices(n: usize) -> Vec<(String, Vec<i16>)> {
    (0..n)
        .map(|i| {
            let mut tone = ToneSource::new(300.0 + 25.0 * i as f32);
            let mut samples = vec![0i16; FRAME_SAMPLES];
            tone.fill(&mut samples);
            (format!("voice-{i}"), samples)
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("mix");
    for n in [2usize, 8, 32] {
        let voices = voices(n);
        let mut mixer = Mixer::default();
        for (i, (uid, samples)) in voices.iter().enumerate() {
            let pan = i as f32 / n as f32;
            mixer.set_gain(
                uid,
                StereoGain {
                    left: 1.0 - pan,
                    right: pan,
                },
            );
            for _ in 0..3 {
                mixer.push(uid, samples);
            }
        }
        let mut out = vec![0.0f32; FRAME_SAMPLES * 2];
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                for (uid, samples) in &voices {
                    mixer.push(uid, samples);
                }
                mixer.mix(&mut out, FRAME_SAMPLES);
            });
        });
    }
    group.finish();

    // One encoded packet per voice, decoded every iteration.
    let voices = voices(32);
    let packets: Vec<(String, Vec<u8>)> = voices
        .iter()
        .map(|(uid, samples)| {
            let mut encoder = OpusEncoder::new(32_000).expect("encoder");
            (uid.clone(), encoder.encode(samples).expect("encode"))
        })
        .collect();
    let mut group = c.benchmark_group("receive_32");
    for (name, culled) in [("all_in_range", 0usize), ("24_culled", 24)] {
        let mut mixer = Mixer::default();
        let mut decoders: Vec<OpusDecoder> = (0..32)
            .map(|_| OpusDecoder::new().expect("decoder"))
            .collect();
        for (i, (uid, _)) in packets.iter().enumerate() {
            mixer.set_wanted(uid, i >= culled);
        }
        let mut pcm = vec![0i16; FRAME_SAMPLES];
        let mut out = vec![0.0f32; FRAME_SAMPLES * 2];
        group.bench_function(name, |b| {
            b.iter(|| {
                for (i, (uid, packet)) in packets.iter().enumerate() {
                    if !mixer.wants(uid) {
                        continue;
                    }
                    let n = decoders[i].decode(packet, &mut pcm).expect("decode");
                    mixer.push(uid, &pcm[..n]);
                }
                mixer.mix(&mut out, FRAME_SAMPLES);
            });
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
