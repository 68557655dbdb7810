//! LAVA test definitions and the scripts that run them, as LAVA's test runner writes them:
//! `install.sh` (the `install: steps`; `deps` are reported, not installed) and `run.sh`
//! (the definition's `params` as shell variables, then `set -e`, the STARTRUN signal, every
//! `run: steps` line in order in one shell, the ENDRUN signal), plus the test-shell helpers
//! `lava-test-case` and `lava-test-set`, which print LAVA's signals.

use serde_json::Value;

use super::yaml;

/// A parsed test definition.
#[derive(Debug, Clone, PartialEq)]
pub struct TestDef {
    pub name: String,
    pub install_steps: Vec<String>,
    /// `install: deps`: packages the definition wants; reported only.
    pub deps: Vec<String>,
    pub run_steps: Vec<String>,
    /// `parse: pattern` with its `fixupdict` (result words mapped to LAVA's).
    pub pattern: Option<String>,
    pub fixupdict: Vec<(String, String)>,
    /// `params` (and `parameters`): defaults, as shell variables.
    pub params: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("test definition {origin}: {problem}")]
pub struct TestDefError {
    /// Where it came from (URL, path).
    pub origin: String,
    pub problem: String,
}

fn strings(v: Option<&Value>, field: &str) -> Result<Vec<String>, String> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .filter(|i| !i.is_null())
            .map(|i| match i {
                Value::String(s) => Ok(s.clone()),
                Value::Number(n) => Ok(n.to_string()),
                Value::Bool(b) => Ok(b.to_string()),
                other => Err(format!("{field}: every item must be a string, not {other}")),
            })
            .collect(),
        Some(other) => Err(format!("{field}: must be a list, not {other}")),
    }
}

fn scalar_text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl TestDef {
    /// Parses a definition's YAML text; `source` names it in errors.
    pub fn parse(text: &str, source: &str) -> Result<TestDef, TestDefError> {
        let fail = |problem: String| TestDefError {
            origin: source.to_owned(),
            problem,
        };
        let doc = yaml::parse(text).map_err(|e| fail(format!("not YAML: {e}")))?;
        let top = doc
            .as_object()
            .ok_or_else(|| fail("must be a mapping (metadata, run, ...)".into()))?;
        let name = top
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
            .filter(|n| !n.trim().is_empty())
            .ok_or_else(|| fail("metadata.name is missing".into()))?;
        if name == "lava" {
            return Err(fail("the name \"lava\" is reserved".into()));
        }
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Err(fail(format!(
                "metadata.name {name:?} may only hold letters, digits, '.', '_' and '-'"
            )));
        }
        let install = top.get("install");
        let run = top.get("run");
        let run_steps = strings(run.and_then(|r| r.get("steps")), "run.steps").map_err(fail)?;
        if run_steps.is_empty() {
            return Err(fail("run.steps is missing or empty".into()));
        }
        let parse = top.get("parse");
        let pattern = parse
            .and_then(|p| p.get("pattern"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        if let Some(p) = &pattern {
            regex::Regex::new(p).map_err(|e| fail(format!("parse.pattern: {e}")))?;
        }
        let fixupdict = parse
            .and_then(|p| p.get("fixupdict"))
            .and_then(Value::as_object)
            .map(|m| m.iter().map(|(k, v)| (k.clone(), scalar_text(v))).collect())
            .unwrap_or_default();
        let mut params = Vec::new();
        for key in ["params", "parameters"] {
            match top.get(key) {
                None | Some(Value::Null) => {}
                Some(Value::Object(m)) => {
                    for (k, v) in m {
                        if !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                            return Err(fail(format!("{key}.{k}: not a shell variable name")));
                        }
                        params.push((k.clone(), scalar_text(v)));
                    }
                }
                Some(_) => return Err(fail(format!("{key}: must be a mapping"))),
            }
        }
        Ok(TestDef {
            name: name.to_owned(),
            install_steps: strings(install.and_then(|i| i.get("steps")), "install.steps")
                .map_err(fail)?,
            deps: strings(install.and_then(|i| i.get("deps")), "install.deps").map_err(fail)?,
            run_steps,
            pattern,
            fixupdict,
            params,
        })
    }

    fn params_text(&self) -> String {
        let mut out = String::from("###default parameters from test definition###\n");
        for (k, v) in &self.params {
            out.push_str(&format!("{k}={}\n", shell_quote(v)));
        }
        out.push_str("######\n");
        out
    }

    /// `install.sh`, when the definition has install steps.
    pub fn install_script(&self, dir: &str) -> Option<String> {
        if self.install_steps.is_empty() {
            return None;
        }
        let mut out = self.params_text();
        out.push_str(&format!("cd {}\n", shell_quote(dir)));
        for step in &self.install_steps {
            out.push_str(step);
            out.push('\n');
        }
        Some(out)
    }

    /// `run.sh` of test run `testrun_id` (`0_smoke`) in folder `dir`, as LAVA writes it.
    pub fn run_script(&self, testrun_id: &str, dir: &str, uuid: &str) -> String {
        let mut out = self.params_text();
        out.push_str("set -e\nset -x\n");
        out.push_str(&format!("export TESTRUN_ID={testrun_id}\n"));
        out.push_str(&format!("cd {}\n", shell_quote(dir)));
        out.push_str(&format!("UUID={uuid}\n"));
        out.push_str("set +x\necho \"<LAVA_SIGNAL_STARTRUN $TESTRUN_ID $UUID>\"\nset -x\n");
        for step in &self.run_steps {
            out.push_str(step);
            out.push('\n');
        }
        out.push_str("set +x\necho \"<LAVA_SIGNAL_ENDRUN $TESTRUN_ID $UUID>\"\n");
        out
    }
}

/// `'text'` for sh.
pub fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// The test-shell helpers, as (file name, script). They print LAVA's signal lines, which the
/// launcher reads from the node's output.
pub const HELPERS: [(&str, &str); 2] = [
    (
        "lava-test-case",
        r#"#!/bin/sh
# lava-test-case NAME --result pass|fail|skip|unknown [--measurement M] [--units U]
# lava-test-case NAME --shell COMMAND...
usage() {
    echo "Usage: lava-test-case NAME --result pass|fail|skip|unknown [--measurement M] [--units U]" >&2
    echo "   or: lava-test-case NAME --shell COMMAND..." >&2
    exit 1
}
[ -n "$1" ] || usage
name=$1
shift
result= measurement= units=
if [ "$1" = "--shell" ]; then
    shift
    [ $# -gt 0 ] || usage
    echo "<LAVA_SIGNAL_STARTTC $name>"
    if (eval "$*"); then result=pass; else result=fail; fi
    echo "<LAVA_SIGNAL_ENDTC $name>"
else
    while [ $# -gt 0 ]; do
        case $1 in
            --result) result=$2; shift 2 ;;
            --measurement) measurement=$2; shift 2 ;;
            --units) units=$2; shift 2 ;;
            *) usage ;;
        esac
    done
fi
case $result in
    pass|fail|skip|unknown) ;;
    *) echo "lava-test-case: --result must be pass, fail, skip or unknown, not '$result'" >&2; exit 1 ;;
esac
data="TEST_CASE_ID=$name RESULT=$result"
[ -n "$measurement" ] && data="$data MEASUREMENT=$measurement"
[ -n "$units" ] && data="$data UNITS=$units"
echo "<LAVA_SIGNAL_TESTCASE $data>"
exit 0
"#,
    ),
    (
        "lava-test-set",
        r#"#!/bin/sh
# lava-test-set start NAME | lava-test-set stop
case $1 in
    start) [ -n "$2" ] || { echo "Usage: lava-test-set start NAME" >&2; exit 1; }
           echo "<LAVA_SIGNAL_TESTSET START $2>" ;;
    stop) echo "<LAVA_SIGNAL_TESTSET STOP>" ;;
    *) echo "Usage: lava-test-set start NAME | lava-test-set stop" >&2; exit 1 ;;
esac
"#,
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    const SMOKE: &str = r#"
metadata:
  format: Lava-Test Test Definition 1.0
  name: smoke
  description: "a smoke test"
install:
  deps: [curl]
  steps:
    - echo installing
params:
  GREETING: "it's me"
run:
  steps:
    - echo "$GREETING"
    - lava-test-case one --result pass
parse:
  pattern: "^(?P<test_case_id>\\w+): (?P<result>PASS|FAIL)$"
  fixupdict:
    PASS: pass
    FAIL: fail
"#;

    #[test]
    fn parses_a_definition() {
        let t = TestDef::parse(SMOKE, "smoke.yaml").unwrap();
        assert_eq!(t.name, "smoke");
        assert_eq!(t.deps, ["curl"]);
        assert_eq!(t.install_steps, ["echo installing"]);
        assert_eq!(t.run_steps.len(), 2);
        assert_eq!(t.params, [("GREETING".to_owned(), "it's me".to_owned())]);
        assert_eq!(t.fixupdict.len(), 2);
        let run = t.run_script("0_smoke", "/lava/tests/0_smoke", "u-1");
        assert!(run.starts_with(
            "###default parameters from test definition###\nGREETING='it'\\''s me'\n"
        ));
        assert!(run.contains("set -e\nset -x\nexport TESTRUN_ID=0_smoke\n"));
        assert!(run.contains("echo \"<LAVA_SIGNAL_STARTRUN $TESTRUN_ID $UUID>\"\nset -x\necho \"$GREETING\"\nlava-test-case one --result pass\nset +x\n"));
        assert!(t
            .install_script("/d")
            .unwrap()
            .ends_with("cd '/d'\necho installing\n"));
    }

    #[test]
    fn bad_definitions_say_why() {
        let problem = |text: &str| TestDef::parse(text, "t.yaml").unwrap_err().to_string();
        assert_eq!(
            problem("run: {steps: [a]}"),
            "test definition t.yaml: metadata.name is missing"
        );
        assert_eq!(
            problem("metadata: {name: x}"),
            "test definition t.yaml: run.steps is missing or empty"
        );
        assert!(
            problem("metadata: {name: x}\nrun: {steps: [a]}\nparse: {pattern: '('}")
                .contains("parse.pattern")
        );
        assert!(problem("metadata: [").contains("not YAML"));
        assert!(problem("metadata: {name: lava}\nrun: {steps: [a]}").contains("reserved"));
    }

    /// The helpers print LAVA's signals, and `--shell` records the command's outcome.
    #[test]
    fn helpers_print_lavas_signals() {
        let dir = std::env::temp_dir().join(format!("lava-helpers-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, text) in HELPERS {
            std::fs::write(dir.join(name), text).unwrap();
        }
        let run = |args: &str| {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("sh {}/{args}", dir.display()))
                .output()
                .unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
            )
        };
        assert_eq!(
            run("lava-test-case a --result pass --measurement 3.5 --units s"),
            (
                Some(0),
                "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=a RESULT=pass MEASUREMENT=3.5 UNITS=s>\n"
                    .into()
            )
        );
        assert_eq!(
            run("lava-test-case b --shell 'test 1 = 2'"),
            (Some(0), "<LAVA_SIGNAL_STARTTC b>\n<LAVA_SIGNAL_ENDTC b>\n<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=b RESULT=fail>\n".into())
        );
        assert_eq!(run("lava-test-case c --result maybe").0, Some(1));
        assert_eq!(
            run("lava-test-set start s1").1,
            "<LAVA_SIGNAL_TESTSET START s1>\n"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
