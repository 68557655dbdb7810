//! The seed's `actions`: what a VM-group job does, in order. LAVA v1's commands with their
//! `parameters`; the ones that mean something here are kept, a few that cannot mean anything
//! here are skipped with a reason, every other one refuses the job before anything starts.

use std::time::Duration;

use serde_json::{Map, Value};

use super::job::{err, kind, object, JobError};

/// A test definition's source: a URL or path, or a file in a git repository.
#[derive(Debug, Clone, PartialEq)]
pub enum TestdefSource {
    /// `file://...`, a plain path, or `http(s)://...`.
    Url(String),
    /// `testdef_repos` entry: `git-repo`, optional `revision`, `testdef` (the file in it).
    Git {
        repo: String,
        revision: Option<String>,
        testdef: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum JobAction {
    /// `deploy_linaro_image`: a whole-disk image for the VMs of `role` (all VM roles when
    /// absent).
    DeployImage { role: Option<String>, image: String },
    /// `deploy_linaro_kernel`: a kernel with its ramdisk, device tree and root file system.
    DeployKernel {
        role: Option<String>,
        kernel: String,
        ramdisk: Option<String>,
        dtb: Option<String>,
        rootfs: Option<String>,
    },
    /// `lava_test_shell`: test definitions run on every node of `role` (all when absent).
    TestShell {
        role: Option<String>,
        testdefs: Vec<TestdefSource>,
        timeout: Option<Duration>,
    },
    /// A command that has no effect here, with the reason (logged).
    Skipped {
        command: String,
        reason: &'static str,
    },
}

impl JobAction {
    pub fn role(&self) -> Option<&str> {
        match self {
            JobAction::DeployImage { role, .. }
            | JobAction::DeployKernel { role, .. }
            | JobAction::TestShell { role, .. } => role.as_deref(),
            JobAction::Skipped { .. } => None,
        }
    }

    /// Whether it concerns the nodes of `role`.
    pub fn applies_to(&self, role: &str) -> bool {
        self.role().is_none_or(|r| r == role)
    }
}

/// Commands skipped with a reason: they make sense in LAVA v1's lab, not here.
pub const SKIPPED: [(&str, &str); 4] = [
    (
        "boot_linaro_image",
        "every node boots when its turn comes (the host is up already; VMs start at the gate)",
    ),
    (
        "submit_results",
        "results are written to the log folder (results.yaml, junit.xml)",
    ),
    (
        "submit_results_on_host",
        "results are written to the log folder (results.yaml, junit.xml)",
    ),
    ("dummy_deploy", "nothing to deploy"),
];

/// Commands this launcher runs.
pub const SUPPORTED: [&str; 3] = [
    "deploy_linaro_image",
    "deploy_linaro_kernel",
    "lava_test_shell",
];

fn param_string(
    p: &Map<String, Value>,
    field: &str,
    name: &str,
) -> Result<Option<String>, JobError> {
    match p.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => {
            err(&format!("{field}.{name}"), "is empty")
        }
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(v) => err(
            &format!("{field}.{name}"),
            format!("must be a string, not {}", kind(v)),
        ),
    }
}

fn required(p: &Map<String, Value>, field: &str, name: &str) -> Result<String, JobError> {
    param_string(p, field, name)?.map_or_else(|| err(&format!("{field}.{name}"), "is missing"), Ok)
}

/// A timeout in seconds (a positive number).
pub fn seconds(v: &Value, field: &str) -> Result<Duration, JobError> {
    match v.as_f64() {
        Some(s) if s > 0.0 && s.is_finite() && s < 1e9 => Ok(Duration::from_secs_f64(s)),
        _ => err(
            field,
            format!("must be a positive number of seconds, not {v}"),
        ),
    }
}

/// Parses `actions` (absent: none). `roles`: every role of the group, host's first.
pub fn parse(top: &Map<String, Value>, roles: &[String]) -> Result<Vec<JobAction>, JobError> {
    let list = match top.get("actions") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(list)) => list,
        Some(v) => return err("actions", format!("must be a list, not {}", kind(v))),
    };
    let mut out = Vec::new();
    for (i, entry) in list.iter().enumerate() {
        let field = format!("actions[{i}]");
        let obj = object(entry, &field)?;
        let command = match obj.get("command") {
            Some(Value::String(c)) => c.clone(),
            None => return err(&format!("{field}.command"), "is missing"),
            Some(v) => {
                return err(
                    &format!("{field}.command"),
                    format!("must be a string, not {}", kind(v)),
                )
            }
        };
        let pfield = format!("{field}.parameters");
        let empty = Map::new();
        let p = match obj.get("parameters") {
            None | Some(Value::Null) => &empty,
            Some(v) => object(v, &pfield)?,
        };
        let role = param_string(p, &pfield, "role")?;
        if let Some(r) = &role {
            if !roles.contains(r) {
                return err(
                    &format!("{pfield}.role"),
                    format!(
                        "{r:?} is no role of the group (roles: {})",
                        roles.join(", ")
                    ),
                );
            }
        }
        let action = match command.as_str() {
            "deploy_linaro_image" => JobAction::DeployImage {
                role,
                image: required(p, &pfield, "image")?,
            },
            "deploy_linaro_kernel" => JobAction::DeployKernel {
                role,
                kernel: required(p, &pfield, "kernel")?,
                ramdisk: param_string(p, &pfield, "ramdisk")?,
                dtb: param_string(p, &pfield, "dtb")?,
                rootfs: param_string(p, &pfield, "rootfs")?,
            },
            "lava_test_shell" => {
                let mut testdefs = Vec::new();
                match p.get("testdef_urls") {
                    None | Some(Value::Null) => {}
                    Some(Value::Array(urls)) => {
                        for (j, u) in urls.iter().enumerate() {
                            match u {
                                Value::String(s) if !s.trim().is_empty() => {
                                    testdefs.push(TestdefSource::Url(s.clone()))
                                }
                                v => {
                                    return err(
                                        &format!("{pfield}.testdef_urls[{j}]"),
                                        format!("must be a URL or path, not {}", kind(v)),
                                    )
                                }
                            }
                        }
                    }
                    Some(v) => {
                        return err(
                            &format!("{pfield}.testdef_urls"),
                            format!("must be a list, not {}", kind(v)),
                        )
                    }
                }
                match p.get("testdef_repos") {
                    None | Some(Value::Null) => {}
                    Some(Value::Array(repos)) => {
                        for (j, r) in repos.iter().enumerate() {
                            let rfield = format!("{pfield}.testdef_repos[{j}]");
                            let r = object(r, &rfield)?;
                            let Some(repo) = param_string(r, &rfield, "git-repo")? else {
                                return err(
                                    &format!("{rfield}.git-repo"),
                                    "is missing (only git repositories are supported)",
                                );
                            };
                            testdefs.push(TestdefSource::Git {
                                repo,
                                revision: param_string(r, &rfield, "revision")?,
                                testdef: param_string(r, &rfield, "testdef")?
                                    .unwrap_or_else(|| "lavatest.yaml".into()),
                            });
                        }
                    }
                    Some(v) => {
                        return err(
                            &format!("{pfield}.testdef_repos"),
                            format!("must be a list, not {}", kind(v)),
                        )
                    }
                }
                if testdefs.is_empty() {
                    return err(
                        &pfield,
                        "names no test definition (testdef_urls or testdef_repos)",
                    );
                }
                let timeout = match p.get("timeout") {
                    None | Some(Value::Null) => None,
                    Some(v) => Some(seconds(v, &format!("{pfield}.timeout"))?),
                };
                JobAction::TestShell {
                    role,
                    testdefs,
                    timeout,
                }
            }
            other => match SKIPPED.iter().find(|(c, _)| *c == other) {
                Some((_, reason)) => JobAction::Skipped {
                    command: other.to_owned(),
                    reason,
                },
                None => {
                    return err(
                        &format!("{field}.command"),
                        format!(
                            "{other:?} is not supported (supported: {}; skipped: {})",
                            SUPPORTED.join(", "),
                            SKIPPED.map(|(c, _)| c).join(", ")
                        ),
                    )
                }
            },
        };
        out.push(action);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn roles() -> Vec<String> {
        vec!["host".into(), "server".into(), "client".into()]
    }

    fn parse_list(actions: Value) -> Result<Vec<JobAction>, JobError> {
        let top = json!({ "actions": actions });
        parse(top.as_object().unwrap(), &roles())
    }

    #[test]
    fn the_seeds_actions() {
        let actions = parse_list(json!([
            {"command": "deploy_linaro_image", "parameters": {"image": "file:///i.img", "role": "client"}},
            {"command": "deploy_linaro_kernel", "parameters": {"kernel": "k", "ramdisk": "r.gz"}},
            {"command": "lava_test_shell", "parameters": {"testdef_urls": ["file:///t.yaml"], "timeout": 900}},
            {"command": "submit_results", "parameters": {"server": "x"}},
        ]))
        .unwrap();
        assert_eq!(
            actions[0],
            JobAction::DeployImage {
                role: Some("client".into()),
                image: "file:///i.img".into()
            }
        );
        assert!(actions[1].applies_to("server") && actions[1].applies_to("host"));
        assert_eq!(
            actions[2],
            JobAction::TestShell {
                role: None,
                testdefs: vec![TestdefSource::Url("file:///t.yaml".into())],
                timeout: Some(Duration::from_secs(900))
            }
        );
        assert!(matches!(actions[3], JobAction::Skipped { .. }));
    }

    #[test]
    fn bad_actions_name_the_field() {
        let problem = |a: Value| parse_list(a).unwrap_err().to_string();
        assert!(problem(json!([{"command": "boot_linaro_android_image"}]))
            .starts_with("actions[0].command: \"boot_linaro_android_image\" is not supported"));
        assert_eq!(
            problem(json!([{"command": "deploy_linaro_image", "parameters": {"role": "server"}}])),
            "actions[0].parameters.image: is missing"
        );
        assert!(problem(json!([{"command": "lava_test_shell", "parameters": {"testdef_urls": ["a"], "role": "nobody"}}]))
            .starts_with("actions[0].parameters.role: \"nobody\" is no role"));
        assert!(
            problem(json!([{"command": "lava_test_shell", "parameters": {}}]))
                .contains("names no test definition")
        );
        assert_eq!(
            problem(
                json!([{"command": "lava_test_shell", "parameters": {"testdef_urls": ["a"], "timeout": -1}}])
            ),
            "actions[0].parameters.timeout: must be a positive number of seconds, not -1"
        );
        assert_eq!(problem(json!({})), "actions: must be a list, not an object");
    }
}
