//! `lava-multinode install DIR`: the `lava-*` links to this binary.

use std::path::{Path, PathBuf};

use crate::commands::Command;
use crate::error::Error;

/// The names `install` creates.
pub fn tool_names() -> Vec<String> {
    Command::ALL
        .into_iter()
        .filter_map(Command::tool_name)
        .collect()
}

/// What the links point to: this binary, by its file name when it lives in `dir` (so that
/// the folder can be moved), else by its absolute path.
fn link_target(exe: &Path, dir: &Path) -> PathBuf {
    let same_dir = match (exe.parent(), dir.canonicalize()) {
        (Some(parent), Ok(dir)) => parent == dir,
        _ => false,
    };
    match (same_dir, exe.file_name()) {
        (true, Some(name)) => PathBuf::from(name),
        _ => exe.to_path_buf(),
    }
}

/// Creates `DIR/lava-send` ... as symbolic links to this binary (and DIR when it is missing).
/// An existing link is replaced; any other existing file only with `force`.
pub fn install(dir: &Path, force: bool) -> Result<(), Error> {
    let local = |what: &str, path: &Path, e: std::io::Error| {
        Error::Local(format!("cannot {what} {}: {e}", path.display()))
    };
    let exe = std::env::current_exe()
        .and_then(|p| p.canonicalize())
        .map_err(|e| local("locate", Path::new("this binary"), e))?;
    if !dir.exists() {
        std::fs::create_dir_all(dir).map_err(|e| local("create", dir, e))?;
    }
    if !dir.is_dir() {
        return Err(Error::Local(format!("{} is not a folder", dir.display())));
    }
    let target = link_target(&exe, dir);
    for name in tool_names() {
        let link = dir.join(&name);
        if let Ok(meta) = std::fs::symlink_metadata(&link) {
            if !meta.file_type().is_symlink() && !force {
                return Err(Error::Local(format!(
                    "{} exists and is not a link (use --force to replace it)",
                    link.display()
                )));
            }
            std::fs::remove_file(&link).map_err(|e| local("replace", &link, e))?;
        }
        std::os::unix::fs::symlink(&target, &link).map_err(|e| local("create", &link, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tool_is_linked() {
        let names = tool_names();
        assert_eq!(names.len(), 15);
        for name in [
            "lava-send",
            "lava-wait-vms",
            "lava-vm-done",
            "lava-fail",
            "lava-lock",
            "lava-unlock",
            "lava-group",
        ] {
            assert!(names.iter().any(|n| n == name), "{name}");
        }
    }

    #[test]
    fn links_are_relative_in_the_binary_folder() {
        let dir = std::env::temp_dir().canonicalize().unwrap();
        assert_eq!(
            link_target(&dir.join("lava-multinode"), &dir),
            PathBuf::from("lava-multinode")
        );
        assert_eq!(
            link_target(Path::new("/opt/x/lava-multinode"), &dir),
            PathBuf::from("/opt/x/lava-multinode")
        );
    }
}
