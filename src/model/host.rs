//! The decoder forward for f32 on the CPU, on plain slices: the same arithmetic as the candle
//! path in `transformer.rs` (RMSNorm, GQA attention with rotary positions, SwiGLU), without a
//! tensor library between the operations.
//!
//! Why it exists: a small model's forward is a few hundred tiny operations. Through candle each
//! one allocates its output, some copy strided views (the key/value cache was copied per layer per
//! forward to make it contiguous), and each matrix product hands work to the thread pool and waits
//! for it from outside. Profiled on the embedded model, that overhead was two thirds of an
//! autoregressive forward. Here the products split their panels across the model's own thread team
//! (`rows_kernel::matmul_rows`, `team.rs`), attention reads the cache in place
//! through `gemm`'s strides, and the buffers are reused from forward to forward.
//!
//! The last layer computes attention output and MLP only for the rows whose logits are asked for:
//! the other rows' keys and values (all a later position needs) come from its first half.

use std::sync::Mutex;

use std::time::Instant;

use super::rows_kernel::{matmul_rows, Mat};
use super::team::Team;
use super::transformer::Mask;
use crate::profile::{self, Phase};

/// One decoder layer's weights, each matrix in the checkpoint's `[out, in]` layout.
pub(super) struct HostLayer {
    pub attn_norm: Vec<f32>,
    /// q, k and v stacked: `[q_dim + 2·kv_dim, hidden]`.
    pub qkv: Mat,
    pub qkv_bias: Option<Vec<f32>>,
    pub o: Mat,
    pub q_norm: Option<Vec<f32>>,
    pub k_norm: Option<Vec<f32>>,
    pub mlp_norm: Vec<f32>,
    /// gate and up stacked: `[2·intermediate, hidden]`.
    pub gate_up: Mat,
    pub down: Mat,
}

/// Shapes of the network.
#[derive(Clone, Copy)]
pub(super) struct Dims {
    pub hidden: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub inter: usize,
    pub vocab: usize,
    pub eps: f32,
}

/// Keys and values of one layer for positions `0..`, position-major: `[position, kv_head, dim]`.
#[derive(Clone, Default)]
pub struct HostKv {
    k: Vec<f32>,
    v: Vec<f32>,
    /// Width of one position (kv_heads · head_dim); 0 before the first forward.
    width: usize,
}

impl HostKv {
    /// Positions written: cached ones plus the last forward's scratch.
    pub fn positions(&self) -> usize {
        self.k.len().checked_div(self.width).unwrap_or(0)
    }
}

pub(super) struct HostNet {
    pub dims: Dims,
    pub embed: Mat,
    /// `None`: tied to the embedding.
    pub lm_head: Option<Mat>,
    pub final_norm: Vec<f32>,
    pub inv_freq: Vec<f32>,
    pub layers: Vec<HostLayer>,
    team: Team,
    scratch: Mutex<Scratch>,
}

/// Buffers reused across forwards (allocating them per forward made the kernel zero fresh pages).
#[derive(Default)]
struct Scratch {
    x: Vec<f32>,
    normed: Vec<f32>,
    qkv: Vec<f32>,
    q: Vec<f32>,
    attn: Vec<f32>,
    proj: Vec<f32>,
    gate_up: Vec<f32>,
    act: Vec<f32>,
    cos: Vec<f32>,
    sin: Vec<f32>,
    scores: Vec<f32>,
}

/// A pointer that parallel parts write through, each to its own disjoint region.
struct SendPtr(*mut f32);
// SAFETY: users write disjoint regions only (see each use).
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

fn grow(v: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if v.len() < len {
        v.resize(len, 0.0);
    }
    &mut v[..len]
}

/// RMSNorm of each `w.len()`-wide row of `x` into `out` (the references' f32 math).
fn rms_norm_rows(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let d = w.len();
    for (row, o) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        let sum2: f32 = row.iter().map(|v| v * v).sum();
        let m = (sum2 / d as f32 + eps).sqrt();
        for ((o, &v), &g) in o.iter_mut().zip(row).zip(w) {
            *o = v / m * g;
        }
    }
}

fn rms_norm_in_place(x: &mut [f32], w: &[f32], eps: f32) {
    let sum2: f32 = x.iter().map(|v| v * v).sum();
    let m = (sum2 / x.len() as f32 + eps).sqrt();
    x.iter_mut().zip(w).for_each(|(v, &g)| *v = *v / m * g);
}

/// Rotary embedding of one head vector at the angles' cos/sin (rotate-half layout).
fn rope(x: &mut [f32], cos: &[f32], sin: &[f32]) {
    let half = cos.len();
    let (a, b) = x.split_at_mut(half);
    for j in 0..half {
        let (x1, x2) = (a[j], b[j]);
        a[j] = x1 * cos[j] - x2 * sin[j];
        b[j] = x1 * sin[j] + x2 * cos[j];
    }
}

impl HostNet {
    pub fn new(
        dims: Dims,
        embed: Mat,
        lm_head: Option<Mat>,
        final_norm: Vec<f32>,
        inv_freq: Vec<f32>,
        layers: Vec<HostLayer>,
    ) -> std::io::Result<Self> {
        // As many threads as the global pool (RAYON_NUM_THREADS or the cores), the calling
        // thread included.
        let team = Team::new(rayon::current_num_threads(), "unmask-forward")?;
        Ok(HostNet {
            dims,
            embed,
            lm_head,
            final_norm,
            inv_freq,
            layers,
            team,
            scratch: Mutex::new(Scratch::default()),
        })
    }

    /// The decoder layers' weight precision (`f16`, `bf16`, `f32`).
    pub fn weight_precision(&self) -> &'static str {
        self.layers
            .first()
            .map_or(self.embed.precision(), |l| l.qkv.precision())
    }

    /// Runs `ids` at positions `start..` on top of `cache` (positions `0..start`, checked by the
    /// caller), keeps the keys and values of the first `append` of them, and returns f32 logits
    /// `[rows.len(), vocab]` for the chunk-relative `rows`, in that order, written into `buf`
    /// (its old contents are overwritten; a recycled buffer saves allocating and faulting in
    /// rows × vocabulary fresh floats every forward).
    pub fn forward(
        &self,
        ids: &[u32],
        start: usize,
        cache: &mut Vec<HostKv>,
        mask: Mask<'_>,
        rows: &[usize],
        buf: Vec<f32>,
    ) -> Vec<f32> {
        let mut scratch = self
            .scratch
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // The last layer compacts its rows in place, which needs them ascending and distinct;
        // the logits are put back in the order asked for afterwards.
        let mut sorted = rows.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let scratch: &mut Scratch = &mut scratch;
        let logits = self.forward_sorted(ids, start, cache, mask, &sorted, scratch, buf);
        if sorted == rows {
            return logits;
        }
        let vocab = self.dims.vocab;
        let mut out = Vec::with_capacity(rows.len() * vocab);
        for r in rows {
            let i = sorted
                .binary_search(r)
                .expect("every row is in the sorted set");
            out.extend_from_slice(&logits[i * vocab..(i + 1) * vocab]);
        }
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn forward_sorted(
        &self,
        ids: &[u32],
        start: usize,
        cache: &mut Vec<HostKv>,
        mask: Mask<'_>,
        rows: &[usize],
        s: &mut Scratch,
        mut logits: Vec<f32>,
    ) -> Vec<f32> {
        let Dims {
            hidden: h,
            heads,
            kv_heads,
            head_dim: hd,
            inter,
            vocab,
            eps,
        } = self.dims;
        let t_model = Instant::now();
        let n = ids.len();
        let total = start + n;
        let (qd, kvd) = (heads * hd, kv_heads * hd);
        let half = hd / 2;
        cache.resize_with(self.layers.len(), HostKv::default);
        for kv in cache.iter_mut() {
            // Positions past `start` are scratch: this chunk writes them, the caller keeps only
            // the appended ones by advancing its length.
            kv.k.resize(total * kvd, 0.0);
            kv.v.resize(total * kvd, 0.0);
            kv.width = kvd;
        }
        let x = grow(&mut s.x, n * h);
        for (a, &id) in ids.iter().enumerate() {
            self.embed.row_into(id as usize, &mut x[a * h..(a + 1) * h]);
        }
        let cos = grow(&mut s.cos, n * half);
        let sin = grow(&mut s.sin, n * half);
        for a in 0..n {
            let p = (start + a) as f32;
            for (j, &f) in self.inv_freq.iter().enumerate() {
                let angle = p * f;
                cos[a * half + j] = angle.cos();
                sin[a * half + j] = angle.sin();
            }
        }
        // Rows that run past attention's keys/values in a layer: all of them, except in the last
        // layer, where only the rows asked for do (their hidden states are compacted in place).
        let all: Vec<usize> = (0..n).collect();
        let last = self.layers.len().saturating_sub(1);
        for (li, layer) in self.layers.iter().enumerate() {
            let act: &[usize] = if li == last { rows } else { &all };
            let m = act.len();
            let normed = grow(&mut s.normed, n * h);
            rms_norm_rows(&s.x[..n * h], &layer.attn_norm, eps, normed);
            let width = qd + 2 * kvd;
            let qkv = grow(&mut s.qkv, n * width);
            matmul_rows(&self.team, normed, n, h, &layer.qkv, width, qkv);
            if let Some(b) = &layer.qkv_bias {
                for row in qkv.chunks_exact_mut(width) {
                    row.iter_mut().zip(b).for_each(|(y, b)| *y += b);
                }
            }
            // Keys and values of every row, normed and rotated, into the cache at their positions.
            let kv = &mut cache[li];
            for a in 0..n {
                let row = &mut qkv[a * width..(a + 1) * width];
                let (cs, sn) = (
                    &cos[a * half..(a + 1) * half],
                    &sin[a * half..(a + 1) * half],
                );
                let (_, kv_part) = row.split_at_mut(qd);
                let (k, v) = kv_part.split_at_mut(kvd);
                for head in k.chunks_exact_mut(hd) {
                    if let Some(w) = &layer.k_norm {
                        rms_norm_in_place(head, w, eps);
                    }
                    rope(head, cs, sn);
                }
                let p = start + a;
                kv.k[p * kvd..(p + 1) * kvd].copy_from_slice(k);
                kv.v[p * kvd..(p + 1) * kvd].copy_from_slice(v);
            }
            // Queries of the active rows, heads first: `[heads, m, hd]`.
            let q = grow(&mut s.q, heads * m * hd);
            for (r, &a) in act.iter().enumerate() {
                let row = &qkv[a * width..a * width + qd];
                let (cs, sn) = (
                    &cos[a * half..(a + 1) * half],
                    &sin[a * half..(a + 1) * half],
                );
                for hq in 0..heads {
                    let dst = &mut q[(hq * m + r) * hd..(hq * m + r + 1) * hd];
                    match &layer.q_norm {
                        Some(w) => rms_norm_rows(&row[hq * hd..(hq + 1) * hd], w, eps, dst),
                        None => dst.copy_from_slice(&row[hq * hd..(hq + 1) * hd]),
                    }
                    rope(dst, cs, sn);
                }
            }
            let attn = grow(&mut s.attn, m * qd);
            attention(
                &self.team,
                q,
                &kv.k[..total * kvd],
                &kv.v[..total * kvd],
                AttnShape {
                    heads,
                    kv_heads,
                    hd,
                    m,
                    total,
                },
                &visible_keys(mask, start, act, total),
                &mut s.scores,
                attn,
            );
            let proj = grow(&mut s.proj, m * h);
            matmul_rows(&self.team, attn, m, qd, &layer.o, h, proj);
            // Residual; the last layer compacts its active rows to the front of `x`.
            let x = &mut s.x;
            for (r, &a) in act.iter().enumerate() {
                for c in 0..h {
                    x[r * h + c] = x[a * h + c] + proj[r * h + c];
                }
            }
            let normed = &mut s.normed[..m * h];
            rms_norm_rows(&x[..m * h], &layer.mlp_norm, eps, normed);
            let gu = grow(&mut s.gate_up, m * 2 * inter);
            matmul_rows(&self.team, normed, m, h, &layer.gate_up, 2 * inter, gu);
            let act_buf = grow(&mut s.act, m * inter);
            for r in 0..m {
                let (g, u) = gu[r * 2 * inter..(r + 1) * 2 * inter].split_at(inter);
                crate::vmath::silu_mul(g, u, &mut act_buf[r * inter..(r + 1) * inter]);
            }
            let proj = &mut s.proj[..m * h];
            matmul_rows(&self.team, act_buf, m, inter, &layer.down, h, proj);
            x[..m * h]
                .iter_mut()
                .zip(proj.iter())
                .for_each(|(x, p)| *x += p);
        }
        // With no layers the rows still have to be picked out.
        if self.layers.is_empty() {
            let x = &mut s.x;
            for (r, &a) in rows.iter().enumerate() {
                for c in 0..h {
                    x[r * h + c] = x[a * h + c];
                }
            }
        }
        let t_head = profile::add(Phase::Model, t_model);
        let m = rows.len();
        let normed = grow(&mut s.normed, m * h);
        rms_norm_rows(&s.x[..m * h], &self.final_norm, eps, normed);
        let head = self.lm_head.as_ref().unwrap_or(&self.embed);
        logits.resize(m * vocab, 0.0); // every element is overwritten below
        matmul_rows(&self.team, normed, m, h, head, vocab, &mut logits);
        profile::add(Phase::Head, t_head);
        logits
    }
}

/// Which keys each query row sees. Attention masks here are prefixes (blocks run left to right,
/// so a block-causal row sees every position up to its block's end): scoring stops at the
/// prefix instead of testing every key.
enum Visible<'a> {
    /// Row r sees keys `0..len[r]`.
    Prefix(Vec<usize>),
    /// Block ids that do not grow with the position: `allowed` decides inside `0..len[r]`.
    Masked {
        len: Vec<usize>,
        allowed: Box<dyn Fn(usize, usize) -> bool + Sync + 'a>,
    },
}

impl Visible<'_> {
    fn len(&self, r: usize) -> usize {
        match self {
            Visible::Prefix(len) | Visible::Masked { len, .. } => len[r],
        }
    }
}

/// The keys `0..total` that the active rows (chunk offsets `act`, chunk at `start`) see.
fn visible_keys<'a>(mask: Mask<'a>, start: usize, act: &'a [usize], total: usize) -> Visible<'a> {
    match mask {
        Mask::Full => Visible::Prefix(vec![total; act.len()]),
        Mask::BlockCausal(block_of) => {
            let ids = &block_of[..total];
            let len = |&a: &usize| ids.partition_point(|&b| b <= ids[start + a]);
            if ids.windows(2).all(|w| w[0] <= w[1]) {
                Visible::Prefix(act.iter().map(len).collect())
            } else {
                Visible::Masked {
                    len: vec![total; act.len()],
                    allowed: Box::new(move |r, j| ids[j] <= ids[start + act[r]]),
                }
            }
        }
    }
}

#[derive(Clone, Copy)]
struct AttnShape {
    heads: usize,
    kv_heads: usize,
    hd: usize,
    /// Query rows.
    m: usize,
    /// Key positions.
    total: usize,
}

/// Query rows per attention work item: bounds the scores buffer of a long prefill to
/// `threads × ROW_CHUNK × total` floats, whatever the chunk's length.
const ROW_CHUNK: usize = 64;

/// Scaled dot-product attention of `q [heads, m, hd]` over the position-major `k`, `v`
/// `[total, kv_heads, hd]`, where query row r sees key j iff `allowed(r, j)`; writes
/// `out [m, heads·hd]`. Query head h reads key/value head h / (heads / kv_heads).
#[allow(clippy::too_many_arguments)]
fn attention(
    team: &Team,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    shape: AttnShape,
    visible: &Visible,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    let AttnShape {
        heads,
        kv_heads,
        hd,
        m,
        total,
    } = shape;
    assert!(
        q.len() >= heads * m * hd
            && k.len() >= total * kv_heads * hd
            && v.len() >= total * kv_heads * hd
            && out.len() >= m * heads * hd,
        "attention: short slices"
    );
    let rep = heads / kv_heads;
    let kvd = kv_heads * hd;
    let qd = heads * hd;
    let scale = 1.0 / (hd as f32).sqrt();
    let out_ptr = SendPtr(out.as_mut_ptr());
    let out_ptr = &out_ptr;
    // One work item: query head hq, rows r0..r0+rows; `sc` holds rows × total scores.
    let item = |hq: usize, r0: usize, sc: &mut Vec<f32>| {
        let rows = ROW_CHUNK.min(m - r0);
        // Keys past every row's visible prefix are neither scored nor read.
        let keys = (r0..r0 + rows).map(|r| visible.len(r)).max().unwrap_or(0);
        let sc = grow(sc, rows * keys);
        let g = hq / rep;
        // SAFETY (both calls): `q` holds rows r0.. of head hq (m×hd per head), `k`/`v` total
        // positions of kv head g at row stride kvd (asserted above); `sc` rows×total; the
        // destination is rows r0.. of head hq's hd columns of `out`, which no other item writes.
        unsafe {
            gemm::gemm(
                rows,
                keys,
                hd,
                sc.as_mut_ptr(),
                1,
                keys as isize,
                false,
                q.as_ptr().add((hq * m + r0) * hd),
                1,
                hd as isize,
                k.as_ptr().add(g * hd),
                kvd as isize,
                1,
                0.0f32,
                scale,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
        for (r, row) in sc.chunks_exact_mut(keys.max(1)).take(rows).enumerate() {
            let row = &mut row[..keys];
            let limit = visible.len(r0 + r);
            if let Visible::Masked { allowed, .. } = visible {
                for (j, s) in row[..limit].iter_mut().enumerate() {
                    if !allowed(r0 + r, j) {
                        *s = f32::NEG_INFINITY;
                    }
                }
            }
            let (seen, unseen) = row.split_at_mut(limit);
            unseen.fill(0.0);
            let max = crate::vmath::max(seen);
            let sum = crate::vmath::exp_sub_sum(seen, max);
            seen.iter_mut().for_each(|s| *s /= sum);
        }
        unsafe {
            gemm::gemm(
                rows,
                hd,
                keys,
                out_ptr.0.add(r0 * qd + hq * hd),
                1,
                qd as isize,
                false,
                sc.as_ptr(),
                1,
                keys as isize,
                v.as_ptr().add(g * hd),
                1,
                kvd as isize,
                0.0f32,
                1.0f32,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
    };
    let items: Vec<(usize, usize)> = (0..heads)
        .flat_map(|hq| (0..m).step_by(ROW_CHUNK).map(move |r0| (hq, r0)))
        .collect();
    // In parallel once there is enough work to share; each thread scores into its own buffer.
    if m * total * hd * heads >= 1 << 16 && team.threads() > 1 {
        thread_local! {
            static SCORES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        team.run(items.len(), &|i| {
            let (hq, r0) = items[i];
            SCORES.with(|sc| item(hq, r0, &mut sc.borrow_mut()));
        });
    } else {
        for (hq, r0) in items {
            item(hq, r0, scores);
        }
    }
}
