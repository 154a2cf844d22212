"""The path of one webhook after its bytes are read, HTTP-free.

``pipeline`` runs handshake, verify, parse, admit, dedup and the durable step; ``admission``
bounds what is in flight; ``committer`` group-commits deliveries to the durable log;
``durable`` is the full stack's durable log (the bus first, the fsynced ``spool`` when the bus
cannot).
"""
