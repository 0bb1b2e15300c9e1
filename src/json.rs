//! JSON input with the field at fault named: `lines[0].amount`, not "invalid
//! type at line 1 column 212"; and strictly: one value, no key twice, no
//! control characters, bounded strings, objects where objects are meant.

use serde::de::{
    DeserializeOwned, Deserializer, IntoDeserializer, MapAccess, SeqAccess, Unexpected, Visitor,
};
use std::cell::RefCell;

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

/// Longest text accepted in any string of a request body, in characters.
/// Fields with a tighter bound check it themselves (names 200, ids 200,
/// e-mails 254, link codes 64, reasons 500); see the README's API section.
pub const MAX_TEXT_CHARS: usize = 2048;

/// Parses a request body strictly: one JSON value and nothing after it, no
/// key twice in one object, no control character (U+0000–U+001F,
/// U+007F–U+009F) and at most [`MAX_TEXT_CHARS`] characters in any string
/// or key. `Err(Err(_))` is a syntax error, `Err(Ok(_))` names the field.
pub fn parse_strict(bytes: &[u8]) -> Result<serde_json::Value, Result<FieldError, String>> {
    let path = RefCell::new(Vec::new());
    let found = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed = serde::de::DeserializeSeed::deserialize(
        Seed {
            path: &path,
            found: &found,
        },
        &mut de,
    )
    .and_then(|v| de.end().map(|()| v));
    match parsed {
        Ok(v) => {
            check_text(&v, &mut Vec::new()).map_err(Ok)?;
            Ok(v)
        }
        Err(e) => match found.into_inner() {
            Some(f) => Err(Ok(f)),
            None => Err(Err(e.to_string())),
        },
    }
}

/// One step of a path into a document.
enum Seg {
    Key(String),
    Index(usize),
}

fn path_text(path: &[Seg]) -> String {
    let mut out = String::new();
    for s in path {
        match s {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

fn check_text(v: &serde_json::Value, path: &mut Vec<Seg>) -> Result<(), FieldError> {
    use serde_json::Value;
    let bad = |path: &[Seg], reason: &str| FieldError {
        field: path_text(path),
        reason: reason.to_string(),
    };
    match v {
        Value::String(s) => text_ok(s).map_err(|r| bad(path, r)),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                path.push(Seg::Index(i));
                check_text(item, path)?;
                path.pop();
            }
            Ok(())
        }
        Value::Object(map) => {
            for (k, item) in map {
                path.push(Seg::Key(k.clone()));
                text_ok(k).map_err(|r| bad(path, r))?;
                check_text(item, path)?;
                path.pop();
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// A string a person or a system may send: no control characters, not
/// longer than [`MAX_TEXT_CHARS`].
pub fn text_ok(s: &str) -> Result<(), &'static str> {
    if s.chars().any(char::is_control) {
        return Err("must not contain control characters (U+0000 to U+001F, U+007F to U+009F)");
    }
    if s.len() > MAX_TEXT_CHARS && s.chars().count() > MAX_TEXT_CHARS {
        return Err("is longer than 2048 characters");
    }
    Ok(())
}

/// Builds a `Value` like serde_json does, but refuses a key given twice in
/// one object, recording where.
#[derive(Clone, Copy)]
struct Seed<'a> {
    path: &'a RefCell<Vec<Seg>>,
    found: &'a RefCell<Option<FieldError>>,
}

impl<'de> serde::de::DeserializeSeed<'de> for Seed<'_> {
    type Value = serde_json::Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seed<'_> {
    type Value = serde_json::Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, Into::into))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        loop {
            self.path.borrow_mut().push(Seg::Index(out.len()));
            let item = seq.next_element_seed(self);
            self.path.borrow_mut().pop();
            match item? {
                Some(v) => out.push(v),
                None => return Ok(serde_json::Value::Array(out)),
            }
        }
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            self.path.borrow_mut().push(Seg::Key(key.clone()));
            if out.contains_key(&key) {
                *self.found.borrow_mut() = Some(FieldError {
                    field: path_text(&self.path.borrow()),
                    reason: "is given twice in one object".into(),
                });
                return Err(serde::de::Error::custom("duplicate key"));
            }
            let value = map.next_value_seed(self);
            self.path.borrow_mut().pop();
            out.insert(key, value?);
        }
        Ok(serde_json::Value::Object(out))
    }
}

/// Deserialises typed input from a parsed `Value`, refusing an array where
/// a struct is expected (serde's derive would take `["a","b"]` for
/// `{"x":"a","y":"b"}`): an object field is an object, always.
pub struct Strict(pub serde_json::Value);

fn unexpected(v: &serde_json::Value) -> Unexpected<'_> {
    use serde_json::Value;
    match v {
        Value::Null => Unexpected::Unit,
        Value::Bool(b) => Unexpected::Bool(*b),
        Value::Number(_) => Unexpected::Other("number"),
        Value::String(s) => Unexpected::Str(s),
        Value::Array(_) => Unexpected::Seq,
        Value::Object(_) => Unexpected::Map,
    }
}

impl<'de> Deserializer<'de> for Strict {
    type Error = serde_json::Error;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Self::Error> {
        use serde_json::Value;
        match self.0 {
            Value::Array(items) => v.visit_seq(StrictSeq(items.into_iter())),
            Value::Object(map) => v.visit_map(StrictMap::new(map)),
            other => other.deserialize_any(v),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            serde_json::Value::Null => v.visit_none(),
            other => v.visit_some(Strict(other)),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Self::Error> {
        match self.0 {
            serde_json::Value::Object(map) => v.visit_map(StrictMap::new(map)),
            other => Err(serde::de::Error::invalid_type(unexpected(&other), &v)),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        v: V,
    ) -> Result<V::Value, Self::Error> {
        v.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Self::Error> {
        // Input enums are plain strings (`"subscription"`).
        self.0.deserialize_enum(name, variants, v)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map identifier
        ignored_any
    }
}

struct StrictSeq(std::vec::IntoIter<serde_json::Value>);

impl<'de> SeqAccess<'de> for StrictSeq {
    type Error = serde_json::Error;
    fn next_element_seed<T: serde::de::DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Self::Error> {
        self.0
            .next()
            .map(|v| seed.deserialize(Strict(v)))
            .transpose()
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

struct StrictMap {
    iter: serde_json::map::IntoIter,
    value: Option<serde_json::Value>,
}

impl StrictMap {
    fn new(map: serde_json::Map<String, serde_json::Value>) -> Self {
        Self {
            iter: map.into_iter(),
            value: None,
        }
    }
}

impl<'de> MapAccess<'de> for StrictMap {
    type Error = serde_json::Error;
    fn next_key_seed<K: serde::de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        match self.iter.next() {
            Some((k, v)) => {
                self.value = Some(v);
                seed.deserialize(k.into_deserializer()).map(Some)
            }
            None => Ok(None),
        }
    }
    fn next_value_seed<V: serde::de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Self::Error> {
        let v = self
            .value
            .take()
            .ok_or_else(|| serde::de::Error::custom("value asked for before its key"))?;
        seed.deserialize(Strict(v))
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.iter.len())
    }
}
