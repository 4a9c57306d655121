//! Node names: validation and canonicalisation as C xenstored does them.

use crate::wire::{Errno, ABS_PATH_MAX};

/// A validated, absolute node name (or a special `@...` name).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CanonPath {
    /// The absolute name (`/local/domain/5/x`) or special name (`@releaseDomain`).
    pub abs: String,
    /// Length of the prefix a relative name was given without; 0 if absolute.
    pub prefix_len: usize,
}

impl CanonPath {
    /// Whether the caller named the node relative to its home directory.
    pub fn is_relative(&self) -> bool {
        self.prefix_len > 0
    }

    /// Whether this is a special (`@...`) name.
    pub fn is_special(&self) -> bool {
        self.abs.starts_with('@')
    }
}

/// Home directory of a domain: `/local/domain/<domid>`.
pub fn domain_path(domid: u32) -> String {
    format!("/local/domain/{domid}")
}

fn valid_chars(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'/' | b'_' | b'@'))
}

/// Length of a leading `/local/domain/<up to 5 digits>/`, which C xenstored
/// leaves out when it applies the path-length quota.
fn local_domain_prefix_len(abs: &str) -> usize {
    let Some(rest) = abs.strip_prefix("/local/domain/") else {
        return 0;
    };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if (1..=5).contains(&digits) && rest.as_bytes().get(digits) == Some(&b'/') {
        "/local/domain/".len() + digits + 1
    } else {
        0
    }
}

/// Validates a name sent by a caller of domain `domid` and makes it absolute.
///
/// Rules: characters `[A-Za-z0-9-/_@]`; a leading `@` only where special
/// names are allowed; a name not starting with `/` or `@` is relative to
/// `/local/domain/<domid>/`; no trailing `/` (except `/` itself), no `//`;
/// at most [`ABS_PATH_MAX`] bytes, and at most `path_quota` bytes once a
/// `/local/domain/<id>/` prefix is left out. Every violation is EINVAL.
pub fn canonicalize(
    domid: u32,
    raw: &str,
    allow_special: bool,
    path_quota: usize,
) -> Result<CanonPath, Errno> {
    if !valid_chars(raw) || (raw.starts_with('@') && !allow_special) {
        return Err(Errno::EINVAL);
    }
    let (abs, prefix_len) = if raw.starts_with('/') || raw.starts_with('@') {
        (raw.to_owned(), 0)
    } else {
        let prefix = format!("{}/", domain_path(domid));
        let len = prefix.len();
        (prefix + raw, len)
    };
    let bad_shape = (abs.ends_with('/') && abs != "/") || abs.contains("//");
    let too_long =
        abs.len() > ABS_PATH_MAX || abs.len() - local_domain_prefix_len(&abs) > path_quota;
    if bad_shape || too_long {
        return Err(Errno::EINVAL);
    }
    Ok(CanonPath { abs, prefix_len })
}

/// Parent of an absolute name; `None` for `/`.
pub fn parent(path: &str) -> Option<&str> {
    if path == "/" {
        return None;
    }
    match path.rfind('/') {
        Some(0) => Some("/"),
        Some(i) => Some(&path[..i]),
        None => None,
    }
}

/// Last component of an absolute name.
pub fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// `parent` + `/` + `child`.
pub fn child_path(parent: &str, child: &str) -> String {
    if parent == "/" {
        format!("/{child}")
    } else {
        format!("{parent}/{child}")
    }
}

/// The name itself and every ancestor up to `/`, innermost first.
pub fn self_and_ancestors(path: &str) -> impl Iterator<Item = &str> {
    std::iter::successors(Some(path), |p| parent(p))
}

/// Whether `child` is `parent` or lies below it, at most `depth` levels down
/// when a depth is given (0: only `parent` itself).
pub fn is_within(child: &str, parent: &str, depth: Option<u32>) -> bool {
    let rest = if parent == "/" {
        if !child.starts_with('/') {
            return false;
        }
        if child == "/" {
            ""
        } else {
            child
        }
    } else {
        match child.strip_prefix(parent) {
            Some(rest) if rest.is_empty() || rest.starts_with('/') => rest,
            _ => return false,
        }
    };
    match depth {
        None => true,
        Some(d) => rest.bytes().filter(|b| *b == b'/').count() <= d as usize,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::REL_PATH_MAX;

    fn canon(domid: u32, raw: &str) -> Result<String, Errno> {
        canonicalize(domid, raw, false, REL_PATH_MAX).map(|c| c.abs)
    }

    #[test]
    fn relative_names_are_under_the_domain_home() {
        let c = canonicalize(3, "x/y", false, REL_PATH_MAX).unwrap();
        assert_eq!(c.abs, "/local/domain/3/x/y");
        assert_eq!(&c.abs[c.prefix_len..], "x/y");
        assert_eq!(canon(0, "data"), Ok("/local/domain/0/data".into()));
    }

    #[test]
    fn shape_errors_are_einval() {
        for bad in ["", "/a/", "//", "/a//b", "/a b", "/a\u{e9}", "x/", "@x"] {
            assert_eq!(canon(1, bad), Err(Errno::EINVAL), "{bad:?}");
        }
        assert_eq!(canon(1, "/"), Ok("/".into()));
        assert_eq!(canon(1, "/a-b_c@d/E9"), Ok("/a-b_c@d/E9".into()));
    }

    #[test]
    fn special_names_only_where_allowed() {
        let c = canonicalize(0, "@releaseDomain", true, REL_PATH_MAX).unwrap();
        assert!(c.is_special());
        assert!(!c.is_relative());
    }

    #[test]
    fn path_length_limits() {
        let long = format!("/{}", "a".repeat(REL_PATH_MAX - 1));
        assert!(canon(0, &long).is_ok());
        assert_eq!(canon(0, &format!("{long}a")), Err(Errno::EINVAL));
        // Under /local/domain/<id>/ the prefix does not count against the quota.
        let under = format!("/local/domain/7/{}", "a".repeat(REL_PATH_MAX));
        assert!(canon(0, &under).is_ok());
        let rel = "a".repeat(REL_PATH_MAX);
        assert!(canon(7, &rel).is_ok());
        assert_eq!(canon(7, &format!("{rel}a")), Err(Errno::EINVAL));
    }

    #[test]
    fn parents_and_children() {
        assert_eq!(parent("/"), None);
        assert_eq!(parent("/a"), Some("/"));
        assert_eq!(parent("/a/b"), Some("/a"));
        assert_eq!(basename("/a/b"), "b");
        assert_eq!(child_path("/", "a"), "/a");
        assert_eq!(child_path("/a", "b"), "/a/b");
        assert_eq!(
            self_and_ancestors("/a/b").collect::<Vec<_>>(),
            ["/a/b", "/a", "/"]
        );
    }

    #[test]
    fn within_with_depth() {
        assert!(is_within("/a/b", "/a", None));
        assert!(is_within("/a", "/a", Some(0)));
        assert!(!is_within("/a/b", "/a", Some(0)));
        assert!(is_within("/a/b", "/a", Some(1)));
        assert!(!is_within("/a/b/c", "/a", Some(1)));
        assert!(!is_within("/ab", "/a", None));
        assert!(is_within("/a", "/", Some(1)));
        assert!(!is_within("/a/b", "/", Some(1)));
        assert!(is_within("@releaseDomain/5", "@releaseDomain", Some(1)));
        assert!(!is_within("@releaseDomainX", "@releaseDomain", None));
    }
}
