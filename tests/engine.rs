//! The model core against the reference implementations' golden logits, the KV cache against
//! the full forward, and every bad-checkpoint case against its error message.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use unmask::model::{DiffusionModel, KvCache, Mask, ModelInfo};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn golden(name: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture(name).join("golden.safetensors"), &Device::Cpu).expect("golden file")
}

fn rel_err(ours: &Tensor, reference: &Tensor) -> f32 {
    let d = (ours - reference).unwrap().sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap().sqrt();
    let r = reference.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap().sqrt();
    d / r
}

fn ids(g: &HashMap<String, Tensor>) -> Vec<u32> {
    g["input_ids"].to_dtype(DType::I64).unwrap().to_vec1::<i64>().unwrap().into_iter().map(|x| x as u32).collect()
}

fn load(name: &str) -> DiffusionModel {
    DiffusionModel::load(&fixture(name), DType::F32, &Device::Cpu).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn check_parity(name: &str, block: usize, key: &str) {
    let m = load(name);
    let g = golden(name);
    let logits = m.forward_all(&ids(&g), block).unwrap();
    let want = &g[key];
    assert_eq!(logits.dims(), want.dims(), "{name}: logits shape");
    let e = rel_err(&logits, want);
    assert!(e <= 1e-4, "{name} ({key}): relative error {e}");
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
    let raw = m.net.forward(&ids(&g), 0, &mut KvCache::new(), 0, Mask::Full, 0..ids(&g).len()).unwrap();
    assert!(rel_err(&raw, &g["raw_logits"]) <= 1e-4);
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
    let full = m.net.forward(&ids, 0, &mut KvCache::new(), 0, Mask::BlockCausal(&blocks), 0..ids.len()).unwrap();
    // Append blocks one at a time; each block's logits come from the cache plus the block itself.
    let mut cache = KvCache::new();
    let mut rows = Vec::new();
    for s in (0..ids.len()).step_by(b) {
        let e = (s + b).min(ids.len());
        let chunk = m.net.forward(&ids[s..e], s, &mut cache, e - s, Mask::BlockCausal(&blocks), 0..e - s).unwrap();
        rows.push(chunk);
        assert_eq!(cache.len(), e);
    }
    let cached = Tensor::cat(&rows, 0).unwrap();
    let err = rel_err(&cached, &full);
    assert!(err <= 1e-5, "cached vs full forward: {err}");
    // And against the reference.
    assert!(rel_err(&cached, &g["logits"]) <= 1e-4);
}

#[test]
fn inspect_reports_sources_of_special_ids() {
    let (info, _) = ModelInfo::inspect(&fixture("sdar")).unwrap();
    assert!(info.mask.source.contains("<MASK>"), "sdar mask comes from the tokenizer: {}", info.mask.source);
    assert!(!info.stops.value.is_empty());
    let (info, _) = ModelInfo::inspect(&fixture("dream")).unwrap();
    assert!(info.mask.source.contains("config.json"), "{}", info.mask.source);
    let s = info.summary();
    assert!(s.contains("Dream") && s.contains("mask id"), "{s}");
}

#[test]
fn published_sdar_4b_metadata_is_accepted() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/reference/published/SDAR-4B-Chat");
    if !dir.exists() {
        eprintln!("skipped: {} is not beside this checkout", dir.display());
        return;
    }
    let (info, tok) = ModelInfo::inspect(&dir).unwrap();
    assert_eq!(info.config.family, unmask::model::Family::Sdar);
    assert_eq!(info.mask.value, 151669);
    assert!(info.stops.value.contains(&151645) && info.stops.value.contains(&151643));
    assert_eq!(info.config.num_layers, 36);
    let tok = tok.expect("tokenizer built from vocab.json + merges.txt");
    assert_eq!(tok.token_to_id("<MASK>"), Some(151669));
    let enc = tok.encode("def add(a, b):\n    return a + b", false).unwrap();
    assert_eq!(tok.decode(enc.get_ids(), false).unwrap(), "def add(a, b):\n    return a + b");
    assert!(info.chat_template.as_deref().unwrap_or("").contains("<|im_start|>"));
    // About 4.0 B parameters.
    assert!((3.9e9..4.5e9).contains(&(info.parameters as f64)), "{}", info.parameters);
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
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
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
    assert!(e.contains("config.json") && e.contains("MambaForCausalLM") && e.contains("SDARForCausalLM"), "{e}");
}

#[test]
fn missing_config_field_is_named() {
    let d = broken_copy("sdar");
    edit_config(d.path(), |v| {
        v.as_object_mut().unwrap().remove("hidden_size");
    });
    let e = load_err(d.path());
    assert!(e.contains("config.json") && e.contains("hidden_size") && e.contains("missing"), "{e}");
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
    assert!(e.contains("model.safetensors") && e.contains("safetensors"), "{e}");

    let d = broken_copy("sdar");
    std::fs::remove_file(d.path().join("model-00002-of-00002.safetensors")).unwrap();
    let e = load_err(d.path());
    assert!(e.contains("model-00002-of-00002.safetensors"), "{e}");

    let d = broken_copy("sdar");
    std::fs::write(d.path().join("model-00001-of-00002.safetensors"), b"\x08\x00\x00\x00\x00\x00\x00\x00{}").unwrap();
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
        m.insert(name.into(), Tensor::zeros((3, 5), DType::F32, &Device::Cpu).unwrap());
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
