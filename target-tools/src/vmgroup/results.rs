//! Test results, as LAVA's dispatcher reads them from a test shell's output: the signals
//! printed by `run.sh` and the helpers (`<LAVA_SIGNAL_STARTRUN ...>`, `<LAVA_SIGNAL_TESTCASE
//! TEST_CASE_ID=.. RESULT=..>`, `<LAVA_SIGNAL_TESTSET START ..>`, ...) and a definition's
//! `parse: pattern`. Sans IO: output goes in, results come out; the writers make
//! `results.yaml` (LAVA's result fields) and `junit.xml`.

use regex::Regex;

/// One result: a test case of a test run on a node.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseResult {
    pub node: String,
    /// The test run (`0_smoke`), or `lava` for the runs' own results.
    pub suite: String,
    pub set: Option<String>,
    pub case: String,
    /// `pass`, `fail`, `skip` or `unknown`.
    pub result: String,
    pub measurement: Option<String>,
    pub units: Option<String>,
}

impl CaseResult {
    pub fn failed(&self) -> bool {
        self.result == "fail"
    }
}

/// A definition's `parse` section, compiled.
#[derive(Debug, Clone)]
pub struct Pattern {
    regex: Regex,
    fixup: Vec<(String, String)>,
}

impl Pattern {
    pub fn new(pattern: &str, fixup: Vec<(String, String)>) -> Result<Pattern, regex::Error> {
        Ok(Pattern {
            regex: Regex::new(pattern)?,
            fixup,
        })
    }
}

/// Reads one node's output.
#[derive(Debug)]
pub struct Collector {
    node: String,
    line: Vec<u8>,
    /// The test run in progress, with its pattern.
    run: Option<(String, Option<Pattern>)>,
    set: Option<String>,
    /// Patterns of the runs announced, by test run id.
    patterns: Vec<(String, Pattern)>,
    ended: Vec<String>,
    results: Vec<CaseResult>,
}

impl Collector {
    pub fn new(node: &str) -> Collector {
        Collector {
            node: node.to_owned(),
            line: Vec::new(),
            run: None,
            set: None,
            patterns: Vec::new(),
            ended: Vec::new(),
            results: Vec::new(),
        }
    }

    /// The `parse: pattern` of test run `testrun_id`, applied to its output lines.
    pub fn expect_pattern(&mut self, testrun_id: &str, pattern: Pattern) {
        self.patterns.push((testrun_id.to_owned(), pattern));
    }

    pub fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b == b'\n' {
                let line = String::from_utf8_lossy(&self.line).replace('\r', "");
                self.line.clear();
                self.on_line(&line);
            } else if self.line.len() < 64 * 1024 {
                self.line.push(b);
            }
        }
    }

    /// Whether the test run printed its ENDRUN signal (it ran to its end).
    pub fn ended(&self, testrun_id: &str) -> bool {
        self.ended.iter().any(|e| e == testrun_id)
    }

    /// Records a test run's own outcome in suite `lava` (as LAVA does): pass when it ran to
    /// its end with status 0.
    pub fn finish_run(&mut self, testrun_id: &str, status: Option<i32>) {
        let ok = status == Some(0) && self.ended(testrun_id);
        self.push(
            "lava".into(),
            None,
            testrun_id.to_owned(),
            if ok { "pass" } else { "fail" },
            None,
            None,
        );
    }

    pub fn results(&self) -> &[CaseResult] {
        &self.results
    }

    fn push(
        &mut self,
        suite: String,
        set: Option<String>,
        case: String,
        result: &str,
        measurement: Option<String>,
        units: Option<String>,
    ) {
        self.results.push(CaseResult {
            node: self.node.clone(),
            suite,
            set,
            case,
            result: result.to_owned(),
            measurement,
            units,
        });
    }

    /// A case of the test run in progress (suite `lava` outside one), in the current set.
    fn record(
        &mut self,
        case: String,
        result: &str,
        measurement: Option<String>,
        units: Option<String>,
    ) {
        let (suite, set) = (self.suite(), self.set.clone());
        self.push(suite, set, case, &normalise(result), measurement, units);
    }

    fn suite(&self) -> String {
        self.run
            .as_ref()
            .map_or_else(|| "lava".into(), |(id, _)| id.clone())
    }

    fn on_line(&mut self, line: &str) {
        if let Some(signal) = signal_of(line) {
            let mut words = signal.split_whitespace();
            match words.next() {
                Some("STARTRUN") => {
                    if let Some(id) = words.next() {
                        let pattern = self
                            .patterns
                            .iter()
                            .find(|(t, _)| t == id)
                            .map(|(_, p)| p.clone());
                        self.run = Some((id.to_owned(), pattern));
                        self.set = None;
                    }
                }
                Some("ENDRUN") => {
                    if let Some(id) = words.next() {
                        self.ended.push(id.to_owned());
                    }
                    self.run = None;
                    self.set = None;
                }
                Some("TESTSET") => match (words.next(), words.next()) {
                    (Some("START"), Some(name)) => self.set = Some(name.to_owned()),
                    (Some("STOP"), _) => self.set = None,
                    _ => {}
                },
                Some("TESTCASE") => {
                    let mut case = None;
                    let (mut result, mut measurement, mut units) = (None, None, None);
                    for word in words {
                        match word.split_once('=') {
                            Some(("TEST_CASE_ID", v)) => case = Some(v.to_owned()),
                            Some(("RESULT", v)) => result = Some(v.to_owned()),
                            Some(("MEASUREMENT", v)) => measurement = Some(v.to_owned()),
                            Some(("UNITS", v)) => units = Some(v.to_owned()),
                            _ => {}
                        }
                    }
                    if let (Some(case), Some(result)) = (case, result) {
                        self.record(case, &result, measurement, units);
                    }
                }
                _ => {}
            }
            return;
        }
        let Some((_, Some(pattern))) = &self.run else {
            return;
        };
        let Some(caps) = pattern.regex.captures(line) else {
            return;
        };
        let Some(case) = caps
            .name("test_case_id")
            .map(|m| m.as_str().trim().to_owned())
        else {
            return;
        };
        let raw = caps
            .name("result")
            .map(|m| m.as_str().trim())
            .unwrap_or("unknown");
        let fixed = pattern
            .fixup
            .iter()
            .find(|(k, _)| k == raw)
            .map_or(raw, |(_, v)| v.as_str());
        let measurement = caps.name("measurement").map(|m| m.as_str().to_owned());
        let units = caps.name("units").map(|m| m.as_str().to_owned());
        let (case, result) = (case.replace(' ', "_"), fixed.to_owned());
        self.record(case, &result, measurement, units);
    }
}

/// `pass`, `fail`, `skip` or `unknown`, as LAVA accepts them.
fn normalise(result: &str) -> String {
    match result.to_ascii_lowercase().as_str() {
        r @ ("pass" | "fail" | "skip" | "unknown") => r.to_owned(),
        _ => "unknown".to_owned(),
    }
}

/// `STARTRUN 0_smoke uuid` from `... <LAVA_SIGNAL_STARTRUN 0_smoke uuid> ...`.
fn signal_of(line: &str) -> Option<&str> {
    let start = line.find("<LAVA_SIGNAL_")? + "<LAVA_SIGNAL_".len();
    let rest = &line[start..];
    let end = rest.find('>')?;
    Some(&rest[..end])
}

/// `results.yaml`: one entry per result with LAVA's fields (`suite`, `name`, `result`,
/// `measurement`, `unit`, `set`) and the node.
pub fn results_yaml(results: &[CaseResult]) -> String {
    use yaml_rust2::yaml::Hash;
    use yaml_rust2::{Yaml, YamlEmitter};
    let s = |t: &str| Yaml::String(t.to_owned());
    let list = results
        .iter()
        .map(|r| {
            let mut h = Hash::new();
            h.insert(s("node"), s(&r.node));
            h.insert(s("suite"), s(&r.suite));
            h.insert(s("name"), s(&r.case));
            h.insert(s("result"), s(&r.result));
            h.insert(s("set"), r.set.as_deref().map_or(Yaml::Null, s));
            h.insert(
                s("measurement"),
                r.measurement.as_deref().map_or(Yaml::Null, s),
            );
            h.insert(s("unit"), r.units.as_deref().map_or(Yaml::Null, s));
            Yaml::Hash(h)
        })
        .collect();
    let mut out = String::new();
    let mut emitter = YamlEmitter::new(&mut out);
    // Writing into a String cannot fail.
    let _ = emitter.dump(&Yaml::Array(list));
    out.push('\n');
    out
}

/// `junit.xml`: a test suite per node and test run, a `<testcase>` per result (its name the
/// case, the node and test run in `classname`), `<failure>` for fail, `<skipped>` for skip.
pub fn junit_xml(results: &[CaseResult]) -> Result<Vec<u8>, String> {
    use junit_report::{Duration, ReportBuilder, TestCase, TestSuiteBuilder};
    let mut suites: Vec<((String, String), Vec<TestCase>)> = Vec::new();
    for r in results {
        let key = (r.node.clone(), r.suite.clone());
        let name = match &r.set {
            Some(set) => format!("{set}.{}", r.case),
            None => r.case.clone(),
        };
        let mut case = match r.result.as_str() {
            "pass" => TestCase::success(&name, Duration::ZERO),
            "fail" => TestCase::failure(&name, Duration::ZERO, "fail", "the test case failed"),
            "skip" => TestCase::skipped(&name),
            _ => TestCase::skipped_with_cause(&name, "unknown", "result unknown"),
        };
        case.set_classname(&format!("{}.{}", r.node, r.suite));
        if let Some(m) = &r.measurement {
            let units = r.units.as_deref().unwrap_or("");
            case.set_system_out(&format!("measurement: {m} {units}"));
        }
        match suites.iter_mut().find(|(k, _)| *k == key) {
            Some((_, cases)) => cases.push(case),
            None => suites.push((key, vec![case])),
        }
    }
    let mut report = ReportBuilder::new();
    for ((node, suite), cases) in suites {
        report.add_testsuite(
            TestSuiteBuilder::new(&format!("{node}.{suite}"))
                .add_testcases(cases)
                .build(),
        );
    }
    let mut out = Vec::new();
    report
        .build()
        .write_xml(&mut out)
        .map_err(|e| e.to_string())?;
    Ok(out)
}

/// The results as a table for the terminal.
pub fn table(results: &[CaseResult]) -> String {
    let rows: Vec<[String; 4]> = results
        .iter()
        .map(|r| {
            let case = match &r.set {
                Some(set) => format!("{set}/{}", r.case),
                None => r.case.clone(),
            };
            let mut result = r.result.clone();
            if let Some(m) = &r.measurement {
                result.push_str(&format!(
                    " ({m}{})",
                    r.units
                        .as_deref()
                        .map(|u| format!(" {u}"))
                        .unwrap_or_default()
                ));
            }
            [r.node.clone(), r.suite.clone(), case, result]
        })
        .collect();
    let header = ["node", "test definition", "case", "result"].map(str::to_owned);
    let mut widths = header.each_ref().map(String::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(node: &str, output: &str) -> Collector {
        let mut c = Collector::new(node);
        c.expect_pattern(
            "1_parsed",
            Pattern::new(
                r"^(?P<test_case_id>\w+): (?P<result>PASS|FAIL)(?: (?P<measurement>[\d.]+) (?P<units>\w+))?$",
                vec![("PASS".into(), "pass".into()), ("FAIL".into(), "fail".into())],
            )
            .unwrap(),
        );
        // Pieces of any size.
        for chunk in output.as_bytes().chunks(7) {
            c.feed(chunk);
        }
        c
    }

    const OUTPUT: &str = "boot noise\r\n\
<LAVA_SIGNAL_STARTRUN 0_smoke 1234>\r\n\
+ lava-test-case one --result pass\r\n\
<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=one RESULT=pass>\r\n\
<LAVA_SIGNAL_TESTSET START net>\n\
<LAVA_SIGNAL_STARTTC ping>\n\
<LAVA_SIGNAL_ENDTC ping>\n\
<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=ping RESULT=fail>\n\
<LAVA_SIGNAL_TESTSET STOP>\n\
<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=speed RESULT=pass MEASUREMENT=3.5 UNITS=MB/s>\n\
alpha: PASS\n\
<LAVA_SIGNAL_ENDRUN 0_smoke 1234>\n\
<LAVA_SIGNAL_STARTRUN 1_parsed 99>\n\
alpha: PASS\n\
beta: FAIL 2.5 s\n\
<LAVA_SIGNAL_ENDRUN 1_parsed 99>\n";

    #[test]
    fn signals_and_patterns_give_results() {
        let mut c = collect("server-1", OUTPUT);
        c.finish_run("0_smoke", Some(0));
        c.finish_run("1_parsed", Some(1));
        let got: Vec<(String, Option<String>, String, String)> = c
            .results()
            .iter()
            .map(|r| {
                (
                    r.suite.clone(),
                    r.set.clone(),
                    r.case.clone(),
                    r.result.clone(),
                )
            })
            .collect();
        let want = [
            ("0_smoke", None, "one", "pass"),
            ("0_smoke", Some("net"), "ping", "fail"),
            ("0_smoke", None, "speed", "pass"),
            ("1_parsed", None, "alpha", "pass"),
            ("1_parsed", None, "beta", "fail"),
            ("lava", None, "0_smoke", "pass"),
            ("lava", None, "1_parsed", "fail"),
        ]
        .map(|(s, set, c, r)| {
            (
                s.to_owned(),
                set.map(str::to_owned),
                c.to_owned(),
                r.to_owned(),
            )
        });
        assert_eq!(got, want);
        assert_eq!(c.results()[2].measurement.as_deref(), Some("3.5"));
        assert_eq!(c.results()[4].units.as_deref(), Some("s"));
    }

    #[test]
    fn a_run_that_stopped_early_fails() {
        let mut c = collect("host", "<LAVA_SIGNAL_STARTRUN 0_x 1>\n");
        c.finish_run("0_x", Some(0));
        assert!(c.results()[0].failed());
    }

    #[test]
    fn writers() {
        let mut c = collect("server-1", OUTPUT);
        c.finish_run("0_smoke", Some(0));
        let yaml = results_yaml(c.results());
        assert!(
            yaml.contains("- node: server-1\n  suite: 0_smoke\n  name: one\n  result: pass\n"),
            "{yaml}"
        );
        let xml = String::from_utf8(junit_xml(c.results()).unwrap()).unwrap();
        assert!(
            xml.contains(r#"<testsuite id="0" name="server-1.0_smoke""#),
            "{xml}"
        );
        assert!(
            xml.contains(
                r#"<testcase name="net.ping" time="0" classname="server-1.0_smoke"><failure"#
            ),
            "{xml}"
        );
        assert!(xml.contains("<failure"), "{xml}");
        let t = table(c.results());
        assert!(
            t.starts_with("node      test definition  case      result\n"),
            "{t}"
        );
        assert!(
            t.contains("server-1  0_smoke          speed     pass (3.5 MB/s)\n"),
            "{t}"
        );
    }
}
