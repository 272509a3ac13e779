//! A custom middleware around the LLM call, served by SLLMP: the Rust version of the Python
//! original's custom-middleware example, plus the same as a full `Middleware` impl.
//!
//! Run with `cargo run -p example-custom-middleware`, then:
//!
//! ```text
//! curl localhost:8000/v1/chat/completions -H 'Content-Type: application/json' \
//!   -d '{"model": "mock:echo", "messages": [{"role": "user", "content": "Hello!"}]}'
//! ```

use std::time::Instant;

use sllmp::providers::{Mock, OpenAi, OpenAiConfig, http_client};
use sllmp::{
    Ctx, HookSet, Hooks, Middleware, Outcome, Pipeline, ProviderRegistry, ResponseView, Retry,
    Secret, Server,
};

/// The Python example, with closures: a pre hook and a post hook around the LLM call.
fn custom_middleware() -> Hooks {
    Hooks::new("custom")
        .on_attempt(|_ctx, req| {
            println!("Processing request to {}", req.model());
            Ok(())
        })
        .on_complete(|ctx, _outcome| println!("Request completed for {}", ctx.request_id()))
}

/// The same idea as a type, with per-request state in `&mut self`: times each provider call.
#[derive(Default)]
struct CallTimer {
    started: Option<Instant>,
}

#[sllmp::async_trait]
impl Middleware for CallTimer {
    fn name(&self) -> &'static str {
        "call_timer"
    }

    // Only these hooks are called; the pipeline skips the rest.
    fn hooks(&self) -> HookSet {
        HookSet::ATTEMPT | HookSet::RESPONSE | HookSet::COMPLETE
    }

    async fn on_attempt(
        &mut self,
        _ctx: &mut Ctx,
        _req: &mut sllmp::AttemptRequest<'_>,
    ) -> Result<(), sllmp::Error> {
        self.started = Some(Instant::now());
        Ok(())
    }

    async fn on_response(
        &mut self,
        ctx: &mut Ctx,
        resp: ResponseView<'_>,
    ) -> Result<(), sllmp::Error> {
        if let Some(started) = self.started {
            println!(
                "{}: {} answered in {:?} ({} tokens)",
                ctx.request_id(),
                resp.response().model,
                started.elapsed(),
                ctx.usage().map_or(0, |u| u.total_tokens)
            );
        }
        Ok(())
    }

    async fn on_complete(&mut self, ctx: &Ctx, outcome: &Outcome<'_>) {
        println!("{} ended: {}", ctx.request_id(), outcome.as_str());
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut providers = ProviderRegistry::new().with(Mock::new("mock"));
    if let Ok(key) = std::env::var("OPENAI_API_KEY") {
        let config = OpenAiConfig {
            api_key: Some(Secret::new(key)),
            ..OpenAiConfig::default()
        };
        providers = providers.with(OpenAi::new(
            "openai",
            config,
            http_client(&Default::default()),
        ));
    }
    // The pipeline factory runs once per request: each request gets fresh middleware.
    let server = Server::new(providers).pipeline(|pipeline: &mut Pipeline| {
        pipeline.add(Retry::new());
        pipeline.add(custom_middleware());
        pipeline.add(CallTimer::default());
    });
    println!("listening on http://127.0.0.1:8000");
    server.serve("127.0.0.1:8000".parse().unwrap()).await
}
