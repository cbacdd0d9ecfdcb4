//! The reason codes of the decision table (SPEC 4.1): what every decision names, in messages, audit
//! annotations and metrics.

/// Why a write was decided the way it was: the reason codes of SPEC 4.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    Unchanged,
    Entry,
    Advance,
    Resubmit,
    Override,
    OverrideNotPermitted,
    HistoryTampered,
    HistoryMissing,
    PipelineChanged,
    UnknownStage,
    LabelRemoved,
    Skip,
    Regression,
}

impl Reason {
    pub const ALL: [Reason; 13] = [
        Reason::Unchanged,
        Reason::Entry,
        Reason::Advance,
        Reason::Resubmit,
        Reason::Override,
        Reason::OverrideNotPermitted,
        Reason::HistoryTampered,
        Reason::HistoryMissing,
        Reason::PipelineChanged,
        Reason::UnknownStage,
        Reason::LabelRemoved,
        Reason::Skip,
        Reason::Regression,
    ];

    /// The reason code as it appears in messages, audit annotations and metrics.
    pub fn code(self) -> &'static str {
        match self {
            Reason::Unchanged => "unchanged",
            Reason::Entry => "entry",
            Reason::Advance => "advance",
            Reason::Resubmit => "resubmit",
            Reason::Override => "override",
            Reason::OverrideNotPermitted => "override-not-permitted",
            Reason::HistoryTampered => "history-tampered",
            Reason::HistoryMissing => "history-missing",
            Reason::PipelineChanged => "pipeline-changed",
            Reason::UnknownStage => "unknown-stage",
            Reason::LabelRemoved => "label-removed",
            Reason::Skip => "skip",
            Reason::Regression => "regression",
        }
    }

    /// Reasons that admit the write.
    pub fn admits(self) -> bool {
        matches!(
            self,
            Reason::Unchanged
                | Reason::Entry
                | Reason::Advance
                | Reason::Resubmit
                | Reason::Override
        )
    }

    /// Stage-rule denials: the ones `mode: warn` turns into warnings. The others are enforced in every mode.
    pub fn is_stage_rule_denial(self) -> bool {
        matches!(
            self,
            Reason::UnknownStage | Reason::LabelRemoved | Reason::Skip | Reason::Regression
        )
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}
