//! Packaging tests (issue 6): the Debian package that replaces Debian's `lava-coordinator`, and
//! the tarballs of the static target tools.
//!
//! The .deb is built by `packaging/build-deb.sh` (cargo-deb) unless `dist/` holds one newer
//! than the release binary and the packaging files; the tarballs are packed from what
//! `packaging/build-static.sh` left in `dist/<triple>/`. The switch from Debian's package uses a
//! fixture of it built from `tests/fixtures/`, never the machine's own files or dpkg log.
//! Checks that cannot run on this machine (no `systemd-analyze`, no `logrotate`, not root,
//! systemd running) print a `packaging test:` line on the terminal saying so, instead of
//! passing silently.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use lava_multinode_tests::packaging::{
    build_debian_fixture_package, contents, control_field, control_file, deb, deb_arm64,
    debian_fixture_tree, dpkg_root, dpkg_root_log, extract, have, init_dpkg_root, is_root, lintian,
    notice, package_status, run, run_ok, skip_or_fail, tools_tarballs, unit_values, DEB_NAME,
};
use lava_multinode_tests::tools::{static_required, REQUIRE_STATIC_ENV, STATIC_BUILDS};
use lava_multinode_tests::{free_port, wait_for_port, TempDir};

const UNIT: &str = "/lib/systemd/system/lava-coordinator.service";
const CONF: &str = "/etc/lava-coordinator/lava-coordinator.conf";
const ENV_FILE: &str = "/etc/lava-coordinator/lava-coordinator";
const LOGROTATE: &str = "/etc/logrotate.d/lava-multinode-coordinator";
const MAN: &str = "/usr/share/man/man1/lava-coordinator.1.gz";

/// The tools every tarball must carry as links to `lava-multinode`.
const TOOL_LINKS: &[&str] = &[
    "lava-send",
    "lava-wait",
    "lava-wait-all",
    "lava-sync",
    "lava-self",
    "lava-role",
    "lava-group",
    "lava-start-vms",
    "lava-wait-for-vms",
    "lava-wait-vms",
];

/// A process killed on drop.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Running {
    fn terminate(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        for _ in 0..500 {
            if let Ok(Some(status)) = self.0.try_wait() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the coordinator did not stop within 10 s of SIGTERM");
    }
}

/// Starts `program args... --listen 127.0.0.1:PORT`-style command lines built by `make` for a
/// free port, retrying when the port was taken meanwhile. Returns the process and address.
fn start_on_free_port(make: impl Fn(&str) -> Command) -> (Running, String) {
    for _ in 0..5 {
        let addr = format!("127.0.0.1:{}", free_port());
        let mut cmd = make(&addr);
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the packaged lava-coordinator");
        let mut running = Running(child);
        if wait_for_port(&addr, Duration::from_secs(10)) && matches!(running.0.try_wait(), Ok(None))
        {
            return (running, addr);
        }
    }
    panic!("the packaged lava-coordinator did not start");
}

/// One LAVA request: a group of one, whose `group_data` is answered at once.
fn answers_one_request(addr: &str) {
    let client = lava_protocol::Client::new(addr.to_owned());
    let body = r#"{"request": "group_data", "group_name": "pkg-test", "client_name": "job1", "role": "server", "hostname": "h", "group_size": 1}"#;
    let reply = client
        .call_raw(body, None)
        .expect("request to the packaged coordinator")
        .expect("a reply");
    let reply: serde_json::Value = serde_json::from_str(&reply).expect("JSON reply");
    assert_eq!(reply["response"], "group_data", "reply: {reply}");
    assert_eq!(reply["roles"]["job1"], "server", "reply: {reply}");
}

fn extracted() -> (TempDir, PathBuf) {
    let dir = TempDir::new("deb-x");
    let root = dir.path().join("root");
    extract(deb(), &root);
    (dir, root)
}

fn at(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

#[test]
fn deb_control_replaces_debians_lava_coordinator() {
    let deb = deb();
    assert_eq!(control_field(deb, "Package"), DEB_NAME);
    assert_eq!(
        control_field(deb, "Version"),
        format!("{}-1", env!("CARGO_PKG_VERSION"))
    );
    for field in ["Conflicts", "Replaces", "Provides"] {
        let value = control_field(deb, field);
        assert!(
            value.split(',').any(|p| p.trim() == "lava-coordinator"),
            "{field}: {value:?} must name lava-coordinator"
        );
    }
    let depends = control_field(deb, "Depends");
    assert!(depends.contains("libc6"), "Depends: {depends}");
    assert!(!depends.contains("python"), "Depends: {depends}");

    let conffiles: Vec<String> = control_file(deb, "conffiles")
        .lines()
        .map(str::to_owned)
        .collect();
    let mut expected = vec![CONF, ENV_FILE, LOGROTATE];
    expected.sort();
    let mut got: Vec<&str> = conffiles.iter().map(String::as_str).collect();
    got.sort();
    assert_eq!(got, expected, "conffiles");

    // Maintainer scripts: valid sh; start and stop only when systemd runs and not under
    // `dpkg --root`; enablement through deb-systemd-helper, as dh_installsystemd does.
    let info = run_ok(Command::new("dpkg-deb").arg("-I").arg(deb));
    for script in ["postinst", "prerm", "postrm"] {
        assert!(
            info.contains(&format!(" {script} ")),
            "no {script}:\n{info}"
        );
        let text = control_file(deb, script);
        assert!(text.starts_with("#!/bin/sh"), "{script}");
        let check = run(Command::new("sh").args(["-n", "-c", &text]));
        assert!(check.status.success(), "{script} is not valid sh");
        assert!(text.contains("lava-coordinator.service"), "{script}");
    }
    let postinst = control_file(deb, "postinst");
    assert!(postinst.contains("deb-systemd-helper enable"));
    assert!(postinst.contains("deb-systemd-invoke restart"));
    assert!(postinst.contains("[ -d /run/systemd/system ]"));
    let prerm = control_file(deb, "prerm");
    assert!(prerm.contains("deb-systemd-invoke stop") && prerm.contains("\"$1\" = remove"));
    assert!(control_file(deb, "postrm").contains("purge"));
}

#[test]
fn deb_contents() {
    let entries = contents(deb());
    let find = |path: &str| {
        entries
            .iter()
            .find(|(_, p, _)| p == path)
            .unwrap_or_else(|| panic!("{path} is not in the package: {entries:#?}"))
    };
    assert_eq!(find("/usr/bin/lava-coordinator").0, "-rwxr-xr-x");
    for path in [UNIT, CONF, ENV_FILE, LOGROTATE, MAN] {
        assert_eq!(find(path).0, "-rw-r--r--", "{path}");
    }
    find(&format!("/usr/share/doc/{DEB_NAME}/copyright"));
    find(&format!("/usr/share/doc/{DEB_NAME}/README.md"));
    // Nothing of Debian's Python package, and only root-owned files.
    assert!(!entries.iter().any(|(_, p, _)| p.contains("python")));
    let listing = run_ok(Command::new("dpkg-deb").arg("-c").arg(deb()));
    assert!(
        listing
            .lines()
            .all(|l| l.contains(" 0/0 ") || l.contains(" root/root ")),
        "{listing}"
    );
}

/// The md5sums cover every file but the conffiles, and match them; the changelog's entry is
/// the package's version.
#[test]
fn deb_md5sums_and_changelog() {
    let deb = deb();
    let (_dir, root) = extracted();
    let conffiles = control_file(deb, "conffiles");
    let mut files: Vec<String> = contents(deb)
        .into_iter()
        .filter(|(mode, path, _)| mode.starts_with('-') && !conffiles.lines().any(|c| c == path))
        .map(|(_, path, _)| path.trim_start_matches('/').to_owned())
        .collect();
    files.sort();
    let sums = control_file(deb, "md5sums");
    let mut listed: Vec<String> = Vec::new();
    for line in sums.lines() {
        let (sum, path) = line.split_once("  ").expect("md5sums: SUM  PATH");
        let real = run_ok(Command::new("md5sum").arg(at(&root, path)));
        assert!(
            real.starts_with(sum),
            "md5sums: {path}: {sum}, the file: {real}"
        );
        listed.push(path.to_owned());
    }
    listed.sort();
    assert_eq!(
        listed, files,
        "md5sums must list every file but the conffiles"
    );

    let changelog = run_ok(Command::new("gzip").arg("-dc").arg(at(
        &root,
        &format!("/usr/share/doc/{DEB_NAME}/changelog.Debian.gz"),
    )));
    let first = changelog.lines().next().unwrap_or_default();
    let version = control_field(deb, "Version");
    assert!(
        first.starts_with(&format!("{DEB_NAME} ({version}) ")),
        "packaging/deb/changelog's first entry {first:?} is not version {version}"
    );
}

/// lintian at every level finds nothing but the tags that packaging/deb/lintian-overrides
/// overrides, each of which packaging/README.md explains.
#[test]
fn lintian_finds_nothing_unexplained() {
    if !have("lintian") {
        skip_or_fail("lintian", "apt-get install lintian");
        return;
    }
    let readme =
        std::fs::read_to_string(lava_multinode_tests::workspace_root().join("packaging/README.md"))
            .unwrap();
    for deb in [Some(deb()), deb_arm64()].into_iter().flatten() {
        let report = lintian(deb);
        // A spelling "error" in machine code comes and goes with the code (and the
        // architecture): its override may go unused without anything wrong in the package.
        let unexplained: Vec<&String> = report
            .unexplained
            .iter()
            .filter(|l| !l.contains("unused-override spelling-error-in-binary"))
            .collect();
        assert!(
            unexplained.is_empty(),
            "{}: lintian tags neither fixed nor overridden (packaging/deb/lintian-overrides and packaging/README.md):\n{}",
            deb.display(),
            unexplained.iter().map(|l| l.as_str()).collect::<Vec<_>>().join("\n")
        );
        for line in &report.overridden {
            let tag = line.split_whitespace().nth(2).expect("O: PACKAGE: TAG");
            assert!(
                readme.contains(&format!("| `{tag}")),
                "packaging/README.md does not explain the override of {tag}"
            );
        }
    }
}

/// The arm64 package: the same files, modes and control fields as the host's but for the
/// architecture, and an aarch64 binary (dynamically linked against glibc, as on amd64) that
/// runs under qemu-aarch64-static with Debian's arm64 cross libc and answers a request.
#[test]
fn arm64_deb_holds_an_aarch64_coordinator() {
    let Some(arm64) = deb_arm64() else { return };
    let host = deb();
    assert_eq!(control_field(arm64, "Architecture"), "arm64");
    for field in [
        "Package",
        "Version",
        "Conflicts",
        "Replaces",
        "Provides",
        "Recommends",
        "Section",
    ] {
        assert_eq!(
            control_field(arm64, field),
            control_field(host, field),
            "{field}"
        );
    }
    let depends = control_field(arm64, "Depends");
    assert!(
        depends.starts_with("libc6 (>= ") && !depends.contains(':'),
        "Depends: {depends}"
    );
    for file in ["conffiles", "postinst", "prerm", "postrm"] {
        assert_eq!(
            control_file(arm64, file),
            control_file(host, file),
            "{file}"
        );
    }
    // The same paths and modes (sizes differ for the binary only).
    let listing = |deb: &Path| -> Vec<(String, String)> {
        contents(deb)
            .into_iter()
            .map(|(mode, path, _)| (mode, path))
            .collect()
    };
    assert_eq!(listing(arm64), listing(host));

    let dir = TempDir::new("deb-arm64");
    let root = dir.path().join("root");
    extract(arm64, &root);
    let binary = at(&root, "/usr/bin/lava-coordinator");
    let info = run_ok(Command::new("file").arg("-b").arg(&binary));
    assert!(info.contains("ARM aarch64"), "{info}");
    let qemu = Path::new(lava_multinode_tests::tools::QEMU_AARCH64);
    let sysroot = Path::new("/usr/aarch64-linux-gnu");
    if !qemu.exists() || !sysroot.join("lib/ld-linux-aarch64.so.1").exists() {
        skip_or_fail(
            "running the arm64 coordinator",
            "apt-get install qemu-user-static libc6-dev-arm64-cross",
        );
        return;
    }
    let under_qemu = || {
        let mut cmd = Command::new(qemu);
        cmd.arg("-L").arg(sysroot).arg(&binary);
        cmd
    };
    let version = run_ok(under_qemu().arg("--version"));
    assert!(version.contains(env!("CARGO_PKG_VERSION")), "{version}");
    let (server, addr) = start_on_free_port(|addr| {
        let mut cmd = under_qemu();
        cmd.arg("--config")
            .arg(at(&root, CONF))
            .args(["--listen", addr, "--state", ":memory:"]);
        cmd
    });
    answers_one_request(&addr);
    assert!(server.terminate().success());
}

#[test]
fn extracted_binary_runs_and_answers() {
    let (dir, root) = extracted();
    let binary = at(&root, "/usr/bin/lava-coordinator");
    let help = run_ok(Command::new(&binary).arg("--help"));
    for option in ["--config", "--logfile", "--loglevel", "--listen", "--state"] {
        assert!(help.contains(option), "--help lacks {option}:\n{help}");
    }
    let version = run_ok(Command::new(&binary).arg("--version"));
    assert!(version.contains(env!("CARGO_PKG_VERSION")), "{version}");

    // The shipped configuration is Debian's, and ours reads it.
    let conf = at(&root, CONF);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&conf).unwrap()).expect("JSON conf");
    assert_eq!(json["port"], 3079);
    let log = dir.path().join("coordinator.log");
    let (server, addr) = start_on_free_port(|addr| {
        let mut cmd = Command::new(&binary);
        cmd.arg("--config")
            .arg(&conf)
            .args(["--listen", addr, "--state", ":memory:", "--logfile"])
            .arg(&log);
        cmd
    });
    answers_one_request(&addr);
    let status = server.terminate();
    assert!(status.success(), "exit status after SIGTERM: {status}");
    assert!(std::fs::read_to_string(&log).is_ok_and(|l| !l.is_empty()));
}

#[test]
fn man_page_documents_the_real_command_line() {
    let (_dir, root) = extracted();
    let page = run_ok(Command::new("gzip").arg("-dc").arg(at(&root, MAN)));
    assert!(page.contains(".TH lava-coordinator 1"), "{page:.300}");
    // Every long option that --help lists is in the page (clap_mangen escapes '-' as '\-').
    let help = run_ok(Command::new(at(&root, "/usr/bin/lava-coordinator")).arg("--help"));
    let page = page.replace("\\-", "-");
    for word in help.split_whitespace() {
        let option = word.trim_end_matches(',');
        if option.starts_with("--") && option.len() > 2 && !option.contains('<') {
            assert!(page.contains(option), "the man page lacks {option}");
        }
    }
    for word in [
        "CONFIGURATION",
        "block_max",
        "FILES",
        "/var/lib/lava-coordinator/state.db",
    ] {
        assert!(page.contains(word), "the man page lacks {word}");
    }
}

#[test]
fn unit_runs_the_service_as_documented() {
    let (dir, root) = extracted();
    let unit = std::fs::read_to_string(at(&root, UNIT)).unwrap();
    let one = |key: &str| {
        let v = unit_values(&unit, "Service", key);
        assert_eq!(v.len(), 1, "{key}: {v:?}");
        v[0].clone()
    };
    assert_eq!(one("Restart"), "on-failure");
    assert_eq!(one("DynamicUser"), "yes");
    assert_eq!(one("StateDirectory"), "lava-coordinator");
    assert_eq!(one("LogsDirectory"), "lava-coordinator");
    for key in [
        "NoNewPrivileges",
        "ProtectHome",
        "PrivateTmp",
        "PrivateDevices",
        "RestrictNamespaces",
        "RestrictSUIDSGID",
        "LockPersonality",
        "MemoryDenyWriteExecute",
    ] {
        assert_eq!(one(key), "yes", "{key}");
    }
    assert_eq!(one("ProtectSystem"), "strict");
    assert_eq!(one("RestrictAddressFamilies"), "AF_INET AF_INET6 AF_UNIX");
    assert_eq!(one("CapabilityBoundingSet"), "");
    // Debian's hooks, so existing LOGLEVEL settings keep working.
    let env_files = unit_values(&unit, "Service", "EnvironmentFile");
    assert_eq!(
        env_files,
        [
            "-/etc/default/lava-coordinator",
            "-/etc/lava-coordinator/lava-coordinator"
        ]
    );
    assert_eq!(
        unit_values(&unit, "Install", "WantedBy"),
        ["multi-user.target"]
    );

    // The ExecStart command line itself, with the service's paths moved into a scratch
    // folder, the environment's defaults, and a loopback address through the args hook.
    let exec = one("ExecStart");
    assert!(
        exec.contains("--state /var/lib/lava-coordinator/state.db"),
        "{exec}"
    );
    assert!(
        exec.contains("--logfile /var/log/lava-coordinator/lava-coordinator.log"),
        "{exec}"
    );
    let state_dir = dir.path().join("var-lib");
    let logs_dir = dir.path().join("var-log");
    std::fs::create_dir_all(&state_dir).unwrap();
    std::fs::create_dir_all(&logs_dir).unwrap();
    let (server, _addr) = start_on_free_port(|addr| {
        let words: Vec<String> = exec
            .split_whitespace()
            .flat_map(|word| match word {
                "${LOGLEVEL}" => vec!["INFO".to_owned()],
                "$LAVA_COORDINATOR_ARGS" => vec!["--listen".to_owned(), addr.to_owned()],
                w => vec![w
                    .replace("/usr/bin/", &format!("{}/usr/bin/", root.display()))
                    .replace("/etc/", &format!("{}/etc/", root.display()))
                    .replace(
                        "/var/lib/lava-coordinator/",
                        &format!("{}/", state_dir.display()),
                    )
                    .replace(
                        "/var/log/lava-coordinator/",
                        &format!("{}/", logs_dir.display()),
                    )],
            })
            .collect();
        let mut cmd = Command::new(&words[0]);
        cmd.args(&words[1..]);
        cmd
    });
    answers_one_request(&_addr);
    assert!(server.terminate().success());
    assert!(state_dir.join("state.db").exists(), "no state file");
    let log = std::fs::read_to_string(logs_dir.join("lava-coordinator.log")).unwrap();
    assert!(!log.is_empty(), "empty log");
}

#[test]
fn unit_passes_systemd_analyze_verify() {
    if !have("systemd-analyze") {
        notice("SKIPPED systemd-analyze verify: systemd-analyze is not installed here (apt-get install systemd)");
        return;
    }
    let (dir, root) = extracted();
    // The unit as shipped, except that ExecStart names the extracted binary, so that verify's
    // check of the executable is about our package and not whatever /usr/bin holds here.
    let unit = std::fs::read_to_string(at(&root, UNIT)).unwrap().replace(
        "ExecStart=/usr/bin/lava-coordinator",
        &format!(
            "ExecStart={}",
            at(&root, "/usr/bin/lava-coordinator").display()
        ),
    );
    let copy = dir.path().join("lava-coordinator.service");
    std::fs::write(&copy, unit).unwrap();
    let out = run(Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&copy));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let cannot_run = ["sysinit.target not found", "Failed to initialize manager"];
    if !out.status.success()
        && (!stderr.contains("lava-coordinator.service:")
            || cannot_run.iter().any(|m| stderr.contains(m)))
    {
        // verify could not set up its unit manager (no systemd units installed here): it says
        // nothing about our unit.
        notice(&format!(
            "SKIPPED systemd-analyze verify: it cannot run here: {}",
            stderr.trim()
        ));
        return;
    }
    // verify exits 0 even for unknown keys or bad values: any line about our unit fails.
    let complaints: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("lava-coordinator.service"))
        .collect();
    assert!(
        out.status.success() && complaints.is_empty(),
        "systemd-analyze verify ({}):\n{stderr}",
        out.status
    );
}

#[test]
fn logrotate_accepts_the_snippet() {
    if !have("logrotate") {
        notice(
            "SKIPPED logrotate check: logrotate is not installed here (apt-get install logrotate)",
        );
        return;
    }
    let (dir, root) = extracted();
    let snippet = std::fs::read_to_string(at(&root, LOGROTATE)).unwrap();
    assert!(snippet.contains("/var/log/lava-coordinator/lava-coordinator.log"));
    // The coordinator does not reopen its log (and SIGHUP would stop it): copy and truncate.
    assert!(snippet.contains("copytruncate"));
    assert!(!snippet.contains("postrotate"));
    // A real rotation, on a log in a scratch folder, with a state file of its own.
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let log = logs.join("lava-coordinator.log");
    std::fs::write(&log, "line\n").unwrap();
    let conf = dir.path().join("logrotate.conf");
    std::fs::write(
        &conf,
        snippet.replace(
            "/var/log/lava-coordinator/",
            &format!("{}/", logs.display()),
        ),
    )
    .unwrap();
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = run(Command::new("logrotate")
        .args(["--force", "--verbose", "--state"])
        .arg(dir.path().join("logrotate.state"))
        .arg(&conf));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !text.contains("error"), "{text}");
    assert!(logs.join("lava-coordinator.log.1").exists(), "{text}");
    assert_eq!(std::fs::metadata(&log).unwrap().len(), 0, "not truncated");
}

/// Debian's conffiles that our package takes over are byte for byte Debian's defaults (the
/// fixture holds them): dpkg then hands them over without a question and keeps edits.
#[test]
fn conffiles_are_debians_defaults() {
    let (_dir, root) = extracted();
    for path in [CONF, ENV_FILE] {
        let ours = std::fs::read(at(&root, path)).unwrap();
        let debians = std::fs::read(at(&debian_fixture_tree(), path)).unwrap();
        assert!(ours == debians, "{path} differs from Debian's default");
    }
}

/// The machine's dpkg log from `offset` on (all of it when it was rotated meanwhile).
fn machine_dpkg_log_since(offset: u64) -> String {
    let log = std::fs::read("/var/log/dpkg.log").unwrap_or_default();
    let from = if (log.len() as u64) < offset {
        0
    } else {
        offset as usize
    };
    String::from_utf8_lossy(&log[from..]).into_owned()
}

/// A lab's switch, replayed with `dpkg --root` in a scratch root: Debian's lava-coordinator
/// (the fixture: Debian's conffiles, unit and maintainer scripts), edited conffiles, then our
/// package: dpkg removes Debian's without a question, keeps the edits, the unit stays
/// enabled; removing and purging ours leaves nothing behind. dpkg logs into the scratch root:
/// the machine's /var/log/dpkg.log gets no line about either package.
#[test]
fn dpkg_root_switch_from_debians_package() {
    if !is_root() {
        notice("SKIPPED dpkg --root switch: needs root");
        return;
    }
    if Path::new("/run/systemd/system").exists() {
        notice("SKIPPED dpkg --root switch: systemd runs here, and Debian's maintainer scripts would act on it");
        return;
    }
    let machine_log_len = std::fs::metadata("/var/log/dpkg.log").map_or(0, |m| m.len());
    let dir = TempDir::new("dpkg-root");
    let debian_deb = build_debian_fixture_package(dir.path());
    let root = dir.path().join("root");
    init_dpkg_root(&root);
    run_ok(dpkg_root(&root).arg("-i").arg(&debian_deb));
    assert_eq!(package_status(&root, "lava-coordinator"), "installed");
    let wants = at(
        &root,
        "/etc/systemd/system/multi-user.target.wants/lava-coordinator.service",
    );
    assert!(
        wants.symlink_metadata().is_ok(),
        "Debian's postinst did not enable it"
    );

    // An operator's edits, in the files Debian's package documents.
    let conf = at(&root, CONF);
    let edited_conf = std::fs::read_to_string(&conf)
        .unwrap()
        .replace("\"localhost\"", "\"coordinator.lab.example\"");
    std::fs::write(&conf, &edited_conf).unwrap();
    let env_file = at(&root, ENV_FILE);
    let mut env = std::fs::read_to_string(&env_file).unwrap();
    env.push_str("LOGLEVEL=\"WARN\"\n");
    std::fs::write(&env_file, &env).unwrap();

    // The switch: one package, no prompt (standard input is /dev/null: a prompt fails).
    run_ok(dpkg_root(&root).arg("-i").arg(deb()));
    assert_eq!(package_status(&root, DEB_NAME), "installed");
    assert_eq!(package_status(&root, "lava-coordinator"), "config-files");
    assert_eq!(std::fs::read_to_string(&conf).unwrap(), edited_conf);
    assert_eq!(std::fs::read_to_string(&env_file).unwrap(), env);
    let binary = at(&root, "/usr/bin/lava-coordinator");
    let version = run_ok(Command::new(&binary).arg("--version"));
    assert!(version.contains(env!("CARGO_PKG_VERSION")), "{version}");
    let unit = std::fs::read_to_string(at(&root, UNIT)).unwrap();
    assert!(unit.contains("DynamicUser=yes"), "the unit is not ours");
    assert!(
        wants.symlink_metadata().is_ok(),
        "the unit is no longer enabled"
    );
    assert!(!at(&root, "/usr/lib/python3/dist-packages/lava/coordinator").exists());

    // Remove and purge ours: the files, the state and the enablement go.
    let state = at(&root, "/var/lib/private/lava-coordinator");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join("state.db"), "x").unwrap();
    run_ok(dpkg_root(&root).arg("-r").arg(DEB_NAME));
    assert!(!binary.exists() && !at(&root, UNIT).exists());
    assert!(conf.exists(), "remove must keep the conffiles");
    run_ok(dpkg_root(&root).arg("-P").arg(DEB_NAME));
    assert!(!conf.exists() && !env_file.exists() && !at(&root, LOGROTATE).exists());
    assert!(!state.exists(), "purge must delete the state");
    assert!(
        wants.symlink_metadata().is_err(),
        "purge must forget the enablement"
    );

    // Every step was logged, in the scratch root's log only.
    let log = std::fs::read_to_string(dpkg_root_log(&root)).expect("the scratch root's dpkg log");
    for line in [
        "install lava-coordinator:all <none> 2023.01-2+fixture",
        &format!("install {DEB_NAME}:"),
        &format!("purge {DEB_NAME}:"),
    ] {
        assert!(log.contains(line), "no {line:?} in the scratch log:\n{log}");
    }
    let machine = machine_dpkg_log_since(machine_log_len);
    let leaked: Vec<&str> = machine
        .lines()
        .filter(|l| l.contains(DEB_NAME) || l.contains("2023.01-2+fixture"))
        .collect();
    assert!(leaked.is_empty(), "the machine's dpkg.log got: {leaked:#?}");
}

#[test]
fn tools_tarballs_hold_the_static_binaries_and_links() {
    let tarballs = tools_tarballs();
    let triples: Vec<&str> = tarballs.iter().map(|(t, _)| t.as_str()).collect();
    for &(required, _) in STATIC_BUILDS {
        if !triples.contains(&required) {
            assert!(
                !static_required(),
                "{REQUIRE_STATIC_ENV}=1 but dist/{required}/lava-multinode is missing"
            );
            notice(&format!(
                "SKIPPED tarball of {required}: packaging/build-static.sh has not built it"
            ));
        }
    }
    let version = env!("CARGO_PKG_VERSION");
    for (triple, tarball) in tarballs {
        let top = format!("lava-multinode-{version}-{triple}");
        let listing = run_ok(Command::new("tar").arg("-tvzf").arg(tarball));
        let entry = |name: &str| {
            listing
                .lines()
                .find(|l| {
                    l.ends_with(&format!(" {top}/bin/{name}"))
                        || l.contains(&format!(" {top}/bin/{name} -> "))
                })
                .unwrap_or_else(|| panic!("{}: no bin/{name}:\n{listing}", tarball.display()))
                .to_owned()
        };
        let bin = entry("lava-multinode");
        assert!(bin.starts_with("-rwxr-xr-x"), "{bin}");
        assert!(bin.contains(" 0/0 "), "{bin}");
        for link in TOOL_LINKS {
            let line = entry(link);
            assert!(
                line.starts_with('l') && line.ends_with(&format!("{link} -> lava-multinode")),
                "{line}"
            );
        }
        // The binary is the static one that build-static.sh made.
        let dir = TempDir::new("tarball");
        run_ok(
            Command::new("tar")
                .arg("-xzf")
                .arg(tarball)
                .arg("-C")
                .arg(dir.path()),
        );
        let extracted = dir.path().join(&top).join("bin/lava-multinode");
        let built = tarball
            .parent()
            .unwrap()
            .join(triple)
            .join("lava-multinode");
        assert!(
            std::fs::read(&extracted).unwrap() == std::fs::read(&built).unwrap(),
            "{} differs from {}",
            extracted.display(),
            built.display()
        );
        let info = run_ok(Command::new("file").arg("-b").arg(&extracted));
        assert!(info.contains("statically linked"), "{triple}: {info}");
        // The host's own build runs through its links, as a test shell calls it.
        if triple.starts_with(std::env::consts::ARCH) {
            let help = run(Command::new(dir.path().join(&top).join("bin/lava-send")).arg("--help"));
            let text = String::from_utf8_lossy(&help.stdout).into_owned()
                + &String::from_utf8_lossy(&help.stderr);
            assert!(help.status.success(), "lava-send --help: {text}");
            assert!(text.contains("lava-send"), "{text}");
        }
    }
}
