"""Typed errors: every failure names its cause with a code and whose fault it is.

Strategy: the code travels on the wire (an ``Error`` frame carries it), so a
client can react to ``NICK_TAKEN`` without parsing English. The exception class
says who broke the rules:

- ``RemoteProtocolError``: the peer sent bytes that are not the protocol. The
  stream can no longer be trusted; the connection ends.
- ``FrameRejected`` (a ``RemoteProtocolError``): the peer sent one well-framed
  frame whose content is invalid (bad UTF-8, an over-long text, an unknown
  frame type). The decoder has skipped exactly that frame and stays usable.
- ``LocalProtocolError``: we were asked to send something the protocol cannot
  carry. That is a bug on our side, never the peer's.
- ``RuleError``: a chat rule refuses a value (a bad nick, an unknown command),
  raised where the value is built. Whoever built it is at fault: the decoder
  turns it into ``FrameRejected``, a client shows it to its user.
"""

from enum import IntEnum


class ErrorCode(IntEnum):
    """Machine-readable error codes, carried by ``Error`` frames (u16)."""

    # 1xx: the bytes are not the protocol.
    #: The bytes do not start with the twinchat magic.
    BAD_MAGIC = 100
    #: The frame header names a protocol version this peer does not speak.
    BAD_VERSION = 101
    #: A frame (or line) declares or reaches a size past the hard cap.
    FRAME_TOO_LARGE = 102
    #: The stream ended, or a datagram ended, inside a frame.
    TRUNCATED = 103
    #: The frame type is unknown to this peer; the frame was skipped.
    UNKNOWN_FRAME = 104
    #: The payload does not match its frame type's layout.
    MALFORMED = 105
    #: A text field is not valid UTF-8.
    BAD_UTF8 = 106
    #: A datagram is larger than MAX_DATAGRAM.
    DATAGRAM_TOO_LARGE = 107
    #: The frame is valid but not one this peer accepts from that side.
    UNEXPECTED_FRAME = 108

    # 2xx: a chat rule refused the request.
    #: The nick breaks the nick rules.
    BAD_NICK = 200
    #: Another member holds that nick (compared under Unicode casefolding).
    NICK_TAKEN = 201
    #: The request needs a registered nick first.
    NOT_REGISTERED = 202
    #: A second registration on one connection.
    ALREADY_REGISTERED = 203
    #: A private message names a nick nobody holds.
    NO_SUCH_NICK = 204
    #: A text is longer than MAX_TEXT bytes of UTF-8.
    TEXT_TOO_LONG = 205
    #: A text is empty where it may not be, or holds control characters.
    BAD_TEXT = 206
    #: A typed /command that does not exist.
    UNKNOWN_COMMAND = 207
    #: A known /command with missing or extra arguments.
    BAD_USAGE = 208
    #: The room name breaks the room rules.
    BAD_ROOM = 209
    #: The request names a room the sender is not in.
    NOT_IN_ROOM = 210
    #: The request names a room that does not exist.
    NO_SUCH_ROOM = 211
    #: Joining would pass the rooms-per-member or rooms-per-server limit.
    TOO_MANY_ROOMS = 212
    #: The nick is registered: the password that proves it is missing.
    NEEDS_PASSWORD = 213
    #: The password is wrong, empty, too long or holds control characters.
    BAD_PASSWORD = 214
    #: Too many wrong passwords for this nick or from this address; wait.
    TOO_MANY_TRIES = 215
    #: /register of a nick that is registered already.
    ACCOUNT_EXISTS = 216
    #: /password or /unregister by a nick that is not registered.
    NO_ACCOUNT = 217
    #: The server's store failed to do what was asked (it is logged); try later.
    STORE_FAILED = 218

    # 3xx: server policy ended or limited the session.
    #: The server has --max-clients members already.
    SERVER_FULL = 300
    #: The client sends faster than --rate-limit allows.
    RATE_LIMITED = 301
    #: The client did not register in time.
    REGISTRATION_TIMEOUT = 302
    #: The client did not answer pings within --idle-timeout.
    IDLE_TIMEOUT = 303
    #: The client did not read fast enough; its outbound queue overflowed.
    SLOW_CONSUMER = 304
    #: The server is shutting down.
    SHUTTING_DOWN = 305

    @property
    def slug(self) -> str:
        """The code's name as it is rendered for people: ``nick-taken``."""
        return self.name.lower().replace("_", "-")


class ProtocolError(Exception):
    """Base of every twinchat error; carries a code and a human-readable detail."""

    def __init__(self, code: ErrorCode, detail: str) -> None:
        super().__init__(f"{code.slug}: {detail}")
        self.code = code
        self.detail = detail


class LocalProtocolError(ProtocolError):
    """We were asked to send something the protocol cannot carry."""


class RemoteProtocolError(ProtocolError):
    """The peer's bytes are not the protocol; the connection cannot go on."""


class FrameRejected(RemoteProtocolError):
    """One well-framed frame had invalid content and was skipped; go on reading."""


class RuleError(ProtocolError, ValueError):
    """A chat rule refuses a value where it is built (a nick, a text, a command)."""
