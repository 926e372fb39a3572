//! `unmask forward`: logits of one uncached forward, for debugging and parity checks.

use std::collections::HashMap;
use std::path::PathBuf;

use clap::Args;

use crate::hub::Need;
use crate::model::{self, DiffusionModel};

#[derive(Args, Debug)]
pub struct ForwardArgs {
    /// Model folder, `embedded`, a preset key or a hub id (org/name).
    #[arg(long, default_value = "embedded")]
    pub model: String,
    /// Comma-separated token ids.
    #[arg(long, value_delimiter = ',', required = true)]
    pub ids: Vec<u32>,
    /// Block size of the block-causal mask (default: the config's block_size, else 4).
    #[arg(long)]
    pub block_size: Option<usize>,
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Output safetensors file (tensor `logits`, shape [len, vocab], f32).
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(args: &ForwardArgs) -> anyhow::Result<()> {
    let folder = super::download::resolve(&args.model, Need::Weights)?;
    let device = model::device::open(&args.device)?;
    let (m, _) = DiffusionModel::open(&folder, &args.dtype, &device)?;
    let block = args.block_size.or(m.info.config.block_size).unwrap_or(4);
    if block == 0 {
        anyhow::bail!("--block-size must be at least 1");
    }
    let logits = m.forward_all(&args.ids, block)?;
    let mut map = HashMap::new();
    map.insert(
        "logits".to_string(),
        logits.to_device(&candle_core::Device::Cpu)?,
    );
    crate::atomic::write(&args.out, |f| {
        candle_core::safetensors::save(&map, f.path()).map_err(std::io::Error::other)
    })?;
    eprintln!("wrote logits {:?} to {}", logits.dims(), args.out.display());
    Ok(())
}
