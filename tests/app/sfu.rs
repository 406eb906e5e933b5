//! Large calls through the SFU: bots on hosts of the network lab ([`crate::net_lab`]) meet
//! in a session that the huddle server routes through a real Janus Gateway (VideoRoom) on
//! the server host. Janus, like any SFU, is another machine here: it gathers no loopback
//! candidates, so the lab's namespaces are where it can be reached.
//!
//! ```text
//!   bots 10.77.0.1x ──(one publishing + one receiving connection each)──▶ Janus 10.77.0.1
//!        └──── huddle protocol (ws) ──▶ huddle server 10.77.0.1 ──(Janus WebSocket API)──┘
//! ```

use std::time::Duration;

use serde_json::Value;

use crate::net_lab::{Lab, Uplink, require_root};

/// Bots (uids `p1`…`pN`) on their own LAN hosts join one direct session for `seconds`;
/// returns each one's statistics, in order.
fn session_of_bots(lab: &mut Lab, count: u8, session: &str, seconds: u32) -> Vec<(String, Value)> {
    let hosts: Vec<String> = (1..=count)
        .map(|n| lab.host(&format!("h{n}"), n, Uplink::Lan))
        .collect();
    let uids: Vec<String> = (1..=count).map(|n| format!("p{n}")).collect();
    for (host, uid) in hosts.iter().zip(&uids) {
        lab.bot(host, uid, seconds, &["--session", session]);
    }
    lab.wait_for_bots(Duration::from_secs(u64::from(seconds) + 60));
    uids.into_iter()
        .map(|uid| {
            let stats = lab.stats_of(&uid);
            (uid, stats)
        })
        .collect()
}

/// Every bot decoded every other bot's video (at `min_fps` or more) and heard its tone, with
/// no errors.
fn assert_everyone_receives_everyone(all: &[(String, Value)], min_fps: f64) {
    for (uid, stats) in all {
        for (other, _) in all.iter().filter(|(o, _)| o != uid) {
            let remote = &stats["remotes"][other];
            let fps = remote["video_fps"].as_f64().unwrap_or(0.0);
            assert!(
                fps >= min_fps,
                "{uid} got {other}'s video at {fps} fps: {stats:#}"
            );
            assert!(
                remote["audio_tone_hz"].as_f64().is_some(),
                "{uid} did not hear {other}'s tone: {stats:#}"
            );
        }
        assert_eq!(
            stats["errors"],
            Value::Array(vec![]),
            "{uid}'s errors: {stats:#}"
        );
    }
}

/// A call of four with the SFU threshold at 0 goes through Janus from its start: every bot
/// publishes once and receives the three others' video and voice over its one receiving
/// connection, each track labelled with its owner.
#[test]
fn sfu_call_of_four_goes_through_janus() {
    require_root();
    let _serial = crate::one_media_test_at_a_time();
    let mut lab = Lab::new("sfu4");
    lab.start_janus();
    lab.start_servers(&["--janus", "ws://10.77.0.1:8188", "--sfu-above", "0"]);
    let all = session_of_bots(&mut lab, 4, "sfu-four", 8);
    assert_everyone_receives_everyone(&all, 5.0);
}
