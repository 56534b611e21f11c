//! Promotion of runs into MLflow's model registry, and the tenant's registered models.

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
use crate::api::AppState;
use crate::core::model::{Direction, Model, PromotionRequest};
use crate::core::pagination::PageRequest;
use crate::core::run_query::RunFilter;
use crate::core::services::{Promoted, MODEL_ORDERING};
use crate::core::validation::Validator;
use crate::core::{names, ModelId};

/// Register a run's model as a new version and point an alias at it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PromoteRequest {
    /// The registered model's name: letters, digits, `_`, `-` and `.`, at most 100.
    #[schema(example = "churn-classifier")]
    pub model_name: String,
    /// Defaults to `champion`.
    #[serde(default)]
    #[schema(example = "champion")]
    pub alias: Option<String>,
}

/// Promote the FINISHED run with the best value of a metric.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PromoteBestRequest {
    #[schema(example = "churn-classifier")]
    pub model_name: String,
    #[serde(default)]
    #[schema(example = "champion")]
    pub alias: Option<String>,
    /// The metric that decides.
    #[schema(example = "auc")]
    pub metric: String,
    /// `max` (higher is better) or `min`.
    #[schema(example = "max")]
    pub direction: String,
    /// Only runs matching this filter (MLflow search syntax, as when listing runs).
    #[serde(default)]
    #[schema(example = "params.model = 'xgboost'")]
    pub filter: Option<String>,
}

/// A promoted version, ready to be deployed as `model_id` / `model_version`.
#[derive(Debug, Serialize, ToSchema)]
pub struct PromotionResponse {
    pub model_id: Uuid,
    pub model_name: String,
    pub model_version: i64,
    pub alias: String,
    pub run_id: Uuid,
    pub experiment_id: Uuid,
    /// The registered model's name in MLflow.
    pub mlflow_model_name: String,
    pub mlflow_run_id: String,
    /// `runs:/<mlflow run id>/model`.
    pub source: String,
    /// The run's value of the deciding metric (promote-best only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metric_value: Option<f64>,
    pub model: ModelResponse,
}

impl PromotionResponse {
    fn of(promoted: Promoted, metric: Option<&str>) -> Self {
        let version = promoted
            .model
            .versions
            .iter()
            .find(|v| v.version == promoted.version);
        let metric_value = metric.and_then(|key| {
            promoted
                .run
                .metrics
                .iter()
                .find(|m| m.key == key)
                .map(|m| m.value)
        });
        Self {
            model_id: promoted.model.id.into(),
            model_name: promoted.model.name.clone(),
            model_version: promoted.version,
            alias: promoted.alias,
            run_id: promoted.run.id.into(),
            experiment_id: promoted.run.experiment_id.into(),
            mlflow_model_name: promoted.model.mlflow_name.clone(),
            mlflow_run_id: version.map(|v| v.mlflow_run_id.clone()).unwrap_or_default(),
            source: version.map(|v| v.source.clone()).unwrap_or_default(),
            metric_value,
            model: promoted.model.into(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelVersionResponse {
    pub version: i64,
    pub run_id: Uuid,
    pub experiment_id: Uuid,
    pub mlflow_run_id: String,
    pub source: String,
    /// The aliases pointing at this version.
    pub aliases: Vec<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelResponse {
    pub id: Uuid,
    pub name: String,
    /// The registered model's name in MLflow.
    pub mlflow_name: String,
    /// Alias → version.
    #[schema(example = json!({"champion": 3}))]
    pub aliases: BTreeMap<String, i64>,
    /// Oldest first.
    pub versions: Vec<ModelVersionResponse>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<Model> for ModelResponse {
    fn from(model: Model) -> Self {
        let versions = model
            .versions
            .iter()
            .map(|v| ModelVersionResponse {
                version: v.version,
                run_id: v.run_id.into(),
                experiment_id: v.experiment_id.into(),
                mlflow_run_id: v.mlflow_run_id.clone(),
                source: v.source.clone(),
                aliases: model.aliases_of(v.version),
                created_at: v.created_at,
            })
            .collect();
        Self {
            id: model.id.into(),
            name: model.name,
            mlflow_name: model.mlflow_name,
            aliases: model.aliases,
            versions,
            created_at: model.created_at,
            updated_at: model.updated_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelPage {
    pub items: Vec<ModelResponse>,
    /// Pass as `page_token` for the next page; absent on the last page.
    pub next_page_token: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListModelsQuery {
    /// Page size, 1 to 1000 (default 100).
    pub limit: Option<u32>,
    /// The `next_page_token` of the previous page.
    pub page_token: Option<String>,
}

type Created = (
    StatusCode,
    [(header::HeaderName, String); 1],
    axum::Json<PromotionResponse>,
);

fn created(response: PromotionResponse) -> Created {
    let location = format!("/api/v1/models/{}", response.model_id);
    (
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        axum::Json(response),
    )
}

/// Promote a run to a model version in MLflow's registry
#[utoipa::path(
    post,
    path = "/api/v1/experiments/{experiment_id}/runs/{run_id}/promote",
    tag = "models",
    params(
        ("experiment_id" = Uuid, Path, description = "Experiment id"),
        ("run_id" = Uuid, Path, description = "Run id"),
    ),
    request_body = PromoteRequest,
    responses(
        (status = 201, description = "Promoted; promoting the same run again returns its version",
         body = PromotionResponse),
        (status = 409, description = "The run is not FINISHED, has not reached MLflow yet, or \
         MLflow refused the registration",
         body = crate::api::problem::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn promote_run(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
    Path((experiment_id, run_id)): Path<(Uuid, Uuid)>,
    Json(body): Json<PromoteRequest>,
) -> ApiResult<Created> {
    let mut v = Validator::new();
    let request = PromotionRequest::parse(&mut v, &body.model_name, body.alias.as_deref());
    v.finish(|| ())?;

    let promoted = state
        .models
        .promote(tenant, experiment_id.into(), run_id.into(), request)
        .await?;

    Ok(created(PromotionResponse::of(promoted, None)))
}

/// Promote the best FINISHED run of an experiment by a metric
#[utoipa::path(
    post,
    path = "/api/v1/experiments/{experiment_id}/promote-best",
    tag = "models",
    params(("experiment_id" = Uuid, Path, description = "Experiment id")),
    request_body = PromoteBestRequest,
    responses(
        (status = 201, description = "Promoted", body = PromotionResponse),
        (status = 409, description = "No FINISHED run has the metric, the best run has not \
         reached MLflow yet, or MLflow refused the registration",
         body = crate::api::problem::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn promote_best(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
    Path(experiment_id): Path<Uuid>,
    Json(body): Json<PromoteBestRequest>,
) -> ApiResult<Created> {
    let mut v = Validator::new();
    let request = PromotionRequest::parse(&mut v, &body.model_name, body.alias.as_deref());
    let metric = body.metric.trim().to_owned();
    v.check("metric", names::validate_key(&metric));
    let direction = v.check("direction", body.direction.parse::<Direction>());
    let filter = match body.filter.as_deref() {
        Some(text) => v
            .check("filter", RunFilter::parse(text))
            .unwrap_or_default(),
        None => RunFilter::default(),
    };
    v.finish(|| ())?;
    let direction = direction.unwrap_or(Direction::Max);

    let promoted = state
        .models
        .promote_best(
            tenant,
            experiment_id.into(),
            &metric,
            direction,
            filter,
            request,
        )
        .await?;

    Ok(created(PromotionResponse::of(promoted, Some(&metric))))
}

/// List the tenant's registered models, newest first
#[utoipa::path(
    get,
    path = "/api/v1/models",
    tag = "models",
    params(ListModelsQuery),
    responses((status = 200, body = ModelPage))
)]
pub async fn list_models(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
    Query(query): Query<ListModelsQuery>,
) -> ApiResult<axum::Json<ModelPage>> {
    let mut v = Validator::new();
    let page = PageRequest::parse(
        &mut v,
        query.limit,
        query.page_token.as_deref(),
        MODEL_ORDERING,
    );
    v.finish(|| ()).map_err(ApiError::invalid_query)?;

    let found = state.models.list(tenant, &page).await?;

    Ok(axum::Json(ModelPage {
        items: found.items.into_iter().map(Into::into).collect(),
        next_page_token: found.next_page_token,
    }))
}

/// Get a registered model with its versions and aliases
#[utoipa::path(
    get,
    path = "/api/v1/models/{model_id}",
    tag = "models",
    params(("model_id" = Uuid, Path, description = "Model id")),
    responses((status = 200, body = ModelResponse))
)]
pub async fn get_model(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
    Path(model_id): Path<Uuid>,
) -> ApiResult<axum::Json<ModelResponse>> {
    let model = state.models.get(tenant, ModelId::from(model_id)).await?;

    Ok(axum::Json(model.into()))
}
