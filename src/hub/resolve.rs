//! One home for the `--model` argument: `embedded`, a folder, a preset key or a hub id becomes
//! a checkpoint folder. Every command that takes `--model` goes through [`resolve_model`], so
//! they all accept the same things and say the same thing about what they do not accept.

use std::path::{Path, PathBuf};

use super::{is_hub_id, Hub, HubError, HubOptions, Need, Progress};
use crate::error::Result;

/// What a `--model` argument names, before anything is fetched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelArg {
    /// A folder on this machine (`embedded` is the folder of the embedded model).
    Folder(PathBuf),
    /// A hub repository `org/name` (a preset key is replaced by its hub id).
    Hub(String),
}

impl ModelArg {
    /// Reads an argument in this order: `embedded`; an existing folder; a preset key; a hub id.
    /// Anything else is [`HubError::NotAModel`]. Uses neither the network nor the cache.
    pub fn parse(arg: &str) -> Result<Self> {
        if arg == "embedded" {
            return Ok(ModelArg::Folder(crate::model::embedded_dir()));
        }
        let path = Path::new(arg);
        if path.is_dir() {
            return Ok(ModelArg::Folder(path.to_path_buf()));
        }
        match crate::presets::find(arg) {
            Some(p) => Ok(ModelArg::Hub(p.hub_id.to_string())),
            None if is_hub_id(arg) => Ok(ModelArg::Hub(arg.to_string())),
            None => Err(HubError::NotAModel(arg.to_string()).into()),
        }
    }
}

/// The hub id a `download` argument names: a preset key's id, or the argument itself when it is
/// a hub id.
pub fn hub_id(arg: &str) -> Result<String> {
    match crate::presets::find(arg) {
        Some(p) => Ok(p.hub_id.to_string()),
        None if is_hub_id(arg) => Ok(arg.to_string()),
        None => Err(HubError::NotAModel(arg.to_string()).into()),
    }
}

/// Resolves a `--model` argument to a checkpoint folder. A hub id (or preset key) opens from the
/// cache without any network request when what `need` asks for is there, else it is fetched:
/// with [`Need::Metadata`] only config, tokenizer and side files, never the weights.
pub fn resolve_model(
    arg: &str,
    need: Need,
    opts: &HubOptions,
    progress: &mut dyn FnMut(&Progress),
) -> Result<PathBuf> {
    match ModelArg::parse(arg)? {
        ModelArg::Folder(dir) => Ok(dir),
        ModelArg::Hub(id) => {
            let hub = Hub::new(opts.clone())?;
            match hub.cached(&id, need)? {
                Some(dir) => Ok(dir),
                None => hub.fetch(&id, need, progress),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_argument() {
        assert_eq!(
            ModelArg::parse("embedded").unwrap(),
            ModelArg::Folder(crate::model::embedded_dir())
        );
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().to_str().unwrap();
        assert_eq!(
            ModelArg::parse(folder).unwrap(),
            ModelArg::Folder(dir.path().to_path_buf())
        );
        let preset = &crate::presets::all()[0];
        assert_eq!(
            ModelArg::parse(preset.key).unwrap(),
            ModelArg::Hub(preset.hub_id.to_string())
        );
        assert_eq!(hub_id(preset.key).unwrap(), preset.hub_id);
        assert_eq!(
            ModelArg::parse("org/name").unwrap(),
            ModelArg::Hub("org/name".into())
        );
        for bad in ["/nonexistent/model", "no-such-preset", "a/b/c"] {
            let e = ModelArg::parse(bad).unwrap_err().to_string();
            assert!(e.contains(bad) && e.contains("not a model folder"), "{e}");
            assert!(hub_id(bad).is_err(), "{bad}");
        }
    }
}
