//! Reading a JSON body into a typed request, naming the offending field when it does not fit.

use serde::de::DeserializeOwned;

use crate::domain::InputError;

/// Why a JSON body could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    /// Not JSON at all (or truncated).
    #[error("{0}")]
    Syntax(String),
    /// JSON, but a field has the wrong shape.
    #[error(transparent)]
    Field(InputError),
}

/// Parses JSON into `T`; type errors name the field by its path, e.g. `tasks[3].priority`.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, JsonError> {
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
                JsonError::Field(InputError::new(field, message))
            }
            _ => JsonError::Syntax(format!("malformed JSON: {inner}")),
        }
    })?;
    de.end()
        .map_err(|e| JsonError::Syntax(format!("malformed JSON: {e}")))?;
    Ok(value)
}

/// Serde reports missing and unknown fields against the parent; this pulls the name out.
pub fn named_field(message: &str) -> Option<String> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::input::CreateTask;

    fn field(body: &str) -> String {
        match parse_json::<CreateTask>(body.as_bytes()) {
            Err(JsonError::Field(e)) => e.field,
            other => panic!("expected a field error, got {:?}", other.err()),
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
    fn syntax_errors_are_not_field_errors() {
        assert!(matches!(
            parse_json::<CreateTask>(b"{\"title\":"),
            Err(JsonError::Syntax(_))
        ));
        assert!(matches!(
            parse_json::<CreateTask>(b"{\"title\":\"a\"} x"),
            Err(JsonError::Syntax(_))
        ));
    }
}
