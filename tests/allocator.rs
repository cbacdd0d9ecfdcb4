//! The allocator stage-guard's binary uses (src/main.rs): jemalloc, built with the options of
//! .cargo/config.toml, hands memory freed after a burst back to the system by itself. This test binary
//! uses the same jemalloc build, so it sees what the server runs with.

use std::time::{Duration, Instant};

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[test]
fn jemalloc_is_built_to_purge_in_the_background() {
    let conf = tikv_jemalloc_ctl::config::malloc_conf::read().unwrap();
    // The C string comes with its terminator.
    let conf = conf.trim_end_matches('\0');
    for option in [
        "background_thread:true",
        "dirty_decay_ms:1000",
        "muzzy_decay_ms:0",
    ] {
        assert!(
            conf.split(',').any(|o| o == option),
            "jemalloc built with {conf:?}, without {option}: is .cargo/config.toml's [env] read?"
        );
    }
    assert!(tikv_jemalloc_ctl::opt::background_thread::read().unwrap());
}

fn resident_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// A burst like a server's: 1 MiB buffers on several threads, each followed by a small allocation
/// that outlives it (connection state, a log line, a metric), then the buffers freed while the small
/// ones stay. glibc's malloc keeps such holes resident (it gives back only the top of a heap, and after
/// the first large free it stops using mmap for 1 MiB); jemalloc purges them. The resident size must
/// fall back without any further allocation to trigger a purge. Waiting is bounded far above the
/// second the options ask for: what is checked is that it happens, not how fast.
#[test]
fn memory_freed_after_a_burst_goes_back_without_further_allocations() {
    let before = resident_kib();
    let workers: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(|| {
                drop(vec![1u8; 1 << 20]);
                let mut buffers = Vec::new();
                let mut survivors = Vec::new();
                for i in 0..16u8 {
                    buffers.push(vec![i | 1; 1 << 20]);
                    survivors.push(Box::new([i; 64]));
                }
                let touched: u64 = buffers.iter().map(|b| u64::from(b[b.len() / 2])).sum();
                drop(buffers);
                (touched, survivors)
            })
        })
        .collect();
    let results: Vec<_> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    assert!(results.iter().all(|(touched, _)| *touched > 0));
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut now = resident_kib();
    while now > before + 16 * 1024 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        now = resident_kib();
    }
    assert!(
        now <= before + 16 * 1024,
        "64 MiB freed, but resident memory stayed at {now} KiB (before: {before} KiB)"
    );
    // The small allocations live until here, as a server's connections do.
    assert_eq!(results.len(), 4);
}
