//! Dependencies and singletons enforced per connection, over real loopback sockets.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use truflux::{Client, Code, Error, Server};
use truflux_msg::{Msg, Registry};
use truflux_state_msg::{RegistryError, StateRegistry};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Login {
    name: String,
}
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Chat {
    text: String,
}
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Said {
    from: String,
    text: String,
}

const LOGIN: Msg<Login> = Msg::named("login");
const CHAT: Msg<Chat> = Msg::named("chat");
const SAID: Msg<Said> = Msg::named("said");
const WHOAMI: Msg<()> = Msg::named("whoami");
const YOU_ARE: Msg<String> = Msg::named("you_are");

#[derive(Clone)]
struct Name(String);

async fn server() -> Server {
    let protocol = StateRegistry::builder()
        .on(LOGIN, |peer, login: Login| async move {
            peer.session().insert(Name(login.name));
        })
        .on(CHAT, |peer, chat: Chat| async move {
            let from = peer.session().get::<Name>().map(|n| n.0).unwrap_or_default();
            SAID.send(
                &peer,
                &Said {
                    from,
                    text: chat.text,
                },
            )
            .await
        })
        .add(SAID)
        .on_request(WHOAMI, YOU_ARE, |peer, ()| async move {
            peer.session()
                .get::<Name>()
                .map(|name| name.0)
                .ok_or_else(|| truflux::ProtocolError::peer(Code::POLICY_VIOLATION, WHOAMI.id(), "nameless"))
        })
        .singleton("login")
        .depend("chat", ["login"])
        .depend("whoami", ["login"])
        .build()
        .unwrap();
    Server::builder()
        .tcp("127.0.0.1:0")
        .protocol(protocol)
        .start()
        .await
        .unwrap()
}

/// A client that reports the server's messages and error frames in one ordered channel.
async fn client(server: &Server) -> (Client, mpsc::UnboundedReceiver<Result<Said, Code>>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let errors = tx.clone();
    let registry = Registry::builder()
        .on(SAID, move |_, said: Said| {
            let _ = tx.send(Ok(said));
            std::future::ready(())
        })
        .message(LOGIN)
        .message(CHAT)
        .build()
        .unwrap();
    let client = Client::builder()
        .protocol(registry)
        .on_error(move |error| {
            if let Error::Remote(truflux::RemoteError { code, .. }) = error {
                let _ = errors.send(Err(*code));
            }
        })
        .connect(server.local_addrs()[0])
        .await
        .unwrap();
    (client, rx)
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Result<Said, Code>>) -> Result<Said, Code> {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("in time")
        .expect("open")
}

#[tokio::test]
async fn chat_before_login_is_an_unmet_dependency() {
    let server = server().await;
    let (client, mut rx) = client(&server).await;
    CHAT.send(
        &client,
        &Chat {
            text: "too early".into(),
        },
    )
    .await
    .unwrap();
    assert_eq!(next(&mut rx).await, Err(Code::UNMET_DEPENDENCY));
    LOGIN.send(&client, &Login { name: "ada".into() }).await.unwrap();
    CHAT.send(&client, &Chat { text: "hi".into() }).await.unwrap();
    assert_eq!(
        next(&mut rx).await,
        Ok(Said {
            from: "ada".into(),
            text: "hi".into()
        })
    );
}

#[tokio::test]
async fn a_second_login_is_a_repeated_singleton() {
    let server = server().await;
    let (client, mut rx) = client(&server).await;
    LOGIN.send(&client, &Login { name: "ada".into() }).await.unwrap();
    LOGIN.send(&client, &Login { name: "eve".into() }).await.unwrap();
    assert_eq!(next(&mut rx).await, Err(Code::REPEATED_SINGLETON));
    CHAT.send(
        &client,
        &Chat {
            text: "who am i".into(),
        },
    )
    .await
    .unwrap();
    assert_eq!(
        next(&mut rx).await,
        Ok(Said {
            from: "ada".into(),
            text: "who am i".into()
        }),
        "the first login stands"
    );
}

#[tokio::test]
async fn rules_are_per_connection() {
    let server = server().await;
    let (a, mut ra) = client(&server).await;
    let (b, mut rb) = client(&server).await;
    LOGIN.send(&a, &Login { name: "ada".into() }).await.unwrap();
    CHAT.send(&a, &Chat { text: "x".into() }).await.unwrap();
    assert!(next(&mut ra).await.is_ok());
    CHAT.send(&b, &Chat { text: "x".into() }).await.unwrap();
    assert_eq!(
        next(&mut rb).await,
        Err(Code::UNMET_DEPENDENCY),
        "a's login does not count for b"
    );
}

#[tokio::test]
async fn a_login_that_does_not_decode_does_not_count() {
    let server = server().await;
    let (client, mut rx) = client(&server).await;
    client.peer().send_raw(LOGIN.id(), &[0xc1u8][..]).await.unwrap();
    assert_eq!(next(&mut rx).await, Err(Code::INVALID_PAYLOAD));
    CHAT.send(&client, &Chat { text: "x".into() }).await.unwrap();
    assert_eq!(next(&mut rx).await, Err(Code::UNMET_DEPENDENCY));
    LOGIN.send(&client, &Login { name: "ada".into() }).await.unwrap();
    CHAT.send(&client, &Chat { text: "x".into() }).await.unwrap();
    assert!(
        next(&mut rx).await.is_ok(),
        "the valid login is still the first one"
    );
}

#[tokio::test]
async fn unknown_and_unimplemented_messages() {
    let server = server().await;
    let (client, mut rx) = client(&server).await;
    client.peer().send_raw(99, &b""[..]).await.unwrap();
    assert_eq!(next(&mut rx).await, Err(Code::UNKNOWN_MESSAGE));
    SAID.send(
        &client,
        &Said {
            from: "x".into(),
            text: "y".into(),
        },
    )
    .await
    .unwrap();
    assert_eq!(next(&mut rx).await, Err(Code::UNIMPLEMENTED));
}

#[test]
fn rules_must_name_registered_messages_and_have_no_cycle() {
    let unknown = StateRegistry::builder()
        .add(LOGIN)
        .depend("chat", ["login"])
        .build();
    assert!(matches!(unknown, Err(RegistryError::UnknownName(name)) if name == "chat"));
    let cycle = StateRegistry::builder()
        .add(LOGIN)
        .add(CHAT)
        .add(SAID)
        .depend("chat", ["login"])
        .depend("login", ["said"])
        .depend("said", ["chat"])
        .build();
    assert!(matches!(cycle, Err(RegistryError::DependencyCycle(_))));
    let itself = StateRegistry::builder()
        .add(LOGIN)
        .depend("login", ["login"])
        .build();
    assert!(matches!(itself, Err(RegistryError::DependencyCycle("login"))));
    let fine = StateRegistry::builder()
        .add(LOGIN)
        .add(CHAT)
        .add(SAID)
        .depend("chat", ["login"])
        .depend("said", ["chat", "login"])
        .build()
        .unwrap();
    assert_eq!(fine.name_of(CHAT.id()), Some("chat"));
    assert_eq!(fine.id_of("said"), Some(SAID.id()));
}

#[tokio::test]
async fn typed_requests_follow_the_rules_and_get_typed_replies() {
    let server = server().await;
    let (client, _rx) = client(&server).await;
    match WHOAMI.request(&client, &(), YOU_ARE).await {
        Err(Error::Remote(truflux::RemoteError { code, .. })) => assert_eq!(code, Code::UNMET_DEPENDENCY),
        other => panic!("expected UNMET_DEPENDENCY, got {other:?}"),
    }
    LOGIN.send(&client, &Login { name: "ada".into() }).await.unwrap();
    assert_eq!(WHOAMI.request(&client, &(), YOU_ARE).await.unwrap(), "ada");
    // A message that takes no requests, and a reply of the wrong type.
    match CHAT.request(&client, &Chat { text: "hi".into() }, YOU_ARE).await {
        Err(Error::Remote(truflux::RemoteError { code, .. })) => assert_eq!(code, Code::NO_REPLY),
        other => panic!("expected NO_REPLY, got {other:?}"),
    }
    match WHOAMI.request(&client, &(), Msg::<u64>::named("number")).await {
        Err(Error::Protocol(error)) => assert_eq!(error.code, Code::INVALID_PAYLOAD),
        other => panic!("expected INVALID_PAYLOAD, got {other:?}"),
    }
}
