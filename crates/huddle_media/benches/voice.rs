//! What cleaning the microphone costs per 10 ms frame (mono, 48 kHz), against the bare cost
//! of the work it cannot avoid.
//!
//! - `voice/echo_canceller`: [`EchoCanceller::process`] on a converged echo path (the linear
//!   filter's two predictions and update, the suppressor's three analyses and synthesis).
//! - `voice/fft_pair`: one forward and one inverse real FFT of 960 samples (realfft), the unit
//!   of the canceller's work: it does about ten per frame.
//! - `voice/audio_processing`: the rest of the chain, WebRTC's AudioProcessing (high-pass,
//!   noise suppression, gain control) with the input volume.
//! - `voice/whole_chain`: both, as a call runs them ([`VoiceProcessor`] with every stage on).
//!
//! 10 ms of one core is the budget per frame: 1 % of a core is 100 µs.
//! Run: `cargo bench -p huddle_media --bench voice`.
#![allow(missing_docs)]

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use huddle_media::echo_canceller::EchoCanceller;
use huddle_media::voice::{PROCESSING_FRAME, VoiceProcessing, VoiceProcessor};
use realfft::RealFftPlanner;

/// Words of noise (300 ms on, 100 ms off) as the far end, and its echo 60 ms late at half
/// level: `seconds` of each.
fn scene(seconds: usize) -> (Vec<f32>, Vec<f32>) {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let far: Vec<f32> = (0..48_000 * seconds)
        .map(|n| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let sample = 0.2 * ((state >> 11) as f32 / (1u64 << 53) as f32 - 0.5);
            if n % 19_200 < 14_400 { sample } else { 0.0 }
        })
        .collect();
    let echo = (0..far.len())
        .map(|n| {
            if n >= 2_880 {
                0.5 * far[n - 2_880]
            } else {
                0.0
            }
        })
        .collect();
    (far, echo)
}

fn bench(c: &mut Criterion) {
    let (far, echo) = scene(4);
    let frames: Vec<(Vec<f32>, Vec<f32>)> = far
        .chunks_exact(PROCESSING_FRAME)
        .zip(echo.chunks_exact(PROCESSING_FRAME))
        .map(|(f, e)| (f.to_vec(), e.to_vec()))
        .collect();
    let mut group = c.benchmark_group("voice");

    let mut canceller = EchoCanceller::new();
    for (far, echo) in &frames {
        canceller.process(std::slice::from_ref(far), &mut echo.clone());
    }
    let mut next = frames.iter().cycle();
    let mut block = vec![0.0; PROCESSING_FRAME];
    group.bench_function("echo_canceller", |b| {
        b.iter(|| {
            let (far, echo) = next.next().expect("cycle");
            block.copy_from_slice(echo);
            canceller.process(std::slice::from_ref(far), &mut block);
        })
    });

    let mut planner = RealFftPlanner::<f32>::new();
    let forward = planner.plan_fft_forward(2 * PROCESSING_FRAME);
    let inverse = planner.plan_fft_inverse(2 * PROCESSING_FRAME);
    let mut time = forward.make_input_vec();
    let mut spectrum = forward.make_output_vec();
    group.bench_function("fft_pair", |b| {
        b.iter(|| {
            time[..PROCESSING_FRAME].copy_from_slice(&far[..PROCESSING_FRAME]);
            let _ = forward.process(&mut time, &mut spectrum);
            spectrum[0].im = 0.0;
            spectrum[PROCESSING_FRAME].im = 0.0;
            let _ = inverse.process(&mut spectrum, &mut time);
        })
    });

    for (name, stages) in [
        (
            "audio_processing",
            VoiceProcessing {
                echo_cancellation: false,
                ..VoiceProcessing::default()
            },
        ),
        ("whole_chain", VoiceProcessing::default()),
    ] {
        let mut processor = VoiceProcessor::new(stages).expect("processor");
        let mut next = frames.iter().cycle();
        group.bench_function(name, |b| {
            b.iter(|| {
                let (far, echo) = next.next().expect("cycle");
                processor.far_end(far).expect("far end");
                block.copy_from_slice(echo);
                processor.process_frame(&mut block).expect("capture");
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
