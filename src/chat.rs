//! Chat templates from `tokenizer_config.json`, rendered with minijinja the way transformers'
//! `apply_chat_template` renders them.

use minijinja::{context, Environment, Error as JinjaError, ErrorKind};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::model::ModelInfo;

#[derive(Clone, Debug, Serialize, PartialEq)]
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
}

fn raise_exception(msg: String) -> std::result::Result<String, JinjaError> {
    Err(JinjaError::new(ErrorKind::InvalidOperation, msg))
}

/// Renders `template` for `messages`, with the special-token strings a template may use.
pub fn render(
    template: &str,
    messages: &[Message],
    add_generation_prompt: bool,
    info: &ModelInfo,
) -> Result<String> {
    let tok_cfg = info.folder.join("tokenizer_config.json");
    let side = crate::model::tokens::SideFiles::read(&info.folder)?;
    let field = |k: &str| -> String {
        side.tokenizer_config
            .as_ref()
            .and_then(|c| c.get(k))
            .and_then(|v| {
                v.as_str().map(str::to_string).or_else(|| {
                    v.get("content")
                        .and_then(|c| c.as_str())
                        .map(str::to_string)
                })
            })
            .unwrap_or_default()
    };
    render_with(
        template,
        messages,
        add_generation_prompt,
        &field("bos_token"),
        &field("eos_token"),
    )
    .map_err(|e| Error::Tokenizer {
        file: tok_cfg,
        problem: format!("chat_template: {e}"),
    })
}

/// Renders a template with explicit special-token strings.
pub fn render_with(
    template: &str,
    messages: &[Message],
    add_generation_prompt: bool,
    bos_token: &str,
    eos_token: &str,
) -> std::result::Result<String, JinjaError> {
    let mut env = Environment::new();
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("raise_exception", raise_exception);
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.add_template("chat", template)?;
    env.get_template("chat")?.render(context! {
        messages => messages,
        add_generation_prompt => add_generation_prompt,
        bos_token => bos_token,
        eos_token => eos_token,
    })
}
