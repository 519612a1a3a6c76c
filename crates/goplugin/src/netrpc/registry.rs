//! The services one net/rpc stream serves: what Go registers with `rpc.RegisterName`, and
//! how a `Service.Method` name finds its handler.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use gob::Value;

/// A boxed, sendable future, the return type of [`Handler::call`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One net/rpc service: what Go registers with `rpc.RegisterName`.
pub trait Handler: Send + Sync + 'static {
    /// The method names served, without the service prefix (e.g. `"LogFind"`). A call to any
    /// other name is answered `rpc: can't find method <Service.Method>` without reaching
    /// [`Handler::call`], exactly as Go answers it.
    fn methods(&self) -> &[&str];

    /// Runs one call. `arg` is the decoded request body. `Ok` is the reply body and must have
    /// the gob type the caller decodes into (for go-plugin's `Plugin.*`: [`Value::Bytes`]);
    /// `Err` is sent as the RPC error text, which the Go caller gets as `rpc.ServerError`.
    fn call<'a>(&'a self, method: &'a str, arg: Value) -> BoxFuture<'a, Result<Value, String>>;
}

/// Service name → handler, for one stream.
#[derive(Clone, Default)]
pub struct Router {
    services: HashMap<String, Arc<dyn Handler>>,
}

impl Router {
    /// A router with no services: every call is answered `rpc: can't find service …`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves `handler` under the net/rpc service name `service` (`"Plugin"`, `"Control"`),
    /// replacing any handler registered under that name before.
    pub fn register(&mut self, service: impl Into<String>, handler: Arc<dyn Handler>) {
        self.services.insert(service.into(), handler);
    }

    /// Splits `Service.Method` at the last dot and finds the handler, with Go's error texts.
    pub(crate) fn resolve(
        &self,
        service_method: &str,
    ) -> Result<(Arc<dyn Handler>, String), String> {
        let Some((service, method)) = service_method.rsplit_once('.') else {
            return Err(format!(
                "rpc: service/method request ill-formed: {service_method}"
            ));
        };
        let Some(handler) = self.services.get(service) else {
            return Err(format!("rpc: can't find service {service_method}"));
        };
        if !handler.methods().contains(&method) {
            return Err(format!("rpc: can't find method {service_method}"));
        }
        Ok((handler.clone(), method.to_string()))
    }
}
