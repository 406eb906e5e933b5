//! `huddle audio-check`: runs the voice processing (echo cancellation, noise suppression, gain
//! control) on a generated scene and prints its figures against their targets, like WebRTC's
//! `audioproc_f`. It needs no devices: the speech is two committed clips, or WAV files given
//! with `--far`/`--near` (see [`huddle_media::voice_check`]).

use std::process::ExitCode;

use huddle_media::voice_check::{CheckFigures, CheckScene, EchoPath, targets};

/// `huddle audio-check` options.
#[derive(Debug, clap::Args)]
pub struct AudioCheckArgs {
    /// Print the figures as JSON.
    #[arg(long)]
    pub json: bool,
    /// The far-end talker, whose voice comes back as echo (a WAV file; default: a clip).
    #[arg(long, value_name = "WAV")]
    pub far: Option<std::path::PathBuf>,
    /// The near-end talker (a WAV file; default: a clip).
    #[arg(long, value_name = "WAV")]
    pub near: Option<std::path::PathBuf>,
    /// The echo path's delay, ms.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(0..=500))]
    pub echo_delay_ms: u32,
    /// The echo path's gain, 0 to 1.
    #[arg(long, default_value_t = 0.5, value_parser = echo_gain)]
    pub echo_gain: f32,
    /// Exit with failure when a figure misses its target.
    #[arg(long)]
    pub strict: bool,
}

/// An echo gain: a number from 0 to 1.
fn echo_gain(text: &str) -> Result<f32, String> {
    match text.parse::<f32>() {
        Ok(gain) if (0.0..=1.0).contains(&gain) => Ok(gain),
        _ => Err(format!("`{text}` is not a gain from 0 to 1")),
    }
}

/// Runs the check and prints the figures.
pub fn run(args: AudioCheckArgs) -> ExitCode {
    let scene = CheckScene {
        far_wav: args.far,
        near_wav: args.near,
        echo: EchoPath {
            delay_ms: args.echo_delay_ms,
            gain: args.echo_gain,
            ..EchoPath::default()
        },
    };
    let figures = match huddle_media::voice_check::run(&scene) {
        Ok(figures) => figures,
        Err(err) => {
            eprintln!("huddle audio-check: {err}");
            return ExitCode::FAILURE;
        }
    };
    let misses = figures.misses();
    if args.json {
        let mut json = serde_json::to_value(&figures).unwrap_or_default();
        json["targets_met"] = serde_json::Value::Bool(misses.is_empty());
        json["misses"] = serde_json::json!(misses);
        println!("{json:#}");
    } else {
        print!("{}", table(&figures));
        for miss in &misses {
            println!("MISSED: {miss}");
        }
    }
    if args.strict && !misses.is_empty() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// The figures as a table with their targets.
fn table(f: &CheckFigures) -> String {
    let path = &f.echo_path;
    [
        format!(
            "scene: echo {} ms at gain {}, tail {:?}; noise at {:.1} dB SNR; quiet talker at {:.1} dBFS\n",
            path.delay_ms, path.gain, path.tail, f.ns_input_snr_db, f.agc_input_dbfs
        ),
        format!(
            "echo return loss enhancement  {:>7.1} dB    target ≥ {} dB\n",
            f.erle_db,
            targets::ERLE_DB
        ),
        format!(
            "convergence                   {:>7} ms    target ≤ {} ms\n",
            f.convergence_ms
                .map_or_else(|| "never".to_owned(), |ms| ms.to_string()),
            targets::CONVERGENCE_MS
        ),
        format!(
            "double-talk correlation       {:>7.3}       target ≥ {} (unprocessed microphone: {:.3})\n",
            f.double_talk_correlation,
            targets::DOUBLE_TALK_CORRELATION,
            f.double_talk_correlation_unprocessed
        ),
        format!(
            "double-talk near-end level    {:>7.1} dB    target ≥ {} dB (against no echo at all)\n",
            f.double_talk_level_db,
            targets::DOUBLE_TALK_LEVEL_DB
        ),
        format!(
            "processing delay              {:>7.1} ms\n",
            f.processing_delay_ms
        ),
        format!(
            "noise suppression SNR gain    {:>7.1} dB    target ≥ {} dB\n",
            f.ns_snr_gain_db,
            targets::NS_SNR_GAIN_DB
        ),
        format!(
            "gain control output           {:>7.1} dBFS  target {} ± {} dBFS\n",
            f.agc_output_dbfs,
            targets::AGC_OUTPUT_DBFS,
            targets::AGC_TOLERANCE_DB
        ),
        format!(
            "CPU per 10 ms (whole chain)   {:>7.1} µs    Opus encoding the same: {:.1} µs ({:.2}× it)\n",
            f.cpu_us_per_10ms,
            f.opus_encode_us_per_10ms,
            f.cpu_us_per_10ms / f.opus_encode_us_per_10ms.max(1e-9)
        ),
    ]
    .concat()
}
