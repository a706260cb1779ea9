"""The Lua scripts that make many servers one chat: each runs atomically in
Redis, so what it reads and writes and publishes is one step in the one
order every server sees.

Keys, under the chat's prefix ``{p}`` (``twinchat:`` by default), beside the
store's (``twinchat.store.redis``: ``{p}room:{key}`` with its ``last`` seq,
``{p}log:{key}`` the room's stream):

- ``{p}bus``: the channel every room notice is published on (every server
  follows it); ``{p}bus:{room}``: a room's messages (the servers with members
  in the room follow it); ``{p}bus@{server}``: a server's own, to wake its
  listener when it is to follow another room;
- ``{p}nicks``: a hash, nick key -> ``SERVER|N|NICK`` (who holds it);
- ``{p}held:{server}``: the nick keys a server's members hold;
- ``{p}names:{room}``: a hash, ``SERVER|TOKEN`` -> nick: the room's members;
- ``{p}where:{server}``: the rooms a server's members have been in;
- ``{p}servers``: the servers that are part of the chat; ``{p}alive:{server}``
  their heartbeats, keys that expire unless renewed.

Scripts build keys from the prefix they are given (``ARGV[1]``) rather than
declare them in ``KEYS``: fine on one Redis, not for Redis Cluster's slots.
"""

from __future__ import annotations

from typing import Final

#: One room notice (or a private message), ordered, reflected in who is
#: where, and published, in one step (a private message, op tell, only if
#: someone holds its nick; else the answer is -1). ARGV: prefix, op (join,
#: part, rename, topic, tell), body, member (``SERVER|TOKEN``), history
#: limit (unused), four fields (join and rename: the nick; topic: text, by,
#: at; tell: the nick key), then the room keys. Returns the first room's seq.
POST: Final = """
local p, op, body, member = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local at = {}
if op == 'tell' then
  if redis.call('HEXISTS', p .. 'nicks', ARGV[6]) == 0 then return -1 end
else
  local server = string.match(member, '^([^|]*)')
  for i = 10, #ARGV do
    local room = ARGV[i]
    local hkey = p .. 'room:' .. room
    at[#at + 1] = tonumber(redis.call('HGET', hkey, 'last') or '0')
    local names = p .. 'names:' .. room
    if op == 'join' then
      redis.call('HSET', names, member, ARGV[6])
      redis.call('SADD', p .. 'where:' .. server, room)
    elseif op == 'part' then
      redis.call('HDEL', names, member)
    elseif op == 'rename' then
      redis.call('HSET', names, member, ARGV[6])
    elseif op == 'topic' then
      redis.call('HSET', hkey, 'topic', ARGV[6], 'topic_by', ARGV[7], 'topic_at', ARGV[8])
    end
  end
end
redis.call('PUBLISH', p .. 'bus', table.concat(at, ',') .. '|' .. body)
return at[1]
"""

#: A run of messages of one room: numbered in a row (one ``HINCRBY``), each
#: added to the stream, and published as one payload (``FIRST|[...]``) on
#: the room's own channel, which only servers with members in it follow. ARGV:
#: prefix, room key, history limit, body (the JSON array of the events),
#: then time, sender, text, action (0 or 1) of each. Returns the first seq.
SAYS: Final = """
local p, room, limit, body = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local hkey = p .. 'room:' .. room
if redis.call('HEXISTS', hkey, 'epoch') == 0 then
  return redis.error_reply('NOROOM the store has no room ' .. room .. ' (was Redis emptied?)')
end
local n = (#ARGV - 4) / 4
local last = redis.call('HINCRBY', hkey, 'last', n)
local first = last - n + 1
local log = p .. 'log:' .. room
for i = 0, n - 1 do
  local j = 5 + 4 * i
  redis.call('XADD', log, 'MAXLEN', limit, (first + i) .. '-0',
    't', ARGV[j], 's', ARGV[j + 1], 'x', ARGV[j + 2], 'a', ARGV[j + 3])
end
if last > limit then redis.call('HSET', hkey, 'first', last - limit + 1) end
redis.call('PUBLISH', p .. 'bus:' .. room, first .. '|' .. body)
return first
"""

#: A room as the store knows it, made (with the given epoch) if it is not:
#: two servers opening one new room at once agree on its epoch. ARGV:
#: prefix, room key, name, a new epoch. Returns name, epoch, first, last,
#: topic, topic_by, topic_at.
OPEN_ROOM: Final = """
local p, key = ARGV[1], ARGV[2]
local hkey = p .. 'room:' .. key
if redis.call('HEXISTS', hkey, 'epoch') == 0 then
  local last = tonumber(redis.call('HGET', hkey, 'last') or '0')
  redis.call('HSET', hkey, 'name', ARGV[3], 'epoch', ARGV[4], 'first', last + 1, 'last', last,
    'topic', '', 'topic_by', '', 'topic_at', 0)
  redis.call('SADD', p .. 'rooms', key)
end
local row = redis.call('HMGET', hkey, 'name', 'epoch', 'last', 'topic', 'topic_by', 'topic_at')
local first = tonumber(row[3]) + 1
local head = redis.call('XRANGE', p .. 'log:' .. key, '-', '+', 'COUNT', 1)
if #head > 0 then first = tonumber(string.match(head[1][1], '^(%d+)')) end
return {row[1], row[2], tostring(first), row[3], row[4], row[5], row[6]}
"""

#: Take a nick: ARGV prefix, server, nick key, value (``SERVER|N|NICK``),
#: and the value this server is still releasing (it may be taken over).
#: Returns {1 or 0, members online}.
CLAIM: Final = """
local p, server, key, value, releasing = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local now = redis.call('HGET', p .. 'nicks', key)
if now and now ~= releasing then
  return {0, redis.call('HLEN', p .. 'nicks')}
end
redis.call('HSET', p .. 'nicks', key, value)
redis.call('SADD', p .. 'held:' .. server, key)
return {1, redis.call('HLEN', p .. 'nicks')}
"""

#: Give a nick up if this value still holds it. ARGV: prefix, server, key, value.
RELEASE: Final = """
local p, server, key, value = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if redis.call('HGET', p .. 'nicks', key) == value then
  redis.call('HDEL', p .. 'nicks', key)
  redis.call('SREM', p .. 'held:' .. server, key)
end
return 0
"""

#: A server is gone (its heartbeat expired, or it is stopping): remove its
#: members from every room and the nick table, and publish one Left per
#: member to the rooms it was in. Exactly one caller does it: the first to
#: take the server out of ``{p}servers``. ARGV: prefix, server, reason,
#: and "1" to do it even though its heartbeat is alive (it is stopping).
#: Returns the members removed (0 if another did it, or it is alive).
REAP: Final = """
local p, dead, reason, stopping = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if stopping ~= '1' and redis.call('EXISTS', p .. 'alive:' .. dead) == 1 then return 0 end
if redis.call('SREM', p .. 'servers', dead) == 0 and stopping ~= '1' then return 0 end
local prefix = dead .. '|'
local members, order = {}, {}
for _, room in ipairs(redis.call('SMEMBERS', p .. 'where:' .. dead)) do
  local names = p .. 'names:' .. room
  local flat = redis.call('HGETALL', names)
  for i = 1, #flat, 2 do
    local field, nick = flat[i], flat[i + 1]
    if string.sub(field, 1, #prefix) == prefix then
      redis.call('HDEL', names, field)
      local m = members[field]
      if not m then
        m = {nick = nick, rooms = {}}
        members[field] = m
        order[#order + 1] = field
      end
      m.rooms[#m.rooms + 1] = room
    end
  end
end
for _, field in ipairs(order) do
  local m = members[field]
  local at = {}
  for i, room in ipairs(m.rooms) do
    at[i] = tonumber(redis.call('HGET', p .. 'room:' .. room, 'last') or '0')
  end
  local body = cjson.encode({'Left', {m.nick, reason}, m.rooms, '', 1, ''})
  redis.call('PUBLISH', p .. 'bus', table.concat(at, ',') .. '|' .. body)
end
for _, key in ipairs(redis.call('SMEMBERS', p .. 'held:' .. dead)) do
  local value = redis.call('HGET', p .. 'nicks', key)
  if value and string.sub(value, 1, #prefix) == prefix then redis.call('HDEL', p .. 'nicks', key) end
end
redis.call('DEL', p .. 'held:' .. dead, p .. 'where:' .. dead, p .. 'alive:' .. dead)
return #order
"""

#: Every room with members, history or a topic: {name, members on every
#: server, topic} each. ARGV: prefix.
ROOMS: Final = """
local p = ARGV[1]
local out = {}
for _, key in ipairs(redis.call('SMEMBERS', p .. 'rooms')) do
  local row = redis.call('HMGET', p .. 'room:' .. key, 'name', 'topic', 'last')
  local members = redis.call('HLEN', p .. 'names:' .. key)
  if row[1] and (members > 0 or tonumber(row[3] or '0') > 0 or (row[2] or '') ~= '') then
    out[#out + 1] = {row[1], members, row[2] or ''}
  end
end
return out
"""
