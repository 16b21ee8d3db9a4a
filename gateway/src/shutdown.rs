//! Graceful shutdown: a future that completes on SIGTERM or SIGINT, shared by every server a
//! role runs so they all drain together.

use tokio::sync::watch;

/// A cloneable handle that resolves once shutdown has been requested.
#[derive(Clone)]
pub struct Shutdown {
    receiver: watch::Receiver<bool>,
}

/// The sending side: call [`ShutdownTrigger::trigger`] to stop every server holding a
/// [`Shutdown`].
pub struct ShutdownTrigger {
    sender: watch::Sender<bool>,
}

impl ShutdownTrigger {
    pub fn trigger(&self) {
        self.sender.send_replace(true);
    }
}

/// A new shutdown pair that is only triggered by hand (tests, embedding).
pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (sender, receiver) = watch::channel(false);
    (ShutdownTrigger { sender }, Shutdown { receiver })
}

impl Shutdown {
    /// A shutdown handle triggered by SIGTERM or SIGINT (Ctrl-C).
    pub fn on_signals() -> Self {
        let (trigger, shutdown) = channel();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("received shutdown signal, draining");
            trigger.trigger();
        });
        shutdown
    }

    /// Completes once shutdown has been requested (immediately if it already was).
    pub async fn requested(mut self) {
        // An error means the trigger was dropped without firing: treat that as shutdown too,
        // so no server outlives its owner.
        let _ = self.receiver.wait_for(|stop| *stop).await;
    }

    /// Whether shutdown has already been requested.
    pub fn is_requested(&self) -> bool {
        *self.receiver.borrow()
    }
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut sigterm) => {
            tokio::select! {
                _ = sigterm.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGTERM; only SIGINT stops the process");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}
