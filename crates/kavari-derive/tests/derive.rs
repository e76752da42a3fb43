//! The derive's generated code, and its compile errors.

#![deny(warnings, clippy::all)]

use kavari::KafkaMessage;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "orders")]
struct OrderPlaced {
    #[kavari(key)]
    order_id: String,
    amount_cents: u64,
}

#[derive(Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "metrics.v1", name = "app.Metric")]
struct Metric(#[kavari(key)] u32, f64);

#[derive(Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "ticks")]
struct Tick;

#[derive(Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "events")]
enum Event {
    Started { at: u64 },
    Stopped,
}

#[derive(Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "generic")]
#[serde(bound = "T: Serialize + serde::de::DeserializeOwned")]
struct Wrapper<T: Send + Sync + 'static> {
    #[kavari(key)]
    id: i64,
    inner: T,
}

#[derive(Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "customers")]
struct MaybeKeyed {
    #[kavari(key)]
    customer: Option<String>,
}

#[derive(Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "customers")]
struct MaybeNumbered(#[kavari(key)] std::option::Option<u32>);

#[test]
fn an_optional_key_is_null_when_none() {
    let some = MaybeKeyed {
        customer: Some("c-9".into()),
    };
    assert_eq!(some.key().as_deref(), Some("c-9"));
    let mut out = Vec::new();
    assert!(some.write_key(&mut out));
    assert_eq!(out, b"c-9");
    let none = MaybeKeyed { customer: None };
    assert_eq!(none.key(), None);
    assert!(!none.write_key(&mut out));
    assert_eq!(MaybeNumbered(Some(3)).key().as_deref(), Some("3"));
    assert_eq!(MaybeNumbered(None).key(), None);
}

#[test]
fn topic_name_and_key() {
    let o = OrderPlaced {
        order_id: "o-1".into(),
        amount_cents: 1,
    };
    assert_eq!(OrderPlaced::TOPIC, "orders");
    assert_eq!(OrderPlaced::NAME, "OrderPlaced");
    assert_eq!(o.key().as_deref(), Some("o-1"));
    let _ = o.amount_cents;

    assert_eq!(Metric::TOPIC, "metrics.v1");
    assert_eq!(Metric::NAME, "app.Metric");
    assert_eq!(Metric(42, 1.5).key().as_deref(), Some("42"));
    let _ = Metric(1, 0.0).1;

    assert_eq!(Tick.key(), None);
    assert_eq!(Event::NAME, "Event");
    assert_eq!(Event::Stopped.key(), None);
    let _ = Event::Started { at: 1 };

    let w = Wrapper { id: -7, inner: 3u8 };
    assert_eq!(<Wrapper<u8>>::TOPIC, "generic");
    assert_eq!(w.key().as_deref(), Some("-7"));
    let _ = w.inner;
}

#[test]
fn compile_errors_point_at_the_offending_attribute() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
