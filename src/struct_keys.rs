//! The keys a serde struct accepts, read from its own `Deserialize` impl,
//! so that no list of keys is kept by hand beside a struct: the config's
//! "did you mean" suggestions and the split of a listener table into common
//! keys and handler settings both ask the struct itself.

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

/// The field names `T` deserializes (empty if `T` is not a struct).
pub(crate) fn struct_keys<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    let mut keys: &'static [&'static str] = &[];
    let _ = T::deserialize(KeyCatcher { keys: &mut keys });
    keys
}

/// A deserializer that only records the field list serde's derive hands to
/// `deserialize_struct`, then stops with an error.
struct KeyCatcher<'a> {
    keys: &'a mut &'static [&'static str],
}

#[derive(Debug)]
struct Caught;

impl std::fmt::Display for Caught {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("field names caught")
    }
}

impl std::error::Error for Caught {}

impl de::Error for Caught {
    fn custom<T: std::fmt::Display>(_msg: T) -> Self {
        Caught
    }
}

impl<'de> Deserializer<'de> for KeyCatcher<'_> {
    type Error = Caught;

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Caught> {
        *self.keys = fields;
        Err(Caught)
    }

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Caught> {
        Err(Caught)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        name: String,
        #[serde(default, with = "humantime_serde")]
        idle_timeout: std::time::Duration,
    }

    #[test]
    fn reads_the_fields_of_a_derived_struct() {
        assert_eq!(struct_keys::<Sample>(), ["name", "idle_timeout"]);
        assert!(struct_keys::<u32>().is_empty());
        // Catching the keys does not change what the struct reads.
        let sample: Sample = toml::from_str("name = \"x\"\nidle_timeout = \"2s\"").unwrap();
        assert_eq!(
            sample,
            Sample {
                name: "x".to_owned(),
                idle_timeout: std::time::Duration::from_secs(2),
            }
        );
    }
}
