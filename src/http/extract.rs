//! Extractors that turn bad input into problem+json instead of plain-text rejections:
//! a JSON body naming the offending field, and query strings.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::domain::InputError;
use crate::error::ApiError;

/// A JSON request body. An empty body reads as `{}` so optional bodies may be left out.
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge("the request body is larger than the server allows".into())
            } else {
                ApiError::BadRequest(format!("cannot read the request body: {}", e.body_text()))
            }
        })?;
        let body: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        parse(body).map(Json)
    }
}

/// Parses JSON, naming the offending field on type errors.
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let inner = e.inner();
        match inner.classify() {
            serde_json::error::Category::Data => {
                let message = strip_position(&inner.to_string());
                let path = e.path().to_string();
                let field = match named_field(&message) {
                    Some(name) if path == "." => name,
                    Some(name) if path != name && !path.ends_with(&format!(".{name}")) => {
                        format!("{path}.{name}")
                    }
                    _ => path,
                };
                ApiError::Invalid(InputError::new(field, message))
            }
            _ => ApiError::BadRequest(format!("malformed JSON: {inner}")),
        }
    })?;
    de.end()
        .map_err(|e| ApiError::BadRequest(format!("malformed JSON: {e}")))?;
    Ok(value)
}

/// Serde reports missing and unknown fields against the parent; pull the name out.
fn named_field(message: &str) -> Option<String> {
    ["missing field `", "unknown field `"]
        .iter()
        .find_map(|prefix| message.strip_prefix(prefix))
        .and_then(|rest| rest.split('`').next())
        .map(str::to_string)
}

fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// A query string parsed into `T`; errors are problem+json.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or("");
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de).map(Query).map_err(|e| {
            let message = e.inner().to_string();
            let field = named_field(&message).unwrap_or_else(|| e.path().to_string());
            ApiError::Invalid(InputError::new(field, message))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::input::CreateTask;

    fn field(body: &str) -> String {
        match parse::<CreateTask>(body.as_bytes()) {
            Err(ApiError::Invalid(e)) => e.field,
            other => panic!("expected invalid input, got {:?}", other.err()),
        }
    }

    #[test]
    fn names_fields() {
        assert_eq!(field(r#"{"title": 5}"#), "title");
        assert_eq!(field(r#"{"description": "x"}"#), "title");
        assert_eq!(field(r#"{"title": "t", "colour": "red"}"#), "colour");
        assert_eq!(field(r#"{"title": "t", "priority": "P9"}"#), "priority");
        assert_eq!(
            field(r#"{"title": "t", "capabilities": ["a", 3]}"#),
            "capabilities[1]"
        );
    }

    #[test]
    fn syntax_errors_are_bad_requests() {
        assert!(matches!(
            parse::<CreateTask>(b"{\"title\":"),
            Err(ApiError::BadRequest(_))
        ));
        assert!(matches!(
            parse::<CreateTask>(b"{\"title\":\"a\"} x"),
            Err(ApiError::BadRequest(_))
        ));
    }
}
