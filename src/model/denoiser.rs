//! A [`DiffusionModel`] as the sampler's [`Denoiser`]: logits for the active block, with the
//! family's attention rule, logit shift and key/value caching. The sampler sees only the trait.

use std::ops::Range;
use std::time::Instant;

use crate::error::Result;
use crate::model::transformer::RowLogits;
use crate::model::{Attention, DiffusionModel, KvCache, Mask};
use crate::profile::{self, Phase};
use crate::sampler::denoiser::{host_row_stats, BlockLogits, Denoiser, Layout, RowStats};
use crate::sampler::SamplerParams;

/// Log-sum-exp and negative entropy of every row of `[rows, vocab]` logits, on their device.
pub fn row_stats(t: &candle_core::Tensor) -> candle_core::Result<Vec<RowStats>> {
    let max = t.max_keepdim(1)?;
    let e = t.broadcast_sub(&max)?.exp()?;
    let sum = e.sum_keepdim(1)?;
    let lse = (max + sum.log()?)?;
    let neg_entropy = (e.broadcast_div(&sum)? * t.broadcast_sub(&lse)?)?.sum(1)?;
    let lse = lse.flatten_all()?.to_vec1::<f32>()?;
    let ne = neg_entropy.to_vec1::<f32>()?;
    Ok(lse
        .into_iter()
        .zip(ne)
        .map(|(lse, neg_entropy)| RowStats { lse, neg_entropy })
        .collect())
}

/// A [`DiffusionModel`] as a denoiser.
pub struct ModelDenoiser<'a> {
    model: &'a DiffusionModel,
    kv_cache: bool,
    cache: KvCache,
    layout: Option<Layout>,
    /// Block-causal: a finished block whose clean keys/values go into the cache with the next forward.
    pending: Option<Range<usize>>,
    /// Bidirectional prefix cache: the block it was refreshed for.
    prefix_for: Option<usize>,
    /// Block-causal approximate cache: keep a finished block's keys/values from its last forward.
    adopt_stale: bool,
    /// The chunk the last block-causal cached forward ran (its keys/values are the cache's
    /// scratch positions).
    last_chunk: Option<Range<usize>>,
    forwards: usize,
    /// The logits buffer of a step the sampler is done with ([`Denoiser::recycle`]): the host
    /// kernels write the next forward's logits into it. Bounded by the largest block's rows.
    spare: Vec<f32>,
    /// Whether the sampler reads row statistics with these parameters (the host kernels skip
    /// computing them where it does not; a device computes them anyway, where they are cheap).
    stats: bool,
}

impl<'a> ModelDenoiser<'a> {
    /// Uses the exact cache of block-causal models when `params.kv_cache`, the approximate prefix
    /// cache of bidirectional models only when `params.approx_cache`.
    pub fn new(model: &'a DiffusionModel, params: &SamplerParams) -> Self {
        let kv_cache = match model.family().attention() {
            Attention::BlockCausal => params.kv_cache,
            Attention::Bidirectional => params.approx_cache,
        };
        ModelDenoiser {
            model,
            kv_cache,
            cache: KvCache::new(),
            layout: None,
            pending: None,
            prefix_for: None,
            adopt_stale: params.approx_cache
                && model.family().attention() == Attention::BlockCausal,
            last_chunk: None,
            forwards: 0,
            spare: Vec::new(),
            stats: crate::sampler::propose::reads_row_stats(params),
        }
    }

    fn shift(&self) -> bool {
        self.model.family().shifts_logits()
    }

    /// Raw rows (chunk-relative) whose logits predict the positions `need`, given the chunk
    /// starts at `start`. Shifted families predict position p from p − 1, and position 0 from
    /// itself (as the references do).
    fn rows_for(&self, need: &[usize], start: usize) -> Vec<usize> {
        need.iter()
            .map(|&p| {
                if self.shift() {
                    p.saturating_sub(1) - start
                } else {
                    p - start
                }
            })
            .collect()
    }

    fn finish(
        &mut self,
        raw: RowLogits,
        need: Vec<usize>,
        block: &Range<usize>,
        in_flight: usize,
        t0: Instant,
    ) -> Result<BlockLogits> {
        let tr = Instant::now();
        let (data, vocab, stats) = match raw {
            // Written by the host kernels: no copy at all.
            RowLogits::Host(data) => {
                // One row per needed position (`need` is never empty here).
                let vocab = data.len() / need.len().max(1);
                let stats = self.stats.then(|| host_row_stats(&data, vocab));
                (data, vocab, stats)
            }
            RowLogits::Device(t) => {
                let vocab = t.dim(1)?;
                if t.device().is_cpu() {
                    // Already in host memory: one pass per row in plain code beats seven tensor
                    // ops (whose thread-pool hand-offs cost more than the arithmetic here).
                    let data = t.flatten_all()?.to_vec1::<f32>()?;
                    let stats = self.stats.then(|| host_row_stats(&data, vocab));
                    (data, vocab, stats)
                } else {
                    let stats = row_stats(&t)?;
                    (t.flatten_all()?.to_vec1::<f32>()?, vocab, Some(stats))
                }
            }
        };
        profile::add(Phase::Readback, tr);
        self.forwards += 1;
        Ok(BlockLogits {
            data,
            rows: Some(need.iter().map(|&p| p - block.start).collect()),
            vocab,
            in_flight,
            forward_ms: t0.elapsed().as_secs_f64() * 1e3,
            stats,
        })
    }
}

impl Denoiser for ModelDenoiser<'_> {
    fn begin(&mut self, canvas: &[u32], layout: &Layout) -> Result<()> {
        self.cache.clear();
        self.pending = None;
        self.prefix_for = None;
        self.last_chunk = None;
        self.forwards = 0;
        self.layout = Some(layout.clone());
        let block_causal = self.model.family().attention() == Attention::BlockCausal;
        let p = layout
            .blocks
            .first()
            .map(|b| b.start)
            .unwrap_or(layout.gen.start);
        if block_causal && self.kv_cache && p > 0 {
            // Prefill: the complete prompt blocks' keys and values are exact and final.
            self.model.net.forward(
                &canvas[..p],
                0,
                &mut self.cache,
                p,
                Mask::BlockCausal(&layout.block_of),
                p - 1..p,
            )?;
            self.forwards += 1;
        }
        Ok(())
    }

    fn logits(
        &mut self,
        canvas: &[u32],
        block: Range<usize>,
        need: &[usize],
    ) -> Result<BlockLogits> {
        let t0 = Instant::now();
        let layout = self
            .layout
            .clone()
            .ok_or_else(|| crate::error::Error::Invalid("logits() before begin()".into()))?;
        let mut need: Vec<usize> = if need.is_empty() {
            block.clone().collect()
        } else {
            need.to_vec()
        };
        need.sort_unstable();
        need.dedup();
        if need.is_empty() || need.iter().any(|p| !block.contains(p)) {
            return Err(crate::error::Error::Invalid(format!(
                "rows {need:?} are not inside block {block:?}"
            )));
        }
        let net = &self.model.net;
        match (self.model.family().attention(), self.kv_cache) {
            (Attention::BlockCausal, true) => {
                if self.adopt_stale {
                    if let Some(p) = self.pending.clone() {
                        // The finished block's last forward wrote its keys/values as scratch
                        // right after the cache: keep them instead of a clean forward.
                        if p.end == block.start
                            && self.cache.len() == p.start
                            && self.last_chunk.as_ref() == Some(&p)
                            && self.cache.adopt_scratch(p.len())
                        {
                            self.pending = None;
                        }
                    }
                }
                let (start, append) = match self.pending.take() {
                    Some(p) if p.end == block.start && self.cache.len() == p.start => {
                        (p.start, p.len())
                    }
                    // Blocks that needed no step (a canvas that starts partly decoded, e.g. a
                    // fork) are final too: store them now instead of recomputing them each step.
                    _ => (
                        self.cache.len(),
                        block.start.saturating_sub(self.cache.len()),
                    ),
                };
                let chunk = &canvas[start..block.end];
                let rows = self.rows_for(&need, start);
                let raw = net.forward_rows_into(
                    chunk,
                    start,
                    &mut self.cache,
                    append,
                    Mask::BlockCausal(&layout.block_of),
                    &rows,
                    std::mem::take(&mut self.spare),
                )?;
                self.last_chunk = Some(start + append..block.end);
                self.finish(raw, need, &block, chunk.len(), t0)
            }
            (Attention::BlockCausal, false) => {
                let chunk = &canvas[..block.end];
                let rows = self.rows_for(&need, 0);
                let raw = net.forward_rows_into(
                    chunk,
                    0,
                    &mut KvCache::new(),
                    0,
                    Mask::BlockCausal(&layout.block_of),
                    &rows,
                    std::mem::take(&mut self.spare),
                )?;
                self.finish(raw, need, &block, chunk.len(), t0)
            }
            (Attention::Bidirectional, false) => {
                let rows = self.rows_for(&need, 0);
                let raw = net.forward_rows_into(
                    canvas,
                    0,
                    &mut KvCache::new(),
                    0,
                    Mask::Full,
                    &rows,
                    std::mem::take(&mut self.spare),
                )?;
                self.finish(raw, need, &block, canvas.len(), t0)
            }
            (Attention::Bidirectional, true) => {
                // Approximate prefix cache (Fast-dLLM v1): refreshed by a full forward at each block
                // start, whose logits also serve the block's first step.
                let keep = if self.shift() {
                    block.start.saturating_sub(1)
                } else {
                    block.start
                };
                if self.prefix_for != Some(block.start) {
                    self.cache.clear();
                    let rows = self.rows_for(&need, 0);
                    let raw = net.forward_rows_into(
                        canvas,
                        0,
                        &mut self.cache,
                        keep,
                        Mask::Full,
                        &rows,
                        std::mem::take(&mut self.spare),
                    )?;
                    self.prefix_for = Some(block.start);
                    return self.finish(raw, need, &block, canvas.len(), t0);
                }
                let chunk = &canvas[keep..];
                let rows = self.rows_for(&need, keep);
                let raw = net.forward_rows_into(
                    chunk,
                    keep,
                    &mut self.cache,
                    0,
                    Mask::Full,
                    &rows,
                    std::mem::take(&mut self.spare),
                )?;
                self.finish(raw, need, &block, chunk.len(), t0)
            }
        }
    }

    fn end_block(&mut self, block: Range<usize>) {
        if self.model.family().attention() == Attention::BlockCausal && self.kv_cache {
            self.pending = Some(block);
        }
    }

    fn forwards(&self) -> usize {
        self.forwards
    }

    fn recycle(&mut self, logits: BlockLogits) {
        // Keep the larger buffer: the first steps of a block read the most rows.
        if logits.data.capacity() > self.spare.capacity() {
            self.spare = logits.data;
        }
    }
}
