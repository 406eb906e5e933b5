//! Call recording into one Matroska (`.mkv`) file: every participant's H.264 video and Opus
//! audio exactly as received (no re-encode), one track each, named by participant.
//!
//! ```text
//! receive tasks / send loops ─ Recorder::video/audio (timestamp taken here) ─▶ channel
//!     ─▶ writer thread: MkvMuxer ─▶ clusters of ≤ 1 s ─▶ file
//! ```
//!
//! The file is laid out so that a killed app still leaves a playable file:
//!
//! ```text
//! EBML header
//! Segment (size "unknown" until finished)
//!   Info     Duration patched in place after every cluster
//!   Tracks   rewritten in place when a track is added; room reserved by a Void after it
//!   Cluster  complete, with its size, written at once (≤ 1 s of media each)
//!   Cluster  …
//!   Cues     on finish: where each cluster starts, for seeking
//! ```
//!
//! A crash loses at most the cluster being gathered (about a second). A participant's video
//! track appears at their first keyframe (its SPS and PPS make the track's `avcC`); frames
//! before it cannot be decoded and are not written. Their audio track appears with their
//! first packet (the `OpusHead` takes the channel count from it). People who join
//! mid-recording get tracks when their media arrives.
//!
//! [`read_recording`] is a small reader for the same format (tests, `huddle` tools).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

/// A recording failure.
#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    /// The file could not be created.
    #[error("cannot create recording {path}: {source}")]
    Create {
        /// Where.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Writing failed (disk full, device gone); the recording stopped there.
    #[error("recording {path} stopped: {source}")]
    Write {
        /// Where.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// More tracks than the room reserved for them in the file.
    #[error("recording has no room for another track ({tracks} tracks)")]
    TooManyTracks {
        /// Tracks already in the file.
        tracks: usize,
    },
}

/// What a finished (or stopped) recording holds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RecordingSummary {
    /// The file.
    pub path: PathBuf,
    /// Timestamp of the last frame written, in milliseconds from the start.
    pub duration_ms: u64,
    /// Tracks, in the order they were added.
    pub tracks: Vec<TrackSummary>,
}

/// One track of a recording.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackSummary {
    /// Matroska track number (from 1).
    pub number: u64,
    /// Whose media (the participant's uid).
    pub participant: String,
    /// Video or audio.
    pub kind: TrackKind,
    /// Frames (video access units or audio packets) written.
    pub frames: u64,
}

/// The kind of a recorded track.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TrackKind {
    /// H.264 video.
    Video,
    /// Opus audio.
    Audio,
}

// --- EBML ------------------------------------------------------------------------------

mod id {
    pub const EBML: u32 = 0x1A45_DFA3;
    pub const EBML_VERSION: u32 = 0x4286;
    pub const EBML_READ_VERSION: u32 = 0x42F7;
    pub const EBML_MAX_ID_LENGTH: u32 = 0x42F2;
    pub const EBML_MAX_SIZE_LENGTH: u32 = 0x42F3;
    pub const DOC_TYPE: u32 = 0x4282;
    pub const DOC_TYPE_VERSION: u32 = 0x4287;
    pub const DOC_TYPE_READ_VERSION: u32 = 0x4285;
    pub const SEGMENT: u32 = 0x1853_8067;
    pub const INFO: u32 = 0x1549_A966;
    pub const TIMESTAMP_SCALE: u32 = 0x2A_D7B1;
    pub const MUXING_APP: u32 = 0x4D80;
    pub const WRITING_APP: u32 = 0x5741;
    pub const DURATION: u32 = 0x4489;
    pub const TITLE: u32 = 0x7BA9;
    pub const TRACKS: u32 = 0x1654_AE6B;
    pub const TRACK_ENTRY: u32 = 0xAE;
    pub const TRACK_NUMBER: u32 = 0xD7;
    pub const TRACK_UID: u32 = 0x73C5;
    pub const TRACK_TYPE: u32 = 0x83;
    pub const FLAG_LACING: u32 = 0x9C;
    pub const NAME: u32 = 0x536E;
    pub const LANGUAGE: u32 = 0x22_B59C;
    pub const CODEC_ID: u32 = 0x86;
    pub const CODEC_PRIVATE: u32 = 0x63A2;
    pub const CODEC_DELAY: u32 = 0x56AA;
    pub const SEEK_PRE_ROLL: u32 = 0x56BB;
    pub const VIDEO: u32 = 0xE0;
    pub const PIXEL_WIDTH: u32 = 0xB0;
    pub const PIXEL_HEIGHT: u32 = 0xBA;
    pub const AUDIO: u32 = 0xE1;
    pub const SAMPLING_FREQUENCY: u32 = 0xB5;
    pub const CHANNELS: u32 = 0x9F;
    pub const VOID: u32 = 0xEC;
    pub const CLUSTER: u32 = 0x1F43_B675;
    pub const TIMESTAMP: u32 = 0xE7;
    pub const SIMPLE_BLOCK: u32 = 0xA3;
    pub const CUES: u32 = 0x1C53_BB6B;
    pub const CUE_POINT: u32 = 0xBB;
    pub const CUE_TIME: u32 = 0xB3;
    pub const CUE_TRACK_POSITIONS: u32 = 0xB7;
    pub const CUE_TRACK: u32 = 0xF7;
    pub const CUE_CLUSTER_POSITION: u32 = 0xF1;
}

/// Matroska's "unknown size" (8-byte form), used for the segment until it is finished.
const UNKNOWN_SIZE: [u8; 8] = [0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];

fn put_id(out: &mut Vec<u8>, id: u32) {
    let bytes = id.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    out.extend_from_slice(&bytes[skip..]);
}

/// The size as an EBML variable-length integer, shortest form.
fn put_size(out: &mut Vec<u8>, size: u64) {
    let len = (1..=8usize)
        .find(|len| size < (1u64 << (7 * len)) - 1)
        .unwrap_or(8);
    put_size_fixed(out, size, len);
}

fn put_size_fixed(out: &mut Vec<u8>, size: u64, len: usize) {
    let marked = size | (1u64 << (7 * len));
    out.extend_from_slice(&marked.to_be_bytes()[8 - len..]);
}

fn put_element(out: &mut Vec<u8>, id: u32, payload: &[u8]) {
    put_id(out, id);
    put_size(out, payload.len() as u64);
    out.extend_from_slice(payload);
}

fn put_uint(out: &mut Vec<u8>, id: u32, value: u64) {
    let bytes = value.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count().min(7);
    put_element(out, id, &bytes[skip..]);
}

fn put_float(out: &mut Vec<u8>, id: u32, value: f64) {
    put_element(out, id, &value.to_be_bytes());
}

fn put_str(out: &mut Vec<u8>, id: u32, value: &str) {
    put_element(out, id, value.as_bytes());
}

fn put_master(out: &mut Vec<u8>, id: u32, fill: impl FnOnce(&mut Vec<u8>)) {
    let mut inner = Vec::new();
    fill(&mut inner);
    put_element(out, id, &inner);
}

/// A Void element of exactly `len` bytes (at least 9).
fn put_void(out: &mut Vec<u8>, len: usize) {
    put_id(out, id::VOID);
    put_size_fixed(out, (len - 9) as u64, 8);
    out.resize(out.len() + len - 9, 0);
}

// --- H.264 and Opus helpers ------------------------------------------------------------

/// The NAL units of an Annex-B access unit (start codes removed).
fn nal_units(annex_b: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= annex_b.len() {
        if annex_b[i] == 0 && annex_b[i + 1] == 0 && annex_b[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    starts
        .iter()
        .enumerate()
        .map(|(n, &start)| {
            let mut end = starts.get(n + 1).map_or(annex_b.len(), |next| next - 3);
            // A 4-byte start code leaves one zero behind the previous unit.
            while end > start && annex_b[end - 1] == 0 && n + 1 < starts.len() {
                end -= 1;
            }
            &annex_b[start..end]
        })
        .filter(|nal| !nal.is_empty())
        .collect()
}

/// Annex-B → the length-prefixed form Matroska stores (4-byte lengths).
fn length_prefixed(nals: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(nals.iter().map(|n| n.len() + 4).sum());
    for nal in nals {
        out.extend_from_slice(&(nal.len() as u32).to_be_bytes());
        out.extend_from_slice(nal);
    }
    out
}

/// The `avcC` decoder configuration from the SPS and PPS of a keyframe.
fn avc_config(nals: &[&[u8]]) -> Option<Vec<u8>> {
    let sps = nals.iter().find(|n| n[0] & 0x1f == 7)?;
    let pps = nals.iter().find(|n| n[0] & 0x1f == 8)?;
    if sps.len() < 4 {
        return None;
    }
    let mut out = vec![1, sps[1], sps[2], sps[3], 0xFF, 0xE1];
    out.extend_from_slice(&(sps.len() as u16).to_be_bytes());
    out.extend_from_slice(sps);
    out.push(1);
    out.extend_from_slice(&(pps.len() as u16).to_be_bytes());
    out.extend_from_slice(pps);
    Some(out)
}

/// Samples libopus's encoder delays its output by (its lookahead at 48 kHz).
const OPUS_PRE_SKIP: u16 = 312;

/// The `OpusHead` identification header.
fn opus_head(channels: u8) -> Vec<u8> {
    let mut out = b"OpusHead".to_vec();
    out.push(1);
    out.push(channels);
    out.extend_from_slice(&OPUS_PRE_SKIP.to_le_bytes());
    out.extend_from_slice(&48_000u32.to_le_bytes());
    out.extend_from_slice(&0i16.to_le_bytes());
    out.push(0);
    out
}

// --- The muxer -------------------------------------------------------------------------

/// Bytes reserved for the Tracks element (about 80 tracks).
const TRACKS_ROOM: usize = 16 * 1024;
/// Media gathered before a cluster is written.
const CLUSTER_SPAN_MS: u64 = 1000;
/// Blocks younger than this stay buffered (they may still be overtaken by slightly older
/// ones from another thread).
const REORDER_MS: u64 = 150;

struct Track {
    summary: TrackSummary,
    entry: Vec<u8>,
    last_ms: u64,
    /// Audio: where the next packet would fall if none were lost.
    next_audio_ms: Option<u64>,
}

struct Block {
    track: u64,
    at_ms: u64,
    keyframe: bool,
    data: Vec<u8>,
}

/// The Matroska muxer: tracks, clusters and the in-place patches. Time is given in
/// milliseconds from the start, so it runs the same on a file and in a test buffer.
pub struct MkvMuxer<W: Write + Seek> {
    out: W,
    /// Offset of the segment's size field and of its data.
    segment_size_at: u64,
    segment_data_at: u64,
    duration_at: u64,
    tracks_at: u64,
    tracks: Vec<Track>,
    by_key: HashMap<(String, TrackKind), usize>,
    /// Video frames that arrived before the participant's first keyframe.
    skipped_video: HashMap<String, u64>,
    pending: Vec<Block>,
    cluster_positions: Vec<(u64, u64)>,
    written_until_ms: u64,
    duration_ms: u64,
}

impl<W: Write + Seek> MkvMuxer<W> {
    /// Writes the header, the info and the (empty) tracks.
    pub fn new(mut out: W, title: &str) -> io::Result<Self> {
        let mut head = Vec::new();
        put_master(&mut head, id::EBML, |e| {
            put_uint(e, id::EBML_VERSION, 1);
            put_uint(e, id::EBML_READ_VERSION, 1);
            put_uint(e, id::EBML_MAX_ID_LENGTH, 4);
            put_uint(e, id::EBML_MAX_SIZE_LENGTH, 8);
            put_str(e, id::DOC_TYPE, "matroska");
            put_uint(e, id::DOC_TYPE_VERSION, 4);
            put_uint(e, id::DOC_TYPE_READ_VERSION, 2);
        });
        put_id(&mut head, id::SEGMENT);
        let segment_size_at = head.len() as u64;
        head.extend_from_slice(&UNKNOWN_SIZE);
        let segment_data_at = head.len() as u64;
        let mut info = Vec::new();
        put_uint(&mut info, id::TIMESTAMP_SCALE, 1_000_000);
        put_str(&mut info, id::MUXING_APP, "huddle");
        put_str(&mut info, id::WRITING_APP, "huddle");
        put_str(&mut info, id::TITLE, title);
        let duration_in_info = info.len() as u64;
        put_float(&mut info, id::DURATION, 0.0);
        put_id(&mut head, id::INFO);
        put_size(&mut head, info.len() as u64);
        // The Duration's 8 bytes are the last 8 of its element.
        let duration_at = head.len() as u64 + duration_in_info + 2 + 1;
        head.extend_from_slice(&info);
        let tracks_at = head.len() as u64;
        head.extend_from_slice(&tracks_region(&[])?);
        out.write_all(&head)?;
        out.flush()?;
        Ok(Self {
            out,
            segment_size_at,
            segment_data_at,
            duration_at,
            tracks_at,
            tracks: Vec::new(),
            by_key: HashMap::new(),
            skipped_video: HashMap::new(),
            pending: Vec::new(),
            cluster_positions: Vec::new(),
            written_until_ms: 0,
            duration_ms: 0,
        })
    }

    /// One H.264 access unit (Annex-B) of `participant`'s video at `at_ms`.
    pub fn video(
        &mut self,
        participant: &str,
        at_ms: u64,
        annex_b: &[u8],
        width: u32,
        height: u32,
    ) -> Result<(), RecordingError> {
        let nals = nal_units(annex_b);
        let keyframe = nals.iter().any(|n| n[0] & 0x1f == 5);
        let key = (participant.to_owned(), TrackKind::Video);
        let index = match self.by_key.get(&key) {
            Some(&index) => index,
            None => {
                let Some(config) = keyframe.then(|| avc_config(&nals)).flatten() else {
                    *self.skipped_video.entry(key.0).or_default() += 1;
                    return Ok(());
                };
                self.add_track(key, |entry| {
                    put_str(entry, id::CODEC_ID, "V_MPEG4/ISO/AVC");
                    put_element(entry, id::CODEC_PRIVATE, &config);
                    put_master(entry, id::VIDEO, |v| {
                        put_uint(v, id::PIXEL_WIDTH, u64::from(width));
                        put_uint(v, id::PIXEL_HEIGHT, u64::from(height));
                    });
                })?
            }
        };
        let data = length_prefixed(&nals);
        self.push(index, at_ms, keyframe, data)
    }

    /// One Opus packet of `participant`'s audio at `at_ms`.
    pub fn audio(
        &mut self,
        participant: &str,
        at_ms: u64,
        packet: &[u8],
    ) -> Result<(), RecordingError> {
        let Some(&toc) = packet.first() else {
            return Ok(());
        };
        let key = (participant.to_owned(), TrackKind::Audio);
        let index = match self.by_key.get(&key) {
            Some(&index) => index,
            None => {
                let channels = if toc & 0x04 != 0 { 2 } else { 1 };
                self.add_track(key, |entry| {
                    put_str(entry, id::CODEC_ID, "A_OPUS");
                    put_element(entry, id::CODEC_PRIVATE, &opus_head(channels));
                    put_uint(
                        entry,
                        id::CODEC_DELAY,
                        u64::from(OPUS_PRE_SKIP) * 1_000_000_000 / 48_000,
                    );
                    put_uint(entry, id::SEEK_PRE_ROLL, 80_000_000);
                    put_master(entry, id::AUDIO, |a| {
                        put_float(a, id::SAMPLING_FREQUENCY, 48_000.0);
                        put_uint(a, id::CHANNELS, u64::from(channels));
                    });
                })?
            }
        };
        // Audio is continuous: a packet that arrives a little early or late keeps its place
        // right after the previous one; only a real gap (mute, loss) moves the timeline.
        let frame_ms = opus::packet::get_nb_samples(packet, 48_000)
            .map(|samples| samples as u64 / 48)
            .unwrap_or(20);
        let track = &mut self.tracks[index];
        let at_ms = match track.next_audio_ms {
            Some(expected) if at_ms.abs_diff(expected) <= 80 => expected,
            _ => at_ms,
        };
        track.next_audio_ms = Some(at_ms.max(track.last_ms) + frame_ms);
        self.push(index, at_ms, true, packet.to_vec())
    }

    fn add_track(
        &mut self,
        key: (String, TrackKind),
        codec: impl FnOnce(&mut Vec<u8>),
    ) -> Result<usize, RecordingError> {
        let number = self.tracks.len() as u64 + 1;
        let mut entry = Vec::new();
        put_master(&mut entry, id::TRACK_ENTRY, |t| {
            put_uint(t, id::TRACK_NUMBER, number);
            put_uint(t, id::TRACK_UID, number);
            put_uint(
                t,
                id::TRACK_TYPE,
                if key.1 == TrackKind::Video { 1 } else { 2 },
            );
            put_uint(t, id::FLAG_LACING, 0);
            put_str(t, id::NAME, &key.0);
            put_str(t, id::LANGUAGE, "und");
            codec(t);
        });
        let mut entries: Vec<&[u8]> = self.tracks.iter().map(|t| t.entry.as_slice()).collect();
        entries.push(&entry);
        let region = tracks_region(&entries).map_err(|_| RecordingError::TooManyTracks {
            tracks: self.tracks.len(),
        })?;
        self.patch(self.tracks_at, &region)?;
        self.tracks.push(Track {
            summary: TrackSummary {
                number,
                participant: key.0.clone(),
                kind: key.1,
                frames: 0,
            },
            entry,
            last_ms: 0,
            next_audio_ms: None,
        });
        let index = self.tracks.len() - 1;
        self.by_key.insert(key, index);
        Ok(index)
    }

    fn push(
        &mut self,
        index: usize,
        at_ms: u64,
        keyframe: bool,
        data: Vec<u8>,
    ) -> Result<(), RecordingError> {
        let track = &mut self.tracks[index];
        // Timestamps never go back within a track, nor behind what is already on disk; and
        // within a track each is later than the one before (two frames in one millisecond,
        // after a stall, gave ffmpeg "non monotonically increasing dts").
        let after_last = if track.summary.frames > 0 {
            track.last_ms + 1
        } else {
            0
        };
        let at_ms = at_ms.max(after_last).max(self.written_until_ms);
        track.last_ms = at_ms;
        track.summary.frames += 1;
        self.duration_ms = self.duration_ms.max(at_ms);
        self.pending.push(Block {
            track: track.summary.number,
            at_ms,
            keyframe,
            data,
        });
        let oldest = self.pending.iter().map(|b| b.at_ms).min().unwrap_or(at_ms);
        if at_ms.saturating_sub(oldest) >= CLUSTER_SPAN_MS + REORDER_MS {
            self.write_cluster(at_ms.saturating_sub(REORDER_MS))?;
        }
        Ok(())
    }

    /// Writes the blocks older than `until_ms` as one cluster, then patches the duration.
    fn write_cluster(&mut self, until_ms: u64) -> Result<(), RecordingError> {
        let (mut ready, keep): (Vec<Block>, Vec<Block>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|b| b.at_ms < until_ms);
        self.pending = keep;
        if ready.is_empty() {
            return Ok(());
        }
        ready.sort_by_key(|b| b.at_ms);
        let start = ready[0].at_ms;
        let mut body = Vec::new();
        put_uint(&mut body, id::TIMESTAMP, start);
        for block in &ready {
            let relative = (block.at_ms - start).min(i16::MAX as u64) as i16;
            let mut payload = Vec::with_capacity(block.data.len() + 4);
            put_size(&mut payload, block.track);
            payload.extend_from_slice(&relative.to_be_bytes());
            payload.push(if block.keyframe { 0x80 } else { 0 });
            payload.extend_from_slice(&block.data);
            put_element(&mut body, id::SIMPLE_BLOCK, &payload);
        }
        let mut cluster = Vec::with_capacity(body.len() + 12);
        put_element(&mut cluster, id::CLUSTER, &body);
        let io = |source| RecordingError::Write {
            path: PathBuf::new(),
            source,
        };
        let position = self.out.seek(SeekFrom::End(0)).map_err(io)?;
        self.out.write_all(&cluster).map_err(io)?;
        self.cluster_positions
            .push((start, position - self.segment_data_at));
        self.written_until_ms = ready.last().map_or(start, |b| b.at_ms);
        self.patch(self.duration_at, &(self.duration_ms as f64).to_be_bytes())?;
        self.out.flush().map_err(io)
    }

    /// Writes `bytes` at `offset` and returns to the end.
    fn patch(&mut self, offset: u64, bytes: &[u8]) -> Result<(), RecordingError> {
        let io = |source| RecordingError::Write {
            path: PathBuf::new(),
            source,
        };
        self.out.seek(SeekFrom::Start(offset)).map_err(io)?;
        self.out.write_all(bytes).map_err(io)?;
        self.out.seek(SeekFrom::End(0)).map_err(io)?;
        Ok(())
    }

    /// Writes everything gathered so far that is older than `until_ms` (time passes with no
    /// media, e.g. everyone muted).
    pub fn flush_until(&mut self, until_ms: u64) -> Result<(), RecordingError> {
        let oldest = self.pending.iter().map(|b| b.at_ms).min();
        if oldest.is_some_and(|oldest| until_ms.saturating_sub(oldest) >= CLUSTER_SPAN_MS) {
            self.write_cluster(until_ms)?;
        }
        Ok(())
    }

    /// Writes the rest, the cues and the segment's size.
    pub fn finish(mut self) -> Result<(Vec<TrackSummary>, u64), RecordingError> {
        self.write_cluster(u64::MAX)?;
        let mut cues = Vec::new();
        let first_video = self
            .tracks
            .iter()
            .find(|t| t.summary.kind == TrackKind::Video)
            .or(self.tracks.first())
            .map_or(1, |t| t.summary.number);
        put_master(&mut cues, id::CUES, |c| {
            for (time, position) in &self.cluster_positions {
                put_master(c, id::CUE_POINT, |p| {
                    put_uint(p, id::CUE_TIME, *time);
                    put_master(p, id::CUE_TRACK_POSITIONS, |t| {
                        put_uint(t, id::CUE_TRACK, first_video);
                        put_uint(t, id::CUE_CLUSTER_POSITION, *position);
                    });
                });
            }
        });
        let io = |source| RecordingError::Write {
            path: PathBuf::new(),
            source,
        };
        let end = self.out.seek(SeekFrom::End(0)).map_err(io)?;
        self.out.write_all(&cues).map_err(io)?;
        let mut size = Vec::new();
        put_size_fixed(&mut size, end + cues.len() as u64 - self.segment_data_at, 8);
        self.patch(self.segment_size_at, &size)?;
        self.out.flush().map_err(io)?;
        Ok((
            self.tracks.into_iter().map(|t| t.summary).collect(),
            self.duration_ms,
        ))
    }

    /// The tracks so far.
    pub fn tracks(&self) -> Vec<TrackSummary> {
        self.tracks.iter().map(|t| t.summary.clone()).collect()
    }
}

/// The Tracks element with these entries, padded by a Void to exactly [`TRACKS_ROOM`].
fn tracks_region(entries: &[&[u8]]) -> io::Result<Vec<u8>> {
    let mut region = Vec::with_capacity(TRACKS_ROOM);
    if !entries.is_empty() {
        put_id(&mut region, id::TRACKS);
        put_size(&mut region, entries.iter().map(|e| e.len() as u64).sum());
        for entry in entries {
            region.extend_from_slice(entry);
        }
    }
    if region.len() + 9 > TRACKS_ROOM {
        return Err(io::Error::other("tracks do not fit"));
    }
    let rest = TRACKS_ROOM - region.len();
    put_void(&mut region, rest);
    Ok(region)
}

// --- The recorder: a writer thread behind a cheap handle -------------------------------

enum MediaWrite {
    Video {
        participant: String,
        at: Duration,
        data: Vec<u8>,
        width: u32,
        height: u32,
    },
    Audio {
        participant: String,
        at: Duration,
        data: Vec<u8>,
    },
}

/// Where recorded media goes: a cheap handle the media tasks call (never blocks); a thread
/// muxes and writes. Dropping every handle and calling [`Recording::stop`] finishes the file.
#[derive(Clone)]
pub struct Recorder {
    writes: Sender<MediaWrite>,
    started: Instant,
}

impl Recorder {
    /// `participant`'s H.264 access unit (Annex-B), timestamped now.
    pub fn video(&self, participant: &str, annex_b: &[u8], width: u32, height: u32) {
        let _ = self.writes.try_send(MediaWrite::Video {
            participant: participant.to_owned(),
            at: self.started.elapsed(),
            data: annex_b.to_vec(),
            width,
            height,
        });
    }

    /// `participant`'s Opus packet, timestamped now.
    pub fn audio(&self, participant: &str, packet: &[u8]) {
        let _ = self.writes.try_send(MediaWrite::Audio {
            participant: participant.to_owned(),
            at: self.started.elapsed(),
            data: packet.to_vec(),
        });
    }
}

/// A recording in progress: the handle to feed it and the thread that writes it.
pub struct Recording {
    recorder: Recorder,
    path: PathBuf,
    thread: Option<JoinHandle<Result<RecordingSummary, RecordingError>>>,
    stop: Sender<()>,
    tracks: Arc<Mutex<Vec<TrackSummary>>>,
}

/// Frames that may wait for the writer (about 10 s of a 4-party call) before new ones are
/// dropped rather than stall a media task.
const WRITE_QUEUE: usize = 4096;

impl Recording {
    /// Creates the file and starts writing. `on_error` hears about a write failure, as text
    /// naming the path (the
    /// recording stops there; the file keeps what was written).
    pub fn start(
        path: &Path,
        title: &str,
        on_error: impl Fn(String) + Send + 'static,
    ) -> Result<Self, RecordingError> {
        let create = |source| RecordingError::Create {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(create)?;
        }
        let file = File::create(path).map_err(create)?;
        let muxer =
            MkvMuxer::new(BufWriter::with_capacity(256 * 1024, file), title).map_err(create)?;
        let (writes, queue) = crossbeam_channel::bounded(WRITE_QUEUE);
        let (stop, stopped) = crossbeam_channel::bounded(1);
        let started = Instant::now();
        let tracks = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (path, tracks) = (path.to_owned(), tracks.clone());
            std::thread::Builder::new()
                .name("huddle-recording".into())
                .spawn(move || {
                    let result = write_loop(muxer, &queue, &stopped, started, &tracks);
                    match result {
                        Ok((tracks, duration_ms)) => Ok(RecordingSummary {
                            path,
                            duration_ms,
                            tracks,
                        }),
                        Err(err) => {
                            let err = with_path(err, &path);
                            on_error(err.to_string());
                            Err(err)
                        }
                    }
                })
                .map_err(create)?
        };
        Ok(Self {
            recorder: Recorder { writes, started },
            path: path.to_owned(),
            thread: Some(thread),
            stop,
            tracks,
        })
    }

    /// The handle media tasks feed.
    pub fn recorder(&self) -> Recorder {
        self.recorder.clone()
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The tracks written so far.
    pub fn tracks(&self) -> Vec<TrackSummary> {
        self.tracks.lock().map(|t| t.clone()).unwrap_or_default()
    }

    /// Writes what is queued, finishes the file and waits for the writer.
    pub fn stop(mut self) -> Result<RecordingSummary, RecordingError> {
        self.finish()
    }

    fn finish(&mut self) -> Result<RecordingSummary, RecordingError> {
        let _ = self.stop.try_send(());
        match self.thread.take() {
            Some(thread) => thread.join().unwrap_or_else(|_| {
                Err(RecordingError::Write {
                    path: self.path.clone(),
                    source: io::Error::other("the recording thread panicked"),
                })
            }),
            None => Err(RecordingError::Write {
                path: self.path.clone(),
                source: io::Error::other("already stopped"),
            }),
        }
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        if self.thread.is_some() {
            let _ = self.finish();
        }
    }
}

fn with_path(err: RecordingError, path: &Path) -> RecordingError {
    match err {
        RecordingError::Write { source, .. } => RecordingError::Write {
            path: path.to_owned(),
            source,
        },
        other => other,
    }
}

fn write_loop(
    mut muxer: MkvMuxer<BufWriter<File>>,
    queue: &Receiver<MediaWrite>,
    stopped: &Receiver<()>,
    started: Instant,
    tracks: &Mutex<Vec<TrackSummary>>,
) -> Result<(Vec<TrackSummary>, u64), RecordingError> {
    let mut stopping = false;
    loop {
        let write = if stopping {
            match queue.try_recv() {
                Ok(write) => write,
                Err(_) => break,
            }
        } else {
            match queue.recv_timeout(Duration::from_millis(250)) {
                Ok(write) => write,
                Err(RecvTimeoutError::Timeout) => {
                    stopping = stopped.try_recv().is_ok();
                    muxer.flush_until(started.elapsed().as_millis() as u64)?;
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
        };
        let track_count = muxer.tracks.len();
        match write {
            MediaWrite::Video {
                participant,
                at,
                data,
                width,
                height,
            } => muxer.video(&participant, at.as_millis() as u64, &data, width, height)?,
            MediaWrite::Audio {
                participant,
                at,
                data,
            } => muxer.audio(&participant, at.as_millis() as u64, &data)?,
        }
        if muxer.tracks.len() != track_count
            && let Ok(mut shared) = tracks.lock()
        {
            *shared = muxer.tracks();
        }
        if !stopping {
            stopping = stopped.try_recv().is_ok();
        }
    }
    muxer.finish()
}

// --- Reading (test hooks: feature `test-utils`) ----------------------------------------

#[cfg(test)]
use reading::read_vint;
#[cfg(any(test, feature = "test-utils"))]
pub use reading::{RecordingInfo, TrackInfo, ffprobe, read_recording};

/// Reading recordings back, for tests and tools (feature `test-utils`).
#[cfg(any(test, feature = "test-utils"))]
mod reading {
    use std::io::Read;

    use super::*;

    /// What [`read_recording`] found.
    #[derive(Clone, Debug, Default, PartialEq)]
    pub struct RecordingInfo {
        /// The Info's Duration, in milliseconds.
        pub duration_ms: f64,
        /// Tracks with what the clusters hold for each.
        pub tracks: Vec<TrackInfo>,
        /// Complete clusters.
        pub clusters: usize,
        /// Whether the file ends inside an element (the writer was killed).
        pub truncated: bool,
        /// Whether the segment's size was written (the recording was finished).
        pub finished: bool,
    }

    /// One track as read back.
    #[derive(Clone, Debug, Default, PartialEq, Eq)]
    pub struct TrackInfo {
        /// Track number.
        pub number: u64,
        /// Name (the participant).
        pub name: String,
        /// `V_MPEG4/ISO/AVC` or `A_OPUS`.
        pub codec: String,
        /// Blocks in complete clusters.
        pub blocks: u64,
        /// Keyframes among them.
        pub keyframes: u64,
        /// First and last block timestamps, in milliseconds.
        pub first_ms: Option<u64>,
        /// Last block timestamp.
        pub last_ms: Option<u64>,
        /// Pixel size (video).
        pub pixel_size: Option<(u64, u64)>,
    }

    pub(super) fn read_vint(data: &[u8], pos: &mut usize, keep_marker: bool) -> Option<u64> {
        let first = *data.get(*pos)?;
        let len = first.leading_zeros() as usize + 1;
        if len > 8 || *pos + len > data.len() {
            return None;
        }
        let mut value = if keep_marker {
            u64::from(first)
        } else {
            u64::from(first) & ((1u64 << (8 - len)) - 1)
        };
        let all_ones = !keep_marker && value == (1u64 << (8 - len)) - 1;
        let mut unknown = all_ones;
        for byte in &data[*pos + 1..*pos + len] {
            value = (value << 8) | u64::from(*byte);
            unknown &= *byte == 0xFF;
        }
        *pos += len;
        Some(if unknown { u64::MAX } else { value })
    }

    fn read_uint(payload: &[u8]) -> u64 {
        payload.iter().fold(0, |v, b| (v << 8) | u64::from(*b))
    }

    /// The children of a master element's payload: (id, payload), and whether it ended early.
    fn children(data: &[u8]) -> (Vec<(u32, &[u8])>, bool) {
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < data.len() {
            let (Some(id), Some(size)) = (
                read_vint(data, &mut pos, true),
                read_vint(data, &mut pos, false),
            ) else {
                return (out, true);
            };
            let size = if size == u64::MAX {
                (data.len() - pos) as u64
            } else {
                size
            };
            let Some(end) = pos
                .checked_add(size as usize)
                .filter(|end| *end <= data.len())
            else {
                return (out, true);
            };
            out.push((id as u32, &data[pos..end]));
            pos = end;
        }
        (out, false)
    }

    /// Reads a recording back: its tracks and, from every complete cluster, each track's blocks.
    pub fn read_recording(path: &Path) -> io::Result<RecordingInfo> {
        let mut data = Vec::new();
        File::open(path)?.read_to_end(&mut data)?;
        let (top, _) = children(&data);
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
        if top.first().map(|(id, _)| *id) != Some(id::EBML) {
            return Err(bad("not an EBML file"));
        }
        let segment_at = {
            let mut pos = 0;
            let _ = read_vint(&data, &mut pos, true);
            let size = read_vint(&data, &mut pos, false).ok_or_else(|| bad("bad header"))?;
            pos + size as usize
        };
        let mut pos = segment_at;
        if read_vint(&data, &mut pos, true) != Some(u64::from(id::SEGMENT)) {
            return Err(bad("no segment"));
        }
        let size_at = pos;
        let size = read_vint(&data, &mut pos, false).ok_or_else(|| bad("bad segment"))?;
        let mut info = RecordingInfo {
            finished: data[size_at..pos] != UNKNOWN_SIZE,
            ..RecordingInfo::default()
        };
        let end = if size == u64::MAX {
            data.len()
        } else {
            (pos + size as usize).min(data.len())
        };
        let (elements, truncated) = children(&data[pos..end]);
        info.truncated = truncated;
        for (element, payload) in elements {
            match element {
                id::INFO => {
                    for (child, value) in children(payload).0 {
                        if child == id::DURATION && value.len() == 8 {
                            let mut bytes = [0u8; 8];
                            bytes.copy_from_slice(value);
                            info.duration_ms = f64::from_be_bytes(bytes);
                        }
                    }
                }
                id::TRACKS => {
                    for (_, entry) in children(payload).0 {
                        let mut track = TrackInfo::default();
                        for (child, value) in children(entry).0 {
                            match child {
                                id::TRACK_NUMBER => track.number = read_uint(value),
                                id::NAME => track.name = String::from_utf8_lossy(value).into(),
                                id::CODEC_ID => track.codec = String::from_utf8_lossy(value).into(),
                                id::VIDEO => {
                                    let fields = children(value).0;
                                    let get = |want| {
                                        fields
                                            .iter()
                                            .find(|(id, _)| *id == want)
                                            .map(|(_, v)| read_uint(v))
                                    };
                                    track.pixel_size =
                                        get(id::PIXEL_WIDTH).zip(get(id::PIXEL_HEIGHT));
                                }
                                _ => {}
                            }
                        }
                        info.tracks.push(track);
                    }
                }
                id::CLUSTER => {
                    let mut cluster_ms = 0;
                    for (child, value) in children(payload).0 {
                        if child == id::TIMESTAMP {
                            cluster_ms = read_uint(value);
                        } else if child == id::SIMPLE_BLOCK {
                            let mut at = 0;
                            let Some(number) = read_vint(value, &mut at, false) else {
                                continue;
                            };
                            let Some(header) = value.get(at..at + 3) else {
                                continue;
                            };
                            let relative = i16::from_be_bytes([header[0], header[1]]);
                            let time = cluster_ms.saturating_add_signed(i64::from(relative));
                            if let Some(track) = info.tracks.iter_mut().find(|t| t.number == number)
                            {
                                track.blocks += 1;
                                track.keyframes += u64::from(header[2] & 0x80 != 0);
                                track.first_ms.get_or_insert(time);
                                track.last_ms = Some(time);
                            }
                        }
                    }
                    info.clusters += 1;
                }
                _ => {}
            }
        }
        Ok(info)
    }

    /// What `ffprobe` (from ffmpeg) sees in a media file: each stream as (title, codec, frames
    /// it decoded), sorted, and the duration in seconds. An independent check of our files for
    /// tests and tools; needs `ffprobe` on the `PATH`.
    pub fn ffprobe(path: &Path) -> Result<(Vec<(String, String, u64)>, f64), String> {
        let output = std::process::Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-count_frames",
                "-show_streams",
                "-show_format",
            ])
            .args(["-of", "json"])
            .arg(path)
            .output()
            .map_err(|err| format!("cannot run ffprobe (Debian: apt install ffmpeg): {err}"))?;
        if !output.status.success() {
            return Err(format!(
                "ffprobe {}: {}",
                path.display(),
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        let json: serde_json::Value = serde_json::from_slice(&output.stdout)
            .map_err(|err| format!("ffprobe output: {err}"))?;
        let mut streams: Vec<(String, String, u64)> = json["streams"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|s| {
                (
                    s["tags"]["title"].as_str().unwrap_or("").to_owned(),
                    s["codec_name"].as_str().unwrap_or("").to_owned(),
                    s["nb_read_frames"]
                        .as_str()
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(0),
                )
            })
            .collect();
        streams.sort();
        let duration = json["format"]["duration"]
            .as_str()
            .and_then(|d| d.parse().ok())
            .unwrap_or(0.0);
        Ok((streams, duration))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// Sizes take the shortest form and all-ones stays reserved for "unknown".
    #[test]
    fn sizes_are_shortest_vints() {
        let encoded = |size| {
            let mut out = Vec::new();
            put_size(&mut out, size);
            out
        };
        assert_eq!(encoded(0), [0x80]);
        assert_eq!(encoded(126), [0xFE]);
        assert_eq!(encoded(127), [0x40, 0x7F]);
        assert_eq!(encoded(16_382), [0x7F, 0xFE]);
        assert_eq!(encoded(16_383), [0x20, 0x3F, 0xFF]);
        for size in [0, 1, 126, 127, 300, 16_383, 1 << 30] {
            let bytes = encoded(size);
            assert_eq!(read_vint(&bytes, &mut 0, false), Some(size));
        }
    }

    /// 3- and 4-byte start codes both split into the right NAL units; the `avcC` carries the
    /// SPS and PPS.
    #[test]
    fn annex_b_becomes_length_prefixed_with_avcc() {
        let au = [
            0, 0, 0, 1, 0x67, 0x42, 0xE0, 0x1F, 0xAA, 0, 0, 1, 0x68, 0xCE, 0, 0, 0, 1, 0x65, 1, 2,
        ];
        let nals = nal_units(&au);
        assert_eq!(
            nals,
            vec![
                &[0x67, 0x42, 0xE0, 0x1F, 0xAA][..],
                &[0x68, 0xCE],
                &[0x65, 1, 2]
            ]
        );
        assert_eq!(length_prefixed(&nals[2..]), vec![0, 0, 0, 3, 0x65, 1, 2]);
        let config = avc_config(&nals).expect("avcC");
        assert_eq!(&config[..6], &[1, 0x42, 0xE0, 0x1F, 0xFF, 0xE1]);
        assert_eq!(&config[6..8], &[0, 5]);
    }

    /// Tracks are added as media arrives (video only from a keyframe), every block lands in
    /// a cluster, and the duration and segment size are written on finish.
    #[test]
    fn muxes_tracks_and_clusters() {
        let keyframe = [
            0, 0, 0, 1, 0x67, 0x42, 0xE0, 0x1F, 0, 0, 0, 1, 0x68, 0xCE, 0, 0, 0, 1, 0x65, 9,
        ];
        let delta = [0, 0, 0, 1, 0x41, 7];
        let opus = [0x78u8, 1, 2, 3];
        let dir = std::env::temp_dir().join(format!("huddle-mux-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("mux.mkv");
        let mut muxer = MkvMuxer::new(File::create(&path).expect("file"), "test").expect("mux");
        muxer.video("alice", 0, &delta, 64, 48).expect("skipped");
        // 100 video frames every 33 ms from 10 ms, 150 audio packets every 20 ms, in the
        // order they happen.
        let mut events: Vec<(u64, Option<u64>)> = (0..100u64)
            .map(|n| (10 + n * 33, Some(n)))
            .chain((0..150u64).map(|n| (n * 20, None)))
            .collect();
        events.sort();
        for (at, video) in events {
            match video {
                Some(n) => {
                    let frame: &[u8] = if n % 30 == 0 { &keyframe } else { &delta };
                    muxer.video("alice", at, frame, 64, 48).expect("video");
                }
                None => muxer.audio("bob", at, &opus).expect("audio"),
            }
        }
        let (tracks, duration) = muxer.finish().expect("finish");
        assert_eq!(tracks.len(), 2);
        assert_eq!(tracks[0].kind, TrackKind::Audio, "bob spoke first");
        assert_eq!(tracks[1].frames, 100);
        assert_eq!(duration, 10 + 99 * 33);
        let info = read_recording(&path).expect("read");
        assert!(info.finished && !info.truncated);
        assert_eq!(info.duration_ms, duration as f64);
        assert!(info.clusters >= 3, "{info:?}");
        let video = &info.tracks[1];
        assert_eq!(
            (video.name.as_str(), video.codec.as_str()),
            ("alice", "V_MPEG4/ISO/AVC")
        );
        assert_eq!((video.blocks, video.keyframes), (100, 4));
        assert_eq!(video.pixel_size, Some((64, 48)));
        let audio = &info.tracks[0];
        assert_eq!(
            (audio.name.as_str(), audio.codec.as_str()),
            ("bob", "A_OPUS")
        );
        assert_eq!(audio.blocks, 150);
        assert_eq!((audio.first_ms, audio.last_ms), (Some(0), Some(149 * 20)));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A file cut anywhere (the app killed) still reads: every cluster written before the cut
    /// is there, the Info's duration covers them, and the cut cluster is reported.
    #[test]
    fn a_cut_file_keeps_its_complete_clusters() {
        let mut muxer = MkvMuxer::new(Cursor::new(Vec::new()), "cut").expect("mux");
        let opus = [0x78u8, 1, 2, 3];
        for n in 0..300u64 {
            muxer.audio("carol", n * 20, &opus).expect("audio");
        }
        // No finish: the process "died" with the last cluster still in memory.
        let written = muxer.out.get_ref().clone();
        let dir = std::env::temp_dir().join(format!("huddle-cut-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("cut.mkv");
        std::fs::write(&path, &written[..written.len() - 10]).expect("write");
        let info = read_recording(&path).expect("read");
        assert!(!info.finished && info.truncated);
        assert_eq!(info.tracks.len(), 1);
        let blocks = info.tracks[0].blocks;
        assert!((200..300).contains(&blocks), "{blocks}");
        assert!(info.duration_ms >= 4000.0, "{}", info.duration_ms);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Audio packets arriving with jitter keep a continuous 20 ms timeline; a real gap
    /// (a mute) moves it.
    #[test]
    fn audio_timeline_absorbs_jitter_but_keeps_gaps() {
        let mut muxer = MkvMuxer::new(Cursor::new(Vec::new()), "jitter").expect("mux");
        let opus = [0x78u8, 1, 2, 3];
        for (n, jitter) in [0u64, 7, 3, 15, 1].iter().enumerate() {
            muxer
                .audio("dan", n as u64 * 20 + jitter, &opus)
                .expect("audio");
        }
        let times: Vec<u64> = muxer.pending.iter().map(|b| b.at_ms).collect();
        assert_eq!(times, vec![0, 20, 40, 60, 80]);
        muxer.audio("dan", 2000, &opus).expect("after a gap");
        assert_eq!(muxer.tracks[0].last_ms, 2000);
    }

    /// Frames of one track arriving in the same millisecond (a burst after a stall) get
    /// strictly increasing timestamps: ffmpeg refuses equal ones.
    #[test]
    fn a_burst_in_one_millisecond_keeps_timestamps_increasing() {
        let keyframe = [
            0, 0, 0, 1, 0x67, 0x42, 0xE0, 0x1F, 0, 0, 0, 1, 0x68, 0xCE, 0, 0, 0, 1, 0x65, 9,
        ];
        let delta = [0, 0, 0, 1, 0x41, 7];
        let mut muxer = MkvMuxer::new(Cursor::new(Vec::new()), "burst").expect("mux");
        muxer.video("erin", 100, &keyframe, 64, 48).expect("video");
        for _ in 0..3 {
            muxer.video("erin", 100, &delta, 64, 48).expect("video");
        }
        muxer.video("erin", 102, &delta, 64, 48).expect("video");
        let times: Vec<u64> = muxer.pending.iter().map(|b| b.at_ms).collect();
        assert_eq!(times, vec![100, 101, 102, 103, 104]);
    }

    /// An unwritable place gives a typed error naming the path; a full disk too.
    #[test]
    fn unwritable_paths_are_typed_errors() {
        let err = Recording::start(Path::new("/proc/huddle/x.mkv"), "t", |_| {})
            .err()
            .expect("no recording in /proc");
        assert!(matches!(err, RecordingError::Create { .. }), "{err}");
        assert!(err.to_string().contains("/proc/huddle/x.mkv"));
        let full = Recording::start(Path::new("/dev/full"), "t", |_| {});
        // The header fits the write buffer; the first flush hits the full disk.
        match full {
            Err(RecordingError::Create { source, .. }) => {
                assert_eq!(source.kind(), io::ErrorKind::StorageFull)
            }
            other => panic!("expected a storage-full error, got {:?}", other.err()),
        }
    }
}
