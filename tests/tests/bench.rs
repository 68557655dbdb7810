//! Process-level smoke test of the benchmark program: `lava-bench --quick --no-reference`
//! against the debug coordinator produces every expected row, without errors. It checks the
//! program, not the figures (no timing assertion).

use std::process::Command;

use lava_multinode_tests::{bin, TempDir};
use serde_json::Value;

fn rows<'a>(report: &'a Value, section: &str, server: &str) -> Vec<&'a Value> {
    report["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .filter(|r| r["section"] == section && r["server"] == server)
        .collect()
}

fn has(report: &Value, section: &str, variant: &str, n: u64, server: &str) -> bool {
    rows(report, section, server)
        .iter()
        .any(|r| r["variant"] == variant && r["n"] == n)
}

#[test]
fn quick_run_produces_every_row_without_errors() {
    let dir = TempDir::new("bench-smoke");
    let json = dir.path().join("result.json");
    let out = Command::new(env!("CARGO_BIN_EXE_lava-bench"))
        .arg("--quick")
        .arg("--no-reference")
        .arg("--no-progress")
        .arg("--coordinator")
        .arg(bin("lava-coordinator"))
        .arg("--tools")
        .arg(bin("lava-multinode"))
        .arg("--launcher")
        .arg(bin("lava-multinode"))
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run lava-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "lava-bench failed: {stderr}\n{stdout}"
    );
    assert!(
        stdout.contains("measure") && stdout.contains("Targets:"),
        "table: {stdout}"
    );

    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("JSON written")).expect("JSON");
    assert_eq!(report["program"], "lava-bench");
    assert_eq!(report["quick"], true);
    assert!(report["reference"].is_null());
    assert!(rows(&report, "sync", "reference").is_empty());

    for n in [4, 16] {
        for variant in ["poll10ms", "block"] {
            assert!(
                has(&report, "sync", variant, n, "ours"),
                "sync {variant} {n}"
            );
        }
    }
    for variant in ["poll10ms", "block"] {
        assert!(
            has(&report, "barrier", variant, 16, "ours"),
            "barrier {variant}"
        );
        assert!(
            has(&report, "wakeup", variant, 300, "ours"),
            "wakeup {variant}"
        );
    }
    for c in [1, 8, 64] {
        for server in ["ours", "floor"] {
            assert!(
                has(&report, "throughput", "lava_send", c, server),
                "throughput {c} {server}"
            );
        }
    }
    for n in [0, 100, 300] {
        assert!(
            has(&report, "rss", "idle groups of 4", n, "ours"),
            "rss {n}"
        );
    }
    for n in [100, 300] {
        assert!(
            has(&report, "rss_per_node", "idle groups of 4", n, "ours"),
            "rss per node {n}"
        );
    }
    // The tools are measured when their binary works (it is being finished concurrently).
    if !report["tools"].is_null() {
        assert!(
            has(&report, "tool", "lava-send", 1, "ours"),
            "tool lava-send"
        );
        assert!(
            has(&report, "tool", "lava-sync", 2, "ours"),
            "tool lava-sync"
        );
    }

    // The console section: the launcher's relay with two shell guests, next to TCP.
    // (variant, n, samples at 3 calls: per member for clock and send, per round for sync)
    for (variant, n, samples) in [
        ("tcp lava-send", 1, 3),
        ("tcp lava-sync", 2, 3),
        ("tcp lava-sync", 3, 3),
        ("tcp shell clock", 0, 9),
        ("tcp shell lava-send", 1, 9),
        ("tcp shell lava-sync", 3, 3),
        ("tcp shell lava-sync round", 3, 3),
        ("console clock", 0, 6),
        ("console lava-send", 1, 6),
        ("host tcp lava-send", 1, 3),
        ("console lava-sync", 3, 3),
        ("console lava-sync round", 3, 3),
    ] {
        let row = rows(&report, "console", "ours")
            .into_iter()
            .find(|r| r["variant"] == variant && r["n"] == n)
            .unwrap_or_else(|| panic!("console {variant} {n}"));
        assert_eq!(row["samples"], samples, "{row}");
        assert!(row["p90_ms"].as_f64().is_some(), "{row}");
    }
    assert!(
        stdout.contains("The MultiNode API over the console"),
        "table: {stdout}"
    );

    for row in report["rows"].as_array().unwrap() {
        let what = format!(
            "{} {} {} {}",
            row["section"], row["variant"], row["n"], row["server"]
        );
        assert_eq!(row["errors"], 0, "{what}: {row}");
        match row["section"].as_str().unwrap() {
            "rss" | "rss_per_node" => {
                assert!(
                    row["value"].as_f64().is_some_and(|v| v > 0.0),
                    "{what}: {row}"
                )
            }
            "throughput" => {
                assert!(
                    row["value"].as_f64().is_some_and(|v| v > 0.0),
                    "{what}: {row}"
                );
                assert!(
                    row["samples"].as_u64().is_some_and(|s| s > 0),
                    "{what}: {row}"
                );
            }
            _ => {
                assert!(
                    row["samples"].as_u64().is_some_and(|s| s > 0),
                    "{what}: {row}"
                );
                let (median, p99) = (row["median_ms"].as_f64(), row["p99_ms"].as_f64());
                assert!(median.is_some() && p99 >= median, "{what}: {row}");
            }
        }
    }
    let targets = report["targets"].as_array().expect("targets");
    assert!(targets.iter().any(|t| t["target"]
        .as_str()
        .is_some_and(|s| s.contains("16-node sync with block"))));
}
