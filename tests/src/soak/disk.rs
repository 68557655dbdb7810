//! Scenario 5: the state file's file system fills up. A 2 MiB tmpfs is mounted here (root
//! only; unmounted afterwards, also on failure), the coordinator keeps its state there, and a
//! filler file takes the rest. Then: is a write answered (`nack` naming the cause, or an
//! `ack` that survives)? Are reads, `status` and other groups still answered? Is SIGTERM
//! obeyed? Does it recover once space returns? Issue 15's finding 3: every one of these is a
//! violation when it does not hold.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use lava_protocol::{Client, Reply, Request, RequestKind, Response};
use serde_json::{json, Value};

use super::{is_root, status, Coord, Opts, Outcome};

/// A tmpfs mounted at a folder; unmounted (lazily, if busy) when dropped.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

fn mount_tmpfs(at: &Path) -> Result<Mount, String> {
    std::fs::create_dir_all(at).map_err(|e| e.to_string())?;
    let out = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2M,mode=0755", "soak-tmpfs"])
        .arg(at)
        .output()
        .map_err(|e| format!("run mount: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
    }
    Ok(Mount(at.to_owned()))
}

fn req(group: &str, client: &str, kind: RequestKind) -> Request {
    let mut r = Request::new(group, client, "r", kind);
    r.group_size = Some(2);
    r
}

fn send(group: &str, client: &str, id: &str, data: Value) -> Request {
    req(
        group,
        client,
        RequestKind::Send {
            id: id.into(),
            message: data,
        },
    )
}

/// A reply in words, with the time it took.
fn said(r: &Result<Reply, lava_protocol::ClientError>, took: Duration) -> String {
    match r {
        Ok(r) => match &r.error {
            Some(e) => format!("{:?} \"{e:.120}\" in {took:.1?}", r.response),
            None => format!("{:?} in {took:.1?}", r.response),
        },
        Err(_) => format!("no answer in {took:.1?}"),
    }
}

pub fn run(opts: &Opts) -> Outcome {
    let name = "disk";
    let skip = |why: String| Outcome {
        name,
        violations: 0,
        known: 0,
        line: format!("skipped: {why}; violations 0 (not run)"),
        details: vec![],
    };
    if !is_root() {
        return skip("not root, cannot mount a tmpfs (run as root for this scenario)".into());
    }
    let dir = lava_multinode_tests::TempDir::new("soak-disk");
    let mnt = dir.path().join("mnt");
    let mount = match mount_tmpfs(&mnt) {
        Ok(m) => m,
        Err(e) => return skip(format!("cannot mount a tmpfs: {e}")),
    };
    let outcome = run_on(opts, dir.path(), &mnt);
    drop(mount);
    outcome
}

fn run_on(opts: &Opts, dir: &Path, mnt: &Path) -> Outcome {
    let name = "disk";
    let mut coord = match Coord::start(&opts.coordinator, dir, &mnt.join("state.db"), "{}") {
        Ok(c) => c,
        Err(e) => {
            return Outcome {
                name,
                violations: 1,
                known: 0,
                line: format!("violations 1: {e}"),
                details: vec![],
            };
        }
    };
    let addr = coord.addr.clone();
    let quick = Client::new(addr.clone())
        .with_connect_timeout(Duration::from_secs(3))
        .with_io_timeout(Duration::from_secs(3));
    let timed = |c: &Client, r: &Request| {
        let t = Instant::now();
        let reply = c.call(r);
        (reply, t.elapsed())
    };
    let mut unexpected = Vec::new();
    // Before: data kept in two groups, whose readers have joined (as every LAVA node does
    // at its start).
    for r in [
        send("disk", "a", "kept", json!({"v": 1})),
        send("other", "a", "x", json!({"v": 2})),
        req("disk", "b", RequestKind::Wait { id: "kept".into() }),
        req("other", "b", RequestKind::Wait { id: "x".into() }),
    ] {
        if !matches!(quick.call(&r), Ok(ref rep) if rep.response == Response::Ack) {
            unexpected.push(format!("setup {} was not acknowledged", r.kind.name()));
        }
    }
    // Fill the file system (a file takes every byte left).
    let fill = |mnt: &Path| -> usize {
        let mut filled = 0usize;
        if let Ok(mut f) = std::fs::File::create(mnt.join("filler")) {
            let chunk = vec![0u8; 16 << 10];
            while f.write_all(&chunk).is_ok() {
                filled += chunk.len();
            }
            let _ = f.sync_all();
        }
        filled
    };
    let filled = fill(mnt);
    // Writes: three 200 kB sends.
    let mut acked_writes = Vec::new();
    let mut writes = Vec::new();
    let slow = Client::new(addr.clone())
        .with_connect_timeout(Duration::from_secs(3))
        .with_io_timeout(Duration::from_secs(5));
    for k in 0..3 {
        let data = json!("w".repeat(200_000));
        let id = format!("w{k}");
        let (r, took) = timed(&slow, &send("disk", "a", &id, data.clone()));
        writes.push(said(&r, took));
        match &r {
            Ok(rep) if rep.response == Response::Ack => acked_writes.push((id, data)),
            Ok(rep)
                if rep.response == Response::Nack
                    && rep.error.as_deref().is_some_and(|e| {
                        let e = e.to_lowercase();
                        e.contains("full") || e.contains("space") || e.contains("disk")
                    }) => {}
            _ => unexpected.push(format!(
                "a write got no nack naming the cause: {}",
                said(&r, took)
            )),
        }
    }
    // Reads, status, another group.
    let t = Instant::now();
    let st = status(&addr, Duration::from_secs(3));
    let st_said = match &st {
        Ok(_) => format!("answered in {:.1?}", t.elapsed()),
        Err(_) => format!("no answer in {:.1?}", t.elapsed()),
    };
    if st.is_err() {
        unexpected.push(format!("status: {st_said}"));
    }
    let (r, took) = timed(
        &quick,
        &req("disk", "b", RequestKind::Wait { id: "kept".into() }),
    );
    let read_said = said(&r, took);
    if !matches!(r, Ok(ref rep) if rep.response == Response::Ack) {
        unexpected.push(format!("lava_wait on data it holds: {read_said}"));
    }
    let (r, took) = timed(
        &quick,
        &req("other", "b", RequestKind::Wait { id: "x".into() }),
    );
    let other_said = said(&r, took);
    if !matches!(r, Ok(ref rep) if rep.response == Response::Ack) {
        unexpected.push(format!("another group's lava_wait: {other_said}"));
    }
    // Space returns: does it recover by itself?
    let _ = std::fs::remove_file(mnt.join("filler"));
    let freed = Instant::now();
    let deadline = freed + Duration::from_secs(20);
    let recovery = loop {
        let r = quick.call(&send("disk", "a", "after", json!({"v": 3})));
        if matches!(r, Ok(ref rep) if rep.response == Response::Ack) {
            acked_writes.push(("after".to_owned(), json!({"v": 3})));
            break format!(
                "a write acknowledged {:.1?} after space returned",
                freed.elapsed()
            );
        }
        if Instant::now() > deadline || !coord.running() {
            let r = "no write acknowledged within 20 s after space returned".to_owned();
            unexpected.push(r.clone());
            break r;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // Full again, a write stuck on it, then SIGTERM.
    fill(mnt);
    let stuck = {
        let addr = addr.clone();
        std::thread::spawn(move || {
            let c = Client::new(addr).with_io_timeout(Duration::from_secs(30));
            c.call(&send("disk", "a", "stuck", json!("s".repeat(200_000))))
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let term = coord.terminate(Duration::from_secs(5));
    let mut term_said = match term {
        Some(t) => format!("exited {t:.1?} after SIGTERM"),
        None => "still running 5 s after SIGTERM".to_owned(),
    };
    if term.is_none() {
        unexpected.push(format!("SIGTERM not obeyed: {term_said}"));
    }
    let _ = std::fs::remove_file(mnt.join("filler"));
    if term.is_none() {
        let freed = Instant::now();
        let exited = (0..200).any(|_| {
            std::thread::sleep(Duration::from_millis(50));
            !coord.running()
        });
        term_said += &if exited {
            format!(", exited {:.1?} after space returned", freed.elapsed())
        } else {
            ", still running 10 s after space returned".to_owned()
        };
    }
    if let Ok(Ok(r)) = stuck.join() {
        if r.response == Response::Ack {
            acked_writes.push(("stuck".to_owned(), json!("s".repeat(200_000))));
        }
    }
    // A restart on the same file: what was acknowledged is there.
    coord.kill9();
    let restart = coord
        .spawn()
        .ok()
        .and_then(|_| coord.wait_ready(Duration::from_secs(15)));
    match restart {
        None => unexpected.push("it did not start again on its state file".into()),
        Some(_) => {
            let mut expect = vec![("kept".to_owned(), json!({"v": 1}))];
            expect.extend(acked_writes.iter().cloned());
            for (id, data) in expect {
                let r = slow.call(&req("disk", "b", RequestKind::Wait { id: id.clone() }));
                let ok = matches!(&r, Ok(rep) if rep.message.as_ref().and_then(|m| m.get("a")) == Some(&data));
                if !ok {
                    unexpected.push(format!("acknowledged send {id} lost after the restart"));
                }
            }
        }
    }
    coord.kill9();
    let violations = unexpected.len();
    let details: Vec<String> = unexpected.clone();
    let line = format!(
        "load 2 groups on a 2 MiB tmpfs, filled with {} kB; faults: file system full; violations {violations} \
         (unexpected {violations}); figures: 200 kB writes: {}; status {st_said}; lava_wait on kept data: {read_said}; \
         another group: {other_said}; {}; full again, a write stuck, SIGTERM: {term_said}; acknowledged sends kept after a restart: {}",
        filled / 1024,
        writes.join(" / "),
        recovery,
        if violations == 0 { "all" } else { "NOT all" },
    );
    Outcome {
        name,
        violations,
        known: 0,
        line,
        details,
    }
}
