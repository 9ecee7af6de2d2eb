//! Requests on the wire: the request frame, and the [`Responder`] that answers one.
//!
//! This module owns how a request and its answers are framed (PROTOCOL.md §11.4) and the
//! guarantee that every request handed to the application is answered once: a reply, an error,
//! or `NO_REPLY` when the responder is dropped. Which requests are pending and their deadlines
//! are the engine's ([`super::engine::requests`]).

use bytes::{BufMut, Bytes, BytesMut};

use super::Peer;
use crate::error::{Code, Error, ProtocolError};
use crate::frame::control::Close;
use crate::frame::{Frame, Kind};

/// A request frame: the message id in the header, the request id before the body.
pub(crate) fn frame(message_id: u32, request: u32, body: &[u8]) -> Frame {
    let mut payload = BytesMut::with_capacity(4 + body.len());
    payload.put_u32(request);
    payload.put_slice(body);
    Frame {
        kind: Kind::Request,
        id: message_id,
        tag: None,
        payload: payload.freeze(),
    }
}

fn reply_error(request: u32, code: Code, reason: &str) -> Frame {
    Close::new(code, reason).to_frame(Kind::ReplyError, request)
}

/// Removes the request from the engine when the caller stops waiting, however that happens.
pub(crate) struct Forget<'a> {
    pub(crate) peer: &'a Peer,
    pub(crate) id: u32,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.peer.forget_request(self.id);
    }
}

/// The way back to a peer that sent a request: reply once, or fail it with a code.
///
/// Dropping it unanswered sends `NO_REPLY` (4012) so the requester does not wait for its
/// timeout.
#[must_use = "an unanswered responder tells the requester NO_REPLY"]
pub struct Responder {
    peer: Option<Peer>,
    request: u32,
}

impl Responder {
    pub(crate) fn new(peer: Peer, request: u32) -> Responder {
        Responder {
            peer: Some(peer),
            request,
        }
    }

    /// The request id (unique among this peer's pending requests).
    pub fn request_id(&self) -> u32 {
        self.request
    }

    /// Queues the reply, waiting while the outbound queue is full. Fails like
    /// [`Peer::send`] (payload too large, connection closed).
    pub async fn reply(mut self, payload: impl Into<Bytes>) -> Result<(), Error> {
        let Some(peer) = self.peer.take() else {
            return Ok(());
        };
        peer.send_frame(Frame {
            kind: Kind::Reply,
            id: self.request,
            tag: None,
            payload: payload.into(),
        })
        .await
    }

    /// Fails the request with the error's code and text and hands the error back, for a
    /// dispatcher that refuses a request: `return responder.refuse(error).await`.
    pub async fn refuse(self, error: ProtocolError) -> Result<(), ProtocolError> {
        let _ = self.error(error.code, &error.message).await;
        Err(error)
    }

    /// Fails the request with `code` and `reason` (the requester gets
    /// [`Error::Remote`]).
    pub async fn error(mut self, code: Code, reason: &str) -> Result<(), Error> {
        let Some(peer) = self.peer.take() else {
            return Ok(());
        };
        peer.send_frame(reply_error(self.request, code, reason)).await
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        let Some(peer) = self.peer.take() else { return };
        let frame = reply_error(self.request, Code::NO_REPLY, "the request was not answered");
        if let Err(Error::QueueFull) = peer.try_enqueue(frame.clone()) {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    let _ = peer.enqueue(frame).await;
                });
            }
        }
    }
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responder")
            .field("request", &self.request)
            .finish()
    }
}
