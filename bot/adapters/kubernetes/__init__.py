"""Kubernetes backends: short-lived client certificates (``certificate``) and time-boxed RBAC
bindings for users who already sign in through OIDC (``rbac``). Both revoke by deleting the
bindings the bot created, and nothing else."""
