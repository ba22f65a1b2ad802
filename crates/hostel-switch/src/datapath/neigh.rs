//! The external network's neighbour cache: which MAC an IP next hop on the wire has (the
//! upstream gateway, on-link hosts). Bounded: at most [`CAPACITY`] entries, the least
//! recently confirmed evicted first, except pinned ones (the gateways), so nothing a VM or a
//! wire host sends can grow it or push the gateway out.

use std::net::IpAddr;

use crate::tables::FastMap;
use crate::types::MacAddr;

pub const CAPACITY: usize = 1024;
/// An entry older than this is still used but asked for again (like the kernel's STALE).
pub const REFRESH_NS: u64 = 60_000_000_000;
/// At most one request per next hop per this interval.
pub const ASK_EVERY_NS: u64 = 1_000_000_000;

#[derive(Clone, Copy, Debug)]
struct Entry {
    mac: Option<MacAddr>,
    confirmed_ns: u64,
    asked_ns: Option<u64>,
    pinned: bool,
}

/// What a lookup found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lookup {
    pub mac: Option<MacAddr>,
    /// The caller should send a request (ARP or neighbour solicitation) for the address.
    pub ask: bool,
}

#[derive(Default)]
pub struct NeighCache {
    entries: FastMap<IpAddr, Entry>,
}

impl NeighCache {
    /// The MAC of `ip`, creating an incomplete entry if there is none; says whether a
    /// request is due (never more than one per [`ASK_EVERY_NS`] per address).
    pub fn lookup(&mut self, ip: IpAddr, now: u64) -> Lookup {
        if !self.entries.contains_key(&ip) {
            self.make_room();
            self.entries.insert(
                ip,
                Entry {
                    mac: None,
                    confirmed_ns: now,
                    asked_ns: None,
                    pinned: false,
                },
            );
        }
        let Some(e) = self.entries.get_mut(&ip) else {
            return Lookup {
                mac: None,
                ask: false,
            };
        };
        let due = e.mac.is_none() || now.saturating_sub(e.confirmed_ns) >= REFRESH_NS;
        let ask = due
            && e.asked_ns
                .map_or(true, |a| now.saturating_sub(a) >= ASK_EVERY_NS);
        if ask {
            e.asked_ns = Some(now);
        }
        Lookup { mac: e.mac, ask }
    }

    /// Keeps `ip` from eviction (the upstream gateways).
    pub fn pin(&mut self, ip: IpAddr, now: u64) {
        if !self.entries.contains_key(&ip) {
            self.make_room();
        }
        self.entries
            .entry(ip)
            .or_insert(Entry {
                mac: None,
                confirmed_ns: now,
                asked_ns: None,
                pinned: true,
            })
            .pinned = true;
    }

    /// Records that `ip` is at `mac`. Only addresses the switch asked about (an entry
    /// exists) are learnt, unless `create`: unsolicited traffic cannot fill the cache.
    pub fn learn(&mut self, ip: IpAddr, mac: MacAddr, now: u64, create: bool) {
        if mac.is_multicast() || mac == MacAddr::ZERO {
            return;
        }
        if !self.entries.contains_key(&ip) {
            if !create {
                return;
            }
            self.make_room();
        }
        let e = self.entries.entry(ip).or_insert(Entry {
            mac: None,
            confirmed_ns: now,
            asked_ns: None,
            pinned: false,
        });
        e.mac = Some(mac);
        e.confirmed_ns = now;
        e.asked_ns = None;
    }

    /// The MAC known for `ip`, without side effects.
    pub fn get(&self, ip: IpAddr) -> Option<MacAddr> {
        self.entries.get(&ip).and_then(|e| e.mac)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn make_room(&mut self) {
        if self.entries.len() < CAPACITY {
            return;
        }
        // Linear, but only on insertion into a full cache: at most CAPACITY steps.
        let victim = self
            .entries
            .iter()
            .filter(|(_, e)| !e.pinned)
            .min_by_key(|(_, e)| (e.mac.is_some(), e.confirmed_ns))
            .map(|(ip, _)| *ip);
        if let Some(v) = victim {
            self.entries.remove(&v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n))
    }

    #[test]
    fn asks_once_per_interval_and_learns_only_what_it_asked() {
        let mut c = NeighCache::default();
        let m = MacAddr([2, 0, 0, 0, 0, 9]);
        c.learn(ip(1), m, 0, false);
        assert_eq!(c.get(ip(1)), None, "unsolicited answers are not learnt");
        assert_eq!(
            c.lookup(ip(1), 10),
            Lookup {
                mac: None,
                ask: true
            }
        );
        assert_eq!(
            c.lookup(ip(1), 20),
            Lookup {
                mac: None,
                ask: false
            }
        );
        assert!(c.lookup(ip(1), 10 + ASK_EVERY_NS).ask);
        c.learn(ip(1), m, 100, false);
        assert_eq!(
            c.lookup(ip(1), 200),
            Lookup {
                mac: Some(m),
                ask: false
            }
        );
        let stale = c.lookup(ip(1), 100 + REFRESH_NS);
        assert_eq!(
            stale,
            Lookup {
                mac: Some(m),
                ask: true
            }
        );
    }

    #[test]
    fn bounded_and_pinned_entries_survive() {
        let mut c = NeighCache::default();
        c.pin(ip(0), 0);
        assert!(c.lookup(ip(0), 0).ask, "pinning is no request");
        c.learn(ip(0), MacAddr([2, 0, 0, 0, 0, 1]), 0, false);
        for n in 1..(3 * CAPACITY as u32) {
            c.lookup(ip(n), u64::from(n));
        }
        assert_eq!(c.len(), CAPACITY);
        assert_eq!(c.get(ip(0)), Some(MacAddr([2, 0, 0, 0, 0, 1])));
    }
}
