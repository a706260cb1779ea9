"""The chat client's front end, shared by the TCP and the UDP client.

A transport provides one ``Connect`` function; the front end owns everything a
person (or a script) sees: the command line, the terminal UI on a TTY, and the
plain line mode when stdin is a pipe.

The contract between the two halves:

- ``connect(host, port, nick, on_event, on_closed, password=..., resume=...)``
  registers ``nick`` and returns a ``Link`` once the server's ``Welcome``
  arrived, or raises ``ConnectError`` with a one-line reason and, when the
  server refused the nick or its password, its code (the front end then
  offers another nick or asks for the password, and calls ``connect``
  again). ``resume``: coming back after a lost link, so the server puts the
  client in no room and it rejoins its own (``link.Reconnecting``, which
  every front end holds as its link);
- after it returned, the transport's receive thread calls ``on_event(event)``
  for every server event (the ``Welcome`` first, a ``Pong`` too: the front end
  pings to learn where an answer ends) and ``on_closed(reason)`` once, when
  the link ends for whatever reason;
- ``Link.send`` is thread-safe and never blocks long; ``Link.close(reason)``
  says ``Goodbye(reason)`` if the link is still open, waits (bounded) until
  the server has it, and releases everything.
"""

from __future__ import annotations

from twinchat.frontend.app import main
from twinchat.frontend.link import Connect, ConnectError, Link, Reconnecting

__all__ = ["ConnectError", "Link", "Connect", "Reconnecting", "main"]
