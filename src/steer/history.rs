//! `stage-guard history NAME`: one Workflow's stage timeline.

use std::time::SystemTime;

use crate::cli::steer::{HistoryArgs, HistoryOutput};
use crate::cluster::workflows::stored_from_meta;
use crate::core::audit::timeline;
use crate::report::history::HistoryView;

use super::Stop;
use super::session::Session;

pub async fn run(args: HistoryArgs) -> Result<u8, Stop> {
    let s = Session::open(&args.cluster).await?;
    let meta = s.workflows.get(&s.namespace, &args.name).await?;
    let w = stored_from_meta(&s.policy, &meta);
    let view = HistoryView::new(&w, &timeline(&s.policy, &w, SystemTime::now()));
    let text = match args.output {
        HistoryOutput::Table => view.table(),
        HistoryOutput::Json => serde_json::to_string_pretty(&view)
            .map(|j| j + "\n")
            .map_err(|e| Stop::usage(format!("cannot write JSON: {e}")))?,
        HistoryOutput::Yaml => serde_saphyr::to_string(&view)
            .map_err(|e| Stop::usage(format!("cannot write YAML: {e}")))?,
    };
    print!("{text}");
    Ok(0)
}
