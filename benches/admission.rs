//! Micro-benchmarks of the review path without the network: decoding, the validating decision and the
//! mutating path, on the small (~4 KiB) and large (~500 KiB) Workflows the HTTP benchmark sends.
//!
//! `cargo bench --bench admission` (add `-- --quick` for a short run).

#[path = "../examples/bench/fixtures.rs"]
mod fixtures;

use std::hint::black_box;
use std::time::SystemTime;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use stage_guard::admission::{self, Webhook, request};
use stage_guard::core::Policy;

fn bodies(object_bytes: usize) -> Vec<(&'static str, &'static str, Vec<u8>)> {
    fixtures::templates(object_bytes)
        .into_iter()
        .map(|t| (t.name, t.path, t.body(fixtures::FIXED_UID)))
        .collect()
}

fn admission(c: &mut Criterion) {
    let policy = Policy::default_policy();
    let now = SystemTime::now();
    for (size, object_bytes) in [
        ("small", fixtures::SMALL_OBJECT_BYTES),
        ("large", fixtures::LARGE_OBJECT_BYTES),
    ] {
        let mut group = c.benchmark_group(format!("review/{size}"));
        let all = bodies(object_bytes);
        group.throughput(Throughput::Bytes(all[0].2.len() as u64));
        // Decoding alone: metadata of object and oldObject, spec and status skipped.
        group.bench_function("decode", |b| {
            b.iter(|| request::decode(black_box(&all[0].2)).map(|r| r.uid.len()))
        });
        for (name, path, body) in &all {
            let webhook = if path.starts_with("/mutate") {
                Webhook::Mutate
            } else {
                Webhook::Validate
            };
            group.bench_function(*name, |b| {
                b.iter(|| {
                    admission::answer(&policy, webhook, black_box(body), now).map(|a| a.body.len())
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, admission);
criterion_main!(benches);
