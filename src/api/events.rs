//! `/api/v1/events`: the tenant's audit trail, as CloudEvents in structured JSON form.

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::api::auth::Tenant;
use crate::api::extract::Query;
use crate::api::problem::{ApiError, ApiResult};
use crate::api::AppState;
use crate::core::events::{AggregateKind, EventFilter, StoredEvent};
use crate::core::pagination::PageRequest;
use crate::core::services::EVENT_ORDERING;
use crate::core::validation::Validator;

/// One lifecycle event, in the CloudEvents 1.0 JSON format. The same event reaches Kafka with
/// these attributes as `ce_*` headers and `data` as the message value.
#[derive(Debug, Serialize, ToSchema)]
pub struct CloudEvent {
    #[schema(example = "1.0")]
    pub specversion: &'static str,
    /// Unique per event; consumers de-duplicate on it.
    pub id: Uuid,
    #[schema(example = "/aumos-mlops-lifecycle")]
    pub source: String,
    #[serde(rename = "type")]
    #[schema(example = "com.aumos.mlops.run.created.v1")]
    pub event_type: String,
    #[schema(example = "runs/0193c7e4-7b7c-7cc3-8f0e-2d4a3f1b9a10")]
    pub subject: String,
    pub time: DateTime<Utc>,
    #[schema(example = "application/json")]
    pub datacontenttype: &'static str,
    /// The tenant that owns the aggregate (a CloudEvents extension attribute).
    pub tenantid: Uuid,
    /// Whether the event has reached Kafka yet (extension attribute of this API only).
    pub published: bool,
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

impl CloudEvent {
    fn from_stored(stored: StoredEvent, source: &str) -> Self {
        let subject = stored.event.subject();
        let event = stored.event;
        Self {
            specversion: "1.0",
            id: event.id,
            source: source.to_owned(),
            event_type: event.event_type,
            subject,
            time: event.occurred_at,
            datacontenttype: "application/json",
            tenantid: *event.tenant_id.as_uuid(),
            published: stored.published_at.is_some(),
            data: event.data,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventPage {
    pub items: Vec<CloudEvent>,
    /// Pass as `page_token` for the next page; absent on the last page.
    pub next_page_token: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListEventsQuery {
    /// Page size, 1 to 1000 (default 100).
    pub limit: Option<u32>,
    /// The `next_page_token` of the previous page.
    pub page_token: Option<String>,
    /// `experiment`, `run`, `model` or `deployment`.
    pub aggregate_type: Option<String>,
    /// Only events of this aggregate.
    pub aggregate_id: Option<Uuid>,
    /// A full event type, such as `com.aumos.mlops.run.ended.v1`.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub event_type: Option<String>,
    /// Events at or after this time (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Events before this time (RFC 3339).
    pub until: Option<DateTime<Utc>>,
}

/// List the tenant's lifecycle events, oldest first
#[utoipa::path(
    get,
    path = "/api/v1/events",
    tag = "events",
    params(ListEventsQuery),
    responses((status = 200, body = EventPage))
)]
pub async fn list_events(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
    Query(query): Query<ListEventsQuery>,
) -> ApiResult<axum::Json<EventPage>> {
    let mut v = Validator::new();
    let aggregate_kind = query
        .aggregate_type
        .as_deref()
        .and_then(|k| v.check("aggregate_type", k.parse::<AggregateKind>()));
    if let (Some(since), Some(until)) = (query.since, query.until) {
        v.ensure(since < until, "until", "must be after since");
    }
    let page = PageRequest::parse(
        &mut v,
        query.limit,
        query.page_token.as_deref(),
        EVENT_ORDERING,
    );
    let filter = v
        .finish(|| EventFilter {
            aggregate_kind,
            aggregate_id: query.aggregate_id,
            event_type: query.event_type,
            since: query.since,
            until: query.until,
        })
        .map_err(ApiError::invalid_query)?;

    let found = state.events.list(tenant, &filter, &page).await?;

    Ok(axum::Json(EventPage {
        items: found
            .items
            .into_iter()
            .map(|e| CloudEvent::from_stored(e, &state.event_source))
            .collect(),
        next_page_token: found.next_page_token,
    }))
}
