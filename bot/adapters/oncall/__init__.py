"""Who is on call, asked of PagerDuty and Opsgenie: the :class:`bot.domain.oncall.OnCall`
port over their REST APIs, with a short cache (``service``), one module per service."""
