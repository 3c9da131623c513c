"""Use cases: each thing a person or a job does, one function over the ports.

Slack listeners, CLI commands and jobs call these functions and nothing below them.
"""
