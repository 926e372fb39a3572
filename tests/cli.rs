//! The headless commands as a user runs them, on the embedded model and the fixtures.

use std::path::Path;
use std::process::Command;

fn unmask(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_unmask"))
        .args(args)
        .output()
        .expect("running unmask");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn generate_writes_a_trace_that_replays() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("run.jsonl");
    let t = trace.to_str().unwrap();
    let (ok, out, err) = unmask(&[
        "generate",
        "--prompt",
        "def add(a, b):",
        "--gen-length",
        "32",
        "--block-size",
        "8",
        "--steps",
        "4",
        "--no-stop",
        "--trace",
        t,
        "--json",
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let n = v["ids"].as_array().unwrap().len();
    let loaded = unmask::trace::Trace::load(&trace).unwrap();
    let p = loaded.header.gen_start;
    assert!(
        n >= 32 && (p + n).is_multiple_of(8),
        "{n} tokens after a {p}-token prompt: padded to a block boundary"
    );
    assert!(v["forwards"].as_u64().unwrap() >= 4 * 4);
    let (ok, out, err) = unmask(&["replay", t, "--step", "0"]);
    assert!(ok, "{err}");
    assert!(out.contains("step 0/") && out.contains('░'), "{out}");
    let last = loaded.len();
    let (ok, out, _) = unmask(&["replay", t, "--step", &last.to_string()]);
    assert!(
        ok && !out.contains('░'),
        "the last step has no mask left: {out}"
    );
}

#[test]
fn inspect_and_forward() {
    let (ok, out, err) = unmask(&["inspect", "--model", &fixture("sdar")]);
    assert!(ok, "{err}");
    assert!(
        out.contains("SDAR")
            && out.contains("mask id:       419 (from tokenizer")
            && out.contains("<MASK>"),
        "{out}"
    );
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("logits.safetensors");
    let (ok, _, err) = unmask(&[
        "forward",
        "--model",
        &fixture("sdar"),
        "--ids",
        "5,6,7,419,419",
        "--out",
        f.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let t = candle_core::safetensors::load(&f, &candle_core::Device::Cpu).unwrap();
    assert_eq!(t["logits"].dims(), &[5, 420]);
    assert_eq!(t["logits"].dtype(), candle_core::DType::F32);
}

#[test]
fn bad_input_fails_with_a_message_not_a_panic() {
    let (ok, _, err) = unmask(&["inspect", "--model", "/nonexistent/model"]);
    assert!(
        !ok && err.contains("/nonexistent/model") && err.contains("not a model folder"),
        "{err}"
    );
    let (ok, _, err) = unmask(&[
        "generate",
        "--prompt",
        "x",
        "--gen-length",
        "30",
        "--block-size",
        "8",
    ]);
    assert!(
        !ok && err.contains("block_size") && err.contains("does not divide"),
        "{err}"
    );
    let long = "x = 1\n".repeat(400);
    let (ok, _, err) = unmask(&["generate", "--prompt", &long, "--gen-length", "64"]);
    assert!(!ok && err.contains("context"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"type\":\"header\"\n").unwrap();
    let (ok, _, err) = unmask(&["replay", bad.to_str().unwrap()]);
    assert!(!ok && err.contains("line 1"), "{err}");
    assert!(!err.contains("panicked"));
}

#[cfg(feature = "gui")]
#[test]
fn gui_rejects_bad_launch_flags_before_opening_a_window() {
    let (ok, _, err) = unmask(&["gui", "--trace", "/nonexistent/run.jsonl"]);
    assert!(!ok);
    assert!(
        err.contains("--trace /nonexistent/run.jsonl: no such file"),
        "{err}"
    );
    let (ok, _, err) = unmask(&["gui", "--run", "--race"]);
    assert!(!ok);
    assert!(err.contains("--race"), "{err}");
    let (ok, _, err) = unmask(&["gui", "--block-size", "many"]);
    assert!(!ok);
    assert!(err.contains("--block-size"), "{err}");
}
