"""Rate limits, provider quotas, usage and budgets."""
