//! Helpers shared by the integration tests: run the real binary, read its JSON.
#![allow(dead_code)]

pub mod daemon;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_scimwatch"))
}

pub fn fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path)
}

pub fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("scimwatch runs")
}

/// `scimwatch replay --format json` on a config, asserting exit 0.
pub fn replay_json(config: &Path, extra: &[&str]) -> Value {
    let config = config.to_str().expect("utf-8 path");
    let mut args = vec!["replay", "--config", config, "--format", "json"];
    args.extend_from_slice(extra);
    let output = run(&args);
    assert!(
        output.status.success(),
        "replay failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the report is JSON")
}
