//! Why a state file cannot be used, in terms an operator can act on. SQLite reports a file
//! it may not write as `disk I/O error`, `database is locked` or `attempt to write a readonly
//! database`; this looks at the folder, the file and its journal files itself and names the
//! path and the system's reason (`Permission denied`, `Read-only file system`, a full disk).

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

/// The first problem found with using `path` as a state file, e.g. `cannot write
/// /var/lib/x/state.db: Permission denied (os error 13)`; `None` when none is found.
pub fn state_file(path: &Path) -> Option<String> {
    let folder = match path.parent() {
        Some(f) if !f.as_os_str().is_empty() => f.to_path_buf(),
        _ => PathBuf::from("."),
    };
    match std::fs::metadata(&folder) {
        Err(e) => return Some(format!("cannot use the folder {}: {e}", folder.display())),
        Ok(m) if !m.is_dir() => return Some(format!("{} is not a folder", folder.display())),
        Ok(_) => {}
    }
    // The journal files are created next to the state file: the folder must be writable.
    let probe = folder.join(format!(".lava-coordinator-probe-{}", std::process::id()));
    match OpenOptions::new().write(true).create_new(true).open(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
        }
        Err(e) => {
            return Some(format!(
                "cannot create files in {} (SQLite keeps its journal there): {e}",
                folder.display()
            ))
        }
    }
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        let file = PathBuf::from(file);
        if !file.exists() {
            continue;
        }
        if let Err(e) = OpenOptions::new().read(true).write(true).open(&file) {
            return Some(format!("cannot write {}: {e}", file.display()));
        }
    }
    if let Some(free) = free_bytes(&folder) {
        if free < 64 << 10 {
            return Some(format!(
                "the file system of {} is full ({free} bytes free)",
                folder.display()
            ));
        }
    }
    None
}

/// Bytes an unprivileged process may still write on the file system of `folder`.
fn free_bytes(folder: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(folder.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a properly sized output struct.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some(st.f_bavail as u64 * st.f_frsize as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_folder_that_is_missing_and_says_nothing_when_all_is_well() {
        let why = state_file(Path::new("/nonexistent-lc/state.db")).unwrap();
        assert!(why.contains("/nonexistent-lc"), "{why}");
        assert!(why.contains("No such file"), "{why}");
        let dir = std::env::temp_dir().join(format!("lc-diagnose-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(state_file(&dir.join("state.db")), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
