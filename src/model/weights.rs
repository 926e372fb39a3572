//! Memory-mapped safetensors checkpoints (single file or sharded with an index), with every
//! tensor looked up by name and checked for shape and dtype before the model is built.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};

/// The safetensors files of a checkpoint folder, indexed by tensor name.
pub struct Weights {
    files: Vec<PathBuf>,
    maps: Vec<MmapedSafetensors>,
    location: HashMap<String, usize>,
    /// Bytes of weight data on disk.
    pub bytes_on_disk: u64,
}

/// The `weight_map` of a shard index (`model.safetensors.index.json`): tensor name → shard file.
/// Every shard name must be a plain relative file name, so an index cannot point outside its folder.
pub fn read_index(index: &Path) -> Result<std::collections::BTreeMap<String, String>> {
    let text = std::fs::read_to_string(index).map_err(|e| Error::io(index, e))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Parse {
        file: index.to_path_buf(),
        problem: e.to_string(),
    })?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| Error::ConfigField {
            file: index.to_path_buf(),
            field: "weight_map".into(),
            problem: "missing or not an object".into(),
        })?;
    let mut out = std::collections::BTreeMap::new();
    for (tensor, shard) in map {
        let name = shard
            .as_str()
            .filter(|s| is_plain_file_name(s))
            .ok_or_else(|| Error::ConfigField {
                file: index.to_path_buf(),
                field: format!("weight_map.{tensor}"),
                problem: format!(
                    "expected a file name inside the checkpoint folder, found {shard}"
                ),
            })?;
        out.insert(tensor.clone(), name.to_string());
    }
    Ok(out)
}

/// The distinct shard files an index names, sorted.
pub fn shard_names(index: &Path) -> Result<Vec<String>> {
    let mut names: Vec<String> = read_index(index)?.into_values().collect();
    names.sort();
    names.dedup();
    Ok(names)
}

/// Relative, without `..`, `.`, empty parts or backslashes.
pub fn is_plain_file_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('/')
        && !s.contains('\\')
        && s.split('/').all(|p| !p.is_empty() && p != "." && p != "..")
}

/// The weight files a folder publishes: the shards named by `model.safetensors.index.json`, or
/// `model.safetensors`.
pub fn weight_files(folder: &Path) -> Result<Vec<PathBuf>> {
    let index = folder.join("model.safetensors.index.json");
    if index.exists() {
        return Ok(shard_names(&index)?
            .into_iter()
            .map(|n| folder.join(n))
            .collect());
    }
    let single = folder.join("model.safetensors");
    if single.exists() {
        return Ok(vec![single]);
    }
    Err(Error::NoWeights {
        folder: folder.to_path_buf(),
    })
}

impl Weights {
    /// Memory-maps every shard; a missing, truncated or malformed shard is reported by name.
    pub fn open(folder: &Path) -> Result<Self> {
        let files = weight_files(folder)?;
        let mut maps = Vec::with_capacity(files.len());
        let mut location = HashMap::new();
        let mut bytes_on_disk = 0;
        for (i, file) in files.iter().enumerate() {
            let meta = std::fs::metadata(file).map_err(|e| Error::io(file, e))?;
            bytes_on_disk += meta.len();
            // SAFETY: the file is mapped read-only; unmask never writes to checkpoint files while
            // they are open, and a file truncated underneath us is a user error we cannot detect.
            let map = unsafe { MmapedSafetensors::new(file) }.map_err(|e| Error::Safetensors {
                file: file.clone(),
                problem: clean_candle_error(&e),
            })?;
            for (name, _) in map.tensors() {
                location.insert(name, i);
            }
            maps.push(map);
        }
        Ok(Weights {
            files,
            maps,
            location,
            bytes_on_disk,
        })
    }

    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    pub fn contains(&self, name: &str) -> bool {
        self.location.contains_key(name)
    }

    /// The dtype the named tensor is stored in.
    pub fn stored_dtype(&self, name: &str) -> Option<safetensors::Dtype> {
        let i = *self.location.get(name)?;
        self.maps[i].get(name).ok().map(|v| v.dtype())
    }

    /// Loads `name`, checks its shape, and converts it to `dtype` on `device`.
    pub fn get(
        &self,
        name: &str,
        shape: &[usize],
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        let i = *self
            .location
            .get(name)
            .ok_or_else(|| Error::MissingTensor {
                name: name.into(),
                files: self
                    .files
                    .iter()
                    .map(|f| f.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        let file = &self.files[i];
        let view = self.maps[i].get(name).map_err(|e| Error::Safetensors {
            file: file.clone(),
            problem: clean_candle_error(&e),
        })?;
        if view.shape() != shape {
            return Err(Error::TensorShape {
                file: file.clone(),
                name: name.into(),
                found: view.shape().to_vec(),
                expected: shape.to_vec(),
            });
        }
        use safetensors::Dtype as S;
        if !matches!(view.dtype(), S::F32 | S::F16 | S::BF16) {
            return Err(Error::TensorDtype {
                file: file.clone(),
                name: name.into(),
                found: format!("{:?}", view.dtype()),
            });
        }
        let t = self.maps[i]
            .load(name, device)
            .map_err(|e| Error::Safetensors {
                file: file.clone(),
                problem: format!("tensor `{name}`: {}", clean_candle_error(&e)),
            })?;
        Ok(t.to_dtype(dtype)?)
    }
}

fn clean_candle_error(e: &candle_core::Error) -> String {
    // candle wraps errors with backtraces and context lines; the first line says what happened.
    e.to_string()
        .lines()
        .next()
        .unwrap_or("unknown error")
        .to_string()
}
