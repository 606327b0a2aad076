//! `docs/configuration.md` documents every key of the schema, and no key
//! the schema lacks. The schema is read from the types themselves: a
//! deserializer that, asked for a struct, answers every field serde's
//! derive lists for it (`deny_unknown_fields` or not), and records the key
//! path of each. A field added to any schema struct shows up here without
//! touching this file.

use std::collections::{BTreeMap, BTreeSet};

use serde::de::value::{BorrowedStrDeserializer, Error, StrDeserializer};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess};
use serde::Deserialize;

use crate::{Config, WeightedAddress};

/// What the walk found: tables (structs) and keys (everything else) by
/// dotted path, and the allowed values of enum-typed keys.
#[derive(Default)]
struct Schema {
    tables: BTreeSet<String>,
    keys: BTreeSet<String>,
    variants: BTreeMap<String, Vec<&'static str>>,
}

/// Deserializes any schema type, recording what it is asked for at `path`.
struct Walker<'s> {
    path: String,
    schema: &'s mut Schema,
}

impl<'s> Walker<'s> {
    fn leaf(self) -> Self {
        self.schema.keys.insert(self.path.clone());
        self
    }
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_owned()
    } else {
        format!("{path}.{field}")
    }
}

macro_rules! leaf_with {
    ($($method:ident => $visit:ident($value:expr)),* $(,)?) => {$(
        fn $method<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            self.leaf();
            visitor.$visit($value)
        }
    )*};
}

impl<'de> Deserializer<'de> for Walker<'_> {
    type Error = Error;

    leaf_with! {
        deserialize_bool => visit_bool(false),
        deserialize_u8 => visit_u64(1),
        deserialize_u16 => visit_u64(1),
        deserialize_u32 => visit_u64(1),
        deserialize_u64 => visit_u64(1),
        deserialize_i64 => visit_i64(1),
        // An address parses from this, and any other string key takes it.
        deserialize_str => visit_str("127.0.0.1:1"),
        deserialize_string => visit_str("127.0.0.1:1"),
        // Untagged enums (a backend as a string or a table, a hostname
        // check as a bool or a name) buffer through here: the string form.
        deserialize_any => visit_str("127.0.0.1:1"),
    }

    fn deserialize_option<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_some(self)
    }

    fn deserialize_seq<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_seq(OneElement(Some(self)))
    }

    fn deserialize_struct<V: de::Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.schema.tables.insert(self.path.clone());
        visitor.visit_map(Fields {
            path: self.path,
            fields: fields.iter(),
            schema: self.schema,
        })
    }

    fn deserialize_enum<V: de::Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        let first = variants.first().copied().unwrap_or_default();
        self.schema
            .variants
            .insert(self.path.clone(), variants.to_vec());
        self.leaf();
        visitor.visit_enum(StrDeserializer::<Error>::new(first))
    }

    serde::forward_to_deserialize_any! {
        i8 i16 i32 u128 i128 f32 f64 char bytes byte_buf unit unit_struct
        newtype_struct tuple tuple_struct map identifier ignored_any
    }
}

/// A sequence of one element, walked at the sequence's own path.
struct OneElement<'s>(Option<Walker<'s>>);

impl<'de> SeqAccess<'de> for OneElement<'_> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        self.0.take().map(|w| seed.deserialize(w)).transpose()
    }
}

/// Every field of a struct, each walked at `path.field`.
struct Fields<'s> {
    path: String,
    fields: std::slice::Iter<'static, &'static str>,
    schema: &'s mut Schema,
}

impl<'de> MapAccess<'de> for Fields<'_> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        match self.fields.as_slice().first() {
            Some(f) => seed
                .deserialize(BorrowedStrDeserializer::<Error>::new(f))
                .map(Some),
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let field = self
            .fields
            .next()
            .ok_or_else(|| de::Error::custom("value without a key"))?;
        seed.deserialize(Walker {
            path: join(&self.path, field),
            schema: self.schema,
        })
    }
}

fn walk<'de, T: Deserialize<'de>>(path: &str, schema: &mut Schema) {
    let walker = Walker {
        path: path.to_owned(),
        schema,
    };
    if let Err(e) = T::deserialize(walker) {
        panic!("walking the schema at {path:?}: {e}");
    }
}

/// The whole schema, by key path (`listeners.backends.weight`).
fn schema() -> Schema {
    let mut schema = Schema::default();
    walk::<Config>("", &mut schema);
    // The table form of a `[passthrough]` backend hides behind the
    // untagged enum, which the walk enters in its string form.
    walk::<WeightedAddress>("passthrough.backends", &mut schema);
    schema.keys.remove("passthrough.backends");
    schema
}

/// What the document declares: headings naming tables in backticks,
/// `` `[runtime]` `` or `` `[[listeners]]` `` (several per heading allowed),
/// and under each, table rows whose first cell is a backticked key.
#[derive(Default)]
struct Documented {
    tables: BTreeSet<String>,
    /// Full path -> the row's text, to look for allowed values in.
    keys: BTreeMap<String, String>,
}

fn documented(text: &str) -> Documented {
    let mut doc = Documented::default();
    let mut current: Vec<String> = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') {
            current = backticked(line)
                .filter(|t| t.starts_with('['))
                .map(|t| t.trim_matches(|c| c == '[' || c == ']').to_owned())
                .collect();
            doc.tables.extend(current.iter().cloned());
            continue;
        }
        let Some(cell) = line.strip_prefix("| `") else {
            continue;
        };
        let Some((key, _)) = cell.split_once('`') else {
            continue;
        };
        for table in &current {
            doc.keys.insert(join(table, key), line.to_owned());
        }
    }
    doc
}

fn backticked(line: &str) -> impl Iterator<Item = &str> {
    line.split('`').skip(1).step_by(2)
}

#[test]
fn every_schema_key_is_documented() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/configuration.md");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let doc = documented(&text);
    let schema = schema();
    let leaves: BTreeSet<&String> = schema.keys.difference(&schema.tables).collect();
    let mut problems = Vec::new();
    let missing: Vec<_> = leaves
        .iter()
        .filter(|k| !doc.keys.contains_key(k.as_str()))
        .collect();
    if !missing.is_empty() {
        problems.push(format!("keys missing: {missing:?}"));
    }
    let missing_tables: Vec<_> = schema
        .tables
        .iter()
        .filter(|t| !t.is_empty() && !doc.tables.contains(*t))
        .collect();
    if !missing_tables.is_empty() {
        problems.push(format!("tables without a heading: {missing_tables:?}"));
    }
    let stale: Vec<_> = doc
        .keys
        .keys()
        .filter(|k| !leaves.contains(k))
        .chain(doc.tables.iter().filter(|t| !schema.tables.contains(*t)))
        .collect();
    if !stale.is_empty() {
        problems.push(format!(
            "keys or tables the schema does not have: {stale:?}"
        ));
    }
    for (key, variants) in &schema.variants {
        let row = doc.keys.get(key).map(String::as_str).unwrap_or_default();
        let absent: Vec<_> = variants
            .iter()
            .filter(|v| !row.contains(&format!("`{v}`")))
            .collect();
        if !absent.is_empty() {
            problems.push(format!("{key}: allowed values {absent:?} not listed"));
        }
    }
    assert!(
        problems.is_empty(),
        "docs/configuration.md is out of step with the schema:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_walk_sees_nested_and_optional_keys() {
    let s = schema();
    for key in [
        "listeners.address",
        "listeners.backends.weight",
        "listeners.quic.raw_proxy.max_relay_streams",
        "clusters.health_check.interval_ms",
        "runtime.tls.tls13_only",
        "passthrough.backends.weight",
    ] {
        assert!(s.keys.contains(key), "{key} not walked");
    }
    assert!(s.tables.contains("listeners.routes.header"));
    assert!(s.variants["listeners.lb_policy"].contains(&"ring_hash"));
    // A struct's fields are keys of it, never tables of their own name.
    assert!(!s.tables.contains("runtime.connect_timeout_ms"));
}
