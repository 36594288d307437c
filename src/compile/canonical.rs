//! Protobuf maps, encoded in a fixed order.
//!
//! prost holds a map field in a `HashMap` and encodes it in its random iteration order, so the
//! same message would get a new version (the hash of its bytes) on every compile and be re-sent
//! for nothing. The few maps aixds emits (`Metadata.filter_metadata`, `Struct.fields`) are
//! encoded here with their keys sorted; a map entry whose value is already encoded has the same
//! wire form as one prost would write.

use envoy_types::pb::google::protobuf::{Value, value};
use prost::Message;

/// A protobuf map entry whose value is already encoded (a message and `bytes` share a wire type).
#[derive(Clone, PartialEq, prost::Message)]
struct MapEntry {
    #[prost(string, tag = "1")]
    key: String,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

/// `google.protobuf.Struct.fields` and `envoy.config.core.v3.Metadata.filter_metadata`: both a
/// map at field 1.
#[derive(Clone, PartialEq, prost::Message)]
struct Map {
    #[prost(message, repeated, tag = "1")]
    entries: Vec<MapEntry>,
}

/// A map at field 1 from `entries` (key, encoded value), sorted by key: an encoded
/// `google.protobuf.Struct` when the values are encoded `Value`s, an encoded `Metadata` when
/// they are encoded `Struct`s.
pub(super) fn map(entries: impl IntoIterator<Item = (String, Vec<u8>)>) -> Vec<u8> {
    let mut entries: Vec<MapEntry> =
        entries.into_iter().map(|(key, value)| MapEntry { key, value }).collect();
    entries.sort_by(|a, b| a.key.cmp(&b.key));
    Map { entries }.encode_to_vec()
}

/// Appends the map field `tag` with `entries` (key, encoded value), sorted by key.
pub(super) fn append_map(
    buf: &mut Vec<u8>,
    tag: u32,
    entries: impl IntoIterator<Item = (String, Vec<u8>)>,
) {
    let mut entries: Vec<MapEntry> =
        entries.into_iter().map(|(key, value)| MapEntry { key, value }).collect();
    entries.sort_by(|a, b| a.key.cmp(&b.key));
    for entry in entries {
        append_field(buf, tag, &entry.encode_to_vec());
    }
}

/// An encoded `google.protobuf.Struct` of string values.
pub(super) fn string_struct<'a>(fields: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vec<u8> {
    map(fields.into_iter().map(|(k, v)| {
        let value = Value { kind: Some(value::Kind::StringValue(v.to_string())) };
        (k.to_string(), value.encode_to_vec())
    }))
}

/// Appends `bytes` to `buf` as the length-delimited field `tag`.
pub(super) fn append_field(buf: &mut Vec<u8>, tag: u32, bytes: &[u8]) {
    prost::encoding::encode_key(tag, prost::encoding::WireType::LengthDelimited, buf);
    prost::encoding::encode_varint(bytes.len() as u64, buf);
    buf.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::google::protobuf::Struct;

    #[test]
    fn a_sorted_struct_decodes_and_is_stable() {
        let a = string_struct([("b", "2"), ("a", "1")]);
        assert_eq!(a, string_struct([("a", "1"), ("b", "2")]));
        let decoded = Struct::decode(a.as_slice()).unwrap();
        let s = |k: &str| match &decoded.fields[k].kind {
            Some(value::Kind::StringValue(s)) => s.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!((s("a"), s("b")), ("1".into(), "2".into()));
    }
}
