//! How a command reaches its group: the coordinator over TCP ([`Session`], the default), or
//! the console ([`Console`]: LAVA's marker lines on standard output, the relay's reply lines
//! on standard input). The commands talk to a `&dyn Link`; a `&Session` is one.

use lava_protocol::{Reply, RequestKind};

use crate::console::Console;
use crate::error::Error;
use crate::wait::Session;

pub trait Link {
    /// A request answered at once (`lava_send`, `vm_start`, `fail`, ...); `nack` is an error.
    fn call(&self, kind: RequestKind) -> Result<Reply, Error>;

    /// A request answered once its condition holds (`lava_wait`, `lava_wait_all`,
    /// `lava_sync`, ...), or a timeout; `what` completes "timed out waiting for ...".
    fn wait(&self, kind: RequestKind, what: &str) -> Result<Reply, Error>;

    /// Whether only LAVA's own calls travel (send, wait, wait-all, sync, and our `fail`
    /// marker): no extension requests, so no fallback from them is worth trying.
    fn lava_only(&self) -> bool;

    /// The group's name, where this link knows it (for messages).
    fn group(&self) -> Option<&str>;
}

impl Link for Session {
    fn call(&self, kind: RequestKind) -> Result<Reply, Error> {
        Session::call(self, kind)
    }

    fn wait(&self, kind: RequestKind, what: &str) -> Result<Reply, Error> {
        Session::wait(self, kind, what)
    }

    fn lava_only(&self) -> bool {
        false
    }

    fn group(&self) -> Option<&str> {
        Some(&self.group)
    }
}

impl Link for Console {
    fn call(&self, kind: RequestKind) -> Result<Reply, Error> {
        Console::call(self, kind)
    }

    fn wait(&self, kind: RequestKind, what: &str) -> Result<Reply, Error> {
        Console::wait(self, kind, what)
    }

    fn lava_only(&self) -> bool {
        true
    }

    fn group(&self) -> Option<&str> {
        None
    }
}

impl<T: Link + ?Sized> Link for &T {
    fn call(&self, kind: RequestKind) -> Result<Reply, Error> {
        (**self).call(kind)
    }

    fn wait(&self, kind: RequestKind, what: &str) -> Result<Reply, Error> {
        (**self).wait(kind, what)
    }

    fn lava_only(&self) -> bool {
        (**self).lava_only()
    }

    fn group(&self) -> Option<&str> {
        (**self).group()
    }
}

/// ` {preposition} group "NAME"` when the link knows the group's name, else nothing: "every
/// member{in_group(link, "of")}".
pub fn in_group(link: &dyn Link, preposition: &str) -> String {
    link.group()
        .map(|g| format!(" {preposition} group {g:?}"))
        .unwrap_or_default()
}
