"""Chat rules: events, nicks and rooms, commands, the hub that decides, and the
rendering people see. No bytes and no transports: those are ``common.wire`` and
the edges.
"""
