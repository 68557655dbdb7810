//! `lava-coordinator unblock|fail|send`: the lab operator's actions on a running
//! coordinator, sent over its port with the lab secret.

use std::time::Duration;

use lava_protocol::{Client, OperatorAction, Request, RequestKind, Response};
use serde_json::{Map, Value};

use crate::status::{OK, REFUSED, UNREACHABLE};

/// `KEY=VALUE` pairs as `lava-send` takes them (split at the first `=`).
pub fn pairs(args: &[String]) -> Result<Value, String> {
    let mut out = Map::new();
    for arg in args {
        match arg.split_once('=') {
            Some((key, value)) if !key.is_empty() => {
                out.insert(key.to_owned(), value.into());
            }
            _ => return Err(format!("{arg:?} is not a KEY=VALUE pair")),
        }
    }
    Ok(Value::Object(out))
}

/// Who acts, for the coordinator's log.
fn operator_name() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "operator".to_owned())
}

/// Sends `action` on `group` to `address`; prints what happened; returns the exit status.
pub fn run(address: &str, secret: Option<&str>, group: &str, action: OperatorAction) -> u8 {
    let verb = action.name();
    let mut request = Request::new(
        group,
        &operator_name(),
        "",
        RequestKind::Operator { action },
    );
    request.role = None;
    request.secret = secret.map(str::to_owned);
    let client = Client::new(address).with_connect_timeout(Duration::from_secs(3));
    let reply = match client.call(&request) {
        Ok(reply) => reply,
        Err(e) => {
            eprintln!("lava-coordinator {verb}: {e}");
            return UNREACHABLE;
        }
    };
    match reply.response {
        Response::Ack => {
            match reply.message.as_ref().and_then(|m| m.get("answered")) {
                Some(n) => println!("group {group:?}: answered {n} held requests"),
                None => println!("group {group:?}: done"),
            }
            OK
        }
        Response::Nack => {
            let why = reply
                .error
                .unwrap_or_else(|| "no reason given (not our coordinator?)".into());
            eprintln!("lava-coordinator {verb}: refused: {why}");
            REFUSED
        }
        other => {
            eprintln!("lava-coordinator {verb}: unexpected answer {other:?}");
            UNREACHABLE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_split_at_the_first_equals() {
        let args = ["a=1".to_owned(), "b=x=y".to_owned()];
        assert_eq!(
            pairs(&args).unwrap(),
            serde_json::json!({"a": "1", "b": "x=y"})
        );
        assert!(pairs(&["novalue".to_owned()]).is_err());
        assert!(pairs(&["=v".to_owned()]).is_err());
    }
}
