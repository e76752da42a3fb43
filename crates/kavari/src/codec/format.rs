//! [`Codec`]: how a value is encoded (MessagePack, JSON or text), what its
//! `content-type` header says, and how a value without that header is
//! recognised.

use std::fmt;

/// A value's encoding on the wire. A message type publishes with its own
/// (`#[kavari(codec = "...")]`, MessagePack by default); a consumer decodes
/// each record by what the record says it is (its `content-type` header,
/// or its first bytes when it has none), so one topic may carry records of
/// one type in several encodings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Codec {
    /// MessagePack with named fields (`application/msgpack`): compact, and
    /// readers with more or fewer fields still decode it. The default.
    #[default]
    MessagePack,
    /// JSON (`application/json`): what the Python library writes for
    /// dataclass payloads.
    Json,
    /// The single field's `Display` output as UTF-8 text, read back with
    /// `FromStr` (`text/plain; charset=utf-8`): what the Python library
    /// writes for `str`, `int` and `float` payloads. Only for a tuple
    /// struct with one field.
    Text,
}

impl Codec {
    /// The `content-type` header value Kavari writes.
    pub fn content_type(self) -> &'static str {
        match self {
            Codec::MessagePack => "application/msgpack",
            Codec::Json => "application/json",
            Codec::Text => "text/plain; charset=utf-8",
        }
    }

    /// The codec a `content-type` header names (parameters such as
    /// `charset` and letter case are ignored), if Kavari reads it.
    pub fn from_content_type(content_type: &str) -> Option<Codec> {
        let media = content_type.split(';').next().unwrap_or_default().trim();
        if media.eq_ignore_ascii_case("application/msgpack")
            || media.eq_ignore_ascii_case("application/x-msgpack")
        {
            Some(Codec::MessagePack)
        } else if media.eq_ignore_ascii_case("application/json") {
            Some(Codec::Json)
        } else if media.eq_ignore_ascii_case("text/plain") {
            Some(Codec::Text)
        } else {
            None
        }
    }

    /// Recognises a value that came without a `content-type`: a JSON
    /// object starts with `{` after optional whitespace; a MessagePack map
    /// (what every struct encodes to) with a fixmap byte (0x80-0x8f), map16
    /// (0xde) or map32 (0xdf). Anything else is `None`.
    pub fn detect(value: &[u8]) -> Option<Codec> {
        match value.first()? {
            0x80..=0x8f | 0xde | 0xdf => Some(Codec::MessagePack),
            _ => match value
                .iter()
                .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))?
            {
                b'{' => Some(Codec::Json),
                _ => None,
            },
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Codec::MessagePack => "MessagePack",
            Codec::Json => "JSON",
            Codec::Text => "text",
        })
    }
}

/// An encoder's or decoder's own error.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_without_a_content_type_are_recognised_by_their_first_bytes() {
        let cases: [(&[u8], Option<Codec>); 12] = [
            (b"{\"a\": 1}", Some(Codec::Json)),
            (b" \t\r\n {}", Some(Codec::Json)),
            (&[0x80], Some(Codec::MessagePack)),
            (&[0x81, 0xa1, b'a', 0x01], Some(Codec::MessagePack)),
            (&[0x8f], Some(Codec::MessagePack)),
            (&[0xde, 0x00, 0x10], Some(Codec::MessagePack)),
            (&[0xdf, 0, 0, 0, 0x10], Some(Codec::MessagePack)),
            (b"[1, 2]", None),
            (b"hello", None),
            (b"   ", None),
            (&[0xc1, 0xff], None),
            (b"", None),
        ];
        for (value, expected) in cases {
            assert_eq!(Codec::detect(value), expected, "{value:?}");
        }
    }

    #[test]
    fn content_types_are_read_without_their_parameters() {
        for (header, codec) in [
            ("application/msgpack", Some(Codec::MessagePack)),
            ("application/x-msgpack", Some(Codec::MessagePack)),
            ("application/json", Some(Codec::Json)),
            ("Application/JSON; charset=utf-8", Some(Codec::Json)),
            ("text/plain; charset=utf-8", Some(Codec::Text)),
            ("application/avro", None),
            ("", None),
        ] {
            assert_eq!(Codec::from_content_type(header), codec, "{header}");
        }
        for codec in [Codec::MessagePack, Codec::Json, Codec::Text] {
            assert_eq!(Codec::from_content_type(codec.content_type()), Some(codec));
        }
    }
}
