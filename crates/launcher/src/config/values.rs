//! Parsing the launcher's setting values: durations, CPUs, memory sizes.

use std::time::Duration;

pub(super) fn parse_cpus(text: &str) -> Result<f64, String> {
    let cpus: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number of CPUs; write e.g. 2 or 1.5"))?;
    if !(cpus.is_finite() && cpus >= 0.01) {
        return Err(format!("{text:?}: give at least 0.01 CPUs"));
    }
    Ok(cpus)
}

/// Docker's memory sizes: bytes, or a number with b, k, m or g (powers of
/// 1024; `kb`, `mib` and the like are accepted too).
pub(super) fn parse_memory(text: &str) -> Result<u64, String> {
    let lower = text.trim().to_ascii_lowercase();
    let digits_end = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(lower.len());
    let (number, unit) = lower.split_at(digits_end);
    let multiplier: u64 = match unit.trim() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => {
            return Err(format!(
                "{text:?} is not a memory size; write e.g. 512m or 4g"
            ))
        }
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a memory size; write e.g. 512m or 4g"))?;
    let bytes = value * multiplier as f64;
    // Docker refuses less than 6 MiB.
    if !(bytes.is_finite() && bytes >= (6 << 20) as f64) {
        return Err(format!("{text:?}: give at least 6m"));
    }
    Ok(bytes as u64)
}

pub(super) fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text.trim())
        .map_err(|e| format!("{text:?} is not a duration ({e}); write e.g. 90s, 7m or 1h30m"))?;
    if duration.is_zero() {
        return Err("the duration must be more than zero".into());
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_limits_are_checked() {
        assert_eq!(parse_memory("512m").unwrap(), 512 << 20);
        assert_eq!(parse_memory("2G").unwrap(), 2 << 30);
        assert_eq!(parse_memory("1.5g").unwrap(), 3 << 29);
        assert_eq!(parse_memory("268435456").unwrap(), 256 << 20);
        assert!(parse_memory("1k").unwrap_err().contains("at least 6m"));
        assert!(parse_memory("lots")
            .unwrap_err()
            .contains("not a memory size"));
        assert_eq!(parse_cpus("1.5").unwrap(), 1.5);
        assert!(parse_cpus("0").is_err());
        assert!(parse_cpus("two")
            .unwrap_err()
            .contains("not a number of CPUs"));
    }

    #[test]
    fn durations_are_checked() {
        assert_eq!(parse_duration("70m").unwrap(), Duration::from_secs(4200));
        assert!(parse_duration("seventy")
            .unwrap_err()
            .contains("not a duration"));
        assert!(parse_duration("0s").is_err());
    }
}
