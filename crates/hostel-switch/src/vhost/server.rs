//! A guest NIC's vhost-user socket: [`hostel_vhost::Server`] serving the port with a fresh
//! [`NicBackend`] per frontend connection.

use std::path::Path;
use std::sync::Arc;

use hostel_vhost::{Device, ExitEvents, Server, ServerError};

use crate::datapath::port::{Mem, PortRuntime};
use crate::datapath::Core;
use crate::error::SwitchError;
use crate::vhost::backend::NicBackend;

struct NicDevice {
    core: Arc<Core>,
    port: Arc<PortRuntime>,
}

impl Device for NicDevice {
    type Backend = NicBackend;

    fn id(&self) -> &str {
        &self.port.id
    }

    fn backend(&self, mem: Mem) -> NicBackend {
        NicBackend::new(self.core.clone(), self.port.clone(), mem)
    }

    fn exit_events(backend: &NicBackend) -> &ExitEvents {
        backend.exit_events()
    }

    fn session_ended(&self, _backend: &NicBackend) {
        // Other ports stop delivering into the departed guest's ring.
        self.port.set_rx(None);
    }
}

/// Handle to a port's listener thread.
pub struct PortServer(Server);

impl PortServer {
    /// Binds `path` (replacing a stale socket file) and starts serving it.
    pub fn start(
        core: Arc<Core>,
        port: Arc<PortRuntime>,
        path: &Path,
    ) -> Result<PortServer, SwitchError> {
        Server::start(Arc::new(NicDevice { core, port }), path)
            .map(PortServer)
            .map_err(|e| match e {
                ServerError::Listen { path, source } => SwitchError::VhostListen { path, source },
                ServerError::Thread { name, source } => SwitchError::Thread { name, source },
            })
    }

    /// Disconnects the guest (if any), stops the thread and removes the socket.
    pub fn stop(self) {
        self.0.stop();
    }
}
