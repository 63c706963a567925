//! CloudWatch metrics as Embedded Metric Format (EMF) log lines.
//!
//! On Lambda, a JSON line on stdout with an `_aws` block becomes metrics in
//! CloudWatch with no API calls and no extra latency; locally the same lines
//! show the same figures in the output of `make run`. Each metric is emitted
//! without dimensions (for alarms and the dashboard) and by dataset.

use serde_json::{json, Map, Value};

/// Units CloudWatch understands.
#[derive(Debug, Clone, Copy)]
pub enum Unit {
    Count,
    CountPerSecond,
    Milliseconds,
    Seconds,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::CountPerSecond => "Count/Second",
            Unit::Milliseconds => "Milliseconds",
            Unit::Seconds => "Seconds",
        }
    }
}

/// Emits EMF lines under one namespace; an empty namespace emits nothing.
#[derive(Debug, Clone)]
pub struct Metrics {
    namespace: String,
}

impl Metrics {
    pub fn new(namespace: &str) -> Self {
        Metrics {
            namespace: namespace.to_string(),
        }
    }

    /// Builds the EMF line for `values` about `dataset`, with extra
    /// `properties` (searchable in the logs, not metrics).
    pub fn line(
        &self,
        dataset: &str,
        values: &[(&str, f64, Unit)],
        properties: &[(&str, Value)],
    ) -> Option<String> {
        self.line_for(Some(dataset), values, properties)
    }

    /// [`Metrics::line`] without the `Dataset` dimension: for values about a
    /// name that is not a dataset (a caller's typo must not create a metric).
    pub fn line_for(
        &self,
        dataset: Option<&str>,
        values: &[(&str, f64, Unit)],
        properties: &[(&str, Value)],
    ) -> Option<String> {
        if self.namespace.is_empty() || values.is_empty() {
            return None;
        }
        let now = crate::now_ms();
        let defs: Vec<Value> = values
            .iter()
            .map(|(name, _, unit)| json!({"Name": name, "Unit": unit.as_str()}))
            .collect();
        let dimensions = if dataset.is_some() {
            json!([[], ["Dataset"]])
        } else {
            json!([[]])
        };
        let mut line = Map::new();
        line.insert(
            "_aws".into(),
            json!({"Timestamp": now, "CloudWatchMetrics": [{"Namespace": self.namespace, "Dimensions": dimensions, "Metrics": defs}]}),
        );
        if let Some(dataset) = dataset {
            line.insert("Dataset".into(), json!(dataset));
        }
        for (name, value, _) in values {
            line.insert((*name).into(), json!(value));
        }
        for (name, value) in properties {
            line.insert((*name).into(), value.clone());
        }
        Some(Value::Object(line).to_string())
    }

    /// Prints the EMF line (see [`Metrics::line`]) to stdout.
    pub fn emit(&self, dataset: &str, values: &[(&str, f64, Unit)], properties: &[(&str, Value)]) {
        self.emit_for(Some(dataset), values, properties);
    }

    /// Prints the EMF line of [`Metrics::line_for`] to stdout.
    pub fn emit_for(
        &self,
        dataset: Option<&str>,
        values: &[(&str, f64, Unit)],
        properties: &[(&str, Value)],
    ) {
        if let Some(line) = self.line_for(dataset, values, properties) {
            println!("{line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emf_lines_declare_every_metric_with_and_without_the_dataset() {
        let m = Metrics::new("FeatureStore");
        let line = m
            .line(
                "recs",
                &[
                    ("RecordsIngested", 10.0, Unit::Count),
                    ("ChunkMillis", 5.5, Unit::Milliseconds),
                ],
                &[("version", json!("v1"))],
            )
            .unwrap();
        let v: Value = serde_json::from_str(&line).unwrap();
        let cw = &v["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(cw["Namespace"], "FeatureStore");
        assert_eq!(cw["Dimensions"], json!([[], ["Dataset"]]));
        assert_eq!(
            cw["Metrics"][1],
            json!({"Name": "ChunkMillis", "Unit": "Milliseconds"})
        );
        assert_eq!(
            (
                v["RecordsIngested"].as_f64(),
                v["Dataset"].as_str(),
                v["version"].as_str()
            ),
            (Some(10.0), Some("recs"), Some("v1"))
        );
        assert!(v["_aws"]["Timestamp"].as_u64().unwrap() > 1_700_000_000_000);
        assert!(Metrics::new("")
            .line("recs", &[("X", 1.0, Unit::Count)], &[])
            .is_none());
        let v: Value = serde_json::from_str(
            &m.line_for(None, &[("Requests", 1.0, Unit::Count)], &[])
                .unwrap(),
        )
        .unwrap();
        assert_eq!(v["_aws"]["CloudWatchMetrics"][0]["Dimensions"], json!([[]]));
        assert!(v.get("Dataset").is_none(), "{v}");
    }
}
