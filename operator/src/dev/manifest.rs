//! Reading the manifests `sluice dev` runs: the five Sluice kinds plus `batch/v1` Jobs (run
//! once as local processes, e.g. a producer). Files are multi-document YAML; a directory is
//! read recursively (`*.yaml`, `*.yml`, in path order). Other kinds are listed as ignored.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use k8s_openapi::api::batch::v1::Job;
use serde::Deserialize;

use crate::crd::{Broker, ConsumerGroup, DeadLetterQueue, Queue, Topic};

/// Namespace given to manifests that name none.
pub const DEFAULT_NAMESPACE: &str = "default";

/// A manifest could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// A file or directory could not be read.
    #[error("failed to read {path}: {source}")]
    Read {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A document is not valid YAML or does not match its kind's schema.
    #[error("{path} (document {index}): {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based document index in the file.
        index: usize,
        /// What is wrong.
        message: String,
    },
    /// Nothing to run.
    #[error("no manifests found in {0}: give YAML files or a directory holding them")]
    Empty(String),
}

/// A Job to run once as a local process.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalJob {
    /// Namespace.
    pub namespace: String,
    /// Job name.
    pub name: String,
    /// The Job's first container's command + args.
    pub argv: Vec<String>,
    /// Literal environment of that container.
    pub env: BTreeMap<String, String>,
}

/// Everything read from the manifests, keyed by `(namespace, name)` per kind.
#[derive(Debug, Default, Clone)]
pub struct Manifests {
    /// Brokers.
    pub brokers: Vec<Broker>,
    /// Topics.
    pub topics: Vec<Topic>,
    /// Queues.
    pub queues: Vec<Queue>,
    /// Dead-letter queues.
    pub dlqs: Vec<DeadLetterQueue>,
    /// Consumer groups.
    pub groups: Vec<ConsumerGroup>,
    /// Jobs to run once.
    pub jobs: Vec<LocalJob>,
    /// `kind/name` of documents that `sluice dev` does not run.
    pub ignored: Vec<String>,
    /// The files read and their modification times (to notice edits).
    pub files: BTreeMap<PathBuf, Option<SystemTime>>,
}

#[derive(Deserialize)]
struct TypeMeta {
    #[serde(default, rename = "apiVersion")]
    api_version: String,
    #[serde(default)]
    kind: String,
}

/// Lists the YAML files under the given paths (files as given, directories recursively).
pub fn yaml_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, ManifestError> {
    let mut out = Vec::new();
    for path in paths {
        collect(path, &mut out)?;
    }
    Ok(out)
}

fn collect(path: &Path, out: &mut Vec<PathBuf>) -> Result<(), ManifestError> {
    let meta = std::fs::metadata(path).map_err(|source| ManifestError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if meta.is_file() {
        out.push(path.to_path_buf());
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|source| ManifestError::Read {
            path: path.to_path_buf(),
            source,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for entry in entries {
        if entry.is_dir() {
            collect(&entry, out)?;
        } else if matches!(
            entry.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            out.push(entry);
        }
    }
    Ok(())
}

/// Modification times of files, to notice edits while `sluice dev` runs.
pub fn modification_times(files: &[PathBuf]) -> BTreeMap<PathBuf, Option<SystemTime>> {
    files
        .iter()
        .map(|f| {
            (
                f.clone(),
                std::fs::metadata(f).and_then(|m| m.modified()).ok(),
            )
        })
        .collect()
}

/// Reads every manifest under `paths`.
pub fn load(paths: &[PathBuf]) -> Result<Manifests, ManifestError> {
    let files = yaml_files(paths)?;
    let mut manifests = Manifests {
        files: modification_times(&files),
        ..Default::default()
    };
    for file in &files {
        let text = std::fs::read_to_string(file).map_err(|source| ManifestError::Read {
            path: file.clone(),
            source,
        })?;
        parse_into(&text, file, &mut manifests)?;
    }
    let total = manifests.brokers.len()
        + manifests.topics.len()
        + manifests.queues.len()
        + manifests.dlqs.len()
        + manifests.groups.len()
        + manifests.jobs.len();
    if total == 0 {
        let shown: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        return Err(ManifestError::Empty(shown.join(", ")));
    }
    Ok(manifests)
}

/// Parses one multi-document YAML text into `manifests`.
pub fn parse_into(text: &str, file: &Path, manifests: &mut Manifests) -> Result<(), ManifestError> {
    for (i, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let index = i + 1;
        let invalid = |message: String| ManifestError::Invalid {
            path: file.to_path_buf(),
            index,
            message,
        };
        let value = serde_yaml::Value::deserialize(document)
            .map_err(|e| invalid(format!("not valid YAML: {e}")))?;
        if value.is_null() {
            continue;
        }
        let meta: TypeMeta = serde_yaml::from_value(value.clone())
            .map_err(|e| invalid(format!("not a Kubernetes object: {e}")))?;
        let sluice = meta.api_version == "sluice.dev/v1alpha1";
        match (sluice, meta.kind.as_str()) {
            (true, "Broker") => manifests.brokers.push(decode(value, &invalid)?),
            (true, "Topic") => manifests.topics.push(decode(value, &invalid)?),
            (true, "Queue") => manifests.queues.push(decode(value, &invalid)?),
            (true, "DeadLetterQueue") => manifests.dlqs.push(decode(value, &invalid)?),
            (true, "ConsumerGroup") => manifests.groups.push(decode(value, &invalid)?),
            (false, "Job") if meta.api_version == "batch/v1" => {
                let job: Job = serde_yaml::from_value(value)
                    .map_err(|e| invalid(format!("invalid Job: {e}")))?;
                manifests.jobs.push(local_job(job).map_err(invalid)?);
            }
            (_, kind) => {
                let name = value
                    .get("metadata")
                    .and_then(|m| m.get("name"))
                    .and_then(|n| n.as_str())
                    .unwrap_or("?");
                manifests.ignored.push(format!("{kind}/{name}"));
            }
        }
    }
    Ok(())
}

/// Decodes a Sluice object, defaulting its namespace and generation like an API server would.
fn decode<K>(
    value: serde_yaml::Value,
    invalid: &dyn Fn(String) -> ManifestError,
) -> Result<K, ManifestError>
where
    K: kube::Resource + serde::de::DeserializeOwned,
    K::DynamicType: Default,
{
    let mut obj: K = serde_yaml::from_value(value).map_err(|e| {
        invalid(format!(
            "does not match the {} schema: {e}",
            std::any::type_name::<K>()
                .rsplit("::")
                .next()
                .unwrap_or("resource")
        ))
    })?;
    let meta = obj.meta_mut();
    if meta.name.as_deref().unwrap_or("").is_empty() {
        return Err(invalid("metadata.name is required".into()));
    }
    if meta.namespace.is_none() {
        meta.namespace = Some(DEFAULT_NAMESPACE.to_string());
    }
    meta.generation.get_or_insert(1);
    if meta.uid.is_none() {
        // Owner references need a uid; an API server would assign one.
        meta.uid = Some(format!(
            "sluice-dev-{}-{}-{}",
            K::kind(&Default::default()).to_lowercase(),
            meta.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE),
            meta.name.as_deref().unwrap_or_default()
        ));
    }
    Ok(obj)
}

fn local_job(job: Job) -> Result<LocalJob, String> {
    let name = job.metadata.name.clone().unwrap_or_default();
    let namespace = job
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
    let container = job
        .spec
        .and_then(|s| s.template.spec)
        .and_then(|s| s.containers.into_iter().next())
        .ok_or_else(|| format!("Job {name} has no container to run"))?;
    let (argv, env) = container_argv(&container)?;
    Ok(LocalJob {
        namespace,
        name,
        argv,
        env,
    })
}

/// The command line and literal environment of a container, as `sluice dev` runs it locally.
/// A container needs a `command` (there is no image entrypoint to fall back on locally).
pub fn container_argv(
    container: &k8s_openapi::api::core::v1::Container,
) -> Result<(Vec<String>, BTreeMap<String, String>), String> {
    let mut argv = container.command.clone().unwrap_or_default();
    if argv.is_empty() {
        return Err(format!(
            "container {} has no command: sluice dev runs the command locally (the image is not used), so set `command`",
            container.name
        ));
    }
    argv.extend(container.args.clone().unwrap_or_default());
    let env = container
        .env
        .iter()
        .flatten()
        .filter_map(|e| e.value.clone().map(|v| (e.name.clone(), v)))
        .collect();
    Ok((argv, env))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_kind_and_defaults_namespace() {
        let text = r#"
apiVersion: sluice.dev/v1alpha1
kind: Topic
metadata: {name: orders}
spec: {broker: main, partitions: 3}
---
apiVersion: sluice.dev/v1alpha1
kind: ConsumerGroup
metadata: {name: billing, namespace: shop}
spec:
  source: {topic: orders}
  template:
    spec:
      containers:
        - name: w
          image: x
          command: [billing-worker]
          args: [--fast]
          env: [{name: MODE, value: prod}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: seed}
spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{name: p, image: x, command: [producer, "10"]}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: extra}
"#;
        let mut m = Manifests::default();
        parse_into(text, Path::new("x.yaml"), &mut m).unwrap();
        assert_eq!(m.topics.len(), 1);
        assert_eq!(m.topics[0].metadata.namespace.as_deref(), Some("default"));
        assert_eq!(m.groups[0].metadata.namespace.as_deref(), Some("shop"));
        assert_eq!(m.jobs[0].argv, vec!["producer", "10"]);
        assert_eq!(m.ignored, vec!["ConfigMap/extra"]);
    }

    #[test]
    fn schema_errors_name_file_and_document() {
        let text = "apiVersion: sluice.dev/v1alpha1\nkind: Topic\nmetadata: {name: t}\nspec: {partitions: three}\n";
        let err = parse_into(text, Path::new("bad.yaml"), &mut Manifests::default()).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("bad.yaml (document 1)"), "{text}");
        assert!(text.contains("Topic"), "{text}");
    }

    #[test]
    fn job_without_command_is_explained() {
        let text = "apiVersion: batch/v1\nkind: Job\nmetadata: {name: j}\nspec:\n  template:\n    spec:\n      containers: [{name: c, image: x}]\n";
        let err = parse_into(text, Path::new("j.yaml"), &mut Manifests::default()).unwrap_err();
        assert!(err.to_string().contains("set `command`"), "{err}");
    }

    #[test]
    fn the_examples_parse() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        for example in ["video-pipeline", "order-events"] {
            let m = load(&[root.join(example)]).unwrap();
            assert!(!m.groups.is_empty(), "{example} has groups");
            assert!(!m.jobs.is_empty(), "{example} has a producer job");
            assert!(m.ignored.is_empty(), "{example}: {:?}", m.ignored);
        }
    }
}
