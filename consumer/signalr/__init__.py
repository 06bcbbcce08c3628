"""SignalR: sans-I/O protocol core (protocol.py), asyncio client (connection.py), hub host (server.py)."""
