"""The one console pipeline: front ends (transport only), one gate (admit, connect, record,
guard, relay, end), and the protocol state machines that authenticate to the console and
filter what clients send.

- `gate.py`       admission and the connection's life, the same for every front end
- `websocket.py`  the portal's WebSockets (graphical and serial consoles), ASGI
- `websockify.py` websockify as a standalone proxy (a process per connection)
- `connect.py`    the HTTP CONNECT proxy remote-viewer uses for .vv files
- `rfb.py`, `spice.py`  VNC and SPICE: the proxy authenticates to QEMU with the password only
                  the server knows, answers the client's handshake itself, and passes on only
                  what the client's role allows (state machines over the whole stream,
                  allowlists, fail closed, bounded)
- `wire.py`       what the state machines share: a bounded buffer, the violation they raise
- `relay.py`, `tunnels.py`  the console side: TCP, or a channel of an SSH connection
- `guard.py`      rechecks the right to every open console while it stays open
"""
