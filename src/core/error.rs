//! The one error type of the domain. The API maps each variant to a problem+json answer.

use crate::core::validation::FieldError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The input broke one or more rules; every broken rule is listed.
    #[error("validation failed: {0:?}")]
    Validation(Vec<FieldError>),

    /// The resource does not exist for this tenant (or exists only for another tenant).
    #[error("{resource} {id} not found")]
    NotFound { resource: &'static str, id: String },

    /// The request contradicts the stored state, such as a duplicate name.
    #[error("conflict on {field:?}: {message}")]
    Conflict {
        field: Option<String>,
        message: String,
    },

    /// A dependency (the database) cannot be reached right now; the request may be retried.
    #[error("dependency unavailable: {0}")]
    Unavailable(String),

    /// Anything unexpected. Its detail is logged, never shown to clients.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl Error {
    pub fn not_found(resource: &'static str, id: impl ToString) -> Self {
        Self::NotFound {
            resource,
            id: id.to_string(),
        }
    }

    pub fn conflict(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Conflict {
            field: Some(field.into()),
            message: message.into(),
        }
    }

    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError::new(field, message)])
    }
}
