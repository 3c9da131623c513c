"""Adapters: the ports of ``bot.domain.ports`` implemented with real technology."""
