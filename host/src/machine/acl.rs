//! ACL checks, ACL fix-up at create and setACL, and the `digest` scheme.
//!
//! ZooKeeper's model: a znode's ACL is a list of (permission bits, scheme,
//! id). A caller is allowed an operation when one entry grants the bit and
//! its id matches one of the caller's authenticated ids. `world:anyone`
//! matches everyone; `ip` matches by address or CIDR prefix; `digest`,
//! `sasl` and `x509` match by exact id. A `super` id passes every check.

use std::net::IpAddr;

use base64::Engine;
use sha1::{Digest as _, Sha1};

use super::command::Identity;
use crate::proto::data::{Acl, Id};
use crate::proto::error::ErrorCode;

/// `user:base64(sha1(user:password))`, the stored form of a digest id.
pub fn digest_id(user_password: &str) -> String {
    let user = user_password.split(':').next().unwrap_or_default();
    let hash = Sha1::digest(user_password.as_bytes());
    format!("{user}:{}", base64::engine::general_purpose::STANDARD.encode(hash))
}

/// Does `acl` grant `perm` to `identity`?
pub fn allowed(acl: &[Acl], identity: &Identity, perm: i32) -> bool {
    if identity.is_super() {
        return true;
    }
    acl.iter().filter(|a| a.perms & perm != 0).any(|a| identity.ids.iter().any(|id| matches(&a.id, id)))
}

/// Fails with `NoAuth` unless `acl` grants `perm`.
pub fn check(acl: &[Acl], identity: &Identity, perm: i32) -> Result<(), ErrorCode> {
    if allowed(acl, identity, perm) { Ok(()) } else { Err(ErrorCode::NoAuth) }
}

fn matches(acl_id: &Id, caller: &Id) -> bool {
    match acl_id.scheme.as_str() {
        "world" => acl_id.id == "anyone",
        "ip" => caller.scheme == "ip" && ip_matches(&acl_id.id, &caller.id),
        _ => acl_id == caller,
    }
}

/// `pattern` is an address or `address/bits`.
fn ip_matches(pattern: &str, addr: &str) -> bool {
    let (net, bits) = match pattern.split_once('/') {
        Some((n, b)) => match b.parse::<u32>() {
            Ok(b) => (n, Some(b)),
            Err(_) => return false,
        },
        None => (pattern, None),
    };
    let (Ok(net), Ok(addr)) = (net.parse::<IpAddr>(), addr.parse::<IpAddr>()) else {
        return false;
    };
    let (net, addr, width) = match (net, addr) {
        (IpAddr::V4(n), IpAddr::V4(a)) => (u32::from(n) as u128, u32::from(a) as u128, 32),
        (IpAddr::V6(n), IpAddr::V6(a)) => (u128::from(n), u128::from(a), 128),
        _ => return false,
    };
    let bits = bits.unwrap_or(width).min(width);
    if bits == 0 {
        return true;
    }
    let shift = width - bits;
    (net >> shift) == (addr >> shift)
}

fn valid_id(id: &Id) -> bool {
    match id.scheme.as_str() {
        "world" => id.id == "anyone",
        "digest" => id.id.split(':').count() == 2,
        "ip" => {
            let (net, bits) = id.id.split_once('/').unwrap_or((&id.id, "0"));
            net.parse::<IpAddr>().is_ok() && bits.parse::<u8>().is_ok()
        }
        "sasl" | "x509" => !id.id.is_empty(),
        _ => false,
    }
}

/// ZooKeeper's `fixupACL`: refuses an empty list or an invalid id, expands
/// each `auth` entry into the caller's authenticated ids (`InvalidACL` when
/// it has none), and drops duplicates, keeping the first.
pub fn fixup(acl: &[Acl], identity: &Identity) -> Result<Vec<Acl>, ErrorCode> {
    if acl.is_empty() {
        return Err(ErrorCode::InvalidAcl);
    }
    let mut out: Vec<Acl> = Vec::with_capacity(acl.len());
    let mut push = |a: Acl| {
        if !out.contains(&a) {
            out.push(a);
        }
    };
    for a in acl {
        if a.id.scheme == "auth" {
            let mut any = false;
            // Of the ids a connection holds, `ip` and `super` are not
            // "authenticated" in ZooKeeper's sense.
            for id in identity.ids.iter().filter(|id| !matches!(id.scheme.as_str(), "ip" | "super")) {
                push(Acl { perms: a.perms, id: id.clone() });
                any = true;
            }
            if !any {
                return Err(ErrorCode::InvalidAcl);
            }
        } else if valid_id(&a.id) {
            push(a.clone());
        } else {
            return Err(ErrorCode::InvalidAcl);
        }
    }
    Ok(out)
}

/// The ACL as `getACL` shows it to a caller without ADMIN: digest hashes
/// masked as `user:x` (ZOOKEEPER-1392).
pub fn masked(acl: &[Acl]) -> Vec<Acl> {
    acl.iter()
        .map(|a| {
            if a.id.scheme == "digest" {
                let user = a.id.id.split(':').next().unwrap_or_default();
                Acl { perms: a.perms, id: Id::new("digest", &format!("{user}:x")) }
            } else {
                a.clone()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::data::perms;

    fn who(ids: &[(&str, &str)]) -> Identity {
        Identity { ids: ids.iter().map(|(s, i)| Id::new(s, i)).collect(), token: None }
    }

    #[test]
    fn digest_matches_zookeeper() {
        // zkCli's `addauth digest super:test` matches the superDigest
        // `super:D/InIHSb7yEEbrWz8b9l71RjZJU=` that apache-zk.sh configures.
        assert_eq!(digest_id("super:test"), "super:D/InIHSb7yEEbrWz8b9l71RjZJU=");
    }

    #[test]
    fn checks() {
        let acl = vec![
            Acl { perms: perms::READ, id: Id::new("world", "anyone") },
            Acl { perms: perms::ALL, id: Id::new("digest", "u:h") },
            Acl { perms: perms::WRITE, id: Id::new("ip", "10.0.0.0/8") },
        ];
        let anon = who(&[("ip", "127.0.0.1")]);
        assert!(allowed(&acl, &anon, perms::READ));
        assert!(!allowed(&acl, &anon, perms::WRITE));
        assert!(allowed(&acl, &who(&[("ip", "10.1.2.3")]), perms::WRITE));
        assert!(allowed(&acl, &who(&[("ip", "1.1.1.1"), ("digest", "u:h")]), perms::ADMIN));
        assert!(allowed(&acl, &who(&[("super", "")]), perms::ADMIN));
    }

    #[test]
    fn fixup_expands_auth_and_refuses_bad_lists() {
        let auth = vec![Acl { perms: perms::ALL, id: Id::new("auth", "") }];
        assert_eq!(fixup(&auth, &who(&[("ip", "127.0.0.1")])), Err(ErrorCode::InvalidAcl));
        let me = who(&[("ip", "127.0.0.1"), ("digest", "u:h")]);
        assert_eq!(fixup(&auth, &me).unwrap(), vec![Acl { perms: perms::ALL, id: Id::new("digest", "u:h") }]);
        assert_eq!(fixup(&[], &me), Err(ErrorCode::InvalidAcl));
        let bad = vec![Acl { perms: perms::ALL, id: Id::new("world", "someone") }];
        assert_eq!(fixup(&bad, &me), Err(ErrorCode::InvalidAcl));
        let twice = [Acl::open(), Acl::open()].concat();
        assert_eq!(fixup(&twice, &me).unwrap(), Acl::open());
    }

    #[test]
    fn masking_hides_digests() {
        let acl = vec![Acl { perms: perms::ALL, id: Id::new("digest", "u:secret") }];
        assert_eq!(masked(&acl)[0].id.id, "u:x");
    }
}
