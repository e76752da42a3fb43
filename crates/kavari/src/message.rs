//! The [`KafkaMessage`] trait: a message type's topic, partition key and name.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec::format::Codec;

/// A message type Kavari can publish and deliver.
///
/// Derive it with `#[derive(KafkaMessage)]` (every attribute, and what
/// enums, tuple structs and optional keys do:
/// [the derive's page](derive@crate::KafkaMessage)):
///
/// ```
/// use kavari::KafkaMessage;
///
/// #[derive(serde::Serialize, serde::Deserialize, KafkaMessage)]
/// #[kavari(topic = "orders")]        // optional: name = "OrderPlaced"
/// struct OrderPlaced {
///     #[kavari(key)]                 // the partition key; none means a null key
///     order_id: String,
///     amount_cents: u64,
/// }
///
/// let m = OrderPlaced { order_id: "o-1".into(), amount_cents: 1250 };
/// assert_eq!(OrderPlaced::TOPIC, "orders");
/// assert_eq!(OrderPlaced::NAME, "OrderPlaced");
/// assert_eq!(m.key().as_deref(), Some("o-1"));
/// ```
pub trait KafkaMessage: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The topic every message of this type is published to.
    const TOPIC: &'static str;
    /// The `msg_type` header value: by default the Rust type's name, so a
    /// Python producer's class name can match.
    const NAME: &'static str;
    /// The partition key, UTF-8 on the wire; `None` for a null key.
    fn key(&self) -> Option<String>;

    /// How the value is encoded when published: MessagePack unless the
    /// derive says `#[kavari(codec = "json")]` or `codec = "text"`.
    /// Consumers decode each record by its own `content-type`, whatever
    /// this says.
    const CODEC: Codec = Codec::MessagePack;

    /// Appends the value as text, for [`Codec::Text`] types: the derive
    /// writes the single field's `Display` output. Other types are never
    /// asked; the default refuses.
    fn write_text(&self, out: &mut Vec<u8>) -> Result<(), String> {
        let _ = out;
        Err(format!("{} is not a text message type", Self::NAME))
    }

    /// Reads a value written as text, for [`Codec::Text`] types (and text
    /// records of any type): the derive parses the single field with
    /// `FromStr`. The default refuses.
    fn read_text(text: &str) -> Result<Self, String>
    where
        Self: Sized,
    {
        let _ = text;
        Err(format!("{} cannot be read from text", Self::NAME))
    }

    /// Appends the partition key's UTF-8 bytes to `out` and returns whether
    /// there is one: what a publish uses, so it allocates no `String`. The
    /// default calls [`key`](Self::key); the derive writes the key field's
    /// `Display` output into `out` directly. Both must give the same key.
    fn write_key(&self, out: &mut Vec<u8>) -> bool {
        match self.key() {
            Some(key) => {
                out.extend_from_slice(key.as_bytes());
                true
            }
            None => false,
        }
    }
}
