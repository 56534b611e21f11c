//! Extractors whose rejections are problem+json: a JSON body that names the field at fault, and
//! query and path parameters with a readable message.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use serde::de::DeserializeOwned;

use crate::api::problem::ApiError;
use crate::core::validation::FieldError;

/// A JSON request body. Wrong content type is 415, an oversized body 413, broken JSON 400 and
/// JSON of the wrong shape 422 with the path of the offending field.
pub struct Json<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
                "send the body as JSON with `Content-Type: application/json`",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload-too-large",
                    "Payload too large",
                    "the request body is larger than this service accepts; send less per request",
                )
            } else {
                ApiError::bad_request(format!("the request body could not be read: {rejection}"))
            }
        })?;
        parse_json(&bytes).map(Json)
    }
}

/// Deserialises a body, naming the field path of a shape error.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let result: Result<T, _> = serde_path_to_error::deserialize(&mut deserializer);
    let error = match result {
        Ok(value) => return Ok(value),
        Err(error) => error,
    };
    let path = error.path().to_string();
    let inner = error.into_inner();
    if inner.is_syntax() || inner.is_eof() {
        return Err(ApiError::bad_request(format!(
            "the request body is not valid JSON: {inner}"
        )));
    }
    let field = if path == "." { "body".to_owned() } else { path };
    Err(ApiError::validation(vec![FieldError::new(
        field,
        strip_position(&inner.to_string()),
    )]))
}

/// serde_json appends "at line 1 column 42"; the field path already says where.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_owned(),
        None => message.to_owned(),
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mime = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

/// Query parameters; a malformed one is 400 with serde's explanation.
pub struct Query<T>(pub T);

impl<S, T> FromRequestParts<S> for Query<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Query(q.0))
            .map_err(|r| ApiError::bad_request(format!("invalid query string: {}", r.body_text())))
    }
}

/// Path parameters; an id that is not a UUID is 404, since no such resource can exist.
pub struct Path<T>(pub T);

impl<S, T> FromRequestParts<S> for Path<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Path(p.0))
            .map_err(|r| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "not-found",
                    "Not found",
                    format!("no resource at this path: {}", r.body_text()),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[expect(dead_code, reason = "only deserialised")]
    struct Body {
        metrics: Vec<M>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[expect(dead_code, reason = "only deserialised")]
    struct M {
        value: f64,
    }

    #[test]
    fn shape_errors_name_the_field_path() {
        let err = parse_json::<Body>(br#"{"metrics":[{"value":1},{"value":"x"}]}"#).unwrap_err();

        assert_eq!(err.problem.status, 422);
        assert_eq!(err.problem.errors[0].field, "metrics[1].value");
    }

    #[test]
    fn syntax_errors_are_bad_requests() {
        let err = parse_json::<Body>(b"{\"metrics\": [").unwrap_err();

        assert_eq!(err.problem.status, 400);
    }

    #[test]
    fn json_and_json_suffixed_media_types_are_accepted() {
        let mut headers = HeaderMap::new();
        for (value, ok) in [
            ("application/json", true),
            ("application/json; charset=utf-8", true),
            ("application/merge-patch+json", true),
            ("text/plain", false),
        ] {
            headers.insert(header::CONTENT_TYPE, value.parse().unwrap());
            assert_eq!(is_json(&headers), ok, "{value}");
        }
    }
}
