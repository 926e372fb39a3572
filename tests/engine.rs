//! The model core against the reference implementations' golden logits, the KV cache against
//! the full forward, and every bad-checkpoint case against its error message.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use unmask::model::{CpuKernels, DiffusionModel, KvCache, Mask, ModelInfo};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn golden(name: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture(name).join("golden.safetensors"), &Device::Cpu)
        .expect("golden file")
}

fn rel_err(ours: &Tensor, reference: &Tensor) -> f32 {
    let d = (ours - reference)
        .unwrap()
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
        .sqrt();
    let r = reference
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
        .sqrt();
    d / r
}

fn ids(g: &HashMap<String, Tensor>) -> Vec<u32> {
    g["input_ids"]
        .to_dtype(DType::I64)
        .unwrap()
        .to_vec1::<i64>()
        .unwrap()
        .into_iter()
        .map(|x| x as u32)
        .collect()
}

fn load(name: &str) -> DiffusionModel {
    DiffusionModel::load(&fixture(name), DType::F32, &Device::Cpu)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Prepares and runs `task` on `m` on the CPU, uncancelled.
fn run_task(
    m: &DiffusionModel,
    task: unmask::sampler::Task,
    params: &unmask::sampler::SamplerParams,
) -> unmask::trace::Trace {
    let header = unmask::session::prepare(m, &task, params, "", "cpu").unwrap();
    unmask::session::run(
        m,
        header,
        "cpu",
        &std::sync::atomic::AtomicBool::new(false),
        &mut |_| {},
    )
    .unwrap()
}

/// Relative error allowed against the reference PyTorch logits: measured 5e-7 … 7e-7 (f32 on both
/// sides, different summation orders); a real bug (a wrong mask, shift, RoPE or norm) costs > 1e-2.
const PARITY_TOL: f32 = 1e-5;

fn check_parity(name: &str, block: usize, key: &str) {
    let m = load(name);
    let g = golden(name);
    let logits = m.forward_all(&ids(&g), block).unwrap();
    let want = &g[key];
    assert_eq!(logits.dims(), want.dims(), "{name}: logits shape");
    let e = rel_err(&logits, want);
    assert!(e <= PARITY_TOL, "{name} ({key}): relative error {e}");
}

#[test]
fn llada_matches_reference_logits() {
    check_parity("llada", 4, "logits");
}

#[test]
fn dream_matches_reference_logits_with_shift() {
    check_parity("dream", 4, "logits");
    // The unshifted rows are the reference model's own output.
    let m = load("dream");
    let g = golden("dream");
    let raw = m
        .net
        .forward(
            &ids(&g),
            0,
            &mut KvCache::new(),
            0,
            Mask::Full,
            0..ids(&g).len(),
        )
        .unwrap();
    let e = rel_err(&raw, &g["raw_logits"]);
    assert!(e <= PARITY_TOL, "dream raw logits: relative error {e}");
}

#[test]
fn dream_bf16_weights_load_and_match() {
    check_parity("dream-bf16", 4, "logits");
}

#[test]
fn sdar_matches_reference_logits_across_blocks() {
    check_parity("sdar", 4, "logits");
    check_parity("sdar", 8, "logits_b8");
}

#[test]
fn sdar_kv_cache_equals_full_forward() {
    let m = load("sdar");
    let g = golden("sdar");
    let ids = ids(&g);
    let b = 4;
    let blocks: Vec<usize> = (0..ids.len()).map(|i| i / b).collect();
    let full = m
        .net
        .forward(
            &ids,
            0,
            &mut KvCache::new(),
            0,
            Mask::BlockCausal(&blocks),
            0..ids.len(),
        )
        .unwrap();
    // Append blocks one at a time; each block's logits come from the cache plus the block itself.
    let mut cache = KvCache::new();
    let mut rows = Vec::new();
    for s in (0..ids.len()).step_by(b) {
        let e = (s + b).min(ids.len());
        let chunk = m
            .net
            .forward(
                &ids[s..e],
                s,
                &mut cache,
                e - s,
                Mask::BlockCausal(&blocks),
                0..e - s,
            )
            .unwrap();
        rows.push(chunk);
        assert_eq!(cache.len(), e);
    }
    let cached = Tensor::cat(&rows, 0).unwrap();
    let err = rel_err(&cached, &full);
    assert!(err <= 1e-5, "cached vs full forward: {err}");
    // And against the reference.
    let e = rel_err(&cached, &g["logits"]);
    assert!(e <= PARITY_TOL, "cached vs reference: {e}");
}

/// The CPU's slice kernels against candle's tensor path on the same weights: block-causal and
/// full attention (and block ids out of position order), a cache filled in several chunks with scratch rows past what is appended, rows
/// asked for out of order and twice, and qkv biases (Dream) and q/k norms (SDAR).
#[test]
fn host_kernels_match_the_candle_forward() {
    for name in ["llada", "dream", "sdar"] {
        let load =
            |k| DiffusionModel::load_with(&fixture(name), DType::F32, &Device::Cpu, k).unwrap();
        let (host, candle) = (load(CpuKernels::Host), load(CpuKernels::Candle));
        assert_eq!(host.net.kernels(), CpuKernels::Host);
        assert_eq!(candle.net.kernels(), CpuKernels::Candle);
        // The golden ids, then enough more (cycled) that a chunk spans several of the host
        // attention's 64-row work items.
        let golden_ids = ids(&golden(name));
        let ids: Vec<u32> = golden_ids.iter().cycle().take(200).copied().collect();
        let n = ids.len();
        let blocks: Vec<usize> = (0..n).map(|i| i / 3).collect();
        // Block ids that do not grow with the position (every fifth position in a late block):
        // the host's prefix shortcut must fall back to testing each key.
        let shuffled: Vec<usize> = (0..n).map(|i| if i % 5 == 4 { n } else { i / 3 }).collect();
        for mask in [
            Mask::BlockCausal(&blocks),
            Mask::BlockCausal(&shuffled),
            Mask::Full,
        ] {
            let (mut ch, mut cc) = (KvCache::new(), KvCache::new());
            // (chunk start, chunk end, positions appended, rows asked for)
            let p = n / 2;
            let plan: [(usize, usize, usize, Vec<usize>); 3] = [
                (0, p, p - 1, vec![p - 1, 0, p - 1, 2]),
                (p - 1, n, 2, vec![3, 1, 0]),
                (p + 1, n, 0, (0..n - p - 1).rev().collect()),
            ];
            // Out-of-order ids only in one uncached chunk: the candle path's cached chunks assume
            // that every cached position is visible, which holds for the sampler's layouts only.
            let chunks = if mask_is(&mask, &shuffled) {
                1
            } else {
                plan.len()
            };
            for (s, e, append, rows) in plan.into_iter().take(chunks) {
                let run = |m: &DiffusionModel, c: &mut KvCache| {
                    m.net
                        .forward_rows(&ids[s..e], s, c, append, mask, &rows)
                        .unwrap()
                };
                let (a, b) = (run(&host, &mut ch), run(&candle, &mut cc));
                assert_eq!(a.dims(), b.dims());
                let err = rel_err(&a, &b);
                assert!(err <= 1e-5, "{name} chunk {s}..{e}: host vs candle {err}");
                assert_eq!(ch.len(), cc.len());
            }
        }
    }
}

fn mask_is(mask: &Mask<'_>, ids: &[usize]) -> bool {
    matches!(mask, Mask::BlockCausal(b) if b.as_ptr() == ids.as_ptr())
}

/// `adopt_scratch` keeps the keys/values a forward wrote past the cache: when the inputs do not
/// change, that is exactly what appending them would have stored, on both kernels.
#[test]
fn adopting_scratch_equals_appending_the_same_inputs() {
    for kernels in [CpuKernels::Host, CpuKernels::Candle] {
        let m =
            DiffusionModel::load_with(&fixture("sdar"), DType::F32, &Device::Cpu, kernels).unwrap();
        let ids = ids(&golden("sdar"));
        let b = 4;
        let blocks: Vec<usize> = (0..ids.len()).map(|i| i / b).collect();
        let mask = Mask::BlockCausal(&blocks);
        // Both: block 0 cached. Appended: block 1 with append, then block 2.
        let mut appended = KvCache::new();
        m.net
            .forward(&ids[..b], 0, &mut appended, b, mask, 0..1)
            .unwrap();
        let mut adopted = appended.clone();
        m.net
            .forward(&ids[b..2 * b], b, &mut appended, b, mask, 0..b)
            .unwrap();
        let want = m
            .net
            .forward(&ids[2 * b..3 * b], 2 * b, &mut appended, 0, mask, 0..b)
            .unwrap();
        // Adopted: block 1 as scratch (append 0), adopted, then block 2.
        m.net
            .forward(&ids[b..2 * b], b, &mut adopted, 0, mask, 0..b)
            .unwrap();
        assert_eq!(adopted.len(), b);
        assert!(
            !adopted.clone().adopt_scratch(b + 1),
            "more than was written"
        );
        assert!(adopted.adopt_scratch(b));
        assert_eq!(adopted.len(), 2 * b);
        let got = m
            .net
            .forward(&ids[2 * b..3 * b], 2 * b, &mut adopted, 0, mask, 0..b)
            .unwrap();
        let err = rel_err(&got, &want);
        assert!(err <= 1e-6, "{kernels:?}: adopted vs appended {err}");
    }
}

/// On the CPU, f16 / bf16 mean half-precision weights under the host kernels' f32 arithmetic:
/// the logits stay within the weights' rounding of the f32 forward.
#[test]
fn host_kernels_hold_half_precision_weights() {
    let ids = ids(&golden("sdar"));
    let blocks: Vec<usize> = (0..ids.len()).map(|i| i / 4).collect();
    let logits = |dtype| {
        let m = DiffusionModel::load_with(&fixture("sdar"), dtype, &Device::Cpu, CpuKernels::Host)
            .unwrap();
        assert_eq!(m.net.kernels(), CpuKernels::Host);
        m.net
            .forward(
                &ids,
                0,
                &mut KvCache::new(),
                0,
                Mask::BlockCausal(&blocks),
                0..ids.len(),
            )
            .unwrap()
    };
    let full = logits(DType::F32);
    for (dtype, tol) in [(DType::F16, 5e-3), (DType::BF16, 3e-2)] {
        let err = rel_err(&logits(dtype), &full);
        assert!(err > 0.0 && err <= tol, "{dtype:?} weights: {err}");
    }
}

/// A canvas at the context limit decodes on the host kernels one position at a time up to the
/// last position; one position more is refused by name, and the cache is left as it was.
#[test]
fn host_forward_at_the_context_limit() {
    let m = load("sdar");
    let ctx = m.info.config.max_position_embeddings;
    let ids: Vec<u32> = ids(&golden("sdar")).into_iter().cycle().take(ctx).collect();
    let blocks: Vec<usize> = (0..ctx + 1).collect();
    let mut cache = KvCache::new();
    m.net
        .forward(
            &ids[..ctx - 1],
            0,
            &mut cache,
            ctx - 1,
            Mask::BlockCausal(&blocks),
            0..1,
        )
        .unwrap();
    let last = m
        .net
        .forward(
            &ids[ctx - 1..],
            ctx - 1,
            &mut cache,
            1,
            Mask::BlockCausal(&blocks),
            0..1,
        )
        .unwrap();
    assert_eq!(last.dims(), &[1, m.info.config.embedding_size]);
    assert_eq!(cache.len(), ctx);
    let err = m
        .net
        .forward(
            &ids[..1],
            ctx,
            &mut cache,
            1,
            Mask::BlockCausal(&blocks),
            0..1,
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("exceed the model's context"), "{err}");
    assert_eq!(cache.len(), ctx);
}

#[test]
fn inspect_reports_sources_of_special_ids() {
    let (info, _) = ModelInfo::inspect(&fixture("sdar")).unwrap();
    assert!(
        info.mask.source.contains("<MASK>"),
        "sdar mask comes from the tokenizer: {}",
        info.mask.source
    );
    assert!(!info.stops.value.is_empty());
    let (info, _) = ModelInfo::inspect(&fixture("dream")).unwrap();
    assert!(
        info.mask.source.contains("config.json"),
        "{}",
        info.mask.source
    );
    let s = info.summary();
    assert!(s.contains("Dream") && s.contains("mask id"), "{s}");
}

#[test]
fn published_sdar_4b_metadata_is_accepted() {
    let dir = fixture("sdar-4b-chat-published");
    let (info, tok) = ModelInfo::inspect(&dir).unwrap();
    assert_eq!(info.config.family, unmask::model::Family::Sdar);
    assert_eq!(info.mask.value, 151669);
    assert!(info.stops.value.contains(&151645) && info.stops.value.contains(&151643));
    assert_eq!(info.config.num_layers, 36);
    let tok = tok.expect("tokenizer built from vocab.json + merges.txt");
    assert_eq!(tok.token_to_id("<MASK>"), Some(151669));
    let enc = tok
        .encode("def add(a, b):\n    return a + b", false)
        .unwrap();
    assert_eq!(
        tok.decode(enc.get_ids(), false).unwrap(),
        "def add(a, b):\n    return a + b"
    );
    assert!(info
        .chat_template
        .as_deref()
        .unwrap_or("")
        .contains("<|im_start|>"));
    // About 4.0 B parameters.
    assert!(
        (3.9e9..4.5e9).contains(&(info.parameters as f64)),
        "{}",
        info.parameters
    );
}

/// A copy of a fixture in a temporary folder, to break.
fn broken_copy(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(fixture(name)).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.path().join(e.file_name())).unwrap();
    }
    dir
}

fn edit_config(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let p = dir.join("config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(&p, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

fn load_err(dir: &Path) -> String {
    match DiffusionModel::load(dir, DType::F32, &Device::Cpu) {
        Ok(_) => panic!("{} loaded but should not", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn unknown_architecture_lists_supported_ones() {
    let d = broken_copy("dream");
    edit_config(d.path(), |v| {
        v["architectures"] = serde_json::json!(["MambaForCausalLM"]);
        v["model_type"] = serde_json::json!("mamba");
    });
    let e = load_err(d.path());
    assert!(
        e.contains("config.json")
            && e.contains("MambaForCausalLM")
            && e.contains("SDARForCausalLM"),
        "{e}"
    );
}

#[test]
fn missing_config_field_is_named() {
    let d = broken_copy("sdar");
    edit_config(d.path(), |v| {
        v.as_object_mut().unwrap().remove("hidden_size");
    });
    let e = load_err(d.path());
    assert!(
        e.contains("config.json") && e.contains("hidden_size") && e.contains("missing"),
        "{e}"
    );
}

#[test]
fn missing_and_truncated_weights_name_the_file() {
    let d = broken_copy("dream");
    std::fs::remove_file(d.path().join("model.safetensors")).unwrap();
    let e = load_err(d.path());
    assert!(e.contains("no weights found"), "{e}");

    let d = broken_copy("dream");
    let p = d.path().join("model.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    let e = load_err(d.path());
    assert!(
        e.contains("model.safetensors") && e.contains("safetensors"),
        "{e}"
    );

    let d = broken_copy("sdar");
    std::fs::remove_file(d.path().join("model-00002-of-00002.safetensors")).unwrap();
    let e = load_err(d.path());
    assert!(e.contains("model-00002-of-00002.safetensors"), "{e}");

    let d = broken_copy("sdar");
    std::fs::write(
        d.path().join("model-00001-of-00002.safetensors"),
        b"\x08\x00\x00\x00\x00\x00\x00\x00{}",
    )
    .unwrap();
    let e = load_err(d.path());
    assert!(e.contains("model-00001-of-00002.safetensors"), "{e}");
}

fn rewrite_weights(dir: &Path, f: impl FnOnce(&mut HashMap<String, Tensor>)) {
    let p = dir.join("model.safetensors");
    let mut map = candle_core::safetensors::load(&p, &Device::Cpu).unwrap();
    f(&mut map);
    candle_core::safetensors::save(&map, &p).unwrap();
}

#[test]
fn wrong_shape_and_missing_tensor_are_named() {
    let d = broken_copy("llada");
    let name = "model.transformer.blocks.1.q_proj.weight";
    rewrite_weights(d.path(), |m| {
        m.insert(
            name.into(),
            Tensor::zeros((3, 5), DType::F32, &Device::Cpu).unwrap(),
        );
    });
    let e = load_err(d.path());
    assert!(e.contains(name) && e.contains("[3, 5]"), "{e}");

    let d = broken_copy("llada");
    let name = "model.transformer.ln_f.weight";
    rewrite_weights(d.path(), |m| {
        m.remove(name);
    });
    let e = load_err(d.path());
    assert!(e.contains(name) && e.contains("missing"), "{e}");
}

#[test]
fn tokenizer_problems_are_named() {
    let d = broken_copy("dream");
    std::fs::remove_file(d.path().join("tokenizer.json")).unwrap();
    let e = load_err(d.path());
    assert!(e.contains("tokenizer.json") && e.contains("missing"), "{e}");

    let d = broken_copy("dream");
    edit_config(d.path(), |v| v["vocab_size"] = serde_json::json!(64));
    let e = load_err(d.path());
    assert!(e.contains("tokenizer") && e.contains("64"), "{e}");

    let d = broken_copy("dream");
    std::fs::write(d.path().join("tokenizer.json"), "{ not json").unwrap();
    let e = load_err(d.path());
    assert!(e.contains("tokenizer.json"), "{e}");
}

/// The published samplers' token outputs on the tiny checkpoints, reproduced by our sampler with
/// the corresponding settings (see tests/fixtures/README.md for how they were recorded).
mod reference_samplers {
    use super::*;
    use unmask::sampler::{SamplerParams, Schedule, Task, UnmaskRule};

    fn cases(name: &str) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(fixture(name).join("golden_generate.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    fn u32s(v: &serde_json::Value) -> Vec<u32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    }

    fn decode(m: &DiffusionModel, prompt: Vec<u32>, params: SamplerParams) -> Vec<u32> {
        let trace = run_task(
            m,
            Task::Complete {
                prompt: prompt.clone(),
            },
            &params,
        );
        let mut out = prompt;
        out.extend(trace.finish.unwrap().tokens);
        out
    }

    #[test]
    fn llada_generate() {
        let m = load("llada");
        for c in cases("llada") {
            let s = &c["settings"];
            let gen = s["gen_length"].as_u64().unwrap() as usize;
            let block = s["block_length"].as_u64().unwrap() as usize;
            let steps = s["steps"].as_u64().unwrap() as usize / (gen / block);
            let params = SamplerParams {
                gen_length: gen,
                block_size: block,
                steps,
                rule: UnmaskRule::LowConfidence,
                schedule: Schedule::Uniform,
                stop_at_eos: false,
                kv_cache: false,
                ..Default::default()
            };
            assert_eq!(
                decode(&m, u32s(&c["prompt_ids"]), params),
                u32s(&c["output_ids"]),
                "{s}"
            );
        }
    }

    #[test]
    fn dream_diffusion_generate() {
        let m = load("dream");
        for c in cases("dream") {
            let s = &c["settings"];
            let gen = s["max_new_tokens"].as_u64().unwrap() as usize;
            let rule = match s["alg"].as_str().unwrap() {
                "entropy" => UnmaskRule::Entropy,
                "maskgit_plus" => UnmaskRule::LowConfidence,
                "topk_margin" => UnmaskRule::Margin,
                other => panic!("unexpected alg {other}"),
            };
            // `top_k: None` reaches Dream's sampler as 50: transformers fills unset generation
            // fields with its global defaults, so the reference filters to the top 50 tokens.
            let params = SamplerParams {
                gen_length: gen,
                block_size: gen,
                steps: s["steps"].as_u64().unwrap() as usize,
                rule,
                top_k: s["effective_top_k"].as_u64().unwrap_or(50) as usize,
                schedule: Schedule::Timestep,
                stop_at_eos: false,
                kv_cache: false,
                ..Default::default()
            };
            assert_eq!(
                decode(&m, u32s(&c["prompt_ids"]), params),
                u32s(&c["output_ids"]),
                "{s}"
            );
        }
    }

    #[test]
    fn sdar_block_diffusion_generate_with_and_without_cache() {
        let m = load("sdar");
        let mask = m.mask_id();
        for c in cases("sdar")
            .into_iter()
            .filter(|c| c["portable"].as_bool() == Some(true))
        {
            let s = &c["settings"];
            let rule = match s["remasking_strategy"].as_str().unwrap() {
                "sequential" => UnmaskRule::LeftToRight,
                "low_confidence_static" => UnmaskRule::LowConfidence,
                "low_confidence_dynamic" => UnmaskRule::Threshold,
                other => panic!("unexpected strategy {other}"),
            };
            let want: Vec<u32> = u32s(&c["output_ids"])
                .into_iter()
                .take_while(|&t| t != mask)
                .collect();
            for kv_cache in [true, false] {
                let params = SamplerParams {
                    gen_length: s["gen_length"].as_u64().unwrap() as usize,
                    block_size: s["block_length"].as_u64().unwrap() as usize,
                    steps: s["denoising_steps"].as_u64().unwrap() as usize,
                    rule,
                    threshold: s["confidence_threshold"].as_f64().unwrap() as f32,
                    schedule: Schedule::Uniform,
                    stop_at_eos: true,
                    kv_cache,
                    ..Default::default()
                };
                assert_eq!(
                    decode(&m, u32s(&c["prompt_ids"]), params),
                    want,
                    "{s} kv_cache={kv_cache}"
                );
            }
        }
    }
}

#[test]
fn dream_margin_cases_are_recorded() {
    let text = std::fs::read_to_string(fixture("dream").join("golden_generate.json")).unwrap();
    assert!(
        text.contains("topk_margin"),
        "regenerate the fixtures: the margin rule needs its golden ids"
    );
}

#[test]
fn bidirectional_prefix_cache_is_opt_in_and_starts_like_the_exact_path() {
    use unmask::sampler::{SamplerParams, Task};
    let m = load("dream");
    let run = |approx_cache: bool| {
        let params = SamplerParams {
            gen_length: 8,
            block_size: 4,
            steps: 4,
            stop_at_eos: false,
            approx_cache,
            ..Default::default()
        };
        run_task(
            &m,
            Task::Complete {
                prompt: vec![376, 220, 80, 84, 72, 307],
            },
            &params,
        )
    };
    let exact = run(false);
    let approx = run(true);
    // The first step of each block comes from the full refresh forward: identical to the exact path.
    assert_eq!(exact.events[0].commits, approx.events[0].commits);
    // Later steps feed only the block and what follows it, on top of the cached prefix.
    assert!(approx.events[1].in_flight < exact.events[1].in_flight);
    assert!(!approx.tokens_at(approx.len()).contains(&m.mask_id()));
}

#[test]
fn infill_keeps_prefix_and_suffix() {
    use std::sync::atomic::AtomicBool;
    use unmask::sampler::{SamplerParams, Task};
    let m = load("dream");
    let (prefix, suffix) = (vec![376u32, 220, 80], vec![84u32, 72, 307]);
    let params = SamplerParams {
        gen_length: 4,
        block_size: 4,
        steps: 2,
        stop_at_eos: false,
        ..Default::default()
    };
    let header = unmask::session::prepare(
        &m,
        &Task::Infill {
            prefix: prefix.clone(),
            suffix: suffix.clone(),
        },
        &params,
        "",
        "cpu",
    )
    .unwrap();
    assert_eq!((header.gen_start, header.gen_end), (3, 7));
    let t = unmask::session::run(&m, header, "cpu", &AtomicBool::new(false), &mut |_| {}).unwrap();
    let fin = t.tokens_at(t.len());
    assert_eq!(&fin[..3], &prefix[..]);
    assert_eq!(&fin[7..], &suffix[..]);
    assert!(!fin.contains(&m.mask_id()));
    // The bidirectional model saw the suffix: changing it changes the infill's logits.
    let a = m
        .forward_all(&[376, 220, 80, 399, 399, 84, 72, 307], 4)
        .unwrap();
    let b = m
        .forward_all(&[376, 220, 80, 399, 399, 5, 6, 7], 4)
        .unwrap();
    let diff = (a.narrow(0, 3, 2).unwrap() - b.narrow(0, 3, 2).unwrap())
        .unwrap()
        .abs()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(diff > 1e-3);
}

#[test]
fn block_one_step_one_is_greedy_autoregressive_decoding() {
    use unmask::sampler::{SamplerParams, Task};
    let m = load("sdar");
    let mask = m.mask_id();
    let prompt = vec![376u32, 220, 80, 84, 72];
    // By hand: append one mask, take the most likely non-mask token there, repeat.
    let mut ids = prompt.clone();
    for _ in 0..10 {
        let mut x = ids.clone();
        x.push(mask);
        let logits = m.forward_all(&x, 1).unwrap();
        let mut row = logits.get(x.len() - 1).unwrap().to_vec1::<f32>().unwrap();
        row[mask as usize] = f32::NEG_INFINITY;
        ids.push(unmask::sampler::propose::argmax(&row).0 as u32);
    }
    for kv_cache in [true, false] {
        let params = SamplerParams {
            gen_length: 10,
            block_size: 1,
            steps: 1,
            stop_at_eos: false,
            kv_cache,
            ..Default::default()
        };
        let t = run_task(
            &m,
            Task::Complete {
                prompt: prompt.clone(),
            },
            &params,
        );
        assert_eq!(t.tokens_at(t.len()), ids, "kv_cache={kv_cache}");
    }
}

#[test]
fn worker_thread_cancels_the_old_run_and_not_the_next() {
    use std::sync::Arc;
    use std::time::Duration;
    use unmask::engine::{Command, Engine, Event};
    use unmask::sampler::SamplerParams;
    use unmask::session::TextTask;
    let engine = Engine::spawn(|| {});
    engine.send(Command::SetModel {
        model: Arc::new(load("sdar")),
        device: "cpu".into(),
    });
    let task = TextTask::Complete {
        prompt: "fn".into(),
    };
    let long = SamplerParams {
        gen_length: 400,
        block_size: 1,
        steps: 1,
        stop_at_eos: false,
        ..Default::default()
    };
    let short = SamplerParams {
        gen_length: 8,
        block_size: 4,
        steps: 2,
        stop_at_eos: false,
        ..Default::default()
    };
    engine.send(Command::Generate {
        run: 1,
        task: task.clone(),
        chat: false,
        params: long,
    });
    // Wait for the first step, then cancel and queue the next run straight away.
    loop {
        match engine
            .recv_timeout(Duration::from_secs(30))
            .expect("engine answers")
        {
            Event::Step { run: 1, .. } => break,
            Event::Failed { error, .. } => panic!("{error}"),
            _ => {}
        }
    }
    engine.cancel();
    engine.send(Command::Generate {
        run: 2,
        task,
        chat: false,
        params: short,
    });
    let mut finished = Vec::new();
    while finished.len() < 2 {
        if let Event::Finished { run, trace, .. } = engine
            .recv_timeout(Duration::from_secs(30))
            .expect("engine answers")
        {
            finished.push((run, trace.finish.unwrap().reason, trace.events.len()));
        }
    }
    assert_eq!(finished[0].0, 1);
    assert_eq!(finished[0].1, unmask::trace::FinishReason::Cancelled);
    assert!(
        finished[0].2 < 400,
        "stopped early, after {} steps",
        finished[0].2
    );
    assert_eq!(finished[1].0, 2);
    assert_eq!(finished[1].1, unmask::trace::FinishReason::Complete);
}

/// The denoiser writes each forward's logits into the buffer of the step before (handed back by
/// `recycle`): same logits as a denoiser that allocates every time, through shrinking and
/// growing row sets and both cache kinds, and no new buffer while the rows fit.
#[test]
fn recycled_logit_buffers_give_the_same_logits() {
    use unmask::model::ModelDenoiser;
    use unmask::sampler::{Denoiser, Layout, SamplerParams};
    for (name, approx_cache) in [("dream", false), ("dream", true), ("sdar", false)] {
        let m = load(name);
        let params = SamplerParams {
            approx_cache,
            ..Default::default()
        };
        let prompt = [376u32, 220, 80, 84, 72, 307];
        let gen = 8;
        let mut canvas: Vec<u32> = prompt.to_vec();
        canvas.extend(std::iter::repeat_n(m.mask_id(), gen));
        let layout = Layout::new(canvas.len(), prompt.len()..canvas.len(), 4, false);
        let (mut fresh, mut reuse) = (
            ModelDenoiser::new(&m, &params),
            ModelDenoiser::new(&m, &params),
        );
        fresh.begin(&canvas, &layout).unwrap();
        reuse.begin(&canvas, &layout).unwrap();
        let mut spare: Option<*const f32> = None;
        // (block, rows asked for, a token committed after the step)
        type Step = (usize, Vec<usize>, Option<(usize, u32)>);
        let plan: [Step; 5] = [
            (0, vec![6, 7, 8, 9], Some((7, 11))),
            (0, vec![6, 8, 9], Some((9, 12))),
            (0, vec![6, 7, 8, 9], None),
            (0, vec![8], Some((6, 13))),
            (1, vec![10, 11, 12, 13], None),
        ];
        for (i, (b, need, commit)) in plan.into_iter().enumerate() {
            let block = layout.blocks[b].clone();
            if b > 0 && i > 0 {
                fresh.end_block(layout.blocks[b - 1].clone());
                reuse.end_block(layout.blocks[b - 1].clone());
            }
            let want = fresh.logits(&canvas, block.clone(), &need).unwrap();
            let got = reuse.logits(&canvas, block.clone(), &need).unwrap();
            assert_eq!(got.rows, want.rows, "{name} step {i}");
            assert_eq!(
                got.data.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                want.data.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                "{name} (approx cache {approx_cache}) step {i}: recycled vs fresh logits"
            );
            if let Some(p) = spare {
                if got.data.len() <= 4 * got.vocab {
                    assert_eq!(
                        got.data.as_ptr(),
                        p,
                        "{name} step {i}: the spare was reused"
                    );
                }
            }
            spare = Some(got.data.as_ptr());
            reuse.recycle(got);
            if let Some((pos, tok)) = commit {
                canvas[pos] = tok;
            }
        }
    }
}
