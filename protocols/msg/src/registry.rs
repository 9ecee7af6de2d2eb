//! [`Registry`]: names ↔ ids, payload checks and handlers.

use std::collections::HashMap;
use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::FutureExt;
use serde::Serialize;
use truflux::protocol::BoxFuture;
use truflux::{Code, Dispatch, Error, Message, Peer, Protocol, ProtocolError, Responder};

use crate::codec::{Codec, CodecKind};
use crate::msg::Msg;

/// What a handler may return: `()` or a `Result` whose error is reported locally.
pub trait HandlerOutput: Send {
    /// The error text, if the handler failed.
    fn into_result(self) -> Result<(), String>;
}

impl HandlerOutput for () {
    fn into_result(self) -> Result<(), String> {
        Ok(())
    }
}

impl<E: Display + Send> HandlerOutput for Result<(), E> {
    fn into_result(self) -> Result<(), String> {
        self.map_err(|error| error.to_string())
    }
}

type Handler =
    Arc<dyn Fn(Peer, Bytes) -> Result<BoxFuture<'static, Result<(), String>>, ProtocolError> + Send + Sync>;

type RequestHandler = Arc<
    dyn Fn(Peer, Bytes) -> Result<BoxFuture<'static, Result<Bytes, ProtocolError>>, ProtocolError>
        + Send
        + Sync,
>;

struct Entry {
    name: &'static str,
    kind: CodecKind,
    /// Decodes a payload as the registered type and drops it: the structure check.
    check: fn(Bytes) -> Result<(), String>,
    handler: Option<Handler>,
    /// Answers this message when it arrives as a request.
    request: Option<RequestHandler>,
}

fn check_as<T, C: Codec<T>>(payload: Bytes) -> Result<(), String> {
    C::decode(payload).map(drop)
}

/// Why a registry could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// Two registrations use one name with different ids or codecs.
    #[error("message {0:?} is registered twice, differently")]
    DuplicateName(&'static str),
    /// Two names map to one id; give one of them an explicit id.
    #[error("messages {first:?} and {second:?} share id {id}; give one an explicit id")]
    IdCollision {
        /// The first name.
        first: &'static str,
        /// The second name.
        second: &'static str,
        /// The shared id.
        id: u32,
    },
    /// A message got a second handler.
    #[error("message {0:?} has two handlers")]
    DuplicateHandler(&'static str),
    /// A name used in a rule is not registered.
    #[error("message {0:?} is not registered")]
    UnknownName(String),
    /// Dependencies that can never be met (a message depends on itself, directly or not).
    #[error("dependency cycle through message {0:?}")]
    DependencyCycle(&'static str),
}

/// Collects registrations; [`RegistryBuilder::build`] checks them.
#[must_use]
#[derive(Default)]
pub struct RegistryBuilder {
    entries: Vec<(u32, Entry)>,
}

impl RegistryBuilder {
    /// Registers a message without a handler: one this side only sends, or accepts without
    /// acting (a message received with no handler is answered with `UNIMPLEMENTED`).
    pub fn message<T, C: Codec<T>>(mut self, msg: Msg<T, C>) -> Self {
        self.entries.push((
            msg.id(),
            Entry {
                name: msg.name(),
                kind: C::KIND,
                check: check_as::<T, C>,
                handler: None,
                request: None,
            },
        ));
        self
    }

    /// Registers a message that is answered when it comes as a request
    /// ([`Msg::request`]): the handler gets the peer and the decoded value and returns the
    /// reply's value, encoded as `reply`, or an error the requester receives with its code.
    pub fn on_request<T, C, R, D, F, Fut>(mut self, msg: Msg<T, C>, reply: Msg<R, D>, handler: F) -> Self
    where
        T: Send + 'static,
        C: Codec<T>,
        R: Send + 'static,
        D: Codec<R>,
        F: Fn(Peer, T) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, ProtocolError>> + Send + 'static,
    {
        let request: RequestHandler = Arc::new(move |peer, payload| {
            let value = msg.decode(payload)?;
            let fut = handler(peer, value);
            Ok(Box::pin(async move { Ok(reply.encode(&fut.await?)?.payload) }) as BoxFuture<'static, _>)
        });
        let entry = Entry {
            name: msg.name(),
            kind: C::KIND,
            check: check_as::<T, C>,
            handler: None,
            request: Some(request),
        };
        self.entries.push((msg.id(), entry));
        self
    }

    /// Registers a message with its handler. The handler gets the sending peer and the decoded
    /// value; it returns `()` or a `Result` (an error is reported locally, the peer is not told).
    pub fn on<T, C, F, Fut>(mut self, msg: Msg<T, C>, handler: F) -> Self
    where
        T: Send + 'static,
        C: Codec<T>,
        F: Fn(Peer, T) -> Fut + Send + Sync + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: HandlerOutput,
    {
        let handler: Handler = Arc::new(move |peer, payload| {
            let value = msg.decode(payload)?;
            // `map`: an `async` block would hold the handler's future twice (see `FnProtocol`).
            let fut = handler(peer, value).map(HandlerOutput::into_result);
            Ok(Box::pin(fut) as BoxFuture<'static, _>)
        });
        let entry = Entry {
            name: msg.name(),
            kind: C::KIND,
            check: check_as::<T, C>,
            handler: Some(handler),
            request: None,
        };
        self.entries.push((msg.id(), entry));
        self
    }

    /// Checks the registrations: no name twice with different ids or codecs, no id for two
    /// names, no message with two handlers.
    pub fn build(self) -> Result<Registry, RegistryError> {
        let mut by_id: HashMap<u32, Entry> = HashMap::new();
        let mut by_name: HashMap<&'static str, u32> = HashMap::new();
        for (id, entry) in self.entries {
            if let Some(&known) = by_name.get(entry.name) {
                if known != id || by_id[&known].kind != entry.kind {
                    return Err(RegistryError::DuplicateName(entry.name));
                }
            }
            match by_id.get_mut(&id) {
                Some(existing) if existing.name != entry.name => {
                    return Err(RegistryError::IdCollision {
                        first: existing.name,
                        second: entry.name,
                        id,
                    });
                }
                Some(existing) => {
                    match (&existing.handler, entry.handler) {
                        (Some(_), Some(_)) => return Err(RegistryError::DuplicateHandler(entry.name)),
                        (None, Some(handler)) => existing.handler = Some(handler),
                        (_, None) => {}
                    }
                    match (&existing.request, entry.request) {
                        (Some(_), Some(_)) => return Err(RegistryError::DuplicateHandler(entry.name)),
                        (None, Some(request)) => existing.request = Some(request),
                        (_, None) => {}
                    }
                }
                None => {
                    by_name.insert(entry.name, id);
                    by_id.insert(id, entry);
                }
            }
        }
        Ok(Registry {
            inner: Arc::new(Inner { by_id, by_name }),
        })
    }
}

struct Inner {
    by_id: HashMap<u32, Entry>,
    by_name: HashMap<&'static str, u32>,
}

/// A stateless message registry: every registered message is valid at any time.
///
/// Cheap to clone. Use it as the [`Protocol`] of a server or client.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.inner.by_name.iter()).finish()
    }
}

impl Registry {
    /// An empty builder.
    pub fn builder() -> RegistryBuilder {
        RegistryBuilder::default()
    }

    /// The name registered for `id`.
    pub fn name_of(&self, id: u32) -> Option<&'static str> {
        self.inner.by_id.get(&id).map(|entry| entry.name)
    }

    /// The id registered for `name`.
    pub fn id_of(&self, name: &str) -> Option<u32> {
        self.inner.by_name.get(name).copied()
    }

    /// Whether `id` is registered.
    pub fn contains(&self, id: u32) -> bool {
        self.inner.by_id.contains_key(&id)
    }

    /// Encodes `value` as the MessagePack message registered as `name`, after checking that the
    /// encoding decodes as that message's type (the structure check).
    ///
    /// Fails at the sender with `UNKNOWN_MESSAGE` for an unregistered name and with
    /// `INVALID_PAYLOAD` for a value of the wrong structure; nothing is sent then.
    pub fn encode_named(&self, name: &str, value: &impl Serialize) -> Result<Message, ProtocolError> {
        let id = self.id_of(name).ok_or_else(|| {
            ProtocolError::local(Code::UNKNOWN_MESSAGE, None, format!("no message named {name:?}"))
        })?;
        let entry = &self.inner.by_id[&id];
        if entry.kind != CodecKind::MsgPack {
            let text = format!(
                "message {name:?} is {:?}, not MessagePack: send it through its Msg handle",
                entry.kind
            );
            return Err(ProtocolError::local(Code::INVALID_PAYLOAD, Some(id), text));
        }
        let payload = rmp_serde::to_vec_named(value)
            .map(Bytes::from)
            .map_err(|error| ProtocolError::local(Code::INVALID_PAYLOAD, Some(id), error.to_string()))?;
        (entry.check)(payload.clone()).map_err(|error| {
            ProtocolError::local(
                Code::INVALID_PAYLOAD,
                Some(id),
                format!("value does not fit message {name:?}: {error}"),
            )
        })?;
        Ok(Message { id, payload })
    }

    /// [`Registry::encode_named`], then queues the message for `peer`.
    pub async fn send_named(
        &self,
        peer: &impl AsRef<Peer>,
        name: &str,
        value: &impl Serialize,
    ) -> Result<(), Error> {
        peer.as_ref().send(self.encode_named(name, value)?).await
    }

    /// Checks and handles one incoming message: `UNKNOWN_MESSAGE` for an unregistered id,
    /// `INVALID_PAYLOAD` if it does not decode, `UNIMPLEMENTED` if it has no handler.
    pub fn handle(&self, peer: &Peer, message: Message) -> BoxFuture<'static, Result<(), ProtocolError>> {
        let id = message.id;
        let ready = |result| Box::pin(std::future::ready(result)) as BoxFuture<'static, _>;
        let Some(entry) = self.inner.by_id.get(&id) else {
            return ready(Err(ProtocolError::peer(
                Code::UNKNOWN_MESSAGE,
                id,
                format!("no message has id {id}"),
            )));
        };
        let Some(handler) = &entry.handler else {
            if let Err(error) = (entry.check)(message.payload) {
                let text = format!("payload of {} does not decode: {error}", entry.name);
                return ready(Err(ProtocolError::peer(Code::INVALID_PAYLOAD, id, text)));
            }
            let text = format!("message {} has no handler here", entry.name);
            return ready(Err(ProtocolError::peer(Code::UNIMPLEMENTED, id, text)));
        };
        match handler(peer.clone(), message.payload) {
            Err(error) => ready(Err(error)),
            Ok(fut) => {
                let name = entry.name;
                Box::pin(async move {
                    fut.await.map_err(|error| {
                        ProtocolError::local(
                            Code::INTERNAL_ERROR,
                            Some(id),
                            format!("handler of {name} failed: {error}"),
                        )
                    })
                })
            }
        }
    }
}

impl Registry {
    /// Checks and answers one incoming request through `responder`: `UNKNOWN_MESSAGE` for an
    /// unregistered id, `INVALID_PAYLOAD` if it does not decode, `NO_REPLY` if it has no request
    /// handler, the handler's own error code if it fails. Every refusal also comes back as the
    /// error, so the connection reports it like a refused message.
    pub fn handle_request(
        &self,
        peer: &Peer,
        message: Message,
        responder: Responder,
    ) -> BoxFuture<'static, Result<(), ProtocolError>> {
        let id = message.id;
        let refuse = |error: ProtocolError, responder: Responder| {
            Box::pin(responder.refuse(error)) as BoxFuture<'static, _>
        };
        let Some(entry) = self.inner.by_id.get(&id) else {
            let error = ProtocolError::peer(Code::UNKNOWN_MESSAGE, id, format!("no message has id {id}"));
            return refuse(error, responder);
        };
        let Some(request) = &entry.request else {
            let text = format!("message {} takes no requests here", entry.name);
            return refuse(ProtocolError::peer(Code::NO_REPLY, id, text), responder);
        };
        match request(peer.clone(), message.payload) {
            Err(error) => refuse(error, responder),
            Ok(fut) => Box::pin(async move {
                match fut.await {
                    Ok(reply) => {
                        let _ = responder.reply(reply).await;
                        Ok(())
                    }
                    Err(error) => {
                        let _ = responder.error(error.code, &error.message).await;
                        Err(ProtocolError::local(error.code, error.id, error.message))
                    }
                }
            }),
        }
    }
}

impl Protocol for Registry {
    fn open(&self, _peer: &Peer) -> Box<dyn Dispatch> {
        Box::new(self.clone())
    }
}

impl Dispatch for Registry {
    fn dispatch<'a>(
        &'a mut self,
        peer: &'a Peer,
        message: Message,
    ) -> BoxFuture<'a, Result<(), ProtocolError>> {
        self.handle(peer, message)
    }

    fn request<'a>(
        &'a mut self,
        peer: &'a Peer,
        message: Message,
        responder: Responder,
    ) -> BoxFuture<'a, Result<(), ProtocolError>> {
        self.handle_request(peer, message, responder)
    }
}
