//! `/api/v1/deployments`: roll promoted model versions out, watch them, and steer them.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::Extension;
use uuid::Uuid;

use crate::api::auth::{Caller, Tenant};
use crate::api::deployment_dto::{
    CreateDeploymentRequest, ListDeploymentsQuery, PageQuery, RollbackRequest, TrafficReportRequest,
};
use crate::api::deployment_views::{
    DeploymentPage, DeploymentResponse, HistoryEntryResponse, HistoryPage, TrafficReportResponse,
};
use crate::api::extract::{parse_json, Json, Path, Query};
use crate::api::problem::{ApiError, ApiResult};
use crate::api::AppState;
use crate::core::deployment::machine::Command;
use crate::core::deployment::spec::parse_environment;
use crate::core::deployment::{DeploymentFilter, Status};
use crate::core::pagination::PageRequest;
use crate::core::services::{DEPLOYMENT_ORDERING, HISTORY_ORDERING};
use crate::core::validation::Validator;
use crate::core::DeploymentId;

type Created = (
    StatusCode,
    [(header::HeaderName, String); 1],
    axum::Json<DeploymentResponse>,
);

/// Start rolling a promoted model version out
#[utoipa::path(
    post,
    path = "/api/v1/deployments",
    tag = "deployments",
    request_body = CreateDeploymentRequest,
    responses(
        (status = 201, description = "Created as `pending`; the controller starts it at once",
         body = DeploymentResponse,
         headers(("location" = String, description = "URL of the new deployment"))),
        (status = 409, description = "Another deployment of the model is active in the \
         environment, or the version already serves there",
         body = crate::api::problem::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields, every one listed; an unknown model or \
         version", body = crate::api::problem::Problem,
         content_type = "application/problem+json"),
    )
)]
pub async fn create_deployment(
    Tenant(tenant): Tenant,
    Extension(caller): Extension<Caller>,
    State(state): State<AppState>,
    Json(body): Json<CreateDeploymentRequest>,
) -> ApiResult<Created> {
    let deployment = state
        .deployments
        .create(tenant, &caller.subject, body.into())
        .await?;

    let location = format!("/api/v1/deployments/{}", deployment.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        axum::Json(deployment.into()),
    ))
}

/// List the tenant's deployments, newest first
#[utoipa::path(
    get,
    path = "/api/v1/deployments",
    tag = "deployments",
    params(ListDeploymentsQuery),
    responses((status = 200, body = DeploymentPage))
)]
pub async fn list_deployments(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
    Query(query): Query<ListDeploymentsQuery>,
) -> ApiResult<axum::Json<DeploymentPage>> {
    let mut v = Validator::new();
    let status = query
        .status
        .as_deref()
        .and_then(|s| v.check("status", s.parse::<Status>()));
    let target_environment = query
        .target_environment
        .as_deref()
        .and_then(|e| v.check("target_environment", parse_environment(e)));
    let page = PageRequest::parse(
        &mut v,
        query.limit,
        query.page_token.as_deref(),
        DEPLOYMENT_ORDERING,
    );
    v.finish(|| ()).map_err(ApiError::invalid_query)?;
    let filter = DeploymentFilter {
        status,
        model_id: query.model_id.map(Into::into),
        target_environment,
    };

    let found = state.deployments.list(tenant, &filter, &page).await?;

    Ok(axum::Json(DeploymentPage {
        items: found.items.into_iter().map(Into::into).collect(),
        next_page_token: found.next_page_token,
    }))
}

/// Get a deployment: status, traffic split, step and the latest health of each variant
#[utoipa::path(
    get,
    path = "/api/v1/deployments/{deployment_id}",
    tag = "deployments",
    params(("deployment_id" = Uuid, Path, description = "Deployment id")),
    responses((status = 200, body = DeploymentResponse))
)]
pub async fn get_deployment(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> ApiResult<axum::Json<DeploymentResponse>> {
    let deployment = state
        .deployments
        .get(tenant, DeploymentId::from(id))
        .await?;

    Ok(axum::Json(deployment.into()))
}

/// List every decision about a deployment with its evidence, oldest first
#[utoipa::path(
    get,
    path = "/api/v1/deployments/{deployment_id}/history",
    tag = "deployments",
    params(("deployment_id" = Uuid, Path, description = "Deployment id"), PageQuery),
    responses((status = 200, body = HistoryPage))
)]
pub async fn list_deployment_history(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    Query(query): Query<PageQuery>,
) -> ApiResult<axum::Json<HistoryPage>> {
    let mut v = Validator::new();
    let page = PageRequest::parse(
        &mut v,
        query.limit,
        query.page_token.as_deref(),
        HISTORY_ORDERING,
    );
    v.finish(|| ()).map_err(ApiError::invalid_query)?;

    let (deployment, found) = state
        .deployments
        .history(tenant, DeploymentId::from(id), &page)
        .await?;

    Ok(axum::Json(HistoryPage {
        items: found
            .items
            .iter()
            .map(|entry| HistoryEntryResponse::of(entry, &deployment))
            .collect(),
        next_page_token: found.next_page_token,
    }))
}

async fn command(
    state: &AppState,
    tenant: crate::core::TenantId,
    caller: &Caller,
    id: Uuid,
    command: Command,
) -> ApiResult<axum::Json<DeploymentResponse>> {
    let deployment = state
        .deployments
        .apply(tenant, DeploymentId::from(id), command, &caller.subject)
        .await?;
    Ok(axum::Json(deployment.into()))
}

/// Roll a deployment back: the stable version gets all traffic again
#[utoipa::path(
    post,
    path = "/api/v1/deployments/{deployment_id}/rollback",
    tag = "deployments",
    params(("deployment_id" = Uuid, Path, description = "Deployment id")),
    request_body(
        content = RollbackRequest,
        description = "Optional",
        content_type = "application/json"
    ),
    responses(
        (status = 200, description = "Rolled back", body = DeploymentResponse),
        (status = 409, description = "The deployment ended and its rollback window has passed, \
         or a later deployment replaced it", body = crate::api::problem::Problem,
         content_type = "application/problem+json"),
    )
)]
pub async fn rollback_deployment(
    Tenant(tenant): Tenant,
    Extension(caller): Extension<Caller>,
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    body: Bytes,
) -> ApiResult<axum::Json<DeploymentResponse>> {
    // The body is optional: an empty one rolls back without a reason.
    let reason = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        parse_json::<RollbackRequest>(&body)?.reason
    };
    let mut v = Validator::new();
    if let Some(text) = &reason {
        v.ensure(
            text.chars().count() <= 1000,
            "reason",
            "must be at most 1000 characters",
        );
    }
    v.finish(|| ())?;

    command(&state, tenant, &caller, id, Command::Rollback { reason }).await
}

/// Promote a deployment: skip the remaining steps and give the candidate all traffic
#[utoipa::path(
    post,
    path = "/api/v1/deployments/{deployment_id}/promote",
    tag = "deployments",
    params(("deployment_id" = Uuid, Path, description = "Deployment id")),
    responses(
        (status = 200, description = "Promoted", body = DeploymentResponse),
        (status = 409, description = "The deployment cannot be promoted in its status",
         body = crate::api::problem::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn promote_deployment(
    Tenant(tenant): Tenant,
    Extension(caller): Extension<Caller>,
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> ApiResult<axum::Json<DeploymentResponse>> {
    command(&state, tenant, &caller, id, Command::Promote).await
}

/// Pause a deployment: traffic stays where it is until resumed
#[utoipa::path(
    post,
    path = "/api/v1/deployments/{deployment_id}/pause",
    tag = "deployments",
    params(("deployment_id" = Uuid, Path, description = "Deployment id")),
    responses(
        (status = 200, description = "Paused", body = DeploymentResponse),
        (status = 409, description = "The deployment is not progressing",
         body = crate::api::problem::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn pause_deployment(
    Tenant(tenant): Tenant,
    Extension(caller): Extension<Caller>,
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> ApiResult<axum::Json<DeploymentResponse>> {
    command(&state, tenant, &caller, id, Command::Pause).await
}

/// Resume a paused deployment
#[utoipa::path(
    post,
    path = "/api/v1/deployments/{deployment_id}/resume",
    tag = "deployments",
    params(("deployment_id" = Uuid, Path, description = "Deployment id")),
    responses(
        (status = 200, description = "Resumed", body = DeploymentResponse),
        (status = 409, description = "The deployment is not paused",
         body = crate::api::problem::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn resume_deployment(
    Tenant(tenant): Tenant,
    Extension(caller): Extension<Caller>,
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> ApiResult<axum::Json<DeploymentResponse>> {
    command(&state, tenant, &caller, id, Command::Resume).await
}

/// Report the traffic the serving layer observed on one variant
#[utoipa::path(
    post,
    path = "/api/v1/deployments/{deployment_id}/metrics",
    tag = "deployments",
    params(("deployment_id" = Uuid, Path, description = "Deployment id")),
    request_body = TrafficReportRequest,
    responses(
        (status = 202, description = "Taken into the analysis window",
         body = TrafficReportResponse),
        (status = 409, description = "The deployment has ended",
         body = crate::api::problem::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn report_deployment_metrics(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    Json(body): Json<TrafficReportRequest>,
) -> ApiResult<(StatusCode, axum::Json<TrafficReportResponse>)> {
    let variant = body.variant.clone();

    let report = state
        .deployments
        .report(tenant, DeploymentId::from(id), body.into())
        .await?;

    Ok((
        StatusCode::ACCEPTED,
        axum::Json(TrafficReportResponse::of(report, &variant)),
    ))
}
