#![allow(missing_docs)] // criterion_group! generates an undocumented function
//! Per-frame ECS cost of layout + tile update for 2, 9, 25, 49 and 100 tiles.
//!
//! - `layout_frame_{mode}/N`: one run of `PostUpdate` (where `HuddleSystems::Layout` lives,
//!   single-threaded) after the viewport changed, so every tile is laid out again and its
//!   node rewritten: the worst frame.
//! - `layout_idle/N`: the same schedule with nothing changed: the common frame.
//! - `compute_layout/N`: the bare geometry, no ECS, for the ratio.
//!
//! Whole `app.update()` frames are not measured here: on 2 cores they are dominated by the
//! multi-threaded executor's fixed cost (~0.6 ms whatever the tile count).
//!
//! Run: `cargo bench -p bevy_huddle --bench layout`.

use std::hint::black_box;

use bevy::ecs::schedule::SingleThreadedExecutor;
use bevy::prelude::*;
use bevy_huddle::prelude::*;
use bevy_huddle::view::layout::{LayoutRequest, LayoutTile, compute_layout};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

const SIZES: [usize; 5] = [2, 9, 25, 49, 100];

fn call_app(tiles: usize, mode: LayoutMode) -> (App, Entity) {
    let mut app = App::new();
    app.add_plugins((MinimalPlugins, AssetPlugin::default(), HuddlePlugins));
    app.edit_schedule(PostUpdate, |schedule| {
        schedule.set_executor(SingleThreadedExecutor::new());
    });
    app.finish();
    app.update();
    let settings = CallSettings::builder().mode(mode).build().expect("valid");
    let call = app
        .world_mut()
        .spawn(Call::new("bench", settings).group())
        .id();
    app.update();
    let others = (1..tiles)
        .map(|i| ParticipantInfo::new(format!("p{i}"), format!("Person {i}")))
        .collect();
    app.world_mut().write_message(SessionUpdate {
        call,
        change: SessionChange::Joined {
            local: ParticipantInfo::new("me", "Me"),
            others,
        },
    });
    for _ in 0..3 {
        app.update();
    }
    (app, call)
}

fn bench_frames(c: &mut Criterion) {
    for mode in [LayoutMode::Default, LayoutMode::Spotlight] {
        let mut relayout = c.benchmark_group(format!("layout_frame_{mode:?}"));
        for n in SIZES {
            let (mut app, call) = call_app(n, mode);
            let mut flip = false;
            relayout.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
                b.iter(|| {
                    flip = !flip;
                    let width = if flip { 1280.0 } else { 1279.0 };
                    app.world_mut()
                        .get_mut::<CallViewport>(call)
                        .expect("viewport")
                        .size = Vec2::new(width, 720.0);
                    app.world_mut().run_schedule(PostUpdate);
                });
            });
        }
        relayout.finish();
    }
    let mut idle = c.benchmark_group("layout_idle");
    for n in SIZES {
        let (mut app, _) = call_app(n, LayoutMode::Default);
        idle.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| app.world_mut().run_schedule(PostUpdate));
        });
    }
    idle.finish();
}

fn bench_geometry(c: &mut Criterion) {
    let mut group = c.benchmark_group("compute_layout");
    for n in SIZES {
        let tiles: Vec<LayoutTile> = (0..n)
            .map(|i| LayoutTile {
                key: Entity::from_raw_u32(i as u32 + 1).expect("entity"),
                local: i == 0,
                video_aspect: Some(16.0 / 9.0),
            })
            .collect();
        let request = LayoutRequest {
            mode: LayoutMode::Default,
            viewport: Vec2::new(1280.0, 720.0),
            tiles: &tiles,
            main: None,
            floating_position: None,
            fit: AspectFit::Contain,
        };
        group.bench_with_input(BenchmarkId::from_parameter(n), &request, |b, request| {
            b.iter(|| compute_layout(black_box(request)));
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = bench_frames, bench_geometry
}
criterion_main!(benches);
