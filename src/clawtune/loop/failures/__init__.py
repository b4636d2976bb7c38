"""Failures of the agent, found in OpenClaw's stores and the gateway's log, with corrections: the loop's first step."""
