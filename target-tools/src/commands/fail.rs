//! `lava-fail REASON`: this node failed. Our coordinator answers at once, with a failure
//! naming this node, everything that waits on it (syncs, wait-alls that need its send).
//! `lava-failure-scope`: whose failures end this node's waits.

use lava_protocol::RequestKind;

use crate::error::Error;
use crate::link::Link;

/// `lava-failure-scope ROLE...` (`Some(roles)`), `--none` (`Some([])`), `--all` (`None`).
pub fn failure_scope(s: &dyn Link, roles: Option<Vec<String>>) -> Result<(), Error> {
    if s.lava_only() {
        return Err(Error::Unsupported(
            "lava-failure-scope needs our coordinator over TCP: LAVA's console markers cannot \
             carry it (LAVA_MULTINODE_TRANSPORT is console)"
                .into(),
        ));
    }
    match s.call(RequestKind::FailureScope { roles }) {
        Err(e) if e.is_bare_nack() => Err(Error::Unsupported(
            "lava-failure-scope needs this project's lava-coordinator: the coordinator does \
             not know it (LAVA's own coordinator?)"
                .into(),
        )),
        other => other.map(drop),
    }
}

/// Over the console, the `<LAVA_FAIL reason>` marker, which only our relay answers.
pub fn fail(s: &dyn Link, reason: &str) -> Result<(), Error> {
    match s.call(RequestKind::Fail {
        reason: reason.to_owned(),
    }) {
        Err(e) if e.is_bare_nack() => Err(Error::Local(
            "the coordinator does not know `fail` (LAVA's own coordinator?): nobody was told"
                .into(),
        )),
        other => other.map(drop),
    }
}
