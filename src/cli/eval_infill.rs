//! `unmask eval`'s infill section: held-out top-level definitions with one to three body lines
//! removed; the model fills the hole and the result (prefix + middle + suffix) must parse. This is
//! the infill measure for FIM-trained block-causal models (`crate::fim`); bidirectional
//! models infill in place and are measured the same way.

use std::sync::atomic::AtomicBool;

use anyhow::Context;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::model::DiffusionModel;
use crate::progress::Progress;
use crate::sampler::SamplerParams;
use crate::session::{self, TextTask};

/// One hole: the definition's text is `prefix + middle + suffix`, and it parses.
#[derive(Clone, Debug, PartialEq)]
pub struct InfillCase {
    pub prefix: String,
    pub middle: String,
    pub suffix: String,
}

#[derive(Serialize, Debug)]
pub struct InfillResult {
    pub setting: String,
    pub cases: usize,
    /// prefix + generated middle + suffix parses.
    pub parses: usize,
    /// The generated middle equals the removed lines (trailing whitespace aside).
    pub exact: usize,
    /// Baseline: prefix + suffix with an empty middle parses (a hole the model may leave empty).
    pub empty_parses: usize,
    pub tokens_per_forward: f64,
}

/// Top-level `def` / `class` blocks of 4–30 lines that parse on their own, one per file at most,
/// each with a hole of 1–3 whole lines after its first line (seeded: the same cases every run).
pub fn cases(texts: &[String], n: usize) -> Vec<InfillCase> {
    let mut rng = ChaCha8Rng::seed_from_u64(0x1f111);
    let mut out = Vec::new();
    for t in texts {
        if out.len() >= n {
            break;
        }
        let lines: Vec<&str> = t.split_inclusive('\n').collect();
        let top = |l: &str| l.starts_with("def ") || l.starts_with("class ");
        let Some(start) = lines.iter().position(|l| top(l)) else {
            continue;
        };
        let len = lines[start + 1..]
            .iter()
            .position(|l| !l.trim().is_empty() && !l.starts_with([' ', '\t']))
            .unwrap_or(lines.len() - start - 1)
            + 1;
        let block = &lines[start..start + len];
        let text: String = block.concat();
        if !(4..=30).contains(&len) || !text.ends_with('\n') || !crate::pycheck::parses(&text) {
            continue;
        }
        let k = rng.random_range(1..=3usize.min(len - 2));
        let at = rng.random_range(1..=len - 1 - k);
        let middle: String = block[at..at + k].concat();
        if middle.trim().is_empty() {
            continue;
        }
        out.push(InfillCase {
            prefix: block[..at].concat(),
            middle,
            suffix: block[at + k..].concat(),
        });
    }
    out
}

/// Fills every case with `params` and counts the results that parse.
pub fn run(
    m: &DiffusionModel,
    cases: &[InfillCase],
    setting: &str,
    params: &SamplerParams,
    device: &str,
    progress: &Progress,
) -> anyhow::Result<InfillResult> {
    let cancel = AtomicBool::new(false);
    let (mut parses, mut exact, mut tokens, mut forwards) = (0, 0, 0, 0);
    let empty_parses = cases
        .iter()
        .filter(|c| crate::pycheck::parses(&format!("{}{}", c.prefix, c.suffix)))
        .count();
    for c in cases {
        let task = TextTask::Infill {
            prefix: c.prefix.clone(),
            suffix: c.suffix.clone(),
        };
        let trace = session::generate(m, &task, false, params, device, &cancel, &mut |_| {})?;
        let fin = trace.finish.context("run without finish")?;
        parses += crate::pycheck::parses(&format!("{}{}{}", c.prefix, fin.text, c.suffix)) as usize;
        exact += (fin.text.trim_end() == c.middle.trim_end()) as usize;
        tokens += fin.tokens.len();
        forwards += fin.metrics.forwards;
        progress.inc();
    }
    Ok(InfillResult {
        setting: setting.to_string(),
        cases: cases.len(),
        parses,
        exact,
        empty_parses,
        tokens_per_forward: tokens as f64 / forwards.max(1) as f64,
    })
}
