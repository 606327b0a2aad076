use std::net::IpAddr;
use std::sync::Arc;

use crate::BackendState;

/// What a caller knows about the request or connection being placed.
#[derive(Debug, Default, Clone)]
pub struct PickContext<'a> {
    pub client_ip: Option<IpAddr>,
    /// Backends already tried for this request (retries go elsewhere).
    pub exclude: &'a [usize],
}

/// A picked backend, counted in flight until dropped.
#[derive(Debug)]
pub struct InFlight {
    backend: Arc<BackendState>,
}

impl InFlight {
    pub(crate) fn new(backend: Arc<BackendState>) -> Self {
        backend.enter();
        Self { backend }
    }

    pub fn backend(&self) -> &Arc<BackendState> {
        &self.backend
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.backend.leave();
    }
}
