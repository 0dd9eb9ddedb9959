"""Fallback protocols: provider chains and the strategies that serve a call when one fails."""
