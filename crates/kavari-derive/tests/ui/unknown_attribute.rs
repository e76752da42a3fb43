#[derive(serde::Serialize, serde::Deserialize, kavari::KafkaMessage)]
#[kavari(topic = "orders", partitions = 3)]
struct Unknown {
    #[kavari(id)]
    a: String,
}

fn main() {}
