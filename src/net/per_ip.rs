//! Connections counted per client address, for the listeners' per-address
//! limits (SMTP's `max_sessions_per_ip`, IMAP's `max_sessions_per_ip` and
//! `max_prelogin_per_ip`). A slot is a guard: dropping it gives it back.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Counts slots per client address (one counter per limit).
#[derive(Clone, Default)]
pub struct PerIp(Arc<Mutex<HashMap<IpAddr, usize>>>);

/// One slot of one address; given back when dropped.
pub struct PerIpGuard(PerIp, IpAddr);

impl PerIp {
    /// A slot for `ip` if it holds fewer than `max`.
    pub fn try_take(&self, ip: IpAddr, max: usize) -> Option<PerIpGuard> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(PerIpGuard(self.clone(), ip))
    }
}

impl Drop for PerIpGuard {
    fn drop(&mut self) {
        let mut map = (self.0).0.lock().unwrap_or_else(|p| p.into_inner());
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
}
