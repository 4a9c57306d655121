//! What this build of the core is: its version and the optional parts compiled in.

/// Version of the crate, kept equal to the npm package's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Whether the real-hypervisor platform (cargo feature `xen`) is compiled in.
pub const XEN_PLATFORM: bool = cfg!(feature = "xen");

/// The target triple the core was compiled for, as cargo names it.
pub fn target() -> String {
    format!(
        "{}-{}-{}",
        std::env::consts::ARCH,
        std::env::consts::OS,
        if cfg!(target_env = "musl") {
            "musl"
        } else {
            "gnu"
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_is_semver() {
        let parts: Vec<&str> = VERSION.split('.').collect();
        assert_eq!(parts.len(), 3, "{VERSION}");
        assert!(parts.iter().all(|p| p.parse::<u32>().is_ok()), "{VERSION}");
    }

    #[test]
    fn target_names_this_machine() {
        assert!(target().starts_with(std::env::consts::ARCH));
        assert!(target().contains(std::env::consts::OS));
    }

    #[test]
    fn xen_platform_follows_the_feature() {
        assert_eq!(XEN_PLATFORM, cfg!(feature = "xen"));
    }
}
