//! `unmask models`: the published checkpoints unmask knows, as a table or JSON.

use clap::Args;

use super::table::Table;
use crate::presets::{self, gib};

#[derive(Args, Debug)]
pub struct ModelsArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &ModelsArgs) -> anyhow::Result<()> {
    let all = presets::all();
    if args.json {
        let rows: Vec<serde_json::Value> = all
            .iter()
            .map(|p| {
                serde_json::json!({
                    "key": p.key,
                    "name": p.name(),
                    "hub_id": p.hub_id,
                    "family": p.family,
                    "parameters": p.parameters(),
                    "memory_bytes": { "f32": p.weight_bytes(4), "bf16": p.weight_bytes(2) },
                    "chat": p.chat,
                    "sampler": p.sampler(),
                    "settings_source": p.settings_source,
                    "note": p.note,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    print!("{}", table());
    println!("\nDownload: unmask download HUB_ID (any hub id works); use: unmask generate --model HUB_ID|KEY");
    Ok(())
}

/// The preset list as a markdown table (also used for docs/models.md).
pub fn table() -> String {
    let mut t = Table::new([
        "key",
        "hub id",
        "family",
        "params",
        "f32",
        "bf16",
        "chat",
        "recommended sampler",
    ]);
    for p in presets::all() {
        let sp = p.sampler();
        t.row([
            p.key.to_string(),
            p.hub_id.to_string(),
            format!("{:?}", p.family),
            format!("{:.2} B", p.parameters() as f64 / 1e9),
            gib(p.weight_bytes(4)),
            gib(p.weight_bytes(2)),
            if p.chat { "yes" } else { "no" }.to_string(),
            format!(
                "gen {} · block {} · {} steps · {}{} · T {}{}{}",
                sp.gen_length,
                sp.block_size,
                sp.steps,
                sp.rule.name(),
                if sp.rule == crate::sampler::UnmaskRule::Threshold {
                    format!(" {}", sp.threshold)
                } else {
                    String::new()
                },
                sp.temperature,
                if sp.top_p < 1.0 {
                    format!(" · top-p {}", sp.top_p)
                } else {
                    String::new()
                },
                if sp.top_k > 0 {
                    format!(" · top-k {}", sp.top_k)
                } else {
                    String::new()
                },
            ),
        ]);
    }
    t.render()
}
