"""Many server processes on one Redis are one chat (``--redis URL``; issue 10).

- ``node``: ``Cluster``, one server's link to the others: the bus (room
  events numbered and ordered by Redis, delivered by each server to its own
  members), the nick table and presence, the heartbeat; its docstring is
  the design;
- ``scripts``: the Lua scripts that make each step atomic in Redis;
- ``codec``: room events as they travel on the channel;
- ``store``: ``ClusterStore``, the Redis store of one server among many.

It needs redis-py (``pip install 'twinchat[redis]'``); nothing imports it
unless a server is given ``--redis``.
"""
