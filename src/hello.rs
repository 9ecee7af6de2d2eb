//! The opening exchange: each side's first frame is a hello; the server answers the client's.
//!
//! This module owns the order and the checks of the exchange and the close frames it sends when
//! the exchange fails. It must not register peers or start connection tasks.

use std::time::Duration;

use crate::frame::control::{Close, Hello, PROTOCOL_VERSION};
use crate::frame::{Frame, Kind};
use crate::transport::{FrameRead, FrameWrite};
use crate::{CloseInfo, Code, Error, Initiator};

/// Hello extension: the client's bearer token (UTF-8).
pub(crate) const EXT_AUTH: u16 = 1;
/// Hello extension: the client asks for a resumable session (empty); the server answers with
/// the session's resume token.
pub(crate) const EXT_SESSION: u16 = 2;
/// Hello extension: the client resumes a session (token, then its received count as a u64);
/// the server answers with its own received count.
pub(crate) const EXT_RESUME: u16 = 3;

/// The value of extension `ty`, if the hello carries it.
pub(crate) fn extension(hello: &Hello, ty: u16) -> Option<&bytes::Bytes> {
    hello.extensions.iter().find(|(t, _)| *t == ty).map(|(_, v)| v)
}

/// Server side: reads the client's hello within `timeout`. On failure the client is sent a close
/// frame with the matching code before the error is returned.
pub(crate) async fn accept<R: FrameRead, W: FrameWrite>(
    reader: &mut R,
    writer: &mut W,
    timeout: Duration,
) -> Result<Hello, Error> {
    let result = match tokio::time::timeout(timeout, reader.read_frame()).await {
        Err(_) => Err(Error::Timeout("waiting for the client's hello")),
        Ok(Err(error)) => Err(Error::Frame(error)),
        Ok(Ok(None)) => Err(Error::Handshake("stream ended before the hello".into())),
        Ok(Ok(Some(frame))) => check_hello(&frame),
    };
    if let Err(error) = &result {
        refuse(writer, error.code(), &error.to_string()).await;
    }
    result
}

/// Client side: sends our hello and reads the server's.
pub(crate) async fn connect<R: FrameRead, W: FrameWrite>(
    reader: &mut R,
    writer: &mut W,
    hello: &Hello,
) -> Result<Hello, Error> {
    writer.write_batch(&[hello.to_frame()]).await?;
    match reader.read_frame().await? {
        None => Err(Error::Handshake(
            "server closed the stream before its hello".into(),
        )),
        Some(frame) if frame.kind == Kind::Close && frame.tag.is_none() => {
            let close = Close::parse(Kind::Close, &frame.payload)?;
            if close.code == Code::UNAUTHORIZED {
                return Err(Error::Unauthorized(close.reason));
            }
            Err(Error::Closed(CloseInfo {
                code: close.code,
                reason: close.reason,
                initiator: Initiator::Remote,
            }))
        }
        Some(frame) => check_hello(&frame),
    }
}

/// Sends a close frame with `code` and shuts the stream; best effort, bounded.
pub(crate) async fn refuse<W: FrameWrite>(writer: &mut W, code: Code, reason: &str) {
    let frame = Close::new(code, reason).to_frame(Kind::Close, 0);
    let finish = async {
        writer.write_batch(std::slice::from_ref(&frame)).await?;
        writer.shutdown().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), finish).await;
}

fn check_hello(frame: &Frame) -> Result<Hello, Error> {
    if frame.kind != Kind::Hello || frame.tag.is_some() {
        return Err(Error::Handshake(format!(
            "expected a hello, got a {:?} frame",
            frame.kind
        )));
    }
    let hello = Hello::parse(&frame.payload)?;
    if hello.version != PROTOCOL_VERSION {
        let reason = format!(
            "peer speaks version {}, this endpoint {}",
            hello.version, PROTOCOL_VERSION
        );
        return Err(Error::Protocol(crate::ProtocolError::local(
            Code::VERSION_MISMATCH,
            None,
            reason,
        )));
    }
    Ok(hello)
}
