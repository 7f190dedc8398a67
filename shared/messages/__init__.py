"""Every message that crosses a process boundary: tagged, frozen msgspec Structs."""
