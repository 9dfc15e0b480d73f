//! The example manifests run on a cluster as they are: every container names the image the
//! Dockerfile's `examples` target builds, with the workspace's version as its tag (never
//! `:latest`), and runs a binary that image holds.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every `containers` entry (with the file it is in) of every example manifest.
fn containers() -> Vec<(String, serde_yaml::Value)> {
    fn collect(v: &serde_yaml::Value, out: &mut Vec<serde_yaml::Value>) {
        match v {
            serde_yaml::Value::Mapping(m) => {
                for (k, child) in m {
                    if k.as_str() == Some("containers")
                        && let Some(list) = child.as_sequence()
                    {
                        out.extend(list.iter().cloned());
                    }
                    collect(child, out);
                }
            }
            serde_yaml::Value::Sequence(s) => s.iter().for_each(|c| collect(c, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    for dir in std::fs::read_dir(repo().join("examples")).unwrap() {
        let dir = dir.unwrap().path();
        let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if !dir.is_dir() || ["src", "tests", "target"].contains(&name) {
            continue;
        }
        for file in std::fs::read_dir(&dir).unwrap() {
            let file = file.unwrap().path();
            if file.extension().and_then(|e| e.to_str()) != Some("yaml") {
                continue;
            }
            let text = std::fs::read_to_string(&file).unwrap();
            for doc in serde_yaml::Deserializer::from_str(&text) {
                let value = serde::Deserialize::deserialize(doc).unwrap();
                let mut found = Vec::new();
                collect(&value, &mut found);
                out.extend(found.into_iter().map(|c| (file.display().to_string(), c)));
            }
        }
    }
    out
}

#[test]
fn example_containers_run_binaries_of_the_image_the_dockerfile_builds() {
    let version = env!("CARGO_PKG_VERSION");
    let image = format!("ghcr.io/sluice-dev/examples:{version}");
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    assert!(
        dockerfile.contains(&format!("--target examples -t {image}")),
        "the Dockerfile documents how to build {image}"
    );
    let containers = containers();
    assert!(containers.len() >= 10, "{containers:?}");
    for (file, c) in containers {
        assert_eq!(c["image"].as_str(), Some(image.as_str()), "{file}: {c:?}");
        let binary = c["command"][0]
            .as_str()
            .unwrap_or_else(|| panic!("{file}: a container without command: {c:?}"));
        assert!(
            repo()
                .join("examples/src/bin")
                .join(format!("{binary}.rs"))
                .exists(),
            "{file}: {binary} is not an example binary"
        );
        assert!(
            dockerfile.contains(binary),
            "{file}: the Dockerfile does not install {binary}"
        );
    }
}
