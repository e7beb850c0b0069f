"""Live rooms: the WebSocket gateway, cross-process fan-out, presence and resume.

Owns everything a viewer's socket sees. May call the wallet only through the
narrow interface in ``streams.ports`` (send a gift, read gifts after a seq,
look a stream up); never runs wallet SQL and never imports ``gifting``.
"""
