//! Pieces shared by every Sluice kind: conditions, durations, retention, deletion policy,
//! storage, and the preserve-unknown-fields worker template.

use std::borrow::Cow;

use kube::KubeSchema;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// API group of every Sluice resource.
pub const GROUP: &str = "sluice.dev";
/// API version of every Sluice resource.
pub const VERSION: &str = "v1alpha1";

/// Pattern of a [`DurationString`]: one or more `<integer><unit>` terms with the units
/// `ms`, `s`, `m`, `h` and `d`, e.g. `250ms`, `30s`, `5m`, `1h30m`, `7d`.
pub const DURATION_PATTERN: &str = "^([0-9]+(ms|s|m|h|d))+$";

/// A duration written like Go or humantime durations: `250ms`, `30s`, `5m`, `1h30m`, `7d`.
///
/// Kept as the user wrote it in the spec (so nothing is rewritten on the server) and
/// parsed with [`humantime`] where it is used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DurationString(pub String);

impl DurationString {
    /// Parses the duration; the error names the field so the user knows what to fix.
    pub fn parse(&self, field: &str) -> Result<std::time::Duration, InvalidField> {
        let text = self.0.trim();
        let well_formed = !text.is_empty()
            && text.bytes().all(|b| b.is_ascii_alphanumeric())
            && text.as_bytes().first().is_some_and(u8::is_ascii_digit);
        if !well_formed {
            return Err(InvalidField::new(
                field,
                format!(
                    "{:?} is not a duration; write it like 250ms, 30s, 5m, 1h30m or 7d",
                    self.0
                ),
            ));
        }
        humantime::parse_duration(text).map_err(|e| {
            InvalidField::new(
                field,
                format!(
                    "{:?} is not a duration ({e}); write it like 250ms, 30s, 5m, 1h30m or 7d",
                    self.0
                ),
            )
        })
    }

    /// Parses the duration into whole milliseconds.
    pub fn parse_ms(&self, field: &str) -> Result<u64, InvalidField> {
        let d = self.parse(field)?;
        u64::try_from(d.as_millis())
            .map_err(|_| InvalidField::new(field, format!("{:?} is too long", self.0)))
    }
}

impl From<&str> for DurationString {
    fn from(value: &str) -> Self {
        Self(value.to_string())
    }
}

impl JsonSchema for DurationString {
    fn schema_name() -> Cow<'static, str> {
        "DurationString".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": DURATION_PATTERN,
            "maxLength": 64,
        })
    }
}

/// Pattern of a byte size (`storage.size`, `jetstream.maxMemory`, `jetstream.maxFile`): a
/// whole number above zero with an optional binary (`Ki` ... `Pi`) or decimal (`k` ... `P`)
/// suffix, as the operator converts it for nats.conf (no sign, fraction or exponent).
pub const BYTES_PATTERN: &str = "^[0-9]*[1-9][0-9]*(k|M|G|T|P|Ki|Mi|Gi|Ti|Pi)?$";

/// Pattern of a non-negative Kubernetes quantity (`resources`): Kubernetes' own quantity
/// grammar without the minus sign.
pub const NON_NEGATIVE_QUANTITY_PATTERN: &str = r"^\+?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE][+-]?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$";

/// Schema transform of a byte-size quantity field: string values must match
/// [`BYTES_PATTERN`], so `-10Gi` or `ten gigs` are rejected at admission.
pub fn byte_size(schema: &mut Schema) {
    schema.insert("pattern".into(), BYTES_PATTERN.into());
}

/// Schema transform of a field holding Kubernetes `ResourceRequirements`: every quantity
/// in it must be a non-negative quantity ([`NON_NEGATIVE_QUANTITY_PATTERN`]), so
/// `cpu: lots` is rejected at admission; the upstream essay on the quantity format is
/// replaced by one line.
pub fn non_negative_quantities(schema: &mut Schema) {
    fn walk(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                if map.get("x-kubernetes-int-or-string") == Some(&serde_json::Value::Bool(true)) {
                    map.insert("pattern".into(), NON_NEGATIVE_QUANTITY_PATTERN.into());
                    map.insert(
                        "description".into(),
                        "A quantity such as `500m`, `2`, `256Mi` or `1Gi`.".into(),
                    );
                }
                for value in map.values_mut() {
                    walk(value);
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    if let Some(obj) = schema.as_object_mut() {
        for value in obj.values_mut() {
            walk(value);
        }
    }
}

/// Schema transform for enums: drops the enum's own description so that the doc comment of
/// the field using it becomes the `kubectl explain` text (kube hoists an optional enum's
/// schema over the field's, which would otherwise replace the field's description).
pub fn field_docs_win(schema: &mut Schema) {
    schema.remove("description");
}

/// A spec field that cannot be used as written: which field and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", if field.is_empty() { "spec: ".to_string() } else { format!("spec.{field}: ") })]
pub struct InvalidField {
    /// Path below `spec`, e.g. `retry.backoffDelay`.
    pub field: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl InvalidField {
    /// An error about `field` (a path below `spec`).
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// What happens to the data on the broker when the resource is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[schemars(transform = field_docs_win)]
pub enum DeletionPolicy {
    /// Keep the streams and their messages (the default): deleting the resource never loses data.
    #[default]
    Retain,
    /// Delete the streams and every message in them together with the resource.
    Delete,
}

/// How the broker stores the messages of a topic or queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[schemars(transform = field_docs_win)]
#[serde(rename_all = "camelCase")]
pub enum StorageType {
    /// On disk (the default): survives broker restarts.
    #[default]
    File,
    /// In memory: faster, lost when a broker restarts.
    Memory,
}

impl From<StorageType> for sluice_broker::config::StorageKind {
    fn from(value: StorageType) -> Self {
        match value {
            StorageType::File => Self::File,
            StorageType::Memory => Self::Memory,
        }
    }
}

/// Limits after which the oldest messages are discarded; an unset limit means unlimited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, KubeSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct Retention {
    /// Discard messages older than this (e.g. `7d`, `12h`). Unset: no age limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('[1-9]')").message("must be longer than 0s; leave it unset for no age limit"))]
    pub max_age: Option<DurationString>,
    /// Discard the oldest messages once a stream holds more bytes than this (per partition
    /// for topics). Unset: no size limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_bytes: Option<i64>,
    /// Discard the oldest messages once a stream holds more messages than this (per
    /// partition for topics). Unset: no count limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_messages: Option<i64>,
}

impl Retention {
    /// Converts to the broker's shape, checking each limit.
    pub fn to_broker(&self, field: &str) -> Result<sluice_broker::config::Retention, InvalidField> {
        let max_age_ms = self
            .max_age
            .as_ref()
            .map(|d| d.parse_ms(&format!("{field}.maxAge")))
            .transpose()?;
        if max_age_ms == Some(0) {
            return Err(InvalidField::new(
                format!("{field}.maxAge"),
                "must be longer than 0; leave it unset for no age limit",
            ));
        }
        for (name, value) in [
            ("maxBytes", self.max_bytes),
            ("maxMessages", self.max_messages),
        ] {
            if let Some(v) = value
                && v < 1
            {
                return Err(InvalidField::new(
                    format!("{field}.{name}"),
                    format!("must be at least 1, got {v}; leave it unset for no limit"),
                ));
            }
        }
        Ok(sluice_broker::config::Retention {
            max_age_ms,
            max_bytes: self.max_bytes,
            max_messages: self.max_messages,
        })
    }
}

/// Whether a condition holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(transform = field_docs_win)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// The condition does not hold.
    False,
    /// The operator cannot tell yet.
    Unknown,
}

/// One observation about a resource, as in `metav1.Condition`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Kind of condition: `Ready`, `InvalidSpec`, `BrokerUnavailable`, `NotSupported`, ...
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: ConditionStatus,
    /// Machine-readable CamelCase reason of the last transition.
    pub reason: String,
    /// What happened and, when something is wrong, what to do about it.
    pub message: String,
    /// When the status last changed (RFC 3339).
    pub last_transition_time: String,
    /// The `metadata.generation` this condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// A pod template kept as free-form YAML in the CRD schema (so manifests stay small enough
/// for client-side `kubectl apply`); the operator decodes it into a `PodTemplateSpec` and
/// reports problems as a condition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct PodTemplate(pub serde_json::Map<String, serde_json::Value>);

impl PodTemplate {
    /// Decodes the template into the Kubernetes type.
    pub fn decode(
        &self,
        field: &str,
    ) -> Result<k8s_openapi::api::core::v1::PodTemplateSpec, InvalidField> {
        serde_json::from_value(serde_json::Value::Object(self.0.clone()))
            .map_err(|e| InvalidField::new(field, format!("is not a valid pod template: {e}")))
    }
}

impl JsonSchema for PodTemplate {
    fn schema_name() -> Cow<'static, str> {
        "PodTemplate".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_go_and_humantime_forms() {
        for (text, ms) in [
            ("250ms", 250),
            ("30s", 30_000),
            ("5m", 300_000),
            ("1h30m", 5_400_000),
            ("7d", 604_800_000),
        ] {
            assert_eq!(
                DurationString::from(text).parse_ms("x").unwrap(),
                ms,
                "{text}"
            );
        }
    }

    #[test]
    fn malformed_durations_name_the_field() {
        for text in ["", "5", "m5", "1.5h", "5 minutes", "-1s", "1x"] {
            let err = DurationString::from(text)
                .parse("retry.backoffDelay")
                .unwrap_err();
            assert_eq!(err.field, "retry.backoffDelay", "{text}");
            assert!(
                err.to_string().starts_with("spec.retry.backoffDelay:"),
                "{err}"
            );
        }
    }

    #[test]
    fn compound_durations_that_the_schema_pattern_admits_parse() {
        for s in ["1ms", "10s", "1h1m1s", "2d12h", "90m", "1s500ms"] {
            assert!(DurationString::from(s).parse("x").is_ok(), "{s}");
        }
    }

    #[test]
    fn retention_rejects_zero_limits() {
        let r = Retention {
            max_age: Some("0s".into()),
            ..Default::default()
        };
        assert_eq!(
            r.to_broker("retention").unwrap_err().field,
            "retention.maxAge"
        );
        let r = Retention {
            max_bytes: Some(0),
            ..Default::default()
        };
        assert_eq!(
            r.to_broker("retention").unwrap_err().field,
            "retention.maxBytes"
        );
    }
}
