"""The fault target, one job per module: what both sides agree on (``spec``), the process
(``target`` and the parts it serves) and the handle that runs it (``handle``). Its public face
is ``resilience_tasks.testing.fault_server``; nothing here imports the ``mcp`` extra."""
