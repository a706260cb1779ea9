"""twinchat over UDP: token sessions, datagram fan-out and the reliability raw UDP lacks.

``udpchat.server`` is the server, ``udpchat.client`` the client (on the shared
``frontend``), ``udpchat.lossyproxy`` a seeded lossy relay for tests and
benchmarks. The protocol logic itself is sans-IO, in ``common.session.reliability``
and ``common.session.cookies``.
"""
