//! Helpers for the packaging tests (`tests/tests/packaging.rs`): build (or reuse) the Debian
//! package and the tools tarballs in `dist/`, run `dpkg-deb`, `dpkg` and `tar`, and say loudly
//! when a check cannot run on this machine.
//!
//! The .deb in `dist/` is reused when it is newer than the release binary and every packaging
//! input; `cargo build --release -p lava-coordinator` runs first (a no-op when nothing changed),
//! so a changed coordinator is never tested through a stale package.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::SystemTime;

use crate::workspace_root;

/// The package's name (it Provides, Conflicts with and Replaces `lava-coordinator`).
pub const DEB_NAME: &str = "lava-multinode-coordinator";

/// Prints a line on the terminal even while the test harness captures output: for checks
/// that are skipped on this machine, so a green run never hides them.
pub fn notice(message: &str) {
    let _ = writeln!(std::io::stderr(), "packaging test: {message}");
}

/// Runs a command and returns its output; panics with its stderr when it cannot start.
pub fn run(cmd: &mut Command) -> Output {
    let shown = format!("{cmd:?}");
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"))
}

/// Runs a command that must succeed and returns its standard output as text.
pub fn run_ok(cmd: &mut Command) -> String {
    let shown = format!("{cmd:?}");
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{shown} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether `program` is on the PATH.
pub fn have(program: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `dpkg --print-architecture` (e.g. `amd64`).
pub fn deb_arch() -> String {
    run_ok(Command::new("dpkg").arg("--print-architecture"))
        .trim()
        .to_owned()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

fn mtime(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Newest modification time of the files that go into the package besides the binary.
fn newest_packaging_input() -> SystemTime {
    let root = workspace_root();
    let mut files = vec![
        root.join("coordinator/Cargo.toml"),
        root.join("coordinator/examples/manpage.rs"),
        root.join("packaging/build-deb.sh"),
        root.join("packaging/README.md"),
        root.join("docs/PROTOCOL.md"),
        root.join("docs/COMPATIBILITY.md"),
    ];
    for dir in ["packaging/deb", "packaging/deb/scripts"] {
        if let Ok(entries) = std::fs::read_dir(root.join(dir)) {
            files.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_file()));
        }
    }
    files
        .iter()
        .filter_map(|p| mtime(p))
        .max()
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// The Debian package in `dist/`, built by `packaging/build-deb.sh` unless an up-to-date one
/// is there. Built once per test process.
pub fn deb() -> &'static Path {
    static DEB: OnceLock<PathBuf> = OnceLock::new();
    DEB.get_or_init(|| {
        let root = workspace_root();
        // Rebuilds the binary when the coordinator changed (then the package is stale).
        run_ok(Command::new("cargo").current_dir(&root).args([
            "build",
            "--quiet",
            "--release",
            "-p",
            "lava-coordinator",
        ]));
        let binary = target_dir().join("release/lava-coordinator");
        let version = env!("CARGO_PKG_VERSION");
        let deb = root.join(format!("dist/{DEB_NAME}_{version}-1_{}.deb", deb_arch()));
        let fresh = match (mtime(&deb), mtime(&binary)) {
            (Some(d), Some(b)) => d >= b && d >= newest_packaging_input(),
            _ => false,
        };
        if fresh {
            notice(&format!(
                "reusing {} (newer than its inputs)",
                deb.display()
            ));
        } else {
            notice("building the .deb with packaging/build-deb.sh");
            run_ok(Command::new("sh").arg(root.join("packaging/build-deb.sh")));
        }
        assert!(deb.exists(), "{} was not built", deb.display());
        deb
    })
}

/// One field of the package's control file (`dpkg-deb -f`).
pub fn control_field(deb: &Path, field: &str) -> String {
    run_ok(Command::new("dpkg-deb").arg("-f").arg(deb).arg(field))
        .trim()
        .to_owned()
}

/// A file of the control archive (`conffiles`, `postinst`, ...).
pub fn control_file(deb: &Path, name: &str) -> String {
    run_ok(Command::new("dpkg-deb").arg("-I").arg(deb).arg(name))
}

/// `dpkg-deb -c`: (mode string, path without the leading `.`, link target) per entry.
pub fn contents(deb: &Path) -> Vec<(String, String, Option<String>)> {
    run_ok(Command::new("dpkg-deb").arg("-c").arg(deb))
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 6 {
                return None;
            }
            let mode = fields[0].to_owned();
            let rest = fields[5..].join(" ");
            let (path, target) = match rest.split_once(" -> ") {
                Some((p, t)) => (p.to_owned(), Some(t.to_owned())),
                None => (rest, None),
            };
            Some((mode, path.trim_start_matches('.').to_owned(), target))
        })
        .collect()
}

/// Extracts the package's files into `dir` (`dpkg -x`).
pub fn extract(deb: &Path, dir: &Path) {
    run_ok(Command::new("dpkg").arg("-x").arg(deb).arg(dir));
}

/// The `KEY=VALUE` lines of a unit file's section, in order (repeated keys kept).
pub fn unit_entries(unit: &str, section: &str) -> Vec<(String, String)> {
    let header = format!("[{section}]");
    let mut inside = false;
    let mut out = Vec::new();
    for line in unit.lines().map(str::trim) {
        if line.starts_with('[') {
            inside = line == header;
            continue;
        }
        if !inside || line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            out.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    out
}

/// The values of `key` in a unit section.
pub fn unit_values(unit: &str, section: &str, key: &str) -> Vec<String> {
    unit_entries(unit, section)
        .into_iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v)
        .collect()
}

/// Whether this process may run `dpkg --root` (it needs root).
pub fn is_root() -> bool {
    run(Command::new("id").arg("-u")).stdout.starts_with(b"0\n")
}

/// A fresh dpkg database under `root`, for `dpkg --root`.
pub fn init_dpkg_root(root: &Path) {
    for dir in [
        "var/lib/dpkg/info",
        "var/lib/dpkg/updates",
        "var/lib/dpkg/triggers",
        "etc/systemd/system",
    ] {
        std::fs::create_dir_all(root.join(dir)).expect("create dpkg root folders");
    }
    for file in ["var/lib/dpkg/status", "var/lib/dpkg/available"] {
        std::fs::write(root.join(file), "").expect("create dpkg database");
    }
}

/// `dpkg --root=ROOT` with the maintainer scripts run outside a chroot (DPKG_ROOT set, as
/// Debian's own scripts and ours expect) and dependencies not checked (the root is empty).
pub fn dpkg_root(root: &Path) -> Command {
    let mut cmd = Command::new("dpkg");
    cmd.arg(format!("--root={}", root.display()))
        .arg("--force-script-chrootless")
        .arg("--force-depends")
        .env("DEBIAN_FRONTEND", "noninteractive");
    cmd
}

/// `dpkg-query --root=ROOT -W -f='${db:Status-Status}' PACKAGE`, or "" when unknown.
pub fn package_status(root: &Path, package: &str) -> String {
    let out = run(Command::new("dpkg-query")
        .arg(format!("--root={}", root.display()))
        .args(["-W", "-f=${db:Status-Status}", package]));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Rebuilds Debian's installed `lava-coordinator` as a .deb in `dir` (its files, conffiles
/// and maintainer scripts, from the dpkg database), to replay a lab's switch in a scratch
/// root. `None` when the package is not installed here; a failure to repack panics.
pub fn repack_installed_debian_package(dir: &Path) -> Option<PathBuf> {
    let status = run(Command::new("dpkg-query").args([
        "-W",
        "-f=${db:Status-Status} ${Version}",
        "lava-coordinator",
    ]));
    let status = String::from_utf8_lossy(&status.stdout).into_owned();
    let version = status.strip_prefix("installed ")?.trim().to_owned();
    // Our own package is not Debian's.
    if Path::new(&format!("/var/lib/dpkg/info/{DEB_NAME}.list")).exists() {
        return None;
    }
    let tree = dir.join("lava-coordinator-repack");
    let debian = tree.join("DEBIAN");
    let fail = |what: &str, e: std::io::Error| -> ! {
        panic!("repacking Debian's lava-coordinator: {what}: {e}")
    };
    std::fs::create_dir_all(&debian).unwrap_or_else(|e| fail("mkdir", e));
    let list = std::fs::read_to_string("/var/lib/dpkg/info/lava-coordinator.list")
        .unwrap_or_else(|e| fail("lava-coordinator.list", e));
    for path in list.lines().filter(|p| !p.is_empty() && *p != "/.") {
        let source = Path::new(path);
        // Followed: on a merged-/usr system the package's /lib is a link here.
        let meta = std::fs::metadata(source).unwrap_or_else(|e| fail(path, e));
        let dest = tree.join(path.trim_start_matches('/'));
        let done = if meta.is_dir() {
            std::fs::create_dir_all(&dest)
        } else {
            let parent = dest.parent().expect("a file has a parent");
            std::fs::create_dir_all(parent).and_then(|()| std::fs::copy(source, &dest).map(drop))
        };
        done.unwrap_or_else(|e| fail(path, e));
    }
    for script in ["preinst", "postinst", "prerm", "postrm", "conffiles"] {
        let source = format!("/var/lib/dpkg/info/lava-coordinator.{script}");
        if Path::new(&source).exists() {
            std::fs::copy(&source, debian.join(script)).unwrap_or_else(|e| fail(&source, e));
        }
    }
    std::fs::write(
        debian.join("control"),
        format!(
            "Package: lava-coordinator\nVersion: {version}\nArchitecture: all\n\
             Maintainer: Debian LAVA team <pkg-linaro-lava-devel@lists.alioth.debian.org>\n\
             Depends: lava-common (= {version}), python3\nSection: net\nPriority: optional\n\
             Description: LAVA coordinator daemon (repacked from this machine for a test)\n"
        ),
    )
    .unwrap_or_else(|e| fail("control", e));
    let deb = dir.join(format!("lava-coordinator_{version}_all.deb"));
    run_ok(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "-b"])
            .arg(&tree)
            .arg(&deb),
    );
    Some(deb)
}

/// The tools tarballs: `(triple, tarball)` for every `dist/<triple>/lava-multinode`, packed
/// by `packaging/build-tools-tarballs.sh` (packing only, LAVA_MULTINODE_SKIP_BUILD=1) unless
/// an up-to-date tarball is there. Built once per test process.
pub fn tools_tarballs() -> &'static [(String, PathBuf)] {
    static TARBALLS: OnceLock<Vec<(String, PathBuf)>> = OnceLock::new();
    TARBALLS.get_or_init(|| {
        let root = workspace_root();
        let version = env!("CARGO_PKG_VERSION");
        let mut wanted = Vec::new();
        if let Ok(entries) = std::fs::read_dir(root.join("dist")) {
            for entry in entries.flatten() {
                let bin = entry.path().join("lava-multinode");
                if bin.is_file() {
                    let triple = entry.file_name().to_string_lossy().into_owned();
                    let tarball =
                        root.join(format!("dist/lava-multinode-{version}-{triple}.tar.gz"));
                    wanted.push((triple, tarball, bin));
                }
            }
        }
        wanted.sort();
        let script = root.join("packaging/build-tools-tarballs.sh");
        let stale = wanted.iter().any(|(_, tarball, bin)| {
            match (mtime(tarball), mtime(bin), mtime(&script)) {
                (Some(t), Some(b), Some(s)) => t < b || t < s,
                _ => true,
            }
        });
        if !wanted.is_empty() && stale {
            notice("packing the tools tarballs with packaging/build-tools-tarballs.sh");
            run_ok(
                Command::new("sh")
                    .arg(&script)
                    .env("LAVA_MULTINODE_SKIP_BUILD", "1"),
            );
        }
        wanted
            .into_iter()
            .map(|(triple, tarball, _)| (triple, tarball))
            .collect()
    })
}
