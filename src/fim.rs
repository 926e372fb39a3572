//! Fill-in-the-middle for block-causal models: the one definition of the token layout, shared by
//! the trainers (`train::batch`, and scripts/fim.py mirrors it) and the sampler (`sampler::prepare`).
//!
//! A block-causal model lets a block attend only to itself and earlier blocks, so a suffix placed
//! after the hole is never seen by the middle. The layout therefore moves the hole to the end:
//!
//! ```text
//! <|fim_suffix|> S <|fim_prefix|> P <|fim_middle|> M <|endoftext|>
//! ```
//!
//! * the middle's blocks come last, so under block-causal attention they attend to both the
//!   suffix and the prefix;
//! * the prefix sits right before the middle (only the `<|fim_middle|>` sentinel between), so the
//!   middle is an ordinary continuation of the prefix — the same boundary plain completion and
//!   prompt healing work with;
//! * the middle ends at end-of-text, so its length is the model's choice: the hole is never padded.
//!   Sampling stops there and the user gets `P + M + S`.
//!
//! A checkpoint declares that it was trained this way by carrying the three sentinels in its
//! tokenizer *and* `"fim_layout": "suffix-prefix-middle"` in `config.json`: Qwen-family
//! tokenizers (SDAR's included) carry tokens with the same names for a different, prefix-first
//! layout, so the tokens alone do not say the model knows this one.

use rand::Rng;
use serde::{Deserialize, Serialize};

pub const PREFIX: &str = "<|fim_prefix|>";
pub const MIDDLE: &str = "<|fim_middle|>";
pub const SUFFIX: &str = "<|fim_suffix|>";
/// The sentinels in the order they are added to a tokenizer (ids after its vocabulary).
pub const SENTINELS: [&str; 3] = [PREFIX, MIDDLE, SUFFIX];
/// The value of `config.json`'s `fim_layout` for this layout.
pub const LAYOUT: &str = "suffix-prefix-middle";

/// The ids of the three sentinels in one model's vocabulary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FimTokens {
    pub prefix: u32,
    pub middle: u32,
    pub suffix: u32,
}

impl FimTokens {
    /// The sentinels' ids through `id_of` (a tokenizer's token → id), if all three exist.
    pub fn lookup(id_of: impl Fn(&str) -> Option<u32>) -> Option<Self> {
        Some(FimTokens {
            prefix: id_of(PREFIX)?,
            middle: id_of(MIDDLE)?,
            suffix: id_of(SUFFIX)?,
        })
    }

    pub fn ids(&self) -> [u32; 3] {
        [self.prefix, self.middle, self.suffix]
    }

    /// What precedes the middle: `<|fim_suffix|> S <|fim_prefix|> P <|fim_middle|>`.
    pub fn context(&self, prefix: &[u32], suffix: &[u32]) -> Vec<u32> {
        let mut c = Vec::with_capacity(prefix.len() + suffix.len() + 3);
        c.push(self.suffix);
        c.extend_from_slice(suffix);
        c.push(self.prefix);
        c.extend_from_slice(prefix);
        c.push(self.middle);
        c
    }

    /// The full training layout of one document split into `prefix`, `middle`, `suffix`.
    pub fn layout(&self, prefix: &[u32], middle: &[u32], suffix: &[u32], eos: u32) -> Vec<u32> {
        let mut c = self.context(prefix, suffix);
        c.extend_from_slice(middle);
        c.push(eos);
        c
    }
}

/// Tokens the layout adds to a document: three sentinels and the closing end-of-text.
pub const OVERHEAD: usize = 4;

/// The FIM transform of one training window (`window.len() ≥ l`, `l > OVERHEAD`), keeping its
/// length. The document is the window's tokens up to its first end-of-text within the first
/// `l − 3` tokens (that end-of-text then closes the middle), or else its first `l − 4` tokens
/// (an end-of-text is added). Two cut points drawn uniformly over the document split it into
/// prefix / middle / suffix, laid out by [`FimTokens::layout`]; the window's tokens after the
/// document follow unchanged. So the first `l` tokens hold every token of the window's first
/// `l − 3` (or `l − 4`) exactly once, plus the sentinels.
pub fn transform(
    window: &[u32],
    l: usize,
    eos: u32,
    fim: &FimTokens,
    rng: &mut impl Rng,
) -> Vec<u32> {
    debug_assert!(l > OVERHEAD && window.len() >= l);
    let room = l - OVERHEAD;
    let (doc_len, consumed) = match window[..=room].iter().position(|&t| t == eos) {
        Some(d) => (d, d + 1),
        None => (room, room),
    };
    let mut cuts = [rng.random_range(0..=doc_len), rng.random_range(0..=doc_len)];
    cuts.sort_unstable();
    let doc = &window[..doc_len];
    let mut out = fim.layout(
        &doc[..cuts[0]],
        &doc[cuts[0]..cuts[1]],
        &doc[cuts[1]..],
        eos,
    );
    out.extend_from_slice(&window[consumed..]);
    out.truncate(window.len());
    out
}
