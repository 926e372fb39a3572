//! The candle training loop: it learns, its checkpoints load and generate, it resumes, and the
//! pieces it relies on (tokenizer, edit corruption) behave.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use candle_core::{DType, Device};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use unmask::sampler::noise::{corrupt, levenshtein};
use unmask::train::{train, NetConfig, TrainOptions};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A tiny run over the repository's own Python scripts.
fn tiny(out: PathBuf, stage1: usize, stage2: usize) -> TrainOptions {
    TrainOptions {
        net: NetConfig::tiny(),
        data: vec![root().join("scripts")],
        tokenizer: root().join("assets/tokenizer.json"),
        out,
        resume: None,
        stage1_steps: stage1,
        stage2_steps: stage2,
        seed: 7,
        seq_len: 64,
        batch_tokens: 512,
        blocks: vec![4, 8],
        block_weights: vec![1.0, 1.0],
        lr1: 1e-2,
        lr2: 3e-3,
        warmup1: 3,
        warmup2: 2,
        save_every: 10,
        quiet: true,
        ..TrainOptions::default()
    }
}

/// Rank of each token by how often `data` uses it (0 = most frequent).
fn frequency_ranks(data: &[u32]) -> std::collections::HashMap<u32, usize> {
    let mut counts: std::collections::HashMap<u32, usize> = std::collections::HashMap::new();
    for &t in data {
        *counts.entry(t).or_default() += 1;
    }
    let mut by: Vec<(u32, usize)> = counts.into_iter().collect();
    by.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    by.into_iter()
        .enumerate()
        .map(|(i, (t, _))| (t, i))
        .collect()
}

fn mean(xs: &[f32]) -> f32 {
    xs.iter().sum::<f32>() / xs.len() as f32
}

#[test]
fn training_lowers_the_loss_loads_generates_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let logs = train(&tiny(out.clone(), 25, 5)).unwrap();
    assert_eq!(logs.len(), 30);
    let losses: Vec<f32> = logs.iter().map(|r| r.loss).collect();
    let (first, last) = (mean(&losses[..5]), mean(&losses[25..]));
    assert!(
        last < first - 0.5,
        "loss did not fall: first 5 {first:.3}, last 5 {last:.3} ({losses:?})"
    );
    assert!(logs[25..].iter().all(|r| r.stage == 2));
    assert!(out.join("train_log.jsonl").is_file());

    // The checkpoint is an ordinary model folder.
    let model = unmask::model::DiffusionModel::load(&out, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(model.family(), unmask::model::Family::Sdar);
    assert_eq!(model.mask_id(), 1);
    let params = unmask::presets::reference_params(model.family(), Some(8), 16);
    let task = unmask::session::TextTask::Complete {
        prompt: "def add(a, b):\n".into(),
    };
    let trace = unmask::session::generate(
        &model,
        &task,
        false,
        &params,
        "cpu",
        &AtomicBool::new(false),
        &mut |_| {},
    )
    .unwrap();
    assert!(!trace.is_empty(), "generation took no step");
    // What it generated: no mask left, and tokens the data uses often. 30 steps teach a tiny model
    // the unigram statistics of its data; untrained weights pick tokens nearly uniformly from the
    // 4096 (median frequency rank in the thousands).
    let fin = trace.finish.as_ref().expect("finished");
    assert!(
        !fin.tokens.is_empty() && !fin.tokens.contains(&1),
        "{:?}",
        fin.tokens
    );
    // A healed prompt's first token re-types the backed-off newline; the text continues the
    // prompt as typed, so it lacks that prefix.
    let healed = trace.header.heal.as_ref().map_or("", |h| h.text.as_str());
    assert_eq!(format!("{healed}{}", fin.text), model.decode(&fin.tokens));
    let data = unmask::train::batch::load_tokens(
        &[root().join("scripts")],
        &root().join("assets/tokenizer.json"),
    )
    .unwrap();
    let rank = frequency_ranks(&data);
    let mut ranks: Vec<usize> = fin
        .tokens
        .iter()
        .map(|t| rank.get(t).copied().unwrap_or(usize::MAX))
        .collect();
    ranks.sort_unstable();
    let median = ranks[ranks.len() / 2];
    eprintln!("generated {:?}: frequency ranks {ranks:?}", fin.text);
    assert!(
        median < 100,
        "median frequency rank {median} of {:?} ({ranks:?})",
        fin.text
    );

    // The resume file holds the step and the very weights of the loadable folder.
    let resume = std::fs::read(out.join(unmask::train::RESUME_FILE)).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&resume).unwrap();
    let state: serde_json::Value =
        serde_json::from_str(&meta.metadata().as_ref().unwrap()["train_state"]).unwrap();
    assert_eq!(state["step"], 30);
    let resume = safetensors::SafeTensors::deserialize(&resume).unwrap();
    let weights = std::fs::read(out.join("model.safetensors")).unwrap();
    let weights = safetensors::SafeTensors::deserialize(&weights).unwrap();
    assert!(weights.len() > 10);
    for (name, t) in weights.tensors() {
        let r = resume.tensor(&format!("param.{name}")).unwrap();
        assert_eq!(r.data(), t.data(), "{name}");
    }

    // Resume from step 30 for 5 more steps.
    let mut more = tiny(out.clone(), 25, 10);
    more.resume = Some(out.clone());
    let logs2 = train(&more).unwrap();
    assert_eq!(
        logs2.iter().map(|r| r.step).collect::<Vec<_>>(),
        (31..=35).collect::<Vec<_>>()
    );
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("train_state.json")).unwrap())
            .unwrap();
    assert_eq!(state["step"], 35);
}

#[test]
fn resume_matches_an_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let straight = train(&tiny(dir.path().join("a"), 6, 2)).unwrap();
    let part = dir.path().join("b");
    let mut first = tiny(part.clone(), 6, 2);
    first.stop_at = Some(4);
    assert_eq!(train(&first).unwrap().len(), 4);
    let mut rest = tiny(part.clone(), 6, 2);
    rest.resume = Some(part);
    let resumed = train(&rest).unwrap();
    assert_eq!(resumed.first().map(|s| s.step), Some(5));
    // Same batches (RNG seeded per step), same weights and optimizer moments: same losses.
    for (a, b) in straight[4..].iter().zip(&resumed) {
        assert_eq!(a.step, b.step);
        assert!(
            (a.loss - b.loss).abs() < 1e-4,
            "step {}: straight {} vs resumed {}",
            a.step,
            a.loss,
            b.loss
        );
    }
}

#[test]
fn embedded_tokenizer_round_trips_python() {
    let tok = tokenizers::Tokenizer::from_file(root().join("assets/tokenizer.json")).unwrap();
    let snippets = [
        "def add(a, b):\n    return a + b\n",
        "import os\nfrom pathlib import Path\n\nprint(Path('.').resolve())\n",
        "class Stack:\n\tdef __init__(self):\n\t\tself.items = []\n",
        "x = {'a': [1, 2.5e-3, None], \"b\": (True,)}  # comment ünïcode ✓\n",
        "    \n\n  trailing spaces   \r\n",
        "lambda *args, **kw: f\"{args!r:>10}\"",
    ];
    for s in snippets {
        let enc = tok.encode(s, false).unwrap();
        let back = tok.decode(enc.get_ids(), false).unwrap();
        assert_eq!(back, s, "round trip of {s:?} via {:?}", enc.get_ids());
    }
}

#[test]
fn corruption_stays_within_its_levenshtein_budget() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let vocab: Vec<u32> = (3..4096).collect();
    let tokens: Vec<u32> = (0..64).map(|i| 100 + i).collect();
    for budget in 0..12 {
        for _ in 0..50 {
            let out = corrupt(&tokens, budget, &vocab, &mut rng);
            let d = levenshtein(&tokens, &out);
            assert!(d <= budget, "budget {budget} gave distance {d}");
        }
    }
    // Stage-2 blocks keep their length and change at least one token.
    for _ in 0..200 {
        let window: Vec<u32> = (0..16).map(|i| 500 + i).collect();
        let e = unmask::train::batch::edit_block(&window, 8, &vocab, 0.3, 0.0, &mut rng);
        assert_eq!(e.len(), 8);
        assert_ne!(&e[..], &window[..8]);
    }
}
