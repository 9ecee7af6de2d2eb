//! The hello extensions (PROTOCOL.md §4.1), typed: one encoder and one parser for each.
//!
//! Pure: hellos in, typed credentials and answers out, or a [`HelloError`]. Each type appears
//! at most once and has the length its type fixes; unknown types are ignored.

use bytes::{BufMut, Bytes, BytesMut};

use crate::auth::Token;
use crate::error::HelloError;
use crate::frame::control::Hello;

/// The client's bearer token.
pub(crate) const AUTH: u16 = 1;
/// Client: "I want a resumable session" (empty). Server: the resume token.
pub(crate) const SESSION: u16 = 2;
/// Client: resume token, received count, binder (keyed openings). Server: its count.
pub(crate) const RESUME: u16 = 3;
/// Client's first hello: a key exchange follows, credentials come protected after it.
pub(crate) const KEX: u16 = 4;
/// Both directions secure from the opening on.
pub(crate) const SECURE: u16 = 5;

/// Octets of a resume token.
pub(crate) const TOKEN_LEN: usize = 32;

/// A resume request: which session, what the client received, and (in a keyed opening) the
/// proof that it holds the session's resume secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Claim {
    pub(crate) token: [u8; TOKEN_LEN],
    pub(crate) count: u64,
    pub(crate) binder: Option<[u8; 32]>,
}

/// What a client presents.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Credentials {
    /// The bearer token; `Some("")` is never sent. A token that is not UTF-8 reads as none.
    pub(crate) token: Option<Token>,
    /// Asks for a resumable session.
    pub(crate) session: bool,
    pub(crate) resume: Option<Claim>,
    /// Requires both directions secure.
    pub(crate) secure: bool,
}

/// What a server answers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Answer {
    /// The resume token of a new resumable session.
    pub(crate) session: Option<[u8; TOKEN_LEN]>,
    /// The server's received count, answering a resume.
    pub(crate) resume: Option<u64>,
    /// Both directions secure from now on.
    pub(crate) secure: bool,
}

/// The client's first hello of a keyed opening: `KEX` and nothing else.
pub(crate) fn keyed_first() -> Hello {
    let mut hello = Hello::current();
    hello.extensions.push((KEX, Bytes::new()));
    hello
}

/// Whether a client's first hello asks for a keyed opening (then it carries nothing else).
pub(crate) fn is_keyed(hello: &Hello) -> Result<bool, HelloError> {
    check_unique(hello)?;
    let Some(kex) = find(hello, KEX) else {
        return Ok(false);
    };
    if !kex.is_empty() {
        return Err(HelloError::Malformed("KEX carries no value"));
    }
    let credentials = [AUTH, SESSION, RESUME, SECURE];
    if hello.extensions.iter().any(|(ty, _)| credentials.contains(ty)) {
        return Err(HelloError::Malformed("credentials before the key exchange"));
    }
    Ok(true)
}

fn find(hello: &Hello, ty: u16) -> Option<&Bytes> {
    hello.extensions.iter().find(|(t, _)| *t == ty).map(|(_, v)| v)
}

fn check_unique(hello: &Hello) -> Result<(), HelloError> {
    for (i, (ty, _)) in hello.extensions.iter().enumerate() {
        if hello.extensions[..i].iter().any(|(t, _)| t == ty) {
            return Err(HelloError::Malformed("an extension type repeats"));
        }
    }
    Ok(())
}

fn flag(hello: &Hello, ty: u16, what: &'static str) -> Result<bool, HelloError> {
    match find(hello, ty) {
        None => Ok(false),
        Some(value) if value.is_empty() => Ok(true),
        Some(_) => Err(HelloError::Malformed(what)),
    }
}

impl Credentials {
    /// The extensions that carry these credentials, in a hello.
    pub(crate) fn to_hello(&self) -> Hello {
        let mut hello = Hello::current();
        if let Some(token) = &self.token {
            hello
                .extensions
                .push((AUTH, Bytes::copy_from_slice(token.as_str().as_bytes())));
        }
        if self.session {
            hello.extensions.push((SESSION, Bytes::new()));
        }
        if let Some(claim) = &self.resume {
            let mut value = BytesMut::with_capacity(TOKEN_LEN + 8 + 32);
            value.put_slice(&claim.token);
            value.put_u64(claim.count);
            if let Some(binder) = &claim.binder {
                value.put_slice(binder);
            }
            hello.extensions.push((RESUME, value.freeze()));
        }
        if self.secure {
            hello.extensions.push((SECURE, Bytes::new()));
        }
        hello
    }

    /// Reads the credentials of a hello; `keyed`: it came protected after a key exchange (a
    /// resume then carries a binder, and only then).
    pub(crate) fn parse(hello: &Hello, keyed: bool) -> Result<Credentials, HelloError> {
        check_unique(hello)?;
        if find(hello, KEX).is_some() && keyed {
            return Err(HelloError::Malformed("KEX in the credentials"));
        }
        let token = find(hello, AUTH)
            .and_then(|value| std::str::from_utf8(value).ok())
            .map(Token::new);
        let resume = match find(hello, RESUME) {
            None => None,
            Some(value) => Some(parse_claim(value, keyed)?),
        };
        Ok(Credentials {
            token,
            session: flag(hello, SESSION, "a client's SESSION carries no value")?,
            resume,
            secure: flag(hello, SECURE, "SECURE carries no value")?,
        })
    }
}

fn parse_claim(value: &[u8], keyed: bool) -> Result<Claim, HelloError> {
    let expected = if keyed { TOKEN_LEN + 8 + 32 } else { TOKEN_LEN + 8 };
    if value.len() != expected {
        return Err(HelloError::Malformed(
            "RESUME has the wrong length for this opening",
        ));
    }
    let mut token = [0u8; TOKEN_LEN];
    token.copy_from_slice(&value[..TOKEN_LEN]);
    let mut count = [0u8; 8];
    count.copy_from_slice(&value[TOKEN_LEN..TOKEN_LEN + 8]);
    let binder = keyed.then(|| {
        let mut binder = [0u8; 32];
        binder.copy_from_slice(&value[TOKEN_LEN + 8..]);
        binder
    });
    Ok(Claim {
        token,
        count: u64::from_be_bytes(count),
        binder,
    })
}

impl Answer {
    /// The server's answer as a hello.
    pub(crate) fn to_hello(&self) -> Hello {
        let mut hello = Hello::current();
        if let Some(token) = &self.session {
            hello.extensions.push((SESSION, Bytes::copy_from_slice(token)));
        }
        if let Some(count) = self.resume {
            hello
                .extensions
                .push((RESUME, Bytes::copy_from_slice(&count.to_be_bytes())));
        }
        if self.secure {
            hello.extensions.push((SECURE, Bytes::new()));
        }
        hello
    }

    /// Reads a server's answer.
    pub(crate) fn parse(hello: &Hello) -> Result<Answer, HelloError> {
        check_unique(hello)?;
        let session = match find(hello, SESSION) {
            None => None,
            Some(value) => Some(
                <[u8; TOKEN_LEN]>::try_from(value.as_ref())
                    .map_err(|_| HelloError::Malformed("a server's SESSION is 32 octets"))?,
            ),
        };
        let resume = match find(hello, RESUME) {
            None => None,
            Some(value) => Some(u64::from_be_bytes(
                <[u8; 8]>::try_from(value.as_ref())
                    .map_err(|_| HelloError::Malformed("a server's RESUME is 8 octets"))?,
            )),
        };
        Ok(Answer {
            session,
            resume,
            secure: flag(hello, SECURE, "SECURE carries no value")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(credentials: &Credentials, keyed: bool) -> Credentials {
        let frame = credentials.to_hello().to_frame();
        Credentials::parse(&Hello::parse(&frame.payload).unwrap(), keyed).unwrap()
    }

    #[test]
    fn credentials_and_answers_survive_encoding() {
        let claim = Claim {
            token: [7; 32],
            count: 41,
            binder: Some([9; 32]),
        };
        let credentials = Credentials {
            token: Some(Token::new("secret")),
            session: true,
            resume: Some(claim.clone()),
            secure: true,
        };
        assert_eq!(roundtrip(&credentials, true), credentials);
        let plain = Credentials {
            resume: Some(Claim {
                binder: None,
                ..claim
            }),
            ..Credentials::default()
        };
        assert_eq!(roundtrip(&plain, false), plain);
        let answer = Answer {
            session: Some([3; 32]),
            resume: Some(5),
            secure: true,
        };
        let frame = answer.to_hello().to_frame();
        assert_eq!(
            Answer::parse(&Hello::parse(&frame.payload).unwrap()).unwrap(),
            answer
        );
    }

    #[test]
    fn a_binder_only_travels_in_a_keyed_opening() {
        let keyed = Credentials {
            resume: Some(Claim {
                token: [1; 32],
                count: 0,
                binder: Some([2; 32]),
            }),
            ..Credentials::default()
        };
        let hello = keyed.to_hello();
        assert!(
            Credentials::parse(&hello, false).is_err(),
            "72 octets in a plain opening"
        );
        assert!(Credentials::parse(&hello, true).is_ok());
    }

    #[test]
    fn repeated_or_misplaced_extensions_are_malformed() {
        let mut hello = keyed_first();
        assert!(is_keyed(&hello).unwrap());
        hello.extensions.push((AUTH, Bytes::from_static(b"t")));
        assert!(is_keyed(&hello).is_err(), "credentials beside KEX");
        let mut twice = Hello::current();
        twice.extensions.push((SESSION, Bytes::new()));
        twice.extensions.push((SESSION, Bytes::new()));
        assert!(Credentials::parse(&twice, false).is_err());
        let mut long = Hello::current();
        long.extensions.push((SECURE, Bytes::from_static(b"x")));
        assert!(Credentials::parse(&long, false).is_err());
        let mut unknown = Hello::current();
        unknown.extensions.push((999, Bytes::from_static(b"ignored")));
        assert_eq!(
            Credentials::parse(&unknown, false).unwrap(),
            Credentials::default()
        );
    }
}
