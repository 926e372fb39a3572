//! Interventions: a paused run's canvas, edited by hand (a token pinned, a committed token
//! re-masked), becomes the starting canvas of a new run — a fork — whose header records the edits.
//! The sampler needs nothing new: it decodes whatever masks a header's canvas holds.

use crate::trace::{Edit, Intervention, Trace, TraceHeader};

/// The header of a run that continues `trace` from step `at_step` after `edits`. Errors name the
/// edit that cannot apply.
pub fn fork_header(trace: &Trace, at_step: usize, edits: &[Edit]) -> Result<TraceHeader, String> {
    let h = &trace.header;
    if at_step > trace.len() {
        return Err(format!(
            "step {at_step} is past the run's end ({} steps)",
            trace.len()
        ));
    }
    if edits.is_empty() {
        return Err("no edits: pin or re-mask a token first".into());
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
    Ok(TraceHeader {
        initial,
        initial_text,
        intervention: Some(Intervention {
            at_step,
            edits: edits.to_vec(),
        }),
        ..h.clone()
    })
}

/// Generated positions whose final token differs between two runs of the same canvas layout.
pub fn differing_positions(a: &Trace, b: &Trace) -> Vec<usize> {
    let (ha, hb) = (&a.header, &b.header);
    let start = ha.gen_start.max(hb.gen_start);
    let end = ha.gen_end.min(hb.gen_end);
    let ta = a.tokens_at(a.len());
    let tb = b.tokens_at(b.len());
    (start..end).filter(|&p| ta.get(p) != tb.get(p)).collect()
}
