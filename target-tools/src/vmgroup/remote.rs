//! A host reached over ssh (`vm_group.host.ssh`), as LAVA v1 reached its VM-group hosts: the
//! VMs' commands run there and each VM's console streams back through `ssh -tt`; the host's
//! test shells run there too. The launcher itself, its logs and results stay on this machine.
//!
//! Everything the remote host needs is put in one folder there, `/tmp/lava-vm-group-GROUP`:
//! the static `lava-multinode` of its architecture with its links (`bin/`), the deployed
//! images (`images/`), the VMs' overlays and pid files, and the host's test shells.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::{Map, Value};

use super::job::{err, kind, JobError};

/// How to reach the host.
#[derive(Debug, Clone, PartialEq)]
pub struct Remote {
    /// `[user@]host`.
    pub destination: String,
    pub port: Option<u16>,
    pub identity_file: Option<PathBuf>,
    /// `options`: ssh `-o` settings, before (so over) the launcher's own.
    pub options: Vec<String>,
}

/// `'text'` for a POSIX shell.
pub fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

impl Remote {
    /// `vm_group.host.ssh`: a destination, or `{destination, port, identity_file}`.
    pub fn parse(value: Option<&Value>) -> Result<Option<Remote>, JobError> {
        let field = "vm_group.host.ssh";
        let check = |d: &str| -> Result<String, JobError> {
            if d.trim().is_empty() || d.starts_with('-') || d.contains(char::is_whitespace) {
                return err(
                    &format!("{field}.destination"),
                    format!("{d:?} is not [user@]host"),
                );
            }
            Ok(d.to_owned())
        };
        match value {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(d)) => Ok(Some(Remote {
                destination: check(d)?,
                port: None,
                identity_file: None,
                options: Vec::new(),
            })),
            Some(Value::Object(m)) => Self::from_object(m, field, check).map(Some),
            Some(v) => err(
                field,
                format!("must be a destination or an object, not {}", kind(v)),
            ),
        }
    }

    fn from_object(
        m: &Map<String, Value>,
        field: &str,
        check: impl Fn(&str) -> Result<String, JobError>,
    ) -> Result<Remote, JobError> {
        for key in m.keys() {
            if !["destination", "port", "identity_file", "options"].contains(&key.as_str()) {
                return err(&format!("{field}.{key}"), "is not a field of ssh");
            }
        }
        let destination = match m.get("destination") {
            Some(Value::String(d)) => check(d)?,
            None => return err(&format!("{field}.destination"), "is missing"),
            Some(v) => {
                return err(
                    &format!("{field}.destination"),
                    format!("must be a string, not {}", kind(v)),
                )
            }
        };
        let port = match m.get("port") {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_u64().and_then(|p| u16::try_from(p).ok()) {
                Some(p) if p > 0 => Some(p),
                _ => {
                    return err(
                        &format!("{field}.port"),
                        format!("must be a port number, not {v}"),
                    )
                }
            },
        };
        let identity_file = match m.get("identity_file") {
            None | Some(Value::Null) => None,
            Some(Value::String(p)) if !p.is_empty() => Some(PathBuf::from(p)),
            Some(v) => {
                return err(
                    &format!("{field}.identity_file"),
                    format!("must be a path, not {v}"),
                )
            }
        };
        let options = match m.get("options") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(list)) => list
                .iter()
                .enumerate()
                .map(|(i, o)| match o {
                    Value::String(o) if o.contains('=') && !o.starts_with('-') => Ok(o.clone()),
                    v => err(
                        &format!("{field}.options[{i}]"),
                        format!("must be an ssh option as KEY=VALUE, not {v}"),
                    ),
                })
                .collect::<Result<_, _>>()?,
            Some(v) => {
                return err(
                    &format!("{field}.options"),
                    format!("must be a list, not {}", kind(v)),
                )
            }
        };
        Ok(Remote {
            destination,
            port,
            identity_file,
            options,
        })
    }

    /// `ssh` and its options, without the command. `tty`: a terminal on the remote side (a
    /// VM's console), else none.
    fn ssh_words(&self, tty: bool) -> Vec<String> {
        let mut words = vec!["ssh".to_owned()];
        for o in &self.options {
            words.extend(["-o".into(), o.clone()]);
        }
        words.extend(
            [
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=accept-new",
                "-o",
                "ServerAliveInterval=15",
            ]
            .map(String::from),
        );
        if let Some(p) = self.port {
            words.extend(["-p".into(), p.to_string()]);
        }
        if let Some(k) = &self.identity_file {
            words.extend(["-i".into(), k.display().to_string()]);
        }
        words.push(if tty { "-tt" } else { "-T" }.into());
        words.push(self.destination.clone());
        words
    }

    /// A shell command (for `sh -c` here) that runs `command` there.
    pub fn wrap(&self, command: &str, tty: bool) -> String {
        let mut words: Vec<String> = self.ssh_words(tty).iter().map(|w| quote(w)).collect();
        // `exec`: signals to the local ssh reach it, and it ends the remote command with it.
        words.insert(0, "exec".into());
        words.push("--".into());
        words.push(quote(command));
        words.join(" ")
    }

    /// A command (here) that runs `command` there, without a terminal.
    pub fn command(&self, command: &str) -> Command {
        let words = self.ssh_words(false);
        let mut c = Command::new(&words[0]);
        c.args(&words[1..]).arg("--").arg(command);
        c
    }

    /// Runs `command` there and returns its output; a failure says what ran and why.
    pub fn run(&self, command: &str) -> Result<Output, String> {
        let out = self
            .command(command)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run ssh: {e}"))?;
        if out.status.success() {
            Ok(out)
        } else {
            Err(format!(
                "ssh {} {command:?} failed ({}): {}",
                self.destination,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// A command that stores its standard input at `remote_path` there (folder made, made
    /// executable on request): files travel through ssh alone, no scp or sftp needed.
    fn put(&self, remote_path: &str, executable: bool) -> Command {
        let chmod = if executable {
            format!(" && chmod 755 {}", quote(remote_path))
        } else {
            String::new()
        };
        let dir = Path::new(remote_path)
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "/".into());
        let mut c = self.command(&format!(
            "mkdir -p {} && cat > {}{chmod}",
            quote(&dir),
            quote(remote_path)
        ));
        c.stdout(Stdio::null()).stderr(Stdio::piped());
        c
    }

    fn put_done(&self, out: std::io::Result<Output>, what: &str) -> Result<(), String> {
        let out = out.map_err(|e| format!("{what}: ssh: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{what} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// Copies a local file to `remote_path` there, streamed.
    pub fn copy(&self, local: &Path, remote_path: &str, executable: bool) -> Result<(), String> {
        let file = std::fs::File::open(local).map_err(|e| format!("{}: {e}", local.display()))?;
        let what = format!(
            "copying {} to {}:{remote_path}",
            local.display(),
            self.destination
        );
        self.put_done(
            self.put(remote_path, executable).stdin(file).output(),
            &what,
        )
    }

    /// Writes `text` to `remote_path` there.
    pub fn write(&self, text: &str, remote_path: &str, executable: bool) -> Result<(), String> {
        let what = format!("writing {}:{remote_path}", self.destination);
        let mut child = self
            .put(remote_path, executable)
            .stdin(Stdio::piped())
            .spawn()
            .map_err(|e| format!("{what}: cannot run ssh: {e}"))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(text.as_bytes())
                .map_err(|e| format!("{what}: {e}"))?;
        }
        self.put_done(child.wait_with_output(), &what)
    }

    /// The folder of this run there.
    pub fn dir(group: &str) -> String {
        format!("/tmp/lava-vm-group-{group}")
    }
}

/// Puts the static `lava-multinode` of the remote host's architecture, with its links, in
/// `DIR/bin` there, and returns that folder.
pub fn install_tools(remote: &Remote, dir: &str) -> Result<String, String> {
    let arch = remote.run(&format!("mkdir -p {} && uname -m", quote(dir)))?;
    let arch = String::from_utf8_lossy(&arch.stdout).trim().to_owned();
    let arch = match arch.as_str() {
        "armv7l" | "armv7" | "armv8l" => "arm",
        other => other,
    };
    let binary = super::guest_tools::find(arch)?;
    let bin = format!("{dir}/bin");
    remote.copy(&binary, &format!("{bin}/lava-multinode"), true)?;
    remote.run(&format!(
        "{} install --force {}",
        quote(&format!("{bin}/lava-multinode")),
        quote(&bin)
    ))?;
    Ok(bin)
}

/// Copies every deployed file to `DIR/images/` there (each once) and points `deployed` at the
/// copies.
pub fn copy_images(
    remote: &Remote,
    dir: &str,
    deployed: &mut [(String, super::images::Deployed)],
) -> Result<(), String> {
    let mut copied: Vec<(PathBuf, PathBuf)> = Vec::new();
    for (_, d) in deployed.iter_mut() {
        for slot in [
            &mut d.image,
            &mut d.kernel,
            &mut d.ramdisk,
            &mut d.dtb,
            &mut d.rootfs,
        ] {
            let Some(local) = slot.clone() else { continue };
            let there = match copied.iter().find(|(l, _)| *l == local) {
                Some((_, r)) => r.clone(),
                None => {
                    let name = local
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_else(|| "image".into());
                    let there = PathBuf::from(format!("{dir}/images/{}-{name}", copied.len()));
                    remote.copy(&local, &there.display().to_string(), false)?;
                    copied.push((local, there.clone()));
                    there
                }
            };
            *slot = Some(there);
        }
    }
    Ok(())
}

/// Makes `overlay` there, a qcow2 overlay of `base` (its format read from its first bytes).
pub fn overlay(remote: &Remote, base: &Path, overlay: &Path) -> Result<(), String> {
    let (base, overlay) = (
        quote(&base.display().to_string()),
        quote(&overlay.display().to_string()),
    );
    remote
        .run(&format!(
            "f=raw; head -c 4 {base} | grep -q QFI && f=qcow2; \
             qemu-img create -q -f qcow2 -b {base} -F $f {overlay}"
        ))
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_and_wraps() {
        let r = Remote::parse(Some(&json!({"destination": "root@board", "port": 2222,
                                          "identity_file": "/k"})))
        .unwrap()
        .unwrap();
        assert_eq!(
            r.wrap("qemu -x 'a b'", true),
            "exec 'ssh' '-o' 'BatchMode=yes' '-o' 'StrictHostKeyChecking=accept-new' '-o' \
             'ServerAliveInterval=15' '-p' '2222' '-i' '/k' '-tt' 'root@board' -- 'qemu -x '\\''a b'\\'''"
        );
        assert_eq!(
            Remote::parse(Some(&json!("board"))).unwrap().unwrap().port,
            None
        );
        assert!(Remote::parse(None).unwrap().is_none());
        let bad = |v: Value| Remote::parse(Some(&v)).unwrap_err().to_string();
        assert!(bad(json!("-oProxyCommand=x")).starts_with("vm_group.host.ssh.destination"));
        assert!(bad(json!({"destination": "b", "port": 0})).starts_with("vm_group.host.ssh.port"));
        assert!(bad(json!({"destination": "b", "user": "x"})).starts_with("vm_group.host.ssh.user"));
        assert!(bad(json!(5)).starts_with("vm_group.host.ssh:"));
    }
}
