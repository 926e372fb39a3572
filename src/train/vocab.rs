//! Growing a checkpoint's vocabulary by the fill-in-the-middle sentinels (`crate::fim`): the
//! tokenizer gains three special tokens after its last id, the embedding three rows.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Context;
use candle_core::{Device, Tensor};
use candle_nn::VarMap;

use crate::fim::{FimTokens, SENTINELS};

/// The embedding's parameter name (the head is tied to it).
pub const EMBED: &str = "model.embed_tokens.weight";

/// A tokenizer with the FIM sentinels, as JSON, and their ids. Sentinels it already has keep
/// their ids; missing ones are added as special tokens after its last id, in the order of
/// [`SENTINELS`] (scripts/fim.py adds them the same way).
pub fn with_sentinels(file: &Path) -> anyhow::Result<(String, FimTokens)> {
    let mut tok = tokenizers::Tokenizer::from_file(file)
        .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let missing: Vec<tokenizers::AddedToken> = SENTINELS
        .iter()
        .filter(|s| tok.token_to_id(s).is_none())
        .map(|s| tokenizers::AddedToken::from(*s, true))
        .collect();
    tok.add_special_tokens(&missing);
    let ids = FimTokens::lookup(|s| tok.token_to_id(s))
        .with_context(|| format!("{}: could not add the FIM sentinels", file.display()))?;
    let json = tok
        .to_string(true)
        .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    Ok((json, ids))
}

/// The FIM sentinels of the tokenizer in `file`, if it has all three.
pub fn sentinels_of(file: &Path) -> anyhow::Result<Option<FimTokens>> {
    let tok = tokenizers::Tokenizer::from_file(file)
        .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    Ok(FimTokens::lookup(|s| tok.token_to_id(s)))
}

/// `t` (`[rows, hidden]`) with rows appended up to `rows`, each the mean of the existing rows:
/// a new token starts as "an average token" (through the tied head its logit is the mean logit),
/// neither dominating the softmax nor orthogonal to everything the model knows.
pub fn grow_rows(t: &Tensor, rows: usize) -> candle_core::Result<Tensor> {
    let have = t.dim(0)?;
    if rows <= have {
        return Ok(t.clone());
    }
    let mean = t.mean_keepdim(0)?;
    let extra = mean.broadcast_as((rows - have, t.dim(1)?))?;
    Tensor::cat(&[t, &extra.contiguous()?], 0)
}

/// Loads a model folder's `model.safetensors` into the parameters of `vm` (f16 weights become
/// f32). An embedding with fewer rows than the parameter (a checkpoint from before the FIM
/// sentinels) is grown by [`grow_rows`]; every other tensor must match exactly.
pub fn load_weights(vm: &VarMap, folder: &Path) -> anyhow::Result<()> {
    let wf = folder.join("model.safetensors");
    let weights: HashMap<String, Tensor> = candle_core::safetensors::load(&wf, &Device::Cpu)
        .with_context(|| format!("{}: loading weights", wf.display()))?;
    anyhow::ensure!(
        !weights.contains_key("lm_head.weight"),
        "{}: has an untied `lm_head.weight`; the trainer trains the tied layout of the embedded \
         model only",
        wf.display()
    );
    let data = vm
        .data()
        .lock()
        .map_err(|_| anyhow::anyhow!("parameter map lock poisoned"))?;
    for (name, var) in data.iter() {
        let t = match weights.get(name) {
            Some(t) if name == EMBED && t.rank() == 2 && t.dim(0)? < var.dim(0)? => {
                anyhow::ensure!(
                    t.dim(1)? == var.dim(1)?,
                    "{}: `{name}` has shape {:?}, the model needs {:?}",
                    wf.display(),
                    t.dims(),
                    var.dims()
                );
                grow_rows(&t.to_dtype(var.dtype())?, var.dim(0)?)?
            }
            _ => super::resume_tensor(&weights, name, var, &wf)?.clone(),
        };
        var.set(&t.to_dtype(var.dtype())?)?;
    }
    Ok(())
}
