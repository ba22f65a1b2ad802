//! Sizes as people write them: `512`, `512M`, `2G`, `2GiB`.

/// Parses a size into MiB; a bare number is MiB.
pub fn parse_mib(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 512, 512M, 2G)"))?;
    let factor = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "m" | "mb" | "mib" => 1,
        "g" | "gb" | "gib" => 1024,
        "t" | "tb" | "tib" => 1024 * 1024,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use M, G or T)")),
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("{s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::parse_mib;

    #[test]
    fn sizes() {
        assert_eq!(parse_mib("512").unwrap(), 512);
        assert_eq!(parse_mib("2G").unwrap(), 2048);
        assert_eq!(parse_mib("1GiB").unwrap(), 1024);
        assert!(parse_mib("lots").is_err());
        assert!(parse_mib("5X").is_err());
        assert!(parse_mib("99999999999999999999T").is_err());
    }
}
