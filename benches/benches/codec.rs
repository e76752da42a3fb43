//! Envelope encode/decode and murmur2, per payload size.

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
        b.iter(|| kavari::murmur2(std::hint::black_box(key)))
    });
    c.bench_function("crc32/16B", |b| {
        b.iter(|| kavari::crc32(std::hint::black_box(key)))
    });
}

criterion_group!(benches, envelope, partitioner);
criterion_main!(benches);
