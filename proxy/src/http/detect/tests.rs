use super::*;

#[test]
fn classifies_prefixes() {
    assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Some(Detected::Http1));
    assert_eq!(classify(b"P"), None);
    assert_eq!(classify(b"PRI * HTTP/2.0\r\n"), None);
    assert_eq!(classify(b"POST"), Some(Detected::Http1));
    assert_eq!(classify(H2_PREFACE), Some(Detected::Http2));
}

#[tokio::test]
async fn replays_what_it_read() {
    let (mut client, server) = tokio::io::duplex(64);
    tokio::io::AsyncWriteExt::write_all(&mut client, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\nrest")
        .await
        .expect("write to duplex");
    let (d, mut rewind) = detect(server, Duration::from_secs(1))
        .await
        .expect("no io error")
        .expect("detected");
    assert_eq!(d, Detected::Http2);
    let mut out = vec![0u8; H2_PREFACE.len() + 4];
    rewind.read_exact(&mut out).await.expect("replayed");
    assert_eq!(&out[..H2_PREFACE.len()], H2_PREFACE);
    assert_eq!(&out[H2_PREFACE.len()..], b"rest");
}

#[tokio::test]
async fn silence_and_partial_prefaces_time_out() {
    let (_client, server) = tokio::io::duplex(64);
    let got = detect(server, Duration::from_millis(20))
        .await
        .expect("no io error");
    assert!(got.is_none());
    let (mut client, server) = tokio::io::duplex(64);
    tokio::io::AsyncWriteExt::write_all(&mut client, b"PRI")
        .await
        .expect("write to duplex");
    let (d, _) = detect(server, Duration::from_millis(20))
        .await
        .expect("no io error")
        .expect("bytes were read");
    assert_eq!(d, Detected::Http1);
}
