//! Which connections get in: Kafka's `max.connections` (all clients together) and
//! `max.connections.per.ip`. The accept loop asks for a slot before it spawns a connection
//! task; a connection over either limit is closed at once, as Kafka does, and counted. The slot
//! goes back when the connection's task ends, whatever ended it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the broker holds its maximum of {0} connections (--max-connections)")]
    MaxConnections(usize),
    #[error("this address holds its maximum of {0} connections (--max-connections-per-ip)")]
    MaxConnectionsPerIp(usize),
}

/// The open connections, in all and per client address.
pub struct Admission {
    connections_max: usize,
    per_ip_max: Option<usize>,
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// One admitted connection; dropping it frees the slot.
pub struct Slot {
    admission: Arc<Admission>,
    ip: IpAddr,
}

impl Admission {
    pub fn new(connections_max: usize, per_ip_max: Option<usize>) -> Arc<Admission> {
        Arc::new(Admission {
            connections_max,
            per_ip_max,
            open: Mutex::new(Open::default()),
        })
    }

    /// A slot for a new connection from `ip`, or why there is none.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Refusal> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let from_ip = open.per_ip.get(&ip).copied().unwrap_or(0);
        if let Some(per_ip_max) = self.per_ip_max.filter(|max| from_ip >= *max) {
            return Err(Refusal::MaxConnectionsPerIp(per_ip_max));
        }
        if open.total >= self.connections_max {
            return Err(Refusal::MaxConnections(self.connections_max));
        }
        open.total += 1;
        open.per_ip.insert(ip, from_ip + 1);
        Ok(Slot {
            admission: self.clone(),
            ip,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).total
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self
            .admission
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        open.total = open.total.saturating_sub(1);
        // The map keeps only addresses with open connections, so it is bounded by the limit.
        if let Some(count) = open.per_ip.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.per_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn the_broker_wide_limit_refuses_the_next_connection_until_a_slot_is_freed() {
        let admission = Admission::new(2, None);
        let first = admission.admit(ip(1)).unwrap();
        let _second = admission.admit(ip(2)).unwrap();
        assert_eq!(
            admission.admit(ip(3)).err(),
            Some(Refusal::MaxConnections(2))
        );
        drop(first);
        assert_eq!(admission.open(), 1);
        assert!(admission.admit(ip(3)).is_ok());
    }

    #[test]
    fn the_per_ip_limit_counts_each_address_on_its_own() {
        let admission = Admission::new(10, Some(2));
        let a1 = admission.admit(ip(1)).unwrap();
        let _a2 = admission.admit(ip(1)).unwrap();
        assert_eq!(
            admission.admit(ip(1)).err(),
            Some(Refusal::MaxConnectionsPerIp(2))
        );
        let _b = admission.admit(ip(2)).unwrap();
        drop(a1);
        let _a3 = admission.admit(ip(1)).unwrap();
        assert_eq!(admission.open(), 3);
    }

    #[test]
    fn addresses_without_connections_are_forgotten() {
        let admission = Admission::new(10, Some(1));
        for last in 0..=255 {
            drop(admission.admit(ip(last)).unwrap());
        }
        assert!(admission.open.lock().unwrap().per_ip.is_empty());
    }
}
