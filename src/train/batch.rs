//! Training data and the two corruption processes of scripts/train_embedded.py.

use std::path::{Path, PathBuf};

use rand::Rng;

use super::{EOS_ID, FIRST_NORMAL, MASK_ID};
use crate::sampler::noise::corrupt;

/// Tokens read past each window so that deletions can pull the following tokens in.
pub const EXTRA: usize = 32;

/// Loads training tokens: a `.u16` file (little-endian ids, as scripts/pretokenize.py writes),
/// a folder holding `train.u16`, or text files / folders of text files tokenized with
/// `tokenizer` (documents joined by end-of-text).
pub fn load_tokens(paths: &[PathBuf], tokenizer: &Path) -> anyhow::Result<Vec<u32>> {
    let mut texts: Vec<PathBuf> = Vec::new();
    let mut ids: Vec<u32> = Vec::new();
    for p in paths {
        let u16_file = if p.is_dir() && p.join("train.u16").is_file() {
            Some(p.join("train.u16"))
        } else if p.extension().is_some_and(|e| e == "u16") {
            Some(p.clone())
        } else {
            None
        };
        if let Some(f) = u16_file {
            let raw = std::fs::read(&f).map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?;
            ids.extend(
                raw.chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]) as u32),
            );
        } else if p.extension().is_some_and(|e| e == "xz") {
            // No xz decoder among the dependencies; the compressed splits are one `xz -dk` away.
            anyhow::bail!(
                "{}: decompress it first (`xz -dk {}`) and pass the .u16 file",
                p.display(),
                p.display()
            );
        } else if p.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.is_file())
                .collect();
            found.sort();
            texts.extend(found);
        } else if p.is_file() {
            texts.push(p.clone());
        } else {
            anyhow::bail!("{}: no such data file or folder", p.display());
        }
    }
    if !texts.is_empty() {
        let tok = tokenizers::Tokenizer::from_file(tokenizer)
            .map_err(|e| anyhow::anyhow!("{}: {e}", tokenizer.display()))?;
        for f in texts {
            // Binary or non-UTF-8 files in a folder are skipped rather than failing the run.
            let Ok(text) = std::fs::read_to_string(&f) else {
                continue;
            };
            let enc = tok
                .encode(text.as_str(), false)
                .map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?;
            ids.extend_from_slice(enc.get_ids());
            ids.push(EOS_ID);
        }
    }
    Ok(ids)
}

/// One training batch: `[b, l]` noisy and clean ids, which positions carry loss, and why.
pub struct Batch {
    pub b: usize,
    pub l: usize,
    pub noisy: Vec<u32>,
    pub clean: Vec<u32>,
    /// 0 = no loss, 1 = masked (mask-based), 2 = in an edited block (edit-based).
    pub kind: Vec<u8>,
}

/// Mask-based noise of one block: ratio `t ~ U(eps, 1)`, at least one mask.
fn mask_block(block: &mut [u32], kind: &mut [u8], rng: &mut impl Rng) {
    let eps = 1e-3;
    let t: f64 = eps + (1.0 - eps) * rng.random::<f64>();
    let mut any = false;
    for (x, k) in block.iter_mut().zip(kind.iter_mut()) {
        if rng.random::<f64>() < t {
            *x = MASK_ID;
            *k = 1;
            any = true;
        }
    }
    if !any {
        let i = rng.random_range(0..block.len());
        block[i] = MASK_ID;
        kind[i] = 1;
    }
}

/// Edit-based noise of one block (stage 2): Levenshtein budget `round(r·B)` with
/// `r ~ U(0, rate_max)` (at least 1) through `sampler::noise::corrupt`, re-cut to `B` tokens
/// (an insertion pushes the last token out, a deletion pulls the next original token in), at
/// least one effective change, then masked at a ratio `U(0, mask_max)`.
pub fn edit_block(
    window: &[u32],
    block: usize,
    vocab: &[u32],
    rate_max: f64,
    mask_max: f64,
    rng: &mut impl Rng,
) -> Vec<u32> {
    let orig = &window[..block];
    let r: f64 = rng.random::<f64>() * rate_max;
    let budget = ((r * block as f64).round() as usize).max(1);
    let mut out = corrupt(orig, budget, vocab, rng);
    if out.len() < block {
        // The shortfall is filled from the tokens that follow the block in the corpus.
        let need = block - out.len();
        let tail = &window[block..(block + need).min(window.len())];
        out.extend_from_slice(tail);
        out.resize(block, EOS_ID);
    }
    out.truncate(block);
    if out == orig {
        let i = rng.random_range(0..block);
        let mut t = out[i];
        while t == out[i] {
            t = vocab[rng.random_range(0..vocab.len())];
        }
        out[i] = t;
    }
    let t2: f64 = rng.random::<f64>() * mask_max;
    for x in out.iter_mut() {
        if rng.random::<f64>() < t2 {
            *x = MASK_ID;
        }
    }
    out
}

/// Noise settings of one step.
pub struct NoiseSpec {
    pub stage: u8,
    pub edit_prob: f64,
    pub edit_rate_max: f64,
    pub edit_mask_max: f64,
    pub vocab_size: usize,
    /// Fill-in-the-middle: the share of windows rearranged, and the sentinels.
    pub fim: Option<(f64, crate::fim::FimTokens)>,
}

/// Draws `b` windows of `l + EXTRA` tokens and corrupts them block by block.
pub fn make_batch(
    data: &[u32],
    b: usize,
    l: usize,
    block: usize,
    spec: &NoiseSpec,
    rng: &mut impl Rng,
) -> Batch {
    // Edits insert ordinary tokens only (neither the specials below FIRST_NORMAL nor sentinels).
    let sentinels = spec.fim.map(|f| f.1.ids()).unwrap_or_default();
    let vocab: Vec<u32> = (FIRST_NORMAL..spec.vocab_size as u32)
        .filter(|t| !sentinels.contains(t))
        .collect();
    let mut noisy = Vec::with_capacity(b * l);
    let mut clean = Vec::with_capacity(b * l);
    let mut kind = vec![0u8; b * l];
    for row in 0..b {
        let off = rng.random_range(0..data.len() - (l + EXTRA));
        let mut win = &data[off..off + l + EXTRA];
        // The draw happens only when FIM is on, so rate 0 leaves every batch as it was.
        let fimmed = match spec.fim {
            Some((rate, f)) if rate > 0.0 && rng.random::<f64>() < rate => {
                Some(crate::fim::transform(win, l, EOS_ID, &f, rng))
            }
            _ => None,
        };
        if let Some(w) = &fimmed {
            win = w;
        }
        clean.extend_from_slice(&win[..l]);
        let mut x = win[..l].to_vec();
        let kr = &mut kind[row * l..(row + 1) * l];
        for s in (0..l).step_by(block) {
            let edit = spec.stage == 2 && rng.random::<f64>() < spec.edit_prob;
            if edit {
                let e = edit_block(
                    &win[s..(s + 2 * block).min(win.len())],
                    block,
                    &vocab,
                    spec.edit_rate_max,
                    spec.edit_mask_max,
                    rng,
                );
                x[s..s + block].copy_from_slice(&e);
                kr[s..s + block].fill(2);
            } else {
                mask_block(&mut x[s..s + block], &mut kr[s..s + block], rng);
            }
        }
        noisy.extend_from_slice(&x);
    }
    Batch {
        b,
        l,
        noisy,
        clean,
        kind,
    }
}
