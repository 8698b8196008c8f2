"""The sections of autogolf.yaml: each module owns one feature's settings.

A module here holds a section's schema (keys, defaults, allowed values), reads it with the
value checks of `reader.Reader` and returns the `loop.config.Config` fields it fills. The
constants the feature's own code needs (an agent command's placeholders, the sandbox modes, a
knob's declaration) live here too, and the feature imports them from here: so the
configuration sits near the ground, importing the standard library, yaml and nothing of the
daemon above it (`loop.judge.sequential`, a pure module, checks the keep rule's values).

This package does not open files, ask the machine anything or build proposers, judges or
stores: `loop.config.load_config` reads the file and resolves what depends on the machine.
"""
