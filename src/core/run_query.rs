//! How runs are ordered when listed: MLflow's `order_by` syntax, one key.

use std::fmt;

use crate::core::pagination::SortValue;
use crate::core::run::Run;

/// The attribute or metric runs are sorted by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunSortKey {
    StartTime,
    EndTime,
    Name,
    Metric(String),
}

/// A sort key and direction; ties are broken by run id in the same direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOrder {
    pub key: RunSortKey,
    pub descending: bool,
}

impl Default for RunOrder {
    /// Newest first, as MLflow lists runs.
    fn default() -> Self {
        Self {
            key: RunSortKey::StartTime,
            descending: true,
        }
    }
}

impl RunOrder {
    /// Parses `metrics.<key> [ASC|DESC]`, `start_time`, `end_time` or `run_name`, optionally
    /// prefixed with `attributes.`; the direction defaults to ascending, as in MLflow.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (field, direction) = match text.rsplit_once(char::is_whitespace) {
            Some((field, dir)) if dir.eq_ignore_ascii_case("asc") => (field.trim(), false),
            Some((field, dir)) if dir.eq_ignore_ascii_case("desc") => (field.trim(), true),
            _ => (text, false),
        };
        let key = if let Some(metric) = field.strip_prefix("metrics.") {
            let metric = metric.trim_matches('`');
            crate::core::names::validate_key(metric).map_err(|e| format!("metric key {e}"))?;
            RunSortKey::Metric(metric.to_owned())
        } else {
            match field.strip_prefix("attributes.").unwrap_or(field) {
                "start_time" => RunSortKey::StartTime,
                "end_time" => RunSortKey::EndTime,
                "run_name" | "name" => RunSortKey::Name,
                _ => {
                    return Err(format!(
                        "cannot order by {field:?}; use metrics.<key>, start_time, end_time or \
                         run_name, followed by ASC or DESC"
                    ))
                }
            }
        };
        Ok(Self {
            key,
            descending: direction,
        })
    }

    /// The value of this key for a run, for page cursors.
    pub fn sort_value(&self, run: &Run) -> SortValue {
        match &self.key {
            RunSortKey::StartTime => SortValue::Time(run.start_time),
            RunSortKey::EndTime => run.end_time.map_or(SortValue::Null, SortValue::Time),
            RunSortKey::Name => SortValue::Text(run.name.clone()),
            RunSortKey::Metric(key) => run
                .metrics
                .iter()
                .find(|m| &m.key == key)
                .map_or(SortValue::Null, |m| SortValue::Float(m.value)),
        }
    }
}

impl fmt::Display for RunOrder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            RunSortKey::StartTime => f.write_str("start_time")?,
            RunSortKey::EndTime => f.write_str("end_time")?,
            RunSortKey::Name => f.write_str("run_name")?,
            RunSortKey::Metric(key) => write!(f, "metrics.{key}")?,
        }
        f.write_str(if self.descending { " DESC" } else { " ASC" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mlflow_order_by_clauses_parse() {
        let auc = RunOrder::parse("metrics.auc DESC").unwrap();
        let start = RunOrder::parse("attributes.start_time").unwrap();

        assert_eq!(
            auc,
            RunOrder {
                key: RunSortKey::Metric("auc".into()),
                descending: true
            }
        );
        assert_eq!(
            start,
            RunOrder {
                key: RunSortKey::StartTime,
                descending: false
            }
        );
        assert_eq!(auc.to_string(), "metrics.auc DESC");
    }

    #[test]
    fn unknown_fields_are_refused_with_the_choices() {
        let err = RunOrder::parse("params.lr DESC").unwrap_err();

        assert!(err.contains("metrics.<key>"), "{err}");
    }
}
