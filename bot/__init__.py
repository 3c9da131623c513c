"""k8s-access-bot: time-boxed, personal, audited Kubernetes access through Slack."""
