//! A per-owner read cache, used only where this process is the database's sole writer (SQLite):
//! reads are served from memory, and every write drops the owner's entry.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Owners kept at most; past this the cache starts over rather than track recency.
const MAX_OWNERS: usize = 10_000;

pub struct OwnerCache<V> {
    slots: Mutex<HashMap<String, Slot<V>>>,
}

struct Slot<V> {
    /// Bumped by every invalidation, so a load that raced a write cannot store stale rows.
    generation: u64,
    value: Option<Arc<V>>,
}

/// A miss: load, then `fill` with this ticket.
pub struct Ticket(u64);

impl<V> Default for OwnerCache<V> {
    fn default() -> Self {
        Self {
            slots: Mutex::default(),
        }
    }
}

impl<V> OwnerCache<V> {
    pub fn get(&self, owner: &str) -> Result<Arc<V>, Ticket> {
        let slots = self.slots.lock().expect("lock poisoned");
        match slots.get(owner) {
            Some(Slot { value: Some(v), .. }) => Ok(v.clone()),
            Some(slot) => Err(Ticket(slot.generation)),
            None => Err(Ticket(0)),
        }
    }

    /// Stores `value` unless the owner was invalidated since the ticket was issued.
    pub fn fill(&self, owner: &str, ticket: Ticket, value: V) -> Arc<V> {
        let value = Arc::new(value);
        let mut slots = self.slots.lock().expect("lock poisoned");
        if slots.len() >= MAX_OWNERS && !slots.contains_key(owner) {
            slots.clear();
        }
        let slot = slots.entry(owner.to_owned()).or_insert(Slot {
            generation: 0,
            value: None,
        });
        if slot.generation == ticket.0 {
            slot.value = Some(value.clone());
        }
        value
    }

    pub fn invalidate(&self, owner: &str) {
        let mut slots = self.slots.lock().expect("lock poisoned");
        let slot = slots.entry(owner.to_owned()).or_insert(Slot {
            generation: 0,
            value: None,
        });
        slot.generation += 1;
        slot.value = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fill_that_raced_a_write_is_not_kept() {
        let c = OwnerCache::<u32>::default();
        let ticket = c.get("ann").unwrap_err();
        c.invalidate("ann"); // a write lands while the load was in flight
        assert_eq!(
            *c.fill("ann", ticket, 1),
            1,
            "the caller still gets its rows"
        );
        let ticket = c.get("ann").expect_err("but they were not cached");
        c.fill("ann", ticket, 2);
        assert_eq!(*c.get("ann").ok().unwrap(), 2);
        c.invalidate("ann");
        assert!(c.get("ann").is_err());
        assert!(c.get("bob").is_err(), "owners are separate");
    }
}
