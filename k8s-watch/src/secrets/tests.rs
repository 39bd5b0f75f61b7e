use super::*;
use k8s_openapi::ByteString;
use kube::api::ObjectMeta;

fn secret(ns: &str, name: &str, items: &[(&str, &str)]) -> Secret {
    Secret {
        metadata: ObjectMeta {
            namespace: Some(ns.into()),
            name: Some(name.into()),
            ..Default::default()
        },
        data: Some(
            items
                .iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Default::default()
    }
}

#[test]
fn applies_deletes_and_relists() {
    let mut t = SecretTable::default();
    let set = t.on_event(watcher::Event::Apply(secret(
        "a",
        "s1",
        &[("tls.crt", "x")],
    )));
    assert_eq!(
        set,
        vec![SecretChange::Set {
            namespace: "a".into(),
            name: "s1".into(),
            data: [("tls.crt".to_string(), b"x".to_vec())].into()
        }]
    );
    t.on_event(watcher::Event::Apply(secret("a", "s2", &[])));
    assert_eq!(
        t.on_event(watcher::Event::Delete(secret("a", "s2", &[]))),
        vec![SecretChange::Remove {
            namespace: "a".into(),
            name: "s2".into()
        }]
    );
    // A relist that no longer has s1 removes it.
    t.on_event(watcher::Event::Apply(secret("b", "s3", &[])));
    assert!(t.on_event(watcher::Event::Init).is_empty());
    assert_eq!(
        t.on_event(watcher::Event::InitApply(secret(
            "b",
            "s3",
            &[("ca.crt", "c")]
        )))
        .len(),
        1
    );
    assert_eq!(
        t.on_event(watcher::Event::InitDone),
        vec![SecretChange::Remove {
            namespace: "a".into(),
            name: "s1".into()
        }]
    );
}

#[cfg(feature = "fake")]
#[tokio::test]
async fn follows_secrets_of_the_fake_api_server() {
    use std::sync::{Arc, Mutex};
    let (_url, api) = crate::fake::FakeApiServer::start().await.expect("fake");
    api.apply(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"namespace": "shop", "name": "term"},
        "type": "kubernetes.io/tls",
        "data": {"tls.crt": "Y2VydA==", "tls.key": "a2V5"}
    }))
    .expect("apply");
    let seen: Arc<Mutex<Vec<SecretChange>>> = Arc::default();
    let sink = seen.clone();
    let _task = watch_secrets(api.client(), move |c| sink.lock().expect("lock").push(c));
    let wait = |n: usize| {
        let seen = seen.clone();
        async move {
            for _ in 0..200 {
                if seen.lock().expect("lock").len() >= n {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            panic!("only {:?}", seen.lock().expect("lock"));
        }
    };
    wait(1).await;
    assert_eq!(
        seen.lock().expect("lock")[0],
        SecretChange::Set {
            namespace: "shop".into(),
            name: "term".into(),
            data: [
                ("tls.crt".to_string(), b"cert".to_vec()),
                ("tls.key".to_string(), b"key".to_vec())
            ]
            .into()
        }
    );
    api.delete("Secret", Some("shop"), "term").expect("delete");
    wait(2).await;
    assert_eq!(
        seen.lock().expect("lock")[1],
        SecretChange::Remove {
            namespace: "shop".into(),
            name: "term".into()
        }
    );
}
