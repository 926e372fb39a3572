//! The headless commands as a user runs them, on the embedded model and the fixtures.

mod common;

use std::path::Path;

fn unmask(args: &[&str]) -> (bool, String, String) {
    common::output(common::unmask().args(args))
}

fn fixture(name: &str) -> String {
    common::fixture(name).display().to_string()
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

/// Runs unmask in `dir` (relative default paths resolve there).
fn unmask_in(dir: &Path, args: &[&str]) -> (bool, String, String) {
    common::output(common::unmask().current_dir(dir).args(args))
}

#[test]
fn eval_runs_from_a_fresh_clone_without_the_heldout_split() {
    // A folder laid out like a fresh clone: the shipped prompts, no data/corpus.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("assets")).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/eval_prompts.jsonl"),
        dir.path().join("assets/eval_prompts.jsonl"),
    )
    .unwrap();
    let (ok, out, err) = unmask_in(
        dir.path(),
        &[
            "eval",
            "--n-prompts",
            "2",
            "--gen-length",
            "8",
            "--settings",
            "ar,b8-s2",
        ],
    );
    assert!(ok, "{err}");
    assert!(err.contains("data/corpus/heldout.jsonl not found"), "{err}");
    assert!(
        err.contains("skipping the masked section") && err.contains("skipping the repair section")
    );
    // stderr is a pipe here: the plain result lines, no progress bar.
    assert!(
        err.contains("newline / AR (block 1, 1 step): valid"),
        "{err}"
    );
    assert!(!err.contains("left)") && !err.contains("[="), "{err}");
    // Both prompt forms, both settings, healing on by default.
    for row in [
        "| newline | AR (block 1, 1 step) | on |",
        "| stripped | block 8, 2 steps | on |",
    ] {
        assert!(out.contains(row), "{row} missing from\n{out}");
    }
    // An explicitly named held-out file that is missing is an error that names it.
    let (ok, _, err) = unmask_in(dir.path(), &["eval", "--heldout", "nope.jsonl"]);
    assert!(!ok && err.contains("nope.jsonl"), "{err}");
    let (ok, _, err) = unmask_in(dir.path(), &["eval", "--forms", "typed"]);
    assert!(!ok && err.contains("unknown form `typed`"), "{err}");
}

#[test]
fn heal_and_repetition_flags() {
    let (ok, out, err) = unmask(&[
        "generate",
        "--prompt",
        "def fibonacci(n):\n",
        "--gen-length",
        "8",
        "--json",
    ]);
    assert!(ok, "{err}");
    assert!(err.contains("healed: backed off 1 token \"\\n\""), "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["params"]["heal"], true);
    let (ok, _, err) = unmask(&[
        "generate",
        "--prompt",
        "def fibonacci(n):\n",
        "--gen-length",
        "8",
        "--no-heal",
        "--no-repeat-ngram",
        "3",
        "--repetition-penalty",
        "1.3",
    ]);
    assert!(ok && !err.contains("healed"), "{err}");
    let (ok, _, err) = unmask(&["generate", "--prompt", "x", "--repetition-penalty", "0.5"]);
    assert!(!ok && err.contains("repetition_penalty"), "{err}");
    let (ok, _, err) = unmask(&["bench", "--repetition-penalty", "0"]);
    assert!(!ok && err.contains("--repetition-penalty"), "{err}");
    let (ok, _, err) = unmask(&[
        "generate",
        "--prompt",
        "def f(x):",
        "--suffix",
        "    return y",
        "--gen-length",
        "8",
    ]);
    assert!(!ok && err.contains("block-causal"), "{err}");
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
