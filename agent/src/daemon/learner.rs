//! The DNS proxy's name learner: learns an answer's addresses in place when
//! the enforcer is free, else hands them to the daemon's loop; answers that
//! teach nothing new are released at once.

use super::enforcer::SharedEnforcer;
use super::events::{DaemonEvent, EventSender};
use super::fqdn::now_secs;
use super::known_names::{KnownNames, Novelty};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// Hands learned names from the DNS proxy to the agent's loop.
pub(super) struct AgentLearner {
    pub(super) tx: Mutex<EventSender>,
    pub(super) known: Arc<RwLock<KnownNames>>,
    pub(super) enforcer: SharedEnforcer,
    pub(super) min_ttl: Duration,
}

impl AgentLearner {
    /// Learns `update` on the calling (DNS) thread when the enforcer is
    /// free: no wake-up of the agent loop and back.
    fn learn_in_place(&self, update: &proxy::LearnedNames) -> bool {
        let Ok(mut guard) = self.enforcer.try_lock() else {
            return false;
        };
        let Some(e) = guard.as_mut() else {
            return false;
        };
        let idle = e.persist_due.is_none();
        let learned = e.learn_in_place(update, self.min_ttl, &self.known);
        // The loop sleeps until its next deadline: the state files just
        // became due (and the names need expiring), so it must look again.
        if learned
            && idle
            && e.persist_due.is_some()
            && let Ok(tx) = self.tx.lock()
        {
            let _ = tx.send(DaemonEvent::Wake);
        }
        learned
    }
}

impl proxy::NameLearner for AgentLearner {
    fn learn(&self, update: proxy::LearnedNames) -> tokio::sync::oneshot::Receiver<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let novelty = self
            .known
            .read()
            .map_or(Novelty::NewAddress, |k| k.novelty(&update, now_secs()));
        if novelty != Novelty::Nothing && self.learn_in_place(&update) {
            let _ = tx.send(());
            return rx;
        }
        let ack = match novelty {
            Novelty::NewAddress => tx,
            // Nothing new for the maps: release the answer now; the loop
            // still gets the update to extend the expiry.
            Novelty::LongerTtl => {
                let _ = tx.send(());
                tokio::sync::oneshot::channel().0
            }
            Novelty::Nothing => {
                let _ = tx.send(());
                return rx;
            }
        };
        if let Ok(sender) = self.tx.lock() {
            // If the loop is gone the sender is dropped and the proxy
            // releases the answer (its bounded wait).
            let _ = sender.send(DaemonEvent::Learn((update, ack)));
        }
        rx
    }
}
