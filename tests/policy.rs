//! Constrained-order training and on-policy step reduction (`train::policy`) on the tiny config:
//! trajectories from real rollouts, selection, distillation targets, order batches and a
//! fine-tuning run that loads and generates.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use candle_core::{DType, Device};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use unmask::sampler::SamplerParams;
use unmask::train::policy::{
    agreement, distil_target, fine_tune, order_batch, rollouts, select_best, FinetuneOptions,
    Trajectory,
};
use unmask::train::{train, NetConfig, TrainOptions, MASK_ID, PAD_ID};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn traj(canvas: Vec<u32>, gen_start: usize, block: usize, rank: Vec<Option<usize>>) -> Trajectory {
    Trajectory {
        canvas,
        gen_start,
        block,
        rank,
        mean_logp: -1.0,
        text: String::new(),
    }
}

#[test]
fn order_batch_masks_what_the_trajectory_had_not_committed_yet() {
    // Prompt 3 tokens, block 4: block 0 = [p p p g], block 1 = [g g g g].
    let t = traj(
        vec![10, 11, 12, 20, 21, 22, 23, 24],
        3,
        4,
        vec![
            None,
            None,
            None,
            Some(0),
            Some(2),
            Some(0),
            Some(1),
            Some(3),
        ],
    );
    let mut seen_steps = std::collections::HashSet::new();
    for seed in 0..40 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let b = order_batch(&[&t], 12, &mut rng).unwrap();
        assert_eq!(&b.clean[..8], &t.canvas[..]);
        assert!(b.clean[8..].iter().all(|&x| x == PAD_ID));
        assert!(
            b.kind[..3].iter().all(|&k| k == 0),
            "the prompt never carries loss"
        );
        assert!(
            b.kind[8..].iter().all(|&k| k == 0),
            "padding never carries loss"
        );
        // Block 0's only generated position (rank 0) is always masked.
        assert_eq!((b.noisy[3], b.kind[3]), (MASK_ID, 1));
        // Block 1: the masked set is {rank ≥ s} for some s — a suffix of the commit order.
        let masked: Vec<usize> = (4..8).filter(|&i| b.noisy[i] == MASK_ID).collect();
        let s = (0..=3)
            .find(|&s| {
                (4..8)
                    .filter(|&i| t.rank[i].unwrap() >= s)
                    .collect::<Vec<_>>()
                    == masked
            })
            .expect("masked set is the not-yet-committed set of some step");
        seen_steps.insert(s);
        for i in 0..8 {
            assert_eq!(b.kind[i] == 1, b.noisy[i] == MASK_ID);
        }
    }
    assert_eq!(seen_steps.len(), 4, "every step of the block is drawn");
    assert!(order_batch(&[&t], 6, &mut ChaCha8Rng::seed_from_u64(0)).is_err());
}

#[test]
fn selection_and_distillation_rules() {
    let mut a = traj(vec![1, 5, 6], 1, 2, vec![None, Some(0), Some(1)]);
    let mut b = a.clone();
    a.mean_logp = -0.5;
    b.mean_logp = -0.2;
    b.canvas[2] = 7;
    // The more likely one wins only if it is valid.
    assert_eq!(select_best(&[a.clone(), b.clone()], &[true, true]), Some(1));
    assert_eq!(
        select_best(&[a.clone(), b.clone()], &[true, false]),
        Some(0)
    );
    assert_eq!(select_best(&[a.clone(), b.clone()], &[false, false]), None);
    assert_eq!(agreement(&a, &b), 0.5);
    // A valid few-step rollout that agrees enough is kept as is…
    assert_eq!(distil_target(&a, true, &b, true, 0.5), Some(a.clone()));
    // …otherwise the many-step tokens are learned under the few-step order.
    let d = distil_target(&a, true, &b, true, 0.9).unwrap();
    assert_eq!(
        (d.canvas.clone(), d.rank.clone()),
        (b.canvas.clone(), a.rank.clone())
    );
    assert_eq!(distil_target(&a, false, &b, false, 0.5), None);
}

#[test]
fn rollouts_select_and_fine_tune_on_the_tiny_config() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base");
    train(&TrainOptions {
        net: NetConfig::tiny(),
        data: vec![root().join("scripts")],
        tokenizer: root().join("assets/tokenizer.json"),
        out: base.clone(),
        stage1_steps: 6,
        seq_len: 64,
        batch_tokens: 256,
        blocks: vec![4],
        block_weights: vec![1.0],
        lr1: 1e-2,
        warmup1: 2,
        save_every: 0,
        quiet: true,
        ..TrainOptions::default()
    })
    .unwrap();
    let m = unmask::model::DiffusionModel::load(&base, DType::F32, &Device::Cpu).unwrap();
    let p = SamplerParams {
        gen_length: 8,
        block_size: 4,
        steps: 4,
        temperature: 1.0,
        stop_at_eos: false,
        ..Default::default()
    };
    let trajs = rollouts(&m, "def add(a, b):\n", &p, &[0, 1, 2]).unwrap();
    assert_eq!(trajs.len(), 3);
    for t in &trajs {
        assert_eq!(t.block, 4);
        assert!(t.text.starts_with("def add(a, b):\n"));
        // Every generated position has a commit step within its block's 4 steps.
        assert!(t.rank[t.gen_start..]
            .iter()
            .all(|r| r.is_some_and(|s| s < 4)));
        assert!(t.mean_logp < 0.0);
    }
    // Different seeds at temperature 1 give different trajectories.
    assert!(trajs.windows(2).any(|w| w[0].canvas != w[1].canvas));
    let best = select_best(&trajs, &[true, true, true]).unwrap();
    let out = dir.path().join("ft");
    let logs = fine_tune(
        &FinetuneOptions {
            init: base,
            out: out.clone(),
            steps: 16,
            rows: 2,
            seq_len: 32,
            lr: 1e-2,
            warmup: 1,
            clip: 1.0,
            seed: 0,
            quiet: true,
        },
        &[trajs[best].clone()],
    )
    .unwrap();
    assert_eq!(logs.len(), 16);
    let mean =
        |x: &[unmask::train::StepLog]| x.iter().map(|r| r.loss).sum::<f32>() / x.len() as f32;
    let (first, last) = (mean(&logs[..4]), mean(&logs[12..]));
    assert!(
        last < first,
        "fine-tuning on one trajectory did not fit it: {first} → {last}"
    );
    // The result is an ordinary model folder that decodes.
    let ft = unmask::model::DiffusionModel::load(&out, DType::F32, &Device::Cpu).unwrap();
    let t = unmask::session::generate(
        &ft,
        &unmask::session::TextTask::Complete {
            prompt: "def add(a, b):\n".into(),
        },
        false,
        &SamplerParams {
            temperature: 0.0,
            ..p
        },
        "cpu",
        &AtomicBool::new(false),
        &mut |_| {},
    )
    .unwrap();
    assert!(t.finish.unwrap().tokens.len() >= 8);
}
