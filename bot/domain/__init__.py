"""The pure core: states, transitions, policy and durations.

Nothing in this package imports Slack, SQLAlchemy, GitLab or Kubernetes, and nothing reads a
clock: every function that needs the time takes ``now``.
"""
