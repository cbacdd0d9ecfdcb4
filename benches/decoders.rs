//! Which JSON decoder reads the request: the candidates side by side, in one run, on the small
//! (~10 KiB) and large (~1 MiB) reviews the HTTP benchmark sends.
//!
//! ```text
//! cargo bench --features decoder-ab --bench decoders            # criterion, time per decode
//! STAGE_GUARD_DECODE=serde:large:200 cargo bench --features decoder-ab --bench decoders
//!     # decode one body 200 times and exit: run under `valgrind --tool=callgrind` for instruction counts
//! ```
//!
//! Candidates, each reading the same members (apiVersion, kind, request uid/name/namespace/operation/
//! userInfo, the metadata of object and oldObject with labels and annotations) and skipping the rest:
//! - `product`: what stage-guard uses (`stage_guard::admission::request::decode`);
//! - `serde`: serde's derive over `serde_json::from_str` after `std::str::from_utf8` (serde_json does not
//!   check UTF-8 inside values it ignores, so the whole body is checked first);
//! - `serde-unchecked`: the same without the UTF-8 check (accepts invalid UTF-8 in skipped values: not
//!   acceptable, shown for the cost of the check);
//! - `sonic`: sonic-rs's checked `from_slice` with the same derive (it validates UTF-8 itself).

#[path = "../examples/bench/fixtures.rs"]
mod fixtures;

use std::borrow::Cow;
use std::collections::HashMap;
use std::hint::black_box;

use criterion::{Criterion, Throughput};
use serde::Deserialize;
use stage_guard::admission::request;

#[derive(Deserialize)]
struct Review<'a> {
    #[serde(rename = "apiVersion", borrow)]
    api_version: Option<Cow<'a, str>>,
    #[serde(borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    request: Option<Request<'a, A<'a>>>,
}

/// The annotation value type: borrowed raw JSON, read only when a decision needs it.
type A<'a> = &'a serde_json::value::RawValue;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Request<'a, V> {
    uid: Option<String>,
    name: Option<String>,
    namespace: Option<String>,
    operation: Option<String>,
    #[serde(default)]
    user_info: UserInfo,
    #[serde(borrow)]
    object: Option<Object<'a, V>>,
    #[serde(borrow)]
    old_object: Option<Object<'a, V>>,
}

#[derive(Deserialize, Default)]
struct UserInfo {
    #[serde(default)]
    username: String,
    #[serde(default)]
    groups: Vec<String>,
}

#[derive(Deserialize)]
struct Object<'a, V> {
    #[serde(borrow)]
    metadata: Option<Meta<'a, V>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Meta<'a, V> {
    name: Option<String>,
    generate_name: Option<String>,
    resource_version: Option<String>,
    #[serde(borrow)]
    labels: Option<HashMap<Cow<'a, str>, Cow<'a, str>>>,
    annotations: Option<HashMap<Cow<'a, str>, V>>,
}

#[derive(Deserialize)]
struct SonicReview<'a> {
    #[serde(rename = "apiVersion", borrow)]
    api_version: Option<Cow<'a, str>>,
    #[serde(borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    request: Option<Request<'a, sonic_rs::LazyValue<'a>>>,
}

/// A number that depends on what was decoded, so nothing is optimised away.
fn weight<V>(api: Option<&str>, kind: Option<&str>, r: Option<&Request<'_, V>>) -> usize {
    let meta = |o: &Option<Object<'_, V>>| {
        o.as_ref()
            .and_then(|o| o.metadata.as_ref())
            .map(|m| {
                m.labels.as_ref().map_or(0, HashMap::len)
                    + m.annotations.as_ref().map_or(0, HashMap::len)
                    + m.name.as_ref().map_or(0, String::len)
                    + m.generate_name.as_ref().map_or(0, String::len)
                    + m.resource_version.as_ref().map_or(0, String::len)
            })
            .unwrap_or(0)
    };
    api.map_or(0, str::len)
        + kind.map_or(0, str::len)
        + r.map_or(0, |r| {
            r.uid.as_ref().map_or(0, String::len)
                + r.name.as_ref().map_or(0, String::len)
                + r.namespace.as_ref().map_or(0, String::len)
                + r.operation.as_ref().map_or(0, String::len)
                + r.user_info.username.len()
                + r.user_info.groups.len()
                + meta(&r.object)
                + meta(&r.old_object)
        })
}

fn decode(decoder: &str, body: &[u8]) -> usize {
    match decoder {
        "product" => request::decode(body).map_or(0, |r| r.uid.len()),
        "serde" => std::str::from_utf8(body)
            .ok()
            .and_then(|s| serde_json::from_str::<Review<'_>>(s).ok())
            .map_or(0, |r| {
                weight(
                    r.api_version.as_deref(),
                    r.kind.as_deref(),
                    r.request.as_ref(),
                )
            }),
        "serde-unchecked" => serde_json::from_slice::<Review<'_>>(body).map_or(0, |r| {
            weight(
                r.api_version.as_deref(),
                r.kind.as_deref(),
                r.request.as_ref(),
            )
        }),
        "sonic" => sonic_rs::from_slice::<SonicReview<'_>>(body).map_or(0, |r| {
            weight(
                r.api_version.as_deref(),
                r.kind.as_deref(),
                r.request.as_ref(),
            )
        }),
        "utf8" => std::str::from_utf8(body).map_or(0, str::len),
        other => panic!("unknown decoder {other}"),
    }
}

const DECODERS: [&str; 5] = ["product", "serde", "serde-unchecked", "sonic", "utf8"];

fn body(size: &str) -> Vec<u8> {
    let bytes = match size {
        "small" => fixtures::SMALL_OBJECT_BYTES,
        "large" => fixtures::LARGE_OBJECT_BYTES,
        other => panic!("unknown size {other} (small|large)"),
    };
    // The controller's status write: an UPDATE whose object and oldObject are the whole Workflow.
    fixtures::templates(bytes)[0].body(fixtures::FIXED_UID)
}

fn main() {
    if let Ok(spec) = std::env::var("STAGE_GUARD_DECODE") {
        let mut parts = spec.split(':');
        let (decoder, size, n) = (
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or("small"),
            parts
                .next()
                .and_then(|n| n.parse::<usize>().ok())
                .unwrap_or(1),
        );
        let b = body(size);
        let mut total = 0;
        for _ in 0..n {
            total += decode(decoder, black_box(&b));
        }
        println!("{decoder} {size} x{n}: {total}");
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    for size in ["small", "large"] {
        let b = body(size);
        // Every candidate must read the same body successfully, or the comparison means nothing.
        for d in DECODERS {
            assert!(decode(d, &b) > 0, "{d} failed to decode the {size} review");
        }
        let mut group = c.benchmark_group(format!("decode/{size}"));
        group.throughput(Throughput::Bytes(b.len() as u64));
        for d in DECODERS {
            group.bench_function(d, |bench| bench.iter(|| decode(d, black_box(&b))));
        }
        group.finish();
    }
    c.final_summary();
}
