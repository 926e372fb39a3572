//! Running the sampler on a loaded model: text in, trace out.

use std::sync::atomic::AtomicBool;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::model::{DiffusionModel, Family, ModelDenoiser};
use crate::sampler::{self, ModelFacts, SamplerParams, Task};
use crate::trace::{StepEvent, Trace, TraceHeader};

/// A task as the user writes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "mode")]
pub enum TextTask {
    Complete {
        prompt: String,
    },
    Infill {
        prefix: String,
        suffix: String,
    },
    Repair {
        prompt: String,
        code: String,
        budget: usize,
    },
}

impl TextTask {
    pub fn prompt_text(&self) -> String {
        match self {
            TextTask::Complete { prompt } => prompt.clone(),
            TextTask::Infill { prefix, suffix } => format!("{prefix}[…]{suffix}"),
            TextTask::Repair { prompt, code, .. } => format!("{prompt}{code}"),
        }
    }
}

/// Prompt ids: the chat template applied when asked and available (it writes its own special
/// tokens, LLaDA's its BOS); otherwise the plain text, with BOS in front where the family's
/// reference puts one (see [`bos_on_plain_prompts`]) and the model has one.
pub fn encode_prompt(model: &DiffusionModel, text: &str, chat: bool) -> Result<Vec<u32>> {
    if chat {
        if let Some(tpl) = &model.info.chat_template {
            let rendered =
                crate::chat::render(tpl, &[crate::chat::Message::user(text)], true, &model.info)?;
            return model.encode(&rendered);
        }
    }
    let mut ids = model.encode(text)?;
    if let Some(bos) = model
        .info
        .bos
        .filter(|_| bos_on_plain_prompts(model.family()))
    {
        if ids.first() != Some(&bos) {
            ids.insert(0, bos);
        }
    }
    Ok(ids)
}

/// Whether a family's reference starts an untemplated prompt with BOS: LLaDA's tokenizer adds
/// `<|startoftext|>` (add_bos), Dream's base-model evaluations set `add_bos_token`; SDAR's
/// generate.py tokenizes with `add_special_tokens=False` (and Qwen3 has no BOS of its own).
pub fn bos_on_plain_prompts(family: Family) -> bool {
    match family {
        Family::Llada | Family::Dream => true,
        Family::Sdar => false,
    }
}

/// Converts a text task to ids.
pub fn to_task(model: &DiffusionModel, t: &TextTask, chat: bool) -> Result<Task> {
    Ok(match t {
        TextTask::Complete { prompt } => Task::Complete {
            prompt: encode_prompt(model, prompt, chat)?,
        },
        TextTask::Infill { prefix, suffix } => Task::Infill {
            prefix: encode_prompt(model, prefix, chat)?,
            suffix: model.encode(suffix)?,
        },
        TextTask::Repair {
            prompt,
            code,
            budget,
        } => Task::Repair {
            prompt: if prompt.is_empty() {
                Vec::new()
            } else {
                encode_prompt(model, prompt, chat)?
            },
            original: model.encode(code)?,
            budget: *budget,
        },
    })
}

/// Backs the prompt (or infill prefix) of `task` off its trailing partial token(s) and returns
/// what was removed with the constraint for the first generated position (see
/// `sampler::heal`). Repair tasks are left alone: their code is given, not continued.
pub fn heal_task(model: &DiffusionModel, task: &mut Task) -> Option<sampler::heal::Heal> {
    let ids = match task {
        Task::Complete { prompt } => prompt,
        Task::Infill { prefix, .. } => prefix,
        Task::Repair { .. } => return None,
    };
    let mut excluded = vec![model.mask_id()];
    excluded.extend(&model.info.stops.value);
    excluded.extend(model.info.bos);
    let h = sampler::heal::plan(ids, model.vocab_texts(), &excluded)?;
    ids.truncate(ids.len() - h.removed.len());
    Some(h)
}

/// Text task → trace header, healing the prompt when `params.heal` asks for it. A prompt rendered
/// through a chat template is not healed: it ends with the template's own assistant header,
/// a boundary the model was trained on, and the user's trailing whitespace sits inside it.
pub fn prepare_text(
    model: &DiffusionModel,
    task: &TextTask,
    chat: bool,
    params: &SamplerParams,
    device: &str,
) -> Result<TraceHeader> {
    let mut t = to_task(model, task, chat)?;
    let templated = chat && model.info.chat_template.is_some();
    let heal = if params.heal && !templated {
        heal_task(model, &mut t)
    } else {
        None
    };
    with_facts(model, device, |m| {
        sampler::prepare_healed(&t, heal, params, &task.prompt_text(), m)
    })
}

/// Runs `f` with the sampler's view of `model`.
pub fn with_facts<R>(model: &DiffusionModel, device: &str, f: impl FnOnce(&ModelFacts) -> R) -> R {
    let text = |id: u32| model.token_text(id);
    let decode = |ids: &[u32]| model.decode(ids);
    let facts = ModelFacts {
        model_id: model.info.folder.display().to_string(),
        model_hash: model.info.hash.clone(),
        family: model.family().name().to_string(),
        tokenizer: format!("{} tokens", model.info.tokenizer_size.unwrap_or(0)),
        mask_id: model.mask_id(),
        stop_ids: model.info.stops.value.clone(),
        vocab_size: model
            .info
            .config
            .vocab_size
            .min(model.info.tokenizer_size.unwrap_or(usize::MAX)),
        embedding_rows: model.info.config.vocab_size,
        context: model.info.config.max_position_embeddings,
        device: device.to_string(),
        aligned_blocks: model.family().attention() == crate::model::Attention::BlockCausal,
        fim: model.info.fim,
        token_text: &text,
        decode: &decode,
    };
    f(&facts)
}

/// Builds the header of a run.
pub fn prepare(
    model: &DiffusionModel,
    task: &Task,
    params: &SamplerParams,
    prompt_text: &str,
    device: &str,
) -> Result<TraceHeader> {
    with_facts(model, device, |m| {
        sampler::prepare(task, params, prompt_text, m)
    })
}

/// Decodes a prepared run on `model`.
pub fn run(
    model: &DiffusionModel,
    header: TraceHeader,
    device: &str,
    cancel: &AtomicBool,
    on_step: &mut dyn FnMut(&StepEvent),
) -> Result<Trace> {
    let mut den = ModelDenoiser::new(model, &header.params);
    with_facts(model, device, |m| {
        sampler::decode(header, &mut den, m, cancel, on_step)
    })
}

/// Prepare (healing text prompts as `params.heal` says) and run in one go.
pub fn generate(
    model: &DiffusionModel,
    task: &TextTask,
    chat: bool,
    params: &SamplerParams,
    device: &str,
    cancel: &AtomicBool,
    on_step: &mut dyn FnMut(&StepEvent),
) -> Result<Trace> {
    let header = prepare_text(model, task, chat, params, device)?;
    run(model, header, device, cancel, on_step)
}
