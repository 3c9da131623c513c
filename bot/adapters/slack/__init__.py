"""Slack at the edge: commands parsed, use cases called, Block Kit rendered, messages sent."""
