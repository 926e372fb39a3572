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

// ---- fill-in-the-middle ----

use unmask::fim::{self, FimTokens};

const FIM: FimTokens = FimTokens {
    prefix: 4096,
    middle: 4097,
    suffix: 4098,
};

/// Splits a transformed row back into (suffix, prefix, middle) at its sentinels and closing
/// end-of-text, checking the layout on the way.
fn fim_parts(row: &[u32]) -> (Vec<u32>, Vec<u32>, Vec<u32>, usize) {
    assert_eq!(row[0], FIM.suffix, "{row:?}");
    let p = row
        .iter()
        .position(|&t| t == FIM.prefix)
        .expect("prefix sentinel");
    let m = row
        .iter()
        .position(|&t| t == FIM.middle)
        .expect("middle sentinel");
    assert!(p < m, "{row:?}");
    let e = m
        + 1
        + row[m + 1..]
            .iter()
            .position(|&t| t == 0)
            .expect("end-of-text");
    for s in FIM.ids() {
        assert_eq!(row.iter().filter(|&&t| t == s).count(), 1, "{s} in {row:?}");
    }
    (
        row[1..p].to_vec(),
        row[p + 1..m].to_vec(),
        row[m + 1..e].to_vec(),
        e,
    )
}

#[test]
fn fim_transform_lays_out_suffix_prefix_middle_and_keeps_every_token_once() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let l = 32;
    for case in 0..400 {
        // Half the windows hold a document boundary (end-of-text) somewhere, half none.
        let mut window: Vec<u32> = (0..l as u32 + 8).map(|i| 100 + i).collect();
        let eos_at = (case % 2 == 0).then(|| case / 2 % (l - 3));
        if let Some(d) = eos_at {
            window[d] = 0;
        }
        let out = fim::transform(&window, l, 0, &FIM, &mut rng);
        assert_eq!(out.len(), window.len());
        let (s, p, m, e) = fim_parts(&out[..l]);
        // The document is the window up to its first end-of-text (else its first l − 4 tokens),
        // cut into prefix, middle, suffix in order.
        let doc_len = eos_at.unwrap_or(l - 4);
        let doc: Vec<u32> = [p.clone(), m.clone(), s.clone()].concat();
        assert_eq!(doc, window[..doc_len], "case {case}");
        assert_eq!(
            out,
            fim_layout_then_rest(&p, &m, &s, &window, doc_len, eos_at.is_some())
        );
        // The first l tokens: every token of the window's consumed part exactly once, plus the
        // three sentinels (and a closing end-of-text when the window had none).
        let consumed = if eos_at.is_some() { l - 3 } else { l - 4 };
        let mut got: Vec<u32> = out[..l]
            .iter()
            .copied()
            .filter(|t| !FIM.ids().contains(t))
            .collect();
        let mut want = window[..consumed].to_vec();
        if eos_at.is_none() {
            want.push(0);
        }
        got.sort_unstable();
        want.sort_unstable();
        assert_eq!(got, want, "case {case}");
        assert!(e < l);
    }
}

fn fim_layout_then_rest(
    p: &[u32],
    m: &[u32],
    s: &[u32],
    window: &[u32],
    doc_len: usize,
    had_eos: bool,
) -> Vec<u32> {
    let mut v = vec![FIM.suffix];
    v.extend(s);
    v.push(FIM.prefix);
    v.extend(p);
    v.push(FIM.middle);
    v.extend(m);
    v.push(0);
    v.extend(&window[doc_len + usize::from(had_eos)..]);
    v.truncate(window.len());
    v
}

#[test]
fn fim_rate_zero_leaves_batches_unchanged_and_rate_one_rearranges_every_row() {
    use unmask::train::batch::{make_batch, NoiseSpec};
    let data: Vec<u32> = (0..5000u32).map(|i| 3 + (i * 7919) % 4000).collect();
    for stage in [1u8, 2] {
        // The vocabulary before and after the sentinels were added.
        let spec = |fim, vocab_size| NoiseSpec {
            stage,
            edit_prob: 0.5,
            edit_rate_max: 0.3,
            edit_mask_max: 0.5,
            vocab_size,
            fim,
        };
        let batch = |fim, vocab, seed| {
            make_batch(
                &data,
                4,
                64,
                8,
                &spec(fim, vocab),
                &mut ChaCha8Rng::seed_from_u64(seed),
            )
        };
        let (off, zero) = (batch(None, 4096, 5), batch(Some((0.0, FIM)), 4096, 5));
        assert_eq!(
            (off.clean, off.noisy, off.kind),
            (zero.clean, zero.noisy, zero.kind)
        );
        let all = batch(Some((1.0, FIM)), 4099, 5);
        for row in all.clean.chunks(64) {
            fim_parts(row);
        }
        // Edits draw inserted and substituted tokens from ordinary ids only: windows without the
        // layout (rate 0) never gain a sentinel, with the sentinels inside the vocabulary.
        for seed in 0..400 {
            let plain = batch(Some((0.0, FIM)), 4099, seed);
            assert!(
                !plain.noisy.iter().any(|t| FIM.ids().contains(t)),
                "stage {stage}, seed {seed}: an edit inserted a sentinel"
            );
        }
    }
}

#[test]
fn tokenizer_growth_adds_the_sentinels_after_the_vocabulary_and_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let (json, ids) =
        unmask::train::vocab::with_sentinels(&root().join("assets/tokenizer.json")).unwrap();
    assert_eq!(ids, FIM);
    let file = dir.path().join("tokenizer.json");
    std::fs::write(&file, &json).unwrap();
    // Growing again changes nothing; the grown file reads back with the same ids.
    let (again, ids2) = unmask::train::vocab::with_sentinels(&file).unwrap();
    assert_eq!((ids2, &again), (FIM, &json));
    let tok = tokenizers::Tokenizer::from_file(&file).unwrap();
    assert_eq!(tok.get_vocab_size(true), 4099);
    let old = tokenizers::Tokenizer::from_file(root().join("assets/tokenizer.json")).unwrap();
    let code = "def add(a, b):\n    return a + b\n";
    assert_eq!(
        tok.encode(code, false).unwrap().get_ids(),
        old.encode(code, false).unwrap().get_ids()
    );
    // A sentinel is one special token, dropped from decoded text.
    let enc = tok
        .encode("<|fim_suffix|>x<|fim_prefix|>y<|fim_middle|>", false)
        .unwrap();
    let ids = enc.get_ids();
    assert_eq!((ids[0], ids[ids.len() - 1]), (FIM.suffix, FIM.middle));
    assert!(ids.contains(&FIM.prefix));
    assert_eq!(tok.decode(ids, true).unwrap(), "xy");
    // New embedding rows are the mean row; old rows are kept.
    let t = candle_core::Tensor::new(&[[1f32, 2.0], [3.0, 6.0]], &Device::Cpu).unwrap();
    let g = unmask::train::vocab::grow_rows(&t, 4).unwrap();
    assert_eq!(
        g.to_vec2::<f32>().unwrap(),
        vec![
            vec![1.0, 2.0],
            vec![3.0, 6.0],
            vec![2.0, 4.0],
            vec![2.0, 4.0]
        ]
    );
}

#[test]
fn fim_training_grows_a_checkpoint_and_infills_through_the_sampler() {
    use unmask::model::DiffusionModel;
    let dir = tempfile::tempdir().unwrap();
    let task = unmask::session::TextTask::Infill {
        prefix: "def add(a, b):\n".into(),
        suffix: "\n\nprint(add(1, 2))\n".into(),
    };
    let gen = |m: &DiffusionModel| {
        let params = unmask::presets::reference_params(m.family(), Some(8), 24);
        unmask::session::generate(
            m,
            &task,
            false,
            &params,
            "cpu",
            &AtomicBool::new(false),
            &mut |_| {},
        )
    };
    // A block-causal checkpoint without the sentinels: no FIM, infill refused.
    let plain = dir.path().join("plain");
    train(&tiny(plain.clone(), 3, 0)).unwrap();
    let m = DiffusionModel::load(&plain, DType::F32, &Device::Cpu).unwrap();
    assert!(m.info.fim.is_none());
    let err = gen(&m).unwrap_err().to_string();
    assert!(
        err.contains("block-causal") && err.contains("fim_layout"),
        "{err}"
    );

    // FIM training started from it: the embedding and config grow by the sentinels.
    let out = dir.path().join("fim");
    let mut o = tiny(out.clone(), 20, 4);
    o.init = Some(plain.clone());
    o.tokenizer = plain.join("tokenizer.json");
    o.fim_rate = 1.0;
    let logs = train(&o).unwrap();
    assert_eq!(logs.len(), 24);
    assert!(logs.iter().all(|r| r.loss.is_finite()));
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(
        (cfg["vocab_size"].as_u64(), cfg["fim_layout"].as_str()),
        (Some(4099), Some(fim::LAYOUT))
    );
    let weights =
        candle_core::safetensors::load(out.join("model.safetensors"), &Device::Cpu).unwrap();
    assert_eq!(weights["model.embed_tokens.weight"].dims(), &[4099, 32]);

    // It loads, declares FIM, and infills: suffix first, then prefix, then the middle.
    let m = DiffusionModel::load(&out, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(m.info.fim, Some(FIM));
    let trace = gen(&m).unwrap();
    let h = &trace.header;
    assert!(matches!(
        h.task,
        unmask::trace::TaskKind::Infill { fim: true, .. }
    ));
    let suffix = m.encode("\n\nprint(add(1, 2))\n").unwrap();
    let mut prefix = m.encode("def add(a, b):\n").unwrap();
    let healed = h.heal.as_ref().map_or("", |x| x.text.as_str()).to_string();
    prefix.truncate(prefix.len() - h.heal.as_ref().map_or(0, |x| x.removed.len()));
    let context = FIM.context(&prefix, &suffix);
    assert_eq!(h.initial[..h.gen_start], context[..]);
    assert!(h.initial[h.gen_start..].iter().all(|&t| t == 1));
    assert_eq!(h.gen_end, h.initial.len(), "the middle is generated last");
    let fin = trace.finish.as_ref().expect("finished");
    assert!(
        !fin.tokens.is_empty() && !fin.tokens.contains(&1),
        "{:?}",
        fin.tokens
    );
    // The middle is the generated tokens up to end-of-text; the result is prefix + middle + suffix.
    let cut = fin
        .tokens
        .iter()
        .position(|&t| t == 0)
        .unwrap_or(fin.tokens.len());
    assert_eq!(
        format!("{healed}{}", fin.text),
        m.decode(&fin.tokens[..cut])
    );
    let result = format!("def add(a, b):\n{}\n\nprint(add(1, 2))\n", fin.text);
    eprintln!("infilled: {result:?} (stop {:?})", fin.reason);
    assert!(result.starts_with("def add(a, b):\n") && result.ends_with("\n\nprint(add(1, 2))\n"));

    // `unmask eval`'s infill section on it: whole held-out definitions with a hole of 1–3 lines.
    let texts: Vec<String> = std::fs::read_dir(root().join("scripts"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "py"))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    let cases = unmask::cli::eval_infill::cases(&texts, 3);
    assert_eq!(cases.len(), 3);
    for c in &cases {
        let whole = format!("{}{}{}", c.prefix, c.middle, c.suffix);
        assert!(unmask::pycheck::parses(&whole), "{whole}");
        assert!(c.prefix.starts_with("def ") || c.prefix.starts_with("class "));
        assert!(
            c.prefix.ends_with('\n') && c.middle.ends_with('\n') && !c.middle.trim().is_empty()
        );
    }
    let params = unmask::presets::reference_params(m.family(), Some(8), 16);
    let bar = unmask::progress::Progress::new(0, "");
    let r = unmask::cli::eval_infill::run(&m, &cases, "b8", &params, "cpu", &bar).unwrap();
    assert_eq!(r.cases, 3);
    assert!(r.parses <= 3 && r.exact <= r.parses && r.tokens_per_forward > 0.0);
}
