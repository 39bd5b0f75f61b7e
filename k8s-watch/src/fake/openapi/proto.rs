//! The v2 document as gnostic's `openapi.v2.Document` protobuf, which
//! kubectl before 1.27 fetches for client-side validation. The messages
//! hold the fields the fake fills, with the field numbers of gnostic's
//! `OpenAPIv2.proto`; each `oneof` is written as its optional members
//! (the same bytes on the wire).

use serde_json::Value;

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Document {
    #[prost(string, tag = "1")]
    pub swagger: String,
    #[prost(message, optional, tag = "2")]
    pub info: Option<Info>,
    #[prost(message, optional, tag = "8")]
    pub paths: Option<Paths>,
    #[prost(message, optional, tag = "9")]
    pub definitions: Option<Definitions>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Info {
    #[prost(string, tag = "1")]
    pub title: String,
    #[prost(string, tag = "2")]
    pub version: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Paths {
    #[prost(message, repeated, tag = "2")]
    pub path: Vec<NamedPathItem>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct NamedPathItem {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<PathItem>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct PathItem {
    #[prost(message, optional, tag = "2")]
    pub get: Option<Operation>,
    #[prost(message, optional, tag = "3")]
    pub put: Option<Operation>,
    #[prost(message, optional, tag = "4")]
    pub post: Option<Operation>,
    #[prost(message, optional, tag = "5")]
    pub delete: Option<Operation>,
    #[prost(message, optional, tag = "8")]
    pub patch: Option<Operation>,
    #[prost(message, repeated, tag = "9")]
    pub parameters: Vec<ParametersItem>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Operation {
    #[prost(string, tag = "5")]
    pub operation_id: String,
    #[prost(string, repeated, tag = "6")]
    pub produces: Vec<String>,
    #[prost(string, repeated, tag = "7")]
    pub consumes: Vec<String>,
    #[prost(message, repeated, tag = "8")]
    pub parameters: Vec<ParametersItem>,
    #[prost(message, optional, tag = "9")]
    pub responses: Option<Responses>,
    #[prost(message, repeated, tag = "13")]
    pub vendor_extension: Vec<NamedAny>,
}

/// `oneof { Parameter parameter = 1; JsonReference json_reference = 2; }`
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ParametersItem {
    #[prost(message, optional, tag = "1")]
    pub parameter: Option<Parameter>,
}

/// `oneof { BodyParameter body_parameter = 1; NonBodyParameter non_body_parameter = 2; }`
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Parameter {
    #[prost(message, optional, tag = "1")]
    pub body_parameter: Option<BodyParameter>,
    #[prost(message, optional, tag = "2")]
    pub non_body_parameter: Option<NonBodyParameter>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct BodyParameter {
    #[prost(string, tag = "1")]
    pub description: String,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(string, tag = "3")]
    pub r#in: String,
    #[prost(bool, tag = "4")]
    pub required: bool,
    #[prost(message, optional, tag = "5")]
    pub schema: Option<Schema>,
}

/// `oneof { ... QueryParameterSubSchema query = 3; PathParameterSubSchema path = 4; }`
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct NonBodyParameter {
    #[prost(message, optional, tag = "3")]
    pub query_parameter_sub_schema: Option<QueryParameterSubSchema>,
    #[prost(message, optional, tag = "4")]
    pub path_parameter_sub_schema: Option<PathParameterSubSchema>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct QueryParameterSubSchema {
    #[prost(bool, tag = "1")]
    pub required: bool,
    #[prost(string, tag = "2")]
    pub r#in: String,
    #[prost(string, tag = "3")]
    pub description: String,
    #[prost(string, tag = "4")]
    pub name: String,
    #[prost(string, tag = "6")]
    pub r#type: String,
    #[prost(bool, tag = "20")]
    pub unique_items: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct PathParameterSubSchema {
    #[prost(bool, tag = "1")]
    pub required: bool,
    #[prost(string, tag = "2")]
    pub r#in: String,
    #[prost(string, tag = "3")]
    pub description: String,
    #[prost(string, tag = "4")]
    pub name: String,
    #[prost(string, tag = "5")]
    pub r#type: String,
    #[prost(bool, tag = "19")]
    pub unique_items: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Responses {
    #[prost(message, repeated, tag = "1")]
    pub response_code: Vec<NamedResponseValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct NamedResponseValue {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<ResponseValue>,
}

/// `oneof { Response response = 1; JsonReference json_reference = 2; }`
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ResponseValue {
    #[prost(message, optional, tag = "1")]
    pub response: Option<Response>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Response {
    #[prost(string, tag = "1")]
    pub description: String,
    #[prost(message, optional, tag = "2")]
    pub schema: Option<SchemaItem>,
}

/// `oneof { Schema schema = 1; FileSchema file_schema = 2; }`
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct SchemaItem {
    #[prost(message, optional, tag = "1")]
    pub schema: Option<Schema>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Definitions {
    #[prost(message, repeated, tag = "1")]
    pub additional_properties: Vec<NamedSchema>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct NamedSchema {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<Schema>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Schema {
    #[prost(string, tag = "1")]
    pub reference: String,
    #[prost(string, tag = "2")]
    pub format: String,
    #[prost(string, tag = "4")]
    pub description: String,
    #[prost(string, repeated, tag = "19")]
    pub required: Vec<String>,
    #[prost(message, optional, boxed, tag = "21")]
    pub additional_properties: Option<Box<AdditionalPropertiesItem>>,
    #[prost(message, optional, tag = "22")]
    pub r#type: Option<TypeItem>,
    #[prost(message, optional, tag = "23")]
    pub items: Option<ItemsItem>,
    #[prost(message, optional, tag = "25")]
    pub properties: Option<Properties>,
    #[prost(message, repeated, tag = "31")]
    pub vendor_extension: Vec<NamedAny>,
}

/// `oneof { Schema schema = 1; bool boolean = 2; }`
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct AdditionalPropertiesItem {
    #[prost(message, optional, tag = "1")]
    pub schema: Option<Schema>,
    #[prost(bool, optional, tag = "2")]
    pub boolean: Option<bool>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct TypeItem {
    #[prost(string, repeated, tag = "1")]
    pub value: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ItemsItem {
    #[prost(message, repeated, tag = "1")]
    pub schema: Vec<Schema>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Properties {
    #[prost(message, repeated, tag = "1")]
    pub additional_properties: Vec<NamedSchema>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct NamedAny {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<Any>,
}

/// gnostic's `Any`: the value as YAML text (field 2); JSON is YAML.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Any {
    #[prost(string, tag = "2")]
    pub yaml: String,
}

fn text(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn strings(v: &Value, key: &str) -> Vec<String> {
    v.get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn extensions(v: &Value) -> Vec<NamedAny> {
    v.as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.starts_with("x-"))
        .map(|(k, v)| NamedAny {
            name: k.clone(),
            value: Some(Any {
                yaml: v.to_string(),
            }),
        })
        .collect()
}

fn schema(v: &Value) -> Schema {
    let additional_properties = match v.get("additionalProperties") {
        Some(Value::Bool(b)) => Some(Box::new(AdditionalPropertiesItem {
            schema: None,
            boolean: Some(*b),
        })),
        Some(s @ Value::Object(_)) => Some(Box::new(AdditionalPropertiesItem {
            schema: Some(schema(s)),
            boolean: None,
        })),
        _ => None,
    };
    Schema {
        reference: text(v, "$ref"),
        format: text(v, "format"),
        description: text(v, "description"),
        required: strings(v, "required"),
        additional_properties,
        r#type: v.get("type").and_then(Value::as_str).map(|t| TypeItem {
            value: vec![t.to_string()],
        }),
        items: v.get("items").map(|i| ItemsItem {
            schema: vec![schema(i)],
        }),
        properties: v
            .get("properties")
            .and_then(Value::as_object)
            .map(|p| Properties {
                additional_properties: p
                    .iter()
                    .map(|(name, s)| NamedSchema {
                        name: name.clone(),
                        value: Some(schema(s)),
                    })
                    .collect(),
            }),
        vendor_extension: extensions(v),
    }
}

fn parameter(p: &Value) -> ParametersItem {
    let parameter = if p.get("in").and_then(Value::as_str) == Some("body") {
        Parameter {
            body_parameter: Some(BodyParameter {
                description: text(p, "description"),
                name: text(p, "name"),
                r#in: "body".into(),
                required: p.get("required").and_then(Value::as_bool).unwrap_or(false),
                schema: p.get("schema").map(schema),
            }),
            non_body_parameter: None,
        }
    } else {
        let required = p.get("required").and_then(Value::as_bool).unwrap_or(false);
        let unique_items = p
            .get("uniqueItems")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let non_body = if p.get("in").and_then(Value::as_str) == Some("path") {
            NonBodyParameter {
                query_parameter_sub_schema: None,
                path_parameter_sub_schema: Some(PathParameterSubSchema {
                    required,
                    r#in: "path".into(),
                    description: text(p, "description"),
                    name: text(p, "name"),
                    r#type: text(p, "type"),
                    unique_items,
                }),
            }
        } else {
            NonBodyParameter {
                query_parameter_sub_schema: Some(QueryParameterSubSchema {
                    required,
                    r#in: "query".into(),
                    description: text(p, "description"),
                    name: text(p, "name"),
                    r#type: text(p, "type"),
                    unique_items,
                }),
                path_parameter_sub_schema: None,
            }
        };
        Parameter {
            body_parameter: None,
            non_body_parameter: Some(non_body),
        }
    };
    ParametersItem {
        parameter: Some(parameter),
    }
}

fn parameters(v: &Value) -> Vec<ParametersItem> {
    v.get("parameters")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(parameter).collect())
        .unwrap_or_default()
}

fn operation(v: Option<&Value>) -> Option<Operation> {
    let v = v?;
    Some(Operation {
        operation_id: text(v, "operationId"),
        produces: strings(v, "produces"),
        consumes: strings(v, "consumes"),
        parameters: parameters(v),
        responses: v
            .get("responses")
            .and_then(Value::as_object)
            .map(|r| Responses {
                response_code: r
                    .iter()
                    .map(|(code, resp)| NamedResponseValue {
                        name: code.clone(),
                        value: Some(ResponseValue {
                            response: Some(Response {
                                description: text(resp, "description"),
                                schema: resp.get("schema").map(|s| SchemaItem {
                                    schema: Some(schema(s)),
                                }),
                            }),
                        }),
                    })
                    .collect(),
            }),
        vendor_extension: extensions(v),
    })
}

/// The protobuf form of a v2 JSON document.
pub(crate) fn document(doc: &Value) -> Document {
    Document {
        swagger: text(doc, "swagger"),
        info: doc.get("info").map(|i| Info {
            title: text(i, "title"),
            version: text(i, "version"),
        }),
        paths: doc.get("paths").and_then(Value::as_object).map(|p| Paths {
            path: p
                .iter()
                .map(|(name, item)| NamedPathItem {
                    name: name.clone(),
                    value: Some(PathItem {
                        get: operation(item.get("get")),
                        put: operation(item.get("put")),
                        post: operation(item.get("post")),
                        delete: operation(item.get("delete")),
                        patch: operation(item.get("patch")),
                        parameters: parameters(item),
                    }),
                })
                .collect(),
        }),
        definitions: doc
            .get("definitions")
            .and_then(Value::as_object)
            .map(|d| Definitions {
                additional_properties: d
                    .iter()
                    .map(|(name, s)| NamedSchema {
                        name: name.clone(),
                        value: Some(schema(s)),
                    })
                    .collect(),
            }),
    }
}

/// The encoded document.
pub(crate) fn encode(doc: &Value) -> Vec<u8> {
    prost::Message::encode_to_vec(&document(doc))
}
