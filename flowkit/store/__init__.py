"""Every Redis access of flowkit: key names, Lua scripts, reads and writes of run state."""
