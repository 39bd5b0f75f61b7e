use super::*;

/// A ClientHello record with the given extensions body.
fn hello(version: [u8; 2], exts: Option<Vec<u8>>) -> Vec<u8> {
    let mut body = vec![3, 3];
    body.extend([7u8; 32]);
    body.push(0); // session id
    body.extend([0, 2, 0x13, 0x01]); // one cipher suite
    body.extend([1, 0]); // null compression
    if let Some(e) = exts {
        body.extend((e.len() as u16).to_be_bytes());
        body.extend(e);
    }
    let mut hs = vec![1];
    hs.extend(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend(body);
    let mut rec = vec![0x16, version[0], version[1]];
    rec.extend((hs.len() as u16).to_be_bytes());
    rec.extend(hs);
    rec
}

fn sni_ext(name: &[u8]) -> Vec<u8> {
    let mut entry = vec![0];
    entry.extend((name.len() as u16).to_be_bytes());
    entry.extend(name);
    let mut list = (entry.len() as u16).to_be_bytes().to_vec();
    list.extend(entry);
    let mut ext = vec![0, 0];
    ext.extend((list.len() as u16).to_be_bytes());
    ext.extend(list);
    ext
}

#[test]
fn reads_sni_of_every_record_version() {
    for v in [[3, 0], [3, 1], [3, 2], [3, 3]] {
        let mut exts = vec![0, 10, 0, 2, 0, 29]; // another extension first
        exts.extend(sni_ext(b"Api.Example.com"));
        assert_eq!(
            parse(&hello(v, Some(exts))),
            Hello::ClientHello {
                sni: Some("api.example.com".into())
            }
        );
    }
}

#[test]
fn no_extensions_or_no_sni() {
    assert_eq!(
        parse(&hello([3, 1], None)),
        Hello::ClientHello { sni: None }
    );
    assert_eq!(
        parse(&hello([3, 3], Some(vec![0, 10, 0, 2, 0, 29]))),
        Hello::ClientHello { sni: None }
    );
}

#[test]
fn incomplete_until_the_whole_hello_is_there() {
    let full = hello([3, 3], Some(sni_ext(b"a.test")));
    for n in 1..full.len() {
        assert_eq!(parse(&full[..n]), Hello::Incomplete, "prefix {n}");
    }
}

#[test]
fn hello_split_over_two_records() {
    let full = hello([3, 3], Some(sni_ext(b"split.test")));
    let hs = &full[5..];
    let (a, b) = hs.split_at(20);
    let mut two = vec![0x16, 3, 3];
    two.extend((a.len() as u16).to_be_bytes());
    two.extend(a);
    two.extend([0x16, 3, 3]);
    two.extend((b.len() as u16).to_be_bytes());
    two.extend(b);
    assert_eq!(
        parse(&two),
        Hello::ClientHello {
            sni: Some("split.test".into())
        }
    );
}

#[test]
fn a_list_of_several_names_is_refused() {
    let mut exts = Vec::new();
    let mut list = Vec::new();
    for name in [&b"api.test"[..], b"admin.test"] {
        list.push(0);
        list.extend((name.len() as u16).to_be_bytes());
        list.extend(name);
    }
    exts.extend([0, 0]);
    exts.extend(((list.len() + 2) as u16).to_be_bytes());
    exts.extend((list.len() as u16).to_be_bytes());
    exts.extend(list);
    assert_eq!(parse(&hello([3, 3], Some(exts))), Hello::SeveralServerNames);
}

#[test]
fn plaintext_and_garbage() {
    assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Hello::NotTls);
    assert!(matches!(parse(&[0x16, 9, 9, 0, 1, 0]), Hello::Malformed(_)));
    assert!(matches!(parse(&[0x16, 3, 1, 0, 0]), Hello::Malformed(_)));
    // A ServerHello is not a ClientHello.
    let mut h = hello([3, 3], None);
    h[5] = 2;
    assert!(matches!(parse(&h), Hello::Malformed(_)));
    // A name with a NUL or a slash is refused.
    assert!(matches!(
        parse(&hello([3, 3], Some(sni_ext(b"a\0b")))),
        Hello::Malformed(_)
    ));
    // An extension length past the end.
    let mut bad = sni_ext(b"a.test");
    bad[3] = 200;
    assert!(matches!(
        parse(&hello([3, 3], Some(bad))),
        Hello::Malformed(_)
    ));
}

#[test]
fn truncations_and_corruptions_never_panic() {
    let full = hello([3, 3], Some(sni_ext(b"fuzz.example")));
    let mut seed = 0x2545f4914f6cdd1du64;
    for _ in 0..20000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let mut b = full.clone();
        let i = (seed as usize) % b.len();
        b[i] = (seed >> 32) as u8;
        let n = ((seed >> 16) as usize) % (b.len() + 1);
        let _ = parse(&b[..n]);
    }
}
