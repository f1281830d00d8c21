//! The tokio runtime both programs run on.

use std::future::Future;

use super::{exit, Failure};

/// A tokio runtime for one command or a service. Dropping it abandons
/// whatever still runs on its blocking threads instead of waiting: a name
/// lookup that no DNS server answers runs there and cannot be cancelled,
/// and the result it would bring is no longer wanted. (The collector's
/// service returns only after its writer has committed, so nothing it
/// still needs is abandoned.)
pub struct Runtime(Option<tokio::runtime::Runtime>);

impl Runtime {
    /// One thread: the daemon, its commands, the collector's reads.
    pub fn current_thread() -> Result<Runtime, Failure> {
        Runtime::build(tokio::runtime::Builder::new_current_thread())
    }

    /// A thread per core: the collector's service, which serves many
    /// connections at once.
    pub fn multi_thread() -> Result<Runtime, Failure> {
        Runtime::build(tokio::runtime::Builder::new_multi_thread())
    }

    fn build(mut builder: tokio::runtime::Builder) -> Result<Runtime, Failure> {
        let runtime = builder.enable_all().build().map_err(|err| {
            Failure::new(
                exit::OSERR,
                format!("cannot start the tokio runtime: {err}"),
            )
        })?;
        Ok(Runtime(Some(runtime)))
    }

    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.0
            .as_ref()
            .expect("the runtime is only taken when dropped")
            .block_on(future)
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}
