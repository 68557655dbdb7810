//! A node's test shells: the `lava_test_shell` actions that concern it, with their test
//! definitions fetched and parsed before anything starts, and what it takes to run them on
//! the host or inside a VM over its console (the files to deliver, the commands to type).
//!
//! Layout on the node (ROOT is `LOG_DIR/host-lava` on the host, `/tmp/lava-GROUP-CLIENT` in a
//! VM: /tmp is writable on most systems, and the name cannot collide):
//! `ROOT/bin/` (the test-shell helpers), `ROOT/environment` (the node's settings, sourced by
//! every run), `ROOT/tests/ID/run.sh` and `install.sh`, ID being `N_name` numbered over the
//! node's test definitions in job order, as LAVA numbers them.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use base64::Engine;

use super::actions::{JobAction, TestdefSource};
use super::job::Job;
use super::testdef::{shell_quote, TestDef, HELPERS};

/// Where the test shells live inside a VM.
pub fn guest_root(group: &str, client: &str) -> String {
    format!("/tmp/lava-{group}-{client}")
}

/// One test definition to run.
#[derive(Debug, Clone)]
pub struct TestRun {
    /// `0_smoke`.
    pub id: String,
    pub def: TestDef,
    /// Where it came from, for messages.
    pub origin: String,
}

/// One `lava_test_shell` action as it concerns one node.
#[derive(Debug, Clone)]
pub struct Shell {
    pub timeout: Option<Duration>,
    pub runs: Vec<TestRun>,
}

/// Reads a test definition: `file://` URL or path, `http(s)://` (with curl), or a file of a
/// git repository (cloned into `work`).
pub fn fetch(source: &TestdefSource, work: &Path, n: usize) -> Result<(String, String), String> {
    match source {
        TestdefSource::Url(url) if url.starts_with("http://") || url.starts_with("https://") => {
            let out = Command::new("curl")
                .args(["-fsSL", "--max-time", "60", url])
                .output()
                .map_err(|e| format!("{url}: cannot run curl: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "{url}: download failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            String::from_utf8(out.stdout)
                .map(|t| (url.clone(), t))
                .map_err(|_| format!("{url}: not UTF-8 text"))
        }
        TestdefSource::Url(url) => {
            let path = url.strip_prefix("file://").unwrap_or(url);
            std::fs::read_to_string(path)
                .map(|t| (url.clone(), t))
                .map_err(|e| format!("{url}: {e}"))
        }
        TestdefSource::Git {
            repo,
            revision,
            testdef,
        } => {
            let dest = work.join(format!("testdef-repo-{n}"));
            let _ = std::fs::remove_dir_all(&dest);
            let git = |args: &[&str]| -> Result<(), String> {
                let out = Command::new("git")
                    .args(args)
                    .output()
                    .map_err(|e| format!("{repo}: cannot run git: {e}"))?;
                if out.status.success() {
                    Ok(())
                } else {
                    Err(format!(
                        "{repo}: git {} failed: {}",
                        args[0],
                        String::from_utf8_lossy(&out.stderr).trim()
                    ))
                }
            };
            let dest_text = dest.display().to_string();
            git(&["clone", "-q", repo, &dest_text])?;
            if let Some(rev) = revision {
                git(&["-C", &dest_text, "checkout", "-q", rev])?;
            }
            let origin = format!("{repo} {testdef}");
            std::fs::read_to_string(dest.join(testdef))
                .map(|t| (origin.clone(), t))
                .map_err(|e| format!("{origin}: {e}"))
        }
    }
}

/// The test shells of the nodes of `role`, in job order; `work` holds fetched repositories.
/// Errors name the action and the definition.
pub fn plan(job: &Job, role: &str, work: &Path) -> Result<Vec<Shell>, String> {
    let mut shells = Vec::new();
    let mut n = 0;
    for (i, action) in job.actions.iter().enumerate() {
        let JobAction::TestShell {
            testdefs, timeout, ..
        } = action
        else {
            continue;
        };
        if !action.applies_to(role) {
            continue;
        }
        let mut runs = Vec::new();
        for (j, source) in testdefs.iter().enumerate() {
            let field = format!(
                "actions[{i}].parameters.testdef_{}[{j}]",
                match source {
                    TestdefSource::Url(_) => "urls",
                    TestdefSource::Git { .. } => "repos",
                }
            );
            let (origin, text) = fetch(source, work, n).map_err(|e| format!("{field}: {e}"))?;
            let def = TestDef::parse(&text, &origin).map_err(|e| format!("{field}: {e}"))?;
            runs.push(TestRun {
                id: format!("{n}_{}", def.name),
                def,
                origin,
            });
            n += 1;
        }
        shells.push(Shell {
            timeout: *timeout,
            runs,
        });
    }
    Ok(shells)
}

/// What LAVA's test shell tells its helpers about the node, as environment variables: its
/// client name, role, the group's roster (`client<TAB>role` lines, as `lava-group` prints them)
/// and the cache file under `root`.
pub fn lava_identity(job: &Job, client: &str, role: &str, root: &str) -> Vec<(String, String)> {
    let roster = job
        .nodes()
        .iter()
        .map(|n| format!("{}\t{}", n.client, n.role))
        .collect::<Vec<_>>()
        .join("\n");
    vec![
        ("LAVA_MULTI_NODE_CACHE".into(), format!("{root}/cache.txt")),
        ("LAVA_HOSTNAME".into(), client.to_owned()),
        ("TARGET_ROLE".into(), role.to_owned()),
        ("LAVA_GROUP".into(), roster),
    ]
}

/// A file to put on a node: path relative to ROOT, text, executable or not.
pub type NodeFile = (String, String, bool);

/// The files of a node's test shells: helpers, environment (its `PATH` entry, if any, a folder
/// put first on PATH), scripts.
pub fn files(shells: &[Shell], root: &str, environment: &[(String, String)]) -> Vec<NodeFile> {
    let mut out: Vec<NodeFile> = HELPERS
        .iter()
        .map(|(name, text)| (format!("bin/{name}"), (*text).to_owned(), true))
        .collect();
    let mut env = String::new();
    // A `PATH` entry is a folder to put first on PATH (after the helpers), not a value.
    let mut path = format!("{}/bin", shell_quote(root));
    for (k, v) in environment {
        if k == "PATH" {
            path.push_str(&format!(":{}", shell_quote(v)));
        } else {
            env.push_str(&format!("export {k}={}\n", shell_quote(v)));
        }
    }
    env.push_str(&format!("export PATH={path}:\"$PATH\"\n"));
    out.push(("environment".into(), env, false));
    for run in shells.iter().flat_map(|s| &s.runs) {
        let dir = format!("{root}/tests/{}", run.id);
        if let Some(install) = run.def.install_script(&dir) {
            out.push((format!("tests/{}/install.sh", run.id), install, false));
        }
        let uuid = format!("{}-{}", run.id, std::process::id());
        out.push((
            format!("tests/{}/run.sh", run.id),
            run.def.run_script(&run.id, &dir, &uuid),
            false,
        ));
    }
    out
}

/// Writes the files under `root` on this machine (the host's test shells).
pub fn write_files(root: &Path, files: &[NodeFile]) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for (rel, text, exec) in files {
        let path = root.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, text)?;
        if *exec {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
        }
    }
    Ok(())
}

/// Longest base64 text typed in one command line: busybox ash edits at most 1024 characters.
const CHUNK: usize = 600;

/// Shell commands that create the files under `root` in a VM, each one line of at most about
/// `CHUNK` characters of data (needs `base64` in the guest, as busybox and coreutils have).
pub fn delivery_commands(root: &str, files: &[NodeFile]) -> Vec<String> {
    let mut dirs: Vec<String> = files
        .iter()
        .filter_map(|(rel, _, _)| Path::new(rel).parent().map(|p| p.display().to_string()))
        .filter(|d| !d.is_empty())
        .map(|d| format!("{root}/{d}"))
        .collect();
    dirs.sort();
    dirs.dedup();
    let mut out = vec![format!("mkdir -p {root} {}", dirs.join(" "))];
    for (rel, text, exec) in files {
        let path = format!("{root}/{rel}");
        let b64 = base64::engine::general_purpose::STANDARD.encode(text);
        let chmod = if *exec {
            format!(" && chmod 755 {path}")
        } else {
            String::new()
        };
        if b64.len() <= CHUNK {
            out.push(format!("echo {b64} | base64 -d > {path}{chmod}"));
            continue;
        }
        out.push(format!(": > {path}.b64"));
        for chunk in b64.as_bytes().chunks(CHUNK) {
            // base64 text is ASCII: any split is valid UTF-8.
            let chunk = String::from_utf8_lossy(chunk);
            out.push(format!("echo {chunk} >> {path}.b64"));
        }
        out.push(format!(
            "base64 -d {path}.b64 > {path} && rm {path}.b64{chmod}"
        ));
    }
    out
}

/// The command that runs test run `id` on a node (install first when it has one). Its exit
/// status is the run's.
pub fn run_command(root: &str, run: &TestRun) -> String {
    let dir = format!("{root}/tests/{}", run.id);
    let install = if run.def.install_steps.is_empty() {
        String::new()
    } else {
        format!("sh {dir}/install.sh && ")
    };
    format!(". {root}/environment && {install}sh -e {dir}/run.sh")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn smoke(steps: &str) -> TestDef {
        TestDef::parse(
            &format!("metadata: {{name: smoke}}\nrun:\n  steps:\n{steps}"),
            "t.yaml",
        )
        .unwrap()
    }

    /// The delivery commands, run by a real shell, recreate every file byte for byte.
    #[test]
    fn delivered_files_arrive_whole() {
        let root = std::env::temp_dir().join(format!("lava-deliver-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let root_text = root.display().to_string();
        let long: String = (0..3000).map(|i| format!("echo line {i} é\n")).collect();
        let shells = [Shell {
            timeout: None,
            runs: vec![TestRun {
                id: "0_smoke".into(),
                def: smoke("    - echo one\n    - lava-test-case a --result pass\n"),
                origin: "t.yaml".into(),
            }],
        }];
        let mut files = files(
            &shells,
            &root_text,
            &[("LAVA_GROUP".into(), "host\thost\nserver-1\tserver".into())],
        );
        files.push(("tests/big.txt".into(), long.clone(), false));
        for cmd in delivery_commands(&root_text, &files) {
            assert!(cmd.len() < 1000, "{} characters", cmd.len());
            let ok = Command::new("sh").arg("-c").arg(&cmd).status().unwrap();
            assert!(ok.success(), "{cmd}");
        }
        assert_eq!(
            std::fs::read_to_string(root.join("tests/big.txt")).unwrap(),
            long
        );
        let out = Command::new("sh")
            .arg("-c")
            .arg(run_command(&root_text, &shells[0].runs[0]))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}");
        assert!(
            stdout.contains("<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=a RESULT=pass>"),
            "{stdout}"
        );
        assert!(stdout.contains("<LAVA_SIGNAL_ENDRUN 0_smoke "), "{stdout}");
        let env = Command::new("sh")
            .arg("-c")
            .arg(format!(
                ". {root_text}/environment && printf %s \"$LAVA_GROUP\""
            ))
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&env.stdout),
            "host\thost\nserver-1\tserver"
        );
        let _ = std::fs::remove_dir_all(&root);
    }

    /// `testdef_repos`: a definition read from a git repository at a revision.
    #[test]
    fn definitions_come_from_git_repositories() {
        let dir = std::env::temp_dir().join(format!("lava-git-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let repo = dir.join("repo");
        std::fs::create_dir_all(repo.join("defs")).unwrap();
        let git = |args: &[&str]| {
            let ok = Command::new("git")
                .args(["-c", "user.name=t", "-c", "user.email=t@t", "-C"])
                .arg(&repo)
                .args(args)
                .output()
                .unwrap();
            assert!(
                ok.status.success(),
                "{args:?}: {}",
                String::from_utf8_lossy(&ok.stderr)
            );
            String::from_utf8_lossy(&ok.stdout).trim().to_owned()
        };
        git(&["init", "-q"]);
        let write = |steps: &str| {
            std::fs::write(
                repo.join("defs/t.yaml"),
                format!("metadata: {{name: from-git}}\nrun:\n  steps: [{steps}]\n"),
            )
            .unwrap();
        };
        write("echo first");
        git(&["add", "."]);
        git(&["commit", "-q", "-m", "first"]);
        let first = git(&["rev-parse", "HEAD"]);
        write("echo second");
        git(&["commit", "-q", "-am", "second"]);
        let source = |revision: Option<String>| TestdefSource::Git {
            repo: repo.display().to_string(),
            revision,
            testdef: "defs/t.yaml".into(),
        };
        let (_, text) = fetch(&source(Some(first)), &dir, 0).unwrap();
        assert!(text.contains("echo first"), "{text}");
        let (origin, text) = fetch(&source(None), &dir, 1).unwrap();
        assert!(text.contains("echo second") && origin.ends_with("defs/t.yaml"));
        let missing = TestdefSource::Git {
            repo: dir.join("nope").display().to_string(),
            revision: None,
            testdef: "t.yaml".into(),
        };
        assert!(fetch(&missing, &dir, 2)
            .unwrap_err()
            .contains("git clone failed"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_failing_step_ends_the_run() {
        let root = std::env::temp_dir().join(format!("lava-fail-{}", std::process::id()));
        let root_text = root.display().to_string();
        let shells = [Shell {
            timeout: None,
            runs: vec![TestRun {
                id: "0_smoke".into(),
                def: smoke("    - 'false'\n    - echo never\n"),
                origin: "t.yaml".into(),
            }],
        }];
        write_files(&root, &files(&shells, &root_text, &[])).unwrap();
        let out = Command::new("sh")
            .arg("-c")
            .arg(run_command(&root_text, &shells[0].runs[0]))
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(!String::from_utf8_lossy(&out.stdout).contains("never"));
        let _ = std::fs::remove_dir_all(&root);
    }
}
