"""Synthetic CURPs for tests: valid structure and check digit, not real people."""

from stdnum.mx import curp as stdnum_curp


def make_curp(prefix: str = "PEGJ", birth: str = "800101", sex: str = "H", state: str = "DF",
              consonants: str = "RRN", differentiator: str = "0") -> str:
    """A CURP with a correct check digit (for a birth before 2000 the differentiator is a digit)."""
    body = f"{prefix}{birth}{sex}{state}{consonants}{differentiator}"
    return body + stdnum_curp.calc_check_digit(body)
