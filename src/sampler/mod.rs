//! Block-level parallel diffusion decoding: blocks left to right, the masked positions of the
//! active block predicted in parallel at each step and some committed, finished blocks reused
//! through the key/value cache. Every step yields a [`StepEvent`].

pub mod denoiser;
pub mod heal;
pub mod noise;
pub mod params;
pub mod propose;
pub mod repeat;
pub mod rowscan;
pub mod schedule;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

pub use denoiser::{Denoiser, Layout};
pub use params::{Filters, ParamProblem, SamplerParams, Schedule, UnmaskRule};

use crate::error::{Error, Result};
use crate::trace::{
    Commit, Finish, FinishReason, Metrics, Reopen, StepEvent, TaskKind, Trace, TraceHeader,
};

/// What to decode, in token ids.
#[derive(Clone, Debug, PartialEq)]
pub enum Task {
    /// Prompt, then `gen_length` masks.
    Complete { prompt: Vec<u32> },
    /// Prefix, `gen_length` masks, suffix.
    Infill { prefix: Vec<u32>, suffix: Vec<u32> },
    /// Prompt, then `original` corrupted by `budget` random edits; the sampler re-opens the
    /// tokens the model finds unlikely and denoises them.
    Repair {
        prompt: Vec<u32>,
        original: Vec<u32>,
        budget: usize,
    },
}

/// A repair-mode position is re-opened when the model gives its token less than this fraction
/// of the probability of its preferred token. Chosen on the first 30 held-out repair snippets
/// (ratios 0.1 … 5e-5): looser ratios re-open correct tokens the small model is merely unsure of
/// and make the code worse; 1e-3 re-opens only what it is confident is wrong.
pub const REPAIR_RATIO: f32 = 1e-3;

/// What the sampler needs to know about the model besides its logits.
pub struct ModelFacts<'a> {
    pub model_id: String,
    pub model_hash: String,
    pub family: String,
    pub tokenizer: String,
    pub mask_id: u32,
    pub stop_ids: Vec<u32>,
    pub vocab_size: usize,
    /// Rows of the embedding (≥ `vocab_size` when it is padded): the bound on every logit's id.
    pub embedding_rows: usize,
    pub context: usize,
    pub device: String,
    /// Blocks at absolute multiples of the block size (block-causal models), see [`Layout::new`].
    pub aligned_blocks: bool,
    /// The fill-in-the-middle sentinels of a model trained for `crate::fim`'s layout: infill on
    /// a block-causal model is built that way, and refused without them.
    pub fim: Option<crate::fim::FimTokens>,
    /// Text of one token.
    pub token_text: &'a dyn Fn(u32) -> String,
    /// Text of a token sequence (special tokens dropped).
    pub decode: &'a dyn Fn(&[u32]) -> String,
}

/// Builds the trace header: the initial canvas and everything needed to replay the run.
pub fn prepare(
    task: &Task,
    params: &SamplerParams,
    prompt_text: &str,
    m: &ModelFacts,
) -> Result<TraceHeader> {
    prepare_healed(task, None, params, prompt_text, m)
}

/// [`prepare`] for a task whose prompt (or infill prefix) was already backed off by `heal`
/// (see [`heal::plan`]): the first generated position will be constrained to `heal.allowed`.
pub fn prepare_healed(
    task: &Task,
    heal: Option<heal::Heal>,
    params: &SamplerParams,
    prompt_text: &str,
    m: &ModelFacts,
) -> Result<TraceHeader> {
    if heal.is_some() && matches!(task, Task::Repair { .. }) {
        return Err(Error::Invalid(
            "repair mode does not heal its prompt".into(),
        ));
    }
    // Input ids are checked before anything is built from them.
    let given: Vec<(&str, &[u32])> = match task {
        Task::Complete { prompt } => vec![("prompt", prompt)],
        Task::Infill { prefix, suffix } => vec![("prefix", prefix), ("suffix", suffix)],
        Task::Repair {
            prompt, original, ..
        } => vec![("prompt", prompt), ("code to repair", original)],
    };
    for (what, ids) in given {
        if let Some(i) = ids.iter().position(|&t| t == m.mask_id) {
            return Err(Error::Invalid(format!(
                "the {what} contains the mask token (id {}) at token {i}; the sampler would treat it as a blank to fill. Remove it from the input",
                m.mask_id
            )));
        }
    }
    let (initial, gen_start, gen_end, kind) = match task {
        Task::Complete { prompt } => {
            check(params, prompt.len(), m)?;
            let n = padded_len(prompt.len(), 0, params, m)?;
            let mut c = prompt.clone();
            c.extend(std::iter::repeat_n(m.mask_id, n));
            (c, prompt.len(), prompt.len() + n, TaskKind::Complete)
        }
        Task::Infill { prefix, suffix } if m.aligned_blocks => {
            // Every generated block of a block-causal model attends only to itself and earlier
            // blocks; a suffix after the hole would never be seen. A model trained for
            // fill-in-the-middle gets the suffix first and generates the middle last, ending at
            // end-of-text (see `crate::fim`); the hole is not padded: masks after the
            // end-of-text are dropped, and the padding to a block boundary lies after them.
            let Some(fim) = m.fim else {
                return Err(Error::Invalid(format!(
                    "infill: {} is block-causal and not trained for fill-in-the-middle (its \
                     config.json has no \"fim_layout\": {:?} with the tokenizer sentinels {}), \
                     so the middle could never attend to the suffix; use a bidirectional model \
                     (LLaDA, Dream) or a FIM-trained checkpoint (`unmask train --fim-rate`) for \
                     infill, or complete without a suffix",
                    m.model_id,
                    crate::fim::LAYOUT,
                    crate::fim::SENTINELS.join(" ")
                )));
            };
            let c = fim.context(prefix, suffix);
            check(params, c.len(), m)?;
            let n = padded_len(c.len(), 0, params, m)?;
            let start = c.len();
            let mut c = c;
            c.extend(std::iter::repeat_n(m.mask_id, n));
            (
                c,
                start,
                start + n,
                TaskKind::Infill {
                    suffix_len: suffix.len(),
                    fim: true,
                },
            )
        }
        Task::Infill { prefix, suffix } => {
            check(params, prefix.len().saturating_add(suffix.len()), m)?;
            let n = padded_len(prefix.len(), suffix.len(), params, m)?;
            let mut c = prefix.clone();
            c.extend(std::iter::repeat_n(m.mask_id, n));
            c.extend(suffix);
            (
                c,
                prefix.len(),
                prefix.len() + n,
                TaskKind::Infill {
                    suffix_len: suffix.len(),
                    fim: false,
                },
            )
        }
        Task::Repair {
            prompt,
            original,
            budget,
        } => {
            if original.is_empty() {
                return Err(Error::Invalid("repair mode needs code to repair".into()));
            }
            // More edits than tokens is not a repair task, and would only burn time.
            if *budget > original.len() {
                return Err(Error::Invalid(format!(
                    "--budget {budget} exceeds the {} tokens of the code to repair",
                    original.len()
                )));
            }
            // Special tokens are never inserted: draw replacements from ordinary ids below the mask
            // and stop ids' range where possible.
            let vocab: Vec<u32> = (0..m.vocab_size as u32)
                .filter(|t| *t != m.mask_id && !m.stop_ids.contains(t))
                .collect();
            let mut rng = ChaCha8Rng::seed_from_u64(params.seed ^ 0x5eed_ed17);
            let corrupted = noise::corrupt(original, *budget, &vocab, &mut rng);
            let mut p = params.clone();
            p.gen_length = corrupted.len();
            let problems: Vec<_> = p
                .problems(prompt.len(), Some(m.context))
                .into_iter()
                .filter(|x| x.field != "block_size")
                .collect();
            if let Some(first) = problems.first() {
                return Err(Error::Invalid(first.to_string()));
            }
            let d = noise::levenshtein(original, &corrupted);
            let mut c = prompt.clone();
            c.extend(&corrupted);
            let end = c.len();
            (
                c,
                prompt.len(),
                end,
                TaskKind::Repair {
                    budget: *budget,
                    original: original.clone(),
                    corrupted_distance: d,
                },
            )
        }
    };
    let initial_text = initial.iter().map(|&t| (m.token_text)(t)).collect();
    Ok(TraceHeader {
        version: crate::trace::TRACE_VERSION,
        model_id: m.model_id.clone(),
        model_hash: m.model_hash.clone(),
        family: m.family.clone(),
        tokenizer: m.tokenizer.clone(),
        params: params.clone(),
        task: kind,
        prompt: prompt_text.to_string(),
        mask_id: m.mask_id,
        stop_ids: m.stop_ids.clone(),
        vocab_size: Some(m.embedding_rows),
        initial,
        initial_text,
        gen_start,
        gen_end,
        device: m.device.clone(),
        heal,
        intervention: None,
    })
}

/// Masks to append after `fixed` tokens: `gen_length`, extended for aligned (block-causal) layouts
/// so the canvas ends on a block boundary, as SDAR's reference sampler pads it. The padded
/// canvas (with `after` tokens of suffix) must still fit the context.
fn padded_len(fixed: usize, after: usize, params: &SamplerParams, m: &ModelFacts) -> Result<usize> {
    let n = if m.aligned_blocks && params.block_size > 0 {
        fixed
            .checked_add(params.gen_length)
            .and_then(|end| {
                end.div_ceil(params.block_size)
                    .checked_mul(params.block_size)
            })
            .map(|end| end - fixed)
    } else {
        Some(params.gen_length)
    };
    match n.and_then(|n| fixed.checked_add(n)?.checked_add(after).map(|t| (n, t))) {
        Some((n, total)) if total <= m.context => Ok(n),
        _ => Err(Error::Invalid(format!(
            "block_size: {} tokens of input + {} generated, aligned to blocks of {}, exceed the model's context of {}",
            fixed.saturating_add(after),
            params.gen_length,
            params.block_size,
            m.context
        ))),
    }
}

/// NaN or infinite logits mean a broken checkpoint (a NaN weight, `rope_theta` 0, a negative
/// `rms_norm_eps` …): every later number would be garbage, and a trace could not store them.
/// Below this many logits a step's rows are proposed on one thread (a rayon hand-off costs
/// more than the work).
const PARALLEL_ROWS_MIN_LOGITS: usize = 1 << 16;

fn check_finite(logits: &denoiser::BlockLogits, start: usize, step: usize) -> Result<()> {
    use rayon::prelude::*;
    // Rows in parallel (a large vocabulary makes this a pass over hundreds of megabytes), the
    // first bad value reported.
    let chunk = logits.vocab.max(1);
    let Some(row) = logits
        .data
        .par_chunks(chunk)
        .position_first(|r| rowscan::first_non_finite(r).is_some())
    else {
        return Ok(());
    };
    let i = row * chunk
        + rowscan::first_non_finite(&logits.data[row * chunk..])
            .expect("the row holds a non-finite value");
    let vocab = logits.vocab.max(1);
    // Data rows are the block offsets in `rows` when the model computed only some of them.
    let row = i / vocab;
    let offset = logits
        .rows
        .as_ref()
        .and_then(|r| r.get(row).copied())
        .unwrap_or(row);
    Err(Error::Invalid(format!(
        "the model produced a non-finite logit ({}) at position {}, token {}, in step {step}: \
         the checkpoint is broken (NaN or infinite weights, or a config value such as rope_theta \
         or rms_norm_eps that makes the computation diverge); nothing was generated",
        logits.data[i],
        start + offset,
        i % vocab
    )))
}

fn check(params: &SamplerParams, fixed: usize, m: &ModelFacts) -> Result<()> {
    match params.problems(fixed, Some(m.context)).first() {
        Some(p) => Err(Error::Invalid(p.to_string())),
        None => Ok(()),
    }
}

/// Decodes the run described by `header`, calling `on_step` after every step. Checks `cancel`
/// before every step: a cancelled run ends with [`FinishReason::Cancelled`] and keeps its events.
pub fn decode(
    header: TraceHeader,
    den: &mut dyn Denoiser,
    m: &ModelFacts,
    cancel: &AtomicBool,
    on_step: &mut dyn FnMut(&StepEvent),
) -> Result<Trace> {
    let params = header.params.clone();
    let t0 = Instant::now();
    let ms = |t: Instant| t.elapsed().as_secs_f64() * 1e3;
    let mut rng = ChaCha8Rng::seed_from_u64(params.seed);
    let mut canvas = header.initial.clone();
    let layout = Layout::new(
        canvas.len(),
        header.gen_start..header.gen_end,
        params.block_size,
        m.aligned_blocks,
    );
    let repair = matches!(header.task, TaskKind::Repair { .. });
    let heal = header.heal.clone();
    // A fork's "commit this next": these positions commit at the first step that decodes.
    let mut force: Vec<usize> = header
        .intervention
        .as_ref()
        .map_or_else(Vec::new, |i| i.force_next.clone());
    let mut trace = Trace::new(header);
    let mask = m.mask_id;
    den.begin(&canvas, &layout)?;
    let mut reopened_from: HashMap<usize, u32> = HashMap::new();
    let mut first_block_ms = 0.0;
    let mut stop: Option<(usize, FinishReason)> = None;

    'blocks: for (b, block) in layout.blocks.iter().enumerate() {
        let mut step = 0usize;
        let mut repair_pending = repair;
        loop {
            let masked: Vec<usize> = block.clone().filter(|&p| canvas[p] == mask).collect();
            if masked.is_empty() && !repair_pending {
                break;
            }
            if cancel.load(Ordering::Relaxed) {
                stop = Some((block.start, FinishReason::Cancelled));
                break 'blocks;
            }
            let steps = params.steps.max(step + 1);
            let planned = match params.rule {
                UnmaskRule::Threshold => 1.min(masked.len()),
                _ => schedule::planned(params.schedule, masked.len(), step, params.steps.max(1)),
            };
            let last_step = step + 1 >= steps;
            if let Some(&p) = force.iter().find(|&&p| !masked.contains(&p)) {
                return Err(Error::Invalid(format!(
                    "intervention: position {p} is forced to commit next, but the next step \
                     decodes block {}..{} and position {p} is not masked there",
                    block.start, block.end
                )));
            }
            let planned = planned.max(force.len());
            if planned == 0 && !repair_pending && (params.edit_noise <= 0.0 || last_step) {
                // A step that would commit nothing and change nothing: skip its forward.
                step += 1;
                continue;
            }
            // The rows this step reads: masked positions, and committed ones when repair or edit
            // noise will test their probability.
            let fixed_ok =
                |p: usize| p >= layout.gen.start && p < layout.gen.end && canvas[p] != mask;
            let reads_committed = repair_pending || (params.edit_noise > 0.0 && !last_step);
            let need: Vec<usize> = block
                .clone()
                .filter(|&p| canvas[p] == mask || (reads_committed && fixed_ok(p)))
                .collect();
            let ts = Instant::now();
            let logits = den.logits(&canvas, block.clone(), &need)?;
            check_finite(&logits, block.start, trace.events.len())?;
            let tp = Instant::now();
            // Repetition penalty: the generated tokens committed so far (the prompt is the
            // user's own code, whose names the completion is expected to reuse).
            let seen: Vec<u32> = if params.repetition_penalty > 1.0 {
                canvas[layout.gen.clone()]
                    .iter()
                    .copied()
                    .filter(|&t| t != mask)
                    .collect()
            } else {
                Vec::new()
            };
            // The random numbers every row's proposal and score take, drawn here in the order a
            // row-by-row loop draws them, so that the rows can then run in parallel with the
            // same results whatever the number of threads.
            let draws: Vec<propose::Draws> = masked
                .iter()
                .map(|&pos| {
                    propose::Draws::take(
                        &params,
                        !logits.row(pos - block.start).is_empty(),
                        &mut rng,
                    )
                })
                .collect();
            let propose_row = |(&pos, d): (&usize, &propose::Draws)| {
                let healed = heal.as_ref().filter(|_| pos == layout.gen.start);
                let adjusted = (healed.is_some() || params.controls_repetition()).then(|| {
                    let mut row = logits.row(pos - block.start).to_vec();
                    if let Some(h) = healed {
                        heal::constrain(&mut row, &h.allowed);
                    }
                    repeat::penalize(&mut row, &seen, params.repetition_penalty);
                    if params.no_repeat_ngram > 0 {
                        let from = canvas[..pos]
                            .iter()
                            .rposition(|&t| t == mask)
                            .map_or(0, |i| i + 1);
                        repeat::ban(
                            &mut row,
                            &repeat::banned(&canvas[from..pos], params.no_repeat_ngram),
                        );
                    }
                    row
                });
                let prop = match &adjusted {
                    // The precomputed row statistics describe the unadjusted logits.
                    Some(row) => propose::propose_drawn(row, &params, mask, None, d.uniform),
                    None => propose::propose_drawn(
                        logits.row(pos - block.start),
                        &params,
                        mask,
                        logits.row_stats(pos - block.start),
                        d.uniform,
                    ),
                };
                let s = propose::score_drawn(params.rule, &prop, pos, d.score);
                (pos, prop, s)
            };
            // Rows in parallel only where there is vocabulary-wide work to share out.
            let scored: Vec<(usize, propose::Proposal, f32)> =
                if masked.len() > 1 && masked.len() * logits.vocab >= PARALLEL_ROWS_MIN_LOGITS {
                    use rayon::prelude::*;
                    masked.par_iter().zip(&draws).map(propose_row).collect()
                } else {
                    masked.iter().zip(&draws).map(propose_row).collect()
                };
            let mut cands = Vec::with_capacity(masked.len());
            let mut props = HashMap::with_capacity(masked.len());
            for (pos, prop, s) in scored {
                cands.push(schedule::Candidate {
                    pos,
                    score: s,
                    prob: prop.prob,
                });
                props.insert(pos, (prop, s));
            }
            let chosen =
                schedule::select_forced(params.rule, &cands, planned, params.threshold, &force);
            force.clear();
            let best_left = cands
                .iter()
                .filter(|c| !chosen.contains(&c.pos))
                .max_by(|a, b| a.score.total_cmp(&b.score).then(b.pos.cmp(&a.pos)))
                .map(|c| (c.pos, c.score));

            // Re-open: repair mode's likelihood test at a block's first step, edit noise otherwise.
            let mut reopen_pos: Vec<usize> = Vec::new();
            if repair_pending {
                for p in block.clone().filter(|&p| fixed_ok(p)) {
                    let (row, st) = (
                        logits.row(p - block.start),
                        logits.row_stats(p - block.start),
                    );
                    // p(token) < ratio · p_max, from logits: no softmax over the vocabulary.
                    let pmax = propose::prob_with(row, propose::argmax(row).0 as u32, st);
                    if propose::prob_with(row, canvas[p], st) < REPAIR_RATIO * pmax {
                        reopen_pos.push(p);
                    }
                }
                repair_pending = false;
            } else if params.edit_noise > 0.0 && !last_step {
                let committed: Vec<(usize, f32)> = block
                    .clone()
                    .filter(|&p| fixed_ok(p))
                    .map(|p| {
                        let i = p - block.start;
                        (
                            p,
                            propose::prob_with(logits.row(i), canvas[p], logits.row_stats(i)),
                        )
                    })
                    .collect();
                reopen_pos = noise::reopen(params.edit_noise, &committed, &mut rng);
            }
            let te = crate::profile::add(crate::profile::Phase::Propose, tp);
            let mut reopened = Vec::with_capacity(reopen_pos.len());
            for p in reopen_pos {
                let tok = canvas[p];
                reopened.push(Reopen {
                    pos: p,
                    token: tok,
                    text: (m.token_text)(tok),
                    prob: propose::prob_with(
                        logits.row(p - block.start),
                        tok,
                        logits.row_stats(p - block.start),
                    ),
                });
                reopened_from.insert(p, tok);
                canvas[p] = mask;
            }
            let mut commits = Vec::with_capacity(chosen.len());
            for pos in chosen {
                let (prop, s) = &props[&pos];
                canvas[pos] = prop.token;
                commits.push(Commit {
                    pos,
                    token: prop.token,
                    text: (m.token_text)(prop.token),
                    prob: prop.prob,
                    score: *s,
                    top: prop
                        .top
                        .iter()
                        .map(|&(t, p)| (t, (m.token_text)(t), p))
                        .collect(),
                    previous: reopened_from.remove(&pos),
                });
            }
            let masks_left = canvas[layout.gen.clone()]
                .iter()
                .filter(|&&t| t == mask)
                .count();
            let ev = StepEvent {
                index: trace.events.len(),
                block: b,
                step,
                block_start: block.start,
                block_end: block.end,
                planned,
                commits,
                reopened,
                best_left,
                masks_left,
                in_flight: logits.in_flight,
                forward_ms: logits.forward_ms,
                step_ms: ms(ts),
                nfe: den.forwards(),
                elapsed_ms: ms(t0),
            };
            crate::profile::add(crate::profile::Phase::Events, te);
            on_step(&ev);
            trace.events.push(ev);
            den.recycle(logits);
            step += 1;
        }
        den.end_block(block.clone());
        if b == 0 {
            first_block_ms = ms(t0);
        }
        if params.stop_at_eos {
            let generated = block.start.max(layout.gen.start)..block.end;
            if let Some(&tok) = canvas[generated].iter().find(|t| m.stop_ids.contains(t)) {
                stop = Some((
                    block.end,
                    FinishReason::Eos {
                        block: b,
                        token: tok,
                    },
                ));
                break;
            }
        }
    }
    let (end, reason) = stop.unwrap_or((layout.gen.end, FinishReason::Complete));
    let end = if matches!(reason, FinishReason::Cancelled) {
        end.max(layout.gen.start)
    } else {
        end
    };
    let tokens: Vec<u32> = canvas[layout.gen.start..end].to_vec();
    let cut = tokens
        .iter()
        .position(|t| m.stop_ids.contains(t))
        .unwrap_or(tokens.len());
    let text = (m.decode)(
        &tokens[..cut]
            .iter()
            .copied()
            .filter(|&t| t != mask)
            .collect::<Vec<_>>(),
    );
    // A healed run's first token re-types the backed-off text; the text continues the prompt.
    let text = match &heal {
        Some(h) => h.continuation(&text).to_string(),
        None => text,
    };
    let repaired_distance = match &trace.header.task {
        TaskKind::Repair { original, .. } => Some(noise::levenshtein(original, &tokens)),
        _ => None,
    };
    let metrics = Metrics {
        total_ms: ms(t0),
        forwards: den.forwards(),
        tokens: tokens.len(),
        steps: trace.events.len(),
        first_block_ms,
    };
    trace.finish = Some(Finish {
        reason,
        tokens,
        text,
        metrics,
        repaired_distance,
    });
    Ok(trace)
}
