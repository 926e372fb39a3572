//! Hostile and absurd input through the built binary: every case ends with a clear error that
//! names the problem (or quietly, for a closed pipe), never a panic, an abort or a hang.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use common::{fixture, unmask as bin};

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("running unmask")
}

/// Fails the test (instead of hanging it) when the child runs past `limit`.
fn wait_bounded(mut child: Child, limit: Duration) -> Output {
    let t0 = Instant::now();
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            panic!("unmask still running after {limit:?}: it hangs");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Exit code 1 and a message holding every `needle`; no panic.
fn fails_with(out: &Output, code: i32, needles: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {err}");
    for n in needles {
        assert!(err.contains(n), "expected `{n}` in: {err}");
    }
    assert!(!err.contains("panicked"), "{err}");
}

/// A copy of the sdar fixture with `config.json` fields replaced.
fn patched_sdar(dir: &Path, fields: &[(&str, serde_json::Value)]) -> PathBuf {
    let out = dir.join("model");
    std::fs::create_dir_all(&out).expect("mkdir");
    for e in std::fs::read_dir(fixture("sdar")).expect("fixture") {
        let p = e.expect("entry").path();
        let name = p.file_name().expect("name").to_owned();
        if !name.to_string_lossy().starts_with("golden") {
            std::fs::copy(&p, out.join(name)).expect("copy");
        }
    }
    let cfg = out.join("config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg).expect("read")).expect("json");
    for (k, x) in fields {
        v[*k] = x.clone();
    }
    std::fs::write(&cfg, v.to_string()).expect("write");
    out
}

#[test]
fn absurd_config_numbers_are_named_before_anything_is_allocated() {
    use serde_json::json;
    let cases: Vec<(&str, serde_json::Value, &str)> = vec![
        ("num_hidden_layers", json!(1_000_000_000_000u64), "beyond"),
        ("num_hidden_layers", json!(1u64 << 60), "beyond"),
        ("vocab_size", json!(u64::MAX), "beyond"),
        ("hidden_size", json!(1u64 << 40), "beyond"),
        ("max_position_embeddings", json!(1u64 << 50), "beyond"),
        ("num_attention_heads", json!(7), "divisor"),
        ("rope_theta", json!(0.0), "above 0"),
        ("rms_norm_eps", json!(-1e-6), "≥ 0"),
        ("mask_token_id", json!((1u64 << 32) + 5), "below 2^32"),
        ("mask_token_id", json!(100_000), "outside the embedding"),
        ("eos_token_id", json!(100_000), "outside the embedding"),
        ("eos_token_id", json!((1u64 << 32) + 5), "token id"),
        // Fill-in-the-middle: only the suffix-first layout, and only with the tokenizer's sentinels.
        (
            "fim_layout",
            json!("prefix-suffix-middle"),
            "suffix-prefix-middle",
        ),
        (
            "fim_layout",
            json!("suffix-prefix-middle"),
            "lacks the sentinels",
        ),
    ];
    for (field, value, says) in cases {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut fields = vec![(field, value.clone())];
        if field == "num_attention_heads" {
            fields.push(("head_dim", serde_json::Value::Null));
        }
        let model = patched_sdar(dir.path(), &fields);
        let out = run(&["inspect", "--model", model.to_str().expect("utf8")]);
        fails_with(&out, 1, &[field, says]);
    }
}

#[test]
fn wrong_typed_config_fields_are_named_with_their_path() {
    use serde_json::json;
    let cases: Vec<(&str, serde_json::Value, &[&str])> = vec![
        // Nested: one element of a list has the wrong type or range.
        (
            "eos_token_id",
            json!([416, "x"]),
            &["eos_token_id[1]", "invalid type: string", "token id"],
        ),
        (
            "eos_token_id",
            json!([416, (1u64 << 32) + 5]),
            &["eos_token_id[1]", "below 2^32"],
        ),
        (
            "architectures",
            json!([5]),
            &["architectures[0]", "invalid type: integer", "a string"],
        ),
        // Top level: the field itself has the wrong type.
        (
            "hidden_size",
            json!("64"),
            &["`hidden_size`", "invalid type: string"],
        ),
        (
            "rope_theta",
            json!({"base": 1}),
            &["`rope_theta`", "invalid type: map"],
        ),
        (
            "tie_word_embeddings",
            json!(1),
            &["`tie_word_embeddings`", "a boolean"],
        ),
    ];
    for (field, value, says) in cases {
        let dir = tempfile::tempdir().expect("tempdir");
        let model = patched_sdar(dir.path(), &[(field, value)]);
        let out = run(&["inspect", "--model", model.to_str().expect("utf8")]);
        let mut needles = vec!["config.json"];
        needles.extend_from_slice(says);
        fails_with(&out, 1, &needles);
    }
}

#[test]
fn sampler_numbers_that_overflow_or_outgrow_the_context() {
    let big = (u64::MAX - 1).to_string();
    let out = run(&[
        "generate",
        "--prompt",
        "def f(x):",
        "--gen-length",
        &big,
        "--block-size",
        &big,
    ]);
    fails_with(&out, 1, &["gen_length", "context"]);
    // 30 + 984 tokens fit the embedded model's 1024, but aligned to blocks of 24 they need 1032.
    let ids: Vec<String> = (10..40).map(|i| i.to_string()).collect();
    let out = run(&[
        "generate",
        "--prompt-ids",
        &ids.join(","),
        "--gen-length",
        "984",
        "--block-size",
        "24",
    ]);
    fails_with(&out, 1, &["aligned to blocks of 24", "context of 1024"]);
}

#[test]
fn ids_and_conflicting_flags() {
    // The embedded model's mask id is 1.
    let out = run(&["generate", "--prompt-ids", "5,1,6", "--gen-length", "8"]);
    fails_with(&out, 1, &["mask token", "id 1"]);
    let out = run(&[
        "generate",
        "--prompt-ids",
        "5,4294967295",
        "--gen-length",
        "8",
    ]);
    fails_with(&out, 1, &["4294967295", "vocabulary"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let code = dir.path().join("code.py");
    std::fs::write(&code, "def f(x):\n    return x + 1\n").expect("write");
    let c = code.to_str().expect("utf8");
    let out = run(&["generate", "--repair", c, "--prompt-ids", "5,6"]);
    fails_with(&out, 2, &["--repair", "--prompt-ids"]);
    let out = run(&["generate", "--repair", c, "--suffix", "x"]);
    fails_with(&out, 2, &["--repair", "--suffix"]);
    let out = run(&["generate", "--repair", c, "--budget", "1000000000"]);
    fails_with(&out, 1, &["--budget 1000000000", "exceeds"]);
}

#[test]
fn nan_weights_are_an_error_not_garbage() {
    use candle_core::{safetensors, Device, Tensor};
    let dir = tempfile::tempdir().expect("tempdir");
    let model = patched_sdar(dir.path(), &[]);
    let mut poisoned = false;
    for shard in [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ] {
        let path = model.join(shard);
        let mut t = safetensors::load(&path, &Device::Cpu).expect("load");
        if let Some(w) = t.get("model.norm.weight").cloned() {
            let nan = Tensor::full(f32::NAN, w.shape(), &Device::Cpu)
                .and_then(|x| x.to_dtype(w.dtype()))
                .expect("nan tensor");
            t.insert("model.norm.weight".into(), nan);
            safetensors::save(&t, &path).expect("save");
            poisoned = true;
        }
    }
    assert!(poisoned, "the fixture has model.norm.weight");
    let trace = dir.path().join("t.jsonl");
    let out = run(&[
        "generate",
        "--model",
        model.to_str().expect("utf8"),
        "--prompt-ids",
        "5,6,7",
        "--gen-length",
        "8",
        "--block-size",
        "4",
        "--trace",
        trace.to_str().expect("utf8"),
    ]);
    fails_with(&out, 1, &["non-finite logit", "broken"]);
    assert!(!trace.exists(), "no trace of garbage");
}

/// A trace of the embedded model, written by the binary.
fn make_trace(dir: &Path, gen: &str) -> PathBuf {
    let t = dir.join("run.jsonl");
    let out = run(&[
        "generate",
        "--prompt",
        "def add(a, b):",
        "--gen-length",
        gen,
        "--block-size",
        "8",
        "--steps",
        "8",
        "--no-stop",
        "--trace",
        t.to_str().expect("utf8"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    t
}

/// Runs unmask with its stdout read for `bytes` bytes and then closed (`| head -c N`).
fn reader_goes_away(args: &[&str], bytes: usize) -> Output {
    let mut child = spawn(args);
    let mut stdout = child.stdout.take().expect("stdout");
    let mut first = vec![0u8; bytes];
    stdout.read_exact(&mut first).expect("first bytes");
    drop(stdout);
    wait_bounded(child, Duration::from_secs(60))
}

/// Starts unmask with stdout and stderr piped.
fn spawn(args: &[&str]) -> Child {
    bin()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn")
}

#[test]
fn broken_pipes_end_quietly_and_a_full_disk_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let trace = make_trace(dir.path(), "256");
    let out = reader_goes_away(&["replay", trace.to_str().expect("utf8")], 16);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "replay | head: {:?} {err}",
        out.status
    );
    assert!(err.is_empty(), "{err}");

    let out = reader_goes_away(
        &[
            "generate",
            "--prompt",
            "def f(x):",
            "--gen-length",
            "64",
            "--no-stop",
        ],
        1,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "generate | head -c 1: {:?} {err}",
        out.status
    );
    assert!(!err.contains("panicked") && !err.contains("error"), "{err}");

    if Path::new("/dev/full").exists() {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .expect("/dev/full");
        let out = bin()
            .args(["generate", "--prompt", "x", "--gen-length", "8", "--json"])
            .stdout(full)
            .output()
            .expect("run");
        fails_with(&out, 1, &["writing to standard output", "No space left"]);
    }
}

#[test]
fn fifos_devices_and_endless_lines_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fifo = dir.path().join("pipe.jsonl");
    let c = std::ffi::CString::new(fifo.to_str().expect("utf8")).expect("cstring");
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    let child = spawn(&["replay", fifo.to_str().expect("utf8")]);
    fails_with(
        &wait_bounded(child, Duration::from_secs(30)),
        1,
        &["FIFO", "regular file"],
    );
    let child = spawn(&["replay", "/dev/zero"]);
    fails_with(
        &wait_bounded(child, Duration::from_secs(30)),
        1,
        &["/dev/zero", "device"],
    );

    // A config that is a FIFO.
    let model = patched_sdar(dir.path(), &[]);
    let cfg = model.join("config.json");
    std::fs::remove_file(&cfg).expect("rm");
    let c = std::ffi::CString::new(cfg.to_str().expect("utf8")).expect("cstring");
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    let child = spawn(&["inspect", "--model", model.to_str().expect("utf8")]);
    fails_with(
        &wait_bounded(child, Duration::from_secs(30)),
        1,
        &["config.json", "FIFO"],
    );

    // One endless line: the reader stops at its limit.
    let e = unmask::trace::Trace::read_from(
        std::io::BufReader::new(std::io::repeat(b'x')),
        Path::new("endless"),
    )
    .expect_err("endless line")
    .to_string();
    assert!(e.contains("line 1") && e.contains("longer than"), "{e}");
}

#[test]
fn trace_output_never_replaces_a_symlink_or_fifo() {
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("target.txt");
    std::fs::write(&target, "keep me").expect("write");
    let link = dir.path().join("link.jsonl");
    std::os::unix::fs::symlink(&target, &link).expect("symlink");
    let out = run(&[
        "generate",
        "--prompt",
        "x",
        "--gen-length",
        "8",
        "--trace",
        link.to_str().expect("utf8"),
    ]);
    fails_with(&out, 1, &["link.jsonl", "symbolic link", "refusing"]);
    assert!(std::fs::symlink_metadata(&link)
        .expect("link")
        .file_type()
        .is_symlink());
    assert_eq!(std::fs::read_to_string(&target).expect("target"), "keep me");

    // OS errors are printed once.
    let out = run(&["replay", "/nonexistent/run.jsonl"]);
    fails_with(&out, 1, &["/nonexistent/run.jsonl"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("No such file").count(), 1, "{err}");
}

/// An edit of a trace's parsed lines, for the replay-validation cases.
type Edit = dyn Fn(&mut Vec<serde_json::Value>);

#[test]
fn replay_checks_every_event_against_the_header() {
    let dir = tempfile::tempdir().expect("tempdir");
    let trace = make_trace(dir.path(), "16");
    let text = std::fs::read_to_string(&trace).expect("read");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    let gen_start = lines[0]["gen_start"].as_u64().expect("gen_start");
    let mask = lines[0]["mask_id"].as_u64().expect("mask_id");
    let first_step = lines
        .iter()
        .position(|l| l["type"] == "step" && !l["commits"].as_array().expect("commits").is_empty())
        .expect("a step with commits");
    let block_end = lines[first_step]["block_end"].as_u64().expect("block_end");
    let cases: Vec<(&str, Box<Edit>)> = vec![
        (
            "the prompt",
            Box::new(move |l| l[first_step]["commits"][0]["pos"] = (gen_start - 1).into()),
        ),
        (
            "outside its block",
            Box::new(move |l| l[first_step]["commits"][0]["pos"] = (block_end + 1).into()),
        ),
        (
            "mask token",
            Box::new(move |l| l[first_step]["commits"][0]["token"] = mask.into()),
        ),
        (
            "outside the model's vocabulary",
            Box::new(move |l| l[first_step]["commits"][0]["token"] = 1_000_000.into()),
        ),
        (
            "a second finish",
            Box::new(|l| {
                let last = l.last().cloned().expect("finish");
                l.push(last)
            }),
        ),
    ];
    for (says, edit) in cases {
        let mut l = lines.clone();
        edit(&mut l);
        let bad = dir.path().join("bad.jsonl");
        let body: Vec<String> = l.iter().map(|v| v.to_string()).collect();
        std::fs::write(&bad, body.join("\n")).expect("write");
        let out = run(&["replay", bad.to_str().expect("utf8")]);
        fails_with(&out, 1, &["bad.jsonl", "line", says]);
    }
}

#[test]
fn sigint_cancels_within_a_step_and_saves_the_trace() {
    let dir = tempfile::tempdir().expect("tempdir");
    let trace = dir.path().join("cancelled.jsonl");
    let mut child = bin()
        .args([
            "generate",
            "--prompt",
            "def f(x):",
            "--gen-length",
            "960",
            "--block-size",
            "8",
            "--steps",
            "8",
            "--no-stop",
            "--no-cache",
            "--verbose",
            "--trace",
            trace.to_str().expect("utf8"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    // Wait for the first step, so the signal arrives mid-run.
    let mut stderr = child.stderr.take().expect("stderr");
    let mut seen = Vec::new();
    let mut byte = [0u8; 1];
    while !String::from_utf8_lossy(&seen).contains("step 0") {
        assert_eq!(stderr.read(&mut byte).expect("stderr"), 1, "ended early");
        seen.push(byte[0]);
    }
    // SAFETY: signalling our own child by its pid.
    assert_eq!(
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) },
        0
    );
    let reader = std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = stderr.read_to_string(&mut rest);
        rest
    });
    let out = wait_bounded(child, Duration::from_secs(60));
    let rest = reader.join().expect("reader");
    assert_eq!(out.status.code(), Some(130), "{rest}");
    assert!(
        rest.contains("cancelled") && !rest.contains("panicked"),
        "{rest}"
    );
    let t = unmask::trace::Trace::load(&trace).expect("the partial trace loads");
    let fin = t.finish.as_ref().expect("a finish record");
    assert!(
        matches!(fin.reason, unmask::trace::FinishReason::Cancelled),
        "{:?}",
        fin.reason
    );
    assert!(
        !t.events.is_empty() && t.events.len() < 960,
        "{} steps",
        t.events.len()
    );
}

#[test]
fn hub_revision_from_the_command_line_is_checked() {
    let cache = tempfile::tempdir().expect("tempdir");
    let out = bin()
        .args(["download", "--revision", "../../x", "test/model"])
        .env("HF_HUB_CACHE", cache.path())
        .env("HF_ENDPOINT", "http://127.0.0.1:9")
        .output()
        .expect("run");
    fails_with(&out, 1, &["revision `../../x`"]);
    assert_eq!(std::fs::read_dir(cache.path()).expect("cache").count(), 0);
    let out = bin()
        .args(["download", "test/model"])
        .env("HF_HUB_CACHE", cache.path())
        .env("HF_HUB_DOWNLOAD_TIMEOUT", "soon")
        .output()
        .expect("run");
    fails_with(&out, 1, &["HF_HUB_DOWNLOAD_TIMEOUT=soon", "seconds"]);
}

#[test]
fn a_runaway_chat_template_runs_out_of_fuel() {
    let t = unmask::chat::ChatTemplate {
        source: "{% for i in range(100000) %}{% for j in range(100000) %}{{ j }}{% endfor %}{% endfor %}"
            .into(),
        tokens: Vec::new(),
        file: PathBuf::from("chat_template.jinja"),
    };
    let e = t
        .render(&[unmask::chat::Message::user("hi")], true)
        .expect_err("runaway template")
        .to_string();
    assert!(
        e.contains("chat_template.jinja") && e.contains("runaway"),
        "{e}"
    );
}
