//! `lava-group [ROLE]` and `lava-role list`: who is in the group.

use std::io::Write;

use lava_protocol::message::Roles;
use lava_protocol::{RequestKind, Response};

use crate::cli::print_lines;
use crate::error::Error;
use crate::wait::Session;

/// The group's roster (client -> role) over TCP (the console has LAVA's `$LAVA_GROUP`
/// instead): our coordinator's `roster` (at once when the roster
/// was declared, else once the group is complete); against LAVA's coordinator, which
/// answers it with a bare `nack`, `group_data` (once the group is complete).
pub fn roster(s: &Session) -> Result<Roles, Error> {
    let what = format!(
        "the roster of group {:?} (the group is not complete)",
        s.group
    );
    let reply = match s.wait(RequestKind::Roster, &what) {
        Err(e) if e.is_bare_nack() => s.wait(RequestKind::GroupData, &what)?,
        other => other?,
    };
    match (reply.response, reply.roles) {
        (Response::Roster | Response::GroupData, Some(roles)) => Ok(roles),
        (response, _) => Err(Error::BadReply(format!(
            "{response:?} without roles to a roster request"
        ))),
    }
}

/// `client<TAB>role` lines of `roles` (the roster of the group called `group`, where
/// known), or the clients of `role` (none: exit 1).
pub fn group(
    roles: &Roles,
    group: Option<&str>,
    role: Option<&str>,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let lines = group_lines(roles, role);
    if let (Some(role), true) = (role, lines.is_empty()) {
        let of = group
            .map(|g| format!(" of group {g:?}"))
            .unwrap_or_default();
        return Err(Error::Negative(format!(
            "no member{of} has the role {role:?}"
        )));
    }
    print_lines(out, &lines)
}

pub fn group_lines(roles: &Roles, role: Option<&str>) -> Vec<String> {
    match role {
        None => roles.iter().map(|(c, r)| format!("{c}\t{r}")).collect(),
        Some(role) => roles
            .iter()
            .filter(|(_, r)| *r == role)
            .map(|(c, _)| c.clone())
            .collect(),
    }
}

/// Each role once, in the order of first appearance.
pub fn role_lines(roles: &Roles) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for role in roles.values() {
        if !out.contains(role) {
            out.push(role.clone());
        }
    }
    out
}

pub fn role_list(roles: &Roles, out: &mut dyn Write) -> Result<(), Error> {
    print_lines(out, &role_lines(roles))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roles() -> Roles {
        [("10", "server"), ("11", "client"), ("12", "client")]
            .into_iter()
            .map(|(c, r)| (c.to_owned(), r.to_owned()))
            .collect()
    }

    #[test]
    fn group_and_role_listing() {
        assert_eq!(
            group_lines(&roles(), None),
            ["10\tserver", "11\tclient", "12\tclient"]
        );
        assert_eq!(group_lines(&roles(), Some("client")), ["11", "12"]);
        assert!(group_lines(&roles(), Some("nobody")).is_empty());
        assert_eq!(role_lines(&roles()), ["server", "client"]);
    }
}
