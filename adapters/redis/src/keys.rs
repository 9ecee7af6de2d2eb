//! Where the cluster's state lives in Redis, and the scripts that change it atomically.
//!
//! This module owns every key name and Lua script; it must not decide when they run.
//!
//! ```text
//! {prefix}:bus                 stream: every node's entries (broadcasts, presence, requests)
//! {prefix}:i:{node}            stream: replies to one node's requests
//! {prefix}:nodes               set: the nodes registered
//! {prefix}:n:{node}:alive      string with a TTL: the node is alive while it exists
//! {prefix}:n:{node}:m          hash "peer room" → member value: the node's memberships
//! {prefix}:n:{node}:gone       string: the node was taken for gone (kept a day)
//! {prefix}:r:{room}            hash peer → member value (node, label): a room's members
//! {prefix}:rooms               set: rooms with members
//! ```
//!
//! Scripts name their keys from `ARGV` (the prefix and a node), so the adapter needs one Redis
//! (or a primary), not Redis Cluster.

use crate::event::NodeId;

/// Key names under one prefix.
#[derive(Clone, Debug)]
pub(crate) struct Keys {
    pub(crate) prefix: String,
    pub(crate) bus: String,
    pub(crate) rooms: String,
}

impl Keys {
    pub(crate) fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.to_owned(),
            bus: format!("{prefix}:bus"),
            rooms: format!("{prefix}:rooms"),
        }
    }

    pub(crate) fn inbox(&self, node: NodeId) -> String {
        format!("{}:i:{node}", self.prefix)
    }

    pub(crate) fn alive(&self, node: NodeId) -> String {
        format!("{}:n:{node}:alive", self.prefix)
    }

    pub(crate) fn nodes(&self) -> String {
        format!("{}:nodes", self.prefix)
    }

    pub(crate) fn room(&self, room: &str) -> Vec<u8> {
        let mut key = format!("{}:r:", self.prefix).into_bytes();
        key.extend_from_slice(room.as_bytes());
        key
    }
}

/// Shared Lua: remove every membership of node `n` (its hash `m`) from the rooms.
const REMOVE_ALL: &str = r#"
local function remove_all(p, m)
  local all = redis.call('HGETALL', m)
  for i = 1, #all, 2 do
    local field = all[i]
    local sp = string.find(field, ' ', 1, true)
    if sp then
      local peer, room = string.sub(field, 1, sp - 1), string.sub(field, sp + 1)
      local r = p .. ':r:' .. room
      redis.call('HDEL', r, peer)
      if redis.call('EXISTS', r) == 0 then redis.call('SREM', p .. ':rooms', room) end
    end
  end
  redis.call('DEL', m)
  return all
end
"#;

/// Applies joins and leaves of one node. ARGV: prefix, node, then (op, peer, room, value)…
/// with op `j` or `l`.
pub(crate) const APPLY: &str = r#"
local p, node = ARGV[1], ARGV[2]
local m = p .. ':n:' .. node .. ':m'
for i = 3, #ARGV, 4 do
  local op, peer, room, value = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local r = p .. ':r:' .. room
  if op == 'j' then
    redis.call('HSET', r, peer, value)
    redis.call('HSET', m, peer .. ' ' .. room, value)
    redis.call('SADD', p .. ':rooms', room)
  else
    redis.call('HDEL', r, peer)
    redis.call('HDEL', m, peer .. ' ' .. room)
    if redis.call('EXISTS', r) == 0 then redis.call('SREM', p .. ':rooms', room) end
  end
end
return 1
"#;

/// Replaces one node's memberships with the ones given. ARGV: prefix, node, then
/// (peer, room, value)…. Returns 1 if the node had been taken for gone (and clears that).
pub(crate) fn resync() -> String {
    format!(
        "{REMOVE_ALL}{}",
        r#"
local p, node = ARGV[1], ARGV[2]
local m = p .. ':n:' .. node .. ':m'
remove_all(p, m)
for i = 3, #ARGV, 3 do
  local peer, room, value = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  redis.call('HSET', p .. ':r:' .. room, peer, value)
  redis.call('HSET', m, peer .. ' ' .. room, value)
  redis.call('SADD', p .. ':rooms', room)
end
return redis.call('DEL', p .. ':n:' .. node .. ':gone')
"#
    )
}

/// Removes node ARGV[2] if its liveness key has expired (or ARGV[3] is `leave`: it leaves by
/// itself). Returns `{removed, field, value, field, value…}`: `removed` is 1 only for the one
/// caller that removed it.
pub(crate) fn remove_node() -> String {
    format!(
        "{REMOVE_ALL}{}",
        r#"
local p, node, how = ARGV[1], ARGV[2], ARGV[3]
local alive = p .. ':n:' .. node .. ':alive'
if how ~= 'leave' and redis.call('EXISTS', alive) == 1 then return {0} end
local removed = redis.call('SREM', p .. ':nodes', node)
local all = remove_all(p, p .. ':n:' .. node .. ':m')
redis.call('DEL', alive, p .. ':i:' .. node)
if how ~= 'leave' then redis.call('SET', p .. ':n:' .. node .. ':gone', 1, 'EX', 86400) end
local out = {removed}
for i = 1, #all do out[#out + 1] = all[i] end
return out
"#
    )
}

/// The registered nodes, split into `{alive, expired}`. ARGV: prefix.
pub(crate) const NODES: &str = r#"
local p = ARGV[1]
local alive, expired = {}, {}
for _, n in ipairs(redis.call('SMEMBERS', p .. ':nodes')) do
  if redis.call('EXISTS', p .. ':n:' .. n .. ':alive') == 1 then
    alive[#alive + 1] = n
  else
    expired[#expired + 1] = n
  end
end
return {alive, expired}
"#;
