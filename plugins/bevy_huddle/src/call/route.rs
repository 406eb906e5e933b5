//! What each audio route gives the mixer: [`RouteGain`], left and right.
//!
//! The call model computes a plain default from the route's volume and local mute, the same
//! in both ears ([`set_plain_route_gains`], in `HuddleSystems::Apply`). A plugin that knows
//! better (spatial voice) marks the routes it computes with [`RefinedRouteGain`] and writes
//! their gains itself; the default then leaves them alone. Media applies whatever the gain is,
//! so volume and local mute work whichever plugins a game keeps.

use bevy::prelude::*;

use super::model::AudioRoute;

/// The left/right gains of a route, as the mixer gets them (required by [`AudioRoute`]).
#[derive(Component, Clone, Copy, Debug, PartialEq)]
pub struct RouteGain {
    /// Left ear.
    pub left: f32,
    /// Right ear.
    pub right: f32,
    /// Not worth decoding (e.g. beyond hearing distance).
    pub culled: bool,
}

impl Default for RouteGain {
    fn default() -> Self {
        Self::plain(1.0)
    }
}

impl RouteGain {
    /// The same gain in both ears, decoded.
    pub fn plain(gain: f32) -> Self {
        Self {
            left: gain,
            right: gain,
            culled: false,
        }
    }

    /// The plain gain of a route: its volume, or silence when muted locally.
    pub fn of_route(route: &AudioRoute) -> Self {
        Self::plain(if route.local_mute { 0.0 } else { route.volume })
    }
}

/// Marks a route whose [`RouteGain`] another plugin computes (spatial voice); the plain
/// default does not touch it.
#[derive(Component, Clone, Copy, Debug, Default)]
pub struct RefinedRouteGain;

/// Sets each changed route's plain gain from its volume and local mute, unless another plugin
/// refines it.
pub(crate) fn set_plain_route_gains(
    mut routes: Query<
        (&AudioRoute, &mut RouteGain),
        (Changed<AudioRoute>, Without<RefinedRouteGain>),
    >,
) {
    for (route, mut gain) in &mut routes {
        gain.set_if_neq(RouteGain::of_route(route));
    }
}
