//! The operations the proxy serves, and the request and response of any of them:
//! [`Operation`], [`Request`], [`Response`].

use bytes::Bytes;

use crate::{
    ChatCompletion, ChatInput, ChatRequest, Completion, Embeddings, EmbeddingsRequest, JsonMap,
    Usage, estimate_prompt_tokens,
};

/// What a request asks for. Every operation goes through the same pipeline; the phases that
/// only make sense for chat (chunks, the final chat response) run only for [`Operation::Chat`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// `POST /v1/chat/completions`.
    Chat,
    /// `POST /v1/embeddings`.
    Embeddings,
}

impl Operation {
    /// The name OpenTelemetry's GenAI conventions use (`gen_ai.operation.name`): `chat`,
    /// `embeddings`. Also the `operation` of logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Chat => "chat",
            Operation::Embeddings => "embeddings",
        }
    }
}

/// The request of any operation, as middleware see it in `on_request`.
///
/// What every operation has (model, metadata, user) is read through its methods; the
/// operation's own fields through [`Request::chat`] / [`Request::embeddings`] (and their
/// `_mut` twins).
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// A chat completion, with the client's bytes while unchanged.
    Chat(ChatInput),
    /// An embeddings request.
    Embeddings(EmbeddingsRequest),
}

impl Request {
    /// Which operation this is.
    pub fn operation(&self) -> Operation {
        match self {
            Request::Chat(_) => Operation::Chat,
            Request::Embeddings(_) => Operation::Embeddings,
        }
    }

    /// The model as the client (or a middleware) wrote it, `provider:model`.
    pub fn model(&self) -> &str {
        match self {
            Request::Chat(req) => &req.model,
            Request::Embeddings(req) => &req.model,
        }
    }

    /// Replaces the model; a chat request keeps the client's bytes
    /// ([`ChatInput::set_model`]). To choose where a request goes, prefer a route
    /// (`Ctx::set_route`): it needs no string to be parsed again.
    pub fn set_model(&mut self, model: impl Into<String>) {
        match self {
            Request::Chat(req) => req.set_model(model),
            Request::Embeddings(req) => req.model = model.into(),
        }
    }

    /// The client's `metadata` (never sent upstream).
    pub fn metadata(&self) -> Option<&JsonMap> {
        match self {
            Request::Chat(req) => req.metadata.as_ref(),
            Request::Embeddings(req) => req.metadata.as_ref(),
        }
    }

    /// The end user's id (`user`).
    pub fn user(&self) -> Option<&str> {
        match self {
            Request::Chat(req) => req.user.as_deref(),
            Request::Embeddings(req) => req.user.as_deref(),
        }
    }

    /// Whether the client asked for a stream (only chat streams).
    pub fn is_stream(&self) -> bool {
        match self {
            Request::Chat(req) => req.is_stream(),
            Request::Embeddings(_) => false,
        }
    }

    /// Whether the client asked for the usage chunk of a stream.
    pub fn wants_stream_usage(&self) -> bool {
        match self {
            Request::Chat(req) => req.wants_stream_usage(),
            Request::Embeddings(_) => false,
        }
    }

    /// A rough count of the input tokens, for estimates (limits, cancelled requests).
    pub fn estimate_prompt_tokens(&self) -> u64 {
        match self {
            Request::Chat(req) => estimate_prompt_tokens(req),
            Request::Embeddings(req) => req.estimate_tokens(),
        }
    }

    /// The chat request, if this is one.
    pub fn chat(&self) -> Option<&ChatInput> {
        match self {
            Request::Chat(req) => Some(req),
            _ => None,
        }
    }

    /// The chat request, mutably (writing through it drops the client's bytes).
    pub fn chat_mut(&mut self) -> Option<&mut ChatInput> {
        match self {
            Request::Chat(req) => Some(req),
            _ => None,
        }
    }

    /// The embeddings request, if this is one.
    pub fn embeddings(&self) -> Option<&EmbeddingsRequest> {
        match self {
            Request::Embeddings(req) => Some(req),
            _ => None,
        }
    }

    /// The embeddings request, mutably.
    pub fn embeddings_mut(&mut self) -> Option<&mut EmbeddingsRequest> {
        match self {
            Request::Embeddings(req) => Some(req),
            _ => None,
        }
    }
}

impl From<ChatInput> for Request {
    fn from(req: ChatInput) -> Request {
        Request::Chat(req)
    }
}

impl From<ChatRequest> for Request {
    fn from(req: ChatRequest) -> Request {
        Request::Chat(ChatInput::new(req))
    }
}

impl From<EmbeddingsRequest> for Request {
    fn from(req: EmbeddingsRequest) -> Request {
        Request::Embeddings(req)
    }
}

/// The non-streamed answer of any operation (a stream's, assembled), with the provider's
/// bytes while unchanged.
#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    /// A chat completion.
    Chat(Completion),
    /// Embedding vectors.
    Embeddings(Embeddings),
}

impl Response {
    /// Which operation answered.
    pub fn operation(&self) -> Operation {
        match self {
            Response::Chat(_) => Operation::Chat,
            Response::Embeddings(_) => Operation::Embeddings,
        }
    }

    /// The token usage the provider reported, in the shape every operation shares.
    pub fn usage(&self) -> Option<Usage> {
        match self {
            Response::Chat(resp) => resp.usage.clone(),
            Response::Embeddings(resp) => resp.usage.as_ref().map(|u| u.to_usage()),
        }
    }

    /// The model that answered, as the provider names it.
    pub fn model(&self) -> &str {
        match self {
            Response::Chat(resp) => &resp.model,
            Response::Embeddings(resp) => &resp.model,
        }
    }

    /// The answer as JSON: the provider's bytes when unchanged, else encoded.
    pub fn to_json(&self) -> Bytes {
        match self {
            Response::Chat(resp) => resp.to_json(),
            Response::Embeddings(resp) => resp.to_json(),
        }
    }

    /// The provider's bytes, if the answer is unchanged since it was read.
    pub fn wire(&self) -> Option<&Bytes> {
        match self {
            Response::Chat(resp) => resp.wire(),
            Response::Embeddings(resp) => resp.wire(),
        }
    }

    /// The chat completion, if this is one.
    pub fn chat(&self) -> Option<&Completion> {
        match self {
            Response::Chat(resp) => Some(resp),
            _ => None,
        }
    }

    /// The embeddings answer, if this is one.
    pub fn embeddings(&self) -> Option<&Embeddings> {
        match self {
            Response::Embeddings(resp) => Some(resp),
            _ => None,
        }
    }
}

impl From<Completion> for Response {
    fn from(resp: Completion) -> Response {
        Response::Chat(resp)
    }
}

impl From<ChatCompletion> for Response {
    fn from(resp: ChatCompletion) -> Response {
        Response::Chat(Completion::new(resp))
    }
}

impl From<Embeddings> for Response {
    fn from(resp: Embeddings) -> Response {
        Response::Embeddings(resp)
    }
}
