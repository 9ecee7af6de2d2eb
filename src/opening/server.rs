//! The server's side of the opening: read the client's hello, run the key exchange of a keyed
//! opening on the pool, read the credentials; later, once the server has decided, send the
//! answer (protected in a keyed opening) or a refusal.

use std::sync::Arc;
use std::time::Instant;

use super::extensions::{self, Answer, Credentials};
use super::{check_hello, expect_security, next, refuse};
use crate::connection::engine::security::{Arrival, Rx, Tx};
use crate::connection::engine::Opened;
use crate::connection::KexPool;
use crate::error::{Code, Error, HelloError};
use crate::frame::control::Hello;
use crate::frame::{Frame, Kind};
use crate::security::handshake::{Handshake, Keys, Pins, Role, FINISHED, KEX_INIT};
use crate::security::{SecurityConfig, SecurityError, SecurityEvent};
use crate::transport::{FrameRead, FrameWrite};

/// An opening read up to the credentials, waiting for the server's decision.
pub(crate) struct Accepted {
    pub(crate) credentials: Credentials,
    security: Arc<SecurityConfig>,
    state: State,
}

/// A keyed opening's state, boxed: it is large beside the plain ones.
struct Keyed {
    handshake: Handshake,
    tx: Tx,
    rx: Rx,
    keys: Keys,
}

enum State {
    /// A plain opening: the client's hello carried the credentials.
    Plain { first: Hello },
    /// A keyed opening: keys in both directions, the credentials came protected.
    Keyed(Box<Keyed>),
    /// A keyed opening without a common suite, where this server falls back to plain.
    FellBack { handshake: Handshake },
}

impl Accepted {
    /// What the key exchange of a keyed opening produced (the binder's transcript hash).
    pub(crate) fn keys(&self) -> Option<&Keys> {
        match &self.state {
            State::Keyed(keyed) => Some(&keyed.keys),
            _ => None,
        }
    }

    /// The security event a fallback produced, to report once the peer exists.
    pub(crate) fn fell_back(&self) -> Option<SecurityEvent> {
        matches!(self.state, State::FellBack { .. }).then(|| SecurityEvent::FailSecure {
            code: Code::NO_COMMON_SUITE,
            reason: "no common security suite".into(),
        })
    }
}

/// Reads the opening up to the credentials. Errors carry the code to refuse with.
pub(crate) async fn accept<R: FrameRead, W: FrameWrite>(
    reader: &mut R,
    writer: &mut W,
    security: &Arc<SecurityConfig>,
    pool: &KexPool,
) -> Result<Accepted, Error> {
    let first = check_hello(&next(reader).await?)?;
    if !extensions::is_keyed(&first)? {
        if security.required {
            return Err(SecurityError::Required("a plain opening to a server that requires security").into());
        }
        return Ok(Accepted {
            credentials: Credentials::parse(&first, false)?,
            security: security.clone(),
            state: State::Plain { first },
        });
    }
    let server_first = Hello::current();
    let mut handshake = Handshake::new(Role::Server, security.clone(), Pins::default());
    handshake.set_hellos(&first, &server_first);
    let init = expect_security(next(reader).await?, &[KEX_INIT], "the client's offer")?;
    let (mut handshake, step) = pool
        .run_fn(move || {
            let step = handshake.on_message(KEX_INIT, &init.payload);
            (handshake, step)
        })
        .await
        .ok_or(Error::Config(crate::error::ConfigError::KexUnavailable))?;
    let step = step?;
    let reply = step
        .send
        .ok_or(SecurityError::Handshake("the key exchange made no reply"))?;
    writer.write_batch(&[server_first.to_frame(), reply]).await?;
    let Some(sealer) = step.tx else {
        // No common suite (`KEX_FAIL` went out).
        if security.required || !security.fallback_plain {
            return Err(SecurityError::Required("no common security suite").into());
        }
        let hello = check_hello(&next(reader).await?)?;
        return Ok(Accepted {
            credentials: Credentials::parse(&hello, false)?,
            security: security.clone(),
            state: State::FellBack { handshake },
        });
    };
    let mut tx = Tx::new(security.rekey.clone());
    tx.install(sealer, Instant::now());
    let finished = expect_security(next(reader).await?, &[FINISHED], "the client's finished")?;
    let step = handshake.on_message(FINISHED, &finished.payload)?;
    let (Some(opener), Some(keys)) = (step.rx, step.keys) else {
        return Err(SecurityError::Handshake("the key exchange did not complete").into());
    };
    let mut rx = Rx::default();
    rx.install(opener);
    let credentials = protected_credentials(reader, &mut rx).await?;
    Ok(Accepted {
        credentials,
        security: security.clone(),
        state: State::Keyed(Box::new(Keyed {
            handshake,
            tx,
            rx,
            keys,
        })),
    })
}

async fn protected_credentials<R: FrameRead>(reader: &mut R, rx: &mut Rx) -> Result<Credentials, Error> {
    match rx.accept(next(reader).await?)? {
        Arrival::Frame(frame) if frame.kind == Kind::Hello => {
            Ok(Credentials::parse(&check_hello(&frame)?, true)?)
        }
        Arrival::Frame(frame) => Err(HelloError::Unexpected {
            expected: "the protected credentials",
            got: frame.kind,
        }
        .into()),
        Arrival::Lost => Err(HelloError::StreamEnded.into()),
    }
}

/// The server's answer (the frames to write) and the connection's state for the engine.
pub(crate) fn answer(accepted: Accepted, answer: Answer) -> Result<(Vec<Frame>, Opened), Error> {
    let hello = answer.to_hello();
    let rekey = accepted.security.rekey.clone();
    let plain = |handshake| Opened {
        handshake,
        tx: Tx::new(rekey.clone()),
        rx: Rx::default(),
        keys: None,
        secure: false,
    };
    match accepted.state {
        State::Plain { first } => {
            let mut handshake = Handshake::new(Role::Server, accepted.security.clone(), Pins::default());
            handshake.set_hellos(&first, &hello);
            Ok((vec![hello.to_frame()], plain(handshake)))
        }
        State::FellBack { handshake } => Ok((vec![hello.to_frame()], plain(handshake))),
        State::Keyed(keyed) => {
            let Keyed {
                handshake,
                mut tx,
                rx,
                keys,
            } = *keyed;
            let mut out = Vec::with_capacity(1);
            tx.push(hello.to_frame(), &mut out, Instant::now())?;
            let opened = Opened {
                handshake,
                tx,
                rx,
                keys: Some(keys),
                secure: answer.secure,
            };
            Ok((out, opened))
        }
    }
}

/// Refuses an opening read up to the credentials: a protected close in a keyed opening.
pub(crate) async fn refuse_accepted<W: FrameWrite>(
    writer: &mut W,
    accepted: &mut Accepted,
    code: Code,
    reason: &str,
) {
    let tx = match &mut accepted.state {
        State::Keyed(keyed) => Some(&mut keyed.tx),
        _ => None,
    };
    refuse(writer, tx, code, reason).await;
}
