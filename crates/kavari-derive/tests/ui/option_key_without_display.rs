#[derive(serde::Serialize, serde::Deserialize, kavari::KafkaMessage)]
#[kavari(topic = "orders")]
struct OptionalVecKey {
    #[kavari(key)]
    a: Option<Vec<u8>>,
}

fn main() {}
