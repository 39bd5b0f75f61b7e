//! The API server's errors: every rejection is an [`ApiError`], turned
//! into a `Status` response in one place ([`ApiError::status`]).

use super::kinds::Kind;
use serde_json::{Value, json};

/// The names of a kind an error message needs (small, so errors stay
/// cheap to move).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KindName {
    pub kind: &'static str,
    pub group: &'static str,
    pub plural: &'static str,
}

impl From<Kind> for KindName {
    fn from(k: Kind) -> Self {
        KindName {
            kind: k.kind,
            group: k.group,
            plural: k.plural,
        }
    }
}

impl KindName {
    /// `pods`, `networkpolicies.networking.k8s.io`.
    pub fn group_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// `Pod`, `NetworkPolicy.networking.k8s.io`.
    pub fn group_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.to_string()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }
}

/// One `details.causes` entry of an `Invalid` status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cause {
    /// `FieldValueInvalid`, `FieldValueRequired`...
    pub reason: &'static str,
    pub message: String,
    pub field: String,
}

impl Cause {
    pub fn invalid(field: &str, value: &str, detail: &str) -> Cause {
        Cause {
            reason: "FieldValueInvalid",
            message: format!("Invalid value: {value:?}: {detail}"),
            field: field.into(),
        }
    }

    pub fn required(field: &str, detail: &str) -> Cause {
        Cause {
            reason: "FieldValueRequired",
            message: format!("Required value: {detail}"),
            field: field.into(),
        }
    }
}

/// A rejected request, as kube-apiserver words it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ApiError {
    /// `pods "a" not found`.
    #[error("{} \"{name}\" not found", kind.group_resource())]
    NotFound { kind: KindName, name: String },
    /// A URL that names nothing the server serves.
    #[error("the server could not find the requested resource")]
    NoRoute,
    #[error("{} \"{name}\" already exists", kind.group_resource())]
    AlreadyExists { kind: KindName, name: String },
    #[error(
        "Operation cannot be fulfilled on {} \"{name}\": {detail}",
        kind.group_resource()
    )]
    Conflict {
        kind: KindName,
        name: String,
        detail: String,
    },
    #[error("{0}")]
    BadRequest(String),
    /// `Pod "a" is invalid: metadata.name: Invalid value: ...`.
    #[error("{} \"{name}\" is invalid: {}", kind.group_kind(), invalid_summary(causes, message))]
    Invalid {
        kind: KindName,
        name: String,
        causes: Vec<Cause>,
        /// Replaces the causes' summary in the message (the validator's
        /// own words).
        message: Option<String>,
    },
    /// A well-formed patch that does not apply to the object (422, as the
    /// real server's generic "unprocessable" response).
    #[error("{0}")]
    PatchDoesNotApply(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    MethodNotSupported(String),
    #[error("{0}")]
    RequestEntityTooLarge(String),
    #[error("{0}")]
    Internal(String),
}

fn invalid_summary(causes: &[Cause], message: &Option<String>) -> String {
    if let Some(m) = message {
        return m.clone();
    }
    let each: Vec<String> = causes
        .iter()
        .map(|c| {
            if c.field.is_empty() {
                c.message.clone()
            } else {
                format!("{}: {}", c.field, c.message)
            }
        })
        .collect();
    match each.as_slice() {
        [one] => one.clone(),
        many => format!("[{}]", many.join(", ")),
    }
}

impl ApiError {
    pub fn code(&self) -> u16 {
        match self {
            ApiError::NotFound { .. } | ApiError::NoRoute => 404,
            ApiError::AlreadyExists { .. } | ApiError::Conflict { .. } => 409,
            ApiError::BadRequest(_) => 400,
            ApiError::Invalid { .. } | ApiError::PatchDoesNotApply(_) => 422,
            ApiError::UnsupportedMediaType(_) => 415,
            ApiError::MethodNotSupported(_) => 405,
            ApiError::RequestEntityTooLarge(_) => 413,
            ApiError::Internal(_) => 500,
        }
    }

    pub fn reason(&self) -> &'static str {
        match self {
            ApiError::NotFound { .. } | ApiError::NoRoute => "NotFound",
            ApiError::AlreadyExists { .. } => "AlreadyExists",
            ApiError::Conflict { .. } => "Conflict",
            ApiError::BadRequest(_) => "BadRequest",
            ApiError::Invalid { .. } | ApiError::PatchDoesNotApply(_) => "Invalid",
            ApiError::UnsupportedMediaType(_) => "UnsupportedMediaType",
            ApiError::MethodNotSupported(_) => "MethodNotAllowed",
            ApiError::RequestEntityTooLarge(_) => "RequestEntityTooLarge",
            ApiError::Internal(_) => "InternalError",
        }
    }

    /// The `details` of the status, where the real server gives some.
    fn details(&self) -> Option<Value> {
        let resource = |kind: &KindName, name: &str| {
            let mut d = json!({"name": name, "kind": kind.plural});
            if !kind.group.is_empty() {
                d["group"] = kind.group.into();
            }
            d
        };
        match self {
            ApiError::NotFound { kind, name }
            | ApiError::AlreadyExists { kind, name }
            | ApiError::Conflict { kind, name, .. } => Some(resource(kind, name)),
            ApiError::Invalid {
                kind, name, causes, ..
            } => {
                let mut d = json!({
                    "name": name, "kind": kind.kind,
                    "causes": causes.iter().map(|c| json!({
                        "reason": c.reason, "message": c.message, "field": c.field,
                    })).collect::<Vec<_>>(),
                });
                if !kind.group.is_empty() {
                    d["group"] = kind.group.into();
                }
                Some(d)
            }
            ApiError::PatchDoesNotApply(m) => Some(json!({"causes": [{"message": m}]})),
            _ => None,
        }
    }

    /// The `Status` object.
    pub fn status(&self) -> Value {
        let mut s = status_object(self.code(), self.reason(), &self.to_string());
        if let Some(d) = self.details() {
            s["details"] = d;
        }
        s
    }
}

/// A failure `Status` without details.
pub(crate) fn status_object(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code
    })
}
