"""Test doubles that follow the documented contract of the ports they stand in for."""
