//! Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`),
//! which typed clients send: `kubectl create namespace` and `kubectl
//! create secret` do. Decoded into the JSON form for the kinds those
//! commands create (Namespace, Secret); other kinds are refused with 415.
//! The messages hold the fields of `k8s.io/api` `generated.proto` the fake
//! keeps, with their field numbers; prost skips the rest.

use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// The media type.
pub(crate) const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// Every body starts with these four bytes, then a `runtime.Unknown`.
const MAGIC: &[u8] = b"k8s\0";

#[derive(Clone, PartialEq, prost::Message)]
struct Unknown {
    #[prost(message, optional, tag = "1")]
    type_meta: Option<TypeMeta>,
    #[prost(bytes = "vec", tag = "2")]
    raw: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct TypeMeta {
    #[prost(string, tag = "1")]
    api_version: String,
    #[prost(string, tag = "2")]
    kind: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ObjectMeta {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, tag = "2")]
    generate_name: String,
    #[prost(string, tag = "3")]
    namespace: String,
    #[prost(string, tag = "6")]
    resource_version: String,
    #[prost(btree_map = "string, string", tag = "11")]
    labels: BTreeMap<String, String>,
    #[prost(btree_map = "string, string", tag = "12")]
    annotations: BTreeMap<String, String>,
    #[prost(string, repeated, tag = "14")]
    finalizers: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Namespace {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
    #[prost(message, optional, tag = "2")]
    spec: Option<NamespaceSpec>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct NamespaceSpec {
    #[prost(string, repeated, tag = "1")]
    finalizers: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Secret {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
    #[prost(btree_map = "string, bytes", tag = "2")]
    data: BTreeMap<String, Vec<u8>>,
    #[prost(string, optional, tag = "3")]
    r#type: Option<String>,
    #[prost(btree_map = "string, string", tag = "4")]
    string_data: BTreeMap<String, String>,
    #[prost(bool, optional, tag = "5")]
    immutable: Option<bool>,
}

fn metadata(m: Option<ObjectMeta>) -> Value {
    let m = m.unwrap_or_default();
    let mut out = Map::new();
    let mut put = |k: &str, v: Value| {
        out.insert(k.to_string(), v);
    };
    if !m.name.is_empty() {
        put("name", m.name.into());
    }
    if !m.generate_name.is_empty() {
        put("generateName", m.generate_name.into());
    }
    if !m.namespace.is_empty() {
        put("namespace", m.namespace.into());
    }
    if !m.resource_version.is_empty() {
        put("resourceVersion", m.resource_version.into());
    }
    if !m.labels.is_empty() {
        put("labels", json!(m.labels));
    }
    if !m.annotations.is_empty() {
        put("annotations", json!(m.annotations));
    }
    if !m.finalizers.is_empty() {
        put("finalizers", json!(m.finalizers));
    }
    Value::Object(out)
}

/// Standard base64 with padding (Secret `data` in JSON).
fn base64(bytes: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(TABLE[((n >> shift) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Why a protobuf body was not decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ProtobufError {
    /// Not a Kubernetes protobuf body (400).
    Malformed(String),
    /// A kind the fake does not decode from protobuf (415).
    Unsupported(String),
}

/// The JSON form of a protobuf body.
pub(crate) fn decode(body: &[u8]) -> Result<Value, ProtobufError> {
    let Some(rest) = body.strip_prefix(MAGIC) else {
        return Err(ProtobufError::Malformed(
            "a protobuf body must start with the k8s\\0 prefix".into(),
        ));
    };
    let bad = |e: prost::DecodeError| ProtobufError::Malformed(format!("protobuf: {e}"));
    let unknown = <Unknown as prost::Message>::decode(rest).map_err(bad)?;
    let tm = unknown.type_meta.unwrap_or_default();
    let mut obj = match (tm.api_version.as_str(), tm.kind.as_str()) {
        ("v1", "Namespace") => {
            let ns = <Namespace as prost::Message>::decode(unknown.raw.as_slice()).map_err(bad)?;
            let mut o = json!({"metadata": metadata(ns.metadata)});
            if let Some(spec) = ns.spec.filter(|s| !s.finalizers.is_empty()) {
                o["spec"] = json!({"finalizers": spec.finalizers});
            }
            o
        }
        ("v1", "Secret") => {
            let s = <Secret as prost::Message>::decode(unknown.raw.as_slice()).map_err(bad)?;
            let mut o = json!({"metadata": metadata(s.metadata)});
            if !s.data.is_empty() {
                let data: BTreeMap<&String, String> =
                    s.data.iter().map(|(k, v)| (k, base64(v))).collect();
                o["data"] = json!(data);
            }
            if !s.string_data.is_empty() {
                o["stringData"] = json!(s.string_data);
            }
            if let Some(t) = s.r#type {
                o["type"] = t.into();
            }
            if let Some(i) = s.immutable {
                o["immutable"] = i.into();
            }
            o
        }
        (v, k) => {
            return Err(ProtobufError::Unsupported(format!(
                "the fake decodes protobuf bodies of v1 Namespace and Secret only, not {v} {k}; send JSON"
            )));
        }
    };
    obj["apiVersion"] = tm.api_version.into();
    obj["kind"] = tm.kind.into();
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(kind: &str, raw: Vec<u8>) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend(prost::Message::encode_to_vec(&Unknown {
            type_meta: Some(TypeMeta {
                api_version: "v1".into(),
                kind: kind.into(),
            }),
            raw,
        }));
        out
    }

    #[test]
    fn namespaces_and_secrets_decode() {
        let ns = Namespace {
            metadata: Some(ObjectMeta {
                name: "x".into(),
                labels: BTreeMap::from([("a".into(), "b".into())]),
                ..Default::default()
            }),
            spec: None,
        };
        let got = decode(&envelope("Namespace", prost::Message::encode_to_vec(&ns)));
        assert_eq!(
            got,
            Ok(json!({"apiVersion": "v1", "kind": "Namespace",
                      "metadata": {"name": "x", "labels": {"a": "b"}}}))
        );
        let secret = Secret {
            metadata: Some(ObjectMeta {
                name: "s".into(),
                ..Default::default()
            }),
            data: BTreeMap::from([("k".into(), b"hello".to_vec())]),
            r#type: Some("Opaque".into()),
            ..Default::default()
        };
        let got =
            decode(&envelope("Secret", prost::Message::encode_to_vec(&secret))).expect("decodes");
        assert_eq!(got["data"]["k"], "aGVsbG8=");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"abc"), "YWJj");
    }

    #[test]
    fn other_bodies_are_refused() {
        assert!(matches!(decode(b"{}"), Err(ProtobufError::Malformed(_))));
        assert!(matches!(
            decode(&[b'k', b'8', b's', 0, 0xff, 0xff]),
            Err(ProtobufError::Malformed(_))
        ));
        assert!(matches!(
            decode(&envelope("Pod", Vec::new())),
            Err(ProtobufError::Unsupported(_))
        ));
    }
}
