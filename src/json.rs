//! JSON input with the field at fault named: `lines[0].amount`, not "invalid
//! type at line 1 column 212".

use serde::de::DeserializeOwned;

/// A field and what is wrong with it (empty field: the whole document).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub reason: String,
}

/// Deserialises `de` into `T`, turning a shape error into a [`FieldError`].
/// `Err(None)` is a syntax error (not JSON at all), with its message.
pub fn decode<'de, T, D>(de: D) -> Result<T, Result<FieldError, String>>
where
    T: DeserializeOwned,
    D: serde::Deserializer<'de, Error = serde_json::Error>,
{
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if !matches!(inner.classify(), serde_json::error::Category::Data) {
            return Err(inner.to_string());
        }
        let msg = inner.to_string();
        // serde names a missing field in backticks and the path points at
        // its parent; for an unknown field the path already ends with it.
        let missing = msg
            .strip_prefix("missing field `")
            .and_then(|r| r.split('`').next());
        let field = match (missing, path.as_str()) {
            (Some(n), "." | "") => n.to_string(),
            (Some(n), p) => format!("{p}.{n}"),
            (None, ".") => String::new(),
            (None, p) => p.to_string(),
        };
        let reason = msg.split(" at line ").next().unwrap_or(&msg).to_string();
        Ok(FieldError { field, reason })
    })
}
