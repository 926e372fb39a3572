//! Prompt-boundary healing on real tokenizers (the embedded model's byte-level BPE and the tiny
//! SDAR / Dream fixtures), through the same session path the window and the CLI use.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use candle_core::{DType, Device};
use unmask::model::DiffusionModel;
use unmask::sampler::{SamplerParams, Task};
use unmask::session::{self, TextTask};
use unmask::trace::Trace;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn load(dir: &Path) -> DiffusionModel {
    DiffusionModel::load(dir, DType::F32, &Device::Cpu)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
}

/// Ends in a blank line: a whitespace-only token for the SDAR fixture's Qwen-style tokenizer.
const SDAR_PROMPT: &str = "x = 1\n\n";

fn embedded() -> DiffusionModel {
    load(&unmask::model::embedded_dir())
}

fn complete(prompt: &str) -> TextTask {
    TextTask::Complete {
        prompt: prompt.into(),
    }
}

fn params(block: usize, gen: usize) -> SamplerParams {
    SamplerParams {
        gen_length: gen,
        block_size: block,
        steps: block,
        stop_at_eos: false,
        ..Default::default()
    }
}

fn run(m: &DiffusionModel, task: &TextTask, p: &SamplerParams) -> Trace {
    session::generate(
        m,
        task,
        false,
        p,
        "cpu",
        &AtomicBool::new(false),
        &mut |_| {},
    )
    .unwrap()
}

#[test]
fn embedded_newline_prompt_is_backed_off_and_the_first_token_retypes_it() {
    let m = embedded();
    let prompt = "def fibonacci(n):\n";
    let ids = m.encode(prompt).unwrap();
    assert_eq!(m.decode(&ids[ids.len() - 1..]), "\n");
    for block in [1, 8] {
        let t = run(&m, &complete(prompt), &params(block, 16));
        let h = t.header.heal.clone().expect("healed");
        assert_eq!(h.text, "\n");
        assert_eq!(h.removed, vec![ids[ids.len() - 1]]);
        // The canvas holds the prompt without its newline; block-causal blocks stay aligned to
        // absolute multiples of the block size.
        assert_eq!(
            &t.header.initial[..t.header.gen_start],
            &ids[..ids.len() - 1]
        );
        assert!(t.events.iter().all(|e| e.block_start % block == 0));
        // Every allowed token re-types the newline, and the first generated token is one of them.
        assert!(h.allowed.iter().all(|&a| m.decode(&[a]).starts_with('\n')));
        assert!(
            h.allowed.len() > 1,
            "longer newline tokens exist in the vocabulary"
        );
        let fin = t.finish.unwrap();
        assert!(h.allowed.contains(&fin.tokens[0]));
        // The text continues the prompt as typed: prompt + text = decoded canvas.
        let mut all = t.header.initial[..t.header.gen_start].to_vec();
        all.extend(&fin.tokens);
        assert_eq!(format!("{prompt}{}", fin.text), m.decode(&all));
    }
}

#[test]
fn healing_off_keeps_the_prompt_as_tokenized() {
    let m = embedded();
    let prompt = "def fibonacci(n):\n";
    let p = SamplerParams {
        heal: false,
        ..params(1, 4)
    };
    let t = run(&m, &complete(prompt), &p);
    assert!(t.header.heal.is_none());
    assert_eq!(
        &t.header.initial[..t.header.gen_start],
        &m.encode(prompt).unwrap()[..]
    );
}

#[test]
fn a_prompt_ending_in_a_word_is_used_as_typed() {
    let m = embedded();
    let mut task = Task::Complete {
        prompt: m.encode("import o").unwrap(),
    };
    assert!(session::heal_task(&m, &mut task).is_none());
    // Trailing spaces and blank lines are healed, several tokens at once when needed.
    let mut task = Task::Complete {
        prompt: m.encode("x = 1\n\n\n").unwrap(),
    };
    let h = session::heal_task(&m, &mut task).expect("healed");
    assert!(h.text.chars().all(|c| c == '\n') && !h.text.is_empty());
    assert!(h
        .allowed
        .iter()
        .all(|&a| m.decode(&[a]).starts_with(&h.text)));
}

#[test]
fn ids_given_directly_are_never_healed() {
    let m = embedded();
    let ids = m.encode("def f(x):\n").unwrap();
    let h = session::prepare(
        &m,
        &Task::Complete {
            prompt: ids.clone(),
        },
        &params(8, 8),
        "",
        "cpu",
    )
    .unwrap();
    assert!(h.heal.is_none());
    assert_eq!(&h.initial[..ids.len()], &ids[..]);
}

#[test]
fn healed_trace_replays_and_survives_a_save() {
    let m = load(&fixture("sdar"));
    // Qwen's pre-tokenizer keeps a newline with the punctuation before it ("):\n" is one token,
    // a natural boundary, not healed), but a blank line is a whitespace-only token.
    let prompt = SDAR_PROMPT;
    let t = run(&m, &complete(prompt), &params(4, 8));
    let h = t.header.heal.clone().expect("healed");
    assert!(h
        .allowed
        .iter()
        .all(|&a| m.decode(&[a]).starts_with(&h.text)));
    let fin = t.finish.clone().unwrap();
    assert!(h.allowed.contains(&fin.tokens[0]));
    let dir = std::env::temp_dir().join(format!("unmask-heal-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("t.jsonl");
    t.save(&path).unwrap();
    let back = Trace::load(&path).unwrap();
    assert_eq!(back.header.heal, t.header.heal);
    let canvas = back.tokens_at(back.len());
    assert_eq!(
        &canvas[t.header.gen_start..t.header.gen_end],
        &fin.tokens[..]
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn chat_templated_prompts_are_not_healed() {
    let m = load(&fixture("sdar"));
    assert!(m.info.chat_template.is_some());
    let plain = run(&m, &complete(SDAR_PROMPT), &params(4, 4));
    assert!(
        plain.header.heal.is_some(),
        "the same prompt is healed without the template"
    );
    let t = session::generate(
        &m,
        &complete(SDAR_PROMPT),
        true,
        &params(4, 4),
        "cpu",
        &AtomicBool::new(false),
        &mut |_| {},
    )
    .unwrap();
    assert!(t.header.heal.is_none());
}

#[test]
fn infill_is_refused_on_block_causal_models_and_healed_on_bidirectional_ones() {
    let task = TextTask::Infill {
        prefix: "def f(x):\n".into(),
        suffix: "    return y\n".into(),
    };
    for dir in [unmask::model::embedded_dir(), fixture("sdar")] {
        let m = load(&dir);
        let err = session::prepare_text(&m, &task, false, &params(4, 8), "cpu").unwrap_err();
        assert!(
            err.to_string().contains("block-causal"),
            "{}: {err}",
            dir.display()
        );
    }
    let m = load(&fixture("dream"));
    let h = session::prepare_text(&m, &task, false, &params(4, 8), "cpu").unwrap();
    let suffix = m.encode("    return y\n").unwrap();
    // The hole is exactly gen_length (no padding) and the suffix follows it.
    assert_eq!(h.gen_end - h.gen_start, 8);
    assert_eq!(&h.initial[h.gen_end..], &suffix[..]);
}

#[cfg(feature = "gui")]
#[test]
fn explain_says_what_was_healed() {
    let m = load(&fixture("sdar"));
    let t = run(&m, &complete(SDAR_PROMPT), &params(4, 8));
    let h = t.header.heal.clone().expect("healed");
    let before = unmask::gui::explain::describe(&t, 0).join(" ");
    assert!(before.contains("Prompt healed"), "{before}");
    assert!(before.contains(&format!("{:?}", h.text)), "{before}");
    // The step that commits the healed position says it again; the others do not.
    let k = t
        .events
        .iter()
        .position(|e| e.commits.iter().any(|c| c.pos == t.header.gen_start))
        .unwrap();
    assert!(unmask::gui::explain::describe(&t, k + 1)
        .join(" ")
        .contains("Prompt healed"));
    let other = (0..t.events.len()).find(|&i| i != k).unwrap();
    assert!(!unmask::gui::explain::describe(&t, other + 1)
        .join(" ")
        .contains("Prompt healed"));
}

#[test]
fn a_qwen_style_newline_after_punctuation_is_a_natural_boundary() {
    // "):\n" is one token of the SDAR fixture's tokenizer: nothing to heal.
    let m = load(&fixture("sdar"));
    let ids = m.encode("def f(x):\n").unwrap();
    assert_eq!(m.decode(&ids[ids.len() - 1..]), "):\n");
    let mut task = Task::Complete { prompt: ids };
    assert!(session::heal_task(&m, &mut task).is_none());
}
