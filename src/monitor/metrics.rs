//! The monitor's metrics: gauges set from a [`Census`]. Label values are configured pipeline and
//! stage names, `unknown`, and the audit's finding kinds (SPEC 8), and every series exists from
//! start-up.

use std::sync::atomic::AtomicU64;
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::core::Policy;
use crate::core::census::Census;
use crate::metrics::StageLabels;

/// One of `Finding::KINDS`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

pub struct MonitorMetrics {
    registry: Registry,
    workflows: Family<StageLabels, Gauge>,
    oldest: Family<StageLabels, FloatGauge>,
    stuck: Family<StageLabels, Gauge>,
    findings: Family<KindLabels, Gauge>,
    last_sync: FloatGauge,
}

impl MonitorMetrics {
    pub fn new(policy: &Policy) -> MonitorMetrics {
        let mut registry = Registry::default();
        let workflows = Family::<StageLabels, Gauge>::default();
        let oldest = Family::<StageLabels, FloatGauge>::default();
        let stuck = Family::<StageLabels, Gauge>::default();
        let findings = Family::<KindLabels, Gauge>::default();
        let last_sync = FloatGauge::default();
        registry.register(
            "stage_guard_workflows",
            "Workflows at each stage of each pipeline (unknown: a stage the pipeline does not know)",
            workflows.clone(),
        );
        registry.register(
            "stage_guard_stage_oldest_seconds",
            "How long the Workflow that has been longest at the stage has been there (0: none there)",
            oldest.clone(),
        );
        registry.register(
            "stage_guard_workflows_stuck",
            "Workflows at the stage for longer than the pipeline's stuck_after",
            stuck.clone(),
        );
        registry.register(
            "stage_guard_audit_findings",
            "Current findings of stage-guard audit, by kind",
            findings.clone(),
        );
        registry.register(
            "stage_guard_monitor_last_sync_timestamp_seconds",
            "When the monitor last recomputed these metrics from a current view of the Workflows (unix seconds; 0 before the first list)",
            last_sync.clone(),
        );
        let metrics = MonitorMetrics {
            registry,
            workflows,
            oldest,
            stuck,
            findings,
            last_sync,
        };
        // Every series from start-up, so alerts and dashboards see zeros, not gaps.
        metrics.publish(&Census::empty(policy));
        metrics
    }

    /// Sets every gauge from `census`.
    pub fn publish(&self, census: &Census) {
        for ((pipeline, stage), at) in &census.stages {
            let labels = StageLabels {
                pipeline: pipeline.clone(),
                stage: stage.clone(),
            };
            self.workflows
                .get_or_create(&labels)
                .set(gauge_value(at.workflows));
            self.stuck.get_or_create(&labels).set(gauge_value(at.stuck));
            self.oldest
                .get_or_create(&labels)
                .set(at.oldest.map_or(0.0, |d| d.as_secs() as f64));
        }
        for (kind, n) in &census.findings {
            self.findings
                .get_or_create(&KindLabels {
                    kind: (*kind).to_owned(),
                })
                .set(gauge_value(*n));
        }
    }

    /// Records that the metrics were computed from a current view at `at`.
    pub fn synced(&self, at: SystemTime) {
        let secs = at
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.last_sync.set(secs);
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// A count as a gauge value (counts of Workflows never come near `i64::MAX`).
fn gauge_value(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::census::AtStage;
    use std::time::Duration;

    #[test]
    fn every_series_exists_from_start_up_at_zero() {
        let m = MonitorMetrics::new(&Policy::default_policy());
        let text = m.encode();
        for line in [
            "stage_guard_workflows{pipeline=\"default\",stage=\"waiting-pr-created\"} 0",
            "stage_guard_workflows{pipeline=\"default\",stage=\"unknown\"} 0",
            "stage_guard_workflows_stuck{pipeline=\"default\",stage=\"waiting-pr-approved\"} 0",
            "stage_guard_stage_oldest_seconds{pipeline=\"default\",stage=\"waiting-ready-for-qa\"} 0.0",
            "stage_guard_audit_findings{kind=\"label-disagrees\"} 0",
            "stage_guard_audit_findings{kind=\"stuck\"} 0",
            "stage_guard_monitor_last_sync_timestamp_seconds 0.0",
        ] {
            assert!(
                text.contains(&format!("{line}\n")),
                "missing {line} in\n{text}"
            );
        }
    }

    #[test]
    fn a_census_sets_each_gauge_and_a_stage_that_empties_reads_zero() {
        let policy = Policy::default_policy();
        let m = MonitorMetrics::new(&policy);
        let mut census = Census::empty(&policy);
        census.stages.insert(
            ("default".into(), "waiting-ready-for-qa".into()),
            AtStage {
                workflows: 3,
                oldest: Some(Duration::from_millis(7_500)),
                stuck: 1,
            },
        );
        census.findings.insert("stuck", 1);
        m.publish(&census);
        m.synced(UNIX_EPOCH + Duration::from_secs(1_795_680_000));
        let text = m.encode();
        let qa = "{pipeline=\"default\",stage=\"waiting-ready-for-qa\"}";
        for line in [
            format!("stage_guard_workflows{qa} 3"),
            format!("stage_guard_workflows_stuck{qa} 1"),
            format!("stage_guard_stage_oldest_seconds{qa} 7.0"),
            "stage_guard_audit_findings{kind=\"stuck\"} 1".to_owned(),
            "stage_guard_monitor_last_sync_timestamp_seconds 1795680000.0".to_owned(),
        ] {
            assert!(
                text.contains(&format!("{line}\n")),
                "missing {line} in\n{text}"
            );
        }
        m.publish(&Census::empty(&policy));
        let text = m.encode();
        assert!(
            text.contains(&format!("stage_guard_workflows{qa} 0\n")),
            "{text}"
        );
        assert!(text.contains(&format!("stage_guard_stage_oldest_seconds{qa} 0.0\n")));
        assert!(text.contains("stage_guard_audit_findings{kind=\"stuck\"} 0\n"));
    }
}
