"""The command's name and exit statuses, shared by the command line and the setup that may
end the run before it starts."""

#: Exit statuses, also listed in ``--help``.
EXIT_OK, EXIT_LOST, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3

PROG = "resilience-demo"
