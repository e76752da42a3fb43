#[derive(serde::Serialize, serde::Deserialize, kavari::KafkaMessage)]
#[kavari(topic = "orders/eu")]
struct BadTopic {
    a: String,
}

fn main() {}
