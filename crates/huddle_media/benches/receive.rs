//! Receive pipeline vs the bare decoder, on the same H.264 stream.
//!
//! - `bare/{720p,360p}`: openh264 decode + yuv I420→RGBA of each access unit (the floor).
//! - `pipeline/{720p,360p}`: what a received track does: RTP packets (as the H.264 payloader
//!   cut them, 1200-byte MTU) → the bounded packet queue to the decode thread → frame
//!   reassembly and depacketization → decode → I420→RGBA → stamp read back (as when
//!   measuring) → the track's newest-wins slot, taken once per frame as the ECS does. Both
//!   ends run on the bench's thread, so the figure is the work, not thread scheduling.
//!
//! Both process the same 60 frames of the synthetic pattern (one keyframe, then P-frames);
//! creating the decoder / receiver (once per track) is outside the timed part.
//! Run: `cargo bench -p huddle_media --bench receive`.
#![allow(missing_docs)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BatchSize, Criterion, criterion_group};
use huddle_media::frames::VideoSlot;
use huddle_media::peer::VideoReceiver;
use huddle_media::synthetic::{FrameStamp, TestPattern};
use huddle_media::video::{EncoderSettings, H264Decoder, H264Encoder, I420Frame};
use rtc::rtp::codec::h264::H264Payloader;
use rtc::rtp::packet::Packet;
use rtc::rtp::packetizer::{Packetizer, new_packetizer};
use rtc::rtp::sequence::new_random_sequencer;

const FRAMES: u32 = 60;

struct Stream {
    access_units: Vec<Vec<u8>>,
    packets: Vec<Vec<Packet>>,
}

fn encode_stream(width: u32, height: u32, kbps: u32) -> Stream {
    let pattern = TestPattern::new(width, height, "bench");
    let mut encoder = H264Encoder::new(EncoderSettings {
        width,
        height,
        fps: 30.0,
        bitrate_bps: kbps * 1000,
        keyframe_interval: 1000,
    })
    .expect("encoder");
    let mut packetizer = new_packetizer(
        Instant::now(),
        1200,
        102,
        0x1234,
        Box::new(H264Payloader::default()),
        Box::new(new_random_sequencer()),
        90_000,
    );
    let mut rgba = Vec::new();
    let mut stream = Stream {
        access_units: Vec::new(),
        packets: Vec::new(),
    };
    for frame in 1..=FRAMES {
        pattern.render_rgba(
            FrameStamp {
                frame,
                capture_ms: frame * 33,
            },
            &mut rgba,
        );
        let i420 = I420Frame::from_rgba(&rgba, width, height).expect("i420");
        let Some(encoded) = encoder.encode(&i420).expect("encode") else {
            continue;
        };
        let packets = packetizer
            .packetize(Instant::now(), &Bytes::from(encoded.data.clone()), 3000)
            .expect("packetize");
        stream.access_units.push(encoded.data);
        stream.packets.push(packets);
    }
    stream
}

/// Bare decode + convert of every access unit (the floor).
#[inline(never)]
fn run_bare(stream: &Stream, mut decoder: H264Decoder) {
    let mut rgba = Vec::new();
    let mut n = 0;
    for au in &stream.access_units {
        if decoder
            .decode_rgba(au, &mut rgba)
            .expect("decode")
            .is_some()
        {
            n += 1;
        }
    }
    assert_eq!(n, stream.access_units.len());
}

/// What a received track does with the same stream.
#[inline(never)]
fn run_pipeline(stream: &Stream, mut receiver: VideoReceiver) {
    let (packets_in, packets_out) =
        crossbeam_channel::bounded(huddle_media::peer::DECODE_QUEUE_PACKETS);
    let slot = VideoSlot::default();
    let mut decoded = 0;
    for packets in &stream.packets {
        for packet in packets {
            // The receive task queues each packet for the decode thread, which decodes,
            // converts, reads the stamp and fills the slot; here both ends run on one
            // thread, so this is the work alone.
            packets_in.try_send(packet.clone()).expect("queue");
            let queued = packets_out.try_recv().expect("dequeue");
            for frame in receiver.push(Instant::now(), queued) {
                slot.put(frame);
                decoded += 1;
            }
            // The ECS takes the newest picture once per frame (two that complete at once
            // leave only the newer).
            let _ = slot.take();
        }
    }
    // Every frame is decoded (the first one once the second starts).
    assert_eq!(decoded, stream.packets.len());
}

/// The two streams the benchmarks decode.
fn streams() -> [(&'static str, Stream); 2] {
    [
        ("720p", encode_stream(1280, 720, 2500)),
        ("360p", encode_stream(640, 360, 800)),
    ]
}

fn bench(c: &mut Criterion) {
    for (name, stream) in streams() {
        c.bench_function(&format!("bare/{name}"), |b| {
            b.iter_batched(
                || H264Decoder::new().expect("decoder"),
                |decoder| run_bare(&stream, decoder),
                BatchSize::PerIteration,
            );
        });
        c.bench_function(&format!("pipeline/{name}"), |b| {
            b.iter_batched(
                || VideoReceiver::new(true).expect("receiver"),
                |receiver| run_pipeline(&stream, receiver),
                BatchSize::PerIteration,
            );
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(Duration::from_secs(8));
    targets = bench
}

/// `HUDDLE_RECEIVE_ONCE=setup|bare|pipeline` encodes the streams and runs that routine
/// exactly once per stream (nothing for `setup`), then exits: under
/// `valgrind --tool=callgrind`, a count of instructions that does not depend on the machine's
/// load; a routine's cost is its run's total minus the `setup` run's.
fn main() {
    if let Ok(once) = std::env::var("HUDDLE_RECEIVE_ONCE") {
        for (_, stream) in streams() {
            match once.as_str() {
                "bare" => run_bare(&stream, H264Decoder::new().expect("decoder")),
                "pipeline" => run_pipeline(&stream, VideoReceiver::new(true).expect("receiver")),
                _ => {}
            }
        }
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
