//! Handler dispatch through the registry: route by `msg_type`, decode, call,
//! against decoding and calling the handler directly (the baseline).

use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use kavari::bench::Dispatcher;
use kavari::{HandlerError, MessageContext, MessageHandler};
use kavari_benches::Payload;

struct Count(AtomicU64);

impl MessageHandler<Payload> for Count {
    async fn handle(&self, m: Payload, _: &MessageContext) -> Result<(), HandlerError> {
        self.0.fetch_add(m.seq, Ordering::Relaxed);
        Ok(())
    }
}

fn dispatch(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("dispatch");
    for size in [100usize, 1024] {
        let e = kavari::codec::encode(&Payload::of_size(1, size)).expect("encode");
        let ctx = MessageContext::new("bench", 0, 0);
        let mut d = Dispatcher::default();
        d.subscribe::<Payload, _>(Count(AtomicU64::new(0)));
        group.bench_with_input(BenchmarkId::new("registry", size), &e, |b, e| {
            b.iter(|| runtime.block_on(d.dispatch("bench", &e.headers, &e.value, &ctx)))
        });
        let direct = Count(AtomicU64::new(0));
        group.bench_with_input(BenchmarkId::new("direct_baseline", size), &e, |b, e| {
            b.iter(|| {
                runtime.block_on(async {
                    let m: Payload = kavari::codec::decode_value(&e.value).expect("decode");
                    direct.handle(m, &ctx).await.is_ok()
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, dispatch);
criterion_main!(benches);
