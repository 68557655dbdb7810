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

use crate::tools::static_required;
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

/// Whether the machine was prepared by `tests/prepare.sh` (`cargo xtask test` says so): then a
/// missing tool (lintian, a cross toolchain) or package is a failure, not a skipped check.
pub fn prepared() -> bool {
    static_required()
}

/// Says that a check cannot run here: a failure on a prepared machine, a loud note otherwise.
pub fn skip_or_fail(what: &str, fix: &str) {
    assert!(!prepared(), "{what}: {fix} (tests/prepare.sh does)");
    notice(&format!("SKIPPED {what}: {fix}"));
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
        root.join(".cargo/config.toml"),
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

/// The Debian package for the host's architecture (see [`deb_for`]).
pub fn deb() -> &'static Path {
    static DEB: OnceLock<PathBuf> = OnceLock::new();
    DEB.get_or_init(|| deb_for(&deb_arch()).expect("the host's package is always built"))
}

/// The arm64 package (cross-built on another host), or `None` when this machine cannot build
/// it (no cross toolchain or rustup target; a failure instead on a prepared machine).
pub fn deb_arm64() -> Option<&'static Path> {
    static DEB: OnceLock<Option<PathBuf>> = OnceLock::new();
    DEB.get_or_init(|| deb_for("arm64")).as_deref()
}

/// The Rust target that `packaging/build-deb.sh` builds a Debian architecture's package from.
pub fn rust_target(arch: &str) -> &'static str {
    match arch {
        "amd64" => "x86_64-unknown-linux-gnu",
        "arm64" => "aarch64-unknown-linux-gnu",
        other => panic!("packaging/build-deb.sh builds no {other} package"),
    }
}

/// Whether the rustup target's standard library is installed.
fn has_rust_target(target: &str) -> bool {
    let out = run(Command::new("rustup").args(["target", "list", "--installed"]));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l == target)
}

/// The Debian package for `arch` in `dist/`, built by `packaging/build-deb.sh ARCH` unless an
/// up-to-date one is there (`cargo build --release` runs first, a no-op when nothing changed,
/// so a changed coordinator is never tested through a stale package). `None` when a foreign
/// architecture's toolchain is missing here (see [`skip_or_fail`]).
fn deb_for(arch: &str) -> Option<PathBuf> {
    let root = workspace_root();
    let mut build = Command::new("cargo");
    build
        .current_dir(&root)
        .args(["build", "--quiet", "--release", "-p", "lava-coordinator"]);
    let binary = if arch == deb_arch() {
        target_dir().join("release/lava-coordinator")
    } else {
        let target = rust_target(arch);
        let linker = format!("{}-linux-gnu-gcc", target.split('-').next().unwrap_or(""));
        if !have(&linker) || !has_rust_target(target) {
            skip_or_fail(
                &format!("the {arch} package"),
                &format!(
                    "no {linker} or {target} here: apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross; rustup target add {target}"
                ),
            );
            return None;
        }
        build.args(["--target", target]);
        target_dir().join(format!("{target}/release/lava-coordinator"))
    };
    // Rebuilds the binary when the coordinator changed (then the package is stale).
    run_ok(&mut build);
    let version = env!("CARGO_PKG_VERSION");
    let deb = root.join(format!("dist/{DEB_NAME}_{version}-1_{arch}.deb"));
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
        notice(&format!(
            "building the {arch} .deb with packaging/build-deb.sh"
        ));
        run_ok(
            Command::new("sh")
                .arg(root.join("packaging/build-deb.sh"))
                .arg(arch),
        );
    }
    assert!(deb.exists(), "{} was not built", deb.display());
    Some(deb)
}

/// The lintian tags of a .deb that no override explains, and the overridden ones (`O:` lines),
/// from `lintian --pedantic --display-info --display-experimental --show-overrides`.
pub struct Lintian {
    pub unexplained: Vec<String>,
    pub overridden: Vec<String>,
}

/// Runs lintian on `deb` at every level (pedantic, info, experimental).
pub fn lintian(deb: &Path) -> Lintian {
    let out = run(Command::new("lintian")
        .args([
            "--pedantic",
            "--display-info",
            "--display-experimental",
            "--show-overrides",
        ])
        .arg(deb));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let tag_lines = |kinds: &[&str]| -> Vec<String> {
        text.lines()
            .filter(|l| kinds.iter().any(|k| l.starts_with(k)))
            .map(str::to_owned)
            .collect()
    };
    let unexplained = tag_lines(&["E: ", "W: ", "I: ", "P: ", "X: "]);
    // lintian exits non-zero on errors, and on failures of its own (no tag lines then).
    assert!(
        out.status.success() || !unexplained.is_empty(),
        "lintian failed ({}):\n{text}\n{stderr}",
        out.status
    );
    Lintian {
        unexplained,
        overridden: tag_lines(&["O: "]),
    }
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
        "var/log",
    ] {
        std::fs::create_dir_all(root.join(dir)).expect("create dpkg root folders");
    }
    for file in ["var/lib/dpkg/status", "var/lib/dpkg/available"] {
        std::fs::write(root.join(file), "").expect("create dpkg database");
    }
}

/// `dpkg --root=ROOT` with the maintainer scripts run outside a chroot (DPKG_ROOT set, as
/// Debian's own scripts and ours expect), dependencies not checked (the root is empty), and
/// its log in ROOT's `/var/log/dpkg.log` (dpkg's default is the machine's own log, whatever
/// the root).
pub fn dpkg_root(root: &Path) -> Command {
    let mut cmd = Command::new("dpkg");
    cmd.arg(format!("--root={}", root.display()))
        .arg(format!("--log={}", dpkg_root_log(root).display()))
        .arg("--force-script-chrootless")
        .arg("--force-depends")
        .env("DEBIAN_FRONTEND", "noninteractive");
    cmd
}

/// The log that [`dpkg_root`] writes.
pub fn dpkg_root_log(root: &Path) -> PathBuf {
    root.join("var/log/dpkg.log")
}

/// `dpkg-query --root=ROOT -W -f='${db:Status-Status}' PACKAGE`, or "" when unknown.
pub fn package_status(root: &Path, package: &str) -> String {
    let out = run(Command::new("dpkg-query")
        .arg(format!("--root={}", root.display()))
        .args(["-W", "-f=${db:Status-Status}", package]));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The fixture tree of Debian's `lava-coordinator` (tests/fixtures/debian-lava-coordinator).
pub fn debian_fixture_tree() -> PathBuf {
    workspace_root().join("tests/fixtures/debian-lava-coordinator/package")
}

/// Builds the fixture of Debian's `lava-coordinator` 2023.01-2 (its conffiles, unit and
/// maintainer scripts, a stand-in program) into a .deb in `dir`, from the repository's own
/// files only. Modes are set here, not taken from the checkout (dpkg-deb checks them).
pub fn build_debian_fixture_package(dir: &Path) -> PathBuf {
    let tree = dir.join("lava-coordinator-fixture");
    copy_tree(&debian_fixture_tree(), &tree);
    let deb = dir.join("lava-coordinator_2023.01-2+fixture_all.deb");
    run_ok(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "-b"])
            .arg(&tree)
            .arg(&deb),
    );
    deb
}

/// Copies a folder tree: folders 0755, files 0644, except 0755 for maintainer scripts and
/// for files under `usr/bin`.
fn copy_tree(from: &Path, to: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let fail = |what: &Path, e: std::io::Error| -> ! {
        panic!("copying the fixture {}: {e}", what.display())
    };
    std::fs::create_dir_all(to).unwrap_or_else(|e| fail(to, e));
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| fail(to, e));
    let entries = std::fs::read_dir(from).unwrap_or_else(|e| fail(from, e));
    for entry in entries {
        let entry = entry.unwrap_or_else(|e| fail(from, e));
        let source = entry.path();
        let dest = to.join(entry.file_name());
        if source.is_dir() {
            copy_tree(&source, &dest);
            continue;
        }
        std::fs::copy(&source, &dest).unwrap_or_else(|e| fail(&source, e));
        let name = entry.file_name().to_string_lossy().into_owned();
        let executable = to.ends_with("usr/bin")
            || (to.ends_with("DEBIAN")
                && ["preinst", "postinst", "prerm", "postrm"].contains(&name.as_str()));
        let mode = if executable { 0o755 } else { 0o644 };
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(mode))
            .unwrap_or_else(|e| fail(&dest, e));
    }
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
