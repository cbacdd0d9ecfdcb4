//! A rolling restart fails no write (README "Probes, shutdown and rollouts"): two stage-guard replicas
//! behind a balancer that plays their Service (round robin per connection; a replica whose `/readyz`
//! is not 200 gets no new connections, as endpoints drop a terminating pod), the API server calling
//! the balancer, and continuous streams of stage changes (several at once, as a cluster's writers
//! make them, so several of the API server's connections are busy) while the replica it is calling
//! gets SIGTERM, drains, exits and is started again, four times over. The API server keeps its connections to a replica alive and
//! does not retry a webhook call whose request was written: whatever the drain closes at the wrong
//! moment is a failed write.

use crate::Scenario;
use crate::harness::*;
use crate::support::balancer::Balancer;
use crate::support::fixtures::ConfigSpec;
use crate::support::process::{Webhook, log_field};
use crate::write_stream::{Tally, Target, WriteStream, table};
use anyhow::{Result, bail, ensure};
use serde_json::Value;
use stage_guard_testenv::{ADMIN, ARGO_WORKFLOW};
use std::path::Path;
use std::time::{Duration, Instant};

pub const SCENARIOS: &[Scenario] = &[Scenario {
    name: "restarting_replicas_behind_a_service_fails_no_write",
    run: restarting_replicas_behind_a_service_fails_no_write,
}];

/// Writers at once, each moving its own Workflow.
const STREAMS: usize = 4;
/// Writes each stream must see in each phase, so that a stream that stalled cannot pass.
const MIN_WRITES: usize = 25;
const PHASE_TIMEOUT: Duration = Duration::from_secs(90);
/// The replicas' drain: long enough for the balancer (which looks every 100 ms) to stop sending
/// new connections, as endpoints do within the default 5 s.
const SHUTDOWN_DELAY: &str = "2";
const SHUTDOWN_GRACE: &str = "10";
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);
/// Restarts, each of the replica the API server is calling at the time: every one is a chance for
/// a drain to drop a write.
const RESTARTS: usize = 4;

/// A loop, so that moves can go on for as long as the restarts take.
fn looping_config() -> String {
    ConfigSpec {
        transitions: Some(vec![
            (PR_CREATED, vec![READY_FOR_QA]),
            (READY_FOR_QA, vec![PR_CREATED]),
        ]),
        ..ConfigSpec::default()
    }
    .yaml()
}

/// One replica as the pod runs it: the serving pair, the configuration, the drain's flags.
fn replica(certs: &Path) -> Webhook {
    Webhook::builder()
        .config(&looping_config())
        .arg("--tls-cert-file")
        .arg(&certs.join("tls.crt").to_string_lossy())
        .arg("--tls-key-file")
        .arg(&certs.join("tls.key").to_string_lossy())
        .args(&[
            "--shutdown-delay",
            SHUTDOWN_DELAY,
            "--shutdown-grace",
            SHUTDOWN_GRACE,
        ])
        .start()
}

fn restarting_replicas_behind_a_service_fails_no_write(suite: &Suite) -> Result<()> {
    let cp = suite.control_plane()?;
    let ns = suite.fresh_namespace("drain")?;
    let certs = tempfile::tempdir()?;
    let ca_bundle = issue_serving_cert(certs.path())?;
    let mut replicas = [replica(certs.path()), replica(certs.path())];
    let balancer = Balancer::start(&[
        (replicas[0].webhook_addr, replicas[0].admin_addr),
        (replicas[1].webhook_addr, replicas[1].admin_addr),
    ])?;
    wait_until(
        Duration::from_secs(10),
        "the balancer sees both replicas ready",
        || Ok(balancer.ready(0) && balancer.ready(1)),
    )?;
    cp.apply(webhook_configurations_for(
        balancer.addr().port(),
        &ca_bundle,
    )?)?;
    let _unregister = Unregister(cp);
    let kubectl = |user: &str| -> Result<_> { Ok(cp.kubectl(user)?.args(["-n", &ns])) };

    // Registration reaches the API server's admission chain asynchronously: wait until it calls us.
    let probe = workflow("registration-probe", &[(STAGE_LABEL, PR_CREATED)], &[]);
    wait_until(
        Duration::from_secs(30),
        "the API server calls the replicas",
        || {
            let _ = kubectl(ADMIN)?
                .args(["create", "--dry-run=server", "-f", "-"])
                .stdin(probe.to_string())
                .run()?;
            Ok(admissions(&replicas[0])? + admissions(&replicas[1])? >= 2.0)
        },
    )?;
    let mut streams = Vec::new();
    for n in 0..STREAMS {
        let name = format!("looping-{n}");
        kubectl(ARGO_WORKFLOW)?
            .args(["create", "-f", "-"])
            .stdin(workflow_at(&name, Some(PR_CREATED)).to_string())
            .ok()?;
        streams.push(WriteStream::start(
            Target {
                url: cp.url().to_string(),
                ca_file: cp.ca_file(),
                token: cp.token(ARGO_WORKFLOW)?,
                namespace: ns.clone(),
                workflow: name,
                stages: [PR_CREATED.to_string(), READY_FOR_QA.to_string()],
            },
            "both replicas serving",
        )?);
    }
    let phase = |name: &str| streams.iter().for_each(|s| s.phase(name));
    let wait_for_writes = || -> Result<()> {
        for s in &streams {
            s.wait_for_writes(MIN_WRITES, PHASE_TIMEOUT)?;
        }
        Ok(())
    };
    wait_for_writes()?;

    let mut drains = Vec::new();
    for restart in 1..=RESTARTS {
        // The replica the API server is calling now: restarting an idle one would prove nothing.
        let index = serving(&replicas)?;
        phase(&format!(
            "restart {restart}: replica {index} (serving): SIGTERM, drain, exit, start"
        ));
        let running = &mut replicas[index];
        let answered_before = admissions(running)?;
        running.signal("TERM");
        let signalled = Instant::now();
        // Halfway through the delay the admin port still answers: what was answered since.
        std::thread::sleep(Duration::from_secs(1));
        let answered_after_signal = admissions(running)? - answered_before;
        let Some(status) = running.wait_exit(EXIT_TIMEOUT) else {
            bail!("replica {index} did not exit within {EXIT_TIMEOUT:?} of SIGTERM");
        };
        ensure!(
            status.code() == Some(0),
            "replica {index} exited with {status}:\n{}",
            running.lines().join("\n")
        );
        drains.push(Drain {
            index,
            took: signalled.elapsed(),
            answered_after_signal,
            open_at_delay_end: logged_open_connections(running),
        });
        let restarted = replica(certs.path());
        balancer.replace(index, restarted.webhook_addr, restarted.admin_addr);
        *running = restarted;
        wait_until(
            Duration::from_secs(10),
            "the restarted replica is ready",
            || Ok(balancer.ready(index)),
        )?;
        wait_for_writes()?;
    }
    phase("both replicas restarted");
    wait_for_writes()?;
    let tallies = merged(streams.into_iter().map(WriteStream::stop).collect());

    println!("{}", table(&tallies));
    for drain in &drains {
        println!("{drain}");
    }
    // Where the API server's connections went (it keeps a connection for as long as it uses it,
    // so one replica may take them all).
    for (index, running) in replicas.iter().enumerate() {
        println!(
            "replica {index} as restarted: {} connections from the balancer, {} reviews answered",
            balancer.connections(index),
            admissions(running)?
        );
    }
    for t in &tallies {
        ensure!(
            t.attempts() >= STREAMS * MIN_WRITES,
            "phase {:?}: only {} writes",
            t.phase,
            t.attempts()
        );
        ensure!(
            t.failed == 0,
            "phase {:?}: {} of {} writes failed: {:?}\n{}",
            t.phase,
            t.failed,
            t.attempts(),
            t.failures,
            table(&tallies)
        );
    }
    // The drains mattered: the API server was using each replica when it got SIGTERM.
    ensure!(
        drains.iter().all(|d| d.answered_after_signal >= 1.0),
        "a replica answered nothing after SIGTERM, so its drain was not exercised: {drains:?}"
    );
    Ok(())
}

/// The streams' tallies added up phase by phase (every stream has the same phases).
fn merged(streams: Vec<Vec<Tally>>) -> Vec<Tally> {
    let mut total: Vec<Tally> = Vec::new();
    for phases in streams {
        for (i, t) in phases.into_iter().enumerate() {
            match total.get_mut(i) {
                Some(sum) => {
                    sum.ok += t.ok;
                    sum.failed += t.failed;
                    sum.elapsed = sum.elapsed.max(t.elapsed);
                    sum.failures.extend(t.failures);
                }
                None => total.push(t),
            }
        }
    }
    total
}

/// Reviews a replica answered, both webhooks, from its metrics.
fn admissions(webhook: &Webhook) -> Result<f64> {
    let metrics = http_get(webhook.admin_addr, "/metrics")?;
    Ok(requests(&metrics, "mutate") + requests(&metrics, "validate"))
}

/// The replica whose answers go up while the stream runs.
fn serving(replicas: &[Webhook; 2]) -> Result<usize> {
    let before = [admissions(&replicas[0])?, admissions(&replicas[1])?];
    std::thread::sleep(Duration::from_millis(500));
    let after = [admissions(&replicas[0])?, admissions(&replicas[1])?];
    let gained = [after[0] - before[0], after[1] - before[1]];
    ensure!(
        gained[0] + gained[1] > 0.0,
        "neither replica answered a review in half a second"
    );
    Ok(if gained[0] >= gained[1] { 0 } else { 1 })
}

/// The connections a replica logged as still open when its delay ended.
fn logged_open_connections(replica: &Webhook) -> Option<u64> {
    replica
        .log_values()
        .iter()
        .find(|v| {
            log_field(v, "message")
                .and_then(Value::as_str)
                .is_some_and(|m| m.starts_with("no longer accepting"))
        })
        .and_then(|v| log_field(v, "open"))
        .and_then(Value::as_u64)
}

/// What one replica did between SIGTERM and its exit.
#[derive(Debug)]
struct Drain {
    index: usize,
    took: Duration,
    /// Reviews it answered in the first second after the signal.
    answered_after_signal: f64,
    /// Connections still open when the delay ended, as it logged them.
    open_at_delay_end: Option<u64>,
}

impl std::fmt::Display for Drain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "replica {}: answered {} reviews in the first second after SIGTERM, exited {:.1} s after it, {} connections open when the delay ended",
            self.index,
            self.answered_after_signal,
            self.took.as_secs_f64(),
            self.open_at_delay_end
                .map_or("(not logged)".to_string(), |n| n.to_string())
        )
    }
}

/// Deletes the webhook configurations when the scenario ends, however it ends.
struct Unregister<'a>(&'a stage_guard_testenv::ControlPlane);

impl Drop for Unregister<'_> {
    fn drop(&mut self) {
        let _ = self.0.unregister_stage_guard();
    }
}
