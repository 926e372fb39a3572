//! What persists across restarts: the task, every sampler knob, the model and view choices.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::colors::ColorMode;
use crate::sampler::SamplerParams;
use crate::session::TextTask;

/// How the prompt is used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    Complete,
    Infill,
    Repair,
}

impl Mode {
    pub const ALL: [Mode; 3] = [Mode::Complete, Mode::Infill, Mode::Repair];
    pub fn name(self) -> &'static str {
        match self {
            Mode::Complete => "complete",
            Mode::Infill => "infill",
            Mode::Repair => "repair",
        }
    }
}

/// The central view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum View {
    Canvas,
    Race,
    /// The original run beside its fork, with the diff.
    Fork,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub params: SamplerParams,
    pub mode: Mode,
    pub prompt: String,
    pub suffix: String,
    pub repair_code: String,
    pub repair_budget: usize,
    /// Wrap the prompt in the model's chat template.
    pub chat: bool,
    pub device: String,
    /// `None`: the embedded model.
    pub model: Option<PathBuf>,
    /// Model folders opened before, newest first.
    pub recent: Vec<PathBuf>,
    pub color_mode: ColorMode,
    pub view: View,
    /// syntect language (file extension) of the output.
    pub lang: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            // The embedded model's best-looking defaults for the default prompt (docs/eval/
            // embedded.md): blocks of 8 committed by the confidence threshold 0.7 (1–8 tokens
            // per step, as confident as the model is) and a mild repetition penalty, which stops
            // the greedy loops a model this small falls into.
            params: SamplerParams {
                gen_length: 64,
                block_size: 8,
                steps: 8,
                rule: crate::sampler::UnmaskRule::Threshold,
                threshold: 0.7,
                repetition_penalty: 1.2,
                ..SamplerParams::default()
            },
            mode: Mode::Complete,
            prompt: "def fibonacci(n):\n".into(),
            suffix: "\n    return result\n".into(),
            repair_code: "def add(a, b):\n    return a - b\n".into(),
            repair_budget: 4,
            chat: false,
            device: "cpu".into(),
            model: None,
            recent: Vec::new(),
            color_mode: ColorMode::CommitStep,
            view: View::Canvas,
            lang: "py".into(),
        }
    }
}

impl Settings {
    pub fn task(&self) -> TextTask {
        match self.mode {
            Mode::Complete => TextTask::Complete {
                prompt: self.prompt.clone(),
            },
            Mode::Infill => TextTask::Infill {
                prefix: self.prompt.clone(),
                suffix: self.suffix.clone(),
            },
            Mode::Repair => TextTask::Repair {
                prompt: self.prompt.clone(),
                code: self.repair_code.clone(),
                budget: self.repair_budget,
            },
        }
    }

    /// Remembers `folder` at the top of the recent list (at most 8).
    pub fn remember(&mut self, folder: PathBuf) {
        self.recent.retain(|f| f != &folder);
        self.recent.insert(0, folder);
        self.recent.truncate(8);
    }
}
