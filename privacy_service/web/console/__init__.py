"""The operator console: server-rendered pages at ``/console`` for a signed-in operator."""
