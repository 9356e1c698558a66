"""Fuzz tests (hypothesis): the parsers of untrusted input end in a clear error, never a crash.

Every test here runs a bounded, derandomized number of examples (:data:`FUZZ` and friends), so a
CI run is deterministic and takes seconds; raise ``EXPEDIENTE_FUZZ_EXAMPLES`` locally for a long run.
"""
