"""Persistence with SQLAlchemy 2: models, the request store and the unit of work."""
