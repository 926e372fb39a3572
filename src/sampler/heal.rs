//! Prompt-boundary healing: a prompt that ends on a token boundary the model rarely saw in
//! training (a bare `"\n"` where byte-level BPE would have merged the newline with the next line's
//! indentation) is backed off its trailing whitespace token(s), and the first generated
//! position may only take tokens whose text starts with the removed text. The model then chooses
//! the boundary itself (`"\n    "`, `"\n\n"`, …) while the text can only extend what the user typed.
//!
//! Pure: works on token ids and the text of every vocabulary entry, computed once per model.

use serde::{Deserialize, Serialize};

/// At most this many trailing tokens are backed off.
pub const MAX_HEAL_TOKENS: usize = 3;

/// What healing removed and how it constrains the first generated position. Stored in the trace
/// header, so a replay or a re-run reproduces the same constraint without the tokenizer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heal {
    /// The trailing prompt tokens that were removed.
    pub removed: Vec<u32>,
    /// Their text; every allowed first token starts with it.
    pub text: String,
    /// Ids allowed at the first generated position, ascending.
    pub allowed: Vec<u32>,
}

impl Heal {
    /// One line for the trace viewer and the CLI.
    pub fn describe(&self) -> String {
        format!(
            "healed: backed off {} token{} {:?}; the first generated token must start with it ({} candidates)",
            self.removed.len(),
            if self.removed.len() == 1 { "" } else { "s" },
            self.text,
            self.allowed.len()
        )
    }

    /// The generated text as a continuation of the original prompt: the removed text is part of
    /// the first generated token, so it is cut from the front.
    pub fn continuation<'a>(&self, generated: &'a str) -> &'a str {
        generated
            .strip_prefix(self.text.as_str())
            .unwrap_or(generated)
    }
}

/// Plans healing for `prompt`. `texts[id]` is the decoded text of vocabulary entry `id` (empty for
/// special tokens); `excluded` ids (mask, stop, padding) are never allowed nor removed.
///
/// Rule: remove the trailing whitespace-only tokens (at most [`MAX_HEAL_TOKENS`]); if no
/// vocabulary entry extends the removed text, back off one token fewer. At least one prompt token
/// always stays. Returns `None` when nothing can be healed. A trailing word is left alone: on the
/// held-out prompts without a trailing newline, also backing off the last word piece (classic
/// token healing) cost 2 of 100 valid completions (62% vs 64%): the model lengthens complete
/// identifiers (` result` → ` results`) more often than it completes half-typed ones.
pub fn plan(prompt: &[u32], texts: &[String], excluded: &[u32]) -> Option<Heal> {
    let text_of = |id: u32| texts.get(id as usize).map(String::as_str).unwrap_or("");
    let usable = |id: u32| !excluded.contains(&id) && !text_of(id).is_empty();
    let max = MAX_HEAL_TOKENS.min(prompt.len().saturating_sub(1));
    let ws = prompt
        .iter()
        .rev()
        .take(max)
        .take_while(|&&id| usable(id) && text_of(id).chars().all(char::is_whitespace))
        .count();
    let k = ws;
    for k in (1..=k).rev() {
        let removed = &prompt[prompt.len() - k..];
        let text: String = removed.iter().map(|&id| text_of(id)).collect();
        let allowed: Vec<u32> = (0..texts.len() as u32)
            .filter(|&id| usable(id) && text_of(id).starts_with(&text))
            .collect();
        if !allowed.is_empty() {
            return Some(Heal {
                removed: removed.to_vec(),
                text,
                allowed,
            });
        }
    }
    None
}

/// Sets every logit outside `allowed` to −∞ (`allowed` ascending).
pub fn constrain(row: &mut [f32], allowed: &[u32]) {
    let mut next = allowed.iter().peekable();
    for (i, l) in row.iter_mut().enumerate() {
        if next.peek().is_some_and(|&&a| a as usize == i) {
            next.next();
        } else {
            *l = f32::NEG_INFINITY;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab() -> Vec<String> {
        // 0 eos, 1 mask (special: empty text), then ordinary pieces.
        [
            "",
            "",
            "def",
            " f",
            "():",
            "\n",
            "\n    ",
            "\n\n",
            " ",
            "fib",
            "fibonacci",
            "x",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    #[test]
    fn trailing_newline_is_backed_off_and_extensions_allowed() {
        let h = plan(&[2, 3, 4, 5], &vocab(), &[0, 1]).unwrap();
        assert_eq!(h.removed, vec![5]);
        assert_eq!(h.text, "\n");
        assert_eq!(h.allowed, vec![5, 6, 7]);
        assert_eq!(h.continuation("\n    return"), "    return");
    }

    #[test]
    fn several_whitespace_tokens_fall_back_until_something_extends_them() {
        // "\n" "\n" " " : nothing starts with "\n\n ", so two tokens ("\n\n") are removed.
        let h = plan(&[2, 3, 4, 5, 5, 8], &vocab(), &[0, 1]).unwrap();
        assert_eq!(h.removed, vec![5, 8]);
        assert_eq!(h.text, "\n ");
        assert!(h.allowed.contains(&6));
        assert!(!h.allowed.contains(&7));
    }

    #[test]
    fn words_punctuation_and_special_tokens_are_not_healed() {
        assert_eq!(plan(&[2, 9], &vocab(), &[0, 1]), None);
        assert_eq!(plan(&[2, 3, 4], &vocab(), &[0, 1]), None);
        assert_eq!(plan(&[2, 0], &vocab(), &[0, 1]), None);
        // A one-token prompt is kept whole.
        assert_eq!(plan(&[5], &vocab(), &[0, 1]), None);
    }

    #[test]
    fn constrain_leaves_only_allowed_logits() {
        let mut row = vec![1.0f32; 6];
        constrain(&mut row, &[1, 4]);
        let finite: Vec<usize> = (0..6).filter(|&i| row[i].is_finite()).collect();
        assert_eq!(finite, vec![1, 4]);
    }
}
