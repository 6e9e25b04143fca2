//! Instance slots: how many invocations run at once, in all and per plugin.
//!
//! The instance pool is finite, so an invocation waits for a slot. No plugin holds more than half
//! of them: a plugin whose invocations sleep or spin until their time limit can make its own
//! callers wait, never every other plugin's (an upload's parser always finds a slot).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The slots of one registry.
#[derive(Debug)]
pub(super) struct Slots {
    all: Arc<Semaphore>,
    total: u32,
    /// Each plugin's share, by name, made on its first invocation.
    shares: Mutex<BTreeMap<String, Arc<Semaphore>>>,
}

/// Slots held by one invocation (or one parse's workers); given back when dropped.
#[derive(Debug)]
pub(super) struct Slot {
    _share: OwnedSemaphorePermit,
    _all: OwnedSemaphorePermit,
}

impl Slots {
    pub(super) fn new(total: u32) -> Slots {
        Slots {
            all: Arc::new(Semaphore::new(total as usize)),
            total,
            shares: Mutex::default(),
        }
    }

    /// The most slots one plugin may hold at once.
    pub(super) fn share(&self) -> u32 {
        (self.total / 2).max(1)
    }

    /// Waits for `n` slots for `plugin` (at most its share), first from the plugin's share and
    /// then from all, so a plugin waiting on its own share holds nobody else's.
    pub(super) async fn take(&self, plugin: &str, n: u32) -> Option<Slot> {
        let n = n.clamp(1, self.share());
        let share = self
            .shares
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(plugin.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(self.share() as usize)))
            .clone();
        let share = share.acquire_many_owned(n).await.ok()?;
        let all = self.all.clone().acquire_many_owned(n).await.ok()?;
        Some(Slot {
            _share: share,
            _all: all,
        })
    }

    /// Slots held now, by every plugin.
    pub(super) fn in_use(&self) -> usize {
        (self.total as usize).saturating_sub(self.all.available_permits())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_plugin_holds_at_most_half_and_the_rest_stay_free() {
        let slots = Slots::new(8);
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(slots.take("greedy", 1).await);
        }
        assert_eq!(slots.in_use(), 4);
        // A fifth for the same plugin waits...
        let waiting = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            slots.take("greedy", 1),
        )
        .await;
        assert!(waiting.is_err(), "a plugin got more than its share");
        // ...while another plugin is served at once, up to its own share.
        let other = slots.take("csv", 4).await;
        assert!(other.is_some());
        assert_eq!(slots.in_use(), 8);
        drop(held.pop());
        assert!(slots.take("greedy", 1).await.is_some());
        // Asking for more than a share takes the share.
        drop(other);
        drop(held);
        let many = slots.take("csv", 100).await;
        assert!(many.is_some());
        assert_eq!(slots.in_use(), 4);
    }
}
