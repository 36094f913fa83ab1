//! The container flags of `deploy`: limits and mounts as the user types
//! them, turned into a [`ContainerSpec`].

use std::path::Path;

use anyhow::{Context, bail};

/// `256m`, `1g`, `512k`, `1048576`: bytes (binary units, as Docker reads them).
pub fn parse_memory(text: &str) -> Result<u64, String> {
    let t = text.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (digits, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => t.split_at(i),
        None => (t, ""),
    };
    let shift = match unit {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        _ => return Err(format!("`{text}` is not a size: write e.g. 256m or 1g")),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a size: write e.g. 256m or 1g"))?;
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// `0.5`, `2`: thousandths of a CPU.
pub fn parse_cpus(text: &str) -> Result<u32, String> {
    let cpus: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a number of CPUs: write e.g. 0.5 or 2"))?;
    if !(cpus > 0.0 && cpus <= 1024.0) {
        return Err(format!("`{text}` CPUs: give more than 0, e.g. 0.5"));
    }
    Ok((cpus * 1000.0).round().max(1.0) as u32)
}

/// A relative host path in `SOURCE:TARGET[:MODE]` is taken from the current
/// directory (a bare name is a named volume).
pub fn absolute_volume(volume: &str, here: &Path) -> anyhow::Result<String> {
    let Some((source, rest)) = volume.split_once(':') else {
        bail!("--volume takes SOURCE:TARGET[:ro], got `{volume}`");
    };
    if source.starts_with("./") || source.starts_with("../") || source == "." {
        let path = here.join(source);
        let path = path
            .canonicalize()
            .with_context(|| format!("volume source {} does not exist", path.display()))?;
        return Ok(format!("{}:{rest}", path.display()));
    }
    Ok(volume.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes_use_binary_units() {
        assert_eq!(parse_memory("256m"), Ok(256 << 20));
        assert_eq!(parse_memory("1G"), Ok(1 << 30));
        assert_eq!(parse_memory("512kb"), Ok(512 << 10));
        assert_eq!(parse_memory("1000"), Ok(1000));
        assert!(parse_memory("lots").is_err());
        assert!(parse_memory("1t").is_err());
    }

    #[test]
    fn cpus_become_thousandths() {
        assert_eq!(parse_cpus("0.5"), Ok(500));
        assert_eq!(parse_cpus("2"), Ok(2000));
        assert!(parse_cpus("0").is_err());
        assert!(parse_cpus("-1").is_err());
        assert!(parse_cpus("many").is_err());
    }

    #[test]
    fn relative_volume_sources_resolve_from_here() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("data")).expect("mkdir");
        let here = dir.path().canonicalize().expect("canonical");
        assert_eq!(
            absolute_volume("./data:/data:ro", &here).expect("resolved"),
            format!("{}:/data:ro", here.join("data").display())
        );
        assert_eq!(
            absolute_volume("cache:/cache", &here).expect("named"),
            "cache:/cache"
        );
        assert!(absolute_volume("./missing:/x", &here).is_err());
    }
}
