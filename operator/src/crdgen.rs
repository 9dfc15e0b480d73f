//! Renders the CustomResourceDefinitions from the Rust types: one YAML file per kind, named
//! `<plural>.yaml`, written to `crds/` and `charts/sluice/crds/` by `sluice crds`. A test
//! regenerates them in memory and fails when the committed files drift.

use std::path::{Path, PathBuf};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use kube::CustomResourceExt;

use crate::crd::{Broker, ConsumerGroup, DeadLetterQueue, Queue, Topic};

/// Directories (relative to the repository root) that hold the generated CRDs.
pub const CRD_DIRS: [&str; 2] = ["crds", "charts/sluice/crds"];

/// The command that regenerates the files, for error messages.
pub const REGENERATE_COMMAND: &str = "cargo run -p sluice-operator --bin sluice -- crds";

const HEADER: &str =
    "# Generated from the Rust types in operator/src/crd by `sluice crds`; do not edit.\n";

/// Errors of CRD generation.
#[derive(Debug, thiserror::Error)]
pub enum CrdGenError {
    /// A CRD could not be serialized.
    #[error("failed to render the {kind} CRD as YAML: {source}")]
    Render {
        /// Kind being rendered.
        kind: String,
        /// Serializer error.
        source: serde_yaml::Error,
    },
    /// A file could not be written.
    #[error("failed to write {}: {source}", path.display())]
    Write {
        /// File or directory.
        path: PathBuf,
        /// I/O error.
        source: std::io::Error,
    },
}

/// One rendered CRD file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrdFile {
    /// File name, `<plural>.yaml`.
    pub file_name: String,
    /// YAML text, with a header saying it is generated.
    pub yaml: String,
}

/// Category of every Sluice kind: `kubectl get sluice` lists them all.
pub const CATEGORY: &str = "sluice";

/// The CRDs of every Sluice kind, in category [`CATEGORY`], with descriptions as
/// `kubectl explain` should print them (see [`unwrap_descriptions`]).
pub fn all_crds() -> Vec<CustomResourceDefinition> {
    let mut crds = vec![
        Broker::crd(),
        Topic::crd(),
        Queue::crd(),
        DeadLetterQueue::crd(),
        ConsumerGroup::crd(),
    ];
    for crd in &mut crds {
        crd.spec.names.categories = Some(vec![CATEGORY.to_string()]);
        for version in &mut crd.spec.versions {
            if let Some(schema) = version
                .schema
                .as_mut()
                .and_then(|s| s.open_api_v3_schema.as_mut())
            {
                unwrap_descriptions(schema);
            }
        }
    }
    crds
}

/// Joins the lines of each paragraph of every description: doc comments are wrapped at 100
/// columns in the source, and `kubectl explain` re-wraps text itself, so a kept line break
/// shows up as a ragged break in the middle of a sentence. Paragraph breaks (blank lines)
/// and paragraphs that are lists or code stay as written.
pub fn unwrap_descriptions(schema: &mut JSONSchemaProps) {
    if let Some(d) = schema.description.as_mut() {
        *d = unwrap_text(d);
    }
    let children = schema
        .properties
        .iter_mut()
        .flat_map(|p| p.values_mut())
        .chain(schema.items.iter_mut().filter_map(|i| match i {
            JSONSchemaPropsOrArray::Schema(s) => Some(s.as_mut()),
            JSONSchemaPropsOrArray::Schemas(_) => None,
        }))
        .chain(
            schema
                .additional_properties
                .iter_mut()
                .filter_map(|a| match a {
                    JSONSchemaPropsOrBool::Schema(s) => Some(s.as_mut()),
                    JSONSchemaPropsOrBool::Bool(_) => None,
                }),
        );
    for child in children {
        unwrap_descriptions(child);
    }
}

fn unwrap_text(text: &str) -> String {
    text.split("\n\n")
        .map(|paragraph| {
            let structured = paragraph.lines().any(|l| {
                let l = l.trim_start();
                l.starts_with("- ") || l.starts_with("* ") || l.starts_with("```")
            });
            if structured {
                paragraph.to_string()
            } else {
                paragraph
                    .lines()
                    .map(str::trim)
                    .collect::<Vec<_>>()
                    .join(" ")
            }
        })
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// Renders one CRD as a YAML file.
pub fn render(crd: &CustomResourceDefinition) -> Result<CrdFile, CrdGenError> {
    let body = serde_yaml::to_string(crd).map_err(|source| CrdGenError::Render {
        kind: crd.spec.names.kind.clone(),
        source,
    })?;
    Ok(CrdFile {
        file_name: format!("{}.yaml", crd.spec.names.plural),
        yaml: format!("{HEADER}{body}"),
    })
}

/// Renders every CRD.
pub fn render_all() -> Result<Vec<CrdFile>, CrdGenError> {
    all_crds().iter().map(render).collect()
}

/// Writes every CRD file into `dir` (created if missing); returns the paths written.
pub fn write_all(dir: &Path) -> Result<Vec<PathBuf>, CrdGenError> {
    std::fs::create_dir_all(dir).map_err(|source| CrdGenError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut written = Vec::new();
    for file in render_all()? {
        let path = dir.join(&file.file_name);
        std::fs::write(&path, &file.yaml).map_err(|source| CrdGenError::Write {
            path: path.clone(),
            source,
        })?;
        written.push(path);
    }
    Ok(written)
}

/// Files in `dir` that are missing or differ from what the types render.
pub fn drift(dir: &Path) -> Result<Vec<PathBuf>, CrdGenError> {
    let mut stale = Vec::new();
    for file in render_all()? {
        let path = dir.join(&file.file_name);
        match std::fs::read_to_string(&path) {
            Ok(current) if current == file.yaml => {}
            _ => stale.push(path),
        }
    }
    Ok(stale)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn schema_of(crd: &CustomResourceDefinition) -> Value {
        serde_json::to_value(&crd.spec.versions[0].schema).unwrap()["openAPIV3Schema"].clone()
    }

    fn rules(v: &Value) -> Vec<String> {
        v["x-kubernetes-validations"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|r| r["rule"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn committed_crds_match_the_types() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        for dir in CRD_DIRS {
            let stale = drift(&root.join(dir)).unwrap();
            assert!(
                stale.is_empty(),
                "generated CRDs are out of date: {stale:?}; run `{REGENERATE_COMMAND}` from the repository root and commit the result"
            );
        }
    }

    #[test]
    fn every_kind_is_namespaced_in_sluice_dev_with_status_and_columns() {
        let crds = all_crds();
        assert_eq!(crds.len(), 5);
        for crd in &crds {
            assert_eq!(crd.spec.group, "sluice.dev");
            assert_eq!(crd.spec.scope, "Namespaced");
            let v = &crd.spec.versions[0];
            assert_eq!(v.name, "v1alpha1");
            assert!(
                v.subresources.as_ref().unwrap().status.is_some(),
                "{}",
                crd.spec.names.kind
            );
            let cols = v.additional_printer_columns.as_ref().unwrap();
            assert!(
                cols.iter().any(|c| c.name == "Ready"),
                "{}",
                crd.spec.names.kind
            );
            let status = &schema_of(crd)["properties"]["status"]["properties"];
            assert!(status["conditions"].is_object(), "{}", crd.spec.names.kind);
            assert!(
                status["observedGeneration"].is_object(),
                "{}",
                crd.spec.names.kind
            );
        }
        let short: Vec<_> = crds
            .iter()
            .map(|c| c.spec.names.short_names.clone().unwrap()[0].clone())
            .collect();
        assert_eq!(short, ["sbroker", "topic", "q", "dlq", "cg"]);
    }

    #[test]
    fn invariants_are_cel_rules_in_the_schema() {
        let topic = schema_of(&Topic::crd());
        let spec = &topic["properties"]["spec"]["properties"];
        assert_eq!(rules(&spec["partitions"]), ["self >= oldSelf"]);
        assert_eq!(rules(&spec["broker"]), ["self == oldSelf"]);
        assert_eq!(rules(&spec["replicas"]), ["self in [1, 3, 5]"]);
        assert_eq!(
            spec["duplicateWindow"]["pattern"],
            crate::crd::common::DURATION_PATTERN
        );

        let group = schema_of(&ConsumerGroup::crd());
        let gspec = &group["properties"]["spec"];
        assert!(rules(gspec)[0].contains("self.broker == oldSelf.broker"));
        let props = &gspec["properties"];
        assert_eq!(
            rules(&props["source"]).len(),
            2,
            "exactly-one and immutability"
        );
        assert!(rules(&props["autoscaling"])[0].contains("minReplicas <= self.maxReplicas"));
        assert_eq!(
            rules(&props["retry"]["properties"]["maxAttempts"]),
            ["self >= 1"]
        );
        let template = &props["template"];
        assert_eq!(template["type"], "object");
        assert_eq!(template["x-kubernetes-preserve-unknown-fields"], true);
        assert!(
            template.get("properties").is_none(),
            "template must stay unexpanded"
        );
    }

    fn at<'a>(v: &'a Value, path: &str) -> &'a Value {
        path.split('.').fold(v, |v, seg| &v["properties"][seg])
    }

    #[test]
    fn zero_durations_are_rejected_at_admission_naming_the_field() {
        let positive = regex::Regex::new("[1-9]").unwrap();
        let form = regex::Regex::new(crate::crd::common::DURATION_PATTERN).unwrap();
        for (zero, ok) in [
            ("0s", "30s"),
            ("0ms", "250ms"),
            ("0h0m", "0h5m"),
            ("00d", "10s"),
        ] {
            assert!(form.is_match(zero) && !positive.is_match(zero), "{zero}");
            assert!(form.is_match(ok) && positive.is_match(ok), "{ok}");
        }
        let cases = [
            (schema_of(&Topic::crd()), "spec.retention.maxAge"),
            (schema_of(&Topic::crd()), "spec.duplicateWindow"),
            (schema_of(&DeadLetterQueue::crd()), "spec.retention.maxAge"),
            (schema_of(&Queue::crd()), "spec.retention.maxAge"),
            (schema_of(&Queue::crd()), "spec.visibilityTimeout"),
            (schema_of(&ConsumerGroup::crd()), "spec.ackWait"),
            (
                schema_of(&ConsumerGroup::crd()),
                "spec.autoscaling.pollInterval",
            ),
        ];
        for (schema, path) in cases {
            let field = at(&schema, path);
            assert_eq!(rules(field), ["self.matches('[1-9]')"], "{path}");
            assert!(
                field["x-kubernetes-validations"][0]["message"]
                    .as_str()
                    .unwrap()
                    .starts_with("must be longer than 0s"),
                "{path}"
            );
            assert_eq!(field["maxLength"], 64, "{path}");
        }
    }

    #[test]
    fn malformed_and_negative_quantities_are_rejected_at_admission() {
        use crate::crd::common::{BYTES_PATTERN, NON_NEGATIVE_QUANTITY_PATTERN};
        let bytes = regex::Regex::new(BYTES_PATTERN).unwrap();
        for bad in ["-10Gi", "ten gigs", "0", "0Gi", "1.5Gi", "1e9", "10GB", ""] {
            assert!(!bytes.is_match(bad), "{bad}");
            assert!(
                crate::broker_cluster::parse_bytes(bad).is_err(),
                "the operator agrees on {bad}"
            );
        }
        for good in ["10Gi", "500M", "1073741824", "1k", "20Ti"] {
            assert!(bytes.is_match(good), "{good}");
            assert!(crate::broker_cluster::parse_bytes(good).is_ok(), "{good}");
        }
        let quantity = regex::Regex::new(NON_NEGATIVE_QUANTITY_PATTERN).unwrap();
        for bad in ["lots", "-1", "-500m", "1 Gi", "1.5.0"] {
            assert!(!quantity.is_match(bad), "{bad}");
        }
        for good in ["500m", "2", "1.5", "1.5Gi", "256Mi", "1e3", "+1", ".5"] {
            assert!(quantity.is_match(good), "{good}");
        }

        let broker = schema_of(&Broker::crd());
        for path in [
            "spec.storage.size",
            "spec.jetstream.maxMemory",
            "spec.jetstream.maxFile",
        ] {
            assert_eq!(at(&broker, path)["pattern"], BYTES_PATTERN, "{path}");
        }
        for list in ["limits", "requests"] {
            let q = &at(&broker, &format!("spec.resources.{list}"))["additionalProperties"];
            assert_eq!(q["pattern"], NON_NEGATIVE_QUANTITY_PATTERN, "{list}");
            assert_eq!(q["x-kubernetes-int-or-string"], true);
        }
    }

    #[test]
    fn changes_that_cannot_be_applied_in_place_are_rejected_at_admission() {
        for (schema, kind) in [
            (schema_of(&Topic::crd()), "Topic"),
            (schema_of(&Queue::crd()), "Queue"),
        ] {
            let v = &schema["properties"]["spec"]["x-kubernetes-validations"];
            let storage = v
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["fieldPath"] == ".storage")
                .unwrap_or_else(|| panic!("{kind}: no storage rule in {v}"));
            // Unset means file: file -> unset is no change, unset -> memory is one.
            assert_eq!(
                storage["rule"],
                "(has(self.storage) ? self.storage : 'file') == (has(oldSelf.storage) ? oldSelf.storage : 'file')"
            );
            assert!(
                storage["message"]
                    .as_str()
                    .unwrap()
                    .starts_with("storage cannot be changed")
            );
        }
        let group = schema_of(&ConsumerGroup::crd());
        let retry = &group["properties"]["spec"]["properties"]["retry"];
        let rule = &retry["x-kubernetes-validations"][0];
        assert_eq!(rule["fieldPath"], ".backoffMax");
        assert!(
            rule["rule"]
                .as_str()
                .unwrap()
                .contains("duration(self.backoffDelay) <= duration(self.backoffMax)")
        );
        let broker = schema_of(&Broker::crd());
        let spec = &broker["properties"]["spec"];
        assert!(rules(spec)[0].contains("self.storage == oldSelf.storage"));
        assert_eq!(
            rules(&spec["properties"]["replicas"])[1],
            "(self == 1) == (oldSelf == 1)"
        );
    }

    #[test]
    fn every_kind_is_in_the_sluice_category_and_explains_without_ragged_breaks() {
        fn walk(path: &str, v: &Value, ragged: &mut Vec<String>) {
            if !v.is_object() {
                return;
            }
            if let Some(d) = v["description"].as_str() {
                let has_single_break = d
                    .split("\n\n")
                    .any(|p| p.contains('\n') && !p.contains("- ") && !p.contains("```"));
                if has_single_break {
                    ragged.push(format!("{path}: {d:?}"));
                }
            }
            if let Some(props) = v["properties"].as_object() {
                for (name, p) in props {
                    walk(&format!("{path}.{name}"), p, ragged);
                }
            }
            walk(&format!("{path}[]"), &v["items"], ragged);
        }
        let mut ragged = Vec::new();
        for crd in all_crds() {
            assert_eq!(
                crd.spec.names.categories.as_deref(),
                Some(&[CATEGORY.to_string()][..]),
                "{}",
                crd.spec.names.kind
            );
            walk(&crd.spec.names.kind, &schema_of(&crd), &mut ragged);
        }
        assert!(ragged.is_empty(), "{ragged:#?}");
        assert_eq!(
            unwrap_text("one line\nwrapped here.\n\n- a\n- b"),
            "one line wrapped here.\n\n- a\n- b"
        );
    }

    #[test]
    fn every_spec_field_has_a_description() {
        fn walk(path: &str, v: &Value, missing: &mut Vec<String>) {
            if let Some(props) = v["properties"].as_object() {
                for (name, p) in props {
                    let here = format!("{path}.{name}");
                    if p.get("description").is_none() {
                        missing.push(here.clone());
                    }
                    walk(&here, p, missing);
                    walk(&format!("{here}[]"), &p["items"], missing);
                }
            }
        }
        let mut missing = Vec::new();
        for crd in all_crds() {
            let schema = schema_of(&crd);
            // `resources` is k8s-openapi's ResourceRequirements, documented upstream.
            walk(
                &crd.spec.names.kind,
                &schema["properties"]["spec"],
                &mut missing,
            );
            walk(
                &crd.spec.names.kind,
                &schema["properties"]["status"],
                &mut missing,
            );
        }
        missing.retain(|p| !p.contains(".resources."));
        assert!(
            missing.is_empty(),
            "fields without doc comments: {missing:?}"
        );
    }

    #[test]
    fn crds_stay_far_below_the_client_side_apply_limit() {
        for file in render_all().unwrap() {
            assert!(
                file.yaml.len() < 128 * 1024,
                "{} is {} bytes",
                file.file_name,
                file.yaml.len()
            );
        }
    }
}
