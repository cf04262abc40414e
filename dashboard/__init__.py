"""The Starlette dashboard (read-only views of run state in Redis)."""

if __name__ != "flowkit.dashboard":
    raise ImportError("the dashboard folder installs as flowkit.dashboard; `pip install -e .` and "
                      "import flowkit.dashboard instead of `dashboard`")
