//! Bounded, seeded mutation fuzzing of the three readers of outside text: the trace reader, the
//! config reader and the chat-template renderer. A fixed number of cases per seed keeps it
//! deterministic and a few seconds long; the property is always the same: an answer (a value
//! or an error), never a panic, and a trace that loads can be written and read back.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use unmask::trace::Trace;

const EXTREMES: &[&str] = &[
    "0",
    "-1",
    "1e300",
    "-1e300",
    "18446744073709551615",
    "18446744073709551616",
    "4294967296",
    "0.5",
    "null",
    "true",
    "\"x\"",
    "[]",
    "{}",
    "[1,2,3]",
];

fn mutate(rng: &mut ChaCha8Rng, text: &str) -> String {
    let mut s = text.to_string();
    for _ in 0..rng.random_range(1..4) {
        let at = |rng: &mut ChaCha8Rng, s: &str| {
            let mut i = rng.random_range(0..=s.len());
            while !s.is_char_boundary(i) {
                i -= 1;
            }
            i
        };
        match rng.random_range(0..6) {
            // Replace a number with an extreme value.
            0 => {
                let starts: Vec<usize> = s
                    .char_indices()
                    .filter(|(i, c)| {
                        c.is_ascii_digit()
                            && s[..*i]
                                .chars()
                                .last()
                                .is_none_or(|p| !p.is_ascii_alphanumeric())
                    })
                    .map(|(i, _)| i)
                    .collect();
                if let Some(&i) = starts.get(rng.random_range(0..starts.len().max(1))) {
                    let end = s[i..]
                        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == 'e' || c == '-'))
                        .map_or(s.len(), |e| i + e);
                    let x = EXTREMES[rng.random_range(0..EXTREMES.len())];
                    s.replace_range(i..end, x);
                }
            }
            // Delete a range.
            1 => {
                let a = at(rng, &s);
                let b = at(rng, &s);
                let (a, b) = (a.min(b), a.max(b));
                s.replace_range(a..(a + (b - a).min(64)).min(b), "");
            }
            // Duplicate a line.
            2 => {
                let lines: Vec<&str> = s.lines().collect();
                if !lines.is_empty() {
                    let l = lines[rng.random_range(0..lines.len())].to_string();
                    s.push('\n');
                    s.push_str(&l);
                }
            }
            // Swap two lines.
            3 => {
                let mut lines: Vec<String> = s.lines().map(str::to_string).collect();
                if lines.len() > 1 {
                    let a = rng.random_range(0..lines.len());
                    let b = rng.random_range(0..lines.len());
                    lines.swap(a, b);
                    s = lines.join("\n");
                }
            }
            // Insert a random byte sequence.
            4 => {
                let i = at(rng, &s);
                let junk: String = (0..rng.random_range(1..8))
                    .map(|_| char::from(rng.random_range(0x20u8..0x7f)))
                    .collect();
                s.insert_str(i, &junk);
            }
            // Truncate.
            _ => {
                let i = at(rng, &s);
                s.truncate(i);
            }
        }
    }
    s
}

fn sample_trace() -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = dir.path().join("t.jsonl");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_unmask"))
        .args([
            "generate",
            "--prompt",
            "def f(x):",
            "--gen-length",
            "16",
            "--block-size",
            "8",
            "--steps",
            "4",
            "--edit-noise",
            "0.2",
            "--no-stop",
            "--trace",
            t.to_str().expect("utf8"),
        ])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(&t).expect("trace")
}

#[test]
fn fuzz_trace_reader() {
    let base = sample_trace();
    let path = Path::new("fuzzed.jsonl");
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    let mut loaded = 0;
    for _ in 0..400 {
        let text = mutate(&mut rng, &base);
        if let Ok(t) = Trace::read_from(Cursor::new(text.as_bytes()), path) {
            loaded += 1;
            // Every view of a loaded trace works, and it survives a round trip.
            let _ = t.cells_at(0);
            let _ = t.cells_at(t.len());
            let mut again = Vec::new();
            t.write_to(&mut again).expect("write");
            let back = Trace::read_from(Cursor::new(&again), path)
                .unwrap_or_else(|e| panic!("a loaded trace must read back: {e}\n{text}"));
            assert_eq!(back.events.len(), t.events.len());
        }
    }
    // The mutations are small: some inputs must still be valid, or the test proves little.
    assert!(loaded > 0, "no mutated trace loaded");
}

#[test]
fn fuzz_config_reader() {
    let base = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sdar/config.json"),
    )
    .expect("config");
    let file = Path::new("config.json");
    let mut rng = ChaCha8Rng::seed_from_u64(34);
    let mut accepted = 0;
    for _ in 0..3000 {
        let text = mutate(&mut rng, &base);
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        if let Ok(cfg) = unmask::model::ModelConfig::from_value(&v, file) {
            accepted += 1;
            let _ = cfg.parameter_count();
            assert!(cfg.num_layers <= unmask::model::config::MAX_LAYERS);
            assert!(cfg.rope_theta > 0.0 && cfg.rms_norm_eps >= 0.0);
        }
    }
    assert!(accepted > 0);
}

#[test]
fn fuzz_chat_template_renderer() {
    const PARTS: &[&str] = &[
        "{% for m in messages %}",
        "{% endfor %}",
        "{{ m.content }}",
        "{{ m['role'] }}",
        "{% if add_generation_prompt %}",
        "{% endif %}",
        "{% for i in range(100000) %}",
        "{{ i }}",
        "{{ messages[0].content * 3 }}",
        "{% macro f(n) %}{{ f(n) }}{% endmacro %}",
        "{{ f(1) }}",
        "{{ raise_exception('no') }}",
        "{{ bos_token }}",
        "<|im_start|>",
        "{%",
        "}}",
        "{{ messages|tojson }}",
        "{{ 'a'.upper() }}",
    ];
    let mut rng = ChaCha8Rng::seed_from_u64(56);
    let messages = [
        unmask::chat::Message::system("be brief"),
        unmask::chat::Message::user("def f(x):"),
    ];
    for _ in 0..300 {
        let source: String = (0..rng.random_range(1..10))
            .map(|_| PARTS[rng.random_range(0..PARTS.len())])
            .collect();
        let t = unmask::chat::ChatTemplate {
            source,
            tokens: vec![("bos_token".into(), "<s>".into())],
            file: PathBuf::from("chat_template.jinja"),
        };
        let _ = t.render(&messages, rng.random_bool(0.5));
    }
}
