//! `stage-guard audit`: every Workflow (of a namespace, or all) checked against its pipeline. The
//! list is read page by page (`limit`/`continue`), each page checked and dropped, so the memory held
//! is one page and the findings.

use std::time::SystemTime;

use crate::cli::steer::{AuditArgs, AuditOutput};
use crate::cluster::workflows::stored_from_meta;
use crate::core::audit::{findings, pipeline_of};
use crate::report::audit::AuditReport;

use super::progress::Progress;
use super::session::Session;
use super::{Program, Stop};

pub async fn run(args: AuditArgs, program: Program) -> Result<u8, Stop> {
    let s = Session::open(&args.cluster).await?;
    let namespace = (!args.all_namespaces).then_some(s.namespace.as_str());
    let now = SystemTime::now();
    let mut report = AuditReport::default();
    let mut progress = Progress::new(format!("{} audit", program.as_str()), "Workflows");
    let mut token: Option<String> = None;
    loop {
        let page = s
            .workflows
            .list_page(
                namespace,
                args.selector.as_deref(),
                args.chunk_size,
                token.as_deref(),
            )
            .await?;
        for meta in &page.items {
            let w = stored_from_meta(&s.policy, meta);
            let found = findings(&s.policy, &w, now);
            let pipeline = pipeline_of(&s.policy, &w).map(|p| p.name.as_str());
            report.add(
                &w,
                pipeline,
                w.labels.get(&s.policy.label).map(String::as_str),
                &found,
            );
        }
        progress.update(report.checked);
        match page.next {
            Some(next) => token = Some(next),
            None => break,
        }
    }
    progress.finish(report.checked);
    match args.output {
        AuditOutput::Table => print!("{}", report.table()),
        AuditOutput::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report)
                .map_err(|e| Stop::usage(format!("cannot write JSON: {e}")))?
        ),
    }
    Ok(if report.is_clean() { 0 } else { 1 })
}
