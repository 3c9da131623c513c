"""Local servers that speak the Slack Web API, GitLab's REST API v4 and the Kubernetes API.

They keep real state and answer like the real services, errors included. The test suite runs
the bot against them, and so does ``k8s-access-bot demo`` for a newcomer without a workspace.
They listen on 127.0.0.1 only and are never used by ``serve``.
"""
