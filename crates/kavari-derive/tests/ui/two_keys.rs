#[derive(serde::Serialize, serde::Deserialize, kavari::KafkaMessage)]
#[kavari(topic = "orders")]
struct TwoKeys {
    #[kavari(key)]
    a: String,
    #[kavari(key)]
    b: String,
}

fn main() {}
