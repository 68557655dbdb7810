//! Who may talk to the coordinator: an allow-list of client networks, and a lab secret that
//! requests must carry unless they come from an exempt network (LAVA's dispatchers cannot
//! send one). Per-group secrets are group state (`state`).

use std::net::IpAddr;
use std::str::FromStr;

use serde::Deserialize;

/// A network in CIDR notation, e.g. `10.0.0.0/8` or `fd00::/8`; a bare address is a /32 or /128.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{0:?} is not a network in CIDR notation (e.g. 10.0.0.0/8)")]
pub struct BadCidr(String);

impl FromStr for Cidr {
    type Err = BadCidr;

    fn from_str(s: &str) -> Result<Self, BadCidr> {
        let bad = || BadCidr(s.to_owned());
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let net: IpAddr = addr.trim().parse().map_err(|_| bad())?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.trim().parse::<u8>().map_err(|_| bad())?,
            None => max,
        };
        if prefix > max {
            return Err(bad());
        }
        Ok(Cidr { net, prefix })
    }
}

impl TryFrom<String> for Cidr {
    type Error = BadCidr;
    fn try_from(s: String) -> Result<Self, BadCidr> {
        s.parse()
    }
}

impl Cidr {
    pub fn contains(&self, addr: IpAddr) -> bool {
        // A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d.
        let addr = addr.to_canonical();
        match (self.net, addr) {
            (IpAddr::V4(net), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// The server-wide rules.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// Empty: everybody may connect.
    pub allow: Vec<Cidr>,
    pub secret: Option<String>,
    /// Networks whose requests need no lab secret.
    pub secret_exempt: Vec<Cidr>,
}

/// Compares secrets in time independent of where they differ.
pub fn same_secret(expected: &str, given: Option<&str>) -> bool {
    let Some(given) = given else { return false };
    let (a, b) = (expected.as_bytes(), given.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Access {
    /// Whether a connection from `peer` may be served at all.
    pub fn admits(&self, peer: IpAddr) -> bool {
        self.allow.is_empty() || self.allow.iter().any(|c| c.contains(peer))
    }

    /// Why a request from `peer` carrying `secret` is refused, if it is.
    pub fn refuses(&self, peer: IpAddr, secret: Option<&str>) -> Option<&'static str> {
        if !self.admits(peer) {
            return Some("this address is not allowed to use the coordinator");
        }
        match &self.secret {
            Some(lab)
                if !self.secret_exempt.iter().any(|c| c.contains(peer))
                    && !same_secret(lab, secret) =>
            {
                Some("the request lacks the lab's secret")
            }
            _ => None,
        }
    }
}

impl Access {
    /// Why an operator's action (`lava-coordinator unblock|fail|send`) from `peer` is
    /// refused, if it is: it needs the lab secret, which no network is exempt from, and a
    /// coordinator without one takes no operator actions.
    pub fn refuses_operator(&self, peer: IpAddr, secret: Option<&str>) -> Option<&'static str> {
        if !self.admits(peer) {
            return Some("this address is not allowed to use the coordinator");
        }
        match &self.secret {
            None => Some(
                "operator actions need a lab secret, and this coordinator has none (setting \
                 secret, or LAVA_COORDINATOR_SECRET)",
            ),
            Some(lab) if !same_secret(lab, secret) => {
                Some("the operator's request lacks the lab's secret")
            }
            Some(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidrs_parse_and_match() {
        let lan: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(lan.contains(ip("10.1.200.3")));
        assert!(!lan.contains(ip("10.2.0.1")));
        assert!(lan.contains(ip("::ffff:10.1.0.9")), "IPv4-mapped peers");
        let one: Cidr = "127.0.0.1".parse().unwrap();
        assert!(one.contains(ip("127.0.0.1")) && !one.contains(ip("127.0.0.2")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("192.0.2.1")));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
        for bad in ["10.0.0.0/33", "nonsense", "10.0.0/8", "::/129", "1.2.3.4/x"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn access_rules() {
        let open = Access::default();
        assert_eq!(open.refuses(ip("192.0.2.1"), None), None);
        let lab = Access {
            allow: vec!["127.0.0.0/8".parse().unwrap()],
            secret: Some("s3cret".into()),
            secret_exempt: vec!["127.0.0.2".parse().unwrap()],
        };
        assert!(
            lab.refuses(ip("192.0.2.1"), Some("s3cret")).is_some(),
            "not allowed"
        );
        assert!(lab.refuses(ip("127.0.0.1"), None).is_some(), "no secret");
        assert!(
            lab.refuses(ip("127.0.0.1"), Some("S3cret")).is_some(),
            "wrong secret"
        );
        assert_eq!(lab.refuses(ip("127.0.0.1"), Some("s3cret")), None);
        assert_eq!(lab.refuses(ip("127.0.0.2"), None), None, "exempt network");
        // Operator actions: the secret, from every network, and only where there is one.
        assert!(lab.refuses_operator(ip("127.0.0.2"), None).is_some());
        assert_eq!(lab.refuses_operator(ip("127.0.0.1"), Some("s3cret")), None);
        assert!(lab
            .refuses_operator(ip("192.0.2.1"), Some("s3cret"))
            .is_some());
        assert!(open.refuses_operator(ip("127.0.0.1"), Some("x")).is_some());
    }
}
