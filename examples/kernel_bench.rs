//! Throughput of `rows_kernel::matmul_rows` on the embedded model's layer shapes (f16 weights),
//! for 1–64 rows: `cargo run --release --example kernel_bench [THREADS]`.
//!
//! By default one layer's matrices are reused six times (they stay in cache: the kernel's
//! arithmetic speed); with `DISTINCT=1` six distinct layers and the head are used, like a real
//! forward (the weights stream from memory). `SHAPES=1` adds per-matrix figures. Minimum of 30
//! passes; run it on an idle machine, interleaved with the build you compare against.
use half::f16;
use std::time::Instant;
use unmask::model::rows_kernel::{matmul_rows, Mat};

fn main() {
    let threads: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let team = unmask::model::team::Team::new(threads, "bench").unwrap();
    let shapes = [
        (640usize, 384usize),
        (384, 384),
        (2048, 384),
        (384, 1024),
        (4096, 384),
    ];
    let mut seed = 1u64;
    let mut rnd = move || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((seed >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    };
    let distinct = std::env::var("DISTINCT").is_ok();
    let layers = if distinct { 6 } else { 1 };
    let mats: Vec<(usize, usize, Mat)> = (0..layers)
        .flat_map(|_| shapes[..4].iter())
        .chain(shapes[4..].iter())
        .map(|&(n, k)| {
            (
                n,
                k,
                Mat::f16(
                    &(0..n * k).map(|_| f16::from_f32(rnd())).collect::<Vec<_>>(),
                    n,
                    k,
                ),
            )
        })
        .collect();
    for &m in &[1usize, 2, 3, 4, 8, 16, 32, 64] {
        let mut best = f64::MAX;
        let flop: f64 = mats
            .iter()
            .map(|(n, k, _)| 2.0 * (m * n * k) as f64)
            .sum::<f64>()
            * (if distinct { 1.0 } else { 6.0 });
        let xs: Vec<Vec<f32>> = mats
            .iter()
            .map(|(_, k, _)| (0..m * k).map(|_| rnd()).collect())
            .collect();
        let mut outs: Vec<Vec<f32>> = mats.iter().map(|(n, _, _)| vec![0f32; m * n]).collect();
        for _ in 0..30 {
            let t = Instant::now();
            {
                for _layer in 0..(if distinct { 1 } else { 6 }) {
                    for (i, (n, k, w)) in mats.iter().enumerate() {
                        matmul_rows(&team, &xs[i], m, *k, w, *n, &mut outs[i]);
                    }
                }
            }
            best = best.min(t.elapsed().as_secs_f64());
        }
        if std::env::var("SHAPES").is_ok() {
            for (i, (n, k, w)) in mats.iter().enumerate() {
                let mut b = f64::MAX;
                for _ in 0..30 {
                    let t = Instant::now();
                    matmul_rows(&team, &xs[i], m, *k, w, *n, &mut outs[i]);
                    b = b.min(t.elapsed().as_secs_f64());
                }
                print!(" [{n}x{k}] {:5.1}", 2.0 * (m * n * k) as f64 / b / 1e9);
            }
            println!();
        }
        println!(
            "m {m:3}: {:7.3} ms  {:6.1} GFLOP/s  ({:.2} ms/row)",
            best * 1e3,
            flop / best / 1e9,
            best * 1e3 / m as f64
        );
    }
}
