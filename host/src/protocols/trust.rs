//! Whether a directory or file may be loaded from. Plugins run in a sandbox,
//! but the artifact cache holds native code the daemon maps and runs as
//! root: a directory or file someone else could write is refused, with the
//! path, what is wrong and the fix. Trusted: owned by root or by the user
//! the daemon runs as, and not writable by group or others.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{bail, Context, Result};

/// Refuse `path` (followed if a symlink: a ConfigMap's files are links to
/// files the kubelet owns) unless it is trusted. `what` names it in errors.
pub fn check(path: &Path, what: &str) -> Result<()> {
    let meta = std::fs::metadata(path).with_context(|| format!("{what} {}", path.display()))?;
    // SAFETY: no preconditions.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != 0 && meta.uid() != me {
        bail!(
            "{what} {} is owned by uid {}, not root or the daemon's user (uid {me}): what is loaded from it runs in the daemon; `chown root {}`",
            path.display(),
            meta.uid(),
            path.display()
        );
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        bail!(
            "{what} {} is writable by {} (mode {mode:04o}): what is loaded from it runs in the daemon; `chmod go-w {}`",
            path.display(),
            if mode & 0o002 != 0 { "everyone" } else { "its group" },
            path.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn writable_by_others_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        check(dir.path(), "plugin directory").unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = check(dir.path(), "plugin directory").unwrap_err().to_string();
        assert!(e.contains("plugin directory") && e.contains("everyone") && e.contains("0777"), "{e}");
        assert!(e.contains(&format!("chmod go-w {}", dir.path().display())), "{e}");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o770)).unwrap();
        let e = check(dir.path(), "plugin directory").unwrap_err().to_string();
        assert!(e.contains("its group"), "{e}");
        let file = dir.path().join("x.wasm");
        std::fs::write(&file, b"x").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        check(&file, "plugin").unwrap();
    }
}
