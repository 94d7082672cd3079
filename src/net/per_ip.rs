//! Connections counted per client address, for the listeners' per-address
//! limits (SMTP's `max_sessions_per_ip`, IMAP's `max_sessions_per_ip` and
//! `max_prelogin_per_ip`). A slot is a guard: dropping it gives it back.
//!
//! What counts as one address: an IPv4 address (an IPv4-mapped IPv6
//! address counts as its IPv4 address, as a dual-stack listener sees IPv4
//! clients); an IPv6 address by its first `ipv6_prefix_per_ip` bits (128,
//! the whole address, by default: a LAN's desktops share one /64; 64 for a
//! listener reachable from the internet, where one host is routinely given
//! a whole /64 and could otherwise take every session slot with addresses
//! of its own).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};

/// The IPv6 prefix length counted as one client unless configured: the
/// whole address, as for IPv4. A LAN is one /64, so grouping by /64 would
/// count an office's desktops as one client; a listener reachable from
/// the internet is better set to 64 (one host is often given a whole
/// /64, and could otherwise fill every session slot with addresses of
/// its own).
pub const DEFAULT_IPV6_PREFIX: u8 = 128;

/// The IPv6 prefix lengths `ipv6_prefix_per_ip` may take.
pub const IPV6_PREFIXES: std::ops::RangeInclusive<u8> = 32..=128;

/// Counts slots per client (one counter per limit).
#[derive(Clone)]
pub struct PerIp {
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ipv6_prefix: u8,
}

/// One slot of one client; given back when dropped.
pub struct PerIpGuard(PerIp, IpAddr);

impl Default for PerIp {
    fn default() -> Self {
        PerIp::new(DEFAULT_IPV6_PREFIX)
    }
}

impl PerIp {
    /// Counts IPv6 clients by their first `ipv6_prefix` bits (clamped to
    /// [`IPV6_PREFIXES`]; the config checks it).
    pub fn new(ipv6_prefix: u8) -> PerIp {
        PerIp {
            counts: Arc::default(),
            ipv6_prefix: ipv6_prefix.clamp(*IPV6_PREFIXES.start(), *IPV6_PREFIXES.end()),
        }
    }

    /// What `ip` is counted as: itself (IPv4), or its IPv6 prefix.
    pub fn client(&self, ip: IpAddr) -> IpAddr {
        match ip.to_canonical() {
            IpAddr::V4(v4) => IpAddr::V4(v4),
            IpAddr::V6(v6) => {
                let mask = u128::MAX << (128 - u32::from(self.ipv6_prefix));
                IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
            }
        }
    }

    /// A slot for `ip` if its client holds fewer than `max`.
    pub fn try_take(&self, ip: IpAddr, max: usize) -> Option<PerIpGuard> {
        let key = self.client(ip);
        let mut map = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(key).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(PerIpGuard(self.clone(), key))
    }
}

impl Drop for PerIpGuard {
    fn drop(&mut self) {
        let mut map = self.0.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.1);
            }
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
    fn slots_are_counted_per_address_and_given_back() {
        let per_ip = PerIp::default();
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let first = per_ip.try_take(a, 2).unwrap();
        let _second = per_ip.try_take(a, 2).unwrap();
        assert!(per_ip.try_take(a, 2).is_none());
        assert!(per_ip.try_take(b, 2).is_some());
        drop(first);
        assert!(per_ip.try_take(a, 2).is_some());
    }

    #[test]
    fn ipv6_addresses_of_one_prefix_share_their_slots() {
        let per_ip = PerIp::new(64);
        // One host's /64: any number of addresses, two slots in all.
        let first = per_ip.try_take(ip("2001:db8:1:2::1"), 2).unwrap();
        let _second = per_ip.try_take(ip("2001:db8:1:2:ffff::9"), 2).unwrap();
        assert!(
            per_ip
                .try_take(ip("2001:db8:1:2:abcd:1234:5678:9abc"), 2)
                .is_none()
        );
        // The next /64 is another client.
        assert!(per_ip.try_take(ip("2001:db8:1:3::1"), 2).is_some());
        drop(first);
        assert!(per_ip.try_take(ip("2001:db8:1:2::77"), 2).is_some());
    }

    #[test]
    fn the_prefix_is_configurable_and_ipv4_stays_per_address() {
        let per_ip = PerIp::new(48);
        let _a = per_ip.try_take(ip("2001:db8:1:2::1"), 1).unwrap();
        assert!(per_ip.try_take(ip("2001:db8:1:ffff::1"), 1).is_none());
        assert!(per_ip.try_take(ip("2001:db8:2::1"), 1).is_some());
        let exact = PerIp::new(128);
        let _b = exact.try_take(ip("2001:db8::1"), 1).unwrap();
        assert!(exact.try_take(ip("2001:db8::2"), 1).is_some());
        // IPv4, and IPv4 seen through a dual-stack socket: one address each.
        let _c = per_ip.try_take(ip("192.0.2.1"), 1).unwrap();
        assert!(per_ip.try_take(ip("::ffff:192.0.2.1"), 1).is_none());
        assert!(per_ip.try_take(ip("::ffff:192.0.2.2"), 1).is_some());
        assert_eq!(per_ip.client(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
        assert_eq!(PerIp::new(64).client(ip("::1")), ip("::"));
        assert_eq!(PerIp::default().client(ip("::1")), ip("::1"));
    }
}
