//! The timeouts middleware: sets the request's [`Timeouts`].

use sllmp_core::{Error, Request};

use crate::{Ctx, Flow, HookSet, Middleware, Timeouts};

/// Bounds every attempt of the request by `timeouts` (connect, first token, total; see
/// [`Timeouts`]). Without it, the defaults of [`Timeouts::default`] apply.
///
/// ```
/// use std::time::Duration;
/// use sllmp_pipeline::{Pipeline, SetTimeouts, Timeouts};
///
/// fn factory(pipeline: &mut Pipeline) {
///     pipeline.add(SetTimeouts(Timeouts { first_token: Duration::from_secs(20), ..Timeouts::default() }));
/// }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct SetTimeouts(pub Timeouts);

#[async_trait::async_trait]
impl Middleware for SetTimeouts {
    fn name(&self) -> &'static str {
        "timeouts"
    }

    fn hooks(&self) -> HookSet {
        HookSet::REQUEST
    }

    async fn on_request(&mut self, ctx: &mut Ctx, _req: &mut Request) -> Result<Flow, Error> {
        ctx.set_timeouts(self.0);
        Ok(Flow::Continue)
    }
}
