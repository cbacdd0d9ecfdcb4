//! Prometheus metrics (SPEC 8). Label values come only from configured stages, reason codes and fixed
//! words, never from request data, so the number of series stays bounded whatever clients send.

use std::fmt::Write as _;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::admission::{Record, Webhook};
use crate::core::{Operation, Outcome, Policy, Reason};

// === label values: typed, and written out in one place each ===

/// `decision`: the validating outcome (the mutating webhook always allows), or `invalid` for a body
/// that is not an AdmissionReview.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
enum Decision {
    Decided(Outcome),
    Invalid,
}

/// `operation`: the request's, or `unknown` for a body that is not an AdmissionReview.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
enum OperationLabel {
    Known(Operation),
    Unknown,
}

/// `result` of a certificate (re)load.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
enum ReloadResult {
    Success,
    Failure,
}

/// `reason` of a refused TLS handshake on the webhook listener: a small fixed set, so a scan of
/// the port cannot grow the number of series.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// Not finished within the handshake timeout.
    Timeout,
    /// The client spoke something else than TLS (plain HTTP on the TLS port).
    NotTls,
    /// No common TLS version, cipher suite or application protocol, or a malformed handshake.
    Protocol,
    /// Mutual TLS: the client presented no certificate.
    NoClientCertificate,
    /// Mutual TLS: the client's certificate does not chain to `--client-ca-file`, or is expired.
    BadClientCertificate,
    /// The client refused the serving certificate (a `caBundle` that does not match it).
    ServerCertificateRejected,
    /// The client closed or reset the connection before the handshake finished.
    Closed,
    Other,
}

impl HandshakeFailure {
    pub const ALL: [HandshakeFailure; 8] = [
        HandshakeFailure::Timeout,
        HandshakeFailure::NotTls,
        HandshakeFailure::Protocol,
        HandshakeFailure::NoClientCertificate,
        HandshakeFailure::BadClientCertificate,
        HandshakeFailure::ServerCertificateRejected,
        HandshakeFailure::Closed,
        HandshakeFailure::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HandshakeFailure::Timeout => "timeout",
            HandshakeFailure::NotTls => "not_tls",
            HandshakeFailure::Protocol => "protocol",
            HandshakeFailure::NoClientCertificate => "no_client_certificate",
            HandshakeFailure::BadClientCertificate => "bad_client_certificate",
            HandshakeFailure::ServerCertificateRejected => "server_certificate_rejected",
            HandshakeFailure::Closed => "closed",
            HandshakeFailure::Other => "other",
        }
    }
}

/// `reason` a webhook connection was closed by the server rather than by its client: a fixed set.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum ConnectionClose {
    /// A request head (the first after the TLS handshake, or one begun later) missed its deadline.
    HeaderTimeout,
    /// Idle between requests for longer than the idle timeout.
    IdleTimeout,
    /// At the connection limit: closed, as the one idle longest, to admit a new connection.
    Evicted,
    /// Idle when the shutdown delay ended.
    Drained,
}

impl ConnectionClose {
    pub const ALL: [ConnectionClose; 4] = [
        ConnectionClose::HeaderTimeout,
        ConnectionClose::IdleTimeout,
        ConnectionClose::Evicted,
        ConnectionClose::Drained,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionClose::HeaderTimeout => "header_timeout",
            ConnectionClose::IdleTimeout => "idle_timeout",
            ConnectionClose::Evicted => "evicted",
            ConnectionClose::Drained => "drained",
        }
    }
}

/// A label value written as a fixed word.
fn word(encoder: &mut LabelValueEncoder, word: &str) -> Result<(), std::fmt::Error> {
    encoder.write_str(word)
}

impl EncodeLabelValue for Decision {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        match self {
            Decision::Decided(outcome) => word(encoder, outcome.as_str()),
            Decision::Invalid => word(encoder, "invalid"),
        }
    }
}

impl EncodeLabelValue for OperationLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        match self {
            OperationLabel::Known(operation) => word(encoder, operation.as_str()),
            OperationLabel::Unknown => word(encoder, "unknown"),
        }
    }
}

impl EncodeLabelValue for ReloadResult {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        word(
            encoder,
            match self {
                ReloadResult::Success => "success",
                ReloadResult::Failure => "failure",
            },
        )
    }
}

impl EncodeLabelValue for HandshakeFailure {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        word(encoder, self.as_str())
    }
}

impl EncodeLabelValue for ConnectionClose {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        word(encoder, self.as_str())
    }
}

impl EncodeLabelValue for Webhook {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        word(encoder, self.as_str())
    }
}

impl EncodeLabelValue for Reason {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        word(encoder, self.code())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    webhook: Webhook,
    operation: OperationLabel,
    decision: Decision,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WebhookLabels {
    webhook: Webhook,
}

/// `from` and `to` are configured stage names, `none` or `unknown` (see `Record`): bounded.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransitionLabels {
    pipeline: String,
    from: String,
    to: String,
    reason: Reason,
}

/// `pipeline` is a configured pipeline's name: bounded.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    pipeline: String,
    reason: Reason,
}

/// `pipeline` and `stage` are a configured pipeline and one of its stages, or `unknown`: bounded.
/// The webhook's time-in-stage histogram and the monitor's gauges share them.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    pub pipeline: String,
    pub stage: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: ReloadResult,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandshakeLabels {
    reason: HandshakeFailure,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConnectionCloseLabels {
    reason: ConnectionClose,
}

/// Every metric stage-guard exports.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    duration: Family<WebhookLabels, Histogram>,
    transitions: Family<TransitionLabels, Counter>,
    denials: Family<ReasonLabels, Counter>,
    stage_duration: Family<StageLabels, Histogram>,
    tls_reloads: Family<ResultLabels, Counter>,
    tls_handshake_failures: Family<HandshakeLabels, Counter>,
    connections_closed: Family<ConnectionCloseLabels, Counter>,
    cert_not_after: Gauge,
    patches: Counter,
    history_edits_discarded: Counter,
}

fn duration_histogram() -> Histogram {
    // 100 µs .. ~3 s: a review costs well under a millisecond; the API server gives up at `timeoutSeconds`.
    Histogram::new([
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5,
    ])
}

/// Minutes to weeks: how long a Workflow waits at a stage (a review, an approval, a QA run).
pub const STAGE_DURATION_BUCKETS: [f64; 14] = [
    60.0,        // 1 min
    300.0,       // 5 min
    900.0,       // 15 min
    1_800.0,     // 30 min
    3_600.0,     // 1 h
    10_800.0,    // 3 h
    21_600.0,    // 6 h
    43_200.0,    // 12 h
    86_400.0,    // 1 d
    172_800.0,   // 2 d
    345_600.0,   // 4 d
    604_800.0,   // 1 week
    1_209_600.0, // 2 weeks
    2_419_200.0, // 4 weeks
];

fn stage_duration_histogram() -> Histogram {
    Histogram::new(STAGE_DURATION_BUCKETS)
}

impl Metrics {
    pub fn new(policy: &Policy) -> Metrics {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let duration = Family::<WebhookLabels, Histogram>::new_with_constructor(
            duration_histogram as fn() -> Histogram,
        );
        let transitions = Family::<TransitionLabels, Counter>::default();
        let denials = Family::<ReasonLabels, Counter>::default();
        let stage_duration = Family::<StageLabels, Histogram>::new_with_constructor(
            stage_duration_histogram as fn() -> Histogram,
        );
        let tls_reloads = Family::<ResultLabels, Counter>::default();
        let tls_handshake_failures = Family::<HandshakeLabels, Counter>::default();
        let connections_closed = Family::<ConnectionCloseLabels, Counter>::default();
        let cert_not_after = Gauge::default();
        let patches = Counter::default();
        let history_edits_discarded = Counter::default();

        registry.register(
            "stage_guard_admission_requests",
            "Admission reviews answered, by webhook, operation and decision",
            requests.clone(),
        );
        registry.register(
            "stage_guard_admission_duration_seconds",
            "Time to answer one admission review, body read included",
            duration.clone(),
        );
        registry.register(
            "stage_guard_transitions",
            "Admitted stage changes (warned ones included), by from, to and reason",
            transitions.clone(),
        );
        registry.register(
            "stage_guard_denials",
            "Denied admission reviews, by reason",
            denials.clone(),
        );
        registry.register(
            "stage_guard_stage_duration_seconds",
            "Time a Workflow spent at the stage it left, by its stored history, at each admitted stage change",
            stage_duration.clone(),
        );
        registry.register(
            "stage_guard_patches",
            "Mutating reviews answered with a JSON Patch",
            patches.clone(),
        );
        registry.register(
            "stage_guard_history_edits_discarded",
            "Writes whose change to the history annotation the mutating webhook discarded",
            history_edits_discarded.clone(),
        );
        registry.register(
            "stage_guard_tls_reloads",
            "Attempts to load a changed serving certificate, by result",
            tls_reloads.clone(),
        );
        registry.register(
            "stage_guard_tls_handshake_failures",
            "TLS handshakes refused or abandoned on the webhook listener, by reason",
            tls_handshake_failures.clone(),
        );
        registry.register(
            "stage_guard_connections_closed",
            "Webhook connections closed by the server before their client closed them, by reason",
            connections_closed.clone(),
        );
        registry.register(
            "stage_guard_tls_cert_not_after_timestamp_seconds",
            "Expiry (notAfter, unix seconds) of the serving certificate in use",
            cert_not_after.clone(),
        );

        // Every family exports series from start-up, so dashboards and alerts see zeros, not gaps.
        for webhook in [Webhook::Mutate, Webhook::Validate] {
            drop(duration.get_or_create(&WebhookLabels { webhook }));
            let outcomes: &[Outcome] = match webhook {
                Webhook::Mutate => &[Outcome::Allowed],
                Webhook::Validate => &[Outcome::Allowed, Outcome::Denied, Outcome::Warned],
            };
            for operation in [Operation::Create, Operation::Update] {
                for &outcome in outcomes {
                    drop(requests.get_or_create(&RequestLabels {
                        webhook,
                        operation: OperationLabel::Known(operation),
                        decision: Decision::Decided(outcome),
                    }));
                }
            }
            drop(requests.get_or_create(&RequestLabels {
                webhook,
                operation: OperationLabel::Unknown,
                decision: Decision::Invalid,
            }));
        }
        for pipeline in &policy.pipelines {
            for reason in Reason::ALL.into_iter().filter(|r| !r.admits()) {
                drop(denials.get_or_create(&ReasonLabels {
                    pipeline: pipeline.name.clone(),
                    reason,
                }));
            }
            let graph = &pipeline.graph;
            for stage in graph.stages() {
                drop(stage_duration.get_or_create(&StageLabels {
                    pipeline: pipeline.name.clone(),
                    stage: stage.clone(),
                }));
            }
            let stored =
                std::iter::once(None).chain(graph.stages().iter().map(|s| Some(s.as_str())));
            for from in stored {
                for to in graph.next_stages(from) {
                    let reason = if from.is_none() {
                        Reason::Entry
                    } else {
                        Reason::Advance
                    };
                    drop(transitions.get_or_create(&TransitionLabels {
                        pipeline: pipeline.name.clone(),
                        from: from.unwrap_or("none").to_owned(),
                        to: to.to_owned(),
                        reason,
                    }));
                }
            }
        }
        for result in [ReloadResult::Success, ReloadResult::Failure] {
            drop(tls_reloads.get_or_create(&ResultLabels { result }));
        }
        for reason in HandshakeFailure::ALL {
            drop(tls_handshake_failures.get_or_create(&HandshakeLabels { reason }));
        }
        for reason in ConnectionClose::ALL {
            drop(connections_closed.get_or_create(&ConnectionCloseLabels { reason }));
        }

        Metrics {
            registry,
            requests,
            duration,
            transitions,
            denials,
            stage_duration,
            tls_reloads,
            tls_handshake_failures,
            connections_closed,
            cert_not_after,
            patches,
            history_edits_discarded,
        }
    }

    /// Counts one answered review.
    pub fn observe(&self, webhook: Webhook, record: &Record, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                webhook,
                operation: OperationLabel::Known(record.operation),
                decision: Decision::Decided(record.decision),
            })
            .inc();
        self.duration
            .get_or_create(&WebhookLabels { webhook })
            .observe(elapsed.as_secs_f64());
        if webhook == Webhook::Mutate {
            if record.patched {
                self.patches.inc();
            }
            if record.discarded_edit {
                self.history_edits_discarded.inc();
            }
            return;
        }
        match (record.decision, record.reason) {
            (Outcome::Denied, Some(reason)) => {
                self.denials
                    .get_or_create(&ReasonLabels {
                        pipeline: record.pipeline.clone(),
                        reason,
                    })
                    .inc();
            }
            (Outcome::Allowed | Outcome::Warned, Some(reason)) if record.stage_changed => {
                self.transitions
                    .get_or_create(&TransitionLabels {
                        pipeline: record.pipeline.clone(),
                        from: record.from_label.clone(),
                        to: record.to_label.clone(),
                        reason,
                    })
                    .inc();
                if let Some(stayed) = record.time_at_stage_left {
                    self.stage_duration
                        .get_or_create(&StageLabels {
                            pipeline: record.pipeline.clone(),
                            stage: record.from_label.clone(),
                        })
                        .observe(stayed.as_secs_f64());
                }
            }
            _ => {}
        }
    }

    /// Counts a body that was not an AdmissionReview (answered 400 or 413).
    pub fn invalid(&self, webhook: Webhook, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                webhook,
                operation: OperationLabel::Unknown,
                decision: Decision::Invalid,
            })
            .inc();
        self.duration
            .get_or_create(&WebhookLabels { webhook })
            .observe(elapsed.as_secs_f64());
    }

    /// Records a certificate (re)load.
    pub fn tls_reload(&self, ok: bool, not_after_unix: Option<i64>) {
        let result = if ok {
            ReloadResult::Success
        } else {
            ReloadResult::Failure
        };
        self.tls_reloads
            .get_or_create(&ResultLabels { result })
            .inc();
        if let Some(t) = not_after_unix {
            self.cert_not_after.set(t);
        }
    }

    /// Counts a TLS handshake on the webhook listener that did not complete.
    pub fn tls_handshake_failed(&self, reason: HandshakeFailure) {
        self.tls_handshake_failures
            .get_or_create(&HandshakeLabels { reason })
            .inc();
    }

    /// Counts a webhook connection the server closed before its client did.
    pub fn connection_closed(&self, reason: ConnectionClose) {
        self.connections_closed
            .get_or_create(&ConnectionCloseLabels { reason })
            .inc();
    }

    /// Sets the expiry of the certificate loaded at start-up (not a reload).
    pub fn set_cert_not_after(&self, not_after_unix: i64) {
        self.cert_not_after.set(not_after_unix);
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_exported_from_start_up() {
        let text = Metrics::new(&Policy::default_policy()).encode();
        for family in [
            "stage_guard_admission_requests_total{",
            "stage_guard_admission_duration_seconds_bucket{",
            "stage_guard_transitions_total{",
            "stage_guard_denials_total{pipeline=\"default\",reason=\"skip\"} 0",
            "stage_guard_tls_reloads_total{result=\"failure\"} 0",
            "stage_guard_tls_handshake_failures_total{reason=\"not_tls\"} 0",
            "stage_guard_tls_handshake_failures_total{reason=\"other\"} 0",
            "stage_guard_connections_closed_total{reason=\"header_timeout\"} 0",
            "stage_guard_connections_closed_total{reason=\"evicted\"} 0",
            "stage_guard_tls_cert_not_after_timestamp_seconds 0",
            "stage_guard_stage_duration_seconds_count{pipeline=\"default\",stage=\"waiting-pr-created\"} 0",
            "stage_guard_stage_duration_seconds_bucket{le=\"2419200.0\",pipeline=\"default\",stage=\"waiting-pr-approved\"} 0",
        ] {
            assert!(text.contains(family), "missing {family} in\n{text}");
        }
    }

    #[test]
    fn request_data_never_becomes_a_label_value() {
        let m = Metrics::new(&Policy::default_policy());
        let record = Record {
            uid: "u".into(),
            workflow: "argo/evil-name".into(),
            user: "evil-user".into(),
            operation: Operation::Update,
            transition: "waiting-pr-created->evil-stage".into(),
            stage_changed: true,
            decision: Outcome::Warned,
            patched: false,
            discarded_edit: false,
            reason: Some(Reason::UnknownStage),
            pipeline: "default".into(),
            from_label: "waiting-pr-created".into(),
            to_label: "unknown".into(),
            time_at_stage_left: Some(Duration::from_secs(90)),
            message: "evil".into(),
            warnings: 1,
        };
        m.observe(Webhook::Validate, &record, Duration::from_micros(300));
        let text = m.encode();
        assert!(!text.contains("evil"), "{text}");
        assert!(text.contains(
            "stage_guard_transitions_total{pipeline=\"default\",from=\"waiting-pr-created\",to=\"unknown\",reason=\"unknown-stage\"} 1"
        ));
        assert!(text.contains(
            "stage_guard_stage_duration_seconds_sum{pipeline=\"default\",stage=\"waiting-pr-created\"} 90.0"
        ), "{text}");
    }

    #[test]
    fn the_time_at_a_stage_is_observed_only_for_admitted_changes() {
        let m = Metrics::new(&Policy::default_policy());
        let record = |decision, reason, stayed| Record {
            uid: "u".into(),
            workflow: "argo/w".into(),
            user: "bob".into(),
            operation: Operation::Update,
            transition: "waiting-pr-created->waiting-ready-for-qa".into(),
            stage_changed: true,
            decision,
            patched: false,
            discarded_edit: false,
            reason: Some(reason),
            pipeline: "default".into(),
            from_label: "waiting-pr-created".into(),
            to_label: "waiting-ready-for-qa".into(),
            time_at_stage_left: stayed,
            message: String::new(),
            warnings: 0,
        };
        let hour = Some(Duration::from_secs(3_600));
        m.observe(
            Webhook::Validate,
            &record(Outcome::Allowed, Reason::Advance, hour),
            Duration::ZERO,
        );
        m.observe(
            Webhook::Validate,
            &record(Outcome::Denied, Reason::Skip, hour),
            Duration::ZERO,
        );
        m.observe(
            Webhook::Mutate,
            &record(Outcome::Allowed, Reason::Advance, hour),
            Duration::ZERO,
        );
        m.observe(
            Webhook::Validate,
            &record(Outcome::Allowed, Reason::Advance, None),
            Duration::ZERO,
        );
        let text = m.encode();
        let line = |suffix: &str| {
            format!(
                "stage_guard_stage_duration_seconds{suffix}{{pipeline=\"default\",stage=\"waiting-pr-created\"}}"
            )
        };
        assert!(text.contains(&format!("{} 1\n", line("_count"))), "{text}");
        assert!(
            text.contains(&format!("{} 3600.0\n", line("_sum"))),
            "{text}"
        );
        assert!(text.contains(
            "stage_guard_stage_duration_seconds_bucket{le=\"1800.0\",pipeline=\"default\",stage=\"waiting-pr-created\"} 0\n"
        ), "{text}");
        assert!(text.contains(
            "stage_guard_stage_duration_seconds_bucket{le=\"3600.0\",pipeline=\"default\",stage=\"waiting-pr-created\"} 1\n"
        ), "{text}");
    }
}
