//! The pipeline's guarantees, against a scripted provider: phase order, retries only before
//! the first chunk, `on_complete` exactly once (disconnects included), errors never swallowed.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;
use sllmp_core::{
    Call, ChatChunk, ChatCompletion, ChatRequest, ChunkStream, Completion, Error, ErrorKind,
    Message, Provider, ProviderRegistry, Request, UpstreamRequest,
};
use sllmp_pipeline::{
    AttemptRequest, Ctx, ErrorAction, Flow, HookSet, Hooks, Middleware, Outcome, Output, Pipeline,
    ResponseView, Retry, RetryWindow, StreamItem, Validation,
};

#[allow(clippy::large_enum_variant)]
enum Script {
    Complete(ChatCompletion),
    Fail(Error),
    /// Items of a stream; when `hang` is set the stream never ends after them.
    Stream {
        items: Vec<Result<ChatChunk, Error>>,
        hang: bool,
    },
    /// Chunks, then a panic inside the provider's stream.
    StreamThenPanic(Vec<ChatChunk>),
    /// A non-streamed call that never answers.
    Hang,
}

#[derive(Default)]
struct Scripted {
    scripts: Mutex<VecDeque<Script>>,
    calls: Mutex<Vec<ChatRequest>>,
    streams_dropped: Arc<AtomicUsize>,
}

struct Shared(Arc<Scripted>);

#[async_trait::async_trait]
impl Provider for Shared {
    fn name(&self) -> &str {
        "scripted"
    }

    async fn chat(&self, _call: &Call<'_>, req: &UpstreamRequest<'_>) -> Result<Completion, Error> {
        self.0.calls.lock().unwrap().push((**req).clone());
        let script = self.0.scripts.lock().unwrap().pop_front();
        match script.expect("a script") {
            Script::Complete(resp) => Ok(resp.into()),
            Script::Fail(err) => Err(err),
            Script::Hang => {
                let _guard = DropCounter(Arc::clone(&self.0.streams_dropped));
                std::future::pending().await
            }
            _ => panic!("stream script for a non-stream call"),
        }
    }

    async fn chat_stream(
        &self,
        _call: &Call<'_>,
        req: &UpstreamRequest<'_>,
    ) -> Result<ChunkStream, Error> {
        self.0.calls.lock().unwrap().push((**req).clone());
        match self
            .0
            .scripts
            .lock()
            .unwrap()
            .pop_front()
            .expect("a script")
        {
            Script::Fail(err) => Err(err),
            Script::Stream { items, hang } => {
                let guard = DropCounter(Arc::clone(&self.0.streams_dropped));
                let head = futures_util::stream::iter(items);
                let stream = if hang {
                    head.chain(futures_util::stream::pending()).boxed()
                } else {
                    head.boxed()
                };
                Ok(stream
                    .map(move |item| {
                        let _keep = &guard;
                        item
                    })
                    .boxed())
            }
            Script::StreamThenPanic(chunks) => {
                let items = chunks.into_iter().map(Some).chain(std::iter::once(None));
                Ok(futures_util::stream::iter(items)
                    .map(|item| Ok(item.expect("a bug in the provider")))
                    .boxed())
            }
            Script::Complete(_) | Script::Hang => panic!("complete script for a stream call"),
        }
    }
}

struct DropCounter(Arc<AtomicUsize>);

impl Drop for DropCounter {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn completion(text: &str) -> ChatCompletion {
    serde_json::from_value(json!({
        "id": "resp", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    }))
    .unwrap()
}

fn chunk(text: &str) -> ChatChunk {
    serde_json::from_value(json!({
        "id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]
    }))
    .unwrap()
}

fn usage_chunk() -> ChatChunk {
    serde_json::from_value(json!({
        "id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [],
        "usage": {"prompt_tokens": 4, "completion_tokens": 6, "total_tokens": 10}
    }))
    .unwrap()
}

fn unavailable() -> Error {
    Error::new(
        ErrorKind::ProviderUnavailable,
        "scripted returned 503: busy",
    )
}

fn request(stream: bool) -> ChatRequest {
    ChatRequest {
        model: "scripted:m".into(),
        messages: vec![Message::new("user", "hello")],
        stream: stream.then_some(true),
        metadata: Some(json!({"feature": "x"}).as_object().unwrap().clone()),
        ..ChatRequest::default()
    }
}

type Log = Arc<Mutex<Vec<String>>>;

/// A middleware that logs every hook it sees as "<name>.<hook>".
fn recorder(name: &'static str, log: &Log) -> Hooks {
    let (l1, l2, l3, l4, l5, l6) = (
        log.clone(),
        log.clone(),
        log.clone(),
        log.clone(),
        log.clone(),
        log.clone(),
    );
    Hooks::new(name)
        .on_request(move |_, _| {
            l1.lock().unwrap().push(format!("{name}.request"));
            Ok(Flow::Continue)
        })
        .on_attempt(move |ctx, _| {
            l2.lock()
                .unwrap()
                .push(format!("{name}.attempt{}", ctx.attempt()));
            Ok(())
        })
        .on_chunk(move |_, _| {
            l3.lock().unwrap().push(format!("{name}.chunk"));
            Ok(())
        })
        .on_response(move |_, resp| {
            let kind = match resp {
                ResponseView::Complete(_) => "complete",
                ResponseView::Streamed(_) => "streamed",
            };
            l4.lock().unwrap().push(format!("{name}.response:{kind}"));
            Ok(())
        })
        .on_error(move |_, err, window| {
            let window = match window {
                RetryWindow::Open { attempt } => format!("open{attempt}"),
                RetryWindow::Closed => "closed".into(),
            };
            l5.lock()
                .unwrap()
                .push(format!("{name}.error:{}:{window}", err.kind().as_str()));
            ErrorAction::Propagate
        })
        .on_complete(move |_, outcome| {
            l6.lock()
                .unwrap()
                .push(format!("{name}.complete:{}", outcome.as_str()));
        })
}

struct Setup {
    provider: Arc<Scripted>,
    log: Log,
}

impl Setup {
    fn new(scripts: Vec<Script>) -> Setup {
        Setup {
            provider: Arc::new(Scripted {
                scripts: Mutex::new(scripts.into()),
                ..Scripted::default()
            }),
            log: Log::default(),
        }
    }

    fn pipeline(&self, req: &ChatRequest) -> Pipeline {
        let mut registry = ProviderRegistry::new();
        registry.insert("scripted", Arc::new(Shared(Arc::clone(&self.provider))));
        let ctx = Ctx::new("req_test", &Request::from(req.clone()), Arc::new(registry));
        let mut pipeline = Pipeline::new(ctx);
        pipeline.add(Validation);
        pipeline.add(recorder("a", &self.log));
        pipeline.add(recorder("b", &self.log));
        pipeline
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// The log once the request completed: `on_complete` of a non-streamed request runs in a
    /// task of its own, after the answer is returned.
    async fn settled(&self) -> Vec<String> {
        for _ in 0..400 {
            if self.log().iter().any(|l| l.starts_with("a.complete")) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.log()
    }

    fn calls(&self) -> usize {
        self.provider.calls.lock().unwrap().len()
    }
}

fn fast_retry() -> Retry {
    Retry::new().base_delay(Duration::from_millis(1))
}

async fn collect(stream: sllmp_pipeline::ResponseStream) -> Vec<String> {
    stream
        .map(|item| match item {
            StreamItem::Chunk(chunk) => serde_json::to_string(&chunk).unwrap(),
            StreamItem::Json(json) => String::from_utf8(json.to_vec()).unwrap(),
            StreamItem::Error(err) => format!("error: {}", err.message()),
        })
        .collect()
        .await
}

#[tokio::test]
async fn hooks_run_in_onion_order_and_complete_once() {
    let setup = Setup::new(vec![Script::Complete(completion("hi"))]);
    let req = request(false);
    let Output::Complete(resp) = setup.pipeline(&req).run(req).await.unwrap() else {
        panic!("expected a completion")
    };
    assert_eq!(resp.chat().unwrap().choices[0].message.text(), "hi");
    assert_eq!(
        setup.settled().await,
        [
            "a.request",
            "b.request",
            "a.attempt1",
            "b.attempt1",
            "b.response:complete",
            "a.response:complete",
            "b.complete:success",
            "a.complete:success"
        ]
    );
    // The provider saw its own model name and no client metadata.
    let sent = setup.provider.calls.lock().unwrap()[0].clone();
    assert_eq!(sent.model, "m");
    assert_eq!(sent.metadata, None);
}

#[tokio::test]
async fn an_attempt_hook_that_writes_changes_only_its_own_attempt() {
    let setup = Setup::new(vec![
        Script::Fail(unavailable()),
        Script::Complete(completion("hi")),
    ]);
    let req = request(false);
    let mut pipeline = setup.pipeline(&req);
    pipeline.add(fast_retry());
    pipeline.add(Hooks::new("first_attempt_cold").on_attempt(|ctx, req| {
        if ctx.attempt() == 1 {
            req.chat_mut().unwrap().temperature = Some(0.0);
        }
        Ok(())
    }));
    pipeline.run(req).await.unwrap();
    let calls = setup.provider.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 2);
    // The first attempt sent the hook's copy; the second started from the request again.
    assert_eq!(calls[0].temperature, Some(0.0));
    assert_eq!(calls[1].temperature, None);
    for sent in &calls {
        assert_eq!(sent.model, "m");
        assert_eq!(sent.metadata, None);
        assert_eq!(sent.messages, [Message::new("user", "hello")]);
    }
}

#[tokio::test]
async fn retries_before_the_first_chunk() {
    let setup = Setup::new(vec![
        Script::Fail(unavailable()),
        Script::Stream {
            items: vec![Err(unavailable())],
            hang: false,
        },
        Script::Stream {
            items: vec![Ok(chunk("He")), Ok(chunk("llo")), Ok(usage_chunk())],
            hang: false,
        },
    ]);
    let req = request(true);
    let mut pipeline = setup.pipeline(&req);
    pipeline.add(fast_retry());
    let Output::Stream(stream) = pipeline.run(req).await.unwrap() else {
        panic!("expected a stream")
    };
    let frames = collect(stream).await;
    assert_eq!(
        frames.len(),
        2,
        "the usage chunk the client did not ask for is dropped"
    );
    assert_eq!(setup.calls(), 3);
    // The provider was asked for usage although the client did not ask.
    let sent = setup.provider.calls.lock().unwrap()[2].clone();
    assert_eq!(sent.stream_options.unwrap().include_usage, Some(true));
    let log = setup.log();
    assert!(log.contains(&"a.error:provider_unavailable:open1".to_string()));
    assert!(log.contains(&"a.error:provider_unavailable:open2".to_string()));
    assert!(log.contains(&"a.attempt3".to_string()));
    assert_eq!(log.last().unwrap(), "a.complete:success");
}

#[tokio::test]
async fn never_retries_after_the_first_chunk() {
    let setup = Setup::new(vec![
        Script::Stream {
            items: vec![Ok(chunk("He")), Err(unavailable())],
            hang: false,
        },
        Script::Stream {
            items: vec![Ok(chunk("never"))],
            hang: false,
        },
    ]);
    let req = request(true);
    let mut pipeline = setup.pipeline(&req);
    pipeline.add(fast_retry());
    let Output::Stream(stream) = pipeline.run(req).await.unwrap() else {
        panic!("expected a stream")
    };
    let frames = collect(stream).await;
    assert_eq!(frames.len(), 2);
    assert_eq!(frames[1], "error: scripted returned 503: busy");
    assert_eq!(setup.calls(), 1, "no second call once a chunk was sent");
    let log = setup.log();
    assert!(log.contains(&"a.error:provider_unavailable:closed".to_string()));
    assert_eq!(log.last().unwrap(), "a.complete:error");
}

#[tokio::test]
async fn retry_gives_up_after_max_retries_and_skips_non_retryable_errors() {
    let setup = Setup::new(vec![
        Script::Fail(unavailable()),
        Script::Fail(unavailable()),
        Script::Fail(unavailable()),
    ]);
    let req = request(false);
    let mut pipeline = setup.pipeline(&req);
    pipeline.add(fast_retry().max_attempts(3));
    let err = pipeline.run(req).await.unwrap_err();
    assert_eq!(err.status(), 503);
    assert_eq!(setup.calls(), 3);

    let setup = Setup::new(vec![Script::Fail(Error::new(
        ErrorKind::ProviderBadRequest,
        "scripted returned 400: bad",
    ))]);
    let req = request(false);
    let mut pipeline = setup.pipeline(&req);
    pipeline.add(fast_retry());
    let err = pipeline.run(req).await.unwrap_err();
    assert_eq!(err.status(), 400);
    assert_eq!(setup.calls(), 1);
}

#[tokio::test]
async fn a_client_that_leaves_mid_stream_stops_the_provider_and_completes_once() {
    let setup = Setup::new(vec![Script::Stream {
        items: vec![Ok(chunk("He"))],
        hang: true,
    }]);
    let req = request(true);
    let Output::Stream(mut stream) = setup.pipeline(&req).run(req).await.unwrap() else {
        panic!("expected a stream")
    };
    assert!(matches!(stream.next().await, Some(StreamItem::Chunk(_))));
    drop(stream);
    for _ in 0..200 {
        if setup.log().last().map(String::as_str) == Some("a.complete:cancelled") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(setup.provider.streams_dropped.load(Ordering::SeqCst), 1);
    let completes: Vec<_> = setup
        .log()
        .into_iter()
        .filter(|l| l.contains("complete"))
        .collect();
    assert_eq!(completes, ["b.complete:cancelled", "a.complete:cancelled"]);
}

#[tokio::test]
async fn a_client_that_leaves_before_the_answer_cancels_the_request() {
    let setup = Setup::new(vec![Script::Stream {
        items: vec![],
        hang: true,
    }]);
    let req = request(true);
    let running = setup.pipeline(&req).start(req);
    tokio::time::sleep(Duration::from_millis(20)).await;
    drop(running);
    for _ in 0..200 {
        if setup.log().last().map(String::as_str) == Some("a.complete:cancelled") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(setup.log().last().unwrap(), "a.complete:cancelled");
    assert_eq!(setup.provider.streams_dropped.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_short_circuit_skips_the_provider_and_streams_as_chunks() {
    let setup = Setup::new(vec![]);
    let req = request(true);
    let mut pipeline = setup.pipeline(&req);
    pipeline.add(
        Hooks::new("cache")
            .on_request(|_, _| Ok(Flow::Respond(completion("cached answer").into()))),
    );
    let Output::Stream(stream) = pipeline.run(req).await.unwrap() else {
        panic!("expected a stream")
    };
    let frames = collect(stream).await;
    assert_eq!(frames.len(), 1 + 2 + 1);
    assert_eq!(setup.calls(), 0);
    assert_eq!(setup.log().last().unwrap(), "a.complete:success");
    assert!(!setup.log().iter().any(|l| l.contains("attempt")));
}

#[tokio::test]
async fn hook_errors_are_never_swallowed() {
    let setup = Setup::new(vec![Script::Complete(completion("hi"))]);
    let req = request(false);
    let mut pipeline = setup.pipeline(&req);
    pipeline.add(Hooks::new("strict").on_response(|_, _| {
        Err(Error::custom(
            422,
            "policy_error",
            Some("blocked"),
            "blocked by policy",
        ))
    }));
    let err = pipeline.run(req).await.unwrap_err();
    assert_eq!((err.status(), err.error_type()), (422, "policy_error"));
    assert_eq!(setup.settled().await.last().unwrap(), "a.complete:error");
    assert!(setup.log().contains(&"a.error:custom:closed".to_string()));
}

#[tokio::test]
async fn a_panicking_hook_becomes_an_internal_error_and_completion_still_runs() {
    let setup = Setup::new(vec![]);
    let req = request(false);
    let mut pipeline = setup.pipeline(&req);
    pipeline.add(Hooks::new("buggy").on_request(|_, _| panic!("bug")));
    let err = pipeline.run(req).await.unwrap_err();
    assert_eq!(err.status(), 500);
    assert_eq!(err.message(), "'buggy' panicked while handling the request");
    assert_eq!(setup.settled().await.last().unwrap(), "a.complete:error");
}

#[tokio::test]
async fn stream_usage_is_recorded_and_passed_on_only_when_asked() {
    let script = || Script::Stream {
        items: vec![Ok(chunk("Hi")), Ok(usage_chunk())],
        hang: false,
    };
    let setup = Setup::new(vec![script()]);
    let mut req = request(true);
    req.stream_options = Some(sllmp_core::StreamOptions {
        include_usage: Some(true),
        ..Default::default()
    });
    let usage_seen = Arc::new(Mutex::new(None));
    let seen = usage_seen.clone();
    let mut pipeline = setup.pipeline(&req);
    pipeline.add(Hooks::new("usage").on_complete(move |ctx, _| {
        *seen.lock().unwrap() = ctx.usage().map(|u| u.total_tokens);
    }));
    let Output::Stream(stream) = pipeline.run(req).await.unwrap() else {
        panic!("expected a stream")
    };
    let frames = collect(stream).await;
    assert_eq!(frames.len(), 2);
    assert!(frames[1].contains(r#""choices":[],"usage":{"prompt_tokens":4"#));
    assert_eq!(*usage_seen.lock().unwrap(), Some(10));
}

#[tokio::test]
async fn an_unknown_provider_is_model_not_found() {
    let setup = Setup::new(vec![]);
    let mut req = request(false);
    req.model = "nope:m".into();
    let err = setup.pipeline(&req).run(req).await.unwrap_err();
    assert_eq!((err.status(), err.code()), (404, Some("model_not_found")));
    assert_eq!(
        err.message(),
        "unknown provider 'nope' in model 'nope:m'; configured providers: scripted"
    );
}

#[tokio::test]
async fn a_provider_stream_that_panics_ends_with_an_error_not_with_done() {
    let setup = Setup::new(vec![Script::StreamThenPanic(vec![chunk("He")])]);
    let req = request(true);
    let Output::Stream(stream) = setup.pipeline(&req).run(req).await.unwrap() else {
        panic!("expected a stream")
    };
    let frames = collect(stream).await;
    assert_eq!(frames.len(), 2);
    assert_eq!(
        frames[1],
        "error: 'scripted' panicked while handling the request"
    );
    assert_eq!(setup.log().last().unwrap(), "a.complete:error");
}

#[tokio::test]
async fn hooks_rewrite_requests_chunks_and_responses() {
    // A stream: on_chunk rewrites each chunk; the client and the assembled response both see
    // the rewritten text.
    let setup = Setup::new(vec![Script::Stream {
        items: vec![Ok(chunk("he")), Ok(chunk("llo"))],
        hang: false,
    }]);
    let req = request(true);
    let assembled = Arc::new(Mutex::new(String::new()));
    let seen = assembled.clone();
    let mut pipeline = setup.pipeline(&req);
    pipeline.add(
        Hooks::new("shout")
            .on_request(|_, req| {
                req.chat_mut().unwrap().temperature = Some(0.0);
                Ok(Flow::Continue)
            })
            .on_chunk(|_, chunk| {
                for choice in &mut chunk.choices {
                    choice.delta.content = choice.delta.content.as_ref().map(|c| c.to_uppercase());
                }
                Ok(())
            })
            .on_response(move |_, resp| {
                *seen.lock().unwrap() = resp.response().choices[0].message.text();
                Ok(())
            }),
    );
    let Output::Stream(stream) = pipeline.run(req).await.unwrap() else {
        panic!("expected a stream")
    };
    let frames = collect(stream).await;
    assert!(frames[0].contains(r#""content":"HE""#), "{frames:?}");
    assert_eq!(*assembled.lock().unwrap(), "HELLO");
    assert_eq!(
        setup.provider.calls.lock().unwrap()[0].temperature,
        Some(0.0)
    );

    // A non-streamed response rewritten in on_response reaches the client rewritten.
    let setup = Setup::new(vec![Script::Complete(completion("hi"))]);
    let req = request(false);
    let mut pipeline = setup.pipeline(&req);
    pipeline.add(Hooks::new("sign").on_response(|_, resp| {
        if let ResponseView::Complete(resp) = resp {
            resp.choices[0].message = Message::new("assistant", "hi (checked)");
        }
        Ok(())
    }));
    let Output::Complete(resp) = pipeline.run(req).await.unwrap() else {
        panic!("expected a completion")
    };
    assert_eq!(
        resp.chat().unwrap().choices[0].message.text(),
        "hi (checked)"
    );
}

#[tokio::test]
async fn a_client_that_leaves_a_non_streamed_request_cancels_it_and_completes_once() {
    let setup = Setup::new(vec![Script::Hang]);
    let req = request(false);
    let running = setup.pipeline(&req).start(req);
    // Poll the request until it reaches the provider, then drop it as a server would.
    let polled = tokio::time::timeout(Duration::from_millis(50), running).await;
    assert!(polled.is_err(), "the provider never answers");
    for _ in 0..200 {
        if setup.log().last().map(String::as_str) == Some("a.complete:cancelled") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let completes: Vec<_> = setup
        .log()
        .into_iter()
        .filter(|l| l.contains("complete"))
        .collect();
    assert_eq!(completes, ["b.complete:cancelled", "a.complete:cancelled"]);
    assert_eq!(
        setup.provider.streams_dropped.load(Ordering::SeqCst),
        1,
        "the provider call was dropped"
    );
}

/// Declares only `on_complete`, and logs "only.<hook>" from every hook: the pipeline must
/// call no other.
struct OnlyComplete(Log);

impl OnlyComplete {
    fn called(&self, hook: &str) {
        self.0.lock().unwrap().push(format!("only.{hook}"));
    }
}

#[async_trait::async_trait]
impl Middleware for OnlyComplete {
    fn name(&self) -> &'static str {
        "only_complete"
    }

    fn hooks(&self) -> HookSet {
        HookSet::COMPLETE
    }

    async fn on_request(&mut self, _: &mut Ctx, _: &mut Request) -> Result<Flow, Error> {
        self.called("request");
        Ok(Flow::Continue)
    }

    async fn on_attempt(&mut self, _: &mut Ctx, _: &mut AttemptRequest<'_>) -> Result<(), Error> {
        self.called("attempt");
        Ok(())
    }

    fn on_chunk(&mut self, _: &mut Ctx, _: &mut ChatChunk) -> Result<(), Error> {
        self.called("chunk");
        Ok(())
    }

    async fn on_response(&mut self, _: &mut Ctx, _: ResponseView<'_>) -> Result<(), Error> {
        self.called("response");
        Ok(())
    }

    async fn on_error(&mut self, _: &mut Ctx, _: &Error, _: RetryWindow) -> ErrorAction {
        self.called("error");
        ErrorAction::Propagate
    }

    async fn on_complete(&mut self, _: &Ctx, outcome: &Outcome<'_>) {
        self.called(&format!("complete:{}", outcome.as_str()));
    }
}

#[tokio::test]
async fn only_the_hooks_a_middleware_declares_are_called() {
    for (stream, scripts) in [
        (
            false,
            vec![
                Script::Fail(unavailable()),
                Script::Complete(completion("hi")),
            ],
        ),
        (
            true,
            vec![
                Script::Fail(unavailable()),
                Script::Stream {
                    items: vec![Ok(chunk("hi")), Ok(usage_chunk())],
                    hang: false,
                },
            ],
        ),
    ] {
        let setup = Setup::new(scripts);
        let req = request(stream);
        let mut pipeline = setup.pipeline(&req);
        pipeline.add(fast_retry());
        pipeline.add(OnlyComplete(Arc::clone(&setup.log)));
        match pipeline.run(req).await.unwrap() {
            Output::Complete(resp) => {
                assert_eq!(resp.chat().unwrap().choices[0].message.text(), "hi")
            }
            Output::Stream(stream) => assert_eq!(collect(stream).await.len(), 1),
        }
        let log = setup.settled().await;
        // Every hook ran for the recorders (a retry included), and only on_complete for it.
        assert!(log.contains(&"a.chunk".to_string()) == stream, "{log:?}");
        assert!(log.iter().any(|l| l.starts_with("a.error")), "{log:?}");
        let only: Vec<&String> = log.iter().filter(|l| l.starts_with("only.")).collect();
        assert_eq!(only, ["only.complete:success"], "stream: {stream}");
    }
}

#[test]
fn hooks_declare_the_closures_they_hold() {
    let hooks = Hooks::new("h")
        .on_request(|_, _| Ok(Flow::Continue))
        .on_complete(|_, _| {});
    assert_eq!(hooks.hooks(), HookSet::REQUEST | HookSet::COMPLETE);
    assert_eq!(
        format!("{:?}", hooks.hooks()),
        r#"{"on_request", "on_complete"}"#
    );
    assert_eq!(Hooks::new("none").hooks(), HookSet::NONE);
    assert!(HookSet::ALL.contains(HookSet::CHUNK | HookSet::ERROR));
}
