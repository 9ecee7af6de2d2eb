//! The client's side of the opening: plain, or keyed (the key exchange first, then the
//! credentials in a protected hello).

use std::sync::Arc;
use std::time::Instant;

use super::extensions::{self, Answer, Credentials};
use super::{check_hello, expect_security, next, refuse};
use crate::connection::engine::security::{Arrival, Rx, Tx};
use crate::connection::engine::Opened;
use crate::connection::KexPool;
use crate::error::{CloseInfo, Code, Error, HelloError, Initiator};
use crate::frame::control::{Close, Hello};
use crate::frame::{Frame, Kind};
use crate::security::handshake::{Handshake, Pins, Role, KEX_FAIL, KEX_REPLY};
use crate::security::schedule::{binder, Secret};
use crate::security::{SecurityConfig, SecurityError, SecurityEvent};
use crate::transport::{FrameRead, FrameWrite};

/// What a client brings to an opening.
pub(crate) struct Plan {
    /// The credentials; a resume's binder is filled in here, after the key exchange.
    pub(crate) credentials: Credentials,
    /// Exchange keys first (a keyed opening).
    pub(crate) keyed: bool,
    pub(crate) security: Arc<SecurityConfig>,
    pub(crate) pins: Pins,
    /// The session's resume secret, for a resume's binder.
    pub(crate) resume_secret: Option<Secret>,
}

/// An opened connection, client side.
pub(crate) struct Connected {
    pub(crate) opened: Opened,
    pub(crate) answer: Answer,
    /// The key exchange failed for want of a common suite and the client fell back to plain.
    pub(crate) fell_back: Option<SecurityEvent>,
}

/// Runs the opening on a fresh transport. On failure the server is told why where that makes
/// sense.
pub(crate) async fn connect<R: FrameRead, W: FrameWrite>(
    reader: &mut R,
    writer: &mut W,
    plan: Plan,
    pool: &KexPool,
) -> Result<Connected, Error> {
    let result = if plan.keyed {
        keyed(reader, writer, plan, pool).await
    } else {
        plain(reader, writer, plan).await
    };
    if let Err(error) = &result {
        if matches!(error, Error::Security(_) | Error::Hello(HelloError::Malformed(_))) {
            refuse(writer, None, error.code(), &error.to_string()).await;
        }
    }
    result
}

async fn plain<R: FrameRead, W: FrameWrite>(
    reader: &mut R,
    writer: &mut W,
    plan: Plan,
) -> Result<Connected, Error> {
    let hello = plan.credentials.to_hello();
    writer.write_batch(&[hello.to_frame()]).await?;
    let server = server_hello(reader, false).await?;
    let answer = Answer::parse(&server)?;
    let mut handshake = Handshake::new(Role::Client, plan.security.clone(), plan.pins);
    handshake.set_hellos(&hello, &server);
    let opened = Opened {
        handshake,
        tx: Tx::new(plan.security.rekey.clone()),
        rx: Rx::default(),
        keys: None,
        secure: false,
    };
    Ok(Connected {
        opened,
        answer,
        fell_back: None,
    })
}

async fn keyed<R: FrameRead, W: FrameWrite>(
    reader: &mut R,
    writer: &mut W,
    plan: Plan,
    pool: &KexPool,
) -> Result<Connected, Error> {
    let first = extensions::keyed_first();
    let handshake = Handshake::new(Role::Client, plan.security.clone(), plan.pins.clone());
    let (mut handshake, offer) = run(pool, handshake, |h| h.offer()).await?;
    let offer = offer?.ok_or(SecurityError::NoCommonSuite)?;
    writer.write_batch(&[first.to_frame(), offer]).await?;
    let server = server_hello(reader, true).await?;
    handshake.set_hellos(&first, &server);
    let reply = expect_security(
        next(reader).await?,
        &[KEX_REPLY, KEX_FAIL],
        "the key exchange's reply",
    )?;
    if reply.id == KEX_FAIL {
        return fall_back(reader, writer, plan, handshake, &reply.payload).await;
    }
    let (handshake, step) = run(pool, handshake, move |h| h.on_message(KEX_REPLY, &reply.payload)).await?;
    let step = step?;
    let incomplete = || Error::Security(SecurityError::Handshake("the key exchange did not complete"));
    let (Some(keys), Some(sealer), Some(opener), Some(finished)) = (step.keys, step.tx, step.rx, step.send)
    else {
        return Err(incomplete());
    };
    let now = Instant::now();
    let (mut tx, mut rx) = (Tx::new(plan.security.rekey.clone()), Rx::default());
    rx.install(opener);
    tx.install(sealer, now);
    let mut credentials = plan.credentials;
    if let Some(claim) = credentials.resume.as_mut() {
        claim.binder = plan
            .resume_secret
            .as_ref()
            .map(|secret| binder(secret, &keys.th2));
    }
    let mut out = vec![finished];
    tx.push(credentials.to_hello().to_frame(), &mut out, now)?;
    writer.write_batch(&out).await?;
    let answer = keyed_answer(reader, &mut rx).await?;
    let opened = Opened {
        handshake,
        tx,
        rx,
        keys: Some(keys),
        secure: answer.secure,
    };
    Ok(Connected {
        opened,
        answer,
        fell_back: None,
    })
}

/// Runs a key-exchange step on the pool and hands the handshake back with its result.
async fn run<T: Send + 'static>(
    pool: &KexPool,
    mut handshake: Handshake,
    step: impl FnOnce(&mut Handshake) -> T + Send + 'static,
) -> Result<(Handshake, T), Error> {
    pool.run_fn(move || {
        let result = step(&mut handshake);
        (handshake, result)
    })
    .await
    .ok_or(Error::Config(crate::error::ConfigError::KexUnavailable))
}

/// `KEX_FAIL`: close, or go on in plain where this client opted in.
async fn fall_back<R: FrameRead, W: FrameWrite>(
    reader: &mut R,
    writer: &mut W,
    plan: Plan,
    mut handshake: Handshake,
    payload: &[u8],
) -> Result<Connected, Error> {
    let step = handshake.on_message(KEX_FAIL, payload)?;
    if plan.security.required || !plan.security.fallback_plain {
        return Err(SecurityError::Required("no common security suite").into());
    }
    writer
        .write_batch(&[plan.credentials.to_hello().to_frame()])
        .await?;
    let answer = Answer::parse(&server_hello(reader, false).await?)?;
    let opened = Opened {
        handshake,
        tx: Tx::new(plan.security.rekey.clone()),
        rx: Rx::default(),
        keys: None,
        secure: false,
    };
    Ok(Connected {
        opened,
        answer,
        fell_back: step.event,
    })
}

/// The server's plain hello; its plain close is a refusal, believed only in a plain opening.
async fn server_hello<R: FrameRead>(reader: &mut R, keyed: bool) -> Result<Hello, Error> {
    let frame = next(reader).await?;
    if frame.kind == Kind::Close && frame.tag.is_none() {
        return Err(refusal(&frame, keyed));
    }
    check_hello(&frame)
}

/// The server's protected answer, or its refusal.
async fn keyed_answer<R: FrameRead>(reader: &mut R, rx: &mut Rx) -> Result<Answer, Error> {
    let frame = next(reader).await?;
    let plain = frame.clone();
    match rx.accept(frame)? {
        Arrival::Lost => Err(refusal(&plain, true)),
        Arrival::Frame(frame) if frame.kind == Kind::Close => Err(refusal(&frame, false)),
        Arrival::Frame(frame) => Ok(Answer::parse(&check_hello(&frame)?)?),
    }
}

/// A server's close during the opening. Believed (`UNAUTHORIZED`, `RESUME_FAILED`…) unless it
/// arrived unprotected where protection was due: then it is only a failed attempt.
fn refusal(frame: &Frame, unprotected_in_keyed: bool) -> Error {
    let close = Close::parse(Kind::Close, &frame.payload)
        .unwrap_or_else(|_| Close::new(Code::PROTOCOL_ERROR, "malformed close frame"));
    if unprotected_in_keyed {
        return HelloError::UnprotectedClose {
            code: close.code,
            reason: close.reason,
        }
        .into();
    }
    if close.code == Code::UNAUTHORIZED {
        return crate::error::AuthError::Rejected(close.reason).into();
    }
    Error::Closed(CloseInfo::new(close.code, close.reason, Initiator::Remote))
}
