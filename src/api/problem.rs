//! Every error answer is `application/problem+json` (RFC 9457): a type, a title, the status, a
//! detail a person can act on, and for invalid input the list of every invalid field.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::core::validation::FieldError;
use crate::core::Error;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// An RFC 9457 problem document.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem; `about:blank` when the status says it all.
    #[serde(rename = "type")]
    #[schema(example = "urn:aumos:problem:validation-error")]
    pub problem_type: String,
    #[schema(example = "Invalid request")]
    pub title: String,
    #[schema(example = 422)]
    pub status: u16,
    /// What went wrong and what to do about it.
    pub detail: String,
    /// Every invalid field, when the input broke validation rules.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<FieldErrorSchema>)]
    pub errors: Vec<FieldError>,
}

/// One invalid field of a request.
#[derive(ToSchema)]
#[schema(as = FieldError)]
pub struct FieldErrorSchema {
    /// A JSON path into the request, such as `metrics[3].value` or `params["lr"]`.
    #[schema(example = "metrics[3].value")]
    pub field: String,
    #[schema(example = "must be a finite number")]
    pub message: String,
}

/// An error on its way to becoming a problem+json response.
#[derive(Debug)]
pub struct ApiError {
    pub problem: Box<Problem>,
    headers: Vec<(header::HeaderName, HeaderValue)>,
    /// The internal cause of a 5xx, logged once when the response is made.
    cause: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, slug: &str, title: &str, detail: impl Into<String>) -> Self {
        let problem_type = if slug.is_empty() {
            "about:blank".to_owned()
        } else {
            format!("urn:aumos:problem:{slug}")
        };
        Self {
            problem: Box::new(Problem {
                problem_type,
                title: title.to_owned(),
                status: status.as_u16(),
                detail: detail.into(),
                errors: Vec::new(),
            }),
            headers: Vec::new(),
            cause: None,
        }
    }

    /// A problem whose title is the status' own reason phrase.
    pub fn status(status: StatusCode, detail: impl Into<String>) -> Self {
        Self::new(
            status,
            "",
            status.canonical_reason().unwrap_or("Error"),
            detail,
        )
    }

    pub fn with_header(mut self, name: header::HeaderName, value: &str) -> Self {
        if let Ok(value) = HeaderValue::from_str(value) {
            self.headers.push((name, value));
        }
        self
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "bad-request",
            "Bad request",
            detail,
        )
    }

    /// Invalid input: every field at fault is listed.
    pub fn validation(errors: Vec<FieldError>) -> Self {
        let detail = match errors.as_slice() {
            [one] => format!("{}: {}", one.field, one.message),
            many => format!("{} fields are invalid; see `errors`", many.len()),
        };
        let mut error = Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation-error",
            "Invalid request",
            detail,
        );
        error.problem.errors = errors;
        error
    }

    /// Invalid query-string parameters: 400, with every parameter at fault listed like
    /// invalid body fields are.
    pub fn invalid_query(error: Error) -> Self {
        match error {
            Error::Validation(errors) => {
                let mut problem = Self::validation(errors);
                problem.problem.status = StatusCode::BAD_REQUEST.as_u16();
                problem.problem.problem_type = "urn:aumos:problem:invalid-query".into();
                problem.problem.title = "Invalid query parameters".into();
                problem
            }
            other => other.into(),
        }
    }

    pub fn internal(cause: impl Into<String>) -> Self {
        let mut error = Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal-error",
            "Internal error",
            "the request failed on our side; it has been logged. Retry later or report the \
             x-request-id of this response",
        );
        error.cause = Some(cause.into());
        error
    }
}

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        match error {
            Error::Validation(errors) => Self::validation(errors),
            Error::NotFound { resource, id } => Self::new(
                StatusCode::NOT_FOUND,
                "not-found",
                "Not found",
                format!("{resource} {id} does not exist"),
            ),
            Error::Conflict { field, message } => {
                let mut e = Self::new(
                    StatusCode::CONFLICT,
                    "conflict",
                    "Conflict",
                    message.clone(),
                );
                if let Some(field) = field {
                    e.problem.errors = vec![FieldError::new(field, message)];
                }
                e
            }
            Error::Unavailable(what) => {
                let mut e = Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "Service unavailable",
                    "a dependency of the service is unreachable; retry shortly",
                );
                e.cause = Some(what);
                e.with_header(header::RETRY_AFTER, "5")
            }
            Error::Internal(cause) => Self::internal(format!("{cause:#}")),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if let Some(cause) = &self.cause {
            if status == StatusCode::SERVICE_UNAVAILABLE {
                tracing::warn!(error = %cause, "request failed: dependency unavailable");
            } else {
                tracing::error!(error = %cause, "request failed");
            }
        }
        let body = serde_json::to_vec(&self.problem).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        for (name, value) in self.headers {
            headers.insert(name, value);
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
