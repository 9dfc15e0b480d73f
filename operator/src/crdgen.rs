//! Renders the CustomResourceDefinitions from the Rust types: one YAML file per kind, named
//! `<plural>.yaml`, written to `crds/` and `charts/sluice/crds/` by `sluice crds`. A test
//! regenerates them in memory and fails when the committed files drift.

use std::path::{Path, PathBuf};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
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

/// The CRDs of every Sluice kind.
pub fn all_crds() -> Vec<CustomResourceDefinition> {
    vec![
        Broker::crd(),
        Topic::crd(),
        Queue::crd(),
        DeadLetterQueue::crd(),
        ConsumerGroup::crd(),
    ]
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
