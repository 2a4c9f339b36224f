//! Serde helpers for the readable JSON form: opaque bytes as hex strings.

use serde::Serializer;

pub(crate) fn hex<S: Serializer>(bytes: &impl AsRef<[u8]>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(bytes.as_ref()))
}
