"""Wire formats: the binary frames, the text dialect, error codes and limits.

Everything here is about bytes: how an event is laid out, how a stream is cut
into frames or lines, and what a peer may send at most.
"""
