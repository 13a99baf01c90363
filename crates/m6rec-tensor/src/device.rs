//! Device selection from a user-facing string.

use crate::{Error, Result};
use tch::Device;

/// Parses `auto` (CUDA 0 when available, else CPU), `cpu`, `cuda` or `cuda:N`.
pub fn parse(spec: &str) -> Result<Device> {
    match spec {
        "auto" => Ok(Device::cuda_if_available()),
        "cpu" => Ok(Device::Cpu),
        _ => {
            let idx = match spec.strip_prefix("cuda") {
                Some("") => 0,
                Some(rest) => rest
                    .strip_prefix(':')
                    .and_then(|n| n.parse::<usize>().ok())
                    .ok_or_else(|| Error::BadDevice(spec.to_string()))?,
                None => return Err(Error::BadDevice(spec.to_string())),
            };
            let n = usize::try_from(tch::Cuda::device_count()).unwrap_or(0);
            if idx >= n {
                return Err(Error::NoCuda(spec.to_string()));
            }
            Ok(Device::Cuda(idx))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_specs_and_rejects_others() {
        assert_eq!(parse("cpu").ok(), Some(Device::Cpu));
        assert!(matches!(parse("gpu"), Err(Error::BadDevice(_))));
        assert!(matches!(parse("cuda:x"), Err(Error::BadDevice(_))));
        if !tch::Cuda::is_available() {
            assert!(matches!(parse("cuda:0"), Err(Error::NoCuda(_))));
            assert_eq!(parse("auto").ok(), Some(Device::Cpu));
        }
    }
}
