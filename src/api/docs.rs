//! The OpenAPI document: routes come from the handlers' annotations; this adds the security
//! schemes and the error answers every route can give, so none goes undocumented.

use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, OpenApi as OpenApiDoc, RefOr, Response, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use crate::api::problem::{Problem, PROBLEM_JSON};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "aumos-mlops-lifecycle",
        description = "Multi-tenant MLOps lifecycle service. Every `/api/v1` route needs \
                       `Authorization: Bearer <jwt>` and `X-Tenant-ID: <uuid>`; every error is \
                       `application/problem+json`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    components(schemas(Problem, crate::api::problem::FieldErrorSchema)),
    tags(
        (name = "experiments", description = "Experiments: named, tagged containers of runs"),
        (name = "runs", description = "Runs: params, metrics and tags of one training attempt"),
        (name = "models",
         description = "Runs promoted into MLflow's model registry, with versions and aliases"),
        (name = "deployments",
         description = "Canary, A/B test, shadow and blue-green rollouts of promoted models"),
        (name = "events", description = "The tenant's lifecycle events (the audit trail)"),
        (name = "probes", description = "Liveness, readiness and metrics"),
    )
)]
pub struct ApiDoc;

/// Applied to the finished document, once every route's path is in it.
pub struct SecurityAndErrors;

/// Errors any authenticated route can answer with.
const API_ERRORS: &[(&str, &str)] = &[
    (
        "400",
        "Malformed JSON, query string or missing/invalid `X-Tenant-ID`",
    ),
    (
        "401",
        "Missing, malformed, expired or otherwise invalid bearer token",
    ),
    (
        "403",
        "The token does not cover this tenant or lacks the needed scope",
    ),
    ("404", "No such resource for this tenant"),
    ("405", "The path does not accept this method"),
    ("413", "The request body is too large"),
    ("415", "The request body is not JSON"),
    ("422", "Invalid input; every invalid field is listed"),
    ("500", "Unexpected failure; nothing internal is revealed"),
    ("503", "The database is unreachable; retry later"),
];

fn problem_response(description: &str) -> RefOr<Response> {
    let schema = utoipa::openapi::Ref::from_schema_name("Problem");
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(PROBLEM_JSON, Content::new(Some(schema)))
            .build(),
    )
}

impl Modify for SecurityAndErrors {
    fn modify(&self, openapi: &mut OpenApiDoc) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "tenant",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Tenant-ID",
                "The tenant the request acts for (a UUID the token must cover)",
            ))),
        );
        for (path, item) in openapi.paths.paths.iter_mut() {
            let protected = path.starts_with("/api/");
            let operations = [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ];
            for operation in operations.into_iter().flatten() {
                document_errors(operation, protected);
            }
        }
    }
}

fn document_errors(operation: &mut Operation, protected: bool) {
    let responses = &mut operation.responses.responses;
    for (status, description) in API_ERRORS {
        if protected || matches!(*status, "500" | "503") {
            responses
                .entry((*status).to_owned())
                .or_insert_with(|| problem_response(description));
        }
    }
    if protected {
        let requirement =
            utoipa::openapi::security::SecurityRequirement::new("bearer", Vec::<String>::new())
                .add("tenant", Vec::<String>::new());
        operation.security = Some(vec![requirement]);
    }
}
