"""The control plane: msgpack-RPC over a local Unix socket (server and client)."""
