//! The VM group job definition (the seed's JSON or YAML, see docs/VM-GROUPS.md) and the group
//! derived from it: one node for the host and one for every VM, with client names and roles.
//!
//! Naming: the host's client name is its role (`host`); the VMs of a `vms[]` entry of role
//! `R` and `count` N are `R-1` ... `R-N`, in the order of `vms[]`. Roles may hold letters,
//! digits, `.`, `_` and `-` (they end up in client names, shell commands and a kernel
//! command line), and must not end in `-<digits>`, so that no two names can collide.

use std::fmt;

use serde_json::{Map, Value};

pub use super::actions::JobAction;
pub use super::session::Login;

/// What the definition says about one VM entry of `vms[]`.
#[derive(Debug, Clone, PartialEq)]
pub struct VmSpec {
    pub device_type: String,
    pub role: String,
    pub count: u32,
    pub launch_with: Vec<String>,
    /// `shell_prompt`: one prompt or a list; empty when the job gives none.
    pub shell_prompt: Vec<String>,
    pub image: Option<String>,
    /// `auto_login`: how to log in on the console.
    pub auto_login: Option<Login>,
    /// `console_commands`: shell commands typed at the VM's prompt once it is up.
    pub console_commands: Vec<String>,
}

/// A VM group job definition.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub job_name: Option<String>,
    /// The job's `timeout`: the whole run is bounded by it.
    pub timeout: Option<std::time::Duration>,
    /// `actions`, in order.
    pub actions: Vec<JobAction>,
    pub host_device_type: String,
    pub host_role: String,
    /// `vm_group.host.ssh`: the host is reached over ssh (else it is this machine).
    pub host_ssh: Option<super::remote::Remote>,
    pub auto_start_vms: bool,
    pub vms: Vec<VmSpec>,
}

/// One member of the group.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub client: String,
    pub role: String,
    pub device_type: String,
    /// `None` for the host; for a VM, its entry in `vms[]` and its number within it (from 1).
    pub vm: Option<(usize, u32)>,
}

/// An invalid definition: the field (`vm_group.vms[1].count`) and what is wrong with it.
#[derive(Debug, Clone, PartialEq)]
pub struct JobError {
    pub field: String,
    pub problem: String,
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.problem)
    }
}

pub(super) fn err<T>(field: &str, problem: impl Into<String>) -> Result<T, JobError> {
    Err(JobError {
        field: field.to_owned(),
        problem: problem.into(),
    })
}

pub(super) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

pub(super) fn object<'a>(v: &'a Value, field: &str) -> Result<&'a Map<String, Value>, JobError> {
    v.as_object().map_or_else(
        || err(field, format!("must be an object, not {}", kind(v))),
        Ok,
    )
}

fn string(obj: &Map<String, Value>, parent: &str, name: &str) -> Result<String, JobError> {
    let field = format!("{parent}.{name}");
    match obj.get(name) {
        None | Some(Value::Null) => err(&field, "is missing"),
        Some(Value::String(s)) if s.trim().is_empty() => err(&field, "is empty"),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(v) => err(&field, format!("must be a string, not {}", kind(v))),
    }
}

fn optional_string(
    obj: &Map<String, Value>,
    parent: &str,
    name: &str,
) -> Result<Option<String>, JobError> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(_) => string(obj, parent, name).map(Some),
    }
}

/// A string or a list of non-empty strings (absent: empty).
fn strings(obj: &Map<String, Value>, parent: &str, name: &str) -> Result<Vec<String>, JobError> {
    let field = format!("{parent}.{name}");
    match obj.get(name) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) if s.is_empty() => err(&field, "is empty"),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(list)) => list
            .iter()
            .enumerate()
            .map(|(j, v)| match v {
                Value::String(s) if !s.is_empty() => Ok(s.clone()),
                Value::String(_) => err(&format!("{field}[{j}]"), "is empty"),
                v => err(
                    &format!("{field}[{j}]"),
                    format!("must be a string, not {}", kind(v)),
                ),
            })
            .collect(),
        Some(v) => err(
            &field,
            format!("must be a string or a list of strings, not {}", kind(v)),
        ),
    }
}

/// `auto_login`: `login_prompt` and `username` together, then optionally `password_prompt`
/// and `password` together (LAVA v2's fields).
fn login(obj: &Map<String, Value>, parent: &str) -> Result<Option<Login>, JobError> {
    let field = format!("{parent}.auto_login");
    let login = match obj.get("auto_login") {
        None | Some(Value::Null) => return Ok(None),
        Some(v) => object(v, &field)?,
    };
    for key in login.keys() {
        if !["login_prompt", "username", "password_prompt", "password"].contains(&key.as_str()) {
            return err(&format!("{field}.{key}"), "is not a field of auto_login");
        }
    }
    let login_prompt = string(login, &field, "login_prompt")?;
    let username = string(login, &field, "username")?;
    let password_prompt = optional_string(login, &field, "password_prompt")?;
    let password = match login.get("password") {
        None | Some(Value::Null) => None,
        // An empty password is a real one.
        Some(Value::String(s)) => Some(s.clone()),
        Some(v) => {
            return err(
                &format!("{field}.password"),
                format!("must be a string, not {}", kind(v)),
            )
        }
    };
    if password.is_some() != password_prompt.is_some() {
        let missing = if password.is_some() {
            "password_prompt"
        } else {
            "password"
        };
        return err(
            &format!("{field}.{missing}"),
            "is missing: password_prompt and password go together",
        );
    }
    Ok(Some(Login {
        login_prompt,
        username,
        password_prompt,
        password,
    }))
}

/// Roles become parts of client names, shell words and kernel parameters.
fn check_role(role: &str, field: &str) -> Result<(), JobError> {
    if !role
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return err(
            field,
            format!("{role:?} may only hold letters, digits, '.', '_' and '-'"),
        );
    }
    if let Some((_, tail)) = role.rsplit_once('-') {
        if !tail.is_empty() && tail.chars().all(|c| c.is_ascii_digit()) {
            return err(
                field,
                format!("{role:?} must not end in -<number> (VM client names are ROLE-N)"),
            );
        }
    }
    Ok(())
}

/// Most VMs one definition may ask for (a typo's guard, not a real limit of the protocol).
pub const MAX_VMS: u64 = 1000;

impl Job {
    /// Parses a job definition: JSON, or the same structure in YAML.
    pub fn parse(text: &str) -> Result<Job, JobError> {
        let value: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(json) if text.trim_start().starts_with('{') => {
                return err("(job file)", format!("not JSON: {json}"))
            }
            Err(_) => super::yaml::parse(text).map_err(|e| JobError {
                field: "(job file)".into(),
                problem: format!("neither JSON nor YAML: {e}"),
            })?,
        };
        Job::from_value(&value)
    }

    pub fn from_value(value: &Value) -> Result<Job, JobError> {
        let top = object(value, "(job)")?;
        let job_name = match top.get("job_name") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(v) => return err("job_name", format!("must be a string, not {}", kind(v))),
        };
        let vg = match top.get("vm_group") {
            None => return err("vm_group", "is missing (not a VM group job)"),
            Some(v) => object(v, "vm_group")?,
        };
        let host = match vg.get("host") {
            None => return err("vm_group.host", "is missing"),
            Some(v) => object(v, "vm_group.host")?,
        };
        let host_device_type = string(host, "vm_group.host", "device_type")?;
        let host_role = string(host, "vm_group.host", "role")?;
        check_role(&host_role, "vm_group.host.role")?;
        let host_ssh = super::remote::Remote::parse(host.get("ssh"))?;
        let auto_start_vms = match vg.get("auto_start_vms") {
            None | Some(Value::Null) => true,
            Some(Value::Bool(b)) => *b,
            Some(v) => {
                return err(
                    "vm_group.auto_start_vms",
                    format!("must be true or false, not {}", kind(v)),
                )
            }
        };
        let list = match vg.get("vms") {
            None => return err("vm_group.vms", "is missing"),
            Some(Value::Array(list)) => list,
            Some(v) => return err("vm_group.vms", format!("must be a list, not {}", kind(v))),
        };
        if list.is_empty() {
            return err("vm_group.vms", "is empty: a VM group needs at least one VM");
        }
        let mut vms = Vec::new();
        let mut total = 0u64;
        for (i, entry) in list.iter().enumerate() {
            let parent = format!("vm_group.vms[{i}]");
            let obj = object(entry, &parent)?;
            let device_type = string(obj, &parent, "device_type")?;
            let role = string(obj, &parent, "role")?;
            check_role(&role, &format!("{parent}.role"))?;
            let count = match obj.get("count") {
                None | Some(Value::Null) => 1,
                Some(Value::Number(n)) => match n.as_u64() {
                    Some(c) if (1..=MAX_VMS).contains(&c) => c,
                    _ => {
                        return err(
                            &format!("{parent}.count"),
                            format!("must be a whole number from 1 to {MAX_VMS}, not {n}"),
                        )
                    }
                },
                Some(v) => {
                    return err(
                        &format!("{parent}.count"),
                        format!("must be a number, not {}", kind(v)),
                    )
                }
            };
            total += count;
            if total > MAX_VMS {
                return err("vm_group.vms", format!("more than {MAX_VMS} VMs in all"));
            }
            let launch_field = format!("{parent}.launch_with");
            let launch_with = match obj.get("launch_with") {
                None | Some(Value::Null) => Vec::new(),
                // One command as a plain string is accepted too.
                Some(Value::String(s)) => vec![s.clone()],
                Some(Value::Array(cmds)) => {
                    let mut out = Vec::new();
                    for (j, c) in cmds.iter().enumerate() {
                        match c {
                            Value::String(s) if !s.trim().is_empty() => out.push(s.clone()),
                            Value::String(_) => {
                                return err(&format!("{launch_field}[{j}]"), "is empty")
                            }
                            v => {
                                return err(
                                    &format!("{launch_field}[{j}]"),
                                    format!("must be a string, not {}", kind(v)),
                                )
                            }
                        }
                    }
                    out
                }
                Some(v) => {
                    return err(
                        &launch_field,
                        format!("must be a list of commands, not {}", kind(v)),
                    )
                }
            };
            let shell_prompt = strings(obj, &parent, "shell_prompt")?;
            let image = optional_string(obj, &parent, "image")?;
            let auto_login = login(obj, &parent)?;
            let console_commands = strings(obj, &parent, "console_commands")?;
            vms.push(VmSpec {
                device_type,
                role,
                count: count as u32,
                launch_with,
                shell_prompt,
                image,
                auto_login,
                console_commands,
            });
        }
        let timeout = match top.get("timeout") {
            None | Some(Value::Null) => None,
            Some(v) => Some(super::actions::seconds(v, "timeout")?),
        };
        let mut roles = vec![host_role.clone()];
        roles.extend(vms.iter().map(|v: &VmSpec| v.role.clone()));
        let actions = super::actions::parse(top, &roles)?;
        Ok(Job {
            job_name,
            timeout,
            actions,
            host_device_type,
            host_role,
            host_ssh,
            auto_start_vms,
            vms,
        })
    }

    /// 1 (the host) + the sum of the counts.
    pub fn group_size(&self) -> u32 {
        1 + self.vms.iter().map(|v| v.count).sum::<u32>()
    }

    /// Every member: the host first, then the VMs in the order of `vms[]`.
    pub fn nodes(&self) -> Vec<Node> {
        let mut nodes = vec![Node {
            client: self.host_role.clone(),
            role: self.host_role.clone(),
            device_type: self.host_device_type.clone(),
            vm: None,
        }];
        for (i, spec) in self.vms.iter().enumerate() {
            for n in 1..=spec.count {
                nodes.push(Node {
                    client: format!("{}-{n}", spec.role),
                    role: spec.role.clone(),
                    device_type: spec.device_type.clone(),
                    vm: Some((i, n)),
                });
            }
        }
        nodes
    }
}

/// The values a VM's `launch_with` commands may use as `{name}`.
pub const PLACEHOLDERS: [&str; 11] = [
    "coordinator",
    "group",
    "client",
    "role",
    "group_size",
    "host_ip",
    "image",
    "kernel_cmdline",
    "index",
    "device_type",
    "log_dir",
];

/// Replaces `{name}` in `command` by `value(name)` for the names of [`PLACEHOLDERS`]. `{{` and
/// `}}` stand for literal braces, and `${...}` (shell parameter expansion) is left alone. An
/// unknown `{name}`, or a known one without a value (`{image}` with no image), is an error
/// naming it.
pub fn substitute(command: &str, value: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(command.len());
    let mut rest = command;
    while let Some(pos) = rest.find(['{', '}']) {
        out.push_str(&rest[..pos]);
        let tail = &rest[pos..];
        if tail.starts_with("{{") || tail.starts_with("}}") {
            out.push_str(&tail[..1]);
            rest = &tail[2..];
            continue;
        }
        if tail.starts_with('}') || out.ends_with('$') {
            out.push_str(&tail[..1]);
            rest = &tail[1..];
            continue;
        }
        let Some(end) = tail.find('}') else {
            out.push_str(tail);
            rest = "";
            break;
        };
        let name = &tail[1..end];
        let is_word = !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c == '_');
        if !is_word {
            // Not a placeholder (`{a,b}` brace expansion, JSON, ...): kept as written.
            out.push('{');
            rest = &tail[1..];
            continue;
        }
        if !PLACEHOLDERS.contains(&name) {
            return Err(format!(
                "unknown placeholder {{{name}}} (known: {})",
                PLACEHOLDERS.map(|p| format!("{{{p}}}")).join(" ")
            ));
        }
        match value(name) {
            Some(v) => out.push_str(&v),
            None => return Err(format!("{{{name}}} has no value for this VM")),
        }
        rest = &tail[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A value for a kernel command line: quoted when it holds spaces.
pub fn kernel_param(key: &str, value: &str) -> String {
    if value.contains(char::is_whitespace) {
        format!("lava_multinode.{key}=\"{value}\"")
    } else {
        format!("lava_multinode.{key}={value}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The seed's example, trimmed to the `vm_group` part.
    const SEED: &str = r#"{
      "timeout": 18000,
      "job_name": "vm-groups basic test case",
      "vm_group": {
        "host": {"device_type": "arndale", "role": "host"},
        "auto_start_vms": true,
        "vms": [
          {"device_type": "kvm-arm", "role": "server"},
          {"device_type": "kvm-arm", "role": "client"}
        ]
      },
      "actions": []
    }"#;

    #[test]
    fn parses_the_seed_example() {
        let job = Job::parse(SEED).unwrap();
        assert_eq!(job.job_name.as_deref(), Some("vm-groups basic test case"));
        assert_eq!(job.host_role, "host");
        assert_eq!(job.host_device_type, "arndale");
        assert!(job.auto_start_vms);
        assert_eq!(job.vms.len(), 2);
        assert_eq!(job.vms[0].count, 1);
        assert_eq!(job.vms[0].image, None);
        assert!(job.vms[0].launch_with.is_empty());
        assert_eq!(job.group_size(), 3);
        let names: Vec<(String, String)> = job
            .nodes()
            .into_iter()
            .map(|n| (n.client, n.role))
            .collect();
        assert_eq!(
            names,
            [
                ("host", "host"),
                ("server-1", "server"),
                ("client-1", "client")
            ]
            .map(|(c, r)| (c.to_owned(), r.to_owned()))
        );
    }

    #[test]
    fn defaults_and_counts() {
        let job = Job::from_value(&json!({"vm_group": {
            "host": {"device_type": "x86", "role": "hv"},
            "vms": [
                {"device_type": "kvm", "role": "worker", "count": 3,
                 "launch_with": ["true", "qemu {image}"], "shell_prompt": "# ", "image": "a.img"},
                {"device_type": "qemu", "role": "db", "launch_with": "qemu-db"}
            ]
        }}))
        .unwrap();
        assert!(job.auto_start_vms, "auto_start_vms defaults to true");
        assert_eq!(job.group_size(), 5);
        let nodes = job.nodes();
        assert_eq!(nodes[0].vm, None);
        assert_eq!(nodes[3].client, "worker-3");
        assert_eq!(nodes[3].vm, Some((0, 3)));
        assert_eq!(nodes[4].client, "db-1");
        assert_eq!(nodes[4].device_type, "qemu");
        assert_eq!(job.vms[1].launch_with, ["qemu-db"]);
        assert_eq!(job.vms[0].shell_prompt, ["# "]);
    }

    #[test]
    fn errors_name_the_field() {
        let field = |v: Value| Job::from_value(&v).unwrap_err().field;
        let host = json!({"device_type": "x", "role": "host"});
        let vm = json!({"device_type": "kvm", "role": "guest"});
        assert_eq!(field(json!([])), "(job)");
        assert_eq!(field(json!({})), "vm_group");
        assert_eq!(field(json!({"vm_group": {"vms": [vm]}})), "vm_group.host");
        assert_eq!(
            field(json!({"vm_group": {"host": {"role": "h"}, "vms": [vm]}})),
            "vm_group.host.device_type"
        );
        assert_eq!(
            field(json!({"vm_group": {"host": {"device_type": "x", "role": ""}, "vms": [vm]}})),
            "vm_group.host.role"
        );
        assert_eq!(
            field(json!({"vm_group": {"host": host, "auto_start_vms": "yes", "vms": [vm]}})),
            "vm_group.auto_start_vms"
        );
        assert_eq!(field(json!({"vm_group": {"host": host}})), "vm_group.vms");
        assert_eq!(
            field(json!({"vm_group": {"host": host, "vms": []}})),
            "vm_group.vms"
        );
        assert_eq!(
            field(json!({"vm_group": {"host": host, "vms": [vm, {"role": "r"}]}})),
            "vm_group.vms[1].device_type"
        );
        assert_eq!(
            field(json!({"vm_group": {"host": host, "vms": [{"device_type": "kvm"}]}})),
            "vm_group.vms[0].role"
        );
        for count in [json!(0), json!(-1), json!(1.5), json!("2"), json!(100_000)] {
            let mut bad = vm.clone();
            bad["count"] = count.clone();
            assert_eq!(
                field(json!({"vm_group": {"host": host, "vms": [bad]}})),
                "vm_group.vms[0].count",
                "{count}"
            );
        }
        let mut bad = vm.clone();
        bad["launch_with"] = json!(["ok", 3]);
        assert_eq!(
            field(json!({"vm_group": {"host": host, "vms": [bad]}})),
            "vm_group.vms[0].launch_with[1]"
        );
        let mut bad = vm.clone();
        bad["launch_with"] = json!({"cmd": "x"});
        assert_eq!(
            field(json!({"vm_group": {"host": host, "vms": [bad]}})),
            "vm_group.vms[0].launch_with"
        );
        let mut bad = vm.clone();
        bad["shell_prompt"] = json!(5);
        assert_eq!(
            field(json!({"vm_group": {"host": host, "vms": [bad]}})),
            "vm_group.vms[0].shell_prompt"
        );
        let mut bad = vm.clone();
        bad["image"] = json!(["a"]);
        assert_eq!(
            field(json!({"vm_group": {"host": host, "vms": [bad]}})),
            "vm_group.vms[0].image"
        );
        let mut bad = vm.clone();
        bad["role"] = json!("a b");
        assert_eq!(
            field(json!({"vm_group": {"host": host, "vms": [bad]}})),
            "vm_group.vms[0].role"
        );
        let mut bad = vm.clone();
        bad["role"] = json!("guest-2");
        let e = Job::from_value(&json!({"vm_group": {"host": host, "vms": [bad]}})).unwrap_err();
        assert_eq!(e.field, "vm_group.vms[0].role");
        assert!(e.problem.contains("-<number>"), "{e}");
        let e = Job::parse("{").unwrap_err();
        assert!(e.to_string().starts_with("(job file): not JSON"), "{e}");
    }

    #[test]
    fn placeholders() {
        let value = |name: &str| match name {
            "client" => Some("vm-1".to_owned()),
            "kernel_cmdline" => Some("lava_multinode.client=vm-1".to_owned()),
            _ => None,
        };
        assert_eq!(
            substitute(
                "qemu -append 'console=ttyS0 {kernel_cmdline}' -name {client}",
                &value
            )
            .unwrap(),
            "qemu -append 'console=ttyS0 lava_multinode.client=vm-1' -name vm-1"
        );
        // Shell expansions, brace lists and escaped braces stay.
        assert_eq!(
            substitute("echo ${HOME} ${client} {a,b} {{client}} }", &value).unwrap(),
            "echo ${HOME} ${client} {a,b} {client} }"
        );
        assert!(substitute("x {bogus}", &value)
            .unwrap_err()
            .contains("unknown placeholder {bogus}"));
        assert!(substitute("x {image}", &value)
            .unwrap_err()
            .contains("{image} has no value"));
        assert_eq!(substitute("open { end", &value).unwrap(), "open { end");
    }

    #[test]
    fn kernel_params_quote_spaces() {
        assert_eq!(kernel_param("role", "server"), "lava_multinode.role=server");
        assert_eq!(kernel_param("group", "a b"), "lava_multinode.group=\"a b\"");
    }
}
