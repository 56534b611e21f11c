//! Keyset-paginated listing queries for experiments and runs.

use crate::adapters::sql::{Bind, Dialect, Sql};
use crate::core::events::EventFilter;
use crate::core::experiment::ExperimentFilter;
use crate::core::pagination::{PageRequest, SortValue};
use crate::core::run_query::{RunOrder, RunSortKey};
use crate::core::{ExperimentId, TenantId};

pub const EXPERIMENT_COLUMNS: &str = "id, name, description, tags, created_at, updated_at, version";

pub const RUN_COLUMNS: &str =
    "r.id, r.experiment_id, r.name, r.status, r.start_time, r.end_time, r.params, r.tags, \
     r.created_at, r.updated_at, r.version";

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
    if let Some(SortValue::Int(seq)) = page.after.as_ref().and_then(|c| c.key.as_ref()) {
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

/// Runs of one experiment in `order` (ties broken by id), one page plus one row.
///
/// Runs without a value for the sort key come after all runs that have one, in both directions.
pub fn runs_page(
    dialect: Dialect,
    tenant: TenantId,
    experiment: ExperimentId,
    order: &RunOrder,
    page: &PageRequest,
) -> Sql {
    let mut sql = Sql::new(dialect);
    sql.push("SELECT ").push(RUN_COLUMNS).push(" FROM runs r");
    let (expr, nullable) = match &order.key {
        RunSortKey::StartTime => ("r.start_time", false),
        RunSortKey::EndTime => ("r.end_time", true),
        RunSortKey::Name if dialect == Dialect::Postgres => ("r.name COLLATE \"C\"", false),
        RunSortKey::Name => ("r.name", false),
        RunSortKey::Metric(key) => {
            sql.push(
                " LEFT JOIN run_latest_metrics s ON s.tenant_id = r.tenant_id \
                 AND s.run_id = r.id AND s.key = ",
            )
            .bind(Bind::Text(key.clone()));
            ("s.value", true)
        }
    };
    sql.push(" WHERE r.tenant_id = ")
        .bind(Bind::Uuid(*tenant.as_uuid()));
    sql.push(" AND r.experiment_id = ")
        .bind(Bind::Uuid(*experiment.as_uuid()));
    let op = if order.descending { "<" } else { ">" };
    if let Some(after) = &page.after {
        match after.key.as_ref().and_then(sort_bind) {
            Some(value) => {
                sql.push(" AND (");
                if nullable {
                    sql.push(expr).push(" IS NULL OR ");
                }
                sql.push(expr).push(&format!(" {op} ")).bind(value.clone());
                sql.push(" OR (").push(expr).push(" = ").bind(value);
                sql.push(&format!(" AND r.id {op} "))
                    .bind(Bind::Uuid(after.id))
                    .push("))");
            }
            None => {
                sql.push(" AND ").push(expr).push(" IS NULL");
                sql.push(&format!(" AND r.id {op} "))
                    .bind(Bind::Uuid(after.id));
            }
        }
    }
    let direction = if order.descending { "DESC" } else { "ASC" };
    sql.push(" ORDER BY ");
    if nullable {
        sql.push("(").push(expr).push(" IS NULL), ");
    }
    sql.push(&format!("{expr} {direction}, r.id {direction} LIMIT "));
    sql.bind(Bind::Int(page.fetch_limit()));
    sql
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

    #[test]
    fn a_metric_cursor_continues_after_the_last_value_then_into_runs_without_it() {
        let order = RunOrder::parse("metrics.auc DESC").unwrap();
        let id = uuid::Uuid::now_v7();
        let page = PageRequest {
            limit: 10,
            after: Some(Cursor {
                ordering: "x".into(),
                key: Some(SortValue::Float(0.5)),
                id,
            }),
        };

        let sql = runs_page(
            Dialect::Postgres,
            TenantId::generate(),
            ExperimentId::generate(),
            &order,
            &page,
        );

        assert!(sql
            .text
            .contains("s.value IS NULL OR s.value < $4 OR (s.value = $5 AND r.id < $6)"));
        assert!(sql
            .text
            .ends_with("ORDER BY (s.value IS NULL), s.value DESC, r.id DESC LIMIT $7"));
        assert_eq!(sql.binds.len(), 7);
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
