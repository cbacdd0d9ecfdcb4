//! Drain: does a SIGTERM lose requests? 50 clients send small reviews back to back, each on its own
//! kept-alive connection, and the server is sent SIGTERM. The clients do what the API server's HTTP
//! client does: a connection whose answer says `Connection: close` is not reused; a request that
//! could not be written because its connection was already closed is sent again on a new
//! connection; a request that was written and got no answer is not retried (a POST is not
//! replayable): it is lost. A client stops when it cannot connect any more (the listener is
//! closed; in a cluster it would reach another replica).

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::load::{self, Prepared, Target};
use crate::{Build, Opts, fixtures, procs};

const CLIENTS: usize = 50;
/// The server's drain: short, so that many runs fit in a few minutes; the behaviour at the end of
/// the delay is the same whatever its length.
const SHUTDOWN_DELAY: &str = "2";
const SHUTDOWN_GRACE: &str = "5";
/// Load before the signal.
const BEFORE_SIGNAL: Duration = Duration::from_secs(1);
/// A request written and not answered within this is lost (the server answers in well under 1 ms).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on connecting; a client that cannot connect stops.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on a whole run, after the signal.
const RUN_TIMEOUT: Duration = Duration::from_secs(30);

/// What one client saw, counted from the signal on.
#[derive(Default, Debug, Clone)]
struct Tally {
    /// Requests written to a connection after the signal.
    written: u64,
    /// Of those, answered with a 200 echoing the uid.
    answered: u64,
    /// Of those, answered with something else.
    wrong_answers: u64,
    /// Written and never answered: what the API server would report as a failed call.
    lost: u64,
    /// Requests whose connection was closed before they were written, sent again on a new one.
    resent: u64,
    /// Answers carrying `Connection: close`.
    told_to_close: u64,
    /// New connections opened after the signal.
    connections: u64,
    /// Requests lost before the signal (there should be none).
    lost_before: u64,
    /// Why the client stopped.
    stopped_by: String,
    /// The first few lost requests' errors.
    lost_errors: Vec<String>,
}

impl Tally {
    fn add(&mut self, o: &Tally) {
        self.written += o.written;
        self.answered += o.answered;
        self.wrong_answers += o.wrong_answers;
        self.lost += o.lost;
        self.resent += o.resent;
        self.told_to_close += o.told_to_close;
        self.connections += o.connections;
        self.lost_before += o.lost_before;
        for e in &o.lost_errors {
            if self.lost_errors.len() < 5 {
                self.lost_errors.push(e.clone());
            }
        }
    }
}

/// One run: the clients' totals, and how the server ended.
struct RunResult {
    tally: Tally,
    exit: String,
    /// From the signal to the process's exit.
    exit_after: Option<Duration>,
}

pub async fn run(opts: &Opts, builds: &[Build], ca_pem: &[u8]) -> anyhow::Result<String> {
    let prepared = load::prepare(&fixtures::templates(fixtures::SMALL_OBJECT_BYTES));
    let started_at = std::time::SystemTime::now();
    let load_before = crate::markdown::loadavg();
    let mut results: Vec<Vec<RunResult>> = builds.iter().map(|_| Vec::new()).collect();
    for run in 0..opts.runs {
        for (b, build) in builds.iter().enumerate() {
            let r = one_run(build, ca_pem, &prepared).await?;
            eprintln!(
                "drain run {}/{} {}: written after SIGTERM {}, answered {}, lost {}, resent {}, exit {} after {:?}",
                run + 1,
                opts.runs,
                build.name,
                r.tally.written,
                r.tally.answered,
                r.tally.lost,
                r.tally.resent,
                r.exit,
                r.exit_after
            );
            results[b].push(r);
        }
    }
    Ok(render(opts, builds, &results, started_at, &load_before))
}

async fn one_run(
    build: &Build,
    ca_pem: &[u8],
    prepared: &Arc<Vec<Prepared>>,
) -> anyhow::Result<RunResult> {
    let mut server = procs::start_with(
        &build.setup,
        procs::Kind::StageGuard,
        &[
            "--shutdown-delay",
            SHUTDOWN_DELAY,
            "--shutdown-grace",
            SHUTDOWN_GRACE,
        ],
    )?;
    let target = Arc::new(Target::new(server.webhook, ca_pem, true)?);
    let (signal_tx, signal_rx) = watch::channel(None::<Instant>);
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let sender = load::connect(&target).await?;
        clients.push(tokio::spawn(client(
            target.clone(),
            prepared.clone(),
            c,
            sender,
            signal_rx.clone(),
        )));
    }
    tokio::time::sleep(BEFORE_SIGNAL).await;
    let signalled = Instant::now();
    let _ = signal_tx.send(Some(signalled));
    server.signal("TERM")?;

    let mut tally = Tally::default();
    let mut stops: std::collections::BTreeMap<String, usize> = Default::default();
    for c in clients {
        let t = c.await?;
        *stops.entry(t.stopped_by.clone()).or_default() += 1;
        tally.add(&t);
    }
    let status = tokio::task::spawn_blocking(move || {
        let status = server.wait_exit(RUN_TIMEOUT);
        (status, server)
    })
    .await?;
    let (exit, exit_after) = match status.0 {
        Ok(Some(s)) => (
            s.code().map_or("killed".to_string(), |c| c.to_string()),
            Some(signalled.elapsed()),
        ),
        Ok(None) => ("still running".to_string(), None),
        Err(e) => (format!("unknown: {e}"), None),
    };
    tally.stopped_by = stops
        .into_iter()
        .map(|(why, n)| format!("{n} {why}"))
        .collect::<Vec<_>>()
        .join(", ");
    Ok(RunResult {
        tally,
        exit,
        exit_after: exit_after.map(|d| d.min(RUN_TIMEOUT)),
    })
}

/// One client: reviews back to back until it cannot connect any more (or the run's time is up).
async fn client(
    target: Arc<Target>,
    prepared: Arc<Vec<Prepared>>,
    index: usize,
    first: load::Sender,
    signal: watch::Receiver<Option<Instant>>,
) -> Tally {
    let mut tally = Tally::default();
    let mut sender = Some(first);
    // A request returned unwritten, to be sent again on a new connection.
    let mut unsent: Option<(hyper::Request<load::ReviewBody>, hyper::body::Bytes)> = None;
    let after_signal = || signal.borrow().is_some();
    let give_up = Instant::now() + BEFORE_SIGNAL + RUN_TIMEOUT;
    let mut i = index;
    loop {
        if Instant::now() >= give_up {
            tally.stopped_by = "stopped at the run's time limit".into();
            return tally;
        }
        let connection = match sender.as_mut() {
            Some(s) => s,
            None => {
                match tokio::time::timeout(CONNECT_TIMEOUT, load::connect(&target)).await {
                    Ok(Ok(s)) => {
                        tally.connections += u64::from(after_signal());
                        sender.insert(s)
                    }
                    // Nothing was written: in a cluster this request would go to another replica.
                    _ => {
                        tally.stopped_by = "stopped: could not connect".into();
                        return tally;
                    }
                }
            }
        };
        let (request, uid) = match unsent.take() {
            Some(r) => r,
            None => {
                i += 1;
                load::review_request(&prepared[i % prepared.len()])
            }
        };
        if connection.ready().await.is_err() {
            // Closed before anything was written: send it on a new connection.
            tally.resent += u64::from(after_signal());
            unsent = Some((request, uid));
            sender = None;
            continue;
        }
        let written_after_signal = after_signal();
        let answer = tokio::time::timeout(ANSWER_TIMEOUT, async {
            match connection.try_send_request(request).await {
                Ok(response) => {
                    let close = response
                        .headers()
                        .get(hyper::header::CONNECTION)
                        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
                    let status = response.status();
                    match response.into_body().collect().await {
                        Ok(body) => Ok(Ok((status, body.to_bytes(), close))),
                        Err(e) => Ok(Err(format!("response body: {e}"))),
                    }
                }
                Err(mut e) => match e.take_message() {
                    // hyper hands the request back when it never started writing it.
                    Some(request) => Err(request),
                    None => Ok(Err(format!("request: {}", e.error()))),
                },
            }
        })
        .await;
        match answer {
            Ok(Err(request)) => {
                tally.resent += u64::from(after_signal());
                unsent = Some((request, uid));
                sender = None;
            }
            Ok(Ok(Ok((status, body, close)))) => {
                if written_after_signal {
                    tally.written += 1;
                    match load::answer_error(&target, status, &body, &uid) {
                        None => tally.answered += 1,
                        Some(_) => tally.wrong_answers += 1,
                    }
                    tally.told_to_close += u64::from(close);
                }
                if close {
                    sender = None;
                }
            }
            Ok(Ok(Err(error))) => {
                lose(&mut tally, written_after_signal, error);
                sender = None;
            }
            Err(_) => {
                lose(
                    &mut tally,
                    written_after_signal,
                    "no answer within 10 s".into(),
                );
                sender = None;
            }
        }
    }
}

fn lose(tally: &mut Tally, after_signal: bool, error: String) {
    if after_signal {
        tally.written += 1;
        tally.lost += 1;
    } else {
        tally.lost_before += 1;
    }
    if tally.lost_errors.len() < 5 {
        tally.lost_errors.push(error);
    }
}

fn render(
    opts: &Opts,
    builds: &[Build],
    results: &[Vec<RunResult>],
    started_at: std::time::SystemTime,
    load_before: &str,
) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "- Command: `{}`", crate::command_line());
    let _ = writeln!(
        o,
        "- Date: {}",
        humantime::format_rfc3339_seconds(started_at)
    );
    let _ = writeln!(o, "- Machine: {}", crate::markdown::machine());
    let _ = writeln!(
        o,
        "- Load average: {load_before} before, {} after",
        crate::markdown::loadavg()
    );
    let _ = writeln!(
        o,
        "- Method: {} runs per build, alternating, each a fresh server with `--shutdown-delay {SHUTDOWN_DELAY} \
         --shutdown-grace {SHUTDOWN_GRACE}`; {CLIENTS} clients send small reviews back to back on kept-alive \
         connections for {} s, then the server gets SIGTERM and they go on until they cannot connect. A request \
         is lost when it was written and got no answer (within {} s); one whose connection was closed before it \
         was written is sent again on a new connection, as the API server's client does.",
        opts.runs,
        BEFORE_SIGNAL.as_secs(),
        ANSWER_TIMEOUT.as_secs()
    );
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "| build | runs | written after SIGTERM | answered | lost | runs with a loss | sent again (closed before written) | answers with Connection: close | new connections after SIGTERM | exit codes | SIGTERM to exit, s (max) |"
    );
    let _ = writeln!(o, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|");
    for (b, build) in builds.iter().enumerate() {
        let runs = &results[b];
        let mut total = Tally::default();
        for r in runs {
            total.add(&r.tally);
        }
        let with_loss = runs.iter().filter(|r| r.tally.lost > 0).count();
        let mut exits: Vec<String> = runs.iter().map(|r| r.exit.clone()).collect();
        exits.sort();
        exits.dedup();
        let longest = runs
            .iter()
            .filter_map(|r| r.exit_after)
            .max()
            .map_or("-".to_string(), |d| format!("{:.1}", d.as_secs_f64()));
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | **{}** | {} | {} | {} | {} | {} | {longest} |",
            build.name,
            runs.len(),
            total.written,
            total.answered,
            total.lost,
            with_loss,
            total.resent,
            total.told_to_close,
            total.connections,
            exits.join(", "),
        );
        if total.wrong_answers > 0 || total.lost_before > 0 {
            let _ = writeln!(
                o,
                "\n{}: {} answers other than a 200 echoing the uid; {} requests lost before the signal.\n",
                build.name, total.wrong_answers, total.lost_before
            );
        }
        if !total.lost_errors.is_empty() {
            let _ = writeln!(
                o,
                "\n{}: the first lost requests' errors: {}\n",
                build.name,
                total
                    .lost_errors
                    .iter()
                    .map(|e| format!("`{e}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    o
}
