"""The browser client on the TCP port: HTTP routes, the WebSocket dialect and the page.

- ``twinchat.web.http``: requests parsed with h11 (sans-IO), the route table
  (path -> handler), responses, the origin rule of the WebSocket upgrade;
- ``twinchat.web.websocket``: the WebSocket dialect over wsproto (sans-IO):
  one frame of PROTOCOL.md per binary message, one line of the text dialect
  per text message;
- ``twinchat/web/static/``: the page (plain HTML, CSS and JavaScript, no
  build step), shipped as package data.

The sockets and threads are the TCP server's (``tcpchat.server``): it tells an
HTTP request by its first bytes and hands them here.
"""
