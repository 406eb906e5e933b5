//! [`HuddleRuntime`]: the tokio runtime Huddle's network and media IO runs on.
//!
//! Bevy's task pools never run tokio futures: the connection and media sessions spawn on this
//! runtime. `Default` builds a small one of Huddle's own (created when first used);
//! `From<Handle>` lets a game bring its own.

use std::sync::Arc;

use bevy::prelude::*;

/// The tokio runtime Huddle's network tasks run on.
#[derive(Resource, Clone)]
pub struct HuddleRuntime {
    handle: tokio::runtime::Handle,
    _owned: Option<Arc<tokio::runtime::Runtime>>,
}

impl HuddleRuntime {
    /// The runtime's handle.
    pub fn handle(&self) -> &tokio::runtime::Handle {
        &self.handle
    }
}

impl Default for HuddleRuntime {
    /// A small multi-threaded runtime of Huddle's own.
    fn default() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("huddle-io")
            .enable_all()
            .build()
            .unwrap_or_else(|err| panic!("cannot start Huddle's tokio runtime: {err}"));
        Self {
            handle: runtime.handle().clone(),
            _owned: Some(Arc::new(runtime)),
        }
    }
}

impl From<tokio::runtime::Handle> for HuddleRuntime {
    /// Runs on the game's own runtime.
    fn from(handle: tokio::runtime::Handle) -> Self {
        Self {
            handle,
            _owned: None,
        }
    }
}
