"""The HTTP API: commands, reads with versions, escalations; roles from bearer tokens."""
