//! Byte sizes as operators write them: `1073741824`, `1G`, `512M`, `64K`, `2gb`.
//!
//! Suffixes are binary (1K = 1024), as in the seed README, where `1G` stands for
//! 1073741824. Docker writes `2gb` for the same thing, so a trailing `b`/`B` and
//! the IEC `iB` spelling are accepted too.

const UNITS: [(char, u32); 5] = [('k', 10), ('m', 20), ('g', 30), ('t', 40), ('p', 50)];

/// Parses a size; the error says what was expected.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, rest) = t.split_at(digits_end);
    if digits.is_empty() {
        return Err(format!(
            "expected a size in bytes or with a K/M/G suffix (e.g. 512M), got {text:?}"
        ));
    }
    let value: u64 = digits
        .parse()
        .map_err(|_| format!("size {text:?} is too large"))?;
    let suffix = rest.trim().to_ascii_lowercase();
    let shift = match suffix.as_str() {
        "" | "b" => 0,
        s => {
            let mut chars = s.chars();
            let unit = chars.next().unwrap_or(' ');
            let tail: String = chars.collect();
            let shift = UNITS.iter().find(|(u, _)| *u == unit).map(|(_, s)| *s);
            match (shift, tail.as_str()) {
                (Some(shift), "" | "b" | "ib") => shift,
                _ => {
                    return Err(format!(
                        "unknown size suffix {:?} in {text:?}; use K, M, G or T (binary units)",
                        rest.trim()
                    ));
                }
            }
        }
    };
    value
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("size {text:?} is too large"))
}

/// Formats a size for messages: exact bytes plus the largest whole binary unit.
pub fn human(bytes: u64) -> String {
    for (unit, shift) in [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)] {
        let div = 1u64 << shift;
        if bytes >= div {
            let whole = bytes / div;
            let frac = (bytes % div) * 10 / div;
            return if frac == 0 {
                format!("{whole} {unit}")
            } else {
                format!("{whole}.{frac} {unit}")
            };
        }
    }
    format!("{bytes} B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_suffixed_sizes() {
        let cases = [
            ("0", 0),
            ("65536", 65536),
            ("1073741824", 1 << 30),
            ("1K", 1024),
            ("64k", 65536),
            ("512M", 512 << 20),
            ("1G", 1 << 30),
            ("2gb", 2 << 30),
            ("2GiB", 2 << 30),
            ("1T", 1 << 40),
            (" 4 M ", 4 << 20),
            ("10B", 10),
        ];
        for (text, want) in cases {
            assert_eq!(parse_size(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn bad_sizes_say_why() {
        for text in ["", "G", "-1", "1.5G", "12X", "1Gx", "1 GiBs", "ten"] {
            assert!(parse_size(text).is_err(), "{text} should be rejected");
        }
        assert!(
            parse_size("99999999999999999999")
                .unwrap_err()
                .contains("too large")
        );
        assert!(
            parse_size("17179869184G")
                .unwrap_err()
                .contains("too large")
        );
        assert!(parse_size("3Q").unwrap_err().contains("suffix"));
    }

    #[test]
    fn human_readable() {
        assert_eq!(human(2 << 30), "2 GiB");
        assert_eq!(human(1536 << 20), "1.5 GiB");
        assert_eq!(human(100), "100 B");
        assert_eq!(human(64 << 20), "64 MiB");
    }
}
