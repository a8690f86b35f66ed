"""The realtime hub: the server side of the Centrifugo client protocol v2 (JSON)."""
