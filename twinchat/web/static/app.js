// The twinchat page: a client of PROTOCOL.md over the WebSocket at /ws, one
// binary message per frame (TwinProto in proto.js). It keeps what the
// reference clients keep (PROTOCOL.md, "The client's view" and "History and
// resuming"): the rooms in join order, the current one, per room the epoch of
// its last Replay and the highest and lowest seq seen; after a dropped link it
// comes back with Register(resume) and one Join(room, epoch, after) per room.
//
// Every string from the server reaches the page through textContent, never
// as markup: nicks, messages and topics are text, whatever they hold.
"use strict";

(() => {
  const P = TwinProto;
  const $ = (id) => document.getElementById(id);
  const MAX_LOG = 2000; // lines kept per room
  const BACKOFF = [500, 1000, 2000, 4000, 8000, 10000]; // ms before each reconnect try

  const state = {
    nick: "", password: "",
    socket: null,
    registered: false, // a Welcome came on this socket
    resuming: false,   // the next Register resumes the session (rooms, positions)
    quitting: false,   // /quit typed: no reconnect
    restarting: false, // SHUTTING_DOWN came: the Goodbye after it is a restart, come back
    ended: "",         // why the server ended the session (a Goodbye not followed by a reconnect)
    tries: 0,
    rooms: new Map(),  // key -> room, in join order
    current: null,     // key of the current room
    joining: [],       // [typed key, key current before] for each Join not answered yet
    names: new Map(),  // key -> nicks gathered from WhoReply frames until more=false
    asked: new Set(),  // keys whose Names answer is for the people panel, not the log
    who: [],           // a /who answer being gathered
    rooms_seen: [],    // a /rooms answer being gathered
    history: new Map(), // key -> {at, last}: where a /history answer goes, until its last seq
    pendingHistory: null, // key of the room a /history was sent for
    topicAsked: null,  // key of the room a /topic (no text) was sent for
  };

  const keyOf = (name) => name.normalize("NFC").toLowerCase();
  const room = (name) => state.rooms.get(keyOf(name));
  const here = () => (state.current ? state.rooms.get(state.current) : null);

  // --- the page ------------------------------------------------------------

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function clock(ms) {
    const d = new Date(ms);
    return String(d.getHours()).padStart(2, "0") + ":" + String(d.getMinutes()).padStart(2, "0");
  }

  function makeRoom(name) {
    const key = keyOf(name);
    let r = state.rooms.get(key);
    if (r) { r.name = name; return r; }
    const log = el("ol", "log");
    log.dataset.room = name;
    log.hidden = true;
    $("logs").append(log);
    r = { key, name, epoch: "", high: 0, low: 0, seen: new Set(), unread: 0, topic: "", members: [], log };
    state.rooms.set(key, r);
    return r;
  }

  function dropRoom(key) {
    const r = state.rooms.get(key);
    if (!r) return;
    r.log.remove();
    state.rooms.delete(key);
    if (state.current === key) {
      const left = [...state.rooms.keys()];
      state.current = left.length ? left[left.length - 1] : null;
    }
  }

  // One line of a room's log (or the current room's when r is null).
  function line(r, kind, parts, time, at) {
    r = r || here();
    if (!r) { status(parts.map((p) => p[1]).join(" ")); return null; }
    const li = el("li", "line " + kind);
    li.append(el("time", "", clock(time || Date.now())));
    for (const [cls, text] of parts) li.append(el("span", cls, text));
    if (at === undefined || at >= r.log.children.length) r.log.append(li);
    else r.log.insertBefore(li, r.log.children[at]);
    while (r.log.children.length > MAX_LOG) r.log.firstElementChild.remove();
    if (r.key === state.current) scrollDown();
    return li;
  }
  const notice = (r, text) => line(r, "notice", [["text", text]]);

  function scrollDown() {
    const box = $("logs");
    box.scrollTop = box.scrollHeight;
  }

  function status(text, kind) {
    const s = $("status");
    s.textContent = text;
    s.className = kind || "";
  }

  function render() {
    const list = $("room-list");
    list.replaceChildren();
    for (const r of state.rooms.values()) {
      const li = el("li", r.key === state.current ? "room current" : "room");
      li.dataset.room = r.name;
      li.append(el("span", "name", r.name));
      if (r.unread) li.append(el("span", "unread", String(r.unread)));
      li.addEventListener("click", () => { switchTo(r.key); });
      list.append(li);
    }
    const r = here();
    for (const other of state.rooms.values()) other.log.hidden = other !== r;
    $("room-name").textContent = r ? r.name : "no room";
    $("topic").textContent = r ? r.topic : "";
    $("part").hidden = !r;
    const people = $("people");
    people.replaceChildren();
    $("people-title").textContent = r ? `In ${r.name} (${r.members.length})` : "Online";
    for (const nick of r ? r.members : []) people.append(el("li", nick === state.nick ? "me" : "", nick));
    $("me").textContent = state.nick;
  }

  function switchTo(key) {
    if (!state.rooms.has(key)) return;
    state.current = key;
    state.rooms.get(key).unread = 0;
    render();
    scrollDown();
    $("input").focus();
  }

  // --- the link ----------------------------------------------------------------

  function send(name, values) {
    if (state.socket && state.socket.readyState === WebSocket.OPEN) state.socket.send(P.encode(name, values));
  }

  function connect() {
    const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws";
    const ws = new WebSocket(url);
    ws.binaryType = "arraybuffer";
    state.socket = ws;
    state.registered = false;
    state.restarting = false;
    status(state.resuming ? "reconnecting…" : "connecting…", "busy");
    ws.onopen = () => {
      send("Register", { nick: state.nick, password: state.password, resume: state.resuming });
    };
    ws.onmessage = (message) => {
      if (!(message.data instanceof ArrayBuffer)) return;
      let event;
      try {
        event = P.decode(new Uint8Array(message.data));
      } catch (e) {
        status("the server sent something this page cannot read: " + e.message, "bad");
        ws.close(1002);
        return;
      }
      (HANDLERS[event.type] || (() => {}))(event);
    };
    ws.onclose = () => {
      if (state.socket !== ws) return;
      state.socket = null;
      const wasIn = state.registered || state.resuming;
      state.registered = false;
      if (state.quitting) { status("disconnected", "bad"); return; }
      if (state.ended) { showLogin(state.ended); return; }
      if (!wasIn) { showLogin("could not reach the server"); return; }
      // A dropped link, or a restart: come back, and catch up on every room.
      state.resuming = true;
      const wait = BACKOFF[Math.min(state.tries, BACKOFF.length - 1)] * (0.8 + 0.4 * Math.random());
      state.tries += 1;
      status(`link lost; reconnecting in ${(wait / 1000).toFixed(1)} s…`, "busy");
      setTimeout(connect, wait);
    };
  }

  // --- what the server says -------------------------------------------------------

  function said(e, action) {
    const r = room(e.room);
    if (!r) return;
    const paging = e.history ? state.history.get(r.key) : undefined; // a /history answer goes above
    if (paging && e.seq >= paging.last) state.history.delete(r.key); // its last message
    if (e.seq && r.seen.has(e.seq)) return; // already shown (a replay overlapping the screen)
    if (e.seq) r.seen.add(e.seq);
    const mine = e.sender === state.nick;
    const parts = action
      ? [["nick", "* " + e.sender], ["text", " " + e.text]]
      : [["nick", e.sender], ["text", e.text]];
    const kind = (action ? "action" : "message") + (mine ? " mine" : "") + (e.history ? " history" : "");
    const li = line(r, kind, parts, e.time, paging ? paging.at : undefined);
    if (paging) paging.at += 1;
    if (li && state.nick && !mine && e.text.toLowerCase().includes(state.nick.toLowerCase())) li.classList.add("mention");
    if (e.seq > r.high) r.high = e.seq;
    if (e.seq && (!r.low || e.seq < r.low)) r.low = e.seq;
    if (!e.history && r.key !== state.current) { r.unread += 1; render(); }
  }

  function gatherNames(e) {
    const key = keyOf(e.room);
    const got = (state.names.get(key) || []).concat(e.nicks);
    if (e.more) { state.names.set(key, got); return; }
    state.names.delete(key);
    const r = state.rooms.get(key);
    if (r) r.members = got;
    if (state.asked.has(key)) state.asked.delete(key);
    else notice(null, `in ${e.room}: ${got.join(", ")}`);
    render();
  }

  const HANDLERS = {
    Welcome(e) {
      state.nick = e.nick;
      state.registered = true;
      state.ended = "";
      state.tries = 0;
      $("login").hidden = true;
      $("chat").hidden = false;
      status(`connected as ${e.nick}`, "ok");
      if (state.resuming) {
        // PROTOCOL.md "Resuming": one Join per room, in join order, from where we were.
        for (const r of state.rooms.values()) send("Join", { room: r.name, epoch: r.epoch, after: r.high });
        notice(null, "reconnected");
      }
      state.resuming = false;
      render();
      $("input").focus();
    },
    Joined(e) {
      if (e.nick === state.nick) {
        const back = state.rooms.has(keyOf(e.room)); // a resumed room: its log goes on
        const r = makeRoom(e.room);
        const typed = state.joining.findIndex(([key]) => key === r.key);
        if (typed >= 0) state.joining.splice(typed, 1);
        if (!state.current || typed >= 0 || state.current === r.key) state.current = r.key;
        state.asked.add(r.key);
        send("Names", { room: e.room });
        if (!back) notice(r, `you joined ${e.room}`);
      } else {
        const r = room(e.room);
        if (!r) return;
        if (!r.members.includes(e.nick)) r.members.push(e.nick);
        notice(r, `${e.nick} joined ${e.room}`);
      }
      render();
    },
    Parted(e) {
      const r = room(e.room);
      if (!r) return;
      if (e.nick === state.nick) { dropRoom(r.key); render(); return; }
      r.members = r.members.filter((n) => n !== e.nick);
      notice(r, `${e.nick} left ${e.room}` + (e.reason ? ` (${e.reason})` : ""));
      render();
    },
    Left(e) {
      for (const r of state.rooms.values()) {
        if (!r.members.includes(e.nick)) continue;
        r.members = r.members.filter((n) => n !== e.nick);
        notice(r, `${e.nick} left` + (e.reason ? ` (${e.reason})` : ""));
      }
      render();
    },
    Renamed(e) {
      if (e.old === state.nick) state.nick = e.new;
      for (const r of state.rooms.values()) {
        if (!r.members.includes(e.old)) continue;
        r.members = r.members.map((n) => (n === e.old ? e.new : n));
        notice(r, `${e.old} is now known as ${e.new}`);
      }
      render();
    },
    Message(e) { said(e, false); },
    Action(e) { said(e, true); },
    Private(e) {
      const li = line(null, "private", [["nick", `*${e.sender}*`], ["text", " " + e.text]], e.time);
      if (li && e.kept) li.classList.add("kept");
    },
    Replay(e) {
      const r = room(e.room);
      if (!r) return;
      const sameEpoch = r.epoch === e.epoch;
      const after = r.high;
      if (!sameEpoch) { r.seen.clear(); r.high = 0; r.low = 0; }
      r.epoch = e.epoch;
      if (state.pendingHistory === r.key) { // the answer to /history
        state.pendingHistory = null;
        if (e.first > e.last) notice(r, `no older messages in ${r.name}`);
        else state.history.set(r.key, { at: firstMessageIndex(r), last: e.last });
        return;
      }
      if (e.gap) {
        const missed = sameEpoch && after && e.first > after + 1 ? e.first - after - 1 : 0;
        line(r, "gap", [["text", missed
          ? `missed ${missed} message${missed === 1 ? "" : "s"} of ${r.name} (no longer in its history)`
          : `some messages of ${r.name} are lost to you (its history was trimmed or reset)`]]);
      } else if (after && e.last >= e.first) {
        const n = e.last - e.first + 1;
        line(r, "caught-up", [["text", `${n} message${n === 1 ? "" : "s"} while you were away`]]);
      }
    },
    Topic(e) {
      const r = room(e.room);
      if (r) r.topic = e.text;
      if (e.changed) notice(r, e.text ? `${e.setter} set the topic: ${e.text}` : `${e.setter} cleared the topic`);
      else if (state.topicAsked === keyOf(e.room)) {
        state.topicAsked = null;
        notice(r, e.text ? `topic of ${e.room}: ${e.text}` + (e.setter ? ` (set by ${e.setter})` : "") : `${e.room} has no topic`);
      }
      render();
    },
    WhoReply(e) {
      if (e.room) { gatherNames(e); return; }
      state.who = state.who.concat(e.nicks);
      if (e.more) return;
      notice(null, "online: " + state.who.join(", "));
      state.who = [];
    },
    RoomList(e) {
      state.rooms_seen = state.rooms_seen.concat(e.rooms);
      if (e.more) return;
      const rows = state.rooms_seen.map((x) => `${x.room} (${x.members})` + (x.topic ? `: ${x.topic}` : ""));
      notice(null, rows.length ? "rooms: " + rows.join("; ") : "no rooms");
      state.rooms_seen = [];
    },
    Reply(e) { notice(null, e.text); },
    Error(e) {
      const name = P.codeName(e.code);
      if (!state.registered) {
        if (name === "needs-password" || name === "bad-password" || name === "too-many-tries") {
          showLogin(e.detail, true);
          return;
        }
        if (name === "nick-taken" && state.resuming) return; // our old link, not gone yet: try again
        if (name !== "shutting-down") { state.ended = e.detail; return; } // the Goodbye follows
      }
      if (name === "shutting-down") { state.restarting = true; status("the server is restarting…", "busy"); return; }
      if (name === "too-many-rooms" || name === "bad-room") {
        const pending = state.joining.shift();
        if (pending) state.current = pending[1];
        render();
      }
      line(null, "error", [["text", e.detail]]);
    },
    Ping(e) { send("Pong", { nonce: e.nonce }); },
    Goodbye(e) {
      if (state.restarting || !state.registered) return; // a restart: the close brings the reconnect
      if (!state.quitting) state.ended = e.reason || "disconnected by the server";
    },
  };

  function firstMessageIndex(r) {
    const items = [...r.log.children];
    const i = items.findIndex((li) => li.classList.contains("message") || li.classList.contains("action"));
    return i < 0 ? items.length : i;
  }

  // --- what the person types (PROTOCOL.md, "The client's view") -----------------

  // A chat text, in as many events as it takes (TwinProto.splitText).
  const sayAll = (name, values, text) => { for (const piece of P.splitText(text)) send(name, { ...values, text: piece }); };

  const usage = (text) => { line(null, "error", [["text", "usage: " + text]]); };

  function inRoom() {
    const r = here();
    if (!r) line(null, "error", [["text", "you are in no room; /join #room first"]]);
    return r;
  }

  const COMMANDS = {
    join(rest) {
      const name = rest.trim();
      if (!name.startsWith("#") || /\s/.test(name)) return usage("/join #room");
      const key = keyOf(name);
      if (state.rooms.has(key)) { switchTo(key); return; }
      state.joining.push([key, state.current]);
      send("Join", { room: name, epoch: "", after: 0 });
    },
    part(rest) {
      let [name, ...reason] = rest.trim().split(/\s+/);
      if (!name || !name.startsWith("#")) { reason = rest.trim() ? rest.trim().split(/\s+/) : []; name = here() && here().name; }
      if (!name) return usage("/part [#room] [reason]");
      const r = room(name);
      send("Part", { room: r ? r.name : name, reason: reason.join(" ") });
      if (r) { dropRoom(r.key); render(); }
    },
    msg(rest) {
      const m = /^(\S+)\s+(.+)$/.exec(rest.trim());
      if (!m) return usage("/msg NICK TEXT");
      if (m[1].startsWith("#")) { sayAll("Say", { room: m[1] }, m[2]); return; }
      sayAll("Whisper", { to: m[1] }, m[2]);
      line(null, "private mine", [["nick", `-> *${m[1]}*`], ["text", " " + m[2]]]);
    },
    me(rest) { const r = inRoom(); if (r && rest.trim()) sayAll("Act", { room: r.name }, rest.trim()); else if (r) usage("/me ACTION"); },
    nick(rest) { if (!rest.trim() || /\s/.test(rest.trim())) return usage("/nick NEW"); send("ChangeNick", { nick: rest.trim() }); },
    topic(rest) {
      const r = inRoom();
      if (!r) return;
      if (rest.trim()) send("SetTopic", { room: r.name, text: rest.trim() });
      else { state.topicAsked = r.key; send("GetTopic", { room: r.name }); }
    },
    names(rest) { const name = rest.trim() || (here() && here().name); if (!name) return usage("/names [#room]"); send("Names", { room: name }); },
    who() { send("Who"); },
    rooms() { send("ListRooms"); },
    history(rest) {
      const r = inRoom();
      if (!r) return;
      const count = rest.trim() ? Number(rest.trim()) : 50;
      if (!Number.isInteger(count) || count < 1 || count > 500) return usage("/history [N] (1 to 500)");
      state.pendingHistory = r.key;
      state.history.delete(r.key);
      send("History", { room: r.name, before: r.low, count });
    },
    help() { send("Help"); },
    quit(rest) { state.quitting = true; send("Goodbye", { reason: rest.trim() }); },
    register(rest) {
      if (!rest.trim()) return usage("/register PASSWORD");
      if (clearPasswordAllowed()) send("RegisterAccount", { password: rest.trim() });
    },
    password(rest) {
      const words = rest.trim().split(/\s+/);
      if (words.length !== 2) return usage("/password OLD NEW");
      if (clearPasswordAllowed()) send("ChangePassword", { old: words[0], new: words[1] });
    },
    unregister(rest) {
      if (!rest.trim()) return usage("/unregister PASSWORD");
      if (clearPasswordAllowed()) send("DropAccount", { password: rest.trim() });
    },
  };

  function typed(text) {
    for (const one of text.split(/\r\n|\r|\n/)) {
      if (!one.trim()) continue;
      if (one.startsWith("/") && !one.startsWith("//")) {
        const m = /^\/(\S+)\s*(.*)$/.exec(one);
        const command = m && COMMANDS[m[1].toLowerCase()];
        if (!command) { line(null, "error", [["text", `no command ${one.split(/\s/)[0]}; /help lists them`]]); continue; }
        command(m[2]);
        continue;
      }
      const r = inRoom();
      if (r) sayAll("Say", { room: r.name }, one.startsWith("//") ? one.slice(1) : one);
    }
  }

  // --- the forms ---------------------------------------------------------------

  // A page served in the clear from another machine would send passwords in
  // the clear: as the terminal clients (--allow-cleartext-password), only
  // once the person has said yes, asked the first time a password would go.
  const insecure = location.protocol === "http:" && !["127.0.0.1", "localhost", "[::1]"].includes(location.hostname);
  let cleartextAccepted = !insecure;

  function clearPasswordAllowed() {
    if (!cleartextAccepted) {
      cleartextAccepted = window.confirm(
        "This page is not encrypted (http://, not https://): your password would travel in the clear. Send it anyway?");
      if (!cleartextAccepted) line(null, "error", [["text", "password not sent: the link is not encrypted"]]);
    }
    return cleartextAccepted;
  }

  function showLogin(why, needsPassword) {
    $("login").hidden = false;
    $("chat").hidden = state.rooms.size === 0;
    $("login-error").textContent = why || "";
    if (needsPassword) {
      $("password-row").hidden = false;
      $("password").focus();
    }
    status(why || "", "bad");
  }

  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    state.nick = $("nick").value.trim();
    state.password = $("password").value;
    if (state.password && !clearPasswordAllowed()) {
      state.password = "";
      $("login-error").textContent = "password not sent: the link is not encrypted (use https://)";
      return;
    }
    state.quitting = false;
    state.ended = "";
    if (!state.nick) return;
    $("login-error").textContent = "";
    if (state.socket && state.socket.readyState === WebSocket.OPEN && !state.registered) {
      send("Register", { nick: state.nick, password: state.password, resume: false });
    } else {
      // A new session, not a resumed one: the rooms of the last one are gone.
      state.resuming = false;
      for (const key of [...state.rooms.keys()]) dropRoom(key);
      state.current = null;
      connect();
    }
  });

  $("say").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = $("input");
    const text = input.value;
    input.value = "";
    typed(text);
  });

  $("join-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = $("join-room");
    const name = input.value.trim();
    input.value = "";
    if (name) COMMANDS.join(name.startsWith("#") ? name : "#" + name);
  });

  $("part").addEventListener("click", () => { const r = here(); if (r) COMMANDS.part(r.name); });

  $("cleartext").hidden = !insecure;
  $("nick").focus();
})();
