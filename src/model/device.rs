//! Compute device selection: CPU always, CUDA when built with the `cuda` feature and present.

use candle_core::Device;

use crate::error::{Error, Result};

/// Whether this binary was built with CUDA support.
pub const CUDA_BUILT: bool = cfg!(feature = "cuda");

/// Opens `cpu`, `cuda` or `cuda:N`.
pub fn open(name: &str) -> Result<Device> {
    match name {
        "cpu" => Ok(Device::Cpu),
        n if n == "cuda" || n.starts_with("cuda:") => {
            if !CUDA_BUILT {
                return Err(Error::Invalid(
                    "this unmask binary was built without CUDA; rebuild with `--features cuda` (see scripts/build-cuda.sh)".into(),
                ));
            }
            let ordinal: usize = n
                .strip_prefix("cuda:")
                .map(|s| s.parse().unwrap_or(0))
                .unwrap_or(0);
            Device::new_cuda(ordinal)
                .map_err(|e| Error::Invalid(format!("no usable CUDA device {ordinal}: {e}")))
        }
        other => Err(Error::Invalid(format!(
            "unknown device `{other}`: use cpu or cuda"
        ))),
    }
}

/// Device names a user can pick on this machine.
pub fn available() -> Vec<String> {
    let mut v = vec!["cpu".to_string()];
    if CUDA_BUILT && Device::new_cuda(0).is_ok() {
        v.push("cuda".into());
    }
    v
}
