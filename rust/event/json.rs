//! Reading JSON with errors that name the field, and the checks every event document
//! passes as a whole (the parts no typed struct reads included).

use super::{invalid, MAX_DEPTH};
use crate::error::Error;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use std::borrow::Cow;
use std::collections::HashSet;

/// The field a serde path names under `prefix` ("." is the root, "?" a position
/// serde could not name).
fn field_name(prefix: &str, path: &str) -> String {
    let path = path.strip_suffix(".?").unwrap_or(path);
    let field = match path {
        "." | "?" => prefix.trim_end_matches('.').to_string(),
        path => format!("{prefix}{path}"),
    };
    if field.is_empty() {
        "event".to_string()
    } else {
        field
    }
}

/// Deserializes `text`; on failure re-reads it with path tracking so the message
/// names the field (the fast path pays nothing for that).
fn from_json<'a, T: Deserialize<'a>>(text: &'a str, prefix: &str) -> Result<T, Error> {
    serde_json::from_str(text).map_err(|_| {
        let mut de = serde_json::Deserializer::from_str(text);
        match serde_path_to_error::deserialize::<_, T>(&mut de) {
            Err(e) => {
                let field = field_name(prefix, &e.path().to_string());
                invalid(&field, strip_position(&e.into_inner().to_string()))
            }
            Ok(_) => invalid(&field_name(prefix, "."), "malformed JSON"),
        }
    })
}

/// Like [`from_json`] for a struct, which must be written as a JSON object (serde
/// would also read a struct from an array of its fields).
pub(super) fn object<'a, T: Deserialize<'a>>(text: &'a str, prefix: &str) -> Result<T, Error> {
    if !text.trim_start().starts_with('{') {
        return Err(invalid(&field_name(prefix, "."), "expected an object"));
    }
    from_json(text, prefix)
}

/// serde_json appends " at line L column C"; keep the message, drop the position.
fn strip_position(msg: &str) -> &str {
    msg.find(" at line ").map_or(msg, |i| &msg[..i])
}

/// Walks the whole document, the parts no typed struct reads included: every object
/// has distinct keys (parsers disagree on which duplicate wins), nesting stays within
/// [`MAX_DEPTH`], every number is finite, every string is Unicode (no lone surrogate).
pub(super) fn check_document(text: &str) -> Result<(), Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    if Walk(0).deserialize(&mut de).and_then(|()| de.end()).is_ok() {
        return Ok(());
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let mut track = serde_path_to_error::Track::new();
    let result = Walk(0).deserialize(serde_path_to_error::Deserializer::new(&mut de, &mut track));
    let field = field_name("", &track.path().to_string());
    Err(match result.and_then(|()| de.end()) {
        Err(e) => invalid(&field, strip_position(&e.to_string())),
        Ok(()) => invalid("event", "malformed JSON"),
    })
}

/// A [`check_document`] visitor at nesting depth `.0`.
#[derive(Clone, Copy)]
struct Walk(usize);

impl Walk {
    fn deeper<E: de::Error>(self) -> Result<Walk, E> {
        if self.0 >= MAX_DEPTH {
            return Err(E::custom(format_args!(
                "nested deeper than {MAX_DEPTH} levels"
            )));
        }
        Ok(Walk(self.0 + 1))
    }
}

impl<'de> DeserializeSeed<'de> for Walk {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let inner = self.deeper()?;
        while seq.next_element_seed(inner)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let inner = self.deeper()?;
        let mut keys = Keys::default();
        while let Some(key) = map.next_key_seed(Key)? {
            if let Err(key) = keys.insert(key) {
                return Err(de::Error::custom(format_args!("duplicate key {key:?}")));
            }
            map.next_value_seed(inner)?;
        }
        Ok(())
    }
}

/// The keys of one object seen so far: the usual few inline (no allocation), any
/// more in a hash set.
#[derive(Default)]
struct Keys<'de> {
    inline: [Cow<'de, str>; 16],
    len: usize,
    more: Option<HashSet<Cow<'de, str>, foldhash::fast::RandomState>>,
}

impl<'de> Keys<'de> {
    /// Adds `key`, or gives it back when it is already there.
    fn insert(&mut self, key: Cow<'de, str>) -> Result<(), Cow<'de, str>> {
        let known = self.inline[..self.len].contains(&key)
            || self.more.as_ref().is_some_and(|more| more.contains(&key));
        if known {
            return Err(key);
        }
        if let Some(slot) = self.inline.get_mut(self.len) {
            *slot = key;
            self.len += 1;
        } else {
            self.more.get_or_insert_with(HashSet::default).insert(key);
        }
        Ok(())
    }
}

/// An object key, borrowed from the input unless it had escapes.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Cow<'de, str>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a string key")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
}
