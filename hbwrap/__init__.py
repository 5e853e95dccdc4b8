"""hbwrap: a watchdog for unattended long-running jobs."""

__version__ = "0.1.0"
