"""The NATS auth callout (issue 15): NATS asks extauthz who may connect, and to which subjects.

``nkey``: NATS nkeys (Ed25519 signing keys, X25519 ``xkv1`` sealing); ``jwt``: NATS JWTs as
nats-io/jwt v2 writes and reads them; ``request``: the server's authorization request, parsed
strictly; ``permissions``: which NATS policy decides; ``reply``: the user JWT and the signed
answer; ``callout``: the connection to NATS and the lifecycle (the only module doing I/O).
"""
