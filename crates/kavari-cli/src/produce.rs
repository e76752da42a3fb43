//! `kavari produce TOPIC --type T`: JSON values from the command line or
//! stdin (one per line) published as a Kavari service would, in the
//! type's codec, with its `msg_type` and `content-type` headers, so that a
//! person can send a test message.

use std::collections::BTreeMap;
use std::io::BufRead;

use kavari::codec::Codec;
use kavari::codec::{CONTENT_TYPE_HEADER, EncodedMessage, MSG_TYPE_HEADER};
use serde_json::Value;

use crate::Failure;
use crate::connect::Settings;
use crate::output::out;

/// What `produce` publishes.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The topic.
    topic: String,
    /// The message type: the `msg_type` header consumers route by.
    #[arg(long = "type")]
    msg_type: String,
    /// The partition key (default: none).
    #[arg(long)]
    key: Option<String>,
    /// The value's encoding on the wire: `msgpack` (Kavari's default) or
    /// `json` (a type declared with `codec = "json"`).
    #[arg(long, default_value = "msgpack", value_parser = ["msgpack", "json"])]
    codec: String,
    /// The value as JSON; without it, one JSON value per line of stdin.
    #[arg(long)]
    value: Option<String>,
}

pub(crate) async fn run(settings: &Settings, args: Args) -> Result<(), Failure> {
    let codec = if args.codec == "json" {
        Codec::Json
    } else {
        Codec::MessagePack
    };
    let values: Vec<String> = match &args.value {
        Some(v) => vec![v.clone()],
        None => std::io::stdin()
            .lock()
            .lines()
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Failure(format!("reading stdin: {e}")))?
            .into_iter()
            .filter(|l| !l.trim().is_empty())
            .collect(),
    };
    // A failed publish is reported here, not dead-lettered.
    let publisher = settings
        .publisher()
        .dead_letter_suffix(None)
        .build()
        .await?;
    for (n, text) in values.iter().enumerate() {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| Failure(format!("value {} is not JSON: {e}", n + 1)))?;
        let message = encoded(&args, codec, &value)?;
        let d = publisher
            .publish_encoded(message)
            .await
            .map_err(|e| Failure(format!("publishing value {}: {e}", n + 1)))?;
        out!("{}/{}@{}", d.topic, d.partition, d.offset);
    }
    publisher.shutdown().await?;
    Ok(())
}

/// `value` as the record a Kavari service of `args.msg_type` would write.
fn encoded(args: &Args, codec: Codec, value: &Value) -> Result<EncodedMessage, Failure> {
    let bytes = match codec {
        Codec::Json => serde_json::to_vec(value).map_err(|e| Failure(e.to_string()))?,
        _ => rmp_serde::to_vec_named(value).map_err(|e| Failure(e.to_string()))?,
    };
    let headers = BTreeMap::from([
        (
            MSG_TYPE_HEADER.to_string(),
            args.msg_type.clone().into_bytes(),
        ),
        (
            CONTENT_TYPE_HEADER.to_string(),
            codec.content_type().as_bytes().to_vec(),
        ),
    ]);
    Ok(EncodedMessage {
        topic: args.topic.clone().into(),
        key: args.key.clone().map(String::into_bytes),
        value: bytes,
        headers,
    })
}
