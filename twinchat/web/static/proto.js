// twinchat frames (PROTOCOL.md, "Frames"), in the browser: encode what a client
// sends, decode what the server sends. One table of frame types and their
// fields drives both, as common/wire/framing.py does on the server; a frame is
// an 8-byte header (magic C1 54, version 04, type, u32 length) and its fields.
"use strict";

const TwinProto = (() => {
  const MAGIC0 = 0xc1, MAGIC1 = 0x54, VERSION = 4, HEADER = 8;
  const MAX_FRAME = 65536, MAX_TEXT = 4096;

  // type -> [name, [[field, kind], ...]], in PROTOCOL.md's order.
  const msg = [["room", "room"], ["sender", "nick"], ["text", "text"], ["seq", "u64"], ["time", "u64"], ["history", "bool"]];
  const TYPES = {
    0x01: ["Register", [["nick", "nick"], ["password", "text"], ["resume", "bool"]]],
    0x02: ["Say", [["room", "room"], ["text", "text"]]],
    0x03: ["Act", [["room", "room"], ["text", "text"]]],
    0x04: ["Whisper", [["to", "nick"], ["text", "text"]]],
    0x05: ["ChangeNick", [["nick", "nick"]]],
    0x06: ["Who", []],
    0x07: ["Help", []],
    0x08: ["Join", [["room", "room"], ["epoch", "nick"], ["after", "u64"]]],
    0x09: ["Part", [["room", "room"], ["reason", "text"]]],
    0x0a: ["ListRooms", []],
    0x0b: ["Names", [["room", "room"]]],
    0x0c: ["GetTopic", [["room", "room"]]],
    0x0d: ["SetTopic", [["room", "room"], ["text", "text"]]],
    0x0e: ["History", [["room", "room"], ["before", "u64"], ["count", "u16"]]],
    0x0f: ["RegisterAccount", [["password", "text"]]],
    0x10: ["ChangePassword", [["old", "text"], ["new", "text"]]],
    0x11: ["DropAccount", [["password", "text"]]],
    0x20: ["Welcome", [["nick", "nick"], ["online", "u64"]]],
    0x21: ["Message", msg],
    0x22: ["Action", msg],
    0x23: ["Private", [["sender", "nick"], ["text", "text"], ["time", "u64"], ["kept", "bool"]]],
    0x24: ["Joined", [["room", "room"], ["nick", "nick"]]],
    0x25: ["Left", [["nick", "nick"], ["reason", "text"]]],
    0x26: ["Renamed", [["old", "nick"], ["new", "nick"]]],
    0x27: ["WhoReply", [["room", "room"], ["nicks", "nicks"], ["more", "bool"]]],
    0x28: ["Reply", [["text", "text"]]],
    0x29: ["Error", [["code", "u16"], ["detail", "text"]]],
    0x2a: ["Parted", [["room", "room"], ["nick", "nick"], ["reason", "text"]]],
    0x2b: ["Topic", [["room", "room"], ["text", "text"], ["setter", "nick"], ["time", "u64"], ["changed", "bool"]]],
    0x2c: ["RoomList", [["rooms", "rooms"], ["more", "bool"]]],
    0x2d: ["Replay", [["room", "room"], ["epoch", "nick"], ["first", "u64"], ["last", "u64"], ["gap", "bool"]]],
    0x40: ["Ping", [["nonce", "u64"]]],
    0x41: ["Pong", [["nonce", "u64"]]],
    0x42: ["Goodbye", [["reason", "text"]]],
  };
  const BY_NAME = {};
  for (const [type, [name, fields]] of Object.entries(TYPES)) BY_NAME[name] = [Number(type), fields];

  // Error codes by number, named as the text dialect names them (nick-taken).
  const CODES = {
    100: "BAD_MAGIC", 101: "BAD_VERSION", 102: "FRAME_TOO_LARGE", 103: "TRUNCATED", 104: "UNKNOWN_FRAME",
    105: "MALFORMED", 106: "BAD_UTF8", 107: "DATAGRAM_TOO_LARGE", 108: "UNEXPECTED_FRAME",
    200: "BAD_NICK", 201: "NICK_TAKEN", 202: "NOT_REGISTERED", 203: "ALREADY_REGISTERED", 204: "NO_SUCH_NICK",
    205: "TEXT_TOO_LONG", 206: "BAD_TEXT", 207: "UNKNOWN_COMMAND", 208: "BAD_USAGE", 209: "BAD_ROOM",
    210: "NOT_IN_ROOM", 211: "NO_SUCH_ROOM", 212: "TOO_MANY_ROOMS", 213: "NEEDS_PASSWORD", 214: "BAD_PASSWORD",
    215: "TOO_MANY_TRIES", 216: "ACCOUNT_EXISTS", 217: "NO_ACCOUNT", 218: "STORE_FAILED",
    300: "SERVER_FULL", 301: "RATE_LIMITED", 302: "REGISTRATION_TIMEOUT", 303: "IDLE_TIMEOUT",
    304: "SLOW_CONSUMER", 305: "SHUTTING_DOWN",
  };

  const utf8 = new TextEncoder();
  const strict = new TextDecoder("utf-8", { fatal: true });

  class ProtocolError extends Error {}

  // --- encoding: each kind appends its bytes to a list of Uint8Arrays ---
  function sized(bytes, width, out) {
    const head = new Uint8Array(width);
    if (width === 1) head[0] = bytes.length; else new DataView(head.buffer).setUint16(0, bytes.length);
    out.push(head, bytes);
  }
  function number(value, width, out) {
    const b = new Uint8Array(width), v = new DataView(b.buffer);
    if (width === 1) v.setUint8(0, value);
    else if (width === 2) v.setUint16(0, value);
    else v.setBigUint64(0, BigInt(value));
    out.push(b);
  }
  const PACK = {
    u8: (v, out) => number(v, 1, out),
    u16: (v, out) => number(v, 2, out),
    u64: (v, out) => number(v, 8, out),
    bool: (v, out) => number(v ? 1 : 0, 1, out),
    nick: (v, out) => sized(utf8.encode(v), 1, out),
    room: (v, out) => sized(utf8.encode(v), 1, out),
    text: (v, out) => sized(utf8.encode(v), 2, out),
  };

  function encode(name, values = {}) {
    const [type, fields] = BY_NAME[name];
    const parts = [];
    for (const [field, kind] of fields) PACK[kind](values[field] ?? (kind === "u64" || kind === "u16" ? 0 : kind === "bool" ? false : ""), parts);
    const length = parts.reduce((n, p) => n + p.length, 0);
    if (HEADER + length > MAX_FRAME) throw new ProtocolError("a frame past " + MAX_FRAME + " bytes");
    const frame = new Uint8Array(HEADER + length);
    frame.set([MAGIC0, MAGIC1, VERSION, type]);
    new DataView(frame.buffer).setUint32(4, length);
    let at = HEADER;
    for (const p of parts) { frame.set(p, at); at += p.length; }
    return frame;
  }

  // --- decoding: each kind reads at a cursor ---
  class Reader {
    constructor(bytes, start, end) { this.b = bytes; this.v = new DataView(bytes.buffer, bytes.byteOffset); this.at = start; this.end = end; }
    need(n) { if (this.at + n > this.end) throw new ProtocolError("a field runs past its frame"); const at = this.at; this.at += n; return at; }
    u8() { return this.v.getUint8(this.need(1)); }
    u16() { return this.v.getUint16(this.need(2)); }
    u64() { return Number(this.v.getBigUint64(this.need(8))); }
    str(n) { const at = this.need(n); return strict.decode(this.b.subarray(at, at + n)); }
  }
  const UNPACK = {
    u8: (r) => r.u8(),
    u16: (r) => r.u16(),
    u64: (r) => r.u64(),
    bool: (r) => { const v = r.u8(); if (v > 1) throw new ProtocolError("a bool is 0 or 1"); return v === 1; },
    nick: (r) => r.str(r.u8()),
    room: (r) => r.str(r.u8()),
    text: (r) => r.str(r.u16()),
    nicks: (r) => { const n = r.u16(), out = []; for (let i = 0; i < n; i++) out.push(r.str(r.u8())); return out; },
    rooms: (r) => {
      const n = r.u16(), out = [];
      for (let i = 0; i < n; i++) out.push({ room: r.str(r.u8()), members: r.u64(), topic: r.str(r.u16()) });
      return out;
    },
  };

  // One binary WebSocket message is exactly one frame.
  function decode(bytes) {
    if (bytes.length < HEADER) throw new ProtocolError("shorter than a frame header");
    if (bytes[0] !== MAGIC0 || bytes[1] !== MAGIC1) throw new ProtocolError("not a twinchat frame");
    if (bytes[2] !== VERSION) throw new ProtocolError("protocol version " + bytes[2]);
    const length = new DataView(bytes.buffer, bytes.byteOffset).getUint32(4);
    if (HEADER + length !== bytes.length) throw new ProtocolError("the frame length does not match the message");
    const known = TYPES[bytes[3]];
    if (!known) return { type: "Unknown", code: bytes[3] };
    const [name, fields] = known;
    const r = new Reader(bytes, HEADER, bytes.length);
    const event = { type: name };
    for (const [field, kind] of fields) event[field] = UNPACK[kind](r);
    if (r.at !== r.end) throw new ProtocolError(name + " has extra bytes");
    return event;
  }

  // PROTOCOL.md "The client's view": a text over MAX_TEXT bytes of UTF-8 is
  // sent as several, cut after the last space in the second half of a piece,
  // else between characters but never before a combining mark, a zero-width
  // joiner or a variation selector; joined, the pieces give the text back.
  // (common/chat/commands.py split_text, character for character.)
  const clings = (ch) => /^[\p{M}\u200d\ufe00-\ufe0f]$/u.test(ch);
  function splitText(text, limit = MAX_TEXT) {
    const chars = Array.from(text);
    const widths = chars.map((ch) => utf8.encode(ch).length);
    const pieces = [];
    let start = 0, rest = widths.reduce((n, w) => n + w, 0);
    while (rest > limit) {
      let size = 0, end = start;
      while (end < chars.length && size + widths[end] <= limit) { size += widths[end]; end += 1; }
      const taken = end - start;
      const space = chars.slice(start, end).lastIndexOf(" ");
      if (space >= Math.floor(taken / 2)) end = start + space + 1;
      else {
        let cut = taken;
        while (cut > 0 && clings(chars[start + cut])) cut -= 1;
        end = start + (cut || taken);
      }
      pieces.push(chars.slice(start, end).join(""));
      for (let i = start; i < end; i++) rest -= widths[i];
      start = end;
    }
    pieces.push(chars.slice(start).join(""));
    return pieces;
  }

  // PROTOCOL.md's name for an error code, lower case with "-": nick-taken.
  function codeName(code) { return (CODES[code] || String(code)).toLowerCase().replaceAll("_", "-"); }

  return { encode, decode, codeName, splitText, CODES, TYPES, MAX_TEXT, ProtocolError };
})();
