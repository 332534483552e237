//! The `config` objects Docker reported for the recorded BuildKit builds in
//! `testdata/build/*/expected/*.config` read into [`ContainerConfig`], and every field this
//! crate models comes back out under the same name with the same value (so the field names and
//! the Healthcheck duration encoding match Docker's).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use rbuild_image::ContainerConfig;
use serde_json::Value;

/// Docker's `null` / `""` / `false` / `[]` / `{}` are what `omitempty` leaves out.
fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::Number(_) => false,
    }
}

#[test]
fn recorded_docker_configs_roundtrip() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/build");
    let mut checked = 0;
    let mut saw_healthcheck = false;
    for case in std::fs::read_dir(&root).unwrap() {
        let expected = case.unwrap().path().join("expected");
        let Ok(files) = std::fs::read_dir(&expected) else {
            continue;
        };
        for file in files {
            let path = file.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) != Some("config") {
                continue;
            }
            let recorded: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            let docker = &recorded["config"];
            let parsed: ContainerConfig = serde_json::from_value(docker.clone())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let ours = serde_json::to_value(&parsed).unwrap();
            for key in rbuild_image::config::CONTAINER_CONFIG_KEYS.iter() {
                let theirs = docker.get(*key).unwrap_or(&Value::Null);
                let mine = ours.get(*key).unwrap_or(&Value::Null);
                if is_empty(theirs) {
                    assert!(
                        mine.is_null(),
                        "{}: {key} should be omitted, got {mine}",
                        path.display()
                    );
                } else {
                    assert_eq!(mine, theirs, "{}: {key}", path.display());
                }
            }
            saw_healthcheck |= parsed.healthcheck.is_some();
            checked += 1;
        }
    }
    assert!(
        checked >= 5,
        "only {checked} recorded configs found under {}",
        root.display()
    );
    assert!(saw_healthcheck);
}
