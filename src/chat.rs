//! Chat templates from `tokenizer_config.json` (or `chat_template.jinja`), rendered with minijinja
//! the way transformers' `apply_chat_template` renders them: Jinja with `trim_blocks` and
//! `lstrip_blocks`, Python string methods (`strip`, `split`, `startswith` …), `raise_exception`,
//! and the tokenizer's special-token strings (`bos_token`, `eos_token`, …) in the context.

use std::path::{Path, PathBuf};

use minijinja::{context, Environment, Error as JinjaError, ErrorKind, Value as JinjaValue};
use serde::Serialize;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::model::{DiffusionModel, ModelInfo};

#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn user(text: &str) -> Self {
        Message {
            role: "user".into(),
            content: text.into(),
        }
    }
    pub fn system(text: &str) -> Self {
        Message {
            role: "system".into(),
            content: text.into(),
        }
    }
    pub fn assistant(text: &str) -> Self {
        Message {
            role: "assistant".into(),
            content: text.into(),
        }
    }
}

/// The special-token fields transformers passes into a template's context.
const TOKEN_FIELDS: &[&str] = &[
    "bos_token",
    "eos_token",
    "pad_token",
    "unk_token",
    "sep_token",
    "cls_token",
    "mask_token",
];

/// A chat template with the special-token strings it may use.
#[derive(Clone, Debug)]
pub struct ChatTemplate {
    pub source: String,
    /// Special-token strings by field name (`bos_token` → `<|startoftext|>`).
    pub tokens: Vec<(String, String)>,
    /// Where the template came from, for error messages.
    pub file: PathBuf,
}

impl ChatTemplate {
    /// Reads the template of a `tokenizer_config.json` value; `None` when it has none.
    pub fn from_tokenizer_config(cfg: &Value, file: &Path) -> Option<Self> {
        let source = match cfg.get("chat_template")? {
            Value::String(s) => s.clone(),
            // A list of named templates: transformers uses "default".
            Value::Array(items) => items
                .iter()
                .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
                .and_then(|t| t.get("template"))
                .and_then(Value::as_str)?
                .to_string(),
            _ => return None,
        };
        Some(ChatTemplate {
            source,
            tokens: token_strings(cfg),
            file: file.to_path_buf(),
        })
    }

    /// The template of a checkpoint folder: `tokenizer_config.json`'s `chat_template`, else
    /// `chat_template.jinja` (newer transformers save it there), with the config's special tokens.
    pub fn from_folder(folder: &Path) -> Result<Option<Self>> {
        let cfg_file = folder.join("tokenizer_config.json");
        let cfg: Value = match std::fs::read_to_string(&cfg_file) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| Error::Parse {
                file: cfg_file.clone(),
                problem: e.to_string(),
            })?,
            Err(_) => Value::Null,
        };
        if let Some(t) = Self::from_tokenizer_config(&cfg, &cfg_file) {
            return Ok(Some(t));
        }
        let jinja = folder.join("chat_template.jinja");
        match std::fs::read_to_string(&jinja) {
            Ok(source) => Ok(Some(ChatTemplate {
                source,
                tokens: token_strings(&cfg),
                file: jinja,
            })),
            Err(_) => Ok(None),
        }
    }

    /// Renders `messages`; `add_generation_prompt` appends the assistant header.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        self.render_jinja(messages, add_generation_prompt)
            .map_err(|e| Error::Tokenizer {
                file: self.file.clone(),
                problem: format!("chat_template: {}", jinja_error(&e)),
            })
    }

    fn render_jinja(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> std::result::Result<String, JinjaError> {
        let mut env = Environment::new();
        // A template is code from the checkpoint: bound its work (nested loops, recursion).
        env.set_fuel(Some(TEMPLATE_FUEL));
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(false);
        env.add_template("chat", &self.source)?;
        let tokens: std::collections::BTreeMap<&str, &str> = self
            .tokens
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let ctx = context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            ..JinjaValue::from_serialize(&tokens)
        };
        env.get_template("chat")?.render(ctx)
    }
}

fn token_strings(cfg: &Value) -> Vec<(String, String)> {
    TOKEN_FIELDS
        .iter()
        .filter_map(|k| {
            let v = cfg.get(*k)?;
            let s = v
                .as_str()
                .or_else(|| v.get("content").and_then(Value::as_str))?;
            Some((k.to_string(), s.to_string()))
        })
        .collect()
}

fn raise_exception(msg: String) -> std::result::Result<String, JinjaError> {
    Err(JinjaError::new(ErrorKind::InvalidOperation, msg))
}

/// Instructions a chat template may execute per render: published templates use a few
/// thousand for a conversation; a runaway loop stops within milliseconds.
pub const TEMPLATE_FUEL: u64 = 2_000_000;

fn jinja_error(e: &JinjaError) -> String {
    if e.kind() == ErrorKind::OutOfFuel {
        return format!(
            "rendering took more than {TEMPLATE_FUEL} steps (a runaway loop in the template?)"
        );
    }
    let mut s = e.to_string();
    let mut cur = std::error::Error::source(e);
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Renders `template` for `messages` with the special tokens of the model's tokenizer_config.
pub fn render(
    template: &str,
    messages: &[Message],
    add_generation_prompt: bool,
    info: &ModelInfo,
) -> Result<String> {
    let cfg_file = info.folder.join("tokenizer_config.json");
    let cfg: Value = std::fs::read_to_string(&cfg_file)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    ChatTemplate {
        source: template.to_string(),
        tokens: token_strings(&cfg),
        file: cfg_file,
    }
    .render(messages, add_generation_prompt)
}

/// The exact prompt a model receives: the text after templating and every token, for display.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct PromptPreview {
    /// The text that is tokenized (the rendered template when `chat` applied).
    pub text: String,
    /// Whether the chat template was applied.
    pub templated: bool,
    pub ids: Vec<u32>,
    /// One string per id as the vocabulary spells it (special tokens included).
    pub tokens: Vec<String>,
}

/// What [`crate::session::encode_prompt`] sends for `text`, spelled out token by token.
pub fn preview(model: &DiffusionModel, text: &str, chat: bool) -> Result<PromptPreview> {
    let (rendered, templated) = match (&model.info.chat_template, chat) {
        (Some(tpl), true) => (
            render(tpl, &[Message::user(text)], true, &model.info)?,
            true,
        ),
        _ => (text.to_string(), false),
    };
    let ids = crate::session::encode_prompt(model, text, chat)?;
    let tokens = ids
        .iter()
        .map(|&id| {
            model
                .tokenizer
                .id_to_token(id)
                .unwrap_or_else(|| format!("<{id}>"))
        })
        .collect();
    Ok(PromptPreview {
        text: rendered,
        templated,
        ids,
        tokens,
    })
}
