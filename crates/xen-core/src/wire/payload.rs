//! Payload syntax: NUL-terminated strings, with binary values where the
//! protocol allows them. Malformed payloads are EINVAL, never a guess.

use super::Errno;

/// Splits a payload made only of NUL-terminated strings. An empty payload has
/// no strings; bytes after the last NUL make the payload invalid.
pub fn strings(payload: &[u8]) -> Result<Vec<&str>, Errno> {
    if payload.is_empty() {
        return Ok(Vec::new());
    }
    let body = payload.strip_suffix(b"\0").ok_or(Errno::EINVAL)?;
    body.split(|b| *b == 0)
        .map(|s| std::str::from_utf8(s).map_err(|_| Errno::EINVAL))
        .collect()
}

/// Exactly `N` NUL-terminated strings.
pub fn exact<const N: usize>(payload: &[u8]) -> Result<[&str; N], Errno> {
    let parts = strings(payload)?;
    parts.try_into().map_err(|_| Errno::EINVAL)
}

/// The single argument of READ, MKDIR, RM, DIRECTORY, GET_PERMS and the like:
/// the payload must hold exactly one NUL, at its end.
pub fn one_arg(payload: &[u8]) -> Result<&str, Errno> {
    let [arg] = exact::<1>(payload)?;
    Ok(arg)
}

/// WRITE's `path\0value`: the value is binary and not NUL-terminated.
pub fn path_and_value(payload: &[u8]) -> Result<(&str, &[u8]), Errno> {
    let nul = payload.iter().position(|b| *b == 0).ok_or(Errno::EINVAL)?;
    let path = std::str::from_utf8(&payload[..nul]).map_err(|_| Errno::EINVAL)?;
    Ok((path, &payload[nul + 1..]))
}

/// Builds a payload of NUL-terminated strings.
pub fn join<S: AsRef<[u8]>>(parts: &[S]) -> Vec<u8> {
    let mut out = Vec::with_capacity(parts.iter().map(|p| p.as_ref().len() + 1).sum());
    for p in parts {
        out.extend_from_slice(p.as_ref());
        out.push(0);
    }
    out
}

/// Parses an unsigned number the way C's `strtoul(s, &end, 0)` reads a fully
/// numeric string: decimal, `0x` hexadecimal or leading-zero octal. Anything
/// else (empty, sign, trailing bytes, overflow) is `None`.
pub fn parse_c_unsigned(s: &str) -> Option<u64> {
    let (digits, radix) = if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        (hex, 16)
    } else if s.len() > 1 && s.starts_with('0') {
        (&s[1..], 8)
    } else {
        (s, 10)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u64::from_str_radix(digits, radix).ok()
}

/// Parses a decimal domain id (0..=65535) as GET_DOMAIN_PATH, INTRODUCE and
/// friends take it.
pub fn parse_domid(s: &str) -> Result<u32, Errno> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Errno::EINVAL);
    }
    let v: u32 = s.parse().map_err(|_| Errno::EINVAL)?;
    if v > 0xffff {
        return Err(Errno::EINVAL);
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_strings() {
        assert_eq!(strings(b"a\0bc\0\0").unwrap(), vec!["a", "bc", ""]);
        assert_eq!(strings(b"").unwrap(), Vec::<&str>::new());
        assert_eq!(strings(b"\0").unwrap(), vec![""]);
        assert_eq!(strings(b"a\0b"), Err(Errno::EINVAL));
        assert_eq!(strings(b"\xff\0"), Err(Errno::EINVAL));
    }

    #[test]
    fn one_arg_needs_exactly_one_trailing_nul() {
        assert_eq!(one_arg(b"/a\0"), Ok("/a"));
        assert_eq!(one_arg(b"/a"), Err(Errno::EINVAL));
        assert_eq!(one_arg(b"/a\0b\0"), Err(Errno::EINVAL));
        assert_eq!(one_arg(b""), Err(Errno::EINVAL));
    }

    #[test]
    fn write_values_are_binary() {
        assert_eq!(path_and_value(b"/a\0v\0w"), Ok(("/a", &b"v\0w"[..])));
        assert_eq!(path_and_value(b"/a\0"), Ok(("/a", &b""[..])));
        assert_eq!(path_and_value(b"/a"), Err(Errno::EINVAL));
    }

    #[test]
    fn c_style_numbers() {
        assert_eq!(parse_c_unsigned("42"), Some(42));
        assert_eq!(parse_c_unsigned("0x7FF5"), Some(0x7ff5));
        assert_eq!(parse_c_unsigned("010"), Some(8));
        assert_eq!(parse_c_unsigned("0"), Some(0));
        assert_eq!(parse_c_unsigned(""), None);
        assert_eq!(parse_c_unsigned("-1"), None);
        assert_eq!(parse_c_unsigned("5x"), None);
        assert_eq!(parse_c_unsigned("09"), None);
    }

    #[test]
    fn domids() {
        assert_eq!(parse_domid("7"), Ok(7));
        assert_eq!(parse_domid("65535"), Ok(65535));
        assert_eq!(parse_domid("65536"), Err(Errno::EINVAL));
        assert_eq!(parse_domid("abc"), Err(Errno::EINVAL));
        assert_eq!(parse_domid(""), Err(Errno::EINVAL));
        assert_eq!(parse_domid("-1"), Err(Errno::EINVAL));
    }
}
