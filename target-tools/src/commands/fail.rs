//! `lava-fail REASON`: this node failed. Our coordinator answers at once, with a failure
//! naming this node, everything that waits on it (syncs, wait-alls that need its send).

use lava_protocol::RequestKind;

use crate::error::Error;
use crate::link::Link;

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
