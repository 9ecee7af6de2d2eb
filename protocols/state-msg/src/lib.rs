//! truflux-state-msg: a stateful message registry for truflux.
//!
//! On top of a [`truflux_msg::Registry`] it enforces, per connection:
//!
//! * **dependencies**: [`StateRegistryBuilder::depend`]`("chat", ["login"])`: a `chat` is valid
//!   only after a `login` was received on the same connection; otherwise `UNMET_DEPENDENCY`
//!   (4002);
//! * **singletons**: [`StateRegistryBuilder::singleton`]`("login")`: at most one `login` per
//!   connection; a second one gets `REPEATED_SINGLETON` (4003);
//!
//! plus the stateless checks of the inner registry: an unknown id is `UNKNOWN_MESSAGE` (4000), a
//! payload that does not decode `INVALID_PAYLOAD` (4001), a message without handler
//! `UNIMPLEMENTED` (4004). Each refusal is an error frame to the sender and an error event on the
//! receiver; the handler does not run and the connection goes on. A refused message does not
//! count as received: it satisfies no dependency and uses up no singleton.
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use truflux_msg::Msg;
//! use truflux_state_msg::StateRegistry;
//!
//! #[derive(Serialize, Deserialize)] struct Login { name: String }
//! #[derive(Serialize, Deserialize)] struct Chat { text: String }
//! const LOGIN: Msg<Login> = Msg::named("login");
//! const CHAT: Msg<Chat> = Msg::named("chat");
//!
//! let protocol = StateRegistry::builder()
//!     .on(LOGIN, |peer, login: Login| async move { peer.session().insert(login.name); })
//!     .on(CHAT, |_peer, _chat: Chat| async move {})
//!     .singleton("login")
//!     .depend("chat", ["login"])
//!     .build()
//!     .expect("rules name registered messages and have no cycle");
//! assert_eq!(protocol.name_of(CHAT.id()), Some("chat"));
//! ```

#![warn(missing_docs)]
#![forbid(unsafe_code)]

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::Arc;

use truflux::protocol::BoxFuture;
use truflux::{Code, Dispatch, Message, Peer, Protocol, ProtocolError, Responder};
use truflux_msg::{Codec, HandlerOutput, Msg, Registry, RegistryBuilder};

pub use truflux_msg::RegistryError;

/// Collects messages, handlers and rules.
#[must_use]
#[derive(Default)]
pub struct StateRegistryBuilder {
    registry: RegistryBuilder,
    depends: Vec<(String, Vec<String>)>,
    singletons: Vec<String>,
}

impl StateRegistryBuilder {
    /// Adds a message without a handler (see [`RegistryBuilder::message`]).
    #[allow(clippy::should_implement_trait)] // A builder verb, not arithmetic.
    pub fn add<T, C: Codec<T>>(mut self, msg: Msg<T, C>) -> Self {
        self.registry = self.registry.message(msg);
        self
    }

    /// Adds a message with its handler (see [`RegistryBuilder::on`]).
    pub fn on<T, C, F, Fut>(mut self, msg: Msg<T, C>, handler: F) -> Self
    where
        T: Send + 'static,
        C: Codec<T>,
        F: Fn(Peer, T) -> Fut + Send + Sync + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: HandlerOutput,
    {
        self.registry = self.registry.on(msg, handler);
        self
    }

    /// Adds a message answered as a request (see [`RegistryBuilder::on_request`]); the rules
    /// apply to it as to any message.
    pub fn on_request<T, C, R, D, F, Fut>(mut self, msg: Msg<T, C>, reply: Msg<R, D>, handler: F) -> Self
    where
        T: Send + 'static,
        C: Codec<T>,
        R: Send + 'static,
        D: Codec<R>,
        F: Fn(Peer, T) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, ProtocolError>> + Send + 'static,
    {
        self.registry = self.registry.on_request(msg, reply, handler);
        self
    }

    /// `name` is valid only after every message in `deps` was received on the connection.
    /// Several calls for one name add up.
    pub fn depend<I, S>(mut self, name: &str, deps: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.depends
            .push((name.to_owned(), deps.into_iter().map(Into::into).collect()));
        self
    }

    /// `name` may be received at most once per connection.
    pub fn singleton(mut self, name: &str) -> Self {
        self.singletons.push(name.to_owned());
        self
    }

    /// Checks the registry (see [`RegistryBuilder::build`]) and the rules: every name they use is
    /// registered, and no dependency cycle makes a message impossible.
    pub fn build(self) -> Result<StateRegistry, RegistryError> {
        let registry = self.registry.build()?;
        let id_of = |name: &str| {
            registry
                .id_of(name)
                .ok_or_else(|| RegistryError::UnknownName(name.to_owned()))
        };
        let mut depends: HashMap<u32, Vec<u32>> = HashMap::new();
        for (name, deps) in &self.depends {
            let id = id_of(name)?;
            for dep in deps {
                let dep = id_of(dep)?;
                let list = depends.entry(id).or_default();
                if !list.contains(&dep) {
                    list.push(dep);
                }
            }
        }
        let singletons = self
            .singletons
            .iter()
            .map(|name| id_of(name))
            .collect::<Result<HashSet<u32>, _>>()?;
        if let Some(id) = find_cycle(&depends) {
            return Err(RegistryError::DependencyCycle(
                registry.name_of(id).unwrap_or("?"),
            ));
        }
        Ok(StateRegistry {
            registry,
            rules: Arc::new(Rules { depends, singletons }),
        })
    }
}

/// A message on a dependency cycle, if there is one (Kahn's algorithm: iterative).
fn find_cycle(depends: &HashMap<u32, Vec<u32>>) -> Option<u32> {
    let mut pending: HashMap<u32, usize> = HashMap::new();
    let mut dependents: HashMap<u32, Vec<u32>> = HashMap::new();
    for (&id, deps) in depends {
        pending.insert(id, deps.len());
        for &dep in deps {
            pending.entry(dep).or_insert(0);
            dependents.entry(dep).or_default().push(id);
        }
    }
    let mut ready: VecDeque<u32> = pending
        .iter()
        .filter(|(_, &n)| n == 0)
        .map(|(&id, _)| id)
        .collect();
    while let Some(id) = ready.pop_front() {
        for &dependent in dependents.get(&id).into_iter().flatten() {
            if let Some(count) = pending.get_mut(&dependent) {
                *count -= 1;
                if *count == 0 {
                    ready.push_back(dependent);
                }
            }
        }
        pending.remove(&id);
    }
    pending.keys().min().copied()
}

struct Rules {
    depends: HashMap<u32, Vec<u32>>,
    singletons: HashSet<u32>,
}

/// A registry whose messages have dependencies and singletons, checked per connection.
#[derive(Clone)]
pub struct StateRegistry {
    registry: Registry,
    rules: Arc<Rules>,
}

impl StateRegistry {
    /// An empty builder.
    pub fn builder() -> StateRegistryBuilder {
        StateRegistryBuilder::default()
    }

    /// The stateless registry inside (names, ids, by-name sends).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The name registered for `id`.
    pub fn name_of(&self, id: u32) -> Option<&'static str> {
        self.registry.name_of(id)
    }

    /// The id registered for `name`.
    pub fn id_of(&self, name: &str) -> Option<u32> {
        self.registry.id_of(name)
    }
}

impl Protocol for StateRegistry {
    fn open(&self, _peer: &Peer) -> Box<dyn Dispatch> {
        Box::new(ConnectionState {
            registry: self.clone(),
            seen: HashSet::new(),
        })
    }
}

/// One connection's view: which messages it has received.
struct ConnectionState {
    registry: StateRegistry,
    seen: HashSet<u32>,
}

impl ConnectionState {
    fn check(&self, id: u32) -> Result<(), ProtocolError> {
        let name = |id| self.registry.name_of(id).unwrap_or("?");
        let Some(registered) = self.registry.name_of(id) else {
            return Err(ProtocolError::peer(
                Code::UNKNOWN_MESSAGE,
                id,
                format!("no message has id {id}"),
            ));
        };
        let rules = &self.registry.rules;
        if rules.singletons.contains(&id) && self.seen.contains(&id) {
            return Err(ProtocolError::peer(
                Code::REPEATED_SINGLETON,
                id,
                format!("{registered} may come only once"),
            ));
        }
        if let Some(missing) = rules
            .depends
            .get(&id)
            .into_iter()
            .flatten()
            .find(|dep| !self.seen.contains(dep))
        {
            let text = format!("{registered} needs {} first", name(*missing));
            return Err(ProtocolError::peer(Code::UNMET_DEPENDENCY, id, text));
        }
        Ok(())
    }
}

impl Dispatch for ConnectionState {
    fn dispatch<'a>(
        &'a mut self,
        peer: &'a Peer,
        message: Message,
    ) -> BoxFuture<'a, Result<(), ProtocolError>> {
        let id = message.id;
        if let Err(error) = self.check(id) {
            return Box::pin(std::future::ready(Err(error)));
        }
        let handled = self.registry.registry.handle(peer, message);
        Box::pin(async move {
            let result = handled.await;
            // Refused by the peer's fault (bad payload, no handler): not received.
            if !matches!(&result, Err(error) if error.peer_fault) {
                self.seen.insert(id);
            }
            result
        })
    }

    /// Requests follow the same rules as messages: a refused one is answered with its code.
    fn request<'a>(
        &'a mut self,
        peer: &'a Peer,
        message: Message,
        responder: Responder,
    ) -> BoxFuture<'a, Result<(), ProtocolError>> {
        let id = message.id;
        if let Err(error) = self.check(id) {
            return Box::pin(responder.refuse(error));
        }
        let handled = self.registry.registry.handle_request(peer, message, responder);
        Box::pin(async move {
            let result = handled.await;
            if !matches!(&result, Err(error) if error.peer_fault) {
                self.seen.insert(id);
            }
            result
        })
    }
}
