//! `/api/v1/experiments/{experiment_id}/runs`: create, feed, close, read and list runs.

use axum::extract::State;
use axum::http::{header, StatusCode};
use uuid::Uuid;

use crate::api::auth::Tenant;
use crate::api::extract::{Json, Path, Query};
use crate::api::problem::{ApiError, ApiResult};
use crate::api::run_dto::{
    CreateRunRequest, ListRunsQuery, LogBatchRequest, RunColumns, RunPage, RunResponse,
    UpdateRunRequest,
};
use crate::api::AppState;
use crate::core::pagination::PageRequest;
use crate::core::run::{self, LogBatch, NewRun, RunUpdate};
use crate::core::run_query::{RunFilter, RunOrder, RunQuery};
use crate::core::services::RunService;
use crate::core::validation::Validator;
use crate::core::{ExperimentId, RunId};

/// Create a run, running or already complete
#[utoipa::path(
    post,
    path = "/api/v1/experiments/{experiment_id}/runs",
    tag = "runs",
    params(("experiment_id" = Uuid, Path, description = "Experiment id")),
    request_body = CreateRunRequest,
    responses(
        (status = 201, description = "Created", body = RunResponse,
         headers(("location" = String, description = "URL of the new run"))),
    )
)]
pub async fn create_run(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
    Path(experiment_id): Path<Uuid>,
    Json(body): Json<CreateRunRequest>,
) -> ApiResult<(
    StatusCode,
    [(header::HeaderName, String); 1],
    axum::Json<RunResponse>,
)> {
    let new = NewRun::parse(body.into(), run::now())?;

    let run = state
        .runs
        .create(tenant, ExperimentId::from(experiment_id), new)
        .await?;

    let location = format!("/api/v1/experiments/{experiment_id}/runs/{}", run.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        axum::Json(RunResponse::of(run, state.mlflow.is_some())),
    ))
}

/// List, filter and compare an experiment's runs
#[utoipa::path(
    get,
    path = "/api/v1/experiments/{experiment_id}/runs",
    tag = "runs",
    params(("experiment_id" = Uuid, Path, description = "Experiment id"), ListRunsQuery),
    responses((status = 200, body = RunPage))
)]
pub async fn list_runs(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
    Path(experiment_id): Path<Uuid>,
    Query(query): Query<ListRunsQuery>,
) -> ApiResult<axum::Json<RunPage>> {
    let mut v = Validator::new();
    let order = match query.order_by.as_deref().filter(|o| !o.trim().is_empty()) {
        Some(text) => v
            .check("order_by", RunOrder::parse(text))
            .unwrap_or_default(),
        None => RunOrder::default(),
    };
    let filter = match query.filter.as_deref() {
        Some(text) => v
            .check("filter", RunFilter::parse(text))
            .unwrap_or_default(),
        None => RunFilter::default(),
    };
    let run_query = RunQuery { filter, order };
    let ordering = RunService::ordering_tag(&run_query);
    let page = PageRequest::parse(&mut v, query.limit, query.page_token.as_deref(), &ordering);
    let columns = RunColumns::parse(query.metric_keys.as_deref(), query.param_keys.as_deref());
    v.finish(|| ()).map_err(ApiError::invalid_query)?;

    let found = state
        .runs
        .list(tenant, ExperimentId::from(experiment_id), &run_query, &page)
        .await?;

    let mlflow_on = state.mlflow.is_some();
    Ok(axum::Json(RunPage {
        items: found
            .items
            .into_iter()
            .map(|r| {
                let mut response = RunResponse::of(r, mlflow_on);
                columns.apply(&mut response);
                response
            })
            .collect(),
        next_page_token: found.next_page_token,
    }))
}

/// Get a run with its params, latest metrics and tags
#[utoipa::path(
    get,
    path = "/api/v1/experiments/{experiment_id}/runs/{run_id}",
    tag = "runs",
    params(
        ("experiment_id" = Uuid, Path, description = "Experiment id"),
        ("run_id" = Uuid, Path, description = "Run id"),
    ),
    responses((status = 200, body = RunResponse))
)]
pub async fn get_run(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
    Path((experiment_id, run_id)): Path<(Uuid, Uuid)>,
) -> ApiResult<axum::Json<RunResponse>> {
    let run = state
        .runs
        .get(tenant, experiment_id.into(), RunId::from(run_id))
        .await?;

    Ok(axum::Json(RunResponse::of(run, state.mlflow.is_some())))
}

/// Log metrics, params and tags to a run
#[utoipa::path(
    post,
    path = "/api/v1/experiments/{experiment_id}/runs/{run_id}/log-batch",
    tag = "runs",
    params(
        ("experiment_id" = Uuid, Path, description = "Experiment id"),
        ("run_id" = Uuid, Path, description = "Run id"),
    ),
    request_body = LogBatchRequest,
    responses(
        (status = 200, description = "Logged; the run as it is now", body = RunResponse),
        (status = 409, description = "A param was already logged with another value",
         body = crate::api::problem::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn log_run_batch(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
    Path((experiment_id, run_id)): Path<(Uuid, Uuid)>,
    Json(body): Json<LogBatchRequest>,
) -> ApiResult<axum::Json<RunResponse>> {
    let mut v = Validator::new();
    let metrics = body.metrics.into_iter().map(Into::into).collect();
    let batch = LogBatch::parse(&mut v, metrics, body.params, body.tags, run::now());
    v.finish(|| ())?;

    let run = state
        .runs
        .log_batch(tenant, experiment_id.into(), run_id.into(), batch)
        .await?;

    Ok(axum::Json(RunResponse::of(run, state.mlflow.is_some())))
}

/// Change a run's status, end time or name
#[utoipa::path(
    patch,
    path = "/api/v1/experiments/{experiment_id}/runs/{run_id}",
    tag = "runs",
    params(
        ("experiment_id" = Uuid, Path, description = "Experiment id"),
        ("run_id" = Uuid, Path, description = "Run id"),
    ),
    request_body = UpdateRunRequest,
    responses(
        (status = 200, body = RunResponse),
        (status = 409, description = "The run has already ended with another status",
         body = crate::api::problem::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn update_run(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
    Path((experiment_id, run_id)): Path<(Uuid, Uuid)>,
    Json(body): Json<UpdateRunRequest>,
) -> ApiResult<axum::Json<RunResponse>> {
    let update = RunUpdate {
        status: body.status,
        end_time: body.end_time,
        name: body.name,
    };

    let run = state
        .runs
        .update(tenant, experiment_id.into(), run_id.into(), update)
        .await?;

    Ok(axum::Json(RunResponse::of(run, state.mlflow.is_some())))
}
