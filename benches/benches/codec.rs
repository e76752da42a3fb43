//! Envelope encode/decode and murmur2, per payload size; record batches
//! read back record by record, per compression codec.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use kavari::codec;
use kavari_benches::Payload;

fn envelope(c: &mut Criterion) {
    let mut group = c.benchmark_group("envelope");
    for size in [100usize, 1024, 64 * 1024] {
        let msg = Payload::of_size(7, size);
        let encoded = codec::encode(&msg).expect("encode");
        group.throughput(Throughput::Bytes(encoded.value.len() as u64));
        group.bench_with_input(BenchmarkId::new("encode", size), &msg, |b, m| {
            b.iter(|| codec::encode(std::hint::black_box(m)).expect("encode"))
        });
        group.bench_with_input(BenchmarkId::new("decode", size), &encoded, |b, e| {
            b.iter(|| {
                codec::decode::<Payload>(&e.headers, Some(std::hint::black_box(&e.value)))
                    .expect("decode")
            })
        });
        // The baseline: rmp-serde alone, without the envelope.
        group.bench_with_input(
            BenchmarkId::new("rmp_serde_baseline", size),
            &msg,
            |b, m| b.iter(|| rmp_serde_encode(std::hint::black_box(m))),
        );
    }
    group.finish();
}

fn rmp_serde_encode(m: &Payload) -> Vec<u8> {
    let mut buf = Vec::new();
    let _ = serde::Serialize::serialize(m, &mut rmp_serde_ser(&mut buf));
    buf
}

fn rmp_serde_ser(
    buf: &mut Vec<u8>,
) -> rmp_serde::Serializer<
    &mut Vec<u8>,
    rmp_serde::config::StructMapConfig<rmp_serde::config::DefaultConfig>,
> {
    rmp_serde::Serializer::new(buf).with_struct_map()
}

fn partitioner(c: &mut Criterion) {
    let key = b"order-1234567890";
    c.bench_function("murmur2/16B", |b| {
        b.iter(|| kavari::Partitioner::murmur2(std::hint::black_box(key)))
    });
    c.bench_function("crc32/16B", |b| {
        b.iter(|| kavari::Partitioner::crc32(std::hint::black_box(key)))
    });
}

/// A fetched batch of 1,000 records of 100 bytes read record by record, as
/// the consumer reads it, with each codec.
fn batch_read(c: &mut Criterion) {
    use kavari_wire::Compression;
    use kavari_wire::record_batch::read::batches;
    use kavari_wire::record_batch::write::{Record, RecordBatch};
    let mut group = c.benchmark_group("batch_read");
    let value: Vec<u8> = (0..100u8).map(|i| i % 7 + b'a').collect();
    let headers: [(&str, &[u8]); 1] = [("msg_type", b"Payload")];
    for codec in [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let mut batch = RecordBatch::with_capacity(1 << 20);
        for _ in 0..1000 {
            batch.push(
                &Record {
                    key: Some(b"key"),
                    value: &value,
                    headers: &headers[..],
                },
                1,
            );
        }
        let bytes = bytes::Bytes::from(batch.finish(codec).expect("finish"));
        group.throughput(Throughput::Elements(1000));
        group.bench_with_input(
            BenchmarkId::new("records", codec.name()),
            &bytes,
            |b, bytes| {
                b.iter(|| {
                    let mut n = 0usize;
                    for batch in batches(bytes.clone()) {
                        let batch = batch.expect("batch");
                        for record in batch.iter_records(64 << 20).expect("records") {
                            n += record.expect("record").value.map_or(0, |v| v.len());
                        }
                    }
                    n
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, envelope, partitioner, batch_read);
criterion_main!(benches);
