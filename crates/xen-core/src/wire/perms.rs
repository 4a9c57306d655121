//! Permission strings: a letter (`n` none, `r` read, `w` write, `b` both)
//! followed by a domain id, e.g. `n0`, `r5`, `b0x7FF5`.

use std::fmt;

use super::payload::parse_c_unsigned;
use super::Errno;

/// `DOMID_ANY`: a permission entry that matches every domain.
pub const DOMID_ANY: u32 = 0x7ff5;

/// What a permission entry grants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// No access.
    None,
    /// Read only.
    Read,
    /// Write only.
    Write,
    /// Read and write.
    Both,
}

impl Access {
    /// Whether reading is granted.
    pub fn can_read(self) -> bool {
        matches!(self, Access::Read | Access::Both)
    }

    /// Whether writing is granted.
    pub fn can_write(self) -> bool {
        matches!(self, Access::Write | Access::Both)
    }

    fn letter(self) -> char {
        match self {
            Access::None => 'n',
            Access::Read => 'r',
            Access::Write => 'w',
            Access::Both => 'b',
        }
    }
}

/// One permission entry. The first entry of a node's list names its owner and
/// the access of every domain not listed after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Perm {
    /// Domain the entry is about.
    pub domid: u32,
    /// Access granted to it.
    pub access: Access,
}

impl Perm {
    /// An entry.
    pub const fn new(domid: u32, access: Access) -> Perm {
        Perm { domid, access }
    }

    /// Parses `r5`-style text.
    pub fn parse(s: &str) -> Result<Perm, Errno> {
        let mut chars = s.chars();
        let access = match chars.next() {
            Some('n') => Access::None,
            Some('r') => Access::Read,
            Some('w') => Access::Write,
            Some('b') => Access::Both,
            _ => return Err(Errno::EINVAL),
        };
        let domid = parse_c_unsigned(chars.as_str()).ok_or(Errno::EINVAL)?;
        if domid > 0xffff {
            return Err(Errno::EINVAL);
        }
        Ok(Perm {
            domid: domid as u32,
            access,
        })
    }
}

impl fmt::Display for Perm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.access.letter(), self.domid)
    }
}

/// Parses a non-empty list of permission strings.
pub fn parse_list(items: &[&str]) -> Result<Vec<Perm>, Errno> {
    if items.is_empty() {
        return Err(Errno::EINVAL);
    }
    items.iter().map(|s| Perm::parse(s)).collect()
}

/// Encodes a permission list as GET_PERMS answers it: one NUL-terminated
/// string per entry.
pub fn encode_list(perms: &[Perm]) -> Vec<u8> {
    let mut out = Vec::with_capacity(perms.len() * 6);
    for p in perms {
        out.extend_from_slice(p.to_string().as_bytes());
        out.push(0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        assert_eq!(Perm::parse("n0"), Ok(Perm::new(0, Access::None)));
        assert_eq!(Perm::parse("r5"), Ok(Perm::new(5, Access::Read)));
        assert_eq!(Perm::parse("w12"), Ok(Perm::new(12, Access::Write)));
        assert_eq!(
            Perm::parse("b0x7FF5"),
            Ok(Perm::new(DOMID_ANY, Access::Both))
        );
        assert_eq!(Perm::parse("x5"), Err(Errno::EINVAL));
        assert_eq!(Perm::parse("r"), Err(Errno::EINVAL));
        assert_eq!(Perm::parse("r5a"), Err(Errno::EINVAL));
        assert_eq!(Perm::parse("r70000"), Err(Errno::EINVAL));
        assert_eq!(Perm::parse(""), Err(Errno::EINVAL));
        assert_eq!(Perm::new(3, Access::Both).to_string(), "b3");
    }

    #[test]
    fn lists() {
        let list = parse_list(&["n0", "r5"]).unwrap();
        assert_eq!(encode_list(&list), b"n0\0r5\0");
        assert_eq!(parse_list(&[]), Err(Errno::EINVAL));
    }
}
