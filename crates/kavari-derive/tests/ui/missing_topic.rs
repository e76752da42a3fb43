#[derive(serde::Serialize, serde::Deserialize, kavari::KafkaMessage)]
struct NoTopic {
    id: String,
}

fn main() {}
