//! [`Clients`]: HTTP clients made at their first use, one per key (a `ca_file`, a Graph
//! endpoint), then shared. reqwest and Graph clients are handles on one connection pool, so a
//! shared one keeps its connections from one use to the next instead of a new TLS handshake
//! each time.

use std::sync::{Mutex, PoisonError};

/// The clients made so far, by key. Few keys (one per distinct file or endpoint of a config):
/// a vector searched in order.
#[derive(Debug)]
pub struct Clients<K, C>(Mutex<Vec<(K, C)>>);

impl<K, C> Default for Clients<K, C> {
    fn default() -> Self {
        Clients(Mutex::new(Vec::new()))
    }
}

impl<K: PartialEq, C: Clone> Clients<K, C> {
    /// The client made for `key`, if any.
    pub fn get(&self, key: &K) -> Option<C> {
        let clients = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        clients
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, c)| c.clone())
    }

    /// Keeps `client` for `key` and returns it; when another task kept one for `key` since
    /// [`Clients::get`] found none, that one is returned and `client` is dropped.
    pub fn keep(&self, key: K, client: C) -> C {
        let mut clients = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, kept)) = clients.iter().find(|(k, _)| *k == key) {
            return kept.clone();
        }
        clients.push((key, client.clone()));
        client
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_client_kept_for_a_key_is_the_one_handed_out() {
        let clients: Clients<Option<&str>, u32> = Clients::default();
        assert_eq!(clients.get(&None), None);
        assert_eq!(clients.keep(None, 1), 1);
        // A second one made for the same key meanwhile is dropped.
        assert_eq!(clients.keep(None, 2), 1);
        assert_eq!(clients.get(&None), Some(1));
        assert_eq!(clients.keep(Some("ca.pem"), 3), 3);
        assert_eq!(clients.get(&Some("ca.pem")), Some(3));
        assert_eq!(clients.get(&Some("other.pem")), None);
    }
}
