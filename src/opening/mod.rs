//! The opening exchange (PROTOCOL.md §4.1): the hellos, the key exchange of a keyed opening,
//! and the credentials.
//!
//! This module owns the order and the checks of the opening on both sides and the close frames
//! it sends when the opening fails: [`client`] runs it for a connecting client, [`server`] for
//! an accepted connection. Extensions are typed in [`extensions`]; the key exchange itself is
//! the security layer's, its expensive steps run on the key-exchange pool. What comes out is
//! the engine's [`Opened`](crate::connection::engine::Opened) (keys, and whether both
//! directions start secure) and the credentials or the answer. It must not register peers,
//! validate tokens or start connection tasks: the server and the client do that.

pub(crate) mod client;
pub(crate) mod extensions;
pub(crate) mod server;

use std::time::{Duration, Instant};

use crate::connection::engine::security::Tx;
use crate::error::{Code, Error, HelloError};
use crate::frame::control::{Close, Hello, PROTOCOL_VERSION};
use crate::frame::{Frame, Kind};
use crate::transport::{FrameRead, FrameWrite};

/// Reads the next frame of the opening; the end of the stream is an error.
async fn next<R: FrameRead>(reader: &mut R) -> Result<Frame, Error> {
    reader
        .read_frame()
        .await?
        .ok_or(Error::Hello(HelloError::StreamEnded))
}

/// A plain hello of our version; anything else is the error that names it.
fn check_hello(frame: &Frame) -> Result<Hello, Error> {
    if frame.kind != Kind::Hello || frame.tag.is_some() {
        return Err(HelloError::Unexpected {
            expected: "a hello",
            got: frame.kind,
        }
        .into());
    }
    let hello = Hello::parse(&frame.payload)?;
    if hello.version != PROTOCOL_VERSION {
        return Err(HelloError::Version {
            peer: hello.version,
            ours: PROTOCOL_VERSION,
        }
        .into());
    }
    Ok(hello)
}

/// A plain security frame of type `id`, as the opening expects next.
fn expect_security(frame: Frame, ids: &[u32], expected: &'static str) -> Result<Frame, Error> {
    if frame.kind != Kind::Security || frame.tag.is_some() || !ids.contains(&frame.id) {
        return Err(HelloError::Unexpected {
            expected,
            got: frame.kind,
        }
        .into());
    }
    Ok(frame)
}

/// Sends a close frame with `code` (sealed when `tx` is keyed) and shuts the stream; best
/// effort, bounded by one second.
pub(crate) async fn refuse<W: FrameWrite>(writer: &mut W, tx: Option<&mut Tx>, code: Code, reason: &str) {
    let frame = Close::new(code, reason).to_frame(Kind::Close, 0);
    let frame = match tx {
        Some(tx) => tx.seal_now(frame, Instant::now()).ok(),
        None => Some(frame),
    };
    let Some(frame) = frame else { return };
    let finish = async {
        writer.write_batch(std::slice::from_ref(&frame)).await?;
        writer.shutdown().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), finish).await;
}
