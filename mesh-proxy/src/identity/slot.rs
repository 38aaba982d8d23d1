//! The proxy's identity as the data path sees it: absent until the first certificate arrives,
//! and absent for good when no CA is configured.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use super::{Identity, IdentityHandle};

/// Anything that can tell the identity in force at handshake time.
pub trait CurrentIdentity: Send + Sync + 'static {
    fn current_identity(&self) -> Option<Arc<Identity>>;
}

impl CurrentIdentity for IdentityHandle {
    fn current_identity(&self) -> Option<Arc<Identity>> {
        Some(self.current())
    }
}

/// Shared by listeners and upstream TLS configs, which are built before the first certificate
/// exists and read it at each handshake.
#[derive(Debug, Default)]
pub struct IdentitySlot {
    /// A CA is configured: mesh mTLS is expected, even while the certificate is pending.
    enabled: AtomicBool,
    handle: OnceLock<IdentityHandle>,
}

impl IdentitySlot {
    /// Marks mTLS as expected before the certificate arrives (auto mTLS picks mTLS then).
    pub fn enable(&self) {
        self.enabled.store(true, Ordering::Release);
    }

    /// Publishes the workload identity; renewals flow through the handle. Set once.
    pub fn set(&self, handle: IdentityHandle) {
        self.enable();
        if self.handle.set(handle).is_err() {
            tracing::warn!("workload identity already set; keeping the first source");
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Acquire)
    }

    pub fn handle(&self) -> Option<&IdentityHandle> {
        self.handle.get()
    }
}

impl CurrentIdentity for IdentitySlot {
    fn current_identity(&self) -> Option<Arc<Identity>> {
        self.handle.get().map(IdentityHandle::current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_slot_has_no_identity() {
        let slot = IdentitySlot::default();
        assert!(!slot.is_enabled());
        assert!(slot.current_identity().is_none());
        slot.enable();
        assert!(slot.is_enabled());
        assert!(slot.current_identity().is_none());
    }
}
