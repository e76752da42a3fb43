//! A produce request framed around its record batches, so each batch is
//! written from its producer's own buffer: the request's fields go in the
//! frame buffer, and the batches are written between its pieces in one
//! vectored write. A batch of 512 KiB is then copied once on its way to the
//! socket (by the kernel), not twice.
//!
//! Layout (the Kafka protocol guide, Produce v3–v12): transactional id,
//! acks, timeout, the topics, each with its partitions and their records;
//! from v9 on the compact forms and empty tagged-field sections.

use bytes::{BufMut, BytesMut};
use kafka_protocol::messages::{ProduceRequest, RequestHeader};
use kafka_protocol::protocol::{Encodable, HeaderVersion};

use super::{PartitionBatch, Produce};
use crate::WireError;
use crate::segments::Segment;

/// The first flexible (compact, tagged) version of Produce.
const FIRST_FLEXIBLE: i16 = 9;

/// Frames `request` at `version` into `buf` (emptied first), all but its
/// records: the frame's length counts them, and the returned segments say
/// where each batch goes. A topic's partitions are written together, in the
/// order their topic first appears.
pub(crate) fn frame<'a>(
    buf: &mut BytesMut,
    header: &RequestHeader,
    request: &'a Produce,
    version: i16,
) -> Result<Vec<Segment<'a>>, WireError> {
    let batches: &[PartitionBatch] = &request.batches;
    let malformed = |detail: String| WireError::Malformed {
        what: "Produce",
        detail,
    };
    if batches.is_empty() {
        return Err(malformed("a request without batches".into()));
    }
    let flexible = version >= FIRST_FLEXIBLE;
    buf.clear();
    buf.put_i32(0); // length, filled in below
    header
        .encode(buf, ProduceRequest::header_version(version))
        .map_err(|e| malformed(format!("cannot encode v{version} request header: {e}")))?;
    match request.transactional_id.as_deref().map(str::as_bytes) {
        None if flexible => buf.put_u8(0), // null compact string
        None => buf.put_i16(-1),           // null string
        Some(id) if flexible => {
            put_uvarint(buf, id.len() + 1);
            buf.put_slice(id);
        }
        Some(id) => {
            let len = i16::try_from(id.len())
                .map_err(|_| malformed(format!("transactional id of {} bytes", id.len())))?;
            buf.put_i16(len);
            buf.put_slice(id);
        }
    }
    buf.put_i16(request.acks);
    buf.put_i32(request.timeout_ms);
    // The batches of each topic, topics in order of first appearance.
    let mut topics: Vec<Vec<usize>> = Vec::new();
    for (i, b) in batches.iter().enumerate() {
        match topics.iter_mut().find(|t| batches[t[0]].topic == b.topic) {
            Some(t) => t.push(i),
            None => topics.push(vec![i]),
        }
    }
    let mut pieces = Vec::with_capacity(2 * batches.len() + 1);
    let mut from = 0;
    let mut records = 0usize;
    put_len(buf, topics.len(), flexible)?;
    for t in &topics {
        let topic = batches[t[0]].topic.0.as_bytes();
        if flexible {
            put_uvarint(buf, topic.len() + 1);
        } else {
            let len = i16::try_from(topic.len())
                .map_err(|_| malformed(format!("topic name of {} bytes", topic.len())))?;
            buf.put_i16(len);
        }
        buf.put_slice(topic);
        put_len(buf, t.len(), flexible)?;
        for (n, &i) in t.iter().enumerate() {
            if n > 0 && flexible {
                buf.put_u8(0); // the previous partition's tagged fields
            }
            let b = &batches[i];
            buf.put_i32(b.partition);
            let len = b.records.len();
            if flexible {
                put_uvarint(buf, len + 1);
            } else {
                let len = i32::try_from(len)
                    .map_err(|_| malformed(format!("record batch of {len} bytes")))?;
                buf.put_i32(len);
            }
            pieces.push(Segment::Frame(from..buf.len()));
            pieces.push(Segment::Bytes(&b.records));
            from = buf.len();
            records += len;
        }
        if flexible {
            buf.put_u8(0); // the last partition's tagged fields
            buf.put_u8(0); // the topic's
        }
    }
    if flexible {
        buf.put_u8(0); // the request's tagged fields
    }
    pieces.push(Segment::Frame(from..buf.len()));
    let len = i32::try_from(buf.len() - 4 + records)
        .map_err(|_| malformed("request larger than 2 GiB".into()))?;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Ok(pieces)
}

/// An array's length: a compact length (n + 1, unsigned varint) or an i32.
fn put_len(buf: &mut BytesMut, n: usize, flexible: bool) -> Result<(), WireError> {
    if flexible {
        put_uvarint(buf, n + 1);
    } else {
        buf.put_i32(i32::try_from(n).map_err(|_| WireError::Malformed {
            what: "Produce",
            detail: format!("array of {n} entries"),
        })?);
    }
    Ok(())
}

fn put_uvarint(buf: &mut BytesMut, mut v: usize) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::protocol::StrBytes;

    use super::*;
    use crate::topic_name;

    fn batch(topic: &str, partition: i32, size: usize) -> PartitionBatch {
        PartitionBatch {
            topic: topic_name(topic),
            partition,
            records: (0..size)
                .map(|i| (i % 251) as u8)
                .collect::<Vec<u8>>()
                .into(),
        }
    }

    /// What kafka-protocol's encoder writes for the same request, topics
    /// grouped in order of first appearance.
    fn reference(header: &RequestHeader, request: &Produce, version: i16) -> Vec<u8> {
        let mut topics: Vec<TopicProduceData> = Vec::new();
        for b in &request.batches {
            let partition = PartitionProduceData::default()
                .with_index(b.partition)
                .with_records(Some(Bytes::clone(&b.records)));
            match topics.iter_mut().find(|t| t.name == b.topic) {
                Some(t) => t.partition_data.push(partition),
                None => topics.push(
                    TopicProduceData::default()
                        .with_name(b.topic.clone())
                        .with_partition_data(vec![partition]),
                ),
            }
        }
        let req = ProduceRequest::default()
            .with_acks(request.acks)
            .with_timeout_ms(request.timeout_ms)
            .with_topic_data(topics);
        let mut body = BytesMut::new();
        header
            .encode(&mut body, ProduceRequest::header_version(version))
            .expect("header");
        req.encode(&mut body, version).expect("body");
        let mut out = (body.len() as i32).to_be_bytes().to_vec();
        out.extend_from_slice(&body);
        out
    }

    /// The request as written: the frame's pieces with the records between.
    fn framed(header: &RequestHeader, request: &Produce, version: i16) -> Vec<u8> {
        let mut buf = BytesMut::new();
        let pieces = frame(&mut buf, header, request, version).expect("frame");
        let mut out = Vec::new();
        for piece in pieces {
            match piece {
                Segment::Frame(r) => out.extend_from_slice(&buf[r]),
                Segment::Bytes(b) => out.extend_from_slice(b),
            }
        }
        out
    }

    fn request(batches: Vec<PartitionBatch>) -> Produce {
        Produce {
            transactional_id: None,
            acks: -1,
            timeout_ms: 30_000,
            batches,
        }
    }

    fn header(version: i16) -> RequestHeader {
        RequestHeader::default()
            .with_request_api_key(0)
            .with_request_api_version(version)
            .with_correlation_id(42)
            .with_client_id(Some(StrBytes::from_static_str("kavari")))
    }

    /// Every version Kavari speaks, one batch small or large (a compact
    /// length of one to three bytes), frames byte for byte as kafka-protocol
    /// encodes the whole request.
    #[test]
    fn one_batch_frames_as_the_protocol_encoder_writes() {
        for version in 3..=12 {
            for size in [0usize, 1, 126, 127, 300, 16_383, 16_384, 600_000] {
                let r = request(vec![batch("orders.placed", 7, size)]);
                assert_eq!(
                    framed(&header(version), &r, version),
                    reference(&header(version), &r, version),
                    "v{version}, {size} bytes of records"
                );
            }
        }
    }

    /// Batches of several topics, interleaved, frame as one request with
    /// each topic's partitions together.
    #[test]
    fn many_partitions_of_many_topics_frame_as_the_protocol_encoder_writes() {
        let r = request(vec![
            batch("a", 0, 10),
            batch("bb", 3, 300),
            batch("a", 1, 16_384),
            batch("c", 0, 0),
            batch("bb", 0, 127),
        ]);
        for version in 3..=12 {
            assert_eq!(
                framed(&header(version), &r, version),
                reference(&header(version), &r, version),
                "v{version}"
            );
        }
    }

    /// A topic name too long for the non-flexible i16 length is an error,
    /// not a wrapped length; so is a request without batches.
    #[test]
    fn an_overlong_topic_or_no_batch_is_an_error() {
        let long = request(vec![batch(&"t".repeat(40_000), 0, 0)]);
        let err =
            frame(&mut BytesMut::new(), &RequestHeader::default(), &long, 8).expect_err("too long");
        assert!(err.to_string().contains("topic name"), "{err}");
        let empty = request(vec![]);
        let err =
            frame(&mut BytesMut::new(), &RequestHeader::default(), &empty, 8).expect_err("empty");
        assert!(err.to_string().contains("without batches"), "{err}");
    }
}
