"""Backbone networks."""
