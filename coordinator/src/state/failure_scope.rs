//! Failure scopes (`failure_scope`): a member declares whose failures end its waits, the
//! members of some roles only, or nobody's, so that one failed client does not end a support
//! server's work. Failures outside the scope are ignored for that member's waits (they are
//! still failures: the group's other members, status and locks see them); deadlock detection
//! still applies.

use std::borrow::Cow;

use indexmap::IndexMap;
use lava_protocol::{Request, RequestKind};

use super::{quoted, Group};

impl Group {
    /// The failures that end `client`'s waits: every failure, or those of its scope's roles.
    pub(super) fn failures_for(&self, client: &str) -> Cow<'_, IndexMap<String, String>> {
        let Some(roles) = self.failure_scopes.get(client) else {
            return Cow::Borrowed(&self.failed);
        };
        let role_of = |c: &String| {
            self.members
                .get(c)
                .or_else(|| self.roster.as_ref().and_then(|r| r.get(c)))
        };
        Cow::Owned(
            self.failed
                .iter()
                .filter(|(c, _)| role_of(c).is_some_and(|r| roles.contains(r)))
                .map(|(c, why)| (c.clone(), why.clone()))
                .collect(),
        )
    }

    /// Why a scope must be refused (a role nobody in the known roster has), else the bytes
    /// it makes the group keep.
    pub(super) fn scope_admission(&self, req: &Request) -> Result<usize, String> {
        let RequestKind::FailureScope { roles } = &req.kind else {
            return Ok(0);
        };
        let Some(roles) = roles else {
            return Ok(0);
        };
        if let Some(roster) = self.known_roster() {
            if let Some(role) = roles.iter().find(|r| !roster.values().any(|x| x == *r)) {
                return Err(format!(
                    "no member of group {} has role {}",
                    quoted(&self.name),
                    quoted(role)
                ));
            }
        }
        Ok(req.client_name.len() + roles.iter().map(String::len).sum::<usize>())
    }

    /// Sets (or, with `None`, ends) `client`'s failure scope (admitted).
    pub(super) fn set_failure_scope(&mut self, client: &str, roles: Option<&[String]>) {
        let bytes =
            |roles: &Vec<String>| client.len() + roles.iter().map(String::len).sum::<usize>();
        if let Some(old) = self.failure_scopes.remove(client) {
            self.meta_bytes -= bytes(&old);
        }
        if let Some(roles) = roles {
            let mut roles = roles.to_vec();
            roles.sort();
            roles.dedup();
            self.meta_bytes += bytes(&roles);
            self.failure_scopes.insert(client.to_owned(), roles);
        }
        self.dirty_meta = true;
    }

    pub(super) fn failure_scopes_bytes(&self) -> usize {
        self.failure_scopes
            .iter()
            .map(|(c, roles)| c.len() + roles.iter().map(String::len).sum::<usize>())
            .sum()
    }
}
