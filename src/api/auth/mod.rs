//! Authentication and tenancy for every `/api/v1` route.
//!
//! Order of checks: a valid bearer token (401), then a UUID in `X-Tenant-ID` (400), then a token
//! that covers that tenant (403), then the scope the method needs (403: reading needs
//! `mlops:read`, anything else `mlops:write`).

mod claims;
mod jwks;
mod verifier;

pub use claims::{Claims, SCOPE_READ, SCOPE_WRITE};
pub use verifier::{development_secret, mint, Authenticator, InvalidToken};

use std::sync::Arc;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use uuid::Uuid;

use crate::api::problem::ApiError;
use crate::core::TenantId;

pub const TENANT_HEADER: &str = "x-tenant-id";
const REALM: &str = "aumos-mlops";

/// Who is calling, established by `authenticate`.
#[derive(Debug, Clone)]
pub struct Caller {
    pub tenant: TenantId,
    pub subject: String,
}

/// The tenant of the request; handlers take it as their first extractor.
#[derive(Debug, Clone, Copy)]
pub struct Tenant(pub TenantId);

impl<S: Send + Sync> FromRequestParts<S> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Caller>()
            .map(|caller| Tenant(caller.tenant))
            .ok_or_else(|| ApiError::internal("a tenant route is served without authentication"))
    }
}

fn unauthorized(detail: &str, error: Option<&str>) -> ApiError {
    let challenge = match error {
        Some(code) => format!(
            "Bearer realm=\"{REALM}\", error=\"{code}\", error_description=\"{}\"",
            detail.replace('"', "'")
        ),
        None => format!("Bearer realm=\"{REALM}\""),
    };
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "Unauthorized",
        detail,
    )
    .with_header(header::WWW_AUTHENTICATE, &challenge)
}

/// Middleware: verifies the caller and records who it is on the request and its span.
pub async fn authenticate(
    State(authenticator): State<Arc<Authenticator>>,
    mut request: Request,
    next: Next,
) -> Response {
    match check(&authenticator, request.headers(), request.method()).await {
        Ok(caller) => {
            let span = tracing::Span::current();
            span.record("tenant.id", tracing::field::display(caller.tenant));
            span.record("auth.subject", caller.subject.as_str());
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(error) => error.into_response(),
    }
}

async fn check(
    authenticator: &Authenticator,
    headers: &HeaderMap,
    method: &Method,
) -> Result<Caller, ApiError> {
    let Some(authorization) = headers.get(header::AUTHORIZATION) else {
        return Err(unauthorized("send `Authorization: Bearer <token>`", None));
    };
    let token = authorization
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            unauthorized(
                "the Authorization header must be `Bearer <token>`",
                Some("invalid_request"),
            )
        })?;
    let claims = authenticator
        .verify(token)
        .await
        .map_err(|InvalidToken(reason)| unauthorized(&reason, Some("invalid_token")))?;

    let tenant = headers
        .get(TENANT_HEADER)
        .ok_or_else(|| ApiError::bad_request("send the tenant's id in the `X-Tenant-ID` header"))?
        .to_str()
        .ok()
        .and_then(|v| Uuid::parse_str(v.trim()).ok())
        .ok_or_else(|| ApiError::bad_request("the `X-Tenant-ID` header must be a UUID"))?;
    if !claims.covers_tenant(tenant) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Forbidden",
            "the token does not grant access to the tenant in `X-Tenant-ID`",
        ));
    }

    let needed = match *method {
        Method::GET | Method::HEAD | Method::OPTIONS => SCOPE_READ,
        _ => SCOPE_WRITE,
    };
    if !claims.has_scope(needed) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "insufficient-scope",
            "Forbidden",
            format!("this request needs the `{needed}` scope, which the token lacks"),
        )
        .with_header(
            header::WWW_AUTHENTICATE,
            &format!("Bearer realm=\"{REALM}\", error=\"insufficient_scope\", scope=\"{needed}\""),
        ));
    }
    Ok(Caller {
        tenant: TenantId::from_uuid(tenant),
        subject: claims.sub,
    })
}
