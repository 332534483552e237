//! The image config and history of every case in `testdata/build/` against what BuildKit
//! recorded (`expected/TARGET.config`, see testdata/build/README.md). File contents are the
//! executor's tests; here only the config and history are built.

use std::path::PathBuf;

use rbuild_builder::StageConfig;
use rbuild_image::ImageConfig;
use rbuild_parser::instruction::parse;
use rbuild_solver::{plan, BaseImageInfo, BaseImageResolver, BuildOptions, Platform, StageBase};
use serde_json::Value;

struct Busybox;

impl BaseImageResolver for Busybox {
    fn resolve(&mut self, reference: &str) -> Result<BaseImageInfo, String> {
        match reference {
            "busybox" => Ok(BaseImageInfo::default()),
            other => Err(format!("unknown test image {other}")),
        }
    }
}

/// The config `docker import` gives the busybox base: one history entry, nothing else.
fn busybox_config() -> ImageConfig {
    let mut c = ImageConfig::new("amd64", "linux");
    c.history.push(rbuild_image::History {
        comment: "Imported from -".into(),
        ..Default::default()
    });
    c
}

/// Keys whose value is null, "", false, [] or {} are dropped (Go's omitempty vs Docker's nulls).
fn significant(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| {
                    !matches!(v, Value::Null | Value::Bool(false))
                        && v.as_str() != Some("")
                        && v.as_array().is_none_or(|a| !a.is_empty())
                        && v.as_object().is_none_or(|o| !o.is_empty())
                })
                .map(|(k, v)| (k.clone(), significant(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[test]
fn configs_and_histories_match_buildkit() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/build");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{e}"))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("Dockerfile").is_file())
        .collect();
    cases.sort();
    let mut checked = 0;
    for dir in &cases {
        checked += check_case(dir);
    }
    println!("buildkit configs and histories: {checked} targets match");
    assert!(checked >= 10, "only {checked} targets checked");
}

/// Checks every target of one case; returns how many.
fn check_case(dir: &std::path::Path) -> usize {
    let src = std::fs::read_to_string(dir.join("Dockerfile")).unwrap_or_else(|e| panic!("{e}"));
    let file = parse(&src).unwrap_or_else(|e| panic!("{}", e.render("Dockerfile", &src)));
    let targets = std::fs::read_to_string(dir.join("targets")).unwrap_or_else(|_| "-".into());
    let mut checked = 0;
    for target in targets.split_whitespace() {
        let (stage, target) = if target == "-" {
            (None, "final")
        } else {
            (Some(target.to_string()), target)
        };
        let opts = BuildOptions {
            target: stage,
            platform: Platform::parse("linux/amd64").unwrap_or_default(),
            build_platform: Platform::parse("linux/amd64").unwrap_or_default(),
            ..Default::default()
        };
        let p = plan(&file, &opts, &mut Busybox).unwrap_or_else(|e| panic!("{e}"));
        let mut finished: Vec<(usize, ImageConfig)> = Vec::new();
        for stage in &p.stages {
            let base = match &stage.base {
                StageBase::Scratch => None,
                StageBase::Image(_) => Some(busybox_config()),
                StageBase::Stage(i) => finished
                    .iter()
                    .find(|(j, _)| j == i)
                    .map(|(_, c)| c.clone()),
            };
            let mut sc = StageConfig::start(base, &opts.platform);
            for step in &stage.steps {
                if let Some(created_by) = sc.apply(step).unwrap_or_else(|e| panic!("{e}")) {
                    let empty = rbuild_builder::config::is_metadata_only(&step.step.instruction);
                    sc.push_history(created_by, None, empty);
                }
            }
            finished.push((stage.index, sc.config));
        }
        let ours = &finished.last().unwrap_or_else(|| panic!("nothing built")).1;
        let expected: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join(format!("expected/{target}.config")))
                .unwrap_or_default(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let mut want = significant(&expected["config"]);
        if let Value::Object(m) = &mut want {
            m.retain(|k, _| rbuild_image::config::CONTAINER_CONFIG_KEYS.contains(&k.as_str()));
        }
        let got = significant(&serde_json::to_value(&ours.config).unwrap_or_default());
        let case = dir.display();
        assert_eq!(got, want, "config of {case} target {target}");
        assert_eq!(
            ours.author,
            expected["author"].as_str().unwrap_or_default(),
            "author of {case} {target}"
        );
        let want_history: Vec<(String, bool)> = expected["history"]
            .as_array()
            .map(|h| {
                h.iter()
                    .map(|e| {
                        (
                            e["CreatedBy"].as_str().unwrap_or_default().to_string(),
                            e["empty_layer"].as_bool().unwrap_or(false),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let got_history: Vec<(String, bool)> = ours
            .history
            .iter()
            .map(|h| (h.created_by.clone(), h.empty_layer))
            .collect();
        assert_eq!(
            got_history, want_history,
            "history of {case} target {target}"
        );
        checked += 1;
    }
    checked
}
