//! The plug-in point for message registries.
//!
//! The connection hands every incoming application message to a [`Dispatch`] that the
//! [`Protocol`] opened for it. A registry (`truflux-msg`, `truflux-state-msg`, or a closure via
//! [`from_fn`]) decides what the id means, checks and decodes the payload and runs the handler.
//! This module must not know any registry's rules, nor touch frames or sockets.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::FutureExt;

pub use crate::connection::request::Responder;
use crate::connection::Peer;
use crate::error::{Code, ProtocolError};

/// A boxed, sendable future: what a [`Dispatch`] returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An application message as it travels: a 31-bit id and the encoded payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The message id.
    pub id: u32,
    /// The encoded payload, shared without copying.
    pub payload: Bytes,
}

/// A message registry: opens one [`Dispatch`] per connection.
pub trait Protocol: Send + Sync + 'static {
    /// Called once for each new connection, before any of its messages arrive. Per-connection
    /// state (which messages were seen, say) lives in the returned value.
    fn open(&self, peer: &Peer) -> Box<dyn Dispatch>;
}

/// One connection's message dispatcher.
///
/// The connection calls [`Dispatch::dispatch`] for each incoming message in arrival order and
/// awaits it before reading the next frame, so handlers see messages in order and a slow handler
/// slows only its own peer.
pub trait Dispatch: Send + 'static {
    /// Validates, decodes and handles one message.
    ///
    /// An error is reported to the local error handler; if [`ProtocolError::peer_fault`] is set
    /// the peer also receives an error frame with the code. The connection stays open either way.
    fn dispatch<'a>(
        &'a mut self,
        peer: &'a Peer,
        message: Message,
    ) -> BoxFuture<'a, Result<(), ProtocolError>>;

    /// Handles one request: answer it through `responder`, now or later from another task.
    ///
    /// Requests arrive in order with the messages and are awaited the same way. A responder
    /// dropped unanswered tells the requester `NO_REPLY` (4012). The default answers every
    /// request with `NO_REPLY`: this endpoint takes no requests.
    fn request<'a>(
        &'a mut self,
        peer: &'a Peer,
        message: Message,
        responder: Responder,
    ) -> BoxFuture<'a, Result<(), ProtocolError>> {
        let _ = (peer, message);
        drop(responder);
        Box::pin(std::future::ready(Ok(())))
    }
}

impl<P: Protocol> Protocol for Arc<P> {
    fn open(&self, peer: &Peer) -> Box<dyn Dispatch> {
        (**self).open(peer)
    }
}

/// A protocol that hands every message, undecoded, to `handler`.
///
/// ```
/// let echo = truflux::protocol::from_fn(|peer, message| async move {
///     let _ = peer.send(message).await;
/// });
/// # let _ = echo;
/// ```
pub fn from_fn<F, Fut>(handler: F) -> FnProtocol<F>
where
    F: Fn(Peer, Message) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    FnProtocol {
        handler: Arc::new(handler),
        requests: None,
    }
}

type RequestFn = Arc<dyn Fn(Peer, Message, Responder) -> BoxFuture<'static, ()> + Send + Sync>;

/// The protocol made by [`from_fn`].
pub struct FnProtocol<F> {
    handler: Arc<F>,
    requests: Option<RequestFn>,
}

impl<F> FnProtocol<F> {
    /// Also hands every request, undecoded, to `handler` with its [`Responder`].
    ///
    /// ```
    /// let protocol = truflux::protocol::from_fn(|_peer, _message| async {})
    ///     .on_request(|_peer, message, responder| async move {
    ///         let _ = responder.reply(message.payload).await;
    ///     });
    /// # let _ = protocol;
    /// ```
    pub fn on_request<H, Fut>(mut self, handler: H) -> Self
    where
        H: Fn(Peer, Message, Responder) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.requests = Some(Arc::new(move |peer, message, responder| {
            Box::pin(handler(peer, message, responder))
        }));
        self
    }
}

impl<F, Fut> Protocol for FnProtocol<F>
where
    F: Fn(Peer, Message) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    fn open(&self, _peer: &Peer) -> Box<dyn Dispatch> {
        Box::new(FnProtocol {
            handler: self.handler.clone(),
            requests: self.requests.clone(),
        })
    }
}

impl<F, Fut> Dispatch for FnProtocol<F>
where
    F: Fn(Peer, Message) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    fn dispatch<'a>(
        &'a mut self,
        peer: &'a Peer,
        message: Message,
    ) -> BoxFuture<'a, Result<(), ProtocolError>> {
        // `map`, not an `async` block: a block would hold the handler's future twice (as its
        // capture and as what it awaits), and the box would be twice its size.
        Box::pin((self.handler)(peer.clone(), message).map(Ok))
    }

    fn request<'a>(
        &'a mut self,
        peer: &'a Peer,
        message: Message,
        responder: Responder,
    ) -> BoxFuture<'a, Result<(), ProtocolError>> {
        match &self.requests {
            Some(handler) => Box::pin(handler(peer.clone(), message, responder).map(Ok)),
            None => Box::pin(std::future::ready(Ok(()))),
        }
    }
}

/// A protocol that accepts no message: each one is answered with [`Code::UNIMPLEMENTED`].
/// The default for endpoints that only send.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoMessages;

impl Protocol for NoMessages {
    fn open(&self, _peer: &Peer) -> Box<dyn Dispatch> {
        Box::new(NoMessages)
    }
}

impl Dispatch for NoMessages {
    fn dispatch<'a>(
        &'a mut self,
        _peer: &'a Peer,
        message: Message,
    ) -> BoxFuture<'a, Result<(), ProtocolError>> {
        let error = ProtocolError::peer(
            Code::UNIMPLEMENTED,
            message.id,
            "this endpoint accepts no messages",
        );
        Box::pin(std::future::ready(Err(error)))
    }
}
