"""The unattended loop: the scheduler that wires one experiment (ask -> run -> tell),
the session and its resume, stop rules and the lock. The events it emits are loop/events.py,
below the daemon, so that their subscribers need not import it.
"""
