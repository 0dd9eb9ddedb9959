"""Rate limits, provider quotas, usage and budgets.

Shaped like ``breaker/``: ``policy`` holds the declarations (pure values), ``scripts`` every
Lua script, ``storage`` the Redis side (limiter, ledger, quota and cool-down stores, each the
one owner of its keys); ``gates`` check before a call, ``report`` records after it, and
``provider`` reads what providers say (429s, quota headers).
"""
