#[derive(serde::Serialize, serde::Deserialize, kavari::KafkaMessage)]
#[kavari(topic = "greetings", codec = "text")]
struct Greeting {
    text: String,
}

#[derive(serde::Serialize, serde::Deserialize, kavari::KafkaMessage)]
#[kavari(topic = "greetings", codec = "avro")]
struct Unknown(String);

fn main() {}
