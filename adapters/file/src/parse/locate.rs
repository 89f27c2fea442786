//! Finding where a field path (`services[1].endpoints[0].port`) sits in the
//! YAML text, for errors found after deserialisation.
//!
//! serde_yaml_ng keeps no spans in its values, but it does attach the position
//! of the innermost value to any error raised while deserialising it. So we
//! replay the document with a seed that walks down the path and fails at the
//! target; the error's location is the target's position. This runs only when
//! the file is already known to be broken.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::error::Position;

/// One step of a [`FieldPath`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seg {
    Key(&'static str),
    /// A key that comes from the file (a port name in an endpoint's `ports`).
    Name(String),
    Index(usize),
}

/// A path to a value in the file, displayed as serde_yaml_ng does:
/// `services[1].endpoints[0].ports.grpc`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FieldPath(Vec<Seg>);

impl FieldPath {
    pub(super) fn key(&self, key: &'static str) -> Self {
        self.with(Seg::Key(key))
    }
    pub(super) fn name(&self, name: &str) -> Self {
        self.with(Seg::Name(name.to_string()))
    }
    pub(super) fn index(&self, i: usize) -> Self {
        self.with(Seg::Index(i))
    }
    fn with(&self, seg: Seg) -> Self {
        let mut segs = self.0.clone();
        segs.push(seg);
        Self(segs)
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Index(n) => write!(f, "[{n}]")?,
                Seg::Key(k) if i == 0 => f.write_str(k)?,
                Seg::Name(k) if i == 0 => f.write_str(k)?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Name(k) => write!(f, ".{k}")?,
            }
        }
        Ok(())
    }
}

/// The position of the value at `path` in `text`, if it can be found.
pub(crate) fn locate(text: &str, path: &FieldPath) -> Option<Position> {
    let err = Walk(&path.0)
        .deserialize(serde_yaml_ng::Deserializer::from_str(text))
        .err()?;
    if !err.to_string().contains(FOUND) {
        return None;
    }
    err.location().map(|l| Position {
        line: l.line(),
        column: l.column(),
    })
}

/// The error message that signals "this is the target".
const FOUND: &str = "anymesh-locate: target found";

/// Walks down `path`; fails with [`FOUND`] at the target.
struct Walk<'p>(&'p [Seg]);

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("anything")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some((first, rest)) = self.0.split_first() else {
            return Err(de::Error::custom(FOUND));
        };
        let want = match first {
            Seg::Key(k) => *k,
            Seg::Name(k) => k.as_str(),
            Seg::Index(_) => return Err(de::Error::custom("not found")),
        };
        while let Some(key) = map.next_key::<serde_yaml_ng::Value>()? {
            if key.as_str() == Some(want) {
                return map.next_value_seed(Walk(rest));
            }
            map.next_value::<IgnoredAny>()?;
        }
        Err(de::Error::custom("not found"))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Some((first, rest)) = self.0.split_first() else {
            return Err(de::Error::custom(FOUND));
        };
        let Seg::Index(want) = first else {
            return Err(de::Error::custom("not found"));
        };
        for _ in 0..*want {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Err(de::Error::custom("not found"));
            }
        }
        seq.next_element_seed(Walk(rest))?;
        Err(de::Error::custom("not found"))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.scalar()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.scalar()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.scalar()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.scalar()
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.scalar()
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.scalar()
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.scalar()
    }
}

impl Walk<'_> {
    fn scalar<E: de::Error>(&self) -> Result<(), E> {
        Err(E::custom(if self.0.is_empty() {
            FOUND
        } else {
            "not found"
        }))
    }
}
