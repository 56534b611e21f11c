//! The HTTP API: routers per resource, authentication, problem+json errors, OpenAPI.

pub mod auth;
pub mod deployment_dto;
pub mod deployment_views;
pub mod deployments;
mod docs;
pub mod events;
pub mod experiments;
pub mod extract;
pub mod health;
pub mod models;
pub mod observability;
pub mod problem;
pub mod run_dto;
pub mod runs;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, FromRef, Request};
use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::SwaggerUi;

use crate::api::auth::Authenticator;
use crate::api::observability::{MakeRequestUuidV7, Metrics};
use crate::api::problem::{ApiError, PROBLEM_JSON};
use crate::core::ports::{MlflowSyncStore, Outbox, StoreHealth, TrackingServer};
use crate::core::services::{
    DeploymentService, EventService, ExperimentService, ModelService, RunService,
};
use crate::settings::HttpSettings;
use crate::workers::DependencyWatch;

/// Everything a handler can reach.
#[derive(Clone, FromRef)]
pub struct AppState {
    pub experiments: ExperimentService,
    pub runs: RunService,
    pub models: ModelService,
    pub deployments: DeploymentService,
    pub events: EventService,
    /// CloudEvents `source` of this service's events.
    pub event_source: String,
    pub store_health: Arc<dyn StoreHealth>,
    pub outbox: Arc<dyn Outbox>,
    /// The relay's view of Kafka; `None` when publishing is turned off.
    pub relay_status: Option<DependencyWatch>,
    /// MLflow, when `AUMOS_MLOPS_MLFLOW_TRACKING_URI` is set.
    pub mlflow: Option<MlflowAccess>,
    pub metrics: Arc<Metrics>,
    pub authenticator: Arc<Authenticator>,
}

/// What the API reaches of MLflow: the server itself and the copy's bookkeeping.
#[derive(Clone)]
pub struct MlflowAccess {
    pub tracking: Arc<dyn TrackingServer>,
    pub sync: Arc<dyn MlflowSyncStore>,
}

/// The tenant-scoped routes under `/api/v1`.
fn api_v1() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(
            experiments::create_experiment,
            experiments::list_experiments
        ))
        .routes(routes!(experiments::get_experiment))
        .routes(routes!(runs::create_run, runs::list_runs))
        .routes(routes!(runs::get_run, runs::update_run))
        .routes(routes!(runs::log_run_batch))
        .routes(routes!(models::promote_run))
        .routes(routes!(models::promote_best))
        .routes(routes!(models::list_models))
        .routes(routes!(models::get_model))
        .routes(routes!(
            deployments::create_deployment,
            deployments::list_deployments
        ))
        .routes(routes!(deployments::get_deployment))
        .routes(routes!(deployments::list_deployment_history))
        .routes(routes!(deployments::rollback_deployment))
        .routes(routes!(deployments::promote_deployment))
        .routes(routes!(deployments::pause_deployment))
        .routes(routes!(deployments::resume_deployment))
        .routes(routes!(deployments::report_deployment_metrics))
        .routes(routes!(events::list_events))
}

fn probes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health::live))
        .routes(routes!(health::ready))
        .routes(routes!(health::metrics))
}

/// The complete OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, mut document) = OpenApiRouter::<AppState>::with_openapi(docs::ApiDoc::openapi())
        .merge(api_v1())
        .merge(probes())
        .split_for_parts();
    utoipa::Modify::modify(&docs::SecurityAndErrors, &mut document);
    document
}

/// The whole application: routes, authentication and the layers every request passes.
pub fn router(state: AppState, http: &HttpSettings) -> Router {
    let (api, _) = api_v1().split_for_parts();
    let api = api.route_layer(middleware::from_fn_with_state(
        state.authenticator.clone(),
        auth::authenticate,
    ));
    let (probes, _) = probes().split_for_parts();

    Router::new()
        .merge(api)
        .merge(probes)
        .merge(SwaggerUi::new("/docs").url("/openapi.json", openapi()))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(http.body_limit_bytes))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::internal("a request handler panicked").into_response()
        }))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            http.request_timeout,
        ))
        .layer(middleware::from_fn(problem_for_bare_errors))
        .layer(middleware::from_fn_with_state(
            state.metrics.clone(),
            observability::observe,
        ))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuidV7))
        .with_state(state)
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::status(
        StatusCode::NOT_FOUND,
        format!("no route matches {}", uri.path()),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::status(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "{} does not accept {method}; the Allow header lists what it does",
            uri.path()
        ),
    )
}

/// Turns any error answer that is not problem+json yet (from a layer such as the timeout)
/// into one, keeping its status and headers.
async fn problem_for_bare_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    // JSON error bodies (problems, and the readiness report) are already meant for clients.
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(PROBLEM_JSON) || v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let detail = match status {
        StatusCode::SERVICE_UNAVAILABLE => "the request took too long to serve; retry later",
        StatusCode::PAYLOAD_TOO_LARGE => "the request body is larger than this service accepts",
        _ => "the request could not be served",
    };
    let (mut parts, _) = response.into_parts();
    let problem = ApiError::status(status, detail).into_response();
    let (problem_parts, body) = problem.into_parts();
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    parts.headers.remove(header::CONTENT_LENGTH);
    drop(problem_parts);
    Response::from_parts(parts, body)
}
