//! The fallbacks middleware: other models to try when the request's own fails.

use std::sync::Arc;

use sllmp_core::{Error, Request, Route};

use crate::{Ctx, Flow, HookSet, Middleware};

/// When the attempts at the request's target end in a retryable error (after its retries:
/// a provider's 429 or 5xx, an unreachable provider, a timeout), tries these routes in
/// order, each with the same [`RetryPolicy`](crate::RetryPolicy), as long as nothing has
/// reached the client. The server's `x-sllmp-model` header names the target that answered.
///
/// ```
/// use sllmp_core::Route;
/// use sllmp_pipeline::{Fallbacks, Pipeline};
///
/// let fallbacks = Fallbacks::new([Route::new("openai", "gpt-4o-mini"), Route::new("mock", "echo")]);
/// let factory = move |pipeline: &mut Pipeline| {
///     pipeline.add(fallbacks.clone());
/// };
/// # let _ = factory;
/// ```
#[derive(Debug, Clone)]
pub struct Fallbacks {
    routes: Arc<[Route]>,
}

impl Fallbacks {
    /// Falls back to `routes`, in order.
    pub fn new(routes: impl IntoIterator<Item = Route>) -> Fallbacks {
        Fallbacks {
            routes: routes.into_iter().collect(),
        }
    }

    /// The routes, in order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }
}

#[async_trait::async_trait]
impl Middleware for Fallbacks {
    fn name(&self) -> &'static str {
        "fallbacks"
    }

    fn hooks(&self) -> HookSet {
        HookSet::REQUEST
    }

    async fn on_request(&mut self, ctx: &mut Ctx, _req: &mut Request) -> Result<Flow, Error> {
        ctx.set_fallbacks(Arc::clone(&self.routes));
        Ok(Flow::Continue)
    }
}
