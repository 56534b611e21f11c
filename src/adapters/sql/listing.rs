//! Keyset-paginated listing queries for experiments and runs.

use crate::adapters::sql::{Bind, Dialect, Sql};
use crate::core::events::EventFilter;
use crate::core::experiment::ExperimentFilter;
use crate::core::pagination::{PageRequest, SortValue};
use crate::core::run_query::{Condition, FilterField, FilterValue, RunQuery, RunSortKey};
use crate::core::{ExperimentId, TenantId};

pub const EXPERIMENT_COLUMNS: &str =
    "id, name, description, tags, created_at, updated_at, version, \
     mlflow_id, mlflow_synced_version, mlflow_error, mlflow_synced_at";

pub const RUN_COLUMNS: &str =
    "r.id, r.experiment_id, r.name, r.status, r.start_time, r.end_time, r.params, r.tags, \
     r.created_at, r.updated_at, r.version, r.mlflow_id, r.mlflow_synced_version, r.mlflow_error, \
     r.mlflow_synced_at";

pub const EVENT_COLUMNS: &str = "seq, id, tenant_id, aggregate_type, aggregate_id, event_type, \
     data, occurred_at, published_at";

/// The tenant's events matching `filter`, in outbox order, one page plus one row.
pub fn events_page(
    dialect: Dialect,
    tenant: TenantId,
    filter: &EventFilter,
    page: &PageRequest,
) -> Sql {
    let mut sql = Sql::new(dialect);
    sql.push("SELECT ")
        .push(EVENT_COLUMNS)
        .push(" FROM outbox_events WHERE tenant_id = ");
    sql.bind(Bind::Uuid(*tenant.as_uuid()));
    if let Some(kind) = filter.aggregate_kind {
        sql.push(" AND aggregate_type = ")
            .bind(Bind::Text(kind.as_str().to_owned()));
    }
    if let Some(id) = filter.aggregate_id {
        sql.push(" AND aggregate_id = ").bind(Bind::Uuid(id));
    }
    if let Some(event_type) = &filter.event_type {
        sql.push(" AND event_type = ")
            .bind(Bind::Text(event_type.clone()));
    }
    if let Some(since) = filter.since {
        sql.push(" AND occurred_at >= ").bind(Bind::Time(since));
    }
    if let Some(until) = filter.until {
        sql.push(" AND occurred_at < ").bind(Bind::Time(until));
    }
    if let Some(SortValue::Int(seq)) = page.after.as_ref().and_then(|c| c.keys.first()) {
        sql.push(" AND seq > ").bind(Bind::Int(*seq));
    }
    sql.push(" ORDER BY seq LIMIT ")
        .bind(Bind::Int(page.fetch_limit()));
    sql
}

/// Experiments of `tenant` matching `filter`, newest first, one page plus one row.
pub fn experiments_page(
    dialect: Dialect,
    tenant: TenantId,
    filter: &ExperimentFilter,
    page: &PageRequest,
) -> Sql {
    let mut sql = Sql::new(dialect);
    sql.push("SELECT ")
        .push(EXPERIMENT_COLUMNS)
        .push(" FROM experiments WHERE tenant_id = ");
    sql.bind(Bind::Uuid(*tenant.as_uuid()));
    if let Some(prefix) = &filter.name_prefix {
        match dialect {
            Dialect::Postgres => {
                sql.push(" AND starts_with(name, ")
                    .bind(Bind::Text(prefix.clone()))
                    .push(")");
            }
            Dialect::Sqlite => {
                sql.push(" AND substr(name, 1, length(")
                    .bind(Bind::Text(prefix.clone()));
                sql.push(")) = ").bind(Bind::Text(prefix.clone()));
            }
        }
    }
    if let Some(tag) = &filter.tag {
        // Tag keys are validated (no quotes), so the SQLite JSON path below is well-formed.
        let key = match dialect {
            Dialect::Postgres => Bind::Text(tag.key.clone()),
            Dialect::Sqlite => Bind::Text(format!("$.\"{}\"", tag.key)),
        };
        match (dialect, &tag.value) {
            (Dialect::Postgres, None) => sql.push(" AND tags ? ").bind(key),
            (Dialect::Postgres, Some(v)) => sql
                .push(" AND tags ->> ")
                .bind(key)
                .push(" = ")
                .bind(Bind::Text(v.clone())),
            (Dialect::Sqlite, None) => sql
                .push(" AND json_extract(tags, ")
                .bind(key)
                .push(") IS NOT NULL"),
            (Dialect::Sqlite, Some(v)) => sql
                .push(" AND json_extract(tags, ")
                .bind(key)
                .push(") = ")
                .bind(Bind::Text(v.clone())),
        };
    }
    if let Some(after) = &page.after {
        sql.push(" AND id < ").bind(Bind::Uuid(after.id));
    }
    sql.push(" ORDER BY id DESC LIMIT ")
        .bind(Bind::Int(page.fetch_limit()));
    sql
}

/// A run column or value that sorting or filtering reads.
#[derive(Debug, Clone)]
enum RunExpr {
    /// A column of `runs r`, possibly with a collation.
    Column(&'static str),
    /// The latest value of a metric, from the sort join `s<n>`.
    SortMetric(usize),
    /// A key of the `params` or `tags` JSON map.
    Json { column: &'static str, key: String },
}

impl RunExpr {
    fn of(key: &RunSortKey, index: usize, dialect: Dialect) -> (Self, bool) {
        match key {
            RunSortKey::StartTime => (Self::Column("r.start_time"), false),
            RunSortKey::EndTime => (Self::Column("r.end_time"), true),
            RunSortKey::Name if dialect == Dialect::Postgres => {
                (Self::Column("r.name COLLATE \"C\""), false)
            }
            RunSortKey::Name => (Self::Column("r.name"), false),
            RunSortKey::Metric(_) => (Self::SortMetric(index), true),
            RunSortKey::Param(key) => (json("r.params", key), true),
            RunSortKey::Tag(key) => (json("r.tags", key), true),
        }
    }

    fn push(&self, sql: &mut Sql) {
        match self {
            Self::Column(column) => {
                sql.push(column);
            }
            Self::SortMetric(index) => {
                sql.push(&format!("s{index}.value"));
            }
            Self::Json { column, key } => match sql.dialect {
                Dialect::Postgres => {
                    sql.push(&format!("(({column} ->> "))
                        .bind(Bind::Text(key.clone()))
                        .push(") COLLATE \"C\")");
                }
                Dialect::Sqlite => {
                    // Keys are validated (no quotes), so the JSON path is well-formed.
                    sql.push(&format!("json_extract({column}, "))
                        .bind(Bind::Text(format!("$.\"{key}\"")))
                        .push(")");
                }
            },
        }
    }
}

fn json(column: &'static str, key: &str) -> RunExpr {
    RunExpr::Json {
        column,
        key: key.to_owned(),
    }
}

/// Runs of one experiment matching `query.filter` in `query.order` (ties broken by id), one
/// page plus one row.
///
/// Runs without a value for a sort key come after all runs that have one, in both directions.
/// The page condition is the keyset comparison spelled out key by key: a run comes after the
/// cursor if it is equal on the first keys and after it on the next one, or equal on all keys
/// and after it by id.
pub fn runs_page(
    dialect: Dialect,
    tenant: TenantId,
    experiment: ExperimentId,
    query: &RunQuery,
    page: &PageRequest,
) -> Sql {
    let mut sql = Sql::new(dialect);
    sql.push("SELECT ").push(RUN_COLUMNS).push(" FROM runs r");
    let mut terms = Vec::new();
    for (index, term) in query.order.terms.iter().enumerate() {
        let (expr, nullable) = RunExpr::of(&term.key, index, dialect);
        if let RunSortKey::Metric(key) = &term.key {
            sql.push(&format!(
                " LEFT JOIN run_latest_metrics s{index} ON s{index}.tenant_id = r.tenant_id \
                 AND s{index}.run_id = r.id AND s{index}.key = "
            ))
            .bind(Bind::Text(key.clone()));
        }
        terms.push((expr, nullable, term.descending));
    }
    sql.push(" WHERE r.tenant_id = ")
        .bind(Bind::Uuid(*tenant.as_uuid()));
    sql.push(" AND r.experiment_id = ")
        .bind(Bind::Uuid(*experiment.as_uuid()));
    for condition in &query.filter.conditions {
        sql.push(" AND ");
        push_condition(&mut sql, condition);
    }
    let ids_descending = query.order.ids_descending();
    if let Some(after) = &page.after {
        sql.push(" AND (");
        for i in 0..=terms.len() {
            if i > 0 {
                sql.push(" OR ");
            }
            sql.push("(");
            for (j, (expr, _, _)) in terms.iter().enumerate().take(i) {
                if j > 0 {
                    sql.push(" AND ");
                }
                match after.keys.get(j).and_then(sort_bind) {
                    Some(value) => {
                        expr.push(&mut sql);
                        sql.push(" = ").bind(value);
                    }
                    None => {
                        expr.push(&mut sql);
                        sql.push(" IS NULL");
                    }
                }
            }
            if i > 0 {
                sql.push(" AND ");
            }
            if i == terms.len() {
                let op = if ids_descending { "<" } else { ">" };
                sql.push(&format!("r.id {op} ")).bind(Bind::Uuid(after.id));
            } else {
                let (expr, nullable, descending) = &terms[i];
                let op = if *descending { "<" } else { ">" };
                match after.keys.get(i).and_then(sort_bind) {
                    // Nothing sorts after a missing value but other missing values.
                    None => {
                        sql.push("FALSE");
                    }
                    Some(value) => {
                        sql.push("(");
                        expr.push(&mut sql);
                        sql.push(&format!(" {op} ")).bind(value);
                        if *nullable {
                            sql.push(" OR ");
                            expr.push(&mut sql);
                            sql.push(" IS NULL");
                        }
                        sql.push(")");
                    }
                }
            }
            sql.push(")");
        }
        sql.push(")");
    }
    sql.push(" ORDER BY ");
    for (expr, nullable, descending) in &terms {
        if *nullable {
            sql.push("(");
            expr.push(&mut sql);
            sql.push(" IS NULL), ");
        }
        expr.push(&mut sql);
        sql.push(if *descending { " DESC, " } else { " ASC, " });
    }
    sql.push(if ids_descending {
        "r.id DESC LIMIT "
    } else {
        "r.id ASC LIMIT "
    });
    sql.bind(Bind::Int(page.fetch_limit()));
    sql
}

/// One filter comparison. A run without the metric, param or tag compared does not match.
fn push_condition(sql: &mut Sql, condition: &Condition) {
    let op = condition.comparator.as_sql();
    let value = match &condition.value {
        FilterValue::Number(n) => Bind::Float(*n),
        FilterValue::Text(t) => Bind::Text(t.clone()),
        FilterValue::Time(t) => Bind::Time(*t),
    };
    match &condition.field {
        FilterField::Metric(key) => {
            sql.push(
                "EXISTS (SELECT 1 FROM run_latest_metrics f WHERE f.tenant_id = r.tenant_id \
                 AND f.experiment_id = r.experiment_id AND f.run_id = r.id AND f.key = ",
            )
            .bind(Bind::Text(key.clone()));
            sql.push(&format!(" AND f.value {op} "))
                .bind(value)
                .push(")");
        }
        FilterField::Param(key) | FilterField::Tag(key) => {
            let column = if matches!(condition.field, FilterField::Param(_)) {
                "r.params"
            } else {
                "r.tags"
            };
            json(column, key).push(sql);
            sql.push(&format!(" {op} ")).bind(value);
        }
        FilterField::Status => {
            sql.push(&format!("r.status {op} ")).bind(value);
        }
        FilterField::RunName => {
            sql.push(&format!("r.name {op} ")).bind(value);
        }
        FilterField::StartTime => {
            sql.push(&format!("r.start_time {op} ")).bind(value);
        }
        FilterField::EndTime => {
            sql.push(&format!("r.end_time {op} ")).bind(value);
        }
    }
}

fn sort_bind(value: &SortValue) -> Option<Bind> {
    match value {
        SortValue::Null => None,
        SortValue::Float(f) => Some(Bind::Float(*f)),
        SortValue::Int(i) => Some(Bind::Int(*i)),
        SortValue::Time(t) => Some(Bind::Time(*t)),
        SortValue::Text(s) => Some(Bind::Text(s.clone())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::pagination::Cursor;
    use crate::core::run_query::{RunFilter, RunOrder};

    #[test]
    fn a_metric_cursor_continues_after_the_last_value_then_into_runs_without_it() {
        let query = RunQuery {
            order: RunOrder::parse("metrics.auc DESC").unwrap(),
            ..Default::default()
        };
        let id = uuid::Uuid::now_v7();
        let page = PageRequest {
            limit: 10,
            after: Some(Cursor {
                ordering: "x".into(),
                keys: vec![SortValue::Float(0.5)],
                id,
            }),
        };

        let sql = runs_page(
            Dialect::Postgres,
            TenantId::generate(),
            ExperimentId::generate(),
            &query,
            &page,
        );

        assert!(
            sql.text
                .contains("((s0.value < $4 OR s0.value IS NULL)) OR (s0.value = $5 AND r.id < $6)"),
            "{}",
            sql.text
        );
        assert!(sql
            .text
            .ends_with("ORDER BY (s0.value IS NULL), s0.value DESC, r.id DESC LIMIT $7"));
        assert_eq!(sql.binds.len(), 7);
    }

    #[test]
    fn filters_and_several_keys_bind_every_value_in_both_dialects() {
        let query = RunQuery {
            filter: RunFilter::parse("metrics.auc > 0.8 and params.model = 'xgb'").unwrap(),
            order: RunOrder::parse("params.model, metrics.auc DESC").unwrap(),
        };
        let page = PageRequest {
            limit: 10,
            after: Some(Cursor {
                ordering: "x".into(),
                keys: vec![SortValue::Text("a".into()), SortValue::Null],
                id: uuid::Uuid::now_v7(),
            }),
        };
        for dialect in [Dialect::Postgres, Dialect::Sqlite] {
            let sql = runs_page(
                dialect,
                TenantId::generate(),
                ExperimentId::generate(),
                &query,
                &page,
            );

            let placeholders = match dialect {
                Dialect::Postgres => sql.text.matches('$').count(),
                Dialect::Sqlite => sql.text.matches('?').count(),
            };
            assert_eq!(placeholders, sql.binds.len(), "{}", sql.text);
            assert!(sql.text.contains("FALSE"), "{}", sql.text);
        }
    }

    #[test]
    fn sqlite_uses_question_mark_placeholders() {
        let sql = experiments_page(
            Dialect::Sqlite,
            TenantId::generate(),
            &ExperimentFilter {
                name_prefix: Some("churn".into()),
                tag: None,
            },
            &PageRequest::first(5),
        );

        assert!(!sql.text.contains('$'), "{}", sql.text);
        assert_eq!(sql.text.matches('?').count(), sql.binds.len());
    }
}
