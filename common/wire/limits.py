"""The numbers every twinchat peer agrees on.

They are protocol constants, not tuning knobs: a peer that changes them speaks
another protocol. PROTOCOL.md quotes each of them.
"""

from typing import Final

#: Largest frame, header included, that any peer accepts (the hard cap).
MAX_FRAME: Final = 64 * 1024

#: Largest text, in UTF-8 bytes, that a chat message, action or private message carries.
MAX_TEXT: Final = 4096

#: Longest nick, in Unicode code points after NFC normalisation.
MAX_NICK: Final = 32

#: Largest UDP datagram any peer sends: the IPv6 minimum MTU less room for
#: headers, so no datagram is ever fragmented by IP on a sane path.
MAX_DATAGRAM: Final = 1200

#: Longest line of the plain-text dialect, newline included.
MAX_LINE: Final = MAX_FRAME

#: Most nicks in one WhoReply frame, so a reply fits a frame whatever the nicks.
WHO_CHUNK: Final = 50

#: Most selective-acknowledgement ranges in one Ack frame.
MAX_ACK_RANGES: Final = 32

#: Longest room name after its ``#``, in code points after NFC normalisation.
MAX_ROOM: Final = 32

#: Largest room topic, in UTF-8 bytes (IRC's customary TOPICLEN).
MAX_TOPIC: Final = 390

#: Most rooms in one RoomList frame: 50 of the largest fit a frame.
ROOMS_CHUNK: Final = 50

#: The port servers listen on and clients dial unless told otherwise: TCP
#: (both dialects) and UDP alike.
DEFAULT_PORT: Final = 7878

#: Most history entries one History request (``/history N``) is answered with.
MAX_HISTORY_PAGE: Final = 500

#: Most private messages kept for one registered nick while it is offline.
MAX_KEPT: Final = 100

#: Longest password, in UTF-8 bytes (a passphrase fits; a megabyte to hash does not).
MAX_PASSWORD: Final = 256

#: Longest epoch name (a room numbering's name), in ASCII letters and digits.
MAX_EPOCH: Final = 32
