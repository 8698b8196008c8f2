"""The researcher's interface: the CLI verbs, live progress, report, doctor, summaries.
"""
