//! Repetition control on one position's logits, before the proposal: a CTRL-style repetition
//! penalty and a no-repeat-n-gram ban. Both are off by default (reference parity).
//!
//! Diffusion commits positions out of order, so "what came before" is the canvas: every token
//! already present (prompt and committed generated tokens) counts for the penalty, and the
//! n-gram ban looks at the tokens immediately left of the position when they are all committed.

/// Divides positive logits and multiplies negative ones by `penalty` for every token in
/// `context` (each token once, however often it occurs). `penalty` ≤ 1 does nothing.
pub fn penalize(row: &mut [f32], context: &[u32], penalty: f32) {
    if penalty <= 1.0 {
        return;
    }
    let mut seen = vec![false; row.len()];
    for &t in context {
        let i = t as usize;
        if i < row.len() && !seen[i] {
            seen[i] = true;
            let l = row[i];
            row[i] = if l > 0.0 { l / penalty } else { l * penalty };
        }
    }
}

/// Tokens that would complete an n-gram already present in `left`: with `left` ending in the
/// (n−1)-gram g, every token that followed an earlier occurrence of g. `left` holds the committed
/// tokens right before the position (masks stop it, so the caller passes only the settled run).
pub fn banned(left: &[u32], n: usize) -> Vec<u32> {
    if n == 0 || left.len() < n.saturating_sub(1) {
        return Vec::new();
    }
    if n == 1 {
        // Unigrams: no token may appear twice.
        let mut v = left.to_vec();
        v.sort_unstable();
        v.dedup();
        return v;
    }
    let g = &left[left.len() - (n - 1)..];
    let mut out: Vec<u32> = left
        .windows(n)
        .filter(|w| &w[..n - 1] == g)
        .map(|w| w[n - 1])
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// Sets the banned tokens to −∞, unless that would leave no finite logit (a constraint such as
/// prompt healing may already have narrowed the row): then the row is left as it was.
pub fn ban(row: &mut [f32], banned: &[u32]) {
    let hit = |i: usize| banned.binary_search(&(i as u32)).is_ok();
    let any_left = row
        .iter()
        .enumerate()
        .any(|(i, l)| l.is_finite() && !hit(i));
    if !any_left {
        return;
    }
    for &t in banned {
        if let Some(l) = row.get_mut(t as usize) {
            *l = f32::NEG_INFINITY;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn penalty_lowers_seen_tokens_both_signs_once() {
        let mut row = vec![2.0, -1.0, 3.0, 0.5];
        penalize(&mut row, &[0, 1, 0, 0], 2.0);
        assert_eq!(row, vec![1.0, -2.0, 3.0, 0.5]);
        let mut same = vec![2.0, -1.0];
        penalize(&mut same, &[0, 1], 1.0);
        assert_eq!(same, vec![2.0, -1.0]);
    }

    #[test]
    fn penalty_can_flip_a_greedy_loop() {
        // "deciated" (3) would be chosen again; with the penalty the runner-up wins.
        let mut row = vec![0.0, 0.0, 2.6, 3.0];
        penalize(&mut row, &[3, 3, 3], 1.3);
        let best = (0..4).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap();
        assert_eq!(best, 2);
    }

    #[test]
    fn ngram_ban_finds_continuations_of_the_last_gram() {
        // a b c a b → "a b" was followed by c: c banned for n = 3.
        assert_eq!(banned(&[1, 2, 3, 1, 2], 3), vec![3]);
        assert_eq!(banned(&[1, 2, 3, 1, 2], 2), vec![3]);
        assert_eq!(banned(&[2, 1, 2, 5, 2], 2), vec![1, 5]);
        assert_eq!(banned(&[1, 2, 3], 3), Vec::<u32>::new());
        assert_eq!(banned(&[4, 2, 4], 1), vec![2, 4]);
        assert!(banned(&[1, 2], 0).is_empty());
    }

    #[test]
    fn ban_never_empties_a_row() {
        let mut row = vec![f32::NEG_INFINITY, 1.0, 2.0];
        ban(&mut row, &[1, 2]);
        assert_eq!(row[2], 2.0);
        let mut row = vec![0.5, 1.0, 2.0];
        ban(&mut row, &[2]);
        assert!(row[2] == f32::NEG_INFINITY && row[1] == 1.0);
    }
}
