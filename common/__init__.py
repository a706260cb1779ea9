"""twinchat's sans-IO core: framing, events, chat rules and chat state.

Nothing here touches a socket, a thread or the clock; the transports
(``tcpchat``, ``udpchat``) own those and drive this code. Time, where a rule
needs it, is passed in as ``now``.
"""
