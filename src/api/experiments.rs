//! `/api/v1/experiments`: create, read and list a tenant's experiments.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::{header, StatusCode};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::api::auth::Tenant;
use crate::api::extract::{Json, Path, Query};
use crate::api::problem::{ApiError, ApiResult};
use crate::api::run_dto::MlflowSyncResponse;
use crate::api::AppState;
use crate::core::experiment::{Experiment, ExperimentFilter, NewExperiment, TagFilter};
use crate::core::pagination::PageRequest;
use crate::core::services::EXPERIMENT_ORDERING;
use crate::core::validation::Validator;
use crate::core::ExperimentId;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateExperimentRequest {
    /// Unique among the tenant's experiments; 1 to 200 characters.
    #[schema(example = "churn-model")]
    pub name: String,
    #[serde(default)]
    #[schema(example = "Predict customer churn from usage data")]
    pub description: Option<String>,
    /// Free-form labels; keys follow MLflow's key rules.
    #[serde(default)]
    #[schema(example = json!({"team": "growth"}))]
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ExperimentResponse {
    pub id: Uuid,
    pub name: String,
    pub description: Option<String>,
    pub tags: BTreeMap<String, String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Increases with every change.
    pub version: i64,
    /// The experiment's copy in MLflow; absent when MLflow is turned off.
    pub mlflow: Option<MlflowSyncResponse>,
}

impl ExperimentResponse {
    /// The response for `e`, with its MLflow copy when MLflow is on.
    pub fn of(e: Experiment, mlflow_on: bool) -> Self {
        let mlflow = mlflow_on.then(|| MlflowSyncResponse::experiment(&e.mlflow));
        Self {
            id: e.id.into(),
            name: e.name,
            description: e.description,
            tags: e.tags,
            created_at: e.created_at,
            updated_at: e.updated_at,
            version: e.version,
            mlflow,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ExperimentPage {
    pub items: Vec<ExperimentResponse>,
    /// Pass as `page_token` for the next page; absent on the last page.
    pub next_page_token: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListExperimentsQuery {
    /// Page size, 1 to 1000 (default 100).
    pub limit: Option<u32>,
    /// The `next_page_token` of the previous page.
    pub page_token: Option<String>,
    /// Only experiments whose name starts with this text.
    pub name_prefix: Option<String>,
    /// Only experiments with this tag: `key` or `key:value`.
    pub tag: Option<String>,
}

/// Create an experiment
#[utoipa::path(
    post,
    path = "/api/v1/experiments",
    tag = "experiments",
    request_body = CreateExperimentRequest,
    responses(
        (status = 201, description = "Created", body = ExperimentResponse,
         headers(("location" = String, description = "URL of the new experiment"))),
        (status = 409, description = "The tenant already has an experiment with this name",
         body = crate::api::problem::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create_experiment(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
    Json(body): Json<CreateExperimentRequest>,
) -> ApiResult<(
    StatusCode,
    [(header::HeaderName, String); 1],
    axum::Json<ExperimentResponse>,
)> {
    let new = NewExperiment::parse(&body.name, body.description, body.tags)?;

    let experiment = state.experiments.create(tenant, new).await?;

    let location = format!("/api/v1/experiments/{}", experiment.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        axum::Json(ExperimentResponse::of(experiment, state.mlflow.is_some())),
    ))
}

/// List experiments, newest first
#[utoipa::path(
    get,
    path = "/api/v1/experiments",
    tag = "experiments",
    params(ListExperimentsQuery),
    responses((status = 200, body = ExperimentPage))
)]
pub async fn list_experiments(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
    Query(query): Query<ListExperimentsQuery>,
) -> ApiResult<axum::Json<ExperimentPage>> {
    let (filter, page) = parse_list_query(query).map_err(ApiError::invalid_query)?;

    let found = state.experiments.list(tenant, &filter, &page).await?;

    Ok(axum::Json(ExperimentPage {
        items: found
            .items
            .into_iter()
            .map(|e| ExperimentResponse::of(e, state.mlflow.is_some()))
            .collect(),
        next_page_token: found.next_page_token,
    }))
}

fn parse_list_query(
    query: ListExperimentsQuery,
) -> crate::core::Result<(ExperimentFilter, PageRequest)> {
    let mut v = Validator::new();
    let tag = query
        .tag
        .as_deref()
        .and_then(|t| v.check("tag", TagFilter::parse(t)));
    let page = PageRequest::parse(
        &mut v,
        query.limit,
        query.page_token.as_deref(),
        EXPERIMENT_ORDERING,
    );
    let name_prefix = query.name_prefix.filter(|p| !p.is_empty());
    v.finish(|| (ExperimentFilter { name_prefix, tag }, page))
}

/// Get an experiment
#[utoipa::path(
    get,
    path = "/api/v1/experiments/{experiment_id}",
    tag = "experiments",
    params(("experiment_id" = Uuid, Path, description = "Experiment id")),
    responses((status = 200, body = ExperimentResponse))
)]
pub async fn get_experiment(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
    Path(experiment_id): Path<Uuid>,
) -> ApiResult<axum::Json<ExperimentResponse>> {
    let experiment = state
        .experiments
        .get(tenant, ExperimentId::from(experiment_id))
        .await?;

    Ok(axum::Json(ExperimentResponse::of(
        experiment,
        state.mlflow.is_some(),
    )))
}
