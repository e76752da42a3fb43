//! A produce request for one partition, framed around its record batch so
//! the batch is written from the producer's own buffer: the request's
//! fields before the batch go in the frame buffer, the batch and the few
//! bytes after it follow in the same vectored write. A batch of 512 KiB is
//! then copied once on its way to the socket (by the kernel), not twice.
//!
//! Layout (the Kafka protocol guide, Produce v3–v12): transactional id,
//! acks, timeout, one topic with one partition, its records; from v9 on the
//! compact forms and empty tagged-field sections.

use bytes::{BufMut, BytesMut};
use kafka_protocol::messages::{ProduceRequest, RequestHeader};
use kafka_protocol::protocol::{Encodable, HeaderVersion};

use crate::WireError;

/// The first flexible (compact, tagged) version of Produce.
const FIRST_FLEXIBLE: i16 = 9;

/// One partition's records for [`Connection::send_produce`](crate::connection::Connection::send_produce).
#[derive(Debug, Clone, Copy)]
pub struct PartitionProduce<'a> {
    /// The topic's name.
    pub topic: &'a str,
    /// The partition.
    pub partition: i32,
    /// Acknowledgements required: -1 (all in-sync replicas), 1 or 0.
    pub acks: i16,
    /// How long the broker may wait for the acknowledgements.
    pub timeout_ms: i32,
    /// One encoded record batch (message format v2).
    pub records: &'a [u8],
}

/// Frames `produce` at `version` into `buf` (emptied first), all but its
/// records: the frame's length counts them and the returned tail, which the
/// caller writes after the records.
pub(crate) fn frame(
    buf: &mut BytesMut,
    header: &RequestHeader,
    produce: &PartitionProduce<'_>,
    version: i16,
) -> Result<&'static [u8], WireError> {
    let malformed = |detail: String| WireError::Malformed {
        what: "Produce",
        detail,
    };
    let flexible = version >= FIRST_FLEXIBLE;
    buf.clear();
    buf.put_i32(0); // length, filled in below
    header
        .encode(buf, ProduceRequest::header_version(version))
        .map_err(|e| malformed(format!("cannot encode v{version} request header: {e}")))?;
    if flexible {
        buf.put_u8(0); // transactional id: null compact string
    } else {
        buf.put_i16(-1); // transactional id: null string
    }
    buf.put_i16(produce.acks);
    buf.put_i32(produce.timeout_ms);
    put_len(buf, 1, flexible)?; // one topic
    let topic = produce.topic.as_bytes();
    if flexible {
        put_uvarint(buf, topic.len() + 1);
    } else {
        let len = i16::try_from(topic.len())
            .map_err(|_| malformed(format!("topic name of {} bytes", topic.len())))?;
        buf.put_i16(len);
    }
    buf.put_slice(topic);
    put_len(buf, 1, flexible)?; // one partition
    buf.put_i32(produce.partition);
    let records = produce.records.len();
    if flexible {
        put_uvarint(buf, records + 1);
    } else {
        let len = i32::try_from(records)
            .map_err(|_| malformed(format!("record batch of {records} bytes")))?;
        buf.put_i32(len);
    }
    // Empty tagged fields of the partition, the topic and the request.
    let tail: &'static [u8] = if flexible { &[0, 0, 0] } else { &[] };
    let len = i32::try_from(buf.len() - 4 + records + tail.len())
        .map_err(|_| malformed("request larger than 2 GiB".into()))?;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Ok(tail)
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
    use kafka_protocol::messages::TopicName;
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::protocol::StrBytes;

    use super::*;

    /// What kafka-protocol's encoder writes for the same request.
    fn reference(header: &RequestHeader, p: &PartitionProduce<'_>, version: i16) -> Vec<u8> {
        let req = ProduceRequest::default()
            .with_acks(p.acks)
            .with_timeout_ms(p.timeout_ms)
            .with_topic_data(vec![
                TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_string(p.topic.to_string())))
                    .with_partition_data(vec![
                        PartitionProduceData::default()
                            .with_index(p.partition)
                            .with_records(Some(Bytes::copy_from_slice(p.records))),
                    ]),
            ]);
        let mut body = BytesMut::new();
        header
            .encode(&mut body, ProduceRequest::header_version(version))
            .expect("header");
        req.encode(&mut body, version).expect("body");
        let mut out = (body.len() as i32).to_be_bytes().to_vec();
        out.extend_from_slice(&body);
        out
    }

    /// Every version Kavari speaks, records small and large (a compact
    /// length of one to three bytes), frames byte for byte as kafka-protocol
    /// encodes the whole request.
    #[test]
    fn frames_match_the_protocol_encoder() {
        for version in 3..=12 {
            for size in [0usize, 1, 126, 127, 300, 16_383, 16_384, 600_000] {
                let records: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
                let topic = "orders.placed";
                let header = RequestHeader::default()
                    .with_request_api_key(0)
                    .with_request_api_version(version)
                    .with_correlation_id(42)
                    .with_client_id(Some(StrBytes::from_static_str("kavari")));
                let p = PartitionProduce {
                    topic,
                    partition: 7,
                    acks: -1,
                    timeout_ms: 30_000,
                    records: &records,
                };
                let mut buf = BytesMut::new();
                let tail = frame(&mut buf, &header, &p, version).expect("frame");
                let mut ours = buf.to_vec();
                ours.extend_from_slice(&records);
                ours.extend_from_slice(tail);
                assert_eq!(
                    ours,
                    reference(&header, &p, version),
                    "v{version}, {size} bytes of records"
                );
            }
        }
    }

    /// A topic name too long for the non-flexible i16 length is an error,
    /// not a wrapped length.
    #[test]
    fn an_overlong_topic_is_an_error() {
        let topic = "t".repeat(40_000);
        let p = PartitionProduce {
            topic: &topic,
            partition: 0,
            acks: -1,
            timeout_ms: 1,
            records: &[],
        };
        let err =
            frame(&mut BytesMut::new(), &RequestHeader::default(), &p, 8).expect_err("too long");
        assert!(err.to_string().contains("topic name"), "{err}");
    }
}
