//! Root-only: the `Netns` guard makes a namespace with loopback up, runs
//! code (and a tokio runtime) inside it, and removes it on drop. Prints
//! SKIP and passes when not root.

use portcullis_lab::netns::{self, Netns, root_or_skip};

fn interfaces() -> Vec<String> {
    nix::net::if_::if_nameindex()
        .expect("if_nameindex")
        .iter()
        .map(|i| i.name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn a_namespace_of_its_own_is_used_and_removed_on_drop() {
    if !root_or_skip("netns guard") {
        return;
    }
    let ns = Netns::unique("pclabtest").expect("make namespace");
    let name = ns.name().to_string();
    assert!(netns::list().contains(&name));
    ns.ip(&[
        "link", "add", "pclab0", "type", "veth", "peer", "name", "pclab1",
    ])
    .expect("add a link");
    // Borrowing from the caller is allowed: the thread is scoped.
    let want = "pclab0".to_string();
    let inside = ns
        .run(|| (interfaces(), interfaces().contains(&want)))
        .expect("run");
    assert_eq!(
        inside.0.len(),
        3,
        "lo and the veth pair only: {:?}",
        inside.0
    );
    assert!(inside.1);
    assert!(!interfaces().contains(&want), "the caller did not move");
    let port = ns
        .block_on(|| async {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = l.local_addr().expect("addr");
            let accept = tokio::spawn(async move { l.accept().await.map(|_| ()) });
            tokio::net::TcpStream::connect(addr)
                .await
                .expect("loopback is up");
            accept.await.expect("join").expect("accept");
            addr.port()
        })
        .expect("block_on");
    assert!(port > 0);
    drop(ns);
    assert!(!netns::list().contains(&name), "{name} left behind");
}
