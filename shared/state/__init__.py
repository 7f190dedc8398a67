"""The Redis adapter: key formats, one Lua script per state change, and the typed store."""
