"""Facts every layer shares: small leaf modules of plain data and pure functions that the
public handles, the wire (``_wire``), the servers' shared half (``_serve``), the isolating
sandboxer (``sandboxer``) and the stand-in (``testing``) all read alike.

What belongs here: a rule or a spelling that two sides must agree on (Go's ``%q`` and zero
time, the namespace header and type URLs, containerd's identifier rules, a size's reading,
the labels and annotations that carry a sandbox's lifetime, disk and network). What may
import it: any module of the project. What it may import: itself, ``errors``, and the records
(``_models``) for a type only; never a handle, ``_wire`` or ``_serve``
(``tests/test_layout.py`` enforces it).
"""
