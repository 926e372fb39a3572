//! The sampler on hand-made logits: schedules, rules, edit noise, traces and replay.

use std::ops::Range;
use std::sync::atomic::AtomicBool;

use unmask::error::Result;
use unmask::model::Family;
use unmask::sampler::denoiser::BlockLogits;
use unmask::sampler::noise;
use unmask::sampler::propose::{filtered_probs, propose, score_probs, top_n};
use unmask::sampler::schedule::{planned, select, select_forced, Candidate};
use unmask::sampler::{
    self, Denoiser, Layout, ModelFacts, SamplerParams, Schedule, Task, UnmaskRule,
};
use unmask::trace::{FinishReason, Trace};

use rand::SeedableRng;

const V: usize = 16;
const MASK: u32 = 15;
const EOS: u32 = 14;

/// Logits that prefer token `(pos * 3) % 13` at every position, more strongly further left, so
/// confidence order is position order and the final text is known in advance.
struct Scripted {
    forwards: usize,
    eos_at: Option<usize>,
    calls: Vec<Range<usize>>,
    /// The canvas each forward was given: the live canvas, seen from the model's side.
    seen: Vec<Vec<u32>>,
}

impl Scripted {
    fn new() -> Self {
        Scripted {
            forwards: 0,
            eos_at: None,
            calls: Vec::new(),
            seen: Vec::new(),
        }
    }
    fn want(&self, pos: usize) -> u32 {
        if Some(pos) == self.eos_at {
            EOS
        } else {
            (pos as u32 * 3) % 13
        }
    }
}

impl Denoiser for Scripted {
    fn begin(&mut self, _canvas: &[u32], _layout: &Layout) -> Result<()> {
        Ok(())
    }
    fn logits(
        &mut self,
        canvas: &[u32],
        block: Range<usize>,
        _need: &[usize],
    ) -> Result<BlockLogits> {
        self.forwards += 1;
        self.calls.push(block.clone());
        self.seen.push(canvas.to_vec());
        let mut data = vec![0f32; block.len() * V];
        for (r, pos) in block.clone().enumerate() {
            data[r * V + self.want(pos) as usize] = 8.0 - pos as f32 * 0.1;
        }
        Ok(BlockLogits {
            data,
            rows: None,
            vocab: V,
            in_flight: block.len(),
            forward_ms: 0.0,
            stats: None,
        })
    }
    fn end_block(&mut self, _block: Range<usize>) {}
    fn forwards(&self) -> usize {
        self.forwards
    }
}

fn with_facts<R>(f: impl FnOnce(&ModelFacts) -> R) -> R {
    let text = |t: u32| format!("t{t}");
    let decode = |ids: &[u32]| {
        ids.iter()
            .map(|t| format!("t{t}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let facts = ModelFacts {
        model_id: "scripted".into(),
        model_hash: "0".into(),
        family: "test".into(),
        tokenizer: "test".into(),
        mask_id: MASK,
        stop_ids: vec![EOS],
        vocab_size: 14,
        // The scripted logits cover 14 ids; EOS (14) and the mask (15) are rows of its embedding.
        embedding_rows: 16,
        context: 4096,
        device: "cpu".into(),
        aligned_blocks: false,
        fim: None,
        token_text: &text,
        decode: &decode,
    };
    f(&facts)
}

fn run(params: &SamplerParams, den: &mut Scripted, prompt: &[u32]) -> Trace {
    with_facts(|m| {
        let header = sampler::prepare(
            &Task::Complete {
                prompt: prompt.to_vec(),
            },
            params,
            "p",
            m,
        )
        .unwrap();
        sampler::decode(header, den, m, &AtomicBool::new(false), &mut |_| {}).unwrap()
    })
}

#[test]
fn uniform_schedule_matches_llada_split() {
    // LLaDA: 10 masks over 4 steps → 3, 3, 2, 2.
    let mut left = 10;
    let mut got = Vec::new();
    for s in 0..4 {
        let k = planned(Schedule::Uniform, left, s, 4);
        got.push(k);
        left -= k;
    }
    assert_eq!(got, vec![3, 3, 2, 2]);
    assert_eq!(planned(Schedule::Uniform, 3, 0, 8), 1);
}

#[test]
fn timestep_schedule_floors_and_finishes() {
    // Dream: n·(1 − s/t) floored; the last step commits the rest.
    let steps = 4;
    let mut left = 8;
    let mut got = Vec::new();
    for s in 0..steps {
        let k = planned(Schedule::Timestep, left, s, steps);
        got.push(k);
        left -= k;
    }
    assert_eq!(left, 0);
    assert_eq!(got[0], 1, "8·(1 − 0.75025/1) = 1.998 → 1");
    assert_eq!(*got.last().unwrap(), 8 - got[..3].iter().sum::<usize>());
}

#[test]
fn selection_ranks_by_score_and_breaks_ties_by_position() {
    let c = |pos, score: f32| Candidate {
        pos,
        score,
        prob: score,
    };
    let cands = [c(5, 0.5), c(2, 0.9), c(7, 0.9), c(3, 0.1)];
    assert_eq!(
        select(UnmaskRule::LowConfidence, &cands, 2, 0.0),
        vec![2, 7]
    );
    assert_eq!(
        select(UnmaskRule::LowConfidence, &cands, 3, 0.0),
        vec![2, 5, 7]
    );
    // Never more than there are.
    assert_eq!(select(UnmaskRule::LowConfidence, &cands, 99, 0.0).len(), 4);
    // Threshold: everything above τ, at least one.
    assert_eq!(select(UnmaskRule::Threshold, &cands, 1, 0.4), vec![2, 5, 7]);
    assert_eq!(select(UnmaskRule::Threshold, &cands, 1, 0.95), vec![2]);
}

#[test]
fn a_forced_position_takes_a_planned_slot_whatever_its_score() {
    let c = |pos, score: f32| Candidate {
        pos,
        score,
        prob: score,
    };
    let cands = [c(5, 0.5), c(2, 0.9), c(7, 0.9), c(3, 0.1)];
    let lc = UnmaskRule::LowConfidence;
    assert_eq!(select_forced(lc, &cands, 2, 0.0, &[3]), vec![2, 3]);
    assert_eq!(select_forced(lc, &cands, 1, 0.0, &[3]), vec![3]);
    // More forced than planned: all of them, nothing else.
    assert_eq!(select_forced(lc, &cands, 1, 0.0, &[3, 5]), vec![3, 5]);
    // Nothing forced: the rule as it is; a forced non-candidate is ignored.
    assert_eq!(
        select_forced(lc, &cands, 2, 0.0, &[]),
        select(lc, &cands, 2, 0.0)
    );
    assert_eq!(select_forced(lc, &cands, 2, 0.0, &[40]), vec![2, 7]);
    // Threshold: the forced one replaces the guaranteed best, the rest above τ stay.
    let th = UnmaskRule::Threshold;
    assert_eq!(select_forced(th, &cands, 1, 0.95, &[3]), vec![3]);
    assert_eq!(select_forced(th, &cands, 1, 0.4, &[3]), vec![2, 3, 5, 7]);
}

#[test]
fn filters_and_proposals() {
    let logits = [2.0f32, 1.0, 0.0, -1.0];
    let p = filtered_probs(&logits, 1.0, 0, 1.0);
    assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    let k2 = filtered_probs(&logits, 1.0, 2, 1.0);
    assert_eq!(k2[2], 0.0);
    assert_eq!(k2[3], 0.0);
    assert!((k2[0] + k2[1] - 1.0).abs() < 1e-6);
    let p50 = filtered_probs(&logits, 1.0, 0, 0.5);
    assert!(p50[0] > 0.99, "the top token alone covers half the mass");
    assert_eq!(top_n(&[0.1, 0.4, 0.4, 0.05], 2), vec![(1, 0.4), (2, 0.4)]);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let params = SamplerParams {
        temperature: 0.0,
        ..Default::default()
    };
    let prop = propose(&logits, &params, 99, None, &mut rng);
    // The greedy shortcut with precomputed softmax statistics gives the same proposal.
    let t = candle_core::Tensor::from_slice(&logits, (1, 4), &candle_core::Device::Cpu).unwrap();
    let st = unmask::model::denoiser::row_stats(&t).unwrap()[0];
    let fast = propose(&logits, &params, 99, Some(st), &mut rng);
    assert_eq!(fast.token, prop.token);
    assert!((fast.prob - prop.prob).abs() < 1e-6 && (fast.margin - prop.margin).abs() < 1e-6);
    assert!((fast.neg_entropy - prop.neg_entropy).abs() < 1e-5);
    assert_eq!(prop.token, 0);
    assert!((prop.margin - (p[0] - p[1])).abs() < 1e-6);
    assert!(prop.neg_entropy < 0.0);
}

#[test]
fn block_loop_commits_every_position_with_planned_counts() {
    let params = SamplerParams {
        gen_length: 16,
        block_size: 8,
        steps: 4,
        stop_at_eos: false,
        ..Default::default()
    };
    let mut den = Scripted::new();
    let trace = run(&params, &mut den, &[1, 2, 3]);
    assert_eq!(trace.events.len(), 8, "two blocks × four steps");
    assert!(trace
        .events
        .iter()
        .all(|e| e.commits.len() == 2 && e.planned == 2));
    // Confidence falls with position, so each block fills left to right two at a time.
    assert_eq!(
        trace.events[0]
            .commits
            .iter()
            .map(|c| c.pos)
            .collect::<Vec<_>>(),
        vec![3, 4]
    );
    let fin = trace.finish.as_ref().unwrap();
    assert_eq!(fin.reason, FinishReason::Complete);
    let want: Vec<u32> = (3..19).map(|p| den.want(p)).collect();
    assert_eq!(fin.tokens, want);
    assert_eq!(den.calls[0], 3..11);
    assert_eq!(den.calls[4], 11..19);
}

#[test]
fn autoregressive_setting_is_one_token_per_forward() {
    let params = SamplerParams {
        gen_length: 6,
        block_size: 1,
        steps: 1,
        stop_at_eos: false,
        ..Default::default()
    };
    let mut den = Scripted::new();
    let trace = run(&params, &mut den, &[1]);
    assert_eq!(den.forwards, 6);
    assert!(trace.events.iter().all(|e| e.commits.len() == 1));
}

#[test]
fn threshold_rule_commits_at_least_one_and_all_above_tau() {
    let params = SamplerParams {
        gen_length: 8,
        block_size: 8,
        steps: 8,
        rule: UnmaskRule::Threshold,
        threshold: 0.5,
        stop_at_eos: false,
        ..Default::default()
    };
    let mut den = Scripted::new();
    let trace = run(&params, &mut den, &[1]);
    // Every position's top token has p ≈ e^8 / (e^8 + 15) > 0.5: one step commits the block.
    assert_eq!(trace.events.len(), 1);
    assert_eq!(trace.events[0].commits.len(), 8);
    let strict = SamplerParams {
        threshold: 0.9999,
        ..params
    };
    let mut den = Scripted::new();
    let trace = run(&strict, &mut den, &[1]);
    assert_eq!(
        trace.events.len(),
        8,
        "nothing passes τ: one forced commit per step"
    );
}

#[test]
fn stops_at_the_end_of_the_block_with_eos() {
    let params = SamplerParams {
        gen_length: 16,
        block_size: 4,
        steps: 2,
        stop_at_eos: true,
        ..Default::default()
    };
    let mut den = Scripted::new();
    den.eos_at = Some(1 + 5); // second block
    let trace = run(&params, &mut den, &[1]);
    let fin = trace.finish.unwrap();
    assert_eq!(
        fin.reason,
        FinishReason::Eos {
            block: 1,
            token: EOS
        }
    );
    assert_eq!(fin.tokens.len(), 8);
    assert!(!fin.text.contains("t14"), "text is cut at the stop token");
    // That is SDAR's rule (block_diffusion_generate checks for a stop id after each block). LLaDA's
    // and Dream's samplers never stop early: every block is decoded and the text is cut at the
    // first stop token afterwards.
    let full = SamplerParams {
        stop_at_eos: false,
        ..params
    };
    let mut den = Scripted::new();
    den.eos_at = Some(1 + 5);
    let trace = run(&full, &mut den, &[1]);
    let fin = trace.finish.unwrap();
    assert_eq!(fin.reason, FinishReason::Complete);
    assert_eq!(fin.tokens.len(), 16);
    assert_eq!(fin.tokens[5], EOS);
    assert_eq!(
        den.calls.last().map(|r| r.end),
        Some(17),
        "the last block was decoded"
    );
    let before: Vec<String> = (1..6).map(|p| format!("t{}", (p * 3) % 13)).collect();
    assert_eq!(fin.text, before.join(" "));
}

#[test]
fn same_seed_same_trace_and_replay_reproduces_canvases() {
    let params = SamplerParams {
        gen_length: 16,
        block_size: 8,
        steps: 4,
        temperature: 1.5,
        rule: UnmaskRule::Random,
        edit_noise: 0.3,
        seed: 7,
        stop_at_eos: false,
        ..Default::default()
    };
    let mut live = Scripted::new();
    let a = run(&params, &mut live, &[1, 2]);
    let b = run(&params, &mut Scripted::new(), &[1, 2]);
    let strip = |t: &Trace| {
        t.events
            .iter()
            .map(|e| (e.commits.clone(), e.reopened.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(&a), strip(&b));
    let c = run(
        &SamplerParams {
            seed: 8,
            ..params.clone()
        },
        &mut Scripted::new(),
        &[1, 2],
    );
    assert_ne!(strip(&a), strip(&c), "another seed draws differently");
    assert!(
        a.events.iter().any(|e| !e.reopened.is_empty()),
        "the run re-opens tokens, so replay has revisions to get right"
    );
    // Saved and loaded back, the events rebuild every canvas the sampler held while it ran: the
    // one each step's forward was given (step k's forward sees the canvas after k − 1 steps)...
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.jsonl");
    a.save(&path).unwrap();
    let back = Trace::load(&path).unwrap();
    assert_eq!(live.seen.len(), a.events.last().unwrap().nfe);
    for e in &back.events {
        assert_eq!(
            back.tokens_at(e.index),
            live.seen[e.nfe - 1],
            "canvas before step {}",
            e.index
        );
    }
    // ...and the one it finished with, with no mask left.
    let fin = back.tokens_at(back.len());
    assert!(!fin.contains(&MASK));
    assert_eq!(&fin[2..], &a.finish.as_ref().unwrap().tokens[..]);
}

#[test]
fn edit_noise_reopens_and_records_revisions() {
    let params = SamplerParams {
        gen_length: 8,
        block_size: 8,
        steps: 4,
        edit_noise: 1.0,
        stop_at_eos: false,
        ..Default::default()
    };
    let trace = run(&params, &mut Scripted::new(), &[1]);
    let reopened: usize = trace.events.iter().map(|e| e.reopened.len()).sum();
    assert!(reopened > 0, "noise 1.0 re-opens committed tokens");
    // Every re-opened position is committed again with its previous token recorded.
    let revisions: usize = trace
        .events
        .iter()
        .flat_map(|e| &e.commits)
        .filter(|c| c.previous.is_some())
        .count();
    assert_eq!(revisions, reopened);
    assert!(
        trace.events.last().unwrap().reopened.is_empty(),
        "no noise at a block's last step"
    );
    assert!(!trace.tokens_at(trace.len()).contains(&MASK));
    // Re-open weights favour unlikely tokens.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let mut hits = [0usize; 2];
    for _ in 0..2000 {
        for p in noise::reopen(0.2, &[(0, 0.99), (1, 0.2)], &mut rng) {
            hits[p] += 1;
        }
    }
    assert!(hits[1] > 10 * hits[0], "{hits:?}");
}

#[test]
fn corruption_respects_the_budget() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let orig: Vec<u32> = (0..40).collect();
    let vocab: Vec<u32> = (100..200).collect();
    for budget in [0, 1, 5, 12] {
        let c = noise::corrupt(&orig, budget, &vocab, &mut rng);
        assert!(noise::levenshtein(&orig, &c) <= budget);
    }
    assert_eq!(noise::levenshtein(&[1, 2, 3], &[1, 3]), 1);
}

#[test]
fn bad_parameters_are_named() {
    let p = SamplerParams {
        gen_length: 30,
        block_size: 8,
        ..Default::default()
    };
    let probs = p.problems(0, None);
    assert_eq!(probs[0].field, "block_size");
    assert!(
        probs[0].message.contains("does not divide"),
        "{}",
        probs[0].message
    );
    let p = SamplerParams {
        gen_length: 64,
        ..Default::default()
    };
    let probs = p.problems(100, Some(128));
    assert!(probs
        .iter()
        .any(|x| x.field == "gen_length" && x.message.contains("context")));
    with_facts(|m| {
        let err = sampler::prepare(
            &Task::Complete {
                prompt: vec![1; 5000],
            },
            &SamplerParams::default(),
            "",
            m,
        )
        .unwrap_err();
        assert!(err.to_string().contains("context"), "{err}");
    });
}

#[test]
fn cancel_stops_before_the_next_step() {
    let params = SamplerParams {
        gen_length: 16,
        block_size: 4,
        steps: 4,
        stop_at_eos: false,
        ..Default::default()
    };
    let cancel = AtomicBool::new(false);
    let trace = with_facts(|m| {
        let header = sampler::prepare(&Task::Complete { prompt: vec![1] }, &params, "", m).unwrap();
        let mut n = 0;
        sampler::decode(header, &mut Scripted::new(), m, &cancel, &mut |_| {
            n += 1;
            if n == 3 {
                cancel.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        })
        .unwrap()
    });
    assert_eq!(trace.events.len(), 3);
    assert_eq!(trace.finish.unwrap().reason, FinishReason::Cancelled);
}

#[test]
fn corrupt_traces_name_the_line() {
    let params = SamplerParams {
        gen_length: 8,
        block_size: 4,
        steps: 2,
        stop_at_eos: false,
        ..Default::default()
    };
    let t = run(&params, &mut Scripted::new(), &[1]);
    let mut buf = Vec::new();
    t.write_to(&mut buf).unwrap();
    let text = String::from_utf8(buf).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Truncated in the middle of line 3.
    let cut = text
        .lines()
        .take(2)
        .map(|l| format!("{l}\n"))
        .collect::<String>()
        + &text.lines().nth(2).unwrap()[..20];
    let p = dir.path().join("cut.jsonl");
    std::fs::write(&p, cut).unwrap();
    let e = Trace::load(&p).unwrap_err().to_string();
    assert!(e.contains("cut.jsonl") && e.contains("line 3"), "{e}");
    let p = dir.path().join("garbage.jsonl");
    std::fs::write(&p, "not json\n").unwrap();
    let e = Trace::load(&p).unwrap_err().to_string();
    assert!(e.contains("line 1"), "{e}");
    let p = dir.path().join("empty.jsonl");
    std::fs::write(&p, "").unwrap();
    assert!(Trace::load(&p)
        .unwrap_err()
        .to_string()
        .contains("no header"));
}

/// Logits that always prefer token 5 (logit 8), then 6 (7), then 7 (6): greedy decoding loops.
struct Looping;

impl Denoiser for Looping {
    fn begin(&mut self, _canvas: &[u32], _layout: &Layout) -> Result<()> {
        Ok(())
    }
    fn logits(
        &mut self,
        _canvas: &[u32],
        block: Range<usize>,
        _need: &[usize],
    ) -> Result<BlockLogits> {
        let mut data = vec![0f32; block.len() * V];
        for r in 0..block.len() {
            data[r * V + 5] = 8.0;
            data[r * V + 6] = 7.0;
            data[r * V + 7] = 6.0;
        }
        Ok(BlockLogits {
            rows: None,
            data,
            vocab: V,
            in_flight: block.len(),
            forward_ms: 0.0,
            stats: None,
        })
    }
    fn end_block(&mut self, _block: Range<usize>) {}
    fn forwards(&self) -> usize {
        0
    }
}

fn looped(p: &SamplerParams) -> Vec<u32> {
    with_facts(|m| {
        let header = sampler::prepare(&Task::Complete { prompt: vec![2, 3] }, p, "p", m).unwrap();
        let t = sampler::decode(
            header,
            &mut Looping,
            m,
            &AtomicBool::new(false),
            &mut |_| {},
        )
        .unwrap();
        t.finish.unwrap().tokens
    })
}

#[test]
fn repetition_controls_break_a_greedy_loop_and_are_off_by_default() {
    let ar = SamplerParams {
        gen_length: 6,
        block_size: 1,
        steps: 1,
        stop_at_eos: false,
        ..Default::default()
    };
    assert_eq!(looped(&ar), vec![5; 6]);
    // Penalty 2 halves a used token's logit once (per token, not per occurrence): 5 (8 → 4),
    // then 6 (7 → 3.5), then 7 (6 → 3), then 5 is the best again.
    let pen = looped(&SamplerParams {
        repetition_penalty: 2.0,
        ..ar.clone()
    });
    assert_eq!(pen, vec![5, 6, 7, 5, 5, 5]);
    // No-repeat 2-grams: after "5 5", "5 6", "6 5"… each bigram appears once at most.
    let ng = looped(&SamplerParams {
        no_repeat_ngram: 2,
        ..ar.clone()
    });
    let mut grams: Vec<(u32, u32)> = ng.windows(2).map(|w| (w[0], w[1])).collect();
    let n = grams.len();
    grams.sort_unstable();
    grams.dedup();
    assert_eq!(grams.len(), n, "{ng:?}");
    assert_eq!(ng, vec![5, 5, 6, 5, 7, 5]);
    let bad = SamplerParams {
        repetition_penalty: 0.5,
        ..ar
    };
    assert!(bad
        .problems(2, None)
        .iter()
        .any(|p| p.field == "repetition_penalty"));
}

#[test]
fn a_healed_first_position_only_takes_allowed_tokens() {
    let p = SamplerParams {
        gen_length: 4,
        block_size: 4,
        steps: 2,
        stop_at_eos: false,
        ..Default::default()
    };
    let heal = sampler::heal::Heal {
        removed: vec![9],
        text: "t9".into(),
        allowed: vec![9, 11],
    };
    let t = with_facts(|m| {
        let header = sampler::prepare_healed(
            &Task::Complete { prompt: vec![2, 3] },
            Some(heal.clone()),
            &p,
            "p",
            m,
        )
        .unwrap();
        assert_eq!(header.heal.as_ref(), Some(&heal));
        sampler::decode(
            header,
            &mut Scripted::new(),
            m,
            &AtomicBool::new(false),
            &mut |_| {},
        )
        .unwrap()
    });
    let fin = t.finish.unwrap();
    // Scripted prefers (2·3) % 13 = 6 at position 2; the constraint forces 9 or 11 there.
    assert!(heal.allowed.contains(&fin.tokens[0]), "{:?}", fin.tokens);
    assert!(fin.tokens[1..] == [9, 12, 2]);
    // The text continues the original prompt: the re-typed "t9" is cut from its front.
    assert!(!fin.text.starts_with("t9"), "{}", fin.text);
}

/// The probability vector each reference sampler computes from one position's logits before it
/// draws or ranks (scripts/make_sampling_golden.py runs their own functions), against ours.
#[test]
fn filtered_distributions_match_the_references() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/sampling_golden.json");
    let g: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("golden file")).unwrap();
    let rows: Vec<Vec<f32>> = serde_json::from_value(g["rows"].clone()).unwrap();
    let cases = g["cases"].as_array().expect("cases");
    let mut failures = Vec::new();
    for c in cases {
        let reference = c["reference"].as_str().unwrap();
        let row = &rows[c["row"].as_u64().unwrap() as usize];
        let t = c["temperature"].as_f64().unwrap() as f32;
        let k = c["top_k"].as_u64().unwrap() as usize;
        let p = c["top_p"].as_f64().unwrap() as f32;
        let want: Vec<f32> = serde_json::from_value(c["probs"].clone()).unwrap();
        let family = match reference {
            "llada" => Family::Llada,
            "dream" => Family::Dream,
            _ => Family::Sdar,
        };
        // The family's preset picks the reference's filters.
        let params = SamplerParams {
            temperature: t,
            top_k: k,
            top_p: p,
            ..unmask::presets::reference_params(family, None, 32)
        };
        let got = score_probs(row, &params);
        let err = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        if err > 1e-6 {
            failures.push(format!(
                "{reference} row {} t={t} k={k} p={p}: max error {err}",
                c["row"]
            ));
        }
        if let Some(tok) = c.get("token").and_then(serde_json::Value::as_u64) {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
            let prop = propose(row, &params, 999, None, &mut rng);
            if u64::from(prop.token) != tok {
                failures.push(format!(
                    "{reference} row {}: greedy token {} vs {tok}",
                    c["row"], prop.token
                ));
            }
            if let Some(conf) = c.get("confidence").and_then(serde_json::Value::as_f64) {
                if (f64::from(prop.prob) - conf).abs() > 1e-6 {
                    failures.push(format!(
                        "{reference} row {}: confidence {} vs {conf}",
                        c["row"], prop.prob
                    ));
                }
            }
        }
    }
    assert!(cases.len() >= 45, "only {} cases", cases.len());
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn command_line_names_are_the_display_names() {
    use clap::ValueEnum;
    for r in UnmaskRule::ALL {
        assert_eq!(r.to_possible_value().unwrap().get_name(), r.name());
    }
    for s in Schedule::ALL {
        assert_eq!(s.to_possible_value().unwrap().get_name(), s.name());
    }
}

/// The fast proposal (partial selection, device statistics) against the straightforward full
/// sort in f64, over many random rows, filters and temperatures: same token, same scores.
#[test]
fn fast_proposals_equal_the_reference_definition() {
    use rand::Rng;
    use unmask::sampler::propose::{propose_reference, top_m};
    let mut g = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    for &vocab in &[1usize, 2, 7, 300, 5000] {
        for case in 0..12 {
            // Peaked and flat rows, with exact ties (quantised values). The top-p values avoid cuts
            // that fall exactly on a ratio of tied masses, where the last bit of the normaliser decides.
            let spread = if case % 2 == 0 { 8.0 } else { 0.5 };
            let logits: Vec<f32> = (0..vocab)
                .map(|_| (g.random::<f32>() * spread * 4.0).round() / 4.0)
                .collect();
            let mask = (case as u32 * 13) % vocab as u32;
            // top_m: the m best by value, ties by lower id, as a full sort gives.
            let mut order: Vec<u32> = (0..vocab as u32).collect();
            order.sort_by(|&a, &b| {
                logits[b as usize]
                    .total_cmp(&logits[a as usize])
                    .then(a.cmp(&b))
            });
            for m in [1, 5, 64] {
                assert_eq!(top_m(&logits, m), order[..m.min(vocab)].to_vec());
            }
            let t = candle_core::Tensor::from_slice(&logits, (1, vocab), &candle_core::Device::Cpu)
                .unwrap();
            let st = unmask::model::denoiser::row_stats(&t).unwrap()[0];
            for &(temperature, top_k, top_p) in &[
                (0.0f32, 0usize, 1.0f32),
                (0.0, 0, 0.9137),
                (0.0, 50, 1.0),
                (0.0, 50, 0.9137),
                (0.0, 5, 0.473),
                (1.0, 0, 0.9137),
                (0.7, 50, 1.0),
                (0.2, 0, 0.9137),
                (0.2, 50, 0.473),
                (1.0, 1, 1.0),
            ] {
                for filters in [
                    unmask::sampler::Filters::TopKThenTopP,
                    unmask::sampler::Filters::TopPThenTopK,
                    unmask::sampler::Filters::PlainScores,
                ] {
                    let params = SamplerParams {
                        temperature,
                        top_k,
                        top_p,
                        filters,
                        ..Default::default()
                    };
                    for stats in [None, Some(st)] {
                        let seed = g.random::<u64>();
                        let mut r1 = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
                        let mut r2 = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
                        let want = propose_reference(&logits, &params, mask, &mut r1);
                        let got = propose(&logits, &params, mask, stats, &mut r2);
                        let what = format!(
                        "vocab {vocab} case {case} T {temperature} k {top_k} p {top_p} {filters:?} stats {}",
                        stats.is_some()
                    );
                        assert_eq!(got.token, want.token, "{what}");
                        assert!(
                            (got.prob - want.prob).abs() < 1e-5,
                            "{what}: {} vs {}",
                            got.prob,
                            want.prob
                        );
                        assert!((got.margin - want.margin).abs() < 1e-5, "{what}");
                        assert!(
                            (got.neg_entropy - want.neg_entropy).abs()
                                < 1e-4 * (1.0 + want.neg_entropy.abs()),
                            "{what}: {} vs {}",
                            got.neg_entropy,
                            want.neg_entropy
                        );
                        let ids = |p: &unmask::sampler::propose::Proposal| {
                            p.top.iter().map(|t| t.0).collect::<Vec<_>>()
                        };
                        assert_eq!(ids(&got), ids(&want), "{what}");
                    }
                }
            }
        }
    }
}

/// Host-side softmax statistics equal the tensor version (the CPU path uses the former).
#[test]
fn host_row_stats_equal_tensor_row_stats() {
    use unmask::model::denoiser::row_stats;
    use unmask::sampler::denoiser::host_row_stats;
    let data: Vec<f32> = (0..3 * 50)
        .map(|i| ((i * 37) % 23) as f32 * 0.3 - 2.0)
        .collect();
    let t = candle_core::Tensor::from_slice(&data, (3, 50), &candle_core::Device::Cpu).unwrap();
    let a = row_stats(&t).unwrap();
    let b = host_row_stats(&data, 50);
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert!((x.lse - y.lse).abs() < 1e-5, "{} vs {}", x.lse, y.lse);
        assert!((x.neg_entropy - y.neg_entropy).abs() < 1e-5);
    }
    assert!(host_row_stats(&[], 0).is_empty());
}

/// The proposal's nucleus search (a histogram locates the top-p cut, only the tokens near it are
/// sorted) against the full sort, on rows as flat as a random model's over a large vocabulary,
/// where the nucleus holds tens of thousands of tokens.
#[test]
fn nucleus_search_equals_the_reference_on_a_large_flat_vocabulary() {
    use rand::Rng;
    use unmask::sampler::propose::propose_reference;
    use unmask::sampler::Filters;
    let vocab = 60_000;
    let mut g = rand_chacha::ChaCha8Rng::seed_from_u64(21);
    for row in 0..3 {
        // Roughly normal, spread 0.45 (a random Dream model's logits), a few exact ties.
        let logits: Vec<f32> = (0..vocab)
            .map(|_| {
                let x: f32 = (0..4).map(|_| g.random::<f32>()).sum::<f32>() - 2.0;
                (x * 0.78 * 1024.0).round() / 1024.0
            })
            .collect();
        let mask = 1000 + row as u32;
        for &(temperature, top_p) in &[(0.2f32, 0.95f32), (1.0, 0.5), (0.0, 0.95), (0.7, 0.05)] {
            for filters in [Filters::TopKThenTopP, Filters::TopPThenTopK] {
                let params = SamplerParams {
                    temperature,
                    top_k: 0,
                    top_p,
                    filters,
                    ..Default::default()
                };
                let seed = g.random::<u64>();
                let mut r1 = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
                let mut r2 = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
                let want = propose_reference(&logits, &params, mask, &mut r1);
                let got = propose(&logits, &params, mask, None, &mut r2);
                let what = format!("row {row} T {temperature} p {top_p} {filters:?}");
                assert_eq!(got.token, want.token, "{what}");
                assert!((got.prob - want.prob).abs() < 1e-6, "{what}");
                assert!((got.margin - want.margin).abs() < 1e-6, "{what}");
                assert!(
                    (got.neg_entropy - want.neg_entropy).abs() < 1e-4 * want.neg_entropy.abs(),
                    "{what}: {} vs {}",
                    got.neg_entropy,
                    want.neg_entropy
                );
                let ids = |p: &unmask::sampler::propose::Proposal| {
                    p.top.iter().map(|t| t.0).collect::<Vec<_>>()
                };
                assert_eq!(ids(&got), ids(&want), "{what}");
            }
        }
    }
}

const WIDE: usize = 8192;
const WIDE_MASK: u32 = WIDE as u32 - 1;

/// Flat pseudo-random logits over a vocabulary wide enough that the sampler proposes a step's
/// rows in parallel; remembers what it returned.
struct Wide {
    forwards: usize,
    returned: Vec<Vec<f32>>,
}

impl Denoiser for Wide {
    fn begin(&mut self, _canvas: &[u32], _layout: &Layout) -> Result<()> {
        Ok(())
    }
    fn logits(
        &mut self,
        canvas: &[u32],
        block: Range<usize>,
        _need: &[usize],
    ) -> Result<BlockLogits> {
        self.forwards += 1;
        let salt: u64 = canvas.iter().map(|&t| t as u64).sum();
        let mut data = Vec::with_capacity(block.len() * WIDE);
        for pos in block.clone() {
            for i in 0..WIDE as u64 {
                let h = (pos as u64 * 7919 + i * 104_729 + salt * 31)
                    .wrapping_mul(0x9E37_79B9_7F4A_7C15);
                data.push(((h >> 40) % 4096) as f32 / 1024.0);
            }
        }
        self.returned.push(data.clone());
        Ok(BlockLogits {
            data,
            rows: None,
            vocab: WIDE,
            in_flight: block.len(),
            forward_ms: 0.0,
            stats: None,
        })
    }
    fn end_block(&mut self, _block: Range<usize>) {}
    fn forwards(&self) -> usize {
        self.forwards
    }
}

/// A step's rows are proposed in parallel from random numbers drawn up front: the traces are the
/// same on one thread and on several, and the first step's proposals and scores are exactly
/// what proposing row by row with one generator (the sequential definition) gives.
#[test]
fn parallel_proposals_equal_row_by_row_proposals() {
    use unmask::sampler::propose::score;
    let prompt = [5u32, 6, 7];
    for (temperature, top_p, rule) in [
        (0.7f32, 0.9f32, UnmaskRule::Random),
        (0.0, 0.95, UnmaskRule::Entropy),
        (1.0, 1.0, UnmaskRule::LowConfidence),
    ] {
        let params = SamplerParams {
            gen_length: 16,
            block_size: 16,
            steps: 4,
            temperature,
            top_p,
            rule,
            seed: 11,
            stop_at_eos: false,
            ..Default::default()
        };
        let run_on = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let text = |t: u32| format!("t{t}");
                let decode = |ids: &[u32]| format!("{} ids", ids.len());
                let facts = ModelFacts {
                    model_id: "wide".into(),
                    model_hash: "0".into(),
                    family: "test".into(),
                    tokenizer: "test".into(),
                    mask_id: WIDE_MASK,
                    stop_ids: vec![],
                    vocab_size: WIDE,
                    embedding_rows: WIDE,
                    context: 4096,
                    device: "cpu".into(),
                    aligned_blocks: false,
                    fim: None,
                    token_text: &text,
                    decode: &decode,
                };
                let header = sampler::prepare(
                    &Task::Complete {
                        prompt: prompt.to_vec(),
                    },
                    &params,
                    "p",
                    &facts,
                )
                .unwrap();
                let mut den = Wide {
                    forwards: 0,
                    returned: Vec::new(),
                };
                let t = sampler::decode(
                    header,
                    &mut den,
                    &facts,
                    &AtomicBool::new(false),
                    &mut |_| {},
                )
                .unwrap();
                (t, den.returned)
            })
        };
        let (one, logits) = run_on(1);
        let (three, _) = run_on(3);
        let commits = |t: &Trace| {
            t.events
                .iter()
                .map(|e| e.commits.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(commits(&one), commits(&three), "{rule:?}");
        // Step 0 row by row: every row proposes, then scores, from one generator.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(params.seed);
        let first = &logits[0];
        let want: Vec<(u32, f32, f32)> = (0..16)
            .map(|r| {
                let row = &first[r * WIDE..(r + 1) * WIDE];
                let p = propose(row, &params, WIDE_MASK, None, &mut rng);
                let s = score(rule, &p, prompt.len() + r, &mut rng);
                (p.token, p.prob, s)
            })
            .collect();
        let ev = &one.events[0];
        assert!(!ev.commits.is_empty());
        for c in &ev.commits {
            let (token, prob, s) = want[c.pos - prompt.len()];
            assert_eq!(
                (c.token, c.prob.to_bits(), c.score.to_bits()),
                (token, prob.to_bits(), s.to_bits()),
                "{rule:?} pos {}",
                c.pos
            );
        }
    }
}
