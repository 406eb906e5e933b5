//! Spatial voice: a participant's voice comes from where their avatar stands.
//!
//! Put [`VoiceEmitter`] on any entity with a `Transform` (an avatar, a screen) naming the
//! participant, and [`VoiceListener`] on the camera or the player. Every frame
//! [`update_spatial_gains`] computes, for each emitter, the direction and distance in the
//! listener's frame and from them the left/right gains of that participant's audio route
//! ([`RouteGain`], which it marks [`RefinedRouteGain`]):
//!
//! - **Panning**: equal-power, by azimuth (a voice straight left is only in the left ear).
//! - **Attenuation**: [`DistanceModel::Inverse`] or [`DistanceModel::Linear`] between
//!   `reference_distance` and `max_distance`; silent beyond `max_distance` (and, with
//!   `cull_beyond_max`, not even decoded: see `CallMediaSession`).
//! - **Occlusion**: a game may put [`VoiceOcclusion`] on the emitter (0 = blocked, 1 = clear).
//! - **Smoothness**: each gain moves at most `max_step_per_frame` per update, and the mixer
//!   ramps within each 20 ms block, so walking around never clicks.
//!
//! Routes whose participant has no emitter keep a plain gain (volume, or silence when muted
//! locally), the same in both ears.

use bevy::prelude::*;

use crate::HuddleSystems;
use crate::call::model::*;
use crate::call::route::{RefinedRouteGain, RouteGain};

/// Spatial voice: gains of each audio route from emitters and the listener.
pub struct SpatialVoicePlugin;

impl Plugin for SpatialVoicePlugin {
    fn build(&self, app: &mut App) {
        app.init_resource::<SpatialAudioSettings>().add_systems(
            PostUpdate,
            update_spatial_gains
                .after(TransformSystems::Propagate)
                .before(HuddleSystems::Send),
        );
    }
}

/// Marks the entity whose ears the spatial mix uses (the camera or the player).
#[derive(Component, Clone, Copy, Debug, Default)]
pub struct VoiceListener;

/// Makes this entity (with a `Transform`) the place a participant's voice comes from.
#[derive(Component, Clone, Copy, Debug, PartialEq, Eq)]
pub struct VoiceEmitter(pub Entity);

/// How much of the voice gets through to the listener (0 = blocked, 1 = clear), set by the game.
#[derive(Component, Clone, Copy, Debug, PartialEq)]
pub struct VoiceOcclusion(pub f32);

/// How loudness falls with distance.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DistanceModel {
    /// `reference / (reference + rolloff × (d − reference))` (physical-ish).
    #[default]
    Inverse,
    /// Straight line from 1 at `reference_distance` to 0 at `max_distance`.
    Linear,
}

/// Spatial voice settings.
#[derive(Resource, Clone, Copy, Debug, PartialEq)]
pub struct SpatialAudioSettings {
    /// The distance model.
    pub model: DistanceModel,
    /// Full volume up to this distance.
    pub reference_distance: f32,
    /// Silent beyond this distance.
    pub max_distance: f32,
    /// How fast the inverse model falls.
    pub rolloff: f32,
    /// Don't decode voices beyond `max_distance` (saves CPU).
    pub cull_beyond_max: bool,
    /// Largest change of a gain in one update (keeps movement smooth).
    pub max_step_per_frame: f32,
}

impl Default for SpatialAudioSettings {
    fn default() -> Self {
        Self {
            model: DistanceModel::Inverse,
            reference_distance: 1.0,
            max_distance: 30.0,
            rolloff: 1.0,
            cull_beyond_max: true,
            max_step_per_frame: 0.15,
        }
    }
}

/// Distance attenuation, 0..=1, per the settings.
pub fn attenuation(settings: &SpatialAudioSettings, distance: f32) -> f32 {
    let reference = settings.reference_distance.max(1e-3);
    let max = settings.max_distance.max(reference);
    if distance >= max {
        return 0.0;
    }
    if distance <= reference {
        return 1.0;
    }
    match settings.model {
        DistanceModel::Inverse => {
            reference / (reference + settings.rolloff.max(0.0) * (distance - reference))
        }
        DistanceModel::Linear => 1.0 - (distance - reference) / (max - reference),
    }
}

/// Equal-power pan from a direction in the listener's frame (x right, −z forward):
/// returns (left, right) gains with left² + right² = 1.
pub fn equal_power_pan(direction_in_listener: Vec3) -> (f32, f32) {
    let horizontal = Vec2::new(direction_in_listener.x, -direction_in_listener.z);
    let pan = if horizontal.length_squared() < 1e-8 {
        0.0
    } else {
        horizontal.normalize().x // -1 left … 1 right
    };
    let angle = (pan + 1.0) * std::f32::consts::FRAC_PI_4; // 0 … π/2
    (angle.cos(), angle.sin())
}

/// Computes every route's left/right gains from emitters, the listener and the settings, and
/// marks the route as refined (the call model's plain default then leaves it alone).
pub(crate) fn update_spatial_gains(
    settings: Res<SpatialAudioSettings>,
    listener: Query<&GlobalTransform, With<VoiceListener>>,
    emitters: Query<(&VoiceEmitter, &GlobalTransform, Option<&VoiceOcclusion>)>,
    mut routes: Query<(
        Entity,
        &AudioRoute,
        &RouteOf,
        &mut RouteGain,
        Has<RefinedRouteGain>,
    )>,
    mut commands: Commands,
) {
    let listener = listener.iter().next().map(|t| t.compute_transform());
    for (route_entity, route, route_of, mut gain, refined) in &mut routes {
        let volume = RouteGain::of_route(route).left;
        let emitter = emitters.iter().find(|(e, ..)| e.0 == route_of.0);
        let (target, culled) = match (emitter, listener) {
            (Some((_, place, occlusion)), Some(ears)) => {
                let offset = place.translation() - ears.translation;
                let local = ears.rotation.inverse() * offset;
                let distance = offset.length();
                let loudness = attenuation(&settings, distance)
                    * occlusion.map_or(1.0, |o| o.0.clamp(0.0, 1.0));
                let (left, right) = equal_power_pan(local);
                let culled = settings.cull_beyond_max && distance >= settings.max_distance;
                (
                    (left * loudness * volume, right * loudness * volume),
                    culled,
                )
            }
            _ => ((volume, volume), false),
        };
        let next = if refined {
            let step = settings.max_step_per_frame.max(1e-3);
            RouteGain {
                left: gain.left + (target.0 - gain.left).clamp(-step, step),
                right: gain.right + (target.1 - gain.right).clamp(-step, step),
                culled,
            }
        } else {
            // First sight of this route: start where the spatial mix puts it.
            commands.entity(route_entity).insert(RefinedRouteGain);
            RouteGain {
                left: target.0,
                right: target.1,
                culled,
            }
        };
        gain.set_if_neq(next);
    }
}
