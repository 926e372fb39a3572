//! Interventions: a paused run's canvas, edited by hand (a token pinned, a committed token
//! re-masked, a masked position forced to commit next), becomes the starting canvas of a new
//! run — a fork — whose header records the edits. The sampler decodes whatever masks a header's
//! canvas holds; the one thing it reads from the intervention is `force_next`.

use crate::trace::{Edit, Intervention, Trace, TraceHeader};

/// The header of a run that continues `trace` from step `at_step` after `edits`, committing the
/// masked positions `force_next` at its first step. Errors name the edit that cannot apply.
pub fn fork_header(
    trace: &Trace,
    at_step: usize,
    edits: &[Edit],
    force_next: &[usize],
) -> Result<TraceHeader, String> {
    let h = &trace.header;
    if at_step > trace.len() {
        return Err(format!(
            "step {at_step} is past the run's end ({} steps)",
            trace.len()
        ));
    }
    if edits.is_empty() && force_next.is_empty() {
        return Err(
            "no edits: pin or re-mask a token, or force a masked one to commit next".into(),
        );
    }
    let cells = trace.cells_at(at_step);
    let mut initial: Vec<u32> = cells.iter().map(|c| c.token).collect();
    let mut initial_text: Vec<String> = cells.iter().map(|c| c.text.clone()).collect();
    // A masked cell keeps the mask's own text from the original header.
    let mask_text = (h.gen_start..h.gen_end)
        .find(|&p| h.initial[p] == h.mask_id)
        .map_or_else(|| "[MASK]".to_string(), |p| h.initial_text[p].clone());
    for (p, c) in cells.iter().enumerate() {
        if c.masked {
            initial_text[p] = mask_text.clone();
        }
    }
    for e in edits {
        if !(h.gen_start..h.gen_end).contains(&e.pos) {
            return Err(format!(
                "position {} is outside the generated region {}..{}",
                e.pos, h.gen_start, h.gen_end
            ));
        }
        match e.token {
            Some(t) if t == h.mask_id => {
                return Err(format!("position {}: pinning the mask token", e.pos))
            }
            Some(t) => {
                initial[e.pos] = t;
                initial_text[e.pos] = e.text.clone();
            }
            None => {
                initial[e.pos] = h.mask_id;
                initial_text[e.pos] = mask_text.clone();
            }
        }
    }
    check_forced(trace, &initial, force_next)?;
    Ok(TraceHeader {
        initial,
        initial_text,
        intervention: Some(Intervention {
            at_step,
            edits: edits.to_vec(),
            force_next: force_next.to_vec(),
        }),
        ..h.clone()
    })
}

/// A forced position must be masked on the edited canvas and lie in the block decoded next (the
/// block of the first masked position, as the original run laid it out); the sampler checks the
/// same and stops, this names the problem before a run starts.
fn check_forced(trace: &Trace, initial: &[u32], force_next: &[usize]) -> Result<(), String> {
    let h = &trace.header;
    let first_masked = (h.gen_start..h.gen_end).find(|&p| initial[p] == h.mask_id);
    let next_block = first_masked.and_then(|q| {
        trace
            .events
            .iter()
            .find(|e| (e.block_start..e.block_end).contains(&q))
            .map(|e| e.block_start..e.block_end)
    });
    for &p in force_next {
        if !(h.gen_start..h.gen_end).contains(&p) || initial[p] != h.mask_id {
            return Err(format!(
                "position {p} is not masked: only a masked position can be forced to commit next"
            ));
        }
        if let Some(b) = next_block.as_ref().filter(|b| !b.contains(&p)) {
            return Err(format!(
                "position {p} cannot commit next: the next step decodes block {}..{}",
                b.start, b.end
            ));
        }
    }
    Ok(())
}

/// How a generated position differs between two runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Difference {
    /// The final tokens differ.
    Token,
    /// Same final token, committed at a different step.
    CommitStep,
}

/// The step (in the original run's numbering: a fork's steps continue from its `at_step`) at
/// which each position's final token was committed; `None` for positions the run was given.
fn commit_steps(t: &Trace) -> Vec<Option<usize>> {
    let offset = t.header.intervention.as_ref().map_or(0, |i| i.at_step);
    let mut steps = vec![None; t.header.initial.len()];
    for e in &t.events {
        for c in &e.commits {
            if let Some(s) = steps.get_mut(c.pos) {
                *s = Some(offset + e.index);
            }
        }
    }
    steps
}

/// Generated positions whose final token, or the step that committed it, differs between two runs
/// of the same canvas layout, in position order. A position one run was given (a fork's canvas
/// before its first step) has no commit step to compare.
pub fn differences(a: &Trace, b: &Trace) -> Vec<(usize, Difference)> {
    let (ha, hb) = (&a.header, &b.header);
    let start = ha.gen_start.max(hb.gen_start);
    let end = ha.gen_end.min(hb.gen_end);
    let (ta, tb) = (a.tokens_at(a.len()), b.tokens_at(b.len()));
    let (sa, sb) = (commit_steps(a), commit_steps(b));
    (start..end)
        .filter_map(|p| {
            if ta.get(p) != tb.get(p) {
                return Some((p, Difference::Token));
            }
            match (sa.get(p).copied().flatten(), sb.get(p).copied().flatten()) {
                (Some(x), Some(y)) if x != y => Some((p, Difference::CommitStep)),
                _ => None,
            }
        })
        .collect()
}

/// The positions of [`differences`].
pub fn differing_positions(a: &Trace, b: &Trace) -> Vec<usize> {
    differences(a, b).into_iter().map(|(p, _)| p).collect()
}

/// Two traces can be diffed when they decode the same prompt on the same canvas layout; the error
/// names both files.
pub fn comparable(a: &Trace, a_name: &str, b: &Trace, b_name: &str) -> Result<(), String> {
    let (ha, hb) = (&a.header, &b.header);
    if ha.prompt != hb.prompt || ha.initial.get(..ha.gen_start) != hb.initial.get(..hb.gen_start) {
        let short = |s: &str| {
            let mut c: String = s.chars().take(40).collect();
            if s.chars().count() > 40 {
                c.push('…');
            }
            c
        };
        return Err(format!(
            "Cannot diff {a_name} and {b_name}: they are runs of different prompts \
             ({a_name}: {:?}, {b_name}: {:?})",
            short(&ha.prompt),
            short(&hb.prompt)
        ));
    }
    if ha.gen_end != hb.gen_end {
        return Err(format!(
            "Cannot diff {a_name} and {b_name}: they generate different lengths \
             ({a_name}: positions {}..{}, {b_name}: {}..{})",
            ha.gen_start, ha.gen_end, hb.gen_start, hb.gen_end
        ));
    }
    Ok(())
}
