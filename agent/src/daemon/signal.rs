//! SIGTERM and SIGINT: the state files are written before the process exits.

use super::enforcer::{SharedEnforcer, lock_enforcer};

/// On SIGTERM or SIGINT: writes what learning has not written yet (see
/// [`super::persist::PERSIST_DELAY`]), waits for the state files, and exits. The kernel
/// keeps enforcing from the pinned maps meanwhile.
pub(super) fn write_state_on_signal(rt: &tokio::runtime::Runtime, enforcer: SharedEnforcer) {
    use tokio::signal::unix::{SignalKind, signal};
    rt.spawn(async move {
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::warn!(
                "cannot watch for SIGTERM/SIGINT; state may lag by up to 500 ms on exit"
            );
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(e) = lock_enforcer(&enforcer).as_mut() {
                e.persist_learned(true);
                e.persist.flush();
            }
            tracing::info!("state written; exiting");
            std::process::exit(0);
        })
        .await;
    });
}
