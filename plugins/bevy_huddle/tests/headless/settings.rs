//! `CallSettings`: reference defaults, serde round trips, and `INVALID_PROP_EXCEPTION` for what
//! cannot work.

use bevy_huddle::call::settings::{ButtonSettings, TileCorner};
use bevy_huddle::prelude::*;

/// Every default equals the reference SDK's documented default.
#[test]
fn defaults_match_the_reference() {
    let s = CallSettings::default();
    assert!(s.default_layout);
    assert_eq!(s.mode, LayoutMode::Default);
    assert!(s.enable_video_tile_click);
    assert!(s.enable_video_tile_drag);
    assert_eq!(s.avatar_mode, AvatarMode::Circle);
    assert_eq!(s.main_video_container.aspect, AspectFit::Contain);
    assert_eq!(
        s.main_video_container.name_label.position,
        TileCorner::BottomLeft
    );
    assert!(s.main_video_container.name_label.visible);
    assert!(s.main_video_container.network_label.visible);
    assert!(s.main_video_container.fullscreen_button.visible);
    assert!(!s.audio_only);
    assert!(!s.start_audio_muted);
    assert!(!s.start_video_muted);
    assert_eq!(s.default_audio_mode, AudioMode::Speaker);
    assert!(!s.start_recording_on_call_start);
    assert_eq!(s.idle_timeout_secs, 180.0);
    let b = s.buttons;
    assert!(b.show_end_call && b.show_mute_audio && b.show_pause_video && b.show_switch_camera);
    assert!(b.show_audio_mode && b.show_screen_share && b.show_mode && b.show_switch_to_video);
    assert!(!b.show_recording, "the recording button is off by default");
    assert_eq!(CallSettings::builder().build(), Ok(s));
}

/// Default and customised settings survive a JSON round trip unchanged.
#[test]
fn settings_round_trip_through_serde() {
    let custom = CallSettings::builder()
        .mode(LayoutMode::Spotlight)
        .avatar_mode(AvatarMode::Fullscreen)
        .aspect(AspectFit::Cover)
        .audio_only(true)
        .start_audio_muted(true)
        .default_audio_mode(AudioMode::Headphones)
        .idle_timeout_secs(30.5)
        .show_recording_button(true)
        .show_mode_button(false)
        .build()
        .expect("valid");
    for settings in [CallSettings::default(), custom] {
        let json = serde_json::to_string(&settings).expect("serialize");
        assert_eq!(CallSettings::from_json(&json), Ok(settings));
    }
}

/// Missing fields take their defaults, and reference mode names are accepted.
#[test]
fn partial_json_and_reference_names_parse() {
    let settings = CallSettings::from_json(r#"{"mode":"SPOTLIGHT","buttons":{"show_mode":false}}"#)
        .expect("parses");
    assert_eq!(settings.mode, LayoutMode::Spotlight);
    assert!(!settings.buttons.show_mode);
    assert_eq!(
        settings.buttons,
        ButtonSettings {
            show_mode: false,
            ..ButtonSettings::default()
        }
    );
    assert_eq!("single".parse::<LayoutMode>(), Ok(LayoutMode::Single));
    assert_eq!("DEFAULT".parse::<LayoutMode>(), Ok(LayoutMode::Default));
}

/// Unknown modes, non-positive or huge timeouts, unknown fields, bad colours and malformed JSON
/// are all refused with `INVALID_PROP_EXCEPTION`, naming the property.
#[test]
fn invalid_settings_give_invalid_prop() {
    let cases = [
        r#"{"mode":"carousel"}"#,
        r#"{"idle_timeout_secs":-5}"#,
        r#"{"idle_timeout_secs":0}"#,
        r#"{"idle_timeout_secs":1e12}"#,
        r#"{"no_such_option":true}"#,
        r#"{"main_video_container":{"name_label_color":"not-a-colour"}}"#,
        r#"{"audio_only":"yes"}"#,
        "{not json",
    ];
    for json in cases {
        let err = CallSettings::from_json(json).expect_err(json);
        assert_eq!(err.code(), ErrorCode::InvalidProp, "{json}: {err}");
        assert_eq!(err.code().as_str(), "INVALID_PROP_EXCEPTION");
    }
    let err = CallSettings::builder()
        .mode_name("carousel")
        .build()
        .expect_err("unknown mode");
    assert!(
        matches!(err, HuddleError::InvalidProp { prop: "mode", .. }),
        "{err:?}"
    );
    let err = CallSettings::builder()
        .idle_timeout_secs(f64::NAN)
        .build()
        .expect_err("NaN");
    assert!(matches!(
        err,
        HuddleError::InvalidProp {
            prop: "idle_timeout_secs",
            ..
        }
    ));
}

/// Tile drag outside Spotlight is allowed but inert, as in the reference.
#[test]
fn drag_outside_spotlight_is_inert_not_an_error() {
    let grid = CallSettings::builder()
        .enable_video_tile_drag(true)
        .mode(LayoutMode::Default)
        .build()
        .expect("allowed");
    assert!(!grid.tile_drag_active());
    let spotlight = CallSettings::builder()
        .mode_name("spotlight")
        .build()
        .expect("valid");
    assert!(spotlight.tile_drag_active());
}
