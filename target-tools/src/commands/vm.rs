//! VM groups: `lava-start-vms` and `lava-wait-for-vms` on the host, `lava-vm-done` in a
//! guest.
//!
//! Our coordinator has first-class requests for these; LAVA's answers them with a bare
//! `nack`, and the tools then use the message ids LAVA's helpers use (`lava_vm_start` with
//! `host_ip`, `lava_vm_stop` with `status` and `reason`), which our coordinator maps to the
//! same state.

use std::net::{ToSocketAddrs, UdpSocket};

use lava_protocol::message::VmStatus;
use lava_protocol::{RequestKind, VM_START_ID, VM_STOP_ID};
use serde_json::{json, Map, Value};

use crate::error::Error;
use crate::link::{in_group, Link};

/// The local address this machine uses towards `addr`: the address the kernel's routing
/// picks as the source of a connection to the coordinator (a connected UDP socket gives it
/// without sending anything, so the coordinator sees no stray connection).
pub fn local_address(addr: &str) -> Result<String, Error> {
    let fail = |e: String| {
        Error::Local(format!(
            "cannot find this host's address towards the coordinator {addr}: {e} \
             (set --host-ip or LAVA_MULTINODE_HOST_IP)"
        ))
    };
    let target = addr
        .to_socket_addrs()
        .map_err(|e| fail(e.to_string()))?
        .next()
        .ok_or_else(|| fail("no address".into()))?;
    let bind = if target.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let socket = UdpSocket::bind(bind).map_err(|e| fail(e.to_string()))?;
    socket.connect(target).map_err(|e| fail(e.to_string()))?;
    let local = socket.local_addr().map_err(|e| fail(e.to_string()))?;
    Ok(local.ip().to_string())
}

pub fn start_vms(s: &dyn Link, host_ip: &str) -> Result<(), Error> {
    let send = || {
        s.call(RequestKind::Send {
            id: VM_START_ID.to_owned(),
            message: json!({ "host_ip": host_ip }),
        })
        .map(drop)
    };
    if s.lava_only() {
        return send();
    }
    match s.call(RequestKind::VmStart {
        host_ip: host_ip.to_owned(),
    }) {
        Err(e) if e.is_bare_nack() => send(),
        other => other.map(drop),
    }
}

/// Reports this node's end. Returns whether the coordinator took the first-class request
/// (`false`: LAVA's coordinator or the console, message ids used).
pub fn stop(s: &dyn Link, reason: Option<&str>) -> Result<bool, Error> {
    let status = if reason.is_some() {
        VmStatus::Failed
    } else {
        VmStatus::Ok
    };
    let send = || {
        let mut message = Map::new();
        message.insert("status".into(), status.as_str().into());
        if let Some(reason) = reason {
            message.insert("reason".into(), reason.into());
        }
        s.call(RequestKind::Send {
            id: VM_STOP_ID.to_owned(),
            message: Value::Object(message),
        })
        .map(|_| false)
    };
    if s.lava_only() {
        return send();
    }
    match s.call(RequestKind::VmStop {
        status,
        reason: reason.map(str::to_owned),
    }) {
        Err(e) if e.is_bare_nack() => send(),
        other => other.map(|_| true),
    }
}

/// `lava-vm-done [--failed REASON]`: this VM (or node) has finished.
pub fn vm_done(s: &dyn Link, failed: Option<&str>) -> Result<(), Error> {
    stop(s, failed).map(drop)
}

/// The members whose `lava_vm_stop` data says `status=failed`, with their reasons.
pub fn failed_members(message: &Value) -> Vec<String> {
    let Value::Object(senders) = message else {
        return Vec::new();
    };
    senders
        .iter()
        .filter(|(_, data)| data.get("status").and_then(Value::as_str) == Some("failed"))
        .map(|(sender, _)| sender.clone())
        .collect()
}

/// One line naming the failed members and their reasons.
pub fn failure_text(failed: &[String], message: &Value, total: Option<usize>) -> String {
    let names: Vec<String> = failed
        .iter()
        .map(|m| match message[m.as_str()]["reason"].as_str() {
            Some(reason) if !reason.is_empty() => format!("{m} ({reason})"),
            _ => m.clone(),
        })
        .collect();
    let of = total.map(|t| format!(" of {t}")).unwrap_or_default();
    format!(
        "{}{of} member(s) of the VM group failed: {}",
        failed.len(),
        names.join(", ")
    )
}

/// `lava-wait-for-vms`: reports the host's own end (`status=ok`), waits until every member
/// of the group has reported its end, and fails naming the members that reported `failed`.
pub fn wait_for_vms(s: &dyn Link) -> Result<(), Error> {
    let first_class = stop(s, None)?;
    let (message, failed) = wait_all_stopped(s, first_class)?;
    if failed.is_empty() {
        return Ok(());
    }
    let total = message.as_object().map(Map::len);
    Err(Error::Negative(failure_text(&failed, &message, total)))
}

/// Waits until every member of the group has reported its end (`vm_wait_all`, or
/// `lava_wait_all lava_vm_stop` against LAVA's coordinator); returns the `lava_vm_stop` data
/// by sender and the members that reported `failed`. `first_class`: the coordinator took
/// `vm_stop` (else it is LAVA's, which is not asked `vm_wait_all` either).
pub fn wait_all_stopped(s: &dyn Link, first_class: bool) -> Result<(Value, Vec<String>), Error> {
    let what = format!("every member{} to finish", in_group(s, "of"));
    let wait_all = || {
        s.wait(
            RequestKind::WaitAll {
                id: VM_STOP_ID.to_owned(),
                role: None,
            },
            &what,
        )
    };
    let reply = if first_class {
        match s.wait(RequestKind::VmWaitAll, &what) {
            Err(e) if e.is_bare_nack() => wait_all()?,
            other => other?,
        }
    } else {
        wait_all()?
    };
    let message = reply.message.unwrap_or(Value::Null);
    let failed = reply.failed.unwrap_or_else(|| failed_members(&message));
    Ok((message, failed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_come_from_the_stop_data() {
        let message = json!({
            "host": {"status": "ok"},
            "vm1": {"status": "failed", "reason": "kernel panic"},
            "vm2": {"status": "failed"},
            "vm3": {"status": "ok"},
        });
        let failed = failed_members(&message);
        assert_eq!(failed, ["vm1", "vm2"]);
        assert_eq!(
            failure_text(&failed, &message, Some(4)),
            "2 of 4 member(s) of the VM group failed: vm1 (kernel panic), vm2"
        );
        assert!(failed_members(&Value::Null).is_empty());
    }

    #[test]
    fn local_address_towards_loopback() {
        assert_eq!(local_address("127.0.0.1:3079").unwrap(), "127.0.0.1");
        assert!(local_address("not an address").is_err());
    }
}
