//! The boundary between the pure sampler and a model: the [`Denoiser`] trait, the block layout it
//! is called with and the logits it returns. Nothing here knows candle or a model family; the
//! model-backed implementation is `crate::model::denoiser::ModelDenoiser`.

use std::ops::Range;

use crate::error::Result;

/// How canvas positions are grouped into blocks.
#[derive(Clone, Debug)]
pub struct Layout {
    /// Generated region.
    pub gen: Range<usize>,
    /// Blocks left to right; each holds some generated positions (and, when aligned, possibly the
    /// prompt's last few tokens).
    pub blocks: Vec<Range<usize>>,
    /// Attention-block id of every canvas position.
    pub block_of: Vec<usize>,
}

impl Layout {
    /// `aligned`: blocks at absolute multiples of `block_size` from position 0, as block-causal
    /// models are trained (SDAR, the embedded model); the prompt's trailing partial block is
    /// decoded together with the first generated tokens, and the last block may be partial.
    /// Otherwise (LLaDA, Dream) blocks start at the first generated position.
    pub fn new(len: usize, gen: Range<usize>, block_size: usize, aligned: bool) -> Self {
        let b = block_size.max(1);
        if aligned {
            let first = (gen.start / b) * b;
            let blocks: Vec<Range<usize>> = (first..gen.end)
                .step_by(b)
                .map(|s| s..(s + b).min(gen.end))
                .collect();
            let suffix_id = gen.end.div_ceil(b);
            let block_of = (0..len)
                .map(|i| if i < gen.end { i / b } else { suffix_id })
                .collect();
            return Layout {
                gen,
                blocks,
                block_of,
            };
        }
        let blocks: Vec<Range<usize>> = (gen.start..gen.end)
            .step_by(b)
            .map(|s| s..(s + b).min(gen.end))
            .collect();
        let prompt_blocks = gen.start.div_ceil(b);
        let block_of = (0..len)
            .map(|i| {
                if i < gen.start {
                    i / b
                } else if i < gen.end {
                    prompt_blocks + (i - gen.start) / b
                } else {
                    prompt_blocks + blocks.len()
                }
            })
            .collect();
        Layout {
            gen,
            blocks,
            block_of,
        }
    }
}

/// Logits of one block: row-major `[rows, vocab]`, plus what the forward cost.
pub struct BlockLogits {
    pub data: Vec<f32>,
    /// Block offsets (position − block start) of the rows in `data`, ascending; `None`: every
    /// position of the block, in order. A model computes only the rows a step reads.
    pub rows: Option<Vec<usize>>,
    pub vocab: usize,
    pub in_flight: usize,
    pub forward_ms: f64,
    /// Per row, computed where the logits were (the GPU for CUDA models): log-sum-exp and
    /// Σ p log p of the plain softmax. With them a greedy proposal needs no exponential over the
    /// vocabulary on the host (a 152k-token vocabulary made host-side softmax the bottleneck).
    pub stats: Option<Vec<RowStats>>,
}

/// Softmax statistics of one row of logits.
#[derive(Clone, Copy, Debug)]
pub struct RowStats {
    pub lse: f32,
    pub neg_entropy: f32,
}

impl BlockLogits {
    /// Index into `data` of block offset `i`. The sampler reads only the rows it asked for; an
    /// absent row maps past the end, where [`row`](Self::row) gives an empty slice.
    fn index(&self, i: usize) -> usize {
        match &self.rows {
            None => i,
            Some(r) => r.binary_search(&i).unwrap_or(usize::MAX / 2),
        }
    }

    pub fn row(&self, i: usize) -> &[f32] {
        let k = self.index(i);
        self.data
            .get(k * self.vocab..(k + 1) * self.vocab)
            .unwrap_or(&[])
    }

    pub fn row_stats(&self, i: usize) -> Option<RowStats> {
        let k = self.index(i);
        self.stats.as_ref().and_then(|s| s.get(k).copied())
    }
}

/// Log-sum-exp and negative entropy of row-major `[rows, vocab]` logits already on the host, rows
/// in parallel: one pass of exponentials per row ([`super::rowscan::row_stats`]).
pub fn host_row_stats(data: &[f32], vocab: usize) -> Vec<RowStats> {
    use rayon::prelude::*;
    if vocab == 0 {
        return Vec::new();
    }
    data.par_chunks(vocab)
        .map(super::rowscan::row_stats)
        .collect()
}

/// What the sampler needs from a model.
pub trait Denoiser {
    /// Called once with the initial canvas.
    fn begin(&mut self, canvas: &[u32], layout: &Layout) -> Result<()>;
    /// Logits predicting the positions `need` (absolute, ascending, inside `block`; empty = the
    /// whole block), already shifted for shifted families. A denoiser may return more rows.
    fn logits(
        &mut self,
        canvas: &[u32],
        block: Range<usize>,
        need: &[usize],
    ) -> Result<BlockLogits>;
    /// `block` is final; block-causal caches take its keys and values.
    fn end_block(&mut self, block: Range<usize>);
    /// Forward passes so far.
    fn forwards(&self) -> usize;
    /// Hands back logits the sampler is done with, so that the next forward can write into their
    /// buffer instead of allocating (and the kernel faulting in) rows × vocabulary fresh floats.
    /// The default drops them.
    fn recycle(&mut self, _logits: BlockLogits) {}
}
