"""Quickstart-style benchmark baseline app."""
