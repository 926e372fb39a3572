//! unmask: watch a discrete-diffusion language model write code, step by step.

pub mod atomic;
pub mod chat;
pub mod cli;
pub mod engine;
pub mod error;
pub mod fim;
pub mod fork;
#[cfg(feature = "gui")]
pub mod gui;
pub mod hub;
pub mod input;
pub mod model;
pub mod presets;
pub mod profile;
pub mod progress;
pub mod pycheck;
pub mod sampler;
pub mod session;
pub mod trace;
pub mod train;
pub mod vmath;
