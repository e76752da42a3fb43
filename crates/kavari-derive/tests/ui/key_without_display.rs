#[derive(serde::Serialize, serde::Deserialize, kavari::KafkaMessage)]
#[kavari(topic = "orders")]
struct KeyIsVec {
    #[kavari(key)]
    a: Vec<u8>,
}

fn main() {}
