"""Readers at the edge: OpenClaw's session stores in, `RawSession`s out (one transcript tree each, plus its context)."""

from clawtune.logs.sessions import RawSession, iter_sessions

__all__ = ["RawSession", "iter_sessions"]
