//! Deterministic tests of the coordination rules: requests and times in, replies out.

use super::*;
use lava_protocol::message::{Roles, VmStatus};
use lava_protocol::Response;
use lava_protocol::{LockScope, OperatorAction, Parties};
use proptest::prelude::*;
use serde_json::json;
use std::collections::BTreeMap;

const G: &str = "group";

struct Harness {
    machine: Coordinator,
    t0: Instant,
    now: Instant,
    next_waiter: WaiterId,
    /// Wake-ups received so far, by waiter.
    woken: HashMap<WaiterId, Reply>,
}

impl Harness {
    fn new() -> Self {
        let t0 = Instant::now();
        Harness {
            machine: Coordinator::new(Duration::from_secs(3600)),
            t0,
            now: t0,
            next_waiter: 0,
            woken: HashMap::new(),
        }
    }

    fn req(&self, client: &str, role: &str, size: u32, kind: RequestKind) -> Request {
        let mut r = Request::new(G, client, role, kind);
        r.group_size = Some(size);
        r
    }

    /// A LAVA-style request (no parking): the immediate reply.
    fn call(&mut self, req: Request) -> Reply {
        let out = self.machine.handle(&req, self.now, None);
        self.collect(out.wakeups);
        out.reply.expect("a request that may not park gets a reply")
    }

    /// A blocking request: `Ok(reply)` or `Err(waiter)` when parked.
    fn block(&mut self, req: Request) -> Result<Reply, WaiterId> {
        self.next_waiter += 1;
        let waiter = self.next_waiter;
        let out = self.machine.handle(&req, self.now, Some(waiter));
        self.collect(out.wakeups);
        out.reply.ok_or(waiter)
    }

    fn collect(&mut self, wakeups: Vec<Wakeup>) {
        for w in wakeups {
            assert!(
                self.woken.insert(w.waiter, w.reply).is_none(),
                "woken twice"
            );
        }
    }

    fn woken(&mut self, waiter: WaiterId) -> Option<Reply> {
        self.woken.remove(&waiter)
    }
}

fn send(id: &str, message: Value) -> RequestKind {
    RequestKind::Send {
        id: id.into(),
        message,
    }
}
fn wait(id: &str) -> RequestKind {
    RequestKind::Wait { id: id.into() }
}
fn wait_all(id: &str, role: Option<&str>) -> RequestKind {
    RequestKind::WaitAll {
        id: id.into(),
        role: role.map(Into::into),
    }
}
fn sync(id: &str) -> RequestKind {
    RequestKind::Sync {
        id: id.into(),
        message: json!({}),
    }
}

fn roles(pairs: &[(&str, &str)]) -> Roles {
    pairs
        .iter()
        .map(|(c, r)| (c.to_string(), r.to_string()))
        .collect()
}

#[test]
fn group_data_waits_for_every_member_and_orders_by_role() {
    let mut h = Harness::new();
    assert!(h
        .call(h.req("c1", "client", 3, RequestKind::GroupData))
        .is_wait());
    assert!(h
        .call(h.req("s1", "server", 3, RequestKind::GroupData))
        .is_wait());
    let reply = h.call(h.req("c2", "client", 3, RequestKind::GroupData));
    assert_eq!(reply.response, Response::GroupData);
    let order: Vec<_> = reply.roles.unwrap().into_iter().collect();
    assert_eq!(
        order,
        vec![
            ("c1".to_string(), "client".to_string()),
            ("c2".into(), "client".into()),
            ("s1".into(), "server".into())
        ]
    );
    // The earlier members get the same answer when they poll again.
    assert_eq!(
        h.call(h.req("c1", "client", 3, RequestKind::GroupData))
            .response,
        Response::GroupData
    );
}

#[test]
fn a_new_group_needs_a_size() {
    let mut h = Harness::new();
    let mut r = h.req("a", "r", 2, RequestKind::GroupData);
    r.group_size = None;
    let reply = h.call(r);
    assert_eq!(reply.response, Response::Nack);
    assert!(reply.error.unwrap().contains("group_size"));
    assert!(h.machine.group(G).is_none());
}

#[test]
fn registering_needs_a_role_and_a_free_place() {
    let mut h = Harness::new();
    let mut r = h.req("a", "r", 1, RequestKind::GroupData);
    r.role = None;
    assert_eq!(h.call(r).response, Response::Nack);
    assert_eq!(
        h.call(h.req("a", "r", 1, RequestKind::GroupData)).response,
        Response::GroupData
    );
    let reply = h.call(h.req("b", "r", 1, RequestKind::GroupData));
    assert_eq!(reply.response, Response::Nack, "a client beyond group_size");
    // A member may repeat itself without its role.
    let mut r = h.req("a", "r", 1, RequestKind::GroupData);
    r.role = None;
    assert_eq!(h.call(r).response, Response::GroupData);
}

#[test]
fn sends_accumulate_per_sender_and_replace_the_senders_own() {
    let mut h = Harness::new();
    assert!(h.call(h.req("a", "r", 2, wait("m"))).is_wait());
    assert_eq!(
        h.call(h.req("a", "r", 2, send("m", json!({"k": "1"})))),
        Reply::ack()
    );
    assert_eq!(
        h.call(h.req("b", "r", 2, send("m", json!({"x": "y"})))),
        Reply::ack()
    );
    assert_eq!(
        h.call(h.req("a", "r", 2, send("m", json!({"k": "2"})))),
        Reply::ack()
    );
    let reply = h.call(h.req("b", "r", 2, wait("m")));
    assert_eq!(
        reply,
        Reply::ack_message(json!({"a": {"k": "2"}, "b": {"x": "y"}}))
    );
}

#[test]
fn a_late_member_sees_what_was_sent_before_it_registered() {
    let mut h = Harness::new();
    h.call(h.req(
        "host",
        "host",
        3,
        RequestKind::VmStart {
            host_ip: "10.0.2.2".into(),
        },
    ));
    let reply = h.call(h.req("vm1", "server", 3, RequestKind::VmWaitStart));
    assert_eq!(reply.host_ip.as_deref(), Some("10.0.2.2"));
    assert_eq!(
        reply.message,
        Some(json!({"host": {"host_ip": "10.0.2.2"}}))
    );
    // The same state through LAVA's message id.
    let reply = h.call(h.req("vm2", "client", 3, wait(lava_protocol::VM_START_ID)));
    assert_eq!(
        reply,
        Reply::ack_message(json!({"host": {"host_ip": "10.0.2.2"}}))
    );
}

#[test]
fn parked_wait_is_woken_by_the_send() {
    let mut h = Harness::new();
    let w = h.block(h.req("b", "r", 2, wait("m"))).unwrap_err();
    assert!(h.woken(w).is_none());
    h.call(h.req("a", "r", 2, send("other", json!({}))));
    assert!(h.woken(w).is_none(), "another id does not wake it");
    h.call(h.req("a", "r", 2, send("m", json!({"v": 1}))));
    assert_eq!(h.woken(w), Some(Reply::ack_message(json!({"a": {"v": 1}}))));
    assert_eq!(h.machine.parked_count(), 0);
}

#[test]
fn wait_all_needs_the_whole_group_and_every_send() {
    let mut h = Harness::new();
    h.call(h.req("a", "r", 3, send("m", json!({"n": 1}))));
    h.call(h.req("b", "r", 3, send("m", json!({"n": 2}))));
    // Everyone registered has sent, but the group is not complete.
    let w = h
        .block(h.req("a", "r", 3, wait_all("m", None)))
        .unwrap_err();
    assert!(h.woken(w).is_none());
    h.call(h.req("c", "r", 3, RequestKind::GroupData));
    assert!(h.woken(w).is_none(), "c has not sent yet");
    h.call(h.req("c", "r", 3, send("m", json!({}))));
    let reply = h.woken(w).unwrap();
    assert_eq!(
        reply.message,
        Some(json!({"a": {"n": 1}, "b": {"n": 2}, "c": {}}))
    );
    // Before anyone sent: wait, not nack.
    assert!(h
        .call(h.req("a", "r", 3, wait_all("nobody", None)))
        .is_wait());
}

#[test]
fn wait_all_by_role_waits_for_every_member_of_the_role() {
    let mut h = Harness::new();
    for (c, r) in [("s1", "server"), ("s2", "server"), ("c1", "client")] {
        h.call(h.req(c, r, 3, RequestKind::GroupData));
    }
    h.call(h.req("s1", "server", 3, send("up", json!({"ip": "1"}))));
    assert!(h
        .call(h.req("c1", "client", 3, wait_all("up", Some("server"))))
        .is_wait());
    h.call(h.req("s2", "server", 3, send("up", json!({"ip": "2"}))));
    let reply = h.call(h.req("c1", "client", 3, wait_all("up", Some("server"))));
    assert_eq!(
        reply.message,
        Some(json!({"s1": {"ip": "1"}, "s2": {"ip": "2"}}))
    );
    // A role no member has: nack once the roster is known.
    let reply = h.call(h.req("c1", "client", 3, wait_all("up", Some("nobody"))));
    assert_eq!(reply.response, Response::Nack);
}

#[test]
fn wait_all_for_an_unknown_role_waits_until_the_roster_is_known() {
    let mut h = Harness::new();
    let w = h
        .block(h.req("a", "r", 2, wait_all("m", Some("ghost"))))
        .unwrap_err();
    assert!(h.woken(w).is_none());
    h.call(h.req("b", "r", 2, RequestKind::GroupData));
    assert_eq!(h.woken(w).unwrap().response, Response::Nack);
}

#[test]
fn sync_answers_everyone_once_all_arrived_and_can_be_reused() {
    let mut h = Harness::new();
    // LAVA-style polling: the request that completes the set is answered at once.
    assert!(h.call(h.req("a", "r", 3, sync("s"))).is_wait());
    assert!(h.call(h.req("b", "r", 3, sync("s"))).is_wait());
    assert!(
        h.call(h.req("a", "r", 3, sync("s"))).is_wait(),
        "polling again changes nothing"
    );
    assert_eq!(
        h.call(h.req("c", "r", 3, sync("s"))),
        Reply::ack_message(json!("s"))
    );
    assert_eq!(
        h.call(h.req("a", "r", 3, sync("s"))),
        Reply::ack_message(json!("s"))
    );
    assert_eq!(
        h.call(h.req("b", "r", 3, sync("s"))),
        Reply::ack_message(json!("s"))
    );
    // Everyone picked it up: the id starts a new round.
    assert!(h.call(h.req("a", "r", 3, sync("s"))).is_wait());
    assert!(h.call(h.req("b", "r", 3, sync("s"))).is_wait());
    assert!(h.call(h.req("c", "r", 3, sync("s"))).response == Response::Ack);
}

#[test]
fn asking_again_after_passing_a_sync_waits_for_the_next_round() {
    let mut h = Harness::new();
    h.call(h.req("a", "r", 2, sync("s")));
    assert_eq!(
        h.call(h.req("b", "r", 2, sync("s"))).response,
        Response::Ack
    );
    // b passed round 1 and syncs on the same id again before a picked round 1 up.
    let wb = h.block(h.req("b", "r", 2, sync("s"))).unwrap_err();
    assert_eq!(
        h.call(h.req("a", "r", 2, sync("s"))).response,
        Response::Ack,
        "a finishes round 1"
    );
    assert!(h.woken(wb).is_none(), "round 2 needs a too");
    assert_eq!(
        h.call(h.req("a", "r", 2, sync("s"))).response,
        Response::Ack
    );
    assert_eq!(h.woken(wb).map(|r| r.response), Some(Response::Ack));
}

#[test]
fn a_retried_sync_call_is_answered_again_and_a_new_call_is_the_next_round() {
    let mut h = Harness::new();
    let call = |h: &Harness, client: &str, id: &str| {
        let mut r = h.req(client, "r", 2, sync("s"));
        r.request_id = Some(id.into());
        r
    };
    h.call(call(&h, "a", "a-1"));
    assert_eq!(h.call(call(&h, "b", "b-1")).response, Response::Ack);
    assert_eq!(h.call(call(&h, "a", "a-1")).response, Response::Ack);
    // Both acks were lost: the retries (same request_id) are answered again, round over or not.
    assert_eq!(h.call(call(&h, "a", "a-1")), Reply::ack_message(json!("s")));
    assert_eq!(h.call(call(&h, "b", "b-1")), Reply::ack_message(json!("s")));
    // A new call is the next round.
    assert!(h.call(call(&h, "a", "a-2")).is_wait());
    assert!(
        h.call(call(&h, "a", "a-2")).is_wait(),
        "its own retry waits too"
    );
    assert_eq!(h.call(call(&h, "b", "b-2")).response, Response::Ack);
    assert_eq!(h.call(call(&h, "a", "a-2")).response, Response::Ack);
}

#[test]
fn parked_syncs_are_released_together() {
    let mut h = Harness::new();
    let wa = h.block(h.req("a", "r", 3, sync("s"))).unwrap_err();
    let wb = h.block(h.req("b", "r", 3, sync("s"))).unwrap_err();
    let reply = h.block(h.req("c", "r", 3, sync("s"))).unwrap();
    assert_eq!(reply, Reply::ack_message(json!("s")));
    assert_eq!(h.woken(wa), Some(Reply::ack_message(json!("s"))));
    assert_eq!(h.woken(wb), Some(Reply::ack_message(json!("s"))));
    // The round is over: a new one starts.
    assert!(h.block(h.req("a", "r", 3, sync("s"))).is_err());
}

#[test]
fn a_sync_with_a_message_replies_with_the_members_own_message() {
    let mut h = Harness::new();
    let kind = |m: Value| RequestKind::Sync {
        id: "s".into(),
        message: m,
    };
    h.call(h.req("a", "r", 2, kind(json!({"mine": "a"}))));
    let reply = h.call(h.req("b", "r", 2, kind(json!({}))));
    assert_eq!(reply.message, Some(json!("s")));
    let reply = h.call(h.req("a", "r", 2, kind(json!({"mine": "a"}))));
    assert_eq!(reply.message, Some(json!({"mine": "a"})));
}

#[test]
fn sync_ids_and_message_ids_do_not_collide() {
    let mut h = Harness::new();
    h.call(h.req("a", "r", 1, sync("x")));
    assert_eq!(
        h.call(h.req("a", "r", 1, send("x", json!({"k": "v"})))),
        Reply::ack()
    );
    assert_eq!(
        h.call(h.req("a", "r", 1, wait("x"))),
        Reply::ack_message(json!({"a": {"k": "v"}}))
    );
}

#[test]
fn cancel_takes_a_parked_request_back() {
    let mut h = Harness::new();
    let w = h.block(h.req("a", "r", 2, sync("s"))).unwrap_err();
    assert!(h.machine.cancel(w));
    assert!(!h.machine.cancel(w));
    // The arrival stays: LAVA's polling client would ask again.
    assert_eq!(
        h.call(h.req("b", "r", 2, sync("s"))).response,
        Response::Ack
    );
    assert!(h.woken(w).is_none());
    assert_eq!(
        h.call(h.req("a", "r", 2, sync("s"))).response,
        Response::Ack
    );
}

#[test]
fn clear_group_counts_distinct_members_then_frees_the_name() {
    let mut h = Harness::new();
    h.call(h.req("a", "r", 2, RequestKind::GroupData));
    h.call(h.req("b", "r", 2, RequestKind::GroupData));
    let w = h.block(h.req("b", "r", 2, wait("never"))).unwrap_err();
    assert_eq!(
        h.call(h.req("a", "r", 2, RequestKind::ClearGroup)),
        Reply::ack()
    );
    assert_eq!(
        h.call(h.req("a", "r", 2, RequestKind::ClearGroup)),
        Reply::ack()
    );
    assert!(
        h.machine.group(G).is_some(),
        "one member clearing twice is not everyone"
    );
    assert_eq!(
        h.call(h.req("b", "r", 2, RequestKind::ClearGroup)),
        Reply::ack()
    );
    assert!(h.machine.group(G).is_none());
    assert_eq!(
        h.woken(w).unwrap().response,
        Response::Nack,
        "parked requests are refused"
    );
    assert_eq!(h.machine.parked_count(), 0);
    // The name can be reused, with a new size.
    assert!(h.call(h.req("x", "r", 3, RequestKind::GroupData)).is_wait());
    assert_eq!(h.machine.group(G).unwrap().size, 3);
    assert!(
        h.call(h.req("x", "r", 3, wait("m"))).is_wait(),
        "nothing of the old group remains"
    );
}

#[test]
fn idle_groups_expire_but_not_while_someone_waits() {
    let mut h = Harness::new();
    h.call(h.req("a", "r", 2, send("m", json!({}))));
    h.now = h.t0 + Duration::from_secs(3599);
    assert!(h.machine.expire(h.now).is_empty());
    assert!(h.machine.group(G).is_some());
    let w = h.block(h.req("a", "r", 2, wait("n"))).unwrap_err();
    h.now = h.t0 + Duration::from_secs(3599 + 3600);
    assert!(h.machine.expire(h.now).is_empty());
    assert!(h.machine.group(G).is_some(), "a parked request keeps it");
    assert!(h.machine.cancel(w));
    h.machine.expire(h.now);
    assert!(h.machine.group(G).is_none());
    assert!(h
        .machine
        .take_events()
        .iter()
        .any(|e| matches!(e, Event::Expired { group, .. } if group == G)));
}

#[test]
fn complete_is_acked_and_aggregate_refused() {
    let mut h = Harness::new();
    assert_eq!(
        h.call(h.req("a", "r", 2, RequestKind::Complete)),
        Reply::ack()
    );
    assert_eq!(
        h.call(h.req("a", "r", 2, RequestKind::Aggregate)).response,
        Response::Nack
    );
}

#[test]
fn a_declared_roster_answers_at_once_and_guards_registration() {
    let mut h = Harness::new();
    let roster = roles(&[("host", "host"), ("vm1", "server"), ("vm2", "client")]);
    let mut declare = h.req(
        "host",
        "host",
        3,
        RequestKind::DeclareRoster {
            roster: roster.clone(),
        },
    );
    declare.group_size = None;
    assert_eq!(h.call(declare.clone()), Reply::ack());
    assert_eq!(h.call(declare), Reply::ack(), "the same roster again");
    let reply = h.call(h.req("host", "host", 3, RequestKind::Roster));
    assert_eq!(reply.declared, Some(true));
    assert_eq!(reply.roles.unwrap().len(), 3);
    // Only listed clients, in their declared role.
    assert_eq!(
        h.call(h.req("intruder", "server", 3, RequestKind::GroupData))
            .response,
        Response::Nack
    );
    assert_eq!(
        h.call(h.req("vm1", "client", 3, RequestKind::GroupData))
            .response,
        Response::Nack
    );
    let mut no_role = h.req("vm1", "", 3, RequestKind::GroupData);
    no_role.role = None;
    assert!(h.call(no_role).is_wait(), "the roster supplies the role");
    assert_eq!(h.machine.group(G).unwrap().members["vm1"], "server");
    // A different roster is refused.
    let other = roles(&[("host", "host"), ("vm1", "server"), ("vm3", "client")]);
    assert_eq!(
        h.call(h.req(
            "host",
            "host",
            3,
            RequestKind::DeclareRoster { roster: other }
        ))
        .response,
        Response::Nack
    );
    // wait_all by role uses the roster before everyone registered.
    h.call(h.req("vm1", "server", 3, send("up", json!({}))));
    assert_eq!(
        h.call(h.req("host", "host", 3, wait_all("up", Some("server"))))
            .response,
        Response::Ack
    );
    assert_eq!(
        h.call(h.req("host", "host", 3, wait_all("up", Some("ghost"))))
            .response,
        Response::Nack
    );
    assert!(h
        .call(h.req("host", "host", 3, wait_all("up", None)))
        .is_wait());
}

#[test]
fn roster_without_declaration_waits_for_the_group() {
    let mut h = Harness::new();
    let w = h
        .block(h.req("a", "x", 2, RequestKind::Roster))
        .unwrap_err();
    h.call(h.req("b", "y", 2, RequestKind::GroupData));
    let reply = h.woken(w).unwrap();
    assert_eq!(reply.declared, Some(false));
    assert_eq!(reply.roles.unwrap(), roles(&[("a", "x"), ("b", "y")]));
}

#[test]
fn a_roster_that_contradicts_the_members_is_refused() {
    let mut h = Harness::new();
    h.call(h.req("a", "x", 2, RequestKind::GroupData));
    let bad = roles(&[("a", "y"), ("b", "y")]);
    assert_eq!(
        h.call(h.req("b", "y", 2, RequestKind::DeclareRoster { roster: bad }))
            .response,
        Response::Nack
    );
    let wrong_size = roles(&[("a", "x")]);
    assert_eq!(
        h.call(h.req(
            "a",
            "x",
            2,
            RequestKind::DeclareRoster { roster: wrong_size }
        ))
        .response,
        Response::Nack
    );
}

#[test]
fn vm_stop_and_wait_all_report_failures_to_both_kinds_of_client() {
    let mut h = Harness::new();
    let size = 3;
    let w = h
        .block(h.req("host", "host", size, RequestKind::VmWaitAll))
        .unwrap_err();
    h.call(h.req(
        "vm1",
        "vm",
        size,
        RequestKind::VmStop {
            status: VmStatus::Ok,
            reason: None,
        },
    ));
    h.call(h.req(
        "vm2",
        "vm",
        size,
        RequestKind::VmStop {
            status: VmStatus::Failed,
            reason: Some("powered off".into()),
        },
    ));
    assert!(h.woken(w).is_none(), "the host has not sent its own stop");
    // A LAVA host sends the id itself.
    h.call(h.req(
        "host",
        "host",
        size,
        send(lava_protocol::VM_STOP_ID, json!({"status": "ok"})),
    ));
    let reply = h.woken(w).unwrap();
    assert_eq!(reply.failed, Some(vec!["vm2".to_string()]));
    let lava = h.call(h.req(
        "host",
        "host",
        size,
        wait_all(lava_protocol::VM_STOP_ID, None),
    ));
    assert_eq!(
        lava.message,
        Some(
            json!({"vm1": {"status": "ok"}, "vm2": {"status": "failed", "reason": "powered off"}, "host": {"status": "ok"}})
        )
    );
}

#[test]
fn many_waiters_on_one_condition_are_all_released_in_order() {
    let mut h = Harness::new();
    let n = 64;
    let waiters: Vec<_> = (0..n)
        .map(|i| {
            h.block(h.req(&format!("c{i}"), "r", n + 1, wait_all("m", None)))
                .unwrap_err()
        })
        .collect();
    for i in 0..n {
        h.call(h.req(&format!("c{i}"), "r", n + 1, send("m", json!({}))));
    }
    assert!(waiters.iter().all(|w| !h.woken.contains_key(w)));
    h.call(h.req("last", "r", n + 1, send("m", json!({}))));
    assert!(waiters.iter().all(|w| h.woken.contains_key(w)));
}

/// One scripted step of a member in the property test.
#[derive(Debug, Clone)]
enum Step {
    Send(u8),
    Sync(u8),
}

fn script() -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(
        prop_oneof![(0u8..3).prop_map(Step::Send), (0u8..2).prop_map(Step::Sync)],
        0..6,
    )
}

proptest! {
    /// N members run scripts with the same sequence of syncs (as MultiNode tests must) and
    /// arbitrary sends in between, interleaved arbitrarily, some blocking and some polling:
    /// every member finishes every sync exactly once and then sees every message.
    #[test]
    fn any_interleaving_releases_everyone(
        members in 2usize..5,
        syncs in prop::collection::vec(0u8..2, 0..4),
        sends in prop::collection::vec(script(), 5),
        schedule in prop::collection::vec(0usize..5, 0..400),
        blocking in prop::collection::vec(any::<bool>(), 5),
    ) {
        let mut h = Harness::new();
        let size = members as u32;
        // Each member: its sends interleaved before each sync, then a wait_all per sent id.
        let plans: Vec<Vec<Step>> = (0..members)
            .map(|m| {
                let mut plan = Vec::new();
                for (k, s) in syncs.iter().enumerate() {
                    plan.extend(sends[m].iter().filter(|st| matches!(st, Step::Send(_))).skip(k).take(1).cloned());
                    plan.push(Step::Sync(*s));
                }
                plan.extend(sends[m].iter().filter(|st| matches!(st, Step::Send(_))).cloned());
                plan
            })
            .collect();
        let mut pos = vec![0usize; members];
        let mut parked: Vec<Option<WaiterId>> = vec![None; members];
        let mut turn = schedule.into_iter().chain((0..).map(|i| i % 5));
        let mut steps = 0;
        while pos.iter().zip(&plans).any(|(p, plan)| *p < plan.len()) {
            steps += 1;
            prop_assert!(steps < 100_000, "no progress: {pos:?}");
            let m = turn.next().unwrap() % members;
            if pos[m] >= plans[m].len() {
                continue;
            }
            if let Some(w) = parked[m] {
                match h.woken(w) {
                    Some(reply) => {
                        prop_assert_eq!(reply.response, Response::Ack);
                        parked[m] = None;
                        pos[m] += 1;
                    }
                    None => continue,
                }
                continue;
            }
            let client = format!("n{m}");
            let kind = match plans[m][pos[m]] {
                Step::Send(id) => send(&format!("m{id}"), json!({"from": client})),
                Step::Sync(id) => sync(&format!("s{id}")),
            };
            let req = h.req(&client, "r", size, kind);
            if blocking[m] {
                match h.block(req) {
                    Ok(reply) => { prop_assert_eq!(reply.response, Response::Ack); pos[m] += 1; }
                    Err(w) => parked[m] = Some(w),
                }
            } else {
                let reply = h.call(req);
                if !reply.is_wait() {
                    prop_assert_eq!(reply.response, Response::Ack);
                    pos[m] += 1;
                }
            }
        }
        prop_assert_eq!(h.machine.parked_count(), 0);
        // The running count of kept bytes is what a recount finds.
        prop_assert_eq!(h.machine.total_bytes(), h.machine.recount_bytes());
        // Every sent id is complete for wait (any member can read all of it).
        for (m, script) in sends.iter().enumerate().take(members) {
            for step in script {
                if let Step::Send(id) = step {
                    let reply = h.call(h.req("n0", "r", size, wait(&format!("m{id}"))));
                    prop_assert_eq!(reply.response, Response::Ack);
                    let message = reply.message.unwrap();
                    let sender = format!("n{m}");
                    prop_assert!(message.get(&sender).is_some());
                }
            }
        }
    }
}

fn limited(limits: Limits) -> Harness {
    let mut h = Harness::new();
    h.machine = Coordinator::new(Duration::from_secs(3600)).with_limits(limits);
    h
}

#[test]
fn limits_refuse_what_is_over_them_and_keep_the_rest() {
    let limits = Limits {
        max_groups: 2,
        max_group_size: 8,
        max_ids_per_group: 3,
        max_group_bytes: 200,
        max_total_bytes: 250,
    };
    let mut h = limited(limits);
    let nack = |r: Reply, what: &str| {
        assert_eq!(r.response, Response::Nack, "{r:?}");
        assert!(r.error.as_deref().unwrap().contains(what), "{r:?}");
    };
    nack(
        h.call(h.req("a", "r", 9, RequestKind::GroupData)),
        "max_group_size",
    );
    h.call(h.req("a", "r", 2, send("m1", json!({}))));
    h.call(h.req("a", "r", 2, sync("s1")));
    h.call(h.req("a", "r", 2, send("m2", json!({}))));
    nack(
        h.call(h.req("a", "r", 2, send("m3", json!({})))),
        "max_ids_per_group",
    );
    nack(h.call(h.req("a", "r", 2, sync("s2"))), "max_ids_per_group");
    // Existing ids can still be used and replaced.
    assert_eq!(
        h.call(h.req("a", "r", 2, send("m1", json!({"k": "v"})))),
        Reply::ack()
    );
    nack(
        h.call(h.req("a", "r", 2, send("m1", json!({"k": "x".repeat(300)})))),
        "max_group_bytes",
    );
    assert_eq!(
        h.call(h.req("b", "r", 2, wait("m1"))),
        Reply::ack_message(json!({"a": {"k": "v"}})),
        "a refused send keeps the earlier data"
    );
    // The total is shared by all groups.
    let mut other = h.req("z", "r", 1, send("big", json!({"k": "y".repeat(150)})));
    other.group_name = "other".into();
    assert_eq!(h.call(other.clone()), Reply::ack());
    nack(
        h.call(h.req("a", "r", 2, send("m1", json!({"k": "w".repeat(100)})))),
        "max_total_bytes",
    );
    let mut third = h.req("q", "r", 2, RequestKind::GroupData);
    third.group_name = "third".into();
    nack(h.call(third), "max_groups");
    // Clearing a group frees its bytes.
    other.kind = RequestKind::ClearGroup;
    assert_eq!(h.call(other), Reply::ack());
    assert!(h.machine.group("other").is_none());
    assert_eq!(
        h.call(h.req("a", "r", 2, send("m1", json!({"k": "w".repeat(100)})))),
        Reply::ack()
    );
}

#[test]
fn a_group_secret_keeps_out_requests_without_it() {
    let mut h = Harness::new();
    let with = |h: &Harness, client: &str, secret: Option<&str>, kind| {
        let mut r = h.req(client, "r", 2, kind);
        r.group_secret = secret.map(Into::into);
        r
    };
    assert!(h
        .call(with(&h, "a", Some("s3cret"), RequestKind::GroupData))
        .is_wait());
    for secret in [None, Some("wrong"), Some("s3cre"), Some("s3cretX")] {
        let reply = h.call(with(&h, "b", secret, RequestKind::GroupData));
        assert_eq!(reply.response, Response::Nack, "{secret:?}");
        assert!(
            !reply.error.unwrap().contains("s3cret"),
            "the secret is not revealed"
        );
    }
    assert_eq!(
        h.machine.group(G).unwrap().members.len(),
        1,
        "nobody got in"
    );
    assert_eq!(
        h.call(with(&h, "b", Some("s3cret"), RequestKind::GroupData))
            .response,
        Response::GroupData
    );
    // A group created without a secret takes requests with or without one.
    let mut open = h.req("x", "r", 1, RequestKind::GroupData);
    open.group_name = "open".into();
    open.group_secret = Some("anything".into());
    assert_eq!(h.call(open).response, Response::GroupData);
}

fn fail(reason: &str) -> RequestKind {
    RequestKind::Fail {
        reason: reason.into(),
    }
}

fn assert_nack_naming(reply: Option<Reply>, words: &[&str]) {
    let reply = reply.expect("answered");
    assert_eq!(reply.response, Response::Nack, "{reply:?}");
    let error = reply.error.unwrap();
    for w in words {
        assert!(error.contains(w), "{error:?} does not name {w:?}");
    }
}

#[test]
fn a_failed_member_releases_what_waits_on_it_at_once() {
    let mut h = Harness::new();
    for c in ["a", "b", "c"] {
        h.call(h.req(c, "r", 3, RequestKind::GroupData));
    }
    let wa = h.block(h.req("a", "r", 3, sync("s"))).unwrap_err();
    let wb = h
        .block(h.req("b", "r", 3, wait_all("m", None)))
        .unwrap_err();
    assert_eq!(h.call(h.req("c", "r", 3, fail("disk full"))), Reply::ack());
    assert_nack_naming(h.woken(wa), &["\"c\"", "disk full"]);
    assert_nack_naming(h.woken(wb), &["\"c\"", "disk full"]);
    // A LAVA client polling later hears the same.
    assert_nack_naming(Some(h.call(h.req("b", "r", 3, sync("s")))), &["\"c\""]);
    assert_eq!(h.machine.parked_count(), 0);
}

#[test]
fn failure_verdicts_spare_what_the_failed_member_already_did() {
    let mut h = Harness::new();
    for (c, r) in [("a", "client"), ("b", "server"), ("c", "server")] {
        h.call(h.req(c, r, 3, RequestKind::GroupData));
    }
    h.call(h.req("c", "server", 3, sync("s")));
    h.call(h.req("c", "server", 3, send("m", json!({}))));
    let wa = h.block(h.req("a", "client", 3, sync("s"))).unwrap_err();
    let wall = h
        .block(h.req("a", "client", 3, wait_all("m", Some("server"))))
        .unwrap_err();
    let wany = h.block(h.req("a", "client", 3, wait("n"))).unwrap_err();
    h.call(h.req("c", "server", 3, fail("late crash")));
    assert!(h.woken(wa).is_none(), "c had arrived at s before failing");
    assert!(h.woken(wall).is_none(), "c had sent m; b still can");
    assert!(h.woken(wany).is_none(), "b can still send n");
    assert_eq!(
        h.call(h.req("b", "server", 3, sync("s"))).response,
        Response::Ack
    );
    assert_eq!(h.woken(wa).map(|r| r.response), Some(Response::Ack));
    // Once b fails too, nobody but a is left to send n.
    h.call(h.req("b", "server", 3, fail("gone")));
    assert_nack_naming(h.woken(wany), &["every other member failed"]);
    assert_nack_naming(h.woken(wall), &["\"b\"", "gone"]);
}

#[test]
fn a_group_whose_live_members_all_wait_is_told_at_once() {
    let mut h = Harness::new();
    for c in ["a", "b", "c"] {
        h.call(h.req(c, "r", 3, RequestKind::GroupData));
    }
    let wa = h.block(h.req("a", "r", 3, wait("from-b"))).unwrap_err();
    let wb = h
        .block(h.req("b", "r", 3, wait_all("from-all", None)))
        .unwrap_err();
    assert!(
        h.woken(wa).is_none() && h.woken(wb).is_none(),
        "c may still act"
    );
    // c polls LAVA-style: not held, so no verdict.
    assert!(h.call(h.req("c", "r", 3, wait("never"))).is_wait());
    assert!(h.woken(wa).is_none());
    // c blocks too: nobody is left to act.
    let reply = h.block(h.req("c", "r", 3, sync("s"))).unwrap();
    assert_nack_naming(
        Some(reply),
        &[
            "deadlock",
            "a waits for lava_wait from-b",
            "c waits for lava_sync s",
        ],
    );
    assert_nack_naming(h.woken(wa), &["deadlock"]);
    assert_nack_naming(h.woken(wb), &["b waits for lava_wait_all from-all"]);
    assert_eq!(h.machine.parked_count(), 0);
    assert!(h
        .machine
        .take_events()
        .iter()
        .any(|e| matches!(e, Event::Deadlock { .. })));
}

#[test]
fn no_deadlock_verdict_while_a_member_has_not_registered_or_has_cleared() {
    let mut h = Harness::new();
    let wa = h.block(h.req("a", "r", 3, wait("x"))).unwrap_err();
    let wb = h.block(h.req("b", "r", 3, wait("y"))).unwrap_err();
    assert!(
        h.woken(wa).is_none() && h.woken(wb).is_none(),
        "c has not registered: it may still send"
    );
    // c registers and clears: it will not act any more.
    h.call(h.req("c", "r", 3, RequestKind::ClearGroup));
    assert_nack_naming(h.woken(wa), &["deadlock"]);
    assert_nack_naming(h.woken(wb), &["deadlock"]);
}

#[test]
fn operators_can_turn_the_verdicts_off() {
    let mut h = Harness::new();
    h.machine = Coordinator::new(Duration::from_secs(3600)).with_verdicts(Verdicts {
        failure_propagation: false,
        deadlock_detection: false,
    });
    let wa = h.block(h.req("a", "r", 2, wait("x"))).unwrap_err();
    let wb = h.block(h.req("b", "r", 2, wait("y"))).unwrap_err();
    assert!(h.woken(wa).is_none() && h.woken(wb).is_none());
    assert_nack_naming(Some(h.call(h.req("a", "r", 2, fail("x")))), &["turned off"]);
}

#[test]
fn long_waits_are_reported_once_naming_whom_they_wait_for() {
    let mut h = Harness::new();
    for c in ["a", "b", "c"] {
        h.call(h.req(c, "r", 3, RequestKind::GroupData));
    }
    h.call(h.req("b", "r", 3, sync("s")));
    h.block(h.req("a", "r", 3, sync("s"))).unwrap_err();
    assert!(h
        .machine
        .long_waits(h.now + Duration::from_secs(5), Duration::from_secs(60))
        .is_empty());
    let lines = h
        .machine
        .long_waits(h.now + Duration::from_secs(61), Duration::from_secs(60));
    assert_eq!(lines.len(), 1);
    assert!(
        lines[0].contains("a has waited 61s for lava_sync s (missing: c)"),
        "{lines:?}"
    );
    assert!(h
        .machine
        .long_waits(h.now + Duration::from_secs(120), Duration::from_secs(60))
        .is_empty());
}

#[test]
fn a_waiting_tool_that_stops_asking_counts_as_gone_after_its_lease() {
    let mut h = Harness::new();
    for c in ["a", "b", "c"] {
        h.call(h.req(c, "r", 3, RequestKind::GroupData));
    }
    let leased = |h: &Harness, client: &str, kind| {
        let mut r = h.req(client, "r", 3, kind);
        r.block = Some(1.0);
        r.lease = Some(5.0);
        r
    };
    // a waits for a message, then its tool is killed: the held request times out and nobody
    // asks again.
    let wa = h.block(leased(&h, "a", wait("x"))).unwrap_err();
    assert!(h.machine.cancel(wa));
    // b waits for everyone's "m": a's included.
    let wb = h.block(leased(&h, "b", wait_all("m", None))).unwrap_err();
    // c polls like LAVA's client, without a lease: never leased out.
    assert!(h.call(h.req("c", "r", 3, wait("x"))).is_wait());
    assert!(
        h.machine
            .expire_leases(h.now + Duration::from_secs(5))
            .is_empty(),
        "within 1 + 5 s"
    );
    // b's own lease is kept alive by its held request.
    let wakeups = h.machine.expire_leases(h.now + Duration::from_secs(7));
    assert_eq!(wakeups.len(), 1);
    assert_eq!(wakeups[0].waiter, wb);
    assert_nack_naming(Some(wakeups[0].reply.clone()), &["\"a\"", "lease expired"]);
    assert!(h.machine.group(G).unwrap().failed.contains_key("a"));
    assert!(!h.machine.group(G).unwrap().failed.contains_key("c"));
}

#[test]
fn a_finished_call_ends_its_lease() {
    let mut h = Harness::new();
    let mut r = h.req("a", "r", 1, sync("s"));
    r.lease = Some(1.0);
    assert_eq!(h.call(r).response, Response::Ack);
    assert!(h.machine.group(G).unwrap().leases.is_empty());
    assert!(h
        .machine
        .expire_leases(h.now + Duration::from_secs(60))
        .is_empty());
}

/// Finding 5 of issue 15: a refusal stores nothing. The group's member count and the
/// mutations to store are what a refused request could have left behind.
#[test]
fn a_refused_request_leaves_no_trace() {
    let limits = Limits {
        max_groups: 10,
        max_group_size: 8,
        max_ids_per_group: 2,
        max_group_bytes: 1000,
        max_total_bytes: 300,
    };
    let mut h = limited(limits);
    let nack = |r: Reply, what: &str| {
        assert_eq!(r.response, Response::Nack, "{r:?}");
        assert!(r.error.as_deref().unwrap().contains(what), "{r:?}");
    };
    // Over the total: neither the group nor its client may stay.
    nack(
        h.call(h.req("a", "r", 2, send("m", json!({"k": "x".repeat(400)})))),
        "max_total_bytes",
    );
    assert!(h.machine.group(G).is_none(), "no group created");
    assert_eq!(h.machine.groups().count(), 0);
    assert!(h.machine.take_mutations().is_empty(), "nothing to store");
    assert!(h.machine.take_events().is_empty(), "no group was created");
    assert_eq!(h.machine.total_bytes(), 0);
    // The same over the group's ids, and without a role to register.
    assert_eq!(
        h.call(h.req("a", "r", 2, send("m1", json!({})))),
        Reply::ack()
    );
    assert_eq!(
        h.call(h.req("a", "r", 2, send("m2", json!({})))),
        Reply::ack()
    );
    h.machine.take_mutations();
    let bytes = h.machine.total_bytes();
    nack(
        h.call(h.req("b", "r", 2, send("m3", json!({})))),
        "max_ids_per_group",
    );
    nack(h.call(h.req("b", "r", 2, sync("s"))), "max_ids_per_group");
    nack(
        h.call(h.req("b", "r", 2, send("m1", json!({"k": "x".repeat(400)})))),
        "max_total_bytes",
    );
    nack(
        h.call(h.req("b", "r", 2, RequestKind::Aggregate)),
        "aggregate",
    );
    let members: Vec<&String> = h.machine.group(G).unwrap().members.keys().collect();
    assert_eq!(members, ["a"], "the refused client was not registered");
    assert!(h.machine.take_mutations().is_empty());
    assert_eq!(h.machine.total_bytes(), bytes);
    // A refused roster declaration declares nothing and creates nothing.
    let mut r = Request::new(
        "rostered",
        "x",
        "r",
        RequestKind::DeclareRoster {
            roster: roles(&[("y", "r"), ("z", "r")]),
        },
    );
    r.group_size = Some(2);
    nack(h.call(r), "not in the roster");
    assert!(h.machine.group("rostered").is_none());
    assert!(h.machine.take_mutations().is_empty());
    let mut r = h.req("c", "r", 2, RequestKind::GroupData);
    r.group_name = "nameless".into();
    r.role = None;
    nack(h.call(r), "role");
    assert!(h.machine.group("nameless").is_none());
    assert!(h.machine.take_mutations().is_empty());
}

/// Finding 5 of issue 15: a sync's message is kept (its reply, and for a retry), so it counts
/// against `max_group_bytes` and `max_total_bytes` like a send's.
#[test]
fn sync_messages_count_against_the_limits() {
    let limits = Limits {
        max_group_bytes: 500,
        max_total_bytes: 800,
        ..Limits::default()
    };
    let mut h = limited(limits);
    let big_sync = |h: &Harness, client: &str, group: &str, n: usize| {
        let mut r = h.req(
            client,
            "r",
            2,
            RequestKind::Sync {
                id: "s".into(),
                message: json!({ "k": "x".repeat(n) }),
            },
        );
        r.group_name = group.into();
        r
    };
    let reply = h.call(big_sync(&h, "a", G, 600));
    assert_eq!(reply.response, Response::Nack, "{reply:?}");
    assert!(reply.error.unwrap().contains("max_group_bytes"));
    assert!(h.machine.group(G).is_none());
    assert!(h.call(big_sync(&h, "a", G, 100)).is_wait());
    let kept = h.machine.total_bytes();
    assert!(kept > 100, "the sync message is counted: {kept}");
    // Other groups fill the total; the next big sync is refused.
    assert!(h.call(big_sync(&h, "a", "g2", 200)).is_wait());
    let reply = h.call(big_sync(&h, "a", "g3", 200));
    assert_eq!(reply.response, Response::Nack, "{reply:?}");
    assert!(reply.error.unwrap().contains("max_total_bytes"));
    assert!(h.machine.group("g3").is_none());
    assert!(h.machine.total_bytes() <= 800);
}

/// Finding 5 of issue 15: group, client and role names (and a roster, a failure's reason)
/// are kept as well, and count.
#[test]
fn names_count_against_the_limits() {
    let limits = Limits {
        max_group_bytes: 300,
        max_total_bytes: 1000,
        ..Limits::default()
    };
    let mut h = limited(limits);
    let long = "n".repeat(400);
    let mut r = h.req("a", "r", 2, RequestKind::GroupData);
    r.group_name = long.clone();
    let reply = h.call(r);
    assert_eq!(
        reply.response,
        Response::Nack,
        "a group name over the limit"
    );
    assert!(h.machine.group(&long).is_none());
    let reply = h.call(h.req(&long, "r", 2, RequestKind::GroupData));
    assert_eq!(
        reply.response,
        Response::Nack,
        "a client name over the limit"
    );
    assert!(h.machine.group(G).is_none());
    let reply = h.call(h.req("a", &long, 2, RequestKind::GroupData));
    assert_eq!(reply.response, Response::Nack, "a role over the limit");
    assert!(h.machine.take_mutations().is_empty());
    assert_eq!(h.machine.total_bytes(), 0);
    // Names under the limit are counted.
    assert!(h
        .call(h.req("a", "role", 2, RequestKind::GroupData))
        .is_wait());
    assert_eq!(h.machine.total_bytes(), G.len() + "a".len() + "role".len());
    // A failure's reason is kept too.
    let reply = h.call(h.req("a", "role", 2, fail(&long)));
    assert_eq!(reply.response, Response::Nack, "{reply:?}");
    assert!(h.machine.group(G).unwrap().failed.is_empty());
    // Many groups with middling names reach the total.
    let mut created = 0;
    for i in 0..20 {
        let mut r = h.req("a", "r", 2, RequestKind::GroupData);
        r.group_name = format!("{i:0>100}");
        if h.call(r).is_wait() {
            created += 1;
        }
    }
    assert!(created < 20, "the total stopped them");
    assert!(h.machine.total_bytes() <= 1000);
}

/// Finding 5 of issue 15: a refusal's text (logged by the server) quotes client text only up
/// to a bound.
#[test]
fn refusals_quote_client_text_only_up_to_a_bound() {
    let mut h = limited(Limits {
        max_group_bytes: 100,
        ..Limits::default()
    });
    let long = "g".repeat(10_000);
    let mut r = h.req("a", "r", 2, RequestKind::GroupData);
    r.group_name = long.clone();
    r.group_size = None;
    let error = h.call(r).error.unwrap();
    assert!(error.len() < 400, "{} bytes", error.len());
    assert!(error.contains("...(10000 bytes)"), "{error}");
    let error = h
        .call(h.req(&long, "r", 2, RequestKind::GroupData))
        .error
        .unwrap();
    assert!(
        error.len() < 400,
        "{} bytes: {}",
        error.len(),
        &error[..100]
    );
    assert_eq!(quoted("short"), "\"short\"");
}

/// What the store keeps, for restarts in these tests: the mutations applied as SQLite does.
#[derive(Default)]
struct Disk {
    groups: HashMap<String, String>,
    messages: Vec<(String, String, String, String)>,
}

impl Disk {
    fn apply(&mut self, mutations: Vec<Mutation>) {
        for m in mutations {
            match m {
                Mutation::DeleteGroup { group } => {
                    self.groups.remove(&group);
                    self.messages.retain(|(g, ..)| *g != group);
                }
                Mutation::PutGroup { group, meta } => {
                    self.groups.insert(group, meta);
                }
                Mutation::PutMessage {
                    group,
                    id,
                    sender,
                    data,
                } => {
                    match self
                        .messages
                        .iter_mut()
                        .find(|(g, i, s, _)| *g == group && *i == id && *s == sender)
                    {
                        Some(row) => row.3 = data,
                        None => self.messages.push((group, id, sender, data)),
                    }
                }
                // The state machine makes none: the server's history does.
                Mutation::PutHistory { .. } | Mutation::TrimHistory { .. } => {
                    panic!("the state machine made a history row")
                }
            }
        }
    }
}

impl Harness {
    /// `kill -9` and a restart on the same state: what was stored survives, held requests
    /// and replies not yet delivered are lost.
    fn restart(&mut self, disk: &mut Disk) {
        disk.apply(self.machine.take_mutations());
        let mut machine =
            Coordinator::new(Duration::from_secs(3600)).with_limits(self.machine.limits.clone());
        for (name, meta) in &disk.groups {
            let messages =
                disk.messages
                    .iter()
                    .filter(|(g, ..)| g == name)
                    .map(|(_, id, sender, data)| {
                        (
                            id.clone(),
                            sender.clone(),
                            serde_json::from_str(data).unwrap(),
                        )
                    });
            machine.restore(Group::restore(name, meta, messages, self.now).unwrap());
        }
        self.machine = machine;
        self.woken.clear();
    }
}

/// Finding 2 of issue 15: a LAVA client (polling, no request_id) whose sync `ack` was lost to
/// a crash asks again after the restart, and gets the answer it missed instead of opening a
/// round nobody joins. Its next sync on the id is a new round.
#[test]
fn a_lava_clients_sync_reply_lost_to_a_restart_is_answered_on_its_retry() {
    let mut h = Harness::new();
    let mut disk = Disk::default();
    assert!(h.call(h.req("a", "r", 2, sync("s"))).is_wait());
    // b completes the round; its ack is committed, then the coordinator dies before it leaves.
    assert_eq!(
        h.call(h.req("b", "r", 2, sync("s"))),
        Reply::ack_message(json!("s"))
    );
    h.restart(&mut disk);
    assert_eq!(
        h.call(h.req("b", "r", 2, sync("s"))),
        Reply::ack_message(json!("s")),
        "b's retry is answered with the reply it missed"
    );
    assert_eq!(
        h.call(h.req("a", "r", 2, sync("s"))),
        Reply::ack_message(json!("s"))
    );
    // Both go on to a second sync on the same id: a round of its own, for both.
    assert!(h.call(h.req("a", "r", 2, sync("s"))).is_wait());
    assert!(h.call(h.req("a", "r", 2, sync("s"))).is_wait());
    assert_eq!(
        h.call(h.req("b", "r", 2, sync("s"))),
        Reply::ack_message(json!("s"))
    );
    assert_eq!(
        h.call(h.req("a", "r", 2, sync("s"))),
        Reply::ack_message(json!("s"))
    );
    assert!(
        h.call(h.req("a", "r", 2, sync("s"))).is_wait(),
        "a third round"
    );
}

/// The same with the reply of the member that polled last (the round was complete before it
/// asked), and across two restarts (the repeated answer may be lost too).
#[test]
fn a_sync_reply_lost_twice_is_answered_twice() {
    let mut h = Harness::new();
    let mut disk = Disk::default();
    assert!(h.call(h.req("a", "r", 2, sync("s"))).is_wait());
    assert_eq!(
        h.call(h.req("b", "r", 2, sync("s"))).response,
        Response::Ack
    );
    assert_eq!(
        h.call(h.req("a", "r", 2, sync("s"))).response,
        Response::Ack
    );
    h.restart(&mut disk);
    assert_eq!(
        h.call(h.req("a", "r", 2, sync("s"))),
        Reply::ack_message(json!("s"))
    );
    h.restart(&mut disk);
    assert_eq!(
        h.call(h.req("a", "r", 2, sync("s"))),
        Reply::ack_message(json!("s"))
    );
    assert_eq!(
        h.call(h.req("b", "r", 2, sync("s"))),
        Reply::ack_message(json!("s"))
    );
    // Then each one's next sync is a new round.
    assert!(h.call(h.req("a", "r", 2, sync("s"))).is_wait());
    assert_eq!(
        h.call(h.req("b", "r", 2, sync("s"))).response,
        Response::Ack
    );
}

/// docs/COMPATIBILITY.md #15 still holds for LAVA clients: back to back syncs on one id make
/// two rounds, without a restart, and with a restart after the member did something else.
#[test]
fn back_to_back_lava_syncs_make_two_rounds() {
    let mut h = Harness::new();
    let mut disk = Disk::default();
    assert!(h.call(h.req("a", "r", 2, sync("s"))).is_wait());
    assert_eq!(
        h.call(h.req("b", "r", 2, sync("s"))).response,
        Response::Ack
    );
    // b got its reply and syncs again at once, before a picked round 1 up.
    assert!(
        h.call(h.req("b", "r", 2, sync("s"))).is_wait(),
        "not a retry"
    );
    assert_eq!(
        h.call(h.req("a", "r", 2, sync("s"))).response,
        Response::Ack
    );
    assert!(
        h.call(h.req("b", "r", 2, sync("s"))).is_wait(),
        "round 2 needs a"
    );
    assert_eq!(
        h.call(h.req("a", "r", 2, sync("s"))).response,
        Response::Ack
    );
    assert_eq!(
        h.call(h.req("b", "r", 2, sync("s"))).response,
        Response::Ack
    );
    // A restart after a member acted on its reply: its next sync is a new round.
    assert!(h.call(h.req("a", "r", 2, sync("t"))).is_wait());
    assert_eq!(
        h.call(h.req("b", "r", 2, sync("t"))).response,
        Response::Ack
    );
    assert_eq!(
        h.call(h.req("b", "r", 2, send("m", json!({})))),
        Reply::ack()
    );
    h.restart(&mut disk);
    assert!(
        h.call(h.req("b", "r", 2, sync("t"))).is_wait(),
        "b is at round 2"
    );
    assert_eq!(
        h.call(h.req("a", "r", 2, sync("t"))).response,
        Response::Ack
    );
    assert!(h.call(h.req("b", "r", 2, sync("t"))).is_wait());
}

/// With `hold_lava_requests` (parked, no request_id): a wake-up lost to a crash is answered
/// on the retry after the restart, at once.
#[test]
fn a_held_lava_sync_whose_wakeup_was_lost_gets_it_on_retry() {
    let mut h = Harness::new();
    let mut disk = Disk::default();
    let wa = h.block(h.req("a", "r", 2, sync("s"))).unwrap_err();
    assert_eq!(
        h.block(h.req("b", "r", 2, sync("s"))).unwrap().response,
        Response::Ack
    );
    assert!(h.woken(wa).is_some(), "released, but the crash loses it");
    h.restart(&mut disk);
    assert_eq!(
        h.block(h.req("a", "r", 2, sync("s"))),
        Ok(Reply::ack_message(json!("s")))
    );
    assert_eq!(
        h.block(h.req("b", "r", 2, sync("s"))),
        Ok(Reply::ack_message(json!("s")))
    );
    assert_eq!(h.machine.parked_count(), 0);
}

/// A reply the server could not write (the connection was reset) is answered again on the
/// retry, without a restart, once the server says so.
#[test]
fn a_sync_reply_lost_to_a_reset_is_answered_on_retry() {
    let mut h = Harness::new();
    assert!(h.call(h.req("a", "r", 2, sync("s"))).is_wait());
    let req = h.req("b", "r", 2, sync("s"));
    assert_eq!(h.call(req.clone()).response, Response::Ack);
    h.machine.reply_lost(&req);
    assert_eq!(h.call(req.clone()), Reply::ack_message(json!("s")));
    // Other replies lost change nothing.
    h.machine.reply_lost(&h.req("a", "r", 2, wait("m")));
    assert!(h.call(req).is_wait(), "b's next sync is round 2");
}

/// One arbitrary request of the byte-accounting property test.
#[derive(Debug, Clone)]
struct AnyRequest {
    client: u8,
    group: u8,
    kind: u8,
    id: u8,
    text: String,
    request_id: Option<u8>,
    park: bool,
}

fn any_request() -> impl Strategy<Value = AnyRequest> {
    (
        0u8..4,
        0u8..2,
        0u8..13,
        0u8..3,
        "[a-z]{0,40}",
        prop::option::of(0u8..3),
        any::<bool>(),
    )
        .prop_map(
            |(client, group, kind, id, text, request_id, park)| AnyRequest {
                client,
                group,
                kind,
                id,
                text,
                request_id,
                park,
            },
        )
}

proptest! {
    /// Finding 5 of issue 15: whatever the requests (every kind, refused or not, parked or
    /// not, across restarts), the running count of kept bytes is what a recount finds, and a
    /// refusal leaves nothing to store.
    #[test]
    fn kept_bytes_are_counted_exactly(
        requests in prop::collection::vec(any_request(), 1..120),
        restart_every in 5usize..40,
    ) {
        let mut h = limited(Limits {
            max_groups: 2,
            max_group_size: 8,
            max_ids_per_group: 4,
            max_group_bytes: 600,
            max_total_bytes: 1000,
        });
        let mut disk = Disk::default();
        for (step, r) in requests.iter().enumerate() {
            let client = ["a", "b", "c", "d"][r.client as usize];
            let id = format!("x{}", r.id);
            let kind = match r.kind {
                0 => RequestKind::GroupData,
                1 => send(&id, json!({ "t": r.text })),
                2 => wait(&id),
                3 => wait_all(&id, None),
                4 | 5 => RequestKind::Sync {
                    id: id.clone(),
                    message: if r.text.is_empty() { json!({}) } else { json!(r.text) },
                },
                6 => fail(&r.text),
                7 => RequestKind::ClearGroup,
                8 => RequestKind::DeclareRoster {
                    roster: roles(&[("a", "r"), ("b", "r"), ("c", "s")]),
                },
                9 => RequestKind::Aggregate,
                10 => RequestKind::VmStart { host_ip: r.text.clone() },
                11 => RequestKind::VmStop {
                    status: VmStatus::Failed,
                    reason: Some(r.text.clone()),
                },
                _ => RequestKind::VmWaitAll,
            };
            let mut req = h.req(client, if client == "c" { "s" } else { "r" }, 3, kind);
            req.group_name = format!("g{}", r.group);
            req.request_id = r.request_id.map(|n| format!("call-{n}"));
            let reply = if r.park {
                h.block(req).ok()
            } else {
                Some(h.call(req))
            };
            let mutations = h.machine.take_mutations();
            if let Some(reply) = &reply {
                let refused = reply.error.as_deref().is_some_and(|e| {
                    e.contains("limit") || e.contains("aggregate") || e.contains("roster")
                });
                if refused {
                    prop_assert!(mutations.is_empty(), "{reply:?} stored {mutations:?}");
                }
            }
            disk.apply(mutations);
            prop_assert_eq!(
                h.machine.total_bytes(),
                h.machine.recount_bytes(),
                "step {} {:?}: {:?}",
                step,
                r,
                reply
            );
            prop_assert!(
                h.machine.total_bytes() <= 1000,
                "{} after {r:?}: {reply:?}",
                h.machine.total_bytes()
            );
            if step % restart_every == restart_every - 1 {
                let before = h.machine.total_bytes();
                h.restart(&mut disk);
                prop_assert_eq!(h.machine.total_bytes(), before, "the same after a restart");
            }
        }
        let _ = h.machine.expire_leases(h.now + Duration::from_secs(100));
        h.machine.take_mutations();
        prop_assert_eq!(h.machine.total_bytes(), h.machine.recount_bytes());
    }
}

/// Found by `kept_bytes_are_counted_exactly`: a member held twice in one round (it asked
/// again while held) is answered on both, and its pick-up counted once.
#[test]
fn a_member_held_twice_in_a_round_is_picked_up_once() {
    let mut h = Harness::new();
    let wa1 = h.block(h.req("a", "r", 2, sync("s"))).unwrap_err();
    let wa2 = h.block(h.req("a", "r", 2, sync("s"))).unwrap_err();
    assert_eq!(
        h.call(h.req("b", "r", 2, sync("s"))),
        Reply::ack_message(json!("s"))
    );
    assert_eq!(h.woken(wa1), Some(Reply::ack_message(json!("s"))));
    assert_eq!(h.woken(wa2), Some(Reply::ack_message(json!("s"))));
    assert_eq!(h.machine.total_bytes(), h.machine.recount_bytes());
}

#[test]
fn a_call_answered_while_held_ends_its_lease() {
    let mut h = Harness::new();
    let mut r = h.req("a", "r", 2, wait("m"));
    r.block = Some(20.0);
    r.lease = Some(5.0);
    let wa = h.block(r).unwrap_err();
    h.call(h.req("b", "r", 2, send("m", json!({}))));
    assert_eq!(h.woken(wa).unwrap().response, Response::Ack);
    // a's tool got its answer and went on with its script: it owes no further call.
    assert!(h
        .machine
        .expire_leases(h.now + Duration::from_secs(60))
        .is_empty());
    assert!(!h.machine.group(G).unwrap().failed.contains_key("a"));
}

fn lock(name: &str, count: u32) -> RequestKind {
    RequestKind::Lock {
        name: name.into(),
        count,
        scope: LockScope::Group,
    }
}
fn lab_lock(name: &str) -> RequestKind {
    RequestKind::Lock {
        name: name.into(),
        count: 1,
        scope: LockScope::Lab,
    }
}
fn unlock(name: &str) -> RequestKind {
    RequestKind::Unlock {
        name: name.into(),
        scope: LockScope::Group,
    }
}

/// The holders a granted lock's reply names, and whose place it got and why.
fn granted(reply: &Reply) -> (Vec<String>, Option<String>, Option<String>) {
    assert_eq!(reply.response, Response::Ack, "{reply:?}");
    let message = reply
        .message
        .as_ref()
        .expect("a lock's ack carries the lock");
    let holders = message["holders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap().to_owned())
        .collect();
    let text = |key: &str| message.get(key).and_then(Value::as_str).map(str::to_owned);
    (holders, text("freed_by"), text("freed_because"))
}

#[test]
fn a_lock_has_one_holder_and_the_next_waiter_is_told_whose_place_it_got() {
    let mut h = Harness::new();
    let (holders, freed_by, _) = granted(&h.call(h.req("a", "r", 3, lock("dut", 1))));
    assert_eq!((holders, freed_by), (vec!["a".to_owned()], None));
    let wb = h.block(h.req("b", "r", 3, lock("dut", 1))).unwrap_err();
    let wc = h.block(h.req("c", "r", 3, lock("dut", 1))).unwrap_err();
    // Asking again while holding is answered at once (the retry of a lost answer).
    assert_eq!(
        granted(&h.call(h.req("a", "r", 3, lock("dut", 1)))).0,
        ["a"]
    );
    assert_nack_naming(
        Some(h.call(h.req("c", "r", 3, unlock("dut")))),
        &["\"c\" does not hold lock \"dut\""],
    );
    let status = h.machine.status(Some(G), h.now);
    assert_eq!(status[0]["locks"]["group"]["dut"]["holders"], json!(["a"]));
    let blocked = status[0]["blocked"].as_array().unwrap();
    assert_eq!(blocked[0]["waits_for"], "lava-lock dut");

    assert_eq!(
        h.call(h.req("a", "r", 3, unlock("dut"))).response,
        Response::Ack
    );
    let (holders, freed_by, because) = granted(&h.woken(wb).unwrap());
    assert_eq!(holders, ["b"]);
    assert_eq!(freed_by.as_deref(), Some("a"));
    assert_eq!(because.as_deref(), Some("unlocked"));
    assert!(h.woken(wc).is_none(), "one holder at a time");
    assert_eq!(h.machine.parked_count(), 1);
}

#[test]
fn a_holder_that_fails_clears_or_is_gone_gives_its_place_back_at_once() {
    let mut h = Harness::new();
    // e is busy elsewhere (never held): no deadlock verdict.
    for c in ["a", "b", "c", "d", "e"] {
        h.call(h.req(c, "r", 5, RequestKind::GroupData));
    }
    granted(&h.call(h.req("a", "r", 5, lock("dut", 1))));
    let wb = h.block(h.req("b", "r", 5, lock("dut", 1))).unwrap_err();
    let wc = h.block(h.req("c", "r", 5, lock("dut", 1))).unwrap_err();
    let mut leased = h.req("d", "r", 5, lock("dut", 1));
    leased.block = Some(1.0);
    leased.lease = Some(2.0);
    let wd = h.block(leased).unwrap_err();

    h.call(h.req(
        "a",
        "r",
        4,
        RequestKind::Fail {
            reason: "disk full".into(),
        },
    ));
    let (holders, freed_by, because) = granted(&h.woken(wb).unwrap());
    assert_eq!(
        (holders, freed_by),
        (vec!["b".to_owned()], Some("a".to_owned()))
    );
    assert_eq!(because.as_deref(), Some("\"a\" failed: disk full"));

    h.call(h.req("b", "r", 5, RequestKind::ClearGroup));
    let (_, freed_by, because) = granted(&h.woken(wc).unwrap());
    assert_eq!(freed_by.as_deref(), Some("b"));
    assert_eq!(because.as_deref(), Some("\"b\" cleared the group"));

    // c holds it and waits on something else with a lease; its tool is killed: gone.
    let mut waiting = h.req("c", "r", 5, wait("never"));
    waiting.block = Some(1.0);
    waiting.lease = Some(2.0);
    let wc2 = h.block(waiting).unwrap_err();
    assert!(h.machine.cancel(wc2));
    // d's tool is still held (its lease is kept alive by its held call).
    let wakeups = h.machine.expire_leases(h.now + Duration::from_secs(4));
    let to_d = wakeups.iter().find(|w| w.waiter == wd).expect("d served");
    let (holders, freed_by, because) = granted(&to_d.reply);
    assert_eq!(
        (holders, freed_by),
        (vec!["d".to_owned()], Some("c".to_owned()))
    );
    assert!(because.unwrap().contains("lease expired"));
}

#[test]
fn a_counted_lock_has_up_to_count_holders_and_one_count() {
    let mut h = Harness::new();
    granted(&h.call(h.req("a", "r", 4, lock("pool", 2))));
    let (holders, ..) = granted(&h.call(h.req("b", "r", 4, lock("pool", 2))));
    assert_eq!(holders, ["a", "b"]);
    let wc = h.block(h.req("c", "r", 4, lock("pool", 2))).unwrap_err();
    assert_nack_naming(
        Some(h.call(h.req("d", "r", 4, lock("pool", 3)))),
        &["lock \"pool\" has 2 places; this request asks for 3"],
    );
    assert!(
        !h.machine.group(G).unwrap().members.contains_key("d"),
        "a refused request registers nobody"
    );
    h.call(h.req("b", "r", 4, unlock("pool")));
    let (holders, freed_by, _) = granted(&h.woken(wc).unwrap());
    assert_eq!(
        (holders, freed_by.as_deref()),
        (vec!["a".to_owned(), "c".to_owned()], Some("b"))
    );
}

#[test]
fn trying_a_full_lock_without_parking_reserves_nothing() {
    let mut h = Harness::new();
    granted(&h.call(h.req("a", "r", 2, lock("dut", 1))));
    assert!(h.call(h.req("b", "r", 2, lock("dut", 1))).is_wait());
    assert_eq!(h.machine.parked_count(), 0);
    h.call(h.req("a", "r", 2, unlock("dut")));
    let status = h.machine.status(Some(G), h.now);
    assert_eq!(status[0]["locks"]["group"], json!({}), "nobody holds it");
    granted(&h.call(h.req("b", "r", 2, lock("dut", 1))));
}

#[test]
fn a_group_waiting_on_a_lock_its_holder_cannot_give_back_is_deadlocked() {
    let mut h = Harness::new();
    granted(&h.call(h.req("a", "r", 2, lock("dut", 1))));
    let wa = h.block(h.req("a", "r", 2, wait("go"))).unwrap_err();
    // b's own call is answered with the verdict at once, as is a's.
    let reply = h.block(h.req("b", "r", 2, lock("dut", 1))).ok();
    assert_nack_naming(reply, &["deadlock", "b waits for lava-lock dut"]);
    assert_nack_naming(h.woken(wa), &["deadlock", "a waits for lava_wait go"]);
}

#[test]
fn lab_locks_need_the_setting_and_are_shared_by_every_group() {
    let mut h = Harness::new();
    let in_group = |group: &str, client: &str, kind| {
        let mut r = Request::new(group, client, "r", kind);
        r.group_size = Some(2);
        r
    };
    assert_nack_naming(
        Some(h.call(in_group("g1", "a", lab_lock("pdu")))),
        &["lab-wide locks are not allowed", "lab_locks"],
    );
    assert!(
        h.machine.group("g1").is_none(),
        "refused before anything changed"
    );
    h.machine = Coordinator::new(Duration::from_secs(60)).with_lab_locks(true);
    let (holders, ..) = granted(&h.call(in_group("g1", "a", lab_lock("pdu"))));
    assert_eq!(holders, ["g1/a"]);
    let wb = h.block(in_group("g2", "b", lab_lock("pdu"))).unwrap_err();
    let mut counted = in_group("g3", "c", lab_lock("pdu"));
    counted.kind = RequestKind::Lock {
        name: "pdu".into(),
        count: 2,
        scope: LockScope::Lab,
    };
    assert_nack_naming(
        Some(h.call(counted)),
        &["lab-wide lock \"pdu\" has 1 places"],
    );
    // Every group waits on the lab lock: not a deadlock, another group may give it back.
    let wb2 = h.block(in_group("g2", "b2", lab_lock("pdu")));
    assert!(wb2.is_err(), "{wb2:?}");
    assert_eq!(
        h.machine.lab_locks_status()["pdu"]["holders"],
        json!(["g1/a"])
    );

    // The state as stored brings the holder back after a restart.
    let mutations = h.machine.take_mutations();
    let mut restarted = Coordinator::new(Duration::from_secs(60)).with_lab_locks(true);
    for m in &mutations {
        if let Mutation::PutGroup { group, meta } = m {
            restarted.restore(Group::restore(group, meta, Vec::new(), h.now).unwrap());
        }
    }
    assert_eq!(
        restarted.lab_locks_status()["pdu"]["holders"],
        json!(["g1/a"])
    );

    // g1 is forgotten (idle): its place goes to the first waiter of another group.
    let wakeups = h.machine.expire(h.now + Duration::from_secs(61));
    let to_b = wakeups.iter().find(|w| w.waiter == wb).expect("b served");
    let (holders, freed_by, because) = granted(&to_b.reply);
    assert_eq!(holders, ["g2/b"]);
    assert_eq!(freed_by.as_deref(), Some("g1/a"));
    assert!(because.unwrap().contains("expired"));
}

#[test]
fn a_held_lock_survives_a_restart() {
    let mut h = Harness::new();
    granted(&h.call(h.req("a", "r", 2, lock("dut", 1))));
    let mutations = h.machine.take_mutations();
    let mut restarted = Coordinator::new(Duration::from_secs(60));
    for m in &mutations {
        if let Mutation::PutGroup { group, meta } = m {
            restarted.restore(Group::restore(group, meta, Vec::new(), h.now).unwrap());
        }
    }
    h.machine = restarted;
    assert_eq!(h.machine.total_bytes(), h.machine.recount_bytes());
    assert!(h.call(h.req("b", "r", 2, lock("dut", 1))).is_wait());
    let wb = h.block(h.req("b", "r", 2, lock("dut", 1))).unwrap_err();
    h.call(h.req("a", "r", 2, unlock("dut")));
    assert_eq!(granted(&h.woken(wb).unwrap()).0, ["b"]);
    assert_eq!(h.machine.total_bytes(), h.machine.recount_bytes());
}

/// One step of a member in the lock property test.
#[derive(Debug, Clone)]
enum LockStep {
    /// Ask for the lock (parked when full) unless held or waiting.
    Lock,
    /// Give it back if held.
    Unlock,
    /// The tool's held call times out; it asks again later.
    GiveUp,
    Fail,
}

proptest! {
    /// Members take, give back, give up on and fail while holding a counted lock in any
    /// order: the lock never has more holders than places, each holder is told so once, and
    /// once the holders are done every waiter has been served or told why not.
    #[test]
    fn a_lock_never_has_more_holders_than_places_and_serves_every_waiter(
        members in 2usize..6,
        count in 1u32..4,
        steps in prop::collection::vec(
            (0usize..6, prop_oneof![
                4 => Just(LockStep::Lock),
                3 => Just(LockStep::Unlock),
                1 => Just(LockStep::GiveUp),
                1 => Just(LockStep::Fail),
            ]),
            0..80,
        ),
    ) {
        let mut h = Harness::new();
        let size = members as u32;
        let name = |m: usize| format!("n{m}");
        let mut holds = vec![false; members];
        let mut parked: Vec<Option<WaiterId>> = vec![None; members];
        let mut failed = vec![false; members];
        let check = |h: &mut Harness, holds: &mut Vec<bool>, parked: &mut Vec<Option<WaiterId>>| -> Result<(), TestCaseError> {
            for m in 0..holds.len() {
                if let Some(w) = parked[m] {
                    if let Some(reply) = h.woken(w) {
                        parked[m] = None;
                        if reply.response == Response::Ack {
                            holds[m] = true;
                        }
                    }
                }
            }
            let status = h.machine.status(Some(G), h.now);
            let holders = status[0]["locks"]["group"]["l"]["holders"]
                .as_array().map_or(0, Vec::len);
            prop_assert!(holders <= count as usize, "{holders} holders of {count}");
            prop_assert_eq!(holders, holds.iter().filter(|h| **h).count());
            Ok(())
        };
        for (m, step) in steps {
            let m = m % members;
            if failed[m] {
                continue;
            }
            match step {
                LockStep::Lock if !holds[m] && parked[m].is_none() => {
                    match h.block(h.req(&name(m), "r", size, lock("l", count))) {
                        Ok(reply) => {
                            prop_assert_eq!(reply.response, Response::Ack);
                            holds[m] = true;
                        }
                        Err(w) => parked[m] = Some(w),
                    }
                }
                LockStep::Unlock if holds[m] => {
                    let reply = h.call(h.req(&name(m), "r", size, unlock("l")));
                    prop_assert_eq!(reply.response, Response::Ack);
                    holds[m] = false;
                }
                LockStep::GiveUp => {
                    if let Some(w) = parked[m] {
                        if h.machine.cancel(w) {
                            parked[m] = None;
                        }
                    }
                }
                LockStep::Fail => {
                    h.call(h.req(&name(m), "r", size, RequestKind::Fail { reason: "x".into() }));
                    failed[m] = true;
                    holds[m] = false;
                }
                _ => {}
            }
            check(&mut h, &mut holds, &mut parked)?;
            // A failed member holds nothing, and gets nothing.
            for (failed, holds) in failed.iter().zip(&holds) {
                prop_assert!(!(*failed && *holds));
            }
        }
        // The holders finish one after another: every waiter is answered.
        for _ in 0..members {
            for (m, held) in holds.iter_mut().enumerate() {
                if *held {
                    h.call(h.req(&name(m), "r", size, unlock("l")));
                    *held = false;
                }
            }
            check(&mut h, &mut holds, &mut parked)?;
        }
        prop_assert!(parked.iter().all(Option::is_none), "still waiting: {parked:?}");
        prop_assert_eq!(h.machine.parked_count(), 0);
        prop_assert_eq!(h.machine.total_bytes(), h.machine.recount_bytes());
    }
}

#[test]
fn a_last_ask_with_lease_0_ends_the_lease() {
    let mut h = Harness::new();
    let mut first = h.req("a", "r", 2, wait("m"));
    first.lease = Some(5.0);
    assert!(h.call(first.clone()).is_wait());
    assert_eq!(h.machine.group(G).unwrap().leases.len(), 1);
    // The tool's timeout ends with its next ask: it gives up, it is not gone.
    first.lease = Some(0.0);
    assert!(h.call(first).is_wait());
    assert!(h.machine.group(G).unwrap().leases.is_empty());
    assert!(h
        .machine
        .expire_leases(h.now + Duration::from_secs(60))
        .is_empty());
}

fn wait_any(ids: &[&str], role: Option<&str>) -> RequestKind {
    RequestKind::WaitAny {
        ids: ids.iter().map(|id| id.to_string()).collect(),
        role: role.map(Into::into),
    }
}

#[test]
fn an_any_of_wait_is_answered_by_the_first_id_sent_and_names_it() {
    let mut h = Harness::new();
    let w = h
        .block(h.req("a", "client", 3, wait_any(&["ready", "failed"], None)))
        .unwrap_err();
    let status = h.machine.status(Some(G), h.now);
    assert_eq!(
        status[0]["blocked"][0]["waits_for"],
        "wait_any ready failed"
    );
    h.call(h.req("b", "server", 3, send("other", json!({}))));
    assert!(h.woken(w).is_none());
    h.call(h.req("b", "server", 3, send("failed", json!({"why": "disk"}))));
    let reply = h.woken(w).unwrap();
    assert_eq!(reply.message_id.as_deref(), Some("failed"));
    assert_eq!(reply.message, Some(json!({"b": {"why": "disk"}})));
    // Both sent: the first in the caller's order wins.
    h.call(h.req("c", "server", 3, send("ready", json!({}))));
    let reply = h.call(h.req("a", "client", 3, wait_any(&["ready", "failed"], None)));
    assert_eq!(reply.message_id.as_deref(), Some("ready"));
}

#[test]
fn an_any_of_wait_by_role_waits_for_any_one_member_of_the_role() {
    let mut h = Harness::new();
    h.call(h.req("c1", "client", 4, send("up", json!({"n": "1"}))));
    let w = h
        .block(h.req("s", "server", 4, wait_any(&["up"], Some("worker"))))
        .unwrap_err();
    h.call(h.req("w1", "worker", 4, RequestKind::GroupData));
    assert!(h.woken(w).is_none(), "a client's send does not count");
    h.call(h.req("w2", "worker", 4, send("up", json!({"n": "2"}))));
    let reply = h.woken(w).unwrap();
    assert_eq!(
        reply.message,
        Some(json!({"w2": {"n": "2"}})),
        "only the role's senders"
    );
    // A role nobody has, once the group is complete.
    assert_nack_naming(
        Some(h.call(h.req("s", "server", 4, wait_any(&["up"], Some("nobody"))))),
        &["no member", "\"nobody\""],
    );
}

#[test]
fn an_any_of_wait_ends_when_every_possible_sender_failed() {
    let mut h = Harness::new();
    for (c, r) in [("s", "server"), ("w1", "worker"), ("w2", "worker")] {
        h.call(h.req(c, r, 3, RequestKind::GroupData));
    }
    let w = h
        .block(h.req("s", "server", 3, wait_any(&["up"], Some("worker"))))
        .unwrap_err();
    h.call(h.req("w1", "worker", 3, RequestKind::Fail { reason: "a".into() }));
    assert!(h.woken(w).is_none(), "w2 may still send");
    h.call(h.req("w2", "worker", 3, RequestKind::Fail { reason: "b".into() }));
    assert_nack_naming(
        h.woken(w),
        &["every other member of role \"worker\" failed", "\"w2\" (b)"],
    );
}

proptest! {
    /// Members of two roles send ids from a small set in any order while a member waits for
    /// any of some of them (of a role or not): it is answered exactly when one of them has a
    /// sender that counts, with the first such id in its order and only senders that count.
    #[test]
    fn an_any_of_wait_is_answered_exactly_when_one_of_its_ids_is_sent(
        ids in prop::collection::vec(0u8..4, 1..4),
        role in prop::option::of(0u8..2),
        wait_at in 0usize..8,
        sends in prop::collection::vec((0usize..4, 0u8..4), 0..8),
    ) {
        let mut h = Harness::new();
        let roles = ["r0", "r1", "r0", "r1"];
        // Everybody registers first: the roles are known.
        for (m, r) in roles.iter().enumerate() {
            h.call(h.req(&format!("m{m}"), r, 5, RequestKind::GroupData));
        }
        let ids: Vec<String> = ids.iter().map(|i| format!("id{i}")).collect();
        let role = role.map(|r| format!("r{r}"));
        let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let mut waiter = None;
        let mut sent: Vec<(String, String)> = Vec::new();
        let counts = |sender: &str, role: &Option<String>| {
            let m: usize = sender[1..].parse().unwrap();
            role.as_deref().is_none_or(|r| roles[m] == r)
        };
        for (i, (m, id)) in sends.iter().enumerate() {
            if i == wait_at {
                waiter = Some(h.block(h.req("w", "r2", 5, wait_any(&id_refs, role.as_deref()))));
            }
            let sender = format!("m{m}");
            h.call(h.req(&sender, roles[*m], 5, send(&format!("id{id}"), json!({}))));
            sent.push((sender, format!("id{id}")));
        }
        let waiter = waiter.unwrap_or_else(|| h.block(h.req("w", "r2", 5, wait_any(&id_refs, role.as_deref()))));
        let reply = match waiter {
            Ok(reply) => Some(reply),
            Err(w) => h.woken(w),
        };
        let answerable = ids.iter().any(|id| sent.iter().any(|(s, i)| i == id && counts(s, &role)));
        prop_assert_eq!(reply.is_some(), answerable, "{:?}", reply);
        if let Some(reply) = reply {
            prop_assert_eq!(reply.response, Response::Ack);
            let got = reply.message_id.clone().unwrap();
            prop_assert!(ids.contains(&got));
            let senders = reply.message.as_ref().unwrap().as_object().unwrap();
            prop_assert!(!senders.is_empty());
            for s in senders.keys() {
                prop_assert!(counts(s, &role), "{s} does not count");
                prop_assert!(sent.iter().any(|(x, i)| x == s && *i == got));
            }
        }
    }
}

fn send_to(to: &str, id: &str, message: Value) -> RequestKind {
    RequestKind::SendTo {
        to: to.into(),
        id: id.into(),
        message,
    }
}
fn enqueue(id: &str, to: Option<&str>, message: Value) -> RequestKind {
    RequestKind::Enqueue {
        id: id.into(),
        to: to.map(Into::into),
        message,
    }
}
fn consume(id: &str) -> RequestKind {
    RequestKind::Consume { id: id.into() }
}

#[test]
fn a_message_to_one_member_is_seen_by_its_waits_only() {
    let mut h = Harness::new();
    for c in ["s", "a", "b"] {
        h.call(h.req(c, "r", 3, RequestKind::GroupData));
    }
    let wb = h.block(h.req("b", "r", 3, wait("job"))).unwrap_err();
    let wa = h.block(h.req("a", "r", 3, wait("job"))).unwrap_err();
    h.call(h.req("s", "r", 3, send_to("a", "job", json!({"n": "1"}))));
    assert_eq!(
        h.woken(wa).unwrap().message,
        Some(json!({"s": {"n": "1"}})),
        "with its sender"
    );
    assert!(h.woken(wb).is_none(), "b does not see a's message");
    let any = h.call(h.req("a", "r", 3, wait_any(&["x", "job"], None)));
    assert_eq!(any.message_id.as_deref(), Some("job"));
    // What is sent to everybody reaches everybody, beside what was sent to one.
    h.call(h.req("s", "r", 3, send("job", json!({"n": "all"}))));
    assert_eq!(
        h.woken(wb).unwrap().message,
        Some(json!({"s": {"n": "all"}}))
    );
    let mut a_view = h.call(h.req("a", "r", 3, wait("job"))).message.unwrap();
    assert_eq!(
        a_view.as_object_mut().unwrap().len(),
        1,
        "s's own data to a wins"
    );
    assert_eq!(a_view, json!({"s": {"n": "1"}}));
    assert_nack_naming(
        Some(h.call(h.req("s", "r", 3, send_to("zed", "job", json!({}))))),
        &["client \"zed\" is not a member of group"],
    );
    let status = h.machine.status(Some(G), h.now);
    assert_eq!(status[0]["mail"]["direct"]["a"]["job"], json!(["s"]));
}

#[test]
fn each_queue_entry_is_consumed_once_in_order() {
    let mut h = Harness::new();
    for c in ["s", "a", "b"] {
        h.call(h.req(c, "r", 3, RequestKind::GroupData));
    }
    let wa = h.block(h.req("a", "r", 3, consume("work"))).unwrap_err();
    let wb = h.block(h.req("b", "r", 3, consume("work"))).unwrap_err();
    for n in 1..=3 {
        h.call(h.req(
            "s",
            "r",
            3,
            enqueue("work", None, json!({ "n": n.to_string() })),
        ));
    }
    assert_eq!(h.woken(wa).unwrap().message, Some(json!({"s": {"n": "1"}})));
    assert_eq!(h.woken(wb).unwrap().message, Some(json!({"s": {"n": "2"}})));
    // An entry for one member is taken by that member only.
    h.call(h.req("s", "r", 3, enqueue("work", Some("b"), json!({"n": "b"}))));
    let mut r = h.req("a", "r", 3, consume("work"));
    r.request_id = Some("a-1".into());
    assert_eq!(h.call(r.clone()).message, Some(json!({"s": {"n": "3"}})));
    // Its retry (the answer was lost) gets the same entry, not the next.
    assert_eq!(h.call(r).message, Some(json!({"s": {"n": "3"}})));
    assert!(
        h.call(h.req("a", "r", 3, consume("work"))).is_wait(),
        "b's entry is b's"
    );
    assert_eq!(
        h.call(h.req("b", "r", 3, consume("work"))).message,
        Some(json!({"s": {"n": "b"}}))
    );
    assert_eq!(h.machine.total_bytes(), h.machine.recount_bytes());
    // Nobody left to enqueue: the wait ends.
    let wa = h.block(h.req("a", "r", 3, consume("work"))).unwrap_err();
    h.call(h.req("s", "r", 3, RequestKind::Fail { reason: "x".into() }));
    h.call(h.req("b", "r", 3, RequestKind::Fail { reason: "y".into() }));
    assert_nack_naming(h.woken(wa), &["every other member failed"]);
}

#[test]
fn mail_and_queues_survive_a_restart() {
    let mut h = Harness::new();
    h.call(h.req("s", "r", 2, send_to("a", "job", json!({"n": "1"}))));
    h.call(h.req("s", "r", 2, enqueue("work", None, json!({"n": "2"}))));
    let mutations = h.machine.take_mutations();
    let mut restarted = Coordinator::new(Duration::from_secs(60));
    for m in &mutations {
        if let Mutation::PutGroup { group, meta } = m {
            restarted.restore(Group::restore(group, meta, Vec::new(), h.now).unwrap());
        }
    }
    h.machine = restarted;
    assert_eq!(h.machine.total_bytes(), h.machine.recount_bytes());
    assert_eq!(
        h.call(h.req("a", "r", 2, wait("job"))).message,
        Some(json!({"s": {"n": "1"}}))
    );
    assert_eq!(
        h.call(h.req("a", "r", 2, consume("work"))).message,
        Some(json!({"s": {"n": "2"}}))
    );
}

proptest! {
    /// Producers enqueue and consumers (held or polling, some giving up) consume in any
    /// interleaving: every entry is taken exactly once, by a member it was for, and a
    /// queue keeps its order.
    #[test]
    fn every_queue_entry_is_taken_exactly_once(
        ops in prop::collection::vec((0usize..4, 0u8..4), 0..60),
    ) {
        // A fifth member never registers: no deadlock verdict ends the waits.
        let mut h = Harness::new();
        let name = |m: usize| format!("m{m}");
        let mut parked: Vec<Option<WaiterId>> = vec![None; 4];
        let mut next = 0u32;
        let mut enqueued: Vec<(u32, Option<usize>)> = Vec::new();
        let mut taken: Vec<(u32, usize)> = Vec::new();
        let record = |reply: Reply, m: usize, taken: &mut Vec<(u32, usize)>| -> Result<(), TestCaseError> {
            prop_assert_eq!(reply.response, Response::Ack);
            let msg = reply.message.unwrap();
            let n: u32 = msg["m0"]["n"].as_str().unwrap().parse().unwrap();
            taken.push((n, m));
            Ok(())
        };
        for (m, op) in ops {
            match op {
                // m0 produces, for anybody or for one member.
                0 | 1 => {
                    let to = (op == 1).then_some(m);
                    h.call(h.req("m0", "r", 5, enqueue("q", to.map(name).as_deref(), json!({"n": next.to_string()}))));
                    enqueued.push((next, to));
                    next += 1;
                }
                2 if parked[m].is_none() => match h.block(h.req(&name(m), "r", 5, consume("q"))) {
                    Ok(reply) => record(reply, m, &mut taken)?,
                    Err(w) => parked[m] = Some(w),
                },
                _ => {
                    if let Some(w) = parked[m].take() {
                        if !h.machine.cancel(w) {
                            parked[m] = Some(w);
                        }
                    }
                }
            }
            for (m, slot) in parked.iter_mut().enumerate() {
                if let Some(reply) = slot.and_then(|w| h.woken(w)) {
                    *slot = None;
                    record(reply, m, &mut taken)?;
                }
            }
        }
        let mut seen: Vec<u32> = taken.iter().map(|(n, _)| *n).collect();
        seen.sort();
        seen.dedup();
        prop_assert_eq!(seen.len(), taken.len(), "an entry taken twice: {:?}", taken);
        for (n, m) in &taken {
            let (_, to) = enqueued[*n as usize];
            prop_assert!(to.is_none_or(|to| to == *m), "entry {n} for {to:?} taken by {m}");
        }
        // Entries for anybody are taken in the order they were enqueued.
        let open: Vec<u32> = taken.iter().map(|(n, _)| *n).filter(|n| enqueued[*n as usize].1.is_none()).collect();
        prop_assert!(open.windows(2).all(|w| w[0] < w[1]), "{open:?}");
        prop_assert_eq!(h.machine.total_bytes(), h.machine.recount_bytes());
    }
}

fn barrier(id: &str, parties: Parties) -> RequestKind {
    RequestKind::Barrier {
        id: id.into(),
        parties,
    }
}
fn round_of(reply: &Reply) -> u64 {
    assert_eq!(reply.response, Response::Ack, "{reply:?}");
    reply.message.as_ref().unwrap()["round"].as_u64().unwrap()
}

#[test]
fn a_role_barrier_releases_the_role_round_after_round() {
    let mut h = Harness::new();
    let role = || Parties::Role("server".into());
    let w1 = h
        .block(h.req("s1", "server", 3, barrier("up", role())))
        .unwrap_err();
    h.call(h.req("c", "client", 3, RequestKind::GroupData));
    assert_nack_naming(
        Some(h.call(h.req("c", "client", 3, barrier("up", role())))),
        &["\"c\" is not a member of role \"server\""],
    );
    let status = h.machine.status(Some(G), h.now);
    assert_eq!(status[0]["barriers"]["up"]["round"], 1);
    assert_eq!(
        status[0]["blocked"][0]["waits_for"],
        "barrier up (role server)"
    );
    // s2 completes the role (and the group): both released in round 1.
    assert_eq!(
        round_of(&h.call(h.req("s2", "server", 3, barrier("up", role())))),
        1
    );
    assert_eq!(round_of(&h.woken(w1).unwrap()), 1);
    assert_eq!(
        h.machine.status(Some(G), h.now)[0]["barriers"]["up"]["round"],
        2
    );
    // The next round: a polling member picks its answer up on its next ask.
    assert!(h
        .call(h.req("s1", "server", 3, barrier("up", role())))
        .is_wait());
    assert_eq!(
        round_of(&h.call(h.req("s2", "server", 3, barrier("up", role())))),
        2
    );
    assert_eq!(
        round_of(&h.call(h.req("s1", "server", 3, barrier("up", role())))),
        2
    );
    // Asking again after the pick-up is the next round.
    assert!(h
        .call(h.req("s1", "server", 3, barrier("up", role())))
        .is_wait());
    assert_nack_naming(
        Some(h.call(h.req("s1", "server", 3, barrier("up", Parties::Count(2))))),
        &["barrier \"up\" is for every member of role \"server\""],
    );
}

#[test]
fn a_role_barrier_completes_once_the_roles_members_are_known() {
    let mut h = Harness::new();
    // The only server arrives before the group is complete: who else has the role is unknown.
    let w = h
        .block(h.req(
            "s",
            "server",
            2,
            barrier("up", Parties::Role("server".into())),
        ))
        .unwrap_err();
    h.call(h.req("c", "client", 2, RequestKind::GroupData));
    assert_eq!(round_of(&h.woken(w).unwrap()), 1);
}

#[test]
fn a_count_barrier_releases_any_n_members_and_a_retry_is_answered_again() {
    let mut h = Harness::new();
    let two = || barrier("b", Parties::Count(2));
    let mut first = h.req("a", "r", 4, two());
    first.request_id = Some("a-1".into());
    let wa = h.block(first.clone()).unwrap_err();
    assert_eq!(round_of(&h.call(h.req("b", "r", 4, two()))), 1);
    assert_eq!(round_of(&h.woken(wa).unwrap()), 1);
    // a's answer was lost: its retry gets round 1 again, not a place in round 2.
    assert_eq!(round_of(&h.call(first)), 1);
    assert!(h.call(h.req("c", "r", 4, two())).is_wait());
    assert_eq!(round_of(&h.call(h.req("a", "r", 4, two()))), 2);
    assert_nack_naming(
        Some(h.call(h.req("d", "r", 4, barrier("x", Parties::Count(5))))),
        &["a barrier of 5 members in group"],
    );
    assert_eq!(h.machine.total_bytes(), h.machine.recount_bytes());
}

#[test]
fn a_barrier_that_can_no_longer_fill_ends_its_waits() {
    let mut h = Harness::new();
    for c in ["a", "b", "c"] {
        h.call(h.req(c, "r", 3, RequestKind::GroupData));
    }
    let w = h
        .block(h.req("a", "r", 3, barrier("b", Parties::Count(3))))
        .unwrap_err();
    h.call(h.req(
        "c",
        "r",
        3,
        RequestKind::Fail {
            reason: "gone".into(),
        },
    ));
    assert_nack_naming(
        h.woken(w),
        &[
            "needs 3 members and only 2 can still arrive",
            "\"c\" (gone)",
        ],
    );
}

#[test]
fn barriers_survive_a_restart() {
    let mut h = Harness::new();
    let two = || barrier("b", Parties::Count(2));
    assert!(h.call(h.req("a", "r", 3, two())).is_wait());
    let mutations = h.machine.take_mutations();
    let mut restarted = Coordinator::new(Duration::from_secs(60));
    for m in &mutations {
        if let Mutation::PutGroup { group, meta } = m {
            restarted.restore(Group::restore(group, meta, Vec::new(), h.now).unwrap());
        }
    }
    h.machine = restarted;
    assert_eq!(h.machine.total_bytes(), h.machine.recount_bytes());
    assert_eq!(round_of(&h.call(h.req("b", "r", 3, two()))), 1);
    assert_eq!(round_of(&h.call(h.req("a", "r", 3, two()))), 1);
}

proptest! {
    /// Members of a group meet at a count barrier round after round, in any interleaving,
    /// held or polling: every round releases exactly `count` members, each member passes
    /// each of its rounds once, and rounds are numbered 1, 2, ... without gaps.
    #[test]
    fn a_count_barrier_releases_count_members_per_round(
        members in 2usize..6,
        count in 1u32..4,
        rounds in 1usize..4,
        schedule in prop::collection::vec(0usize..6, 0..300),
        blocking in prop::collection::vec(any::<bool>(), 6),
    ) {
        let count = count.min(members as u32);
        let mut h = Harness::new();
        let size = members as u32 + 1; // one never comes: no deadlock verdict, no doom
        let name = |m: usize| format!("n{m}");
        let mut parked: Vec<Option<WaiterId>> = vec![None; members];
        // A polling member answered `wait` is in its call until it picks its answer up.
        let mut polling = vec![false; members];
        let mut released: BTreeMap<u64, usize> = BTreeMap::new();
        let total = rounds * count as usize;
        let mut turn = schedule.into_iter().chain((0..).map(|i| i % 6));
        let mut steps = 0;
        let passed = |reply: Reply, released: &mut BTreeMap<u64, usize>| {
            *released.entry(round_of(&reply)).or_default() += 1;
        };
        while released.values().sum::<usize>() < total {
            steps += 1;
            prop_assert!(steps < 20_000, "no progress: {released:?}");
            let m = turn.next().unwrap() % members;
            if let Some(w) = parked[m] {
                if let Some(reply) = h.woken(w) {
                    parked[m] = None;
                    passed(reply, &mut released);
                }
                continue;
            }
            let in_calls = parked.iter().flatten().count() + polling.iter().filter(|p| **p).count();
            if !polling[m] && released.values().sum::<usize>() + in_calls >= total {
                continue;
            }
            let req = h.req(&name(m), "r", size, barrier("b", Parties::Count(count)));
            if blocking[m] && !polling[m] {
                match h.block(req) {
                    Ok(reply) => passed(reply, &mut released),
                    Err(w) => parked[m] = Some(w),
                }
            } else {
                let reply = h.call(req);
                polling[m] = reply.is_wait();
                if !reply.is_wait() {
                    passed(reply, &mut released);
                }
            }
        }
        let rounds_seen: Vec<u64> = released.keys().copied().collect();
        prop_assert_eq!(rounds_seen, (1..=rounds as u64).collect::<Vec<_>>());
        prop_assert!(released.values().all(|n| *n == count as usize), "{released:?}");
    }
}

fn scope(roles: Option<&[&str]>) -> RequestKind {
    RequestKind::FailureScope {
        roles: roles.map(|r| r.iter().map(|s| s.to_string()).collect()),
    }
}

#[test]
fn a_member_with_a_failure_scope_waits_on_despite_failures_outside_it() {
    let mut h = Harness::new();
    for (c, r) in [
        ("srv", "server"),
        ("srv2", "server"),
        ("c1", "client"),
        ("c2", "client"),
    ] {
        h.call(h.req(c, r, 4, RequestKind::GroupData));
    }
    assert_eq!(
        h.call(h.req("srv", "server", 4, scope(Some(&["server"]))))
            .response,
        Response::Ack
    );
    assert_nack_naming(
        Some(h.call(h.req("srv", "server", 4, scope(Some(&["nobody"]))))),
        &["no member of group", "\"nobody\""],
    );
    let status = h.machine.status(Some(G), h.now);
    assert_eq!(status[0]["failure_scopes"]["srv"], json!(["server"]));
    // The server waits for the clients' results; c2 (another server's peer) too.
    let ws = h
        .block(h.req("srv", "server", 4, wait_all("done", Some("client"))))
        .unwrap_err();
    let wc = h
        .block(h.req("c2", "client", 4, wait_all("done", Some("client"))))
        .unwrap_err();
    h.call(h.req(
        "c1",
        "client",
        4,
        RequestKind::Fail {
            reason: "oops".into(),
        },
    ));
    assert_nack_naming(h.woken(wc), &["member \"c1\" failed: oops"]);
    assert!(
        h.woken(ws).is_none(),
        "a client's failure is outside the server's scope"
    );
    // A server's failure is inside it.
    h.call(h.req(
        "srv2",
        "server",
        4,
        RequestKind::Fail {
            reason: "down".into(),
        },
    ));
    assert!(h.woken(ws).is_none(), "srv2 owes no 'done' (not a client)");
    assert_nack_naming(
        Some(h.call(h.req("srv", "server", 4, sync("end")))),
        &["member \"srv2\" failed: down"],
    );
    // Back to everybody's failures: the wait-all is hopeless.
    h.call(h.req("srv", "server", 4, scope(None)));
    assert_nack_naming(h.woken(ws), &["member \"c1\" failed: oops"]);
}

#[test]
fn a_scope_of_nobody_leaves_only_the_deadlock_verdict() {
    let mut h = Harness::new();
    for c in ["a", "b"] {
        h.call(h.req(c, "r", 2, RequestKind::GroupData));
    }
    h.call(h.req("a", "r", 2, scope(Some(&[]))));
    let w = h.block(h.req("a", "r", 2, wait("x"))).unwrap_err();
    h.call(h.req(
        "b",
        "r",
        2,
        RequestKind::Fail {
            reason: "gone".into(),
        },
    ));
    // b failed and a is held: nobody live is free, whatever a's scope says.
    assert_nack_naming(h.woken(w), &["deadlock"]);
}

proptest! {
    /// A member waits for every member of a role to send while others send or fail in any
    /// order: it is told of a failure exactly when a member of the role that has not sent
    /// failed and is in its failure scope, and answered exactly when all of the role sent.
    #[test]
    fn only_failures_in_a_members_scope_end_its_waits(
        scope_roles in prop::option::of(prop::collection::vec(0u8..2, 0..3)),
        role in 0u8..2,
        events in prop::collection::vec((0usize..5, any::<bool>()), 0..12),
    ) {
        let mut h = Harness::new();
        let roles = ["r0", "r1", "r0", "r1", "r0"];
        for (m, r) in roles.iter().enumerate() {
            h.call(h.req(&format!("m{m}"), r, 6, RequestKind::GroupData));
        }
        h.call(h.req("w", "r2", 6, RequestKind::GroupData));
        let scope_roles: Option<Vec<String>> =
            scope_roles.map(|v| v.iter().map(|r| format!("r{r}")).collect());
        let refs: Option<Vec<&str>> = scope_roles.as_ref().map(|v| v.iter().map(String::as_str).collect());
        h.call(h.req("w", "r2", 6, scope(refs.as_deref())));
        let role = format!("r{role}");
        let w = h.block(h.req("w", "r2", 6, wait_all("x", Some(&role)))).unwrap_err();
        let mut sent = [false; 5];
        let mut failed = [false; 5];
        let in_scope = |m: usize| scope_roles.as_ref().is_none_or(|s| s.iter().any(|r| r == roles[m]));
        for (m, fails) in events {
            if sent[m] || failed[m] {
                continue;
            }
            if fails {
                h.call(h.req(&format!("m{m}"), roles[m], 6, RequestKind::Fail { reason: "x".into() }));
                failed[m] = true;
            } else {
                h.call(h.req(&format!("m{m}"), roles[m], 6, send("x", json!({}))));
                sent[m] = true;
            }
            let of_role: Vec<usize> = (0..5).filter(|m| roles[*m] == role).collect();
            let doomed = of_role.iter().any(|m| failed[*m] && !sent[*m] && in_scope(*m));
            let done = of_role.iter().all(|m| sent[*m]);
            match h.woken(w) {
                Some(reply) if reply.response == Response::Nack => {
                    let error = reply.error.unwrap_or_default();
                    // A deadlock verdict is no failure verdict: every live member is held.
                    prop_assert!(doomed || error.contains("deadlock"), "{error}");
                    return Ok(());
                }
                Some(reply) => {
                    prop_assert!(done, "{reply:?}");
                    return Ok(());
                }
                None => prop_assert!(!doomed && !done, "not answered: doomed {doomed}, done {done}"),
            }
        }
    }
}

fn operator(action: OperatorAction) -> Request {
    Request::new(G, "admin", "", RequestKind::Operator { action })
}

#[test]
fn the_operator_unblocks_fails_and_sends() {
    let mut h = Harness::new();
    for c in ["a", "b", "c"] {
        h.call(h.req(c, "r", 3, RequestKind::GroupData));
    }
    let wa = h.block(h.req("a", "r", 3, wait("go"))).unwrap_err();
    let wb = h.block(h.req("b", "r", 3, sync("s"))).unwrap_err();
    let reply = h.call(operator(OperatorAction::Unblock {
        reason: Some("stuck".into()),
    }));
    assert_eq!(reply.message, Some(json!({"answered": 2})));
    for w in [wa, wb] {
        assert_nack_naming(
            h.woken(w),
            &["the operator \"admin\" unblocked group", "stuck"],
        );
    }
    assert!(
        !h.machine.group(G).unwrap().members.contains_key("admin"),
        "the operator is no member"
    );
    assert!(h
        .machine
        .take_events()
        .iter()
        .any(|e| matches!(e, Event::Operator { what, .. } if what.contains("unblocked 2"))));

    // Sent in nobody's name, and in a member's.
    let wa = h.block(h.req("a", "r", 3, wait("go"))).unwrap_err();
    h.call(operator(OperatorAction::Send {
        id: "go".into(),
        message: json!({"k": "v"}),
        sender: None,
    }));
    assert_eq!(
        h.woken(wa).unwrap().message,
        Some(json!({"operator": {"k": "v"}}))
    );
    let wall = h
        .block(h.req("a", "r", 3, wait_all("done", None)))
        .unwrap_err();
    for sender in ["a", "b"] {
        h.call(operator(OperatorAction::Send {
            id: "done".into(),
            message: json!({}),
            sender: Some(sender.into()),
        }));
    }
    assert_nack_naming(
        Some(h.call(operator(OperatorAction::Send {
            id: "done".into(),
            message: json!({}),
            sender: Some("zed".into()),
        }))),
        &["\"zed\" is not a member"],
    );
    // c is stuck for good: the operator declares it failed.
    h.call(operator(OperatorAction::Fail {
        client: "c".into(),
        reason: "powered off".into(),
    }));
    assert_nack_naming(
        h.woken(wall),
        &["\"c\" failed: powered off (declared by the operator admin)"],
    );
    assert_nack_naming(
        Some(h.call(Request::new(
            "nope",
            "admin",
            "",
            RequestKind::Operator {
                action: OperatorAction::Unblock { reason: None },
            },
        ))),
        &["no group \"nope\""],
    );
    assert!(h.machine.group("nope").is_none());
}

proptest! {
    /// Whatever members of a group wait for, the operator's unblock answers every held
    /// request exactly once, and leaves nothing held.
    #[test]
    fn an_unblock_answers_every_held_request_once(
        waits in prop::collection::vec((0usize..4, 0u8..5), 0..12),
    ) {
        let mut h = Harness::new();
        h.machine = Coordinator::new(Duration::from_secs(60)).with_verdicts(Verdicts {
            failure_propagation: true,
            deadlock_detection: false,
        });
        let mut held = Vec::new();
        for (m, kind) in waits {
            let kind = match kind {
                0 => wait("x"),
                1 => sync("s"),
                2 => wait_all("y", None),
                3 => lock("l", 1),
                _ => barrier("b", Parties::Count(4)),
            };
            if let Err(w) = h.block(h.req(&format!("m{m}"), "r", 5, kind)) {
                held.push(w);
            }
        }
        // Some released others before the operator came (the fourth at a barrier of 4):
        // those were answered already, by the rules.
        held.retain(|w| h.woken(*w).is_none());
        h.call(operator(OperatorAction::Unblock { reason: None }));
        prop_assert_eq!(h.machine.parked_count(), 0);
        for w in held {
            let reply = h.woken(w);
            prop_assert!(reply.is_some(), "waiter {w} not answered");
            prop_assert_eq!(reply.unwrap().response, Response::Nack);
        }
        prop_assert!(h.woken.is_empty(), "answered twice or unknown: {:?}", h.woken);
    }
}

/// The one rule for how long a request is held: `block` up to `block_max` (any number a
/// client sends, however large), LAVA's requests `hold_lava_requests`.
#[test]
fn how_long_a_request_is_held_is_decided_in_one_place() {
    let machine = Coordinator::new(Duration::from_secs(60))
        .with_block_max(Duration::from_secs(30))
        .with_hold_lava_requests(Duration::from_secs(2));
    let mut r = Request::new(G, "a", "r", RequestKind::Wait { id: "m".into() });
    assert_eq!(machine.hold_for(&r), Duration::from_secs(2));
    r.block = Some(1.5);
    assert_eq!(machine.hold_for(&r), Duration::from_millis(1500));
    r.block = Some(1e300);
    assert_eq!(machine.hold_for(&r), Duration::from_secs(30));
    r.block = Some(0.0);
    assert_eq!(machine.hold_for(&r), Duration::ZERO);
}
