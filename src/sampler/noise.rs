//! Edit noise and the edit-based corruption of repair mode (Seed Diffusion's edit process).
//!
//! **Edit noise rule.** At every step of a block except its last, each committed, non-prompt
//! token of the active block is re-opened (set back to [MASK]) with probability
//! `r_i = min(1, edit_noise · w_i / mean(w))`, where `w_i = 1 − p_i` and `p_i` is the probability
//! the model now gives the token it holds (from the same forward the step used). While no
//! `edit_noise · w_i / mean(w)` exceeds 1 the mean re-open rate is `edit_noise`, concentrated on
//! tokens the model finds least likely; the `min(1, ·)` clip lowers it beyond that.
//! Tokens committed in the current step are not eligible. Draws are made in position order.

use rand::Rng;

/// Positions to re-open among `(pos, p_current)` of committed tokens.
pub fn reopen(edit_noise: f32, committed: &[(usize, f32)], rng: &mut impl Rng) -> Vec<usize> {
    if edit_noise <= 0.0 || committed.is_empty() {
        return Vec::new();
    }
    let w: Vec<f32> = committed.iter().map(|&(_, p)| (1.0 - p).max(0.0)).collect();
    let mean = w.iter().sum::<f32>() / w.len() as f32;
    let mut out = Vec::new();
    for (i, &(pos, _)) in committed.iter().enumerate() {
        let r = if mean > 0.0 {
            (edit_noise * w[i] / mean).min(1.0)
        } else {
            0.0
        };
        let u: f32 = rng.random();
        if u < r {
            out.push(pos);
        }
    }
    out
}

/// One edit of the corruption process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Edit {
    Insert,
    Delete,
    Substitute,
}

/// Applies `budget` random insertions, deletions and substitutions (equal odds) to `tokens`,
/// drawing new tokens from `vocab` (ids that are not special). The Levenshtein distance of the
/// result to the input is at most `budget` (edits can cancel).
pub fn corrupt(tokens: &[u32], budget: usize, vocab: &[u32], rng: &mut impl Rng) -> Vec<u32> {
    let mut out = tokens.to_vec();
    if vocab.is_empty() {
        return out;
    }
    for _ in 0..budget {
        let edit = match rng.random_range(0..3) {
            0 => Edit::Insert,
            1 => Edit::Delete,
            _ => Edit::Substitute,
        };
        match edit {
            Edit::Insert => {
                let at = rng.random_range(0..=out.len());
                out.insert(at, vocab[rng.random_range(0..vocab.len())]);
            }
            Edit::Delete if out.len() > 1 => {
                let at = rng.random_range(0..out.len());
                out.remove(at);
            }
            Edit::Substitute | Edit::Delete if !out.is_empty() => {
                let at = rng.random_range(0..out.len());
                out[at] = vocab[rng.random_range(0..vocab.len())];
            }
            _ => {}
        }
    }
    out
}

/// Token-level Levenshtein distance.
pub fn levenshtein(a: &[u32], b: &[u32]) -> usize {
    let (a, b) = (a.to_vec(), b.to_vec());
    strsim::generic_levenshtein(&a, &b)
}
