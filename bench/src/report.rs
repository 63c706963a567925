//! The results table: printed, and written as JSON and Markdown.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

/// One line of the table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub measure: String,
    pub ours: String,
    pub reference: String,
    /// Ours relative to the reference (higher is better unless noted).
    pub ratio: Option<f64>,
    pub target: String,
}

impl Row {
    pub fn new(
        measure: &str,
        ours: String,
        reference: String,
        ratio: Option<f64>,
        target: &str,
    ) -> Self {
        Row {
            measure: measure.into(),
            ours,
            reference,
            ratio,
            target: target.into(),
        }
    }
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub machine: String,
    pub date: String,
    pub mode: String,
    pub rows: Vec<Row>,
}

impl Report {
    pub fn markdown(&self) -> String {
        let mut s = format!(
            "Measured on {} ({}), {} run.\n\n",
            self.machine, self.date, self.mode
        );
        s.push_str("| measure | ours | reference | ratio | target |\n|---|---|---|---|---|\n");
        for r in &self.rows {
            let ratio = r
                .ratio
                .map(|x| format!("{x:.2}×"))
                .unwrap_or_else(|| "—".into());
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} |",
                r.measure, r.ours, r.reference, ratio, r.target
            );
        }
        s
    }

    /// Writes `<stem>.json` and `<stem>.md` in `dir`.
    pub fn write(&self, dir: &Path, stem: &str) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(
            dir.join(format!("{stem}.json")),
            serde_json::to_string_pretty(self)?,
        )?;
        std::fs::write(dir.join(format!("{stem}.md")), self.markdown())
    }
}
