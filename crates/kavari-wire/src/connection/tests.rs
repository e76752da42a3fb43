use super::reader::foreign_protocol;

#[test]
fn answers_in_other_protocols_are_named() {
    // A TLS 1.2 alert, as a TLS listener answers a plaintext request.
    let tls = foreign_protocol([0x15, 0x03, 0x03, 0x00]).expect("TLS");
    assert!(tls.contains("KAVARI_SECURITY_PROTOCOL=SSL"), "{tls}");
    let http = foreign_protocol(*b"HTTP").expect("HTTP");
    assert!(http.contains("HTTP, not Kafka"), "{http}");
    // A Kafka frame length, even a large one, is not another protocol.
    assert_eq!(foreign_protocol(1_000_000i32.to_be_bytes()), None);
    assert_eq!(foreign_protocol((-1i32).to_be_bytes()), None);
}

#[test]
fn sasl_sessions_are_renewed_well_before_they_end() {
    let h = Duration::from_secs(3600);
    assert_eq!(renew_within(h), h - h * 15 / 100);
    // A minute before the end when 15 % is less.
    let m = Duration::from_secs(300);
    assert_eq!(renew_within(m), Duration::from_secs(240));
    // Half of a session too short for a minute's margin.
    let s = Duration::from_secs(10);
    assert_eq!(renew_within(s), Duration::from_secs(5));
}

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

/// A peer that is not a sane broker: it reads the first request and
/// writes `answer`, then holds the connection open.
async fn peer(answer: Vec<u8>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut len = [0u8; 4];
        s.read_exact(&mut len).await.unwrap();
        let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
        s.read_exact(&mut body).await.unwrap();
        s.write_all(&answer).await.unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    address
}

async fn connect(answer: Vec<u8>) -> WireError {
    let address = peer(answer).await;
    Connection::connect(&address, "test", Duration::from_secs(2), Transport::Plain)
        .await
        .expect_err("a broken answer")
}

/// Garbage from the network is an error for the caller, never a panic or
/// a hang, and it says what was wrong.
#[tokio::test]
async fn broken_answers_are_errors_not_panics_or_hangs() {
    // A frame length of -1, and one past the 64 MiB cap.
    for len in [-1i32, i32::MAX] {
        let e = connect(len.to_be_bytes().to_vec()).await;
        assert!(e.to_string().contains("frame length"), "{e}");
    }
    // A frame too short to hold a correlation id.
    let e = connect(2i32.to_be_bytes().iter().chain(&[0, 0]).copied().collect()).await;
    assert!(e.to_string().contains("frame length"), "{e}");
    // An answer to some other request (ApiVersions was correlation id 1).
    let mut other = 8i32.to_be_bytes().to_vec();
    other.extend(77i32.to_be_bytes());
    other.extend([0, 0, 0, 0]);
    let e = connect(other).await;
    assert!(e.to_string().contains("correlation id 77"), "{e}");
    // The right correlation id with a body that does not decode.
    let mut garbage = 7i32.to_be_bytes().to_vec();
    garbage.extend(1i32.to_be_bytes());
    garbage.extend([0xff, 0xff, 0xff]);
    let e = connect(garbage).await;
    assert!(matches!(e, WireError::Malformed { .. }), "{e}");
    // Half an answer, then silence: the timeout ends it.
    let e = connect(100i32.to_be_bytes().to_vec()).await;
    assert!(matches!(e, WireError::Timeout { .. }), "{e}");
}
